/*
 * exec.c - one loop's executor: submission, deadlines, inline runs of
 * non-blocking functions, and the completion queue through which workers
 * hand jobs back (see exec.h).
 */
#include "exec.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <event2/event.h>

#include "log.h"
#include "metrics.h"

static void job_release(mizan_job_t *job)
{
    if (job->timer != NULL)
        event_free(job->timer);
    mizan_job_free(job);
}

void mizan_exec_complete(mizan_job_t *job)
{
    mizan_exec_t *x = job->exec;
    pthread_mutex_lock(&x->lock);
    bool was_empty = x->done_head == NULL;
    job->next = NULL;
    if (x->done_tail != NULL)
        x->done_tail->next = job;
    else
        x->done_head = job;
    x->done_tail = job;
    pthread_mutex_unlock(&x->lock);
    if (was_empty)
        event_active(x->wake, EV_READ, 0);
}

/* A job is back from its worker (loop thread). */
static void job_returned(mizan_exec_t *x, mizan_job_t *job)
{
    atomic_fetch_sub(&x->outstanding, 1);
    /* Its run ended (even when its owner gave up at the deadline): free its slot. */
    mizan_function_release(job->fn);
    job->back = true;
    if (job->timer != NULL)
        evtimer_del(job->timer);
    if (job->owner == NULL) {
        /* Abandoned at its deadline: the answer was already given. */
        job_release(job);
        return;
    }
    job->on_done(job->owner, job, false);
}

static void drain(mizan_exec_t *x)
{
    pthread_mutex_lock(&x->lock);
    mizan_job_t *job = x->done_head;
    x->done_head = x->done_tail = NULL;
    pthread_mutex_unlock(&x->lock);
    while (job != NULL) {
        mizan_job_t *next = job->next;
        job_returned(x, job);
        job = next;
    }
}

static void on_wake(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    drain(arg);
}

/* A job's deadline passed before it came back (loop thread). */
static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    mizan_job_t *job = arg;
    void *owner = job->owner;
    atomic_store(&job->cancelled, true);
    if (owner == NULL)
        return;
    job->owner = NULL;
    mizan_metrics_timeout(job->fn);
    mizan_log(MIZAN_LOG_WARN, "function %s passed its %d ms deadline (request %s)", job->fn->name,
              job->fn->timeout_ms, job->rid);
    job->on_done(owner, job, true);
}

static long long now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000LL + ts.tv_nsec / 1000;
}

/*
 * Runs a non-blocking function's job here, on the loop, and hands it back
 * at once: no worker, no queue, no wake-up. Its deadline is the same as on
 * a worker: a run that took longer is reported as timed out (the timer
 * could not fire while the run held the loop), and its outcome dropped.
 */
static void run_inline(mizan_exec_t *x, mizan_job_t *job)
{
    long long t0 = now_us(), limit = t0 + (long long)job->fn->timeout_ms * 1000;
    /* mizan_req_cancelled() turns true past it, as the timer would make it. */
    job->deadline.tv_sec = (time_t)(limit / 1000000);
    job->deadline.tv_nsec = (long)(limit % 1000000) * 1000;
    mizan_job_run(job);
    atomic_fetch_add(&x->outstanding, 1);
    if (now_us() > limit && job->owner != NULL)
        on_deadline(-1, 0, job);
    job_returned(x, job);
}

int mizan_exec_init(mizan_exec_t *x, struct event_base *base, mizan_pool_t *pool, const mizan_upstreams_t *ups,
                    mizan_err_t *err)
{
    x->base = base;
    x->pool = pool;
    pthread_mutex_init(&x->lock, NULL);
    atomic_init(&x->outstanding, 0);
    if ((x->wake = event_new(base, -1, 0, on_wake, x)) == NULL)
        return mizan_err_set(err, "cannot create the executor's wake-up event");
    return mizan_upstream_loop_new(base, ups, mizan_exec_complete, &x->upstream, err);
}

void mizan_exec_deinit(mizan_exec_t *x)
{
    if (x->base == NULL)
        return;
    /* Jobs that never came back (a handler ignoring cancellation past the
     * drain budget) are gone with the process; everything else is back. */
    drain(x);
    mizan_upstream_loop_free(x->upstream);
    x->upstream = NULL;
    drain(x);
    if (x->wake != NULL)
        event_free(x->wake);
    x->wake = NULL;
    pthread_mutex_destroy(&x->lock);
    x->base = NULL;
}

int mizan_exec_submit(mizan_exec_t *x, mizan_job_t **jobs, size_t njobs, size_t *started)
{
    mizan_job_t *batch[64];
    mizan_job_t **list = njobs <= 64 ? batch : calloc(njobs, sizeof(*list));
    size_t n = 0;
    *started = 0;
    if (list == NULL)
        return -1;
    for (size_t i = 0; i < njobs; i++) {
        mizan_job_t *job = jobs[i];
        if (job == NULL)
            continue;
        if (!mizan_function_acquire(job->fn)) {
            /* At its concurrency limit: refused at once, never queued behind
             * the runs in flight; the owner sees an UNAVAILABLE job. */
            char msg[160];
            snprintf(msg, sizeof(msg), "function %s is at its limit of %d concurrent runs; retry shortly",
                     job->fn->name, job->fn->max_concurrency);
            mizan_req_error(job, MIZAN_UNAVAILABLE, msg, NULL);
            mizan_metrics_limited(job->fn);
            continue;
        }
        job->exec = x;
        /* Upstream functions keep their own deadline (upstream_client.c
         * hands every job back by then): no timer of ours for them. */
        if (!job->fn->nonblocking && job->fn->upstream == NULL) {
            job->timer = evtimer_new(x->base, on_deadline, job);
            if (job->timer == NULL) {
                mizan_function_release(job->fn);
                goto fail;
            }
        }
        list[n++] = job;
    }
    /* Blocking functions go to the worker pool, all or nothing; upstream
     * functions start on this loop (upstream_client.c); non-blocking ones
     * run right here, last, once nothing can fail any more. */
    size_t npool = 0, nup = 0;
    for (size_t i = 0; i < n; i++)
        if (list[i]->fn->upstream == NULL && !list[i]->fn->nonblocking) {
            mizan_job_t *t = list[npool];
            list[npool++] = list[i];
            list[i] = t;
        }
    for (size_t i = npool; i < n; i++)
        if (list[i]->fn->upstream != NULL) {
            mizan_job_t *t = list[npool + nup];
            list[npool + nup++] = list[i];
            list[i] = t;
        }
    if (npool > 0 && mizan_pool_submit(x->pool, list, npool) < 0)
        goto fail;
    for (size_t i = npool; i < npool + nup; i++) {
        if (x->upstream != NULL) {
            mizan_upstream_start(x->upstream, list[i]);
            continue;
        }
        mizan_req_error(list[i], MIZAN_INTERNAL_ERROR, "no upstream client on this loop", NULL);
        list[i]->ran = true;
        mizan_exec_complete(list[i]);
    }
    for (size_t i = 0; i < npool; i++) {
        struct timeval tv = {list[i]->fn->timeout_ms / 1000, (list[i]->fn->timeout_ms % 1000) * 1000};
        evtimer_add(list[i]->timer, &tv);
    }
    *started = n;
    atomic_fetch_add(&x->outstanding, npool + nup);
    for (size_t i = npool + nup; i < n; i++)
        run_inline(x, list[i]);
    if (list != batch)
        free(list);
    return 0;
fail:
    for (size_t i = 0; i < n; i++) {
        mizan_function_release(list[i]->fn); /* taken above, never run */
        if (list[i]->timer != NULL)
            event_free(list[i]->timer);
        list[i]->timer = NULL;
        list[i]->exec = NULL;
    }
    if (list != batch)
        free(list);
    return -1;
}

void mizan_exec_drop(mizan_job_t *job)
{
    if (job == NULL)
        return;
    if (!job->back && (job->timer != NULL || (job->exec != NULL && job->fn->upstream != NULL))) {
        /* Still out (deadline passed, or a shutdown abort): let it come back on its own. */
        job->owner = NULL;
        atomic_store(&job->cancelled, true);
        return;
    }
    job_release(job);
}

bool mizan_exec_idle(mizan_exec_t *x)
{
    return atomic_load(&x->outstanding) == 0;
}
