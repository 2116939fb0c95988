/*
 * replay_main.c - runs a fuzz target over saved inputs, without libFuzzer.
 *
 * Linked with one fuzz_<name>.c when the compiler is not clang (the normal
 * gcc build, and the ASan build that scripts/test runs), so that every
 * corpus file, including the inputs that once crashed a target, is replayed
 * by ctest as a regression test under the sanitizers of that build.
 *
 *   replay_fuzz_<name> PATH...
 *
 * Each PATH is a file (one input) or a directory (every regular file in
 * it, in name order; subdirectories are not entered). Each input is read
 * into a buffer of exactly its size, so a read past its end is caught by
 * AddressSanitizer as it would be under libFuzzer. A broken property or a
 * sanitizer report aborts the run; otherwise the exit status is 0 when at
 * least one input ran and 1 when none did (a missing or empty corpus is a
 * failure, not a pass).
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz.h"

/* Reads path into a new buffer of exactly its size (at least 1 byte allocated). */
static int read_input(const char *path, unsigned char **out, size_t *len)
{
    int rc = -1;
    unsigned char *buf = NULL;
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        fprintf(stderr, "replay: cannot open %s: %s\n", path, strerror(errno));
        goto done;
    }
    struct stat st;
    if (fstat(fileno(f), &st) < 0 || st.st_size < 0) {
        fprintf(stderr, "replay: cannot stat %s: %s\n", path, strerror(errno));
        goto done;
    }
    size_t size = (size_t)st.st_size;
    buf = malloc(size > 0 ? size : 1);
    if (buf == NULL) {
        fprintf(stderr, "replay: out of memory for %s (%zu bytes)\n", path, size);
        goto done;
    }
    if (size > 0 && fread(buf, 1, size, f) != size) {
        fprintf(stderr, "replay: short read on %s\n", path);
        goto done;
    }
    *out = buf;
    *len = size;
    buf = NULL;
    rc = 0;
done:
    free(buf);
    if (f != NULL)
        fclose(f);
    return rc;
}

/* Runs the target on one file; -1 when it cannot be read. */
static int run_file(const char *path)
{
    unsigned char *data = NULL;
    size_t len = 0;
    if (read_input(path, &data, &len) < 0)
        return -1;
    fprintf(stderr, "replay: %s (%zu bytes)\n", path, len);
    LLVMFuzzerTestOneInput(data, len);
    free(data);
    return 0;
}

static int only_files(const struct dirent *e)
{
    return e->d_name[0] != '.';
}

/* Runs the target on every regular file of dir; adds to *count. -1 on error. */
static int run_dir(const char *dir, long *count)
{
    struct dirent **names = NULL;
    int n = scandir(dir, &names, only_files, alphasort);
    if (n < 0) {
        fprintf(stderr, "replay: cannot list %s: %s\n", dir, strerror(errno));
        return -1;
    }
    int rc = 0;
    for (int i = 0; i < n; i++) {
        char *path = NULL;
        struct stat st;
        if (rc == 0 && asprintf(&path, "%s/%s", dir, names[i]->d_name) < 0) {
            path = NULL;
            rc = -1;
        }
        if (rc == 0 && stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
            if (run_file(path) < 0)
                rc = -1;
            else
                (*count)++;
        }
        free(path);
        free(names[i]);
    }
    free(names);
    return rc;
}

int main(int argc, char **argv)
{
    long count = 0;
    if (argc < 2) {
        fprintf(stderr, "usage: %s CORPUS_DIR_OR_FILE...\n", argv[0]);
        return 2;
    }
    for (int i = 1; i < argc; i++) {
        struct stat st;
        if (stat(argv[i], &st) < 0) {
            fprintf(stderr, "replay: %s: %s\n", argv[i], strerror(errno));
            return 1;
        }
        int rc;
        if (S_ISDIR(st.st_mode)) {
            rc = run_dir(argv[i], &count);
        } else {
            rc = run_file(argv[i]);
            count += rc == 0;
        }
        if (rc < 0)
            return 1;
    }
    if (count == 0) {
        fprintf(stderr, "replay: no inputs found in the given paths\n");
        return 1;
    }
    printf("replay: %ld inputs ran without a finding\n", count);
    return 0;
}
