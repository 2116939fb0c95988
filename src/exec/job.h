/*
 * job.h - one invocation of a function (struct mizan_req): what the handler
 * sees through the mizan_req_* API, and what travels between an I/O loop
 * and a worker.
 *
 * DESIGN: a job is created on an I/O loop, handed to the worker pool, run
 * once on a worker, and handed back to the loop that created it. Ownership
 * moves with the hand-offs, never shared, with two exceptions: `cancelled`
 * (atomic, set by the loop at the deadline or at shutdown, read by the
 * handler) and the caller identity (refcounted, immutable). The loop always
 * frees the job, after the worker handed it back, whether the exchange that
 * wanted it is still waiting (`owner` set) or gave up at the deadline
 * (`owner` NULL): a late handler therefore finishes harmlessly, its result
 * discarded.
 */
#ifndef MIZAN_JOB_H
#define MIZAN_JOB_H

#include <stdatomic.h>
#include <stdbool.h>
#include <time.h>

#include <jansson.h>

#include "mizan/mizan.h"
#include "caller.h"
#include "registry.h"

struct mizan_function;
struct mizan_exec;
struct event;

struct mizan_req {
    /* Set by the loop before submission; read-only afterwards. */
    const struct mizan_function *fn; /**< what to run */
    json_t *args;                    /**< owned; validated, defaults filled */
    mizan_caller_t *caller;          /**< one reference */
    struct timespec deadline;        /**< CLOCK_MONOTONIC; set for an inline run (a worker's run is
                                          cancelled by the loop's timer instead), else zero */
    struct mizan_exec *exec;         /**< the loop's executor to hand the job back to */
    char rid[132];                   /**< request id of the asking request (logs, forwarded upstream) */

    /* Written by the worker while running; read by the loop after hand-back. */
    json_t *result;                  /**< owned; NULL until set */
    mizan_code_t code;               /**< MIZAN_OK unless an error was raised */
    char *message;                   /**< owned error message or NULL */
    json_t *details;                 /**< owned error details or NULL */
    json_t *targets;                 /**< owned array of run-time invalidation targets */
    bool ran;                        /**< false when skipped (cancelled before start) */
    long run_us;                     /**< handler duration */

    atomic_bool cancelled;           /**< deadline passed or shutting down */

    /* Loop-thread only. */
    void *owner;                     /**< who waits for the outcome; NULL once abandoned */
    /**
     * Runs on the loop once the job is back (timed_out false) or its
     * deadline passed first (timed_out true, and the job stays out: the
     * executor frees it when it returns). Set by whoever submits.
     */
    void (*on_done)(void *owner, struct mizan_req *job, bool timed_out);
    int slot;                        /**< the owner's index for this job */
    struct event *timer;             /**< deadline timer */
    bool back;                       /**< handed back to the loop */
    struct mizan_req *next;          /**< queue link (pool and completion queues) */
};

typedef struct mizan_req mizan_job_t;

/** A new job for fn with args (stolen) and caller (a reference is taken). */
mizan_job_t *mizan_job_new(const struct mizan_function *fn, json_t *args, mizan_caller_t *caller);

/** Frees a job (loop thread, after hand-back). NULL ok. */
void mizan_job_free(mizan_job_t *job);

/** Runs the handler on the calling (worker) thread, recording the outcome. */
void mizan_job_run(mizan_job_t *job);

/**
 * When the function's result is checked (validate_output and a declared
 * output schema), validates a successful result against the output schema:
 * a result that does not match becomes INTERNAL_ERROR (the client sees the
 * generic message) and the violations are logged with the function's name.
 * Runs on whichever thread holds the job (the worker that ran it, or the
 * loop of an upstream call), before the hand-back.
 */
void mizan_job_check_output(mizan_job_t *job);

/** Process-wide shutdown flag: makes every mizan_req_cancelled() true. */
void mizan_job_cancel_all(void);

#endif /* MIZAN_JOB_H */
