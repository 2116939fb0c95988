/*
 * test_pool.c - the worker pool (src/pool.c): real jobs (mizan_job_run on
 * a minimal function) submitted, run and handed to the completion
 * callback; the bound (a batch fits whole or is refused whole, the
 * capacity exactly); load reporting; stop finishing the queue and refusing
 * new work; and many threads submitting at once without a job lost or run
 * twice.
 */
#include <criterion/criterion.h>

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "job.h"
#include "pool.h"
#include "registry.h"

/* ---- a gate that holds handlers until opened ------------------------------------------ */

static pthread_mutex_t gate_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cond = PTHREAD_COND_INITIALIZER;
static bool gate_open;

static void gate_set(bool open)
{
    pthread_mutex_lock(&gate_lock);
    gate_open = open;
    pthread_cond_broadcast(&gate_cond);
    pthread_mutex_unlock(&gate_lock);
}

static void gate_wait(void)
{
    pthread_mutex_lock(&gate_lock);
    while (!gate_open)
        pthread_cond_wait(&gate_cond, &gate_lock);
    pthread_mutex_unlock(&gate_lock);
}

/* ---- handlers and the completion callback ------------------------------------------------ */

static atomic_int handled;   /* handler runs */
static atomic_int completed; /* completion callbacks */
static atomic_int *run_counts; /* per job index, for the concurrency test */
static pthread_t main_thread;
static atomic_bool completed_on_main;

static int h_count(mizan_req_t *req)
{
    atomic_fetch_add(&handled, 1);
    json_t *i = json_object_get(mizan_req_args(req), "i");
    if (run_counts != NULL && json_is_integer(i))
        atomic_fetch_add(&run_counts[json_integer_value(i)], 1);
    mizan_req_result(req, json_integer(json_integer_value(i) * 2));
    return 0;
}

static int h_gated(mizan_req_t *req)
{
    gate_wait();
    return h_count(req);
}

static void on_complete(mizan_job_t *job)
{
    if (pthread_equal(pthread_self(), main_thread))
        atomic_store(&completed_on_main, true);
    /* The job has run: its outcome is there. */
    if (job->code != MIZAN_OK || job->result == NULL ||
        json_integer_value(job->result) != 2 * json_integer_value(json_object_get(job->args, "i")))
        abort();
    mizan_job_free(job);
    atomic_fetch_add(&completed, 1);
}

static mizan_function_t fn_count, fn_gated;

static void setup(void)
{
    atomic_store(&handled, 0);
    atomic_store(&completed, 0);
    atomic_store(&completed_on_main, false);
    run_counts = NULL;
    main_thread = pthread_self();
    gate_set(true);
    memset(&fn_count, 0, sizeof(fn_count));
    fn_count.name = "count";
    fn_count.handler = h_count;
    fn_gated = fn_count;
    fn_gated.name = "gated";
    fn_gated.handler = h_gated;
}

TestSuite(pool, .init = setup, .timeout = 60);

static mizan_job_t *new_job(const mizan_function_t *fn, int i)
{
    mizan_job_t *job = mizan_job_new(fn, json_pack("{s:i}", "i", i), mizan_caller_anonymous());
    cr_assert_not_null(job);
    return job;
}

/* Waits (bounded) until completed reaches n. */
static void wait_completed(int n)
{
    for (int i = 0; i < 10000 && atomic_load(&completed) < n; i++) {
        struct timespec ts = {0, 1000000L};
        nanosleep(&ts, NULL);
    }
    cr_assert_eq(atomic_load(&completed), n, "%d of %d jobs completed", atomic_load(&completed), n);
}

/* Waits (bounded) until the pool reports busy workers. */
static void wait_busy(mizan_pool_t *pool, size_t busy)
{
    size_t q = 0, b = 0;
    for (int i = 0; i < 10000; i++) {
        mizan_pool_load(pool, &q, &b);
        if (b == busy)
            return;
        struct timespec ts = {0, 1000000L};
        nanosleep(&ts, NULL);
    }
    cr_assert_fail("busy stayed %zu (wanted %zu)", b, busy);
}

static void start(mizan_pool_t *pool, int threads, size_t capacity)
{
    mizan_err_t err = {{0}};
    cr_assert_eq(mizan_pool_start(pool, threads, capacity, on_complete, &err), 0, "%s", err.msg);
    cr_assert_eq(pool->nthreads, threads);
    cr_assert_eq(pool->capacity, capacity);
}

/* ---- tests ------------------------------------------------------------------------------- */

Test(pool, submit_run_complete)
{
    mizan_pool_t pool;
    start(&pool, 4, 16);
    for (int i = 0; i < 10; i++) {
        mizan_job_t *job = new_job(&fn_count, i);
        cr_assert_eq(mizan_pool_submit(&pool, &job, 1), 0);
    }
    wait_completed(10);
    cr_assert_eq(atomic_load(&handled), 10);
    cr_assert(!atomic_load(&completed_on_main), "completion ran on the submitting thread");
    size_t q = 99, b = 99;
    mizan_pool_load(&pool, &q, &b);
    cr_assert_eq(q, 0);
    cr_assert_eq(b, 0);
    mizan_pool_stop(&pool);
    cr_assert_null(pool.threads);
    mizan_pool_stop(&pool); /* a second stop is harmless */
    mizan_job_t *late = new_job(&fn_count, 99);
    cr_assert_eq(mizan_pool_submit(&pool, &late, 1), -1, "a stopped pool accepted work");
    mizan_job_free(late);
    mizan_pool_deinit(&pool);
    cr_assert_null(pool.ring);
}

Test(pool, batch_submission)
{
    mizan_pool_t pool;
    start(&pool, 2, 8);
    mizan_job_t *jobs[8];
    for (int i = 0; i < 8; i++)
        jobs[i] = new_job(&fn_count, i);
    cr_assert_eq(mizan_pool_submit(&pool, jobs, 8), 0);
    wait_completed(8);
    cr_assert_eq(mizan_pool_submit(&pool, jobs, 0), 0, "an empty batch fits");
    mizan_pool_stop(&pool);
    mizan_pool_deinit(&pool);
    cr_assert_eq(atomic_load(&completed), 8);
}

Test(pool, capacity_is_exact_and_batches_are_all_or_nothing)
{
    mizan_pool_t pool;
    start(&pool, 1, 4);
    gate_set(false);
    /* The only worker takes this job and waits at the gate. */
    mizan_job_t *hold = new_job(&fn_gated, 100);
    cr_assert_eq(mizan_pool_submit(&pool, &hold, 1), 0);
    wait_busy(&pool, 1);

    mizan_job_t *three[3] = {new_job(&fn_count, 0), new_job(&fn_count, 1), new_job(&fn_count, 2)};
    cr_assert_eq(mizan_pool_submit(&pool, three, 3), 0);
    size_t q, b;
    mizan_pool_load(&pool, &q, &b);
    cr_assert_eq(q, 3);
    cr_assert_eq(b, 1);

    /* One slot left: a batch of two is refused whole... */
    mizan_job_t *two[2] = {new_job(&fn_count, 10), new_job(&fn_count, 11)};
    cr_assert_eq(mizan_pool_submit(&pool, two, 2), -1);
    mizan_pool_load(&pool, &q, &b);
    cr_assert_eq(q, 3, "a refused batch queued %zu jobs", q - 3);
    /* ...a batch larger than the whole queue too... */
    mizan_job_t *five[5];
    for (int i = 0; i < 5; i++)
        five[i] = new_job(&fn_count, 20 + i);
    cr_assert_eq(mizan_pool_submit(&pool, five, 5), -1);
    /* ...and one job fills the queue exactly. */
    mizan_job_t *last = new_job(&fn_count, 3);
    cr_assert_eq(mizan_pool_submit(&pool, &last, 1), 0);
    mizan_pool_load(&pool, &q, &b);
    cr_assert_eq(q, 4);
    mizan_job_t *over = new_job(&fn_count, 4);
    cr_assert_eq(mizan_pool_submit(&pool, &over, 1), -1);

    gate_set(true);
    wait_completed(5);
    /* Refused jobs were never touched: still the caller's. */
    for (int i = 0; i < 2; i++) {
        cr_assert(!two[i]->ran);
        mizan_job_free(two[i]);
    }
    for (int i = 0; i < 5; i++) {
        cr_assert(!five[i]->ran);
        mizan_job_free(five[i]);
    }
    cr_assert(!over->ran);
    /* Room again once the queue drained. */
    cr_assert_eq(mizan_pool_submit(&pool, &over, 1), 0);
    wait_completed(6);
    mizan_pool_stop(&pool);
    mizan_pool_deinit(&pool);
    cr_assert_eq(atomic_load(&handled), 6);
}

Test(pool, ring_wraps_around)
{
    /* Far more jobs than slots, one batch at a time as room appears. */
    mizan_pool_t pool;
    start(&pool, 3, 5);
    int submitted = 0;
    while (submitted < 500) {
        mizan_job_t *batch[2] = {new_job(&fn_count, submitted), new_job(&fn_count, submitted + 1)};
        if (mizan_pool_submit(&pool, batch, 2) == 0) {
            submitted += 2;
        } else {
            mizan_job_free(batch[0]);
            mizan_job_free(batch[1]);
            sched_yield();
        }
    }
    wait_completed(500);
    mizan_pool_stop(&pool);
    mizan_pool_deinit(&pool);
}

struct stopper {
    mizan_pool_t *pool;
    atomic_bool done;
};

static void *stop_thread(void *arg)
{
    struct stopper *s = arg;
    mizan_pool_stop(s->pool);
    atomic_store(&s->done, true);
    return NULL;
}

Test(pool, stop_drains_the_queue_and_refuses_new_work)
{
    mizan_pool_t pool;
    start(&pool, 2, 64);
    gate_set(false);
    enum { N = 40 };
    for (int i = 0; i < N; i++) {
        mizan_job_t *job = new_job(&fn_gated, i);
        cr_assert_eq(mizan_pool_submit(&pool, &job, 1), 0);
    }
    wait_busy(&pool, 2);
    struct stopper s = {.pool = &pool};
    atomic_init(&s.done, false);
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, stop_thread, &s), 0);
    /* Wait until stopping is set (under the pool's lock), then submit. */
    bool stopping = false;
    for (int i = 0; i < 10000 && !stopping; i++) {
        pthread_mutex_lock(&pool.lock);
        stopping = pool.stopping;
        pthread_mutex_unlock(&pool.lock);
        if (!stopping) {
            struct timespec ts = {0, 1000000L};
            nanosleep(&ts, NULL);
        }
    }
    cr_assert(stopping);
    mizan_job_t *late = new_job(&fn_count, 999);
    cr_assert_eq(mizan_pool_submit(&pool, &late, 1), -1, "a stopping pool accepted work");
    mizan_job_free(late);
    cr_assert(!atomic_load(&s.done), "stop returned while jobs were still queued");
    gate_set(true);
    pthread_join(t, NULL);
    cr_assert(atomic_load(&s.done));
    /* Every queued job ran and completed before stop returned. */
    cr_assert_eq(atomic_load(&handled), N);
    cr_assert_eq(atomic_load(&completed), N);
    mizan_pool_deinit(&pool);
}

/* Submitters for the concurrency test. */
enum { SUBMITTERS = 8, PER_SUBMITTER = 2000 };

struct submitter {
    mizan_pool_t *pool;
    int first;
    int refused;
};

static void *submit_many(void *arg)
{
    struct submitter *s = arg;
    for (int i = 0; i < PER_SUBMITTER;) {
        int n = (i % 3) + 1; /* batches of 1, 2 and 3 */
        if (i + n > PER_SUBMITTER)
            n = PER_SUBMITTER - i;
        mizan_job_t *batch[3];
        for (int k = 0; k < n; k++)
            batch[k] = mizan_job_new(&fn_count, json_pack("{s:i}", "i", s->first + i + k), mizan_caller_anonymous());
        if (mizan_pool_submit(s->pool, batch, (size_t)n) == 0) {
            i += n;
        } else {
            s->refused++;
            for (int k = 0; k < n; k++)
                mizan_job_free(batch[k]);
            sched_yield();
        }
    }
    return NULL;
}

Test(pool, concurrent_submitters_lose_nothing)
{
    int total = SUBMITTERS * PER_SUBMITTER;
    run_counts = calloc((size_t)total, sizeof(*run_counts));
    cr_assert_not_null(run_counts);
    mizan_pool_t pool;
    start(&pool, 4, 32);
    pthread_t threads[SUBMITTERS];
    struct submitter subs[SUBMITTERS];
    for (int t = 0; t < SUBMITTERS; t++) {
        subs[t] = (struct submitter){.pool = &pool, .first = t * PER_SUBMITTER};
        cr_assert_eq(pthread_create(&threads[t], NULL, submit_many, &subs[t]), 0);
    }
    for (int t = 0; t < SUBMITTERS; t++)
        pthread_join(threads[t], NULL);
    mizan_pool_stop(&pool);
    mizan_pool_deinit(&pool);
    cr_assert_eq(atomic_load(&handled), total);
    cr_assert_eq(atomic_load(&completed), total);
    for (int i = 0; i < total; i++)
        cr_assert_eq(atomic_load(&run_counts[i]), 1, "job %d ran %d times", i, atomic_load(&run_counts[i]));
    free(run_counts);
    run_counts = NULL;
}

static atomic_int back_ran, back_skipped;

static void on_complete_any(mizan_job_t *job)
{
    atomic_fetch_add(job->ran ? &back_ran : &back_skipped, 1);
    mizan_job_free(job);
}

Test(pool, cancelled_jobs_are_handed_back_unrun)
{
    /* A job whose deadline passed before a worker took it is not run, but
     * is still handed back (its loop frees it). */
    atomic_store(&back_ran, 0);
    atomic_store(&back_skipped, 0);
    mizan_pool_t pool;
    mizan_err_t err = {{0}};
    cr_assert_eq(mizan_pool_start(&pool, 2, 8, on_complete_any, &err), 0, "%s", err.msg);
    mizan_job_t *jobs[4];
    for (int i = 0; i < 4; i++) {
        jobs[i] = new_job(&fn_count, i);
        if (i % 2 == 1)
            atomic_store(&jobs[i]->cancelled, true);
    }
    cr_assert_eq(mizan_pool_submit(&pool, jobs, 4), 0);
    mizan_pool_stop(&pool);
    mizan_pool_deinit(&pool);
    cr_assert_eq(atomic_load(&back_ran), 2);
    cr_assert_eq(atomic_load(&back_skipped), 2);
    cr_assert_eq(atomic_load(&handled), 2);
}
