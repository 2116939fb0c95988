/*
 * counter_file.h - the shared counter of the test-only function modules
 * (fleet.c, guarantees.c).
 *
 * The counter is one decimal number in a file, so that several gateway
 * processes started on the same directory share it, like instances sharing
 * one database. Reads take a shared flock, changes an exclusive one, and a
 * change is fsync'd before it is reported. Static so that each module
 * carries its own copy and the modules stay self-contained .so files.
 */
#ifndef MIZAN_TEST_COUNTER_FILE_H
#define MIZAN_TEST_COUNTER_FILE_H

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/file.h>
#include <unistd.h>

#include <mizan/mizan.h>

/* Writes "<config dir>/<name>" into path (len bytes) from the module's
 * config member "dir". Returns 0, or -1 after mizan_module_fail() when
 * "dir" is missing or too long. */
static int counter_file_path(mizan_module_t *m, const char *name, char *path, size_t len)
{
    const json_t *dir = json_object_get(mizan_module_config(m), "dir");
    if (!json_is_string(dir) || json_string_length(dir) == 0 || json_string_length(dir) > 4000)
        return mizan_module_fail(m, "config \"dir\" must name a directory");
    snprintf(path, len, "%s/%s", json_string_value(dir), name);
    return 0;
}

/* Adds delta (0: just reads) to the counter in the file at path, creating
 * it as 0 when missing; the new value in *out. Returns 0, or -1 when the
 * file cannot be opened, locked, read or written. */
static int counter_file_add(const char *path, long long delta, long long *out)
{
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0)
        return -1;
    int rc = -1;
    if (flock(fd, delta != 0 ? LOCK_EX : LOCK_SH) != 0)
        goto done;
    char buf[32] = "";
    ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
    if (n < 0)
        goto done;
    buf[n] = '\0';
    long long v = strtoll(buf, NULL, 10) + delta;
    if (delta != 0) {
        int len = snprintf(buf, sizeof(buf), "%lld\n", v);
        if (ftruncate(fd, 0) != 0 || pwrite(fd, buf, (size_t)len, 0) != len || fsync(fd) != 0)
            goto done;
    }
    *out = v;
    rc = 0;
done:
    close(fd);
    return rc;
}

#endif
