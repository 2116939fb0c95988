/*
 * pool.c - the worker pool (see pool.h for the design and lock rules).
 */
#include "pool.h"

#include <stdlib.h>
#include <string.h>

#include "log.h"

/*
 * A submission of n jobs wakes n workers (at most), one signal each: every
 * job of a batch starts at once, as a context's concurrent functions must,
 * while the other idle workers sleep on. Waking every idle worker for each
 * batch made all but a few go back to sleep at once.
 */
static void *worker_main(void *arg)
{
    mizan_pool_t *pool = arg;
    pthread_mutex_lock(&pool->lock);
    for (;;) {
        while (pool->count == 0 && !pool->stopping)
            pthread_cond_wait(&pool->nonempty, &pool->lock);
        if (pool->count == 0)
            break;
        mizan_job_t *job = pool->ring[pool->head];
        pool->head = (pool->head + 1) % pool->capacity;
        pool->count--;
        pool->busy++;
        pthread_mutex_unlock(&pool->lock);

        mizan_job_run(job);

        /* Not busy any more before the answer can go out (readiness reads it). */
        pthread_mutex_lock(&pool->lock);
        pool->busy--;
        pthread_mutex_unlock(&pool->lock);
        pool->complete(job);
        pthread_mutex_lock(&pool->lock);
    }
    pthread_mutex_unlock(&pool->lock);
    return NULL;
}

int mizan_pool_start(mizan_pool_t *pool, int nthreads, size_t capacity, void (*complete)(mizan_job_t *),
                     mizan_err_t *err)
{
    memset(pool, 0, sizeof(*pool));
    pool->capacity = capacity;
    pool->complete = complete;
    pool->ring = calloc(capacity, sizeof(*pool->ring));
    pool->threads = calloc((size_t)nthreads, sizeof(*pool->threads));
    if (pool->ring == NULL || pool->threads == NULL) {
        free(pool->ring);
        free(pool->threads);
        return mizan_err_set(err, "out of memory for the worker pool");
    }
    pthread_mutex_init(&pool->lock, NULL);
    pthread_cond_init(&pool->nonempty, NULL);
    for (int i = 0; i < nthreads; i++) {
        if (pthread_create(&pool->threads[i], NULL, worker_main, pool) != 0) {
            mizan_pool_deinit(pool);
            return mizan_err_set(err, "cannot start worker thread %d", i);
        }
        pool->nthreads++;
    }
    return 0;
}

int mizan_pool_submit(mizan_pool_t *pool, mizan_job_t **jobs, size_t n)
{
    pthread_mutex_lock(&pool->lock);
    if (pool->stopping || pool->capacity - pool->count < n) {
        pthread_mutex_unlock(&pool->lock);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        pool->ring[(pool->head + pool->count) % pool->capacity] = jobs[i];
        pool->count++;
    }
    for (size_t i = 0; i < n; i++)
        pthread_cond_signal(&pool->nonempty);
    pthread_mutex_unlock(&pool->lock);
    return 0;
}

void mizan_pool_load(mizan_pool_t *pool, size_t *queued, size_t *busy)
{
    pthread_mutex_lock(&pool->lock);
    *queued = pool->count;
    *busy = pool->busy;
    pthread_mutex_unlock(&pool->lock);
}

void mizan_pool_stop(mizan_pool_t *pool)
{
    if (pool->ring == NULL || pool->threads == NULL)
        return;
    pthread_mutex_lock(&pool->lock);
    pool->stopping = true;
    pthread_cond_broadcast(&pool->nonempty);
    pthread_mutex_unlock(&pool->lock);
    for (int i = 0; i < pool->nthreads; i++)
        pthread_join(pool->threads[i], NULL);
    free(pool->threads);
    pool->threads = NULL;
    pool->nthreads = 0;
}

void mizan_pool_deinit(mizan_pool_t *pool)
{
    if (pool->ring == NULL)
        return;
    mizan_pool_stop(pool);
    pthread_mutex_destroy(&pool->lock);
    pthread_cond_destroy(&pool->nonempty);
    free(pool->ring);
    pool->ring = NULL;
}

void mizan_pool_read_stats(void *arg, mizan_stats_t *out)
{
    mizan_pool_t *pool = arg;
    mizan_pool_load(pool, &out->queued, &out->busy);
    out->capacity = pool->capacity;
    out->workers = pool->nthreads;
}
