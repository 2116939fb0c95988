/*
 * internal.h - what the support files share with each other but not with
 * the tests: the per-test arena and the allocation helpers.
 *
 * Allocation failure in the harness aborts the test process with a message
 * (Criterion reports it as a crash): there is no sensible way for a test to
 * continue without memory, and a silent NULL would turn into a misleading
 * assertion elsewhere.
 */
#ifndef MZ_INTERNAL_H
#define MZ_INTERNAL_H

#include <stddef.h>
#include <sys/types.h>

/** Teardown phases: connections close first, then processes stop, then
 *  directories go, then memory is freed. */
enum mz_phase {
    MZ_PHASE_CONN = 0,
    MZ_PHASE_PROC = 1,
    MZ_PHASE_DIR = 2,
    MZ_PHASE_MEM = 3,
};

/**
 * Registers ptr with the arena: at teardown fn(ptr) runs in the given
 * phase (entries of one phase in reverse order of registration). Returns
 * ptr. Thread-safe.
 */
void *mz_own(void *ptr, void (*fn)(void *), enum mz_phase phase);

/** malloc that aborts on failure; the block is not registered. */
void *mz_xmalloc(size_t n);
/** realloc that aborts on failure. */
void *mz_xrealloc(void *p, size_t n);
/** strdup that aborts on failure; the copy is not registered. */
char *mz_xstrdup(const char *s);
/** strndup that aborts on failure; the copy is not registered. */
char *mz_xstrndup(const char *s, size_t n);
/** strdup registered with the arena. */
char *mz_strdup(const char *s);

/** Aborts the process after printing what could not be allocated. */
_Noreturn void mz_oom(size_t n);


/* The HTTP connection primitives shared with the Redis client (http.c). */
struct mz_conn;

/** Connects without registering the connection in the arena. */
struct mz_conn *mz_conn_open_raw(int port, int timeout_ms, char *err, size_t errlen);

/** Closes and frees a connection from mz_conn_open_raw(). */
void mz_conn_free_raw(struct mz_conn *c);

/**
 * Reads more bytes into c->buf (kept NUL-terminated) before the deadline
 * (an mz_now_ms() value). Returns the number read, 0 on EOF, -1 on error or
 * timeout with a reason in err.
 */
long mz_conn_fill(struct mz_conn *c, double deadline, char *err, size_t errlen);

/** Drops the first n bytes of c->buf. */
void mz_conn_consume(struct mz_conn *c, size_t n);

/** Path of the mizand binary under test (MIZAN_TEST_BIN). */
const char *mz_bin(void);

/**
 * Spawns argv with stdin from /dev/null, stdout/stderr on out_fd/err_fd,
 * cwd and extra env as in mz_run(), PR_SET_PDEATHSIG(SIGKILL), every other
 * descriptor closed. Returns the pid, or -1 with a reason in err.
 */
pid_t mz_spawn(const char *const *argv, const char *cwd, const char *const *env, int out_fd,
               int err_fd, char *err, size_t errlen);

/**
 * Waits up to timeout_ms for pid; returns 1 and fills *status (exit code or
 * 128+signal) once reaped, 0 when still running. Never asserts.
 */
int mz_reap(pid_t pid, int timeout_ms, int *status);

/** Removes a directory tree (best effort). */
void mz_rmtree(const char *dir);

#endif /* MZ_INTERNAL_H */
