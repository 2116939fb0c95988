/*
 * fault_support.h - e2e helpers for the fault tests (test_faults.c): a load
 * generator that keeps many keep-alive clients busy and records every
 * exchange, slow clients that trickle a request one byte at a time, many
 * idle connections opened at once, the `wrk` benchmark run and parsed,
 * what /proc says about a process (CPU time, open descriptors), pausing a
 * process with SIGSTOP, and a gateway started under a low descriptor limit.
 *
 * Lifetime and threads follow harness.h: everything returned is owned by
 * the per-test arena and released at teardown (background threads are
 * stopped and joined, sockets closed, stopped processes continued), also
 * when an assertion failed half-way. "Asserting" functions use Criterion
 * assertions and run on the test's main thread only.
 */
#ifndef MZ_FAULT_SUPPORT_H
#define MZ_FAULT_SUPPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "harness.h"

/* ------------------------------------------------------------------------
 * Load generator
 * ---------------------------------------------------------------------- */

/** One exchange of a load thread. */
typedef struct mz_load_rec {
    double start_ms;  /**< mz_now_ms() before the request was sent */
    double end_ms;    /**< mz_now_ms() after the response, or the failure */
    int thread;       /**< the thread that sent it (it sends reqs[thread % nreqs]) */
    int status;       /**< HTTP status; 0 when no response came */
    char cache[8];    /**< X-Mizan-Cache, or "" */
    char code[24];    /**< error.code of an error envelope, or "" */
    bool retry_after; /**< a delta-seconds Retry-After header came with it */
    bool closed;      /**< the server closed the connection after it */
    char err[160];    /**< why no response came, or "" */
} mz_load_rec_t;

/** How to run a load; zero-initialise and set what matters. */
typedef struct mz_load_opts {
    int port;              /**< 127.0.0.1:port */
    size_t threads;        /**< clients, one thread and connection each */
    const mz_req_t *reqs;  /**< thread t sends reqs[t % nreqs] again and again;
                                borrowed until mz_load_stop() */
    size_t nreqs;          /**< at least 1 */
    int timeout_ms;        /**< bound on one exchange (0: 5000) */
    int pause_ms;          /**< pause between two requests of one thread */
    bool stop_when_closed; /**< a thread ends once the server closes its
                                connection or an exchange fails, instead of
                                reconnecting */
} mz_load_opts_t;

/** A running load (arena-owned). */
typedef struct mz_load mz_load_t;

/** Starts the threads; they connect lazily. Asserting (thread creation). */
mz_load_t *mz_load_start(const mz_load_opts_t *opts);

/** Exchanges recorded so far (any thread). */
size_t mz_load_count(mz_load_t *l);

/**
 * Stops every thread after its current exchange, joins them, and returns
 * all records sorted by start_ms (arena array of *n). Safe to call twice
 * (the second call returns the same records).
 */
mz_load_rec_t *mz_load_stop(mz_load_t *l, size_t *n);

/**
 * The records recorded so far, sorted by start_ms, without stopping
 * (arena copy of *n). Any thread.
 */
mz_load_rec_t *mz_load_snapshot(mz_load_t *l, size_t *n);

/** True when every thread has ended on its own (stop_when_closed). */
bool mz_load_finished(mz_load_t *l);

/**
 * One line describing records [0, n): total, counts by status, by
 * X-Mizan-Cache, failures (with the first reason), latency max and p99.
 * Arena string.
 */
char *mz_load_summary(const mz_load_rec_t *recs, size_t n);

/* ------------------------------------------------------------------------
 * Slow clients (slowloris)
 * ---------------------------------------------------------------------- */

/** Connections trickling a request (arena-owned). */
typedef struct mz_trickle mz_trickle_t;

/**
 * Opens n connections to 127.0.0.1:port, then a background thread sends
 * them text one byte each every interval_ms (the first byte at once) and
 * notes when the server closes each. Asserting: fails with the reason when
 * a connection cannot be opened.
 */
mz_trickle_t *mz_trickle_start(int port, size_t n, const char *text, int interval_ms);

/** Connections the server has not closed yet (any thread). */
size_t mz_trickle_open(mz_trickle_t *t);

/**
 * Stops the thread and closes the remaining connections. Returns n values
 * (arena): for each connection the ms from its first byte until the server
 * closed it, or -1 when it was still open. *bytes_sent gets the most bytes
 * any connection sent (may be NULL).
 */
double *mz_trickle_stop(mz_trickle_t *t, size_t *bytes_sent);

/* ------------------------------------------------------------------------
 * Many idle connections
 * ---------------------------------------------------------------------- */

/** A set of raw client sockets (arena-owned; closed at teardown). */
typedef struct mz_many mz_many_t;

/**
 * Opens n non-blocking connections to 127.0.0.1:port as fast as the
 * kernel allows (every connect fired before waiting), then waits up to
 * timeout_ms for them to be established. Returns the set; *established
 * gets how many are. When fewer than n are, err holds the first reason
 * (e.g. "socket: Too many open files"). Never asserts.
 */
mz_many_t *mz_many_open(int port, size_t n, int timeout_ms, size_t *established, char *err,
                        size_t errlen);

/** Established connections the server has not closed (polls each once). */
size_t mz_many_alive(mz_many_t *m);

/** Closes every socket of the set now. */
void mz_many_close(mz_many_t *m);

/* ------------------------------------------------------------------------
 * Processes
 * ---------------------------------------------------------------------- */

/** User + system CPU time of pid in ms from /proc/PID/stat; -1 if unreadable. */
double mz_proc_cpu_ms(pid_t pid);

/** Entries of /proc/PID/fd; -1 if unreadable. */
long mz_proc_fd_count(pid_t pid);

/** Soft RLIMIT_NOFILE of pid (prlimit(2)); -1 on error. */
long mz_proc_nofile(pid_t pid);

/**
 * SIGSTOPs pid; teardown sends SIGCONT if the test did not (so that a
 * failing test still lets the process be stopped). Asserting.
 */
void mz_proc_pause(pid_t pid);

/** SIGCONTs a process paused by mz_proc_pause(). Asserting. */
void mz_proc_resume(pid_t pid);

/**
 * Starts the gateway like mz_gw_start_opts(), but under `prlimit
 * --nofile=nofile:nofile` (a wrapper script that execs, so gw->pid is
 * mizand itself). Asserting: prlimit must be installed.
 */
mz_gw_t *mz_gw_start_nofile(const mz_gw_opts_t *opts, long nofile);

/** Count of lines of gw's log that contain needle. */
size_t mz_gw_log_count(const mz_gw_t *gw, const char *needle);

/* ------------------------------------------------------------------------
 * wrk
 * ---------------------------------------------------------------------- */

/** What one `wrk` run reported. */
typedef struct mz_wrk {
    long requests;         /**< "N requests in ..." */
    long non2xx;           /**< "Non-2xx or 3xx responses" (0 when absent) */
    long err_connect;      /**< "Socket errors: connect N, ..." */
    long err_read;
    long err_write;
    long err_timeout;
    double latency_avg_ms; /**< the Latency line's average */
    double latency_max_ms; /**< the Latency line's maximum */
    double latency_p99_ms; /**< the 99% line of the latency distribution */
    char *out;             /**< everything wrk printed (arena) */
} mz_wrk_t;

/**
 * Runs `wrk --latency -t threads -c conns -d duration_s --timeout
 * timeout_s` against http://127.0.0.1:port{path}; with post_body, every
 * request is a POST of it as application/json (through a Lua script).
 * Asserting: wrk must be installed (Debian package `wrk`), exit 0 and
 * print its summary.
 */
mz_wrk_t *mz_wrk_run(int port, const char *path, const char *post_body, int threads, int conns,
                     int duration_s, int timeout_s);

#endif /* MZ_FAULT_SUPPORT_H */
