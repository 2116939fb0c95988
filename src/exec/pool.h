/*
 * pool.h - the worker pool: a fixed set of threads taking jobs from one
 * bounded queue.
 *
 * DESIGN: I/O loops submit; workers run. A submission that does not fit is
 * refused at once (the caller answers 503), never blocked. Submission is
 * all-or-nothing for a batch, so a context's functions are queued together
 * or not at all. After running a job the worker hands it to the completion
 * queue of the executor that submitted it (exec.h), which wakes that loop.
 *
 * Lock rule: `lock` guards the ring, `count`, `stopping`; it is never held
 * while a handler runs or while a loop's completion lock is taken.
 */
#ifndef MIZAN_POOL_H
#define MIZAN_POOL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>

#include "job.h"
#include "metrics.h"

typedef struct mizan_pool {
    pthread_mutex_t lock;     /**< guards everything below */
    pthread_cond_t nonempty;  /**< signalled when jobs arrive or on stop */
    mizan_job_t **ring;       /**< capacity slots */
    size_t capacity;          /**< queue bound */
    size_t head;              /**< next job to take */
    size_t count;             /**< jobs queued */
    size_t busy;              /**< workers running a handler */
    bool stopping;            /**< workers exit once the queue is empty */
    pthread_t *threads;
    int nthreads;
    /** Hands a finished job back to its loop (set before start). */
    void (*complete)(mizan_job_t *job);
} mizan_pool_t;

/** Starts nthreads workers. -1 with err on failure. */
int mizan_pool_start(mizan_pool_t *pool, int nthreads, size_t capacity, void (*complete)(mizan_job_t *),
                     mizan_err_t *err);

/** Queues all n jobs, or none: returns -1 when they do not fit or stopping. Any thread. */
int mizan_pool_submit(mizan_pool_t *pool, mizan_job_t **jobs, size_t n);

/** A stats reader (metrics.h): queue depth, capacity, busy workers, workers; arg is the pool. */
void mizan_pool_read_stats(void *arg, mizan_stats_t *out);

/** Jobs queued and running now (for metrics and readiness). Any thread. */
void mizan_pool_load(mizan_pool_t *pool, size_t *queued, size_t *busy);

/**
 * Lets workers finish the queue, then joins them. Main thread. Submissions
 * from then on are refused, so the pool stays valid (loops may still try)
 * until mizan_pool_deinit().
 */
void mizan_pool_stop(mizan_pool_t *pool);

/** Frees the stopped pool, once no loop runs. Main thread. */
void mizan_pool_deinit(mizan_pool_t *pool);

#endif /* MIZAN_POOL_H */
