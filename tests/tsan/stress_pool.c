/*
 * stress_pool.c - the worker pool (pool.c) and job hand-offs (job.c) under
 * many threads, as a plain program for ThreadSanitizer (Criterion aborts
 * under TSan). Registered by tests/tsan/tests.cmake in a
 * -DMIZAN_SANITIZE=thread build; exits 0 when every check held, 1
 * otherwise (TSan reports fail the ctest test through its output).
 *
 * Submitter threads play the I/O loops: each builds batches of real jobs
 * (mizan_job_new with JSON args and a caller shared by every thread),
 * submits them all-or-nothing, sometimes cancels one as a deadline would,
 * and gets its jobs back through its own completion queue (mutex + condvar,
 * as loop.c's), where it checks what the handler recorded and frees them.
 * Workers run the jobs through mizan_job_run(): a sum, an error raised, a
 * handler failing without an error, a short cancellable sleep. A monitor
 * thread reads mizan_pool_load() throughout.
 *
 * Phase two stops the pool while it is busy: gated jobs hold every worker
 * and fill the queue, a stopper thread calls mizan_pool_stop() while
 * submitters keep trying (they quit at their first refusal once the stop
 * has begun, before the gate opens, so none can touch the pool after it is
 * destroyed), then the process-wide cancellation is raised and the gate
 * opened. Every accepted job must come back exactly once; queued ones are
 * skipped (not run) once cancelled.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "job.h"
#include "metrics.h"
#include "pool.h"
#include "registry.h"

#define WORKERS 4
#define CAPACITY 32
#define SUBMITTERS 6
#define ROUNDS 1000 /* accepted batches per submitter */
#define BATCH_MAX 6
#define WAIT_LIMIT_S 120

/* A submitter's completion queue: the workers append, the owner drains. */
typedef struct home {
    pthread_mutex_t lock;  /* guards head, tail, returned */
    pthread_cond_t cond;   /* signalled on every hand-back */
    mizan_job_t *head;     /* jobs handed back, oldest first */
    mizan_job_t *tail;
    long returned;         /* hand-backs ever received */
} home_t;

/* One submitter's state and findings (owned by its thread until joined). */
typedef struct submitter {
    int index;          /* also the slot every job of it carries */
    pthread_t thread;
    long accepted;      /* jobs the pool took */
    long refused;       /* jobs refused (queue full or stopping) */
    long checked;       /* jobs back and checked */
    long skipped;       /* jobs back without having run */
    long failures;      /* checks that did not hold */
    bool phase_two;     /* submit gated jobs until the first refusal after the stop began */
} submitter_t;

static mizan_pool_t pool;
static home_t homes[SUBMITTERS + 1]; /* the last one collects phase two's fill */
static mizan_function_t fn;
static mizan_fn_metrics_t fn_metrics;
static mizan_caller_t *shared_caller;
static atomic_bool stop_begun; /* the stopper is about to call mizan_pool_stop */
static atomic_bool gate_open;  /* gated handlers may finish */
static atomic_bool monitor_quit;
static atomic_long monitor_failures;
static atomic_long handler_runs;

static void fail(long *failures, const char *what, long id)
{
    if ((*failures)++ < 5)
        fprintf(stderr, "stress_pool: %s (job %ld)\n", what, id);
}

static void sleep_us(long us)
{
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/*
 * The function every job runs (worker thread). args: {"id", "a", "b",
 * "mode"}; mode 0 sums, 1 raises NOT_FOUND, 2 fails without an error, 3
 * sleeps 1 ms (cancellable) then sums, 4 waits for the gate (phase two).
 */
static int handler(mizan_req_t *req)
{
    atomic_fetch_add(&handler_runs, 1);
    const json_t *args = mizan_req_args(req);
    json_int_t a = json_integer_value(json_object_get(args, "a"));
    json_int_t b = json_integer_value(json_object_get(args, "b"));
    int mode = (int)json_integer_value(json_object_get(args, "mode"));
    const mizan_identity_t *id = mizan_req_identity(req);
    switch (mode) {
    case 1:
        return mizan_req_error(req, MIZAN_NOT_FOUND, "no such thing", json_pack("{s:I}", "a", a));
    case 2:
        return -1;
    case 3:
        if (mizan_req_sleep(req, 1) < 0)
            return mizan_req_error(req, MIZAN_TIMEOUT, "cancelled", NULL);
        break;
    case 4:
        while (!atomic_load(&gate_open) && !mizan_req_cancelled(req))
            sleep_us(200);
        break;
    default:
        break;
    }
    mizan_req_result(req, json_pack("{s:I, s:s, s:s}", "sum", a + b, "sub", id->sub != NULL ? id->sub : "",
                                    "fn", mizan_req_function(req)));
    return 0;
}

/* The pool's completion callback (worker thread): back to the submitter's queue. */
static void complete(mizan_job_t *job)
{
    home_t *h = &homes[job->slot];
    pthread_mutex_lock(&h->lock);
    job->next = NULL;
    if (h->tail != NULL)
        h->tail->next = job;
    else
        h->head = job;
    h->tail = job;
    h->returned++;
    pthread_cond_signal(&h->cond);
    pthread_mutex_unlock(&h->lock);
}

/* Checks what came back (submitter thread, after the hand-off) and frees it. */
static void check_job(submitter_t *s, mizan_job_t *job)
{
    const json_t *args = job->args;
    long jid = (long)json_integer_value(json_object_get(args, "id"));
    json_int_t a = json_integer_value(json_object_get(args, "a"));
    json_int_t b = json_integer_value(json_object_get(args, "b"));
    int mode = (int)json_integer_value(json_object_get(args, "mode"));
    s->checked++;
    if (!job->ran) {
        s->skipped++;
        if (!atomic_load(&job->cancelled) && !s->phase_two)
            fail(&s->failures, "a job was skipped without being cancelled", jid);
        if (job->result != NULL || job->code != MIZAN_OK)
            fail(&s->failures, "a skipped job carries an outcome", jid);
        mizan_job_free(job);
        return;
    }
    bool cancelled_sleep = mode == 3 && job->code == MIZAN_TIMEOUT;
    if (mode == 1 && (job->code != MIZAN_NOT_FOUND || job->message == NULL ||
                      strcmp(job->message, "no such thing") != 0 || job->result != NULL ||
                      json_integer_value(json_object_get(job->details, "a")) != a))
        fail(&s->failures, "a raised error did not come back intact", jid);
    if (mode == 2 && (job->code != MIZAN_INTERNAL_ERROR || job->result != NULL))
        fail(&s->failures, "a failing handler did not become INTERNAL_ERROR", jid);
    if (mode == 0 || (mode == 3 && !cancelled_sleep) || (mode == 4 && job->code == MIZAN_OK)) {
        const json_t *r = job->result;
        const char *sub = json_string_value(json_object_get(r, "sub"));
        if (job->code != MIZAN_OK || json_integer_value(json_object_get(r, "sum")) != a + b || sub == NULL ||
            strcmp(sub, "alice") != 0)
            fail(&s->failures, "a result did not come back intact", jid);
    }
    if (job->run_us < 0)
        fail(&s->failures, "a negative run time", jid);
    mizan_job_free(job);
}

/* Takes every job handed back to s; waits up to wait_ms for the first one when asked. */
static long drain(submitter_t *s, int wait_ms)
{
    home_t *h = &homes[s->index];
    pthread_mutex_lock(&h->lock);
    if (h->head == NULL && wait_ms > 0) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += (long)wait_ms * 1000000L;
        until.tv_sec += until.tv_nsec / 1000000000L;
        until.tv_nsec %= 1000000000L;
        while (h->head == NULL && pthread_cond_timedwait(&h->cond, &h->lock, &until) == 0)
            ;
    }
    mizan_job_t *job = h->head;
    h->head = h->tail = NULL;
    pthread_mutex_unlock(&h->lock);
    long n = 0;
    while (job != NULL) {
        mizan_job_t *next = job->next;
        check_job(s, job);
        job = next;
        n++;
    }
    return n;
}

static mizan_job_t *make_job(int slot, long id, unsigned *seed, int mode)
{
    *seed = *seed * 1103515245u + 12345u;
    json_int_t a = (json_int_t)(*seed >> 8) % 100000, b = (json_int_t)id;
    json_t *args = json_pack("{s:I, s:I, s:I, s:i}", "id", (json_int_t)id, "a", a, "b", b, "mode", mode);
    if (args == NULL)
        return NULL;
    mizan_job_t *job = mizan_job_new(&fn, args, shared_caller);
    if (job != NULL)
        job->slot = slot;
    return job;
}

static void *submit_main(void *arg)
{
    submitter_t *s = arg;
    unsigned seed = (unsigned)(s->index + 1) * 2654435761u;
    long next_id = (long)s->index * 10000000L;
    long outstanding = 0, batches = 0;
    for (long attempt = 0; s->phase_two || (batches < ROUNDS && attempt < 100L * ROUNDS); attempt++) {
        mizan_job_t *batch[BATCH_MAX];
        seed = seed * 1103515245u + 12345u;
        size_t n = 1 + (seed >> 16) % BATCH_MAX;
        size_t made = 0;
        for (; made < n; made++) {
            seed = seed * 1103515245u + 12345u;
            int mode = s->phase_two ? 4 : (int)((seed >> 12) % 4);
            if ((batch[made] = make_job(s->index, next_id++, &seed, mode)) == NULL)
                break;
        }
        bool stopping = atomic_load(&stop_begun);
        bool took = made == n && mizan_pool_submit(&pool, batch, n) == 0;
        if (took) {
            s->accepted += (long)n;
            outstanding += (long)n;
            batches++;
            /* A deadline passing on one of them (the loop's on_deadline). */
            if ((seed >> 5) % 8 == 0)
                atomic_store(&batch[(seed >> 9) % n]->cancelled, true);
        } else {
            for (size_t i = 0; i < made; i++)
                mizan_job_free(batch[i]);
            s->refused += (long)made;
            if (s->phase_two && stopping)
                break;
        }
        if (s->phase_two)
            sleep_us(50);
        else
            outstanding -= drain(s, took ? 0 : 1); /* refused: wait a little for hand-backs */
    }
    if (s->phase_two)
        return NULL;
    /* Everything accepted comes back, within a generous bound. */
    struct timespec t0, now;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (outstanding > 0) {
        outstanding -= drain(s, 100);
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec - t0.tv_sec > WAIT_LIMIT_S) {
            fail(&s->failures, "accepted jobs never came back", outstanding);
            break;
        }
    }
    return NULL;
}

static void *monitor_main(void *arg)
{
    (void)arg;
    while (!atomic_load(&monitor_quit)) {
        size_t queued = 0, busy = 0;
        mizan_pool_load(&pool, &queued, &busy);
        if (queued > CAPACITY || busy > WORKERS)
            atomic_fetch_add(&monitor_failures, 1);
        sleep_us(100);
    }
    return NULL;
}

static void *stopper_main(void *arg)
{
    (void)arg;
    atomic_store(&stop_begun, true);
    mizan_pool_stop(&pool);
    return NULL;
}

/* Fills the queue with gated jobs (collected by the extra home). */
static long fill_gated(submitter_t *sink)
{
    unsigned seed = 7;
    long id = 900000000L, accepted = 0;
    for (int tries = 0; tries < 10 * (CAPACITY + WORKERS); tries++) {
        mizan_job_t *job = make_job(sink->index, id++, &seed, 4);
        if (job == NULL)
            break;
        if (mizan_pool_submit(&pool, &job, 1) < 0) {
            mizan_job_free(job);
            size_t queued = 0, busy = 0;
            mizan_pool_load(&pool, &queued, &busy);
            if (queued == CAPACITY && busy == WORKERS)
                break;
            sleep_us(500);
            continue;
        }
        accepted++;
    }
    return accepted;
}

int main(void)
{
    json_object_seed(1);
    long failures = 0;
    memset(&fn, 0, sizeof(fn));
    fn.name = "stress";
    fn.kind = MIZAN_QUERY;
    fn.handler = handler;
    fn.timeout_ms = 1000;
    fn.metrics = &fn_metrics;
    for (int i = 0; i <= SUBMITTERS; i++) {
        pthread_mutex_init(&homes[i].lock, NULL);
        pthread_cond_init(&homes[i].cond, NULL);
    }
    mizan_token_claims_t claims = {0};
    claims.sub = strdup("alice");
    claims.exp = 4102444800LL;
    if (claims.sub == NULL || (shared_caller = mizan_caller_new(&claims)) == NULL) {
        fprintf(stderr, "stress_pool: out of memory\n");
        return 1;
    }
    mizan_err_t err = {{0}};
    if (mizan_pool_start(&pool, WORKERS, CAPACITY, complete, &err) < 0) {
        fprintf(stderr, "stress_pool: %s\n", err.msg);
        return 1;
    }
    pthread_t monitor;
    pthread_create(&monitor, NULL, monitor_main, NULL);

    /* Phase one: many submitters, a busy pool, refusals and cancellations. */
    submitter_t subs[SUBMITTERS];
    memset(subs, 0, sizeof(subs));
    for (int i = 0; i < SUBMITTERS; i++) {
        subs[i].index = i;
        pthread_create(&subs[i].thread, NULL, submit_main, &subs[i]);
    }
    long accepted = 0, refused = 0, checked = 0, skipped = 0;
    for (int i = 0; i < SUBMITTERS; i++) {
        pthread_join(subs[i].thread, NULL);
        accepted += subs[i].accepted;
        refused += subs[i].refused;
        checked += subs[i].checked;
        skipped += subs[i].skipped;
        failures += subs[i].failures;
        if (subs[i].checked != subs[i].accepted)
            fail(&failures, "a submitter got back a different number of jobs than it submitted",
                 subs[i].checked - subs[i].accepted);
    }
    printf("phase one: %ld accepted, %ld refused, %ld back (%ld skipped after cancellation), %ld handler runs\n",
           accepted, refused, checked, skipped, atomic_load(&handler_runs));
    if (accepted == 0 || refused == 0)
        fail(&failures, "phase one should see both accepted and refused batches", accepted);
    if (atomic_load(&fn_metrics.runs) != atomic_load(&handler_runs))
        fail(&failures, "the run counter differs from the handler's own count", atomic_load(&fn_metrics.runs));

    /* Phase two: stop while every worker is busy and the queue is full. */
    submitter_t sink = {.index = SUBMITTERS, .phase_two = true};
    long filled = fill_gated(&sink);
    submitter_t late[2];
    memset(late, 0, sizeof(late));
    for (int i = 0; i < 2; i++) {
        late[i].index = SUBMITTERS; /* their accepted jobs come back to the sink too */
        late[i].phase_two = true;
        pthread_create(&late[i].thread, NULL, submit_main, &late[i]);
    }
    pthread_t stopper;
    pthread_create(&stopper, NULL, stopper_main, NULL);
    long late_accepted = 0;
    for (int i = 0; i < 2; i++) {
        pthread_join(late[i].thread, NULL);
        late_accepted += late[i].accepted;
    }
    /* No submitter can touch the pool any more: stop the monitor too. */
    atomic_store(&monitor_quit, true);
    pthread_join(monitor, NULL);
    mizan_job_cancel_all();
    atomic_store(&gate_open, true);
    pthread_join(stopper, NULL);
    long back = 0;
    while (drain(&sink, 0) > 0)
        ;
    back = sink.checked;
    printf("phase two: %ld gated jobs filled the pool, %ld accepted during the stop, %ld back (%ld skipped)\n",
           filled, late_accepted, back, sink.skipped);
    failures += sink.failures;
    if (filled < CAPACITY)
        fail(&failures, "phase two could not fill the queue", filled);
    if (back != filled + late_accepted)
        fail(&failures, "after the stop, accepted jobs and jobs back differ", back - filled - late_accepted);
    if (homes[SUBMITTERS].returned != back)
        fail(&failures, "a job was handed back twice", homes[SUBMITTERS].returned);
    if (atomic_load(&monitor_failures) != 0)
        fail(&failures, "the pool reported more queued or busy than its bounds", atomic_load(&monitor_failures));

    mizan_pool_deinit(&pool);
    mizan_caller_unref(shared_caller);
    for (int i = 0; i <= SUBMITTERS; i++) {
        pthread_mutex_destroy(&homes[i].lock);
        pthread_cond_destroy(&homes[i].cond);
    }
    if (failures != 0) {
        fprintf(stderr, "stress_pool: %ld checks failed\n", failures);
        return 1;
    }
    printf("stress_pool: every check held\n");
    return 0;
}
