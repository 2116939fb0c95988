/*
 * exec.h - the executor layer (src/exec/): runs functions and reports
 * their outcomes. It owns the worker pool (pool.c), jobs (job.c), the
 * upstream HTTP client (upstream.c, upstream_client.c) and, per I/O loop,
 * one mizan_exec_t (exec.c) that submits jobs, keeps their deadlines and
 * hands outcomes back on the loop's thread. It knows nothing of HTTP
 * exchanges, contexts or the cache: a job's owner is an opaque pointer and
 * its outcome goes to the job's on_done callback.
 *
 * DESIGN (threads): a mizan_exec_t belongs to one I/O loop; everything in
 * it is touched by that loop's thread, except the completion queue
 * (`lock`, `done_head`, `done_tail`) that workers append to, and
 * `outstanding`, which the main thread reads while draining. A worker
 * appends a finished job under `lock` and activates `wake` only when the
 * queue goes from empty to non-empty; the loop then drains the whole queue
 * at once (one wake-up per batch).
 */
#ifndef MIZAN_EXEC_H
#define MIZAN_EXEC_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include "error.h"
#include "job.h"
#include "pool.h"
#include "upstream.h"

struct event_base;
struct event;

/** One loop's executor. */
typedef struct mizan_exec {
    struct event_base *base;        /**< the loop's; set at init, immutable */
    mizan_pool_t *pool;             /**< the instance's workers (shared, thread-safe) */
    mizan_upstream_loop_t *upstream; /**< this loop's upstream client (NULL: none configured). Loop thread */

    pthread_mutex_t lock;           /**< guards done_head and done_tail only */
    mizan_job_t *done_head;         /**< jobs handed back by workers, oldest first */
    mizan_job_t *done_tail;
    struct event *wake;             /**< activated when the queue goes non-empty (any thread) */

    atomic_size_t outstanding;      /**< submitted and not yet back (written by the loop, read by main) */
} mizan_exec_t;

/**
 * Sets up x on base with the shared pool and this loop's upstream client
 * (one is made when ups declares upstreams). Main thread, before the loop
 * runs. -1 with err.
 */
int mizan_exec_init(mizan_exec_t *x, struct event_base *base, mizan_pool_t *pool, const mizan_upstreams_t *ups,
                    mizan_err_t *err);

/**
 * Ends x after its loop stopped: hands back what is still in flight on the
 * loop (upstream calls, as UNAVAILABLE), runs the completions queued, and
 * frees what x holds. Main thread.
 */
void mizan_exec_deinit(mizan_exec_t *x);

/** Hands a finished job back to the executor that submitted it. Any thread (the pool's `complete`). */
void mizan_exec_complete(mizan_job_t *job);

/**
 * Submits the n jobs of jobs (NULL entries are skipped): blocking
 * functions to the pool, each with its deadline timer; upstream functions
 * to the loop's upstream client; non-blocking functions (fn->nonblocking)
 * run inline, on this thread, before the call returns. Each job's owner,
 * on_done and slot must be set. A job whose function is at its
 * max_concurrency is not submitted: it gets UNAVAILABLE at once and is not
 * counted. *started receives how many were submitted; each of those comes
 * back exactly once through its on_done: an inline one from within this
 * call, the others later. -1 when the pool queue is full (nothing
 * submitted, nothing run). Loop thread.
 */
int mizan_exec_submit(mizan_exec_t *x, mizan_job_t **jobs, size_t n, size_t *started);

/**
 * Lets go of a job whose owner is done with it: freed now when it is back,
 * otherwise cancelled and freed when it returns. NULL ok. Loop thread.
 */
void mizan_exec_drop(mizan_job_t *job);

/** True when no job of x is still out. Any thread. */
bool mizan_exec_idle(mizan_exec_t *x);

#endif /* MIZAN_EXEC_H */
