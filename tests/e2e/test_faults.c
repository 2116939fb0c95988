/*
 * test_faults.c - end-to-end fault tests: the gateway under load from real
 * clients (keep-alive load threads, concurrent batches, `wrk`) while
 * something goes wrong, each scenario bounded in time and judged by hard
 * numbers (status counts, latencies, revision values, descriptor counts,
 * CPU time, exit status):
 *
 *   - Redis killed and restarted: no 5xx, BYPASS during the outage, HIT
 *     again after, queued invalidations replayed, /readyz 200 -> 503 -> 200;
 *   - Redis stalled (SIGSTOP, and CLIENT PAUSE): every request answered
 *     within cache.timeout_ms + function time + slack, BYPASS meanwhile;
 *   - functions past their deadline: 504 at the deadline, workers free;
 *   - a full work queue: 503 with Retry-After at once, the rest served;
 *   - clients that vanish mid-request, slowloris, 10 000 connections, and
 *     running out of file descriptors;
 *   - SIGTERM under load: in-flight requests answered, listener closed,
 *     exit status 0 within drain_timeout_ms.
 *
 * With an ASan build of mizand a leak makes the exit status non-zero, so
 * every "exits 0" below is also a leak check.
 */
#include <criterion/criterion.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache_support.h"
#include "fault_support.h"
#include "harness.h"

TestSuite(faults, .init = mz_setup, .fini = mz_teardown, .timeout = 90);

/* ------------------------------------------------------------------------
 * Helpers
 * ---------------------------------------------------------------------- */

#define POST1 "/api/mizan/ctx/post/?post_id=1"
#define POST2 "/api/mizan/ctx/post/?post_id=2"
#define FEED "/api/mizan/ctx/feed/"
#define POST1_TARGET "{\"context\":\"post\",\"params\":{\"post_id\":1}}"
#define POST2_TARGET "{\"context\":\"post\",\"params\":{\"post_id\":2}}"

/*
 * The Redis scenarios' load: threads t with t % NKINDS < NCTX read a
 * context, the others comment on post 3 (a mutation whose only target is
 * post 3's scoped revision, so the revisions of post 1, post 2 and feed
 * stay under the test's exact control).
 */
enum { NKINDS = 4, NCTX = 3, LOAD_THREADS = 8 };
static const char *const KIND_NAMES[NKINDS] = {"ctx post 1", "ctx feed", "ctx post 2", "add_comment post 3"};

static mz_req_t get_req(const char *path)
{
    mz_req_t r = {.method = "GET", .path = path};
    return r;
}

static double latency(const mz_load_rec_t *x)
{
    return x->end_ms - x->start_ms;
}

static bool is_ctx(const mz_load_rec_t *x)
{
    return x->thread % NKINDS < NCTX;
}

/* One record, times relative to origin_ms, for failure messages. */
static char *describe_rec(const mz_load_rec_t *x, const char *const *kinds, size_t nkinds, double origin_ms)
{
    return mz_fmt("[thread %d, %s, sent at %+.0f ms: status %d%s%s, X-Mizan-Cache \"%s\", %.1f ms%s%s]",
                  x->thread, kinds != NULL ? kinds[(size_t)x->thread % nkinds] : "-", x->start_ms - origin_ms,
                  x->status, x->code[0] ? " " : "", x->code, x->cache, latency(x), x->err[0] ? ", error: " : "",
                  x->err);
}

/* Up to 5 records failing ok(), described. */
static char *first_bad(const mz_load_rec_t *recs, size_t n, bool (*ok)(const mz_load_rec_t *),
                       const char *const *kinds, size_t nkinds, double origin_ms)
{
    char *s = mz_fmt("%s", "");
    size_t shown = 0;
    for (size_t i = 0; i < n && shown < 5; i++) {
        if (!ok(&recs[i])) {
            s = mz_fmt("%s\n  %s", s, describe_rec(&recs[i], kinds, nkinds, origin_ms));
            shown++;
        }
    }
    return s;
}

static bool is_200(const mz_load_rec_t *x)
{
    return x->status == 200;
}

static bool is_bypass(const mz_load_rec_t *x)
{
    return strcmp(x->cache, "BYPASS") == 0;
}

/* A gateway on Redis r with a 200 ms Redis timeout, ready. */
static mz_gw_t *start_redis_gw(const mz_redis_t *r, int timeout_ms)
{
    json_t *cfg = mz_json("{\"instance\":\"A\",\"workers\":8,"
                          "\"cache\":{\"redis_url\":\"redis://127.0.0.1:%d/0\",\"timeout_ms\":%d}}",
                          r->port, timeout_ms);
    mz_gw_opts_t opts = {.config = cfg};
    mz_gw_t *gw = mz_gw_start_opts(&opts);
    mz_wait_status(gw, "/readyz", 200, 10000, NULL);
    return gw;
}

/* Each context of the load once MISS (stored), then HIT. */
static void warm_contexts(const mz_gw_t *gw)
{
    const char *paths[] = {POST1, FEED, POST2};
    for (size_t i = 0; i < 3; i++) {
        mz_resp_t *a = mz_get(gw, paths[i], NULL);
        cr_assert(a->status == 200 && strcmp(mz_header(a, "X-Mizan-Cache"), "MISS") == 0, "warm-up %s:\n%s",
                  paths[i], mz_describe(a));
        mz_resp_t *b = mz_get(gw, paths[i], NULL);
        cr_assert(b->status == 200 && strcmp(mz_header(b, "X-Mizan-Cache"), "HIT") == 0, "warm-up %s:\n%s",
                  paths[i], mz_describe(b));
    }
}

/* The load of the Redis scenarios on gw. */
static mz_load_t *start_redis_load(const mz_gw_t *gw, const char *token)
{
    mz_req_t *reqs = mz_alloc(NKINDS * sizeof(*reqs));
    reqs[0] = get_req(POST1);
    reqs[1] = get_req(FEED);
    reqs[2] = get_req(POST2);
    reqs[3] = mz_call_req("add_comment", "{\"post_id\":3,\"text\":\"under load\"}", token);
    mz_load_opts_t o = {.port = gw->port, .threads = LOAD_THREADS, .reqs = reqs, .nreqs = NKINDS,
                        .timeout_ms = 5000, .pause_ms = 5};
    return mz_load_start(&o);
}

/*
 * Polls the load until each context kind has been answered HIT by a
 * request sent after after_ms; returns when that happened. Asserting: fails
 * after timeout_ms with what the load saw.
 */
static double wait_hits(mz_load_t *load, double after_ms, int timeout_ms)
{
    double deadline = mz_now_ms() + timeout_ms;
    for (;;) {
        size_t n = 0;
        mz_load_rec_t *recs = mz_load_snapshot(load, &n);
        bool seen[NCTX] = {false};
        size_t kinds = 0;
        for (size_t i = 0; i < n; i++) {
            int k = recs[i].thread % NKINDS;
            if (k < NCTX && recs[i].start_ms > after_ms && strcmp(recs[i].cache, "HIT") == 0 && !seen[k]) {
                seen[k] = true;
                kinds++;
            }
        }
        if (kinds == NCTX)
            return mz_now_ms();
        if (mz_now_ms() > deadline) {
            size_t first = 0;
            while (first < n && recs[first].start_ms <= after_ms)
                first++;
            cr_assert_fail("contexts not answered HIT again within %d ms (%zu of %d kinds did); since then: %s",
                           timeout_ms, kinds, NCTX, mz_load_summary(recs + first, n - first));
        }
        mz_sleep_ms(100);
    }
}

/* GET key: the string value, or NULL when missing. */
static const char *rget(const mz_redis_t *r, const char *key)
{
    const char *argv[] = {"GET", key, NULL};
    json_t *v = mz_redis_cmd(r, argv);
    cr_assert(json_is_string(v) || json_is_null(v), "GET %s: %s", key, mz_dump(v));
    return json_string_value(v);
}

static long long rget_int(const mz_redis_t *r, const char *key)
{
    const char *v = rget(r, key);
    return v != NULL ? strtoll(v, NULL, 10) : 0;
}

static void expect_rev(const mz_redis_t *r, const char *what, const char *key, const char *want)
{
    const char *got = rget(r, key);
    cr_assert(got != NULL && strcmp(got, want) == 0, "%s (%s): expected %s, got %s", what, key, want,
              got != NULL ? got : "(missing)");
}

/* A mutation answered 200 whose invalidate list is exactly want. */
static void mutate(const mz_gw_t *gw, const char *fn, const char *args, const char *token, const char *want)
{
    mz_resp_t *r = mz_call(gw, fn, args, token);
    mz_expect_mutation(r);
    mz_expect_json(json_object_get(r->json, "invalidate"), want);
}

/* ------------------------------------------------------------------------
 * 1. Redis killed and restarted under load
 * ---------------------------------------------------------------------- */

Test(faults, redis_killed_and_restarted_under_load)
{
    mz_redis_t *r = mz_redis_start();
    mz_gw_t *gw = start_redis_gw(r, 200);
    char *alice = mz_token(gw, "alice", NULL);
    warm_contexts(gw);
    double origin = mz_now_ms();
    mz_load_t *load = start_redis_load(gw, alice);
    mz_sleep_ms(800);
    mz_expect_status(mz_get(gw, "/readyz", NULL), 200);

    double kill_ms = mz_now_ms();
    mz_redis_kill(r);
    double killed_ms = mz_now_ms();
    double waited = 0;
    mz_expect_error(mz_wait_status(gw, "/readyz", 503, 3000, &waited), 503, "UNAVAILABLE");
    cr_log_info("kill: /readyz 503 after %.0f ms", waited);
    mz_expect_status(mz_get(gw, "/healthz", NULL), 200);

    /* Mutations acknowledged during the outage: their bumps wait for Redis. */
    for (int i = 0; i < 3; i++)
        mutate(gw, "update_post", mz_fmt("{\"post_id\":1,\"title\":\"outage %d\"}", i), alice,
               "[" POST1_TARGET ",{\"context\":\"feed\"}]");
    for (int i = 0; i < 2; i++)
        mutate(gw, "add_comment", mz_fmt("{\"post_id\":2,\"text\":\"outage %d\"}", i), alice, "[" POST2_TARGET "]");
    mz_sleep_ms(1000);
    mz_expect_status(mz_get(gw, "/readyz", NULL), 503);

    double restart_ms = mz_now_ms();
    mz_redis_restart(r);
    double restarted_ms = mz_now_ms();
    mz_wait_status(gw, "/readyz", 200, 8000, &waited);
    cr_log_info("restart: /readyz 200 after %.0f ms", waited);

    /* Redis came back empty: the revisions are exactly the replayed bumps. */
    expect_rev(r, "post 1 revision (3 update_post replayed)", mz_key_scoped_rev("post", "{\"post_id\":1}"), "3");
    expect_rev(r, "feed revision (3 update_post replayed)", mz_key_ctx_rev("feed"), "3");
    expect_rev(r, "post 2 revision (2 add_comment replayed)", mz_key_scoped_rev("post", "{\"post_id\":2}"), "2");

    double hits_ms = wait_hits(load, restarted_ms, 8000);
    mz_sleep_ms(300);
    size_t n = 0;
    mz_load_rec_t *recs = mz_load_stop(load, &n);
    char *summary = mz_load_summary(recs, n);
    cr_log_info("redis kill/restart: %s; HIT on every context %.0f ms after the restart", summary,
                hits_ms - restarted_ms);

    /* No request failed or got anything but 200: contexts, mutations alike. */
    size_t not_ok = 0;
    for (size_t i = 0; i < n; i++)
        not_ok += recs[i].status != 200;
    cr_assert(n >= 200 && not_ok == 0, "%zu of %zu requests under load were not 200 (%s):%s", not_ok, n, summary,
              first_bad(recs, n, is_200, KIND_NAMES, NKINDS, kill_ms));

    /* During the outage every context was computed and not cached. */
    size_t during = 0, not_bypass = 0, hits_before = 0;
    for (size_t i = 0; i < n; i++) {
        if (!is_ctx(&recs[i]))
            continue;
        if (recs[i].end_ms < kill_ms && strcmp(recs[i].cache, "HIT") == 0)
            hits_before++;
        if (recs[i].start_ms > killed_ms && recs[i].end_ms < restart_ms) {
            during++;
            not_bypass += !is_bypass(&recs[i]);
        }
    }
    cr_assert(hits_before >= 10, "only %zu HIT answers before the crash", hits_before);
    cr_assert(during >= 20, "only %zu context requests ran during the %.0f ms outage", during,
              restart_ms - killed_ms);
    size_t lo = 0; /* records are sorted by start: [lo, hi) started during the outage */
    while (lo < n && recs[lo].start_ms <= killed_ms)
        lo++;
    size_t hi = lo;
    while (hi < n && recs[hi].start_ms < restart_ms)
        hi++;
    cr_assert(not_bypass == 0, "%zu of %zu context answers during the outage were not BYPASS:%s", not_bypass, during,
              first_bad(recs + lo, hi - lo, is_bypass, KIND_NAMES, NKINDS, kill_ms));

    /*
     * The load's comments on post 3: those sent after the crash were all
     * recorded in Redis (queued and replayed, or applied after the
     * restart); those answered before it went to the old, lost Redis.
     */
    long long lower = 0, upper = 0;
    for (size_t i = 0; i < n; i++) {
        if (is_ctx(&recs[i]))
            continue;
        lower += recs[i].start_ms > killed_ms;
        upper += recs[i].end_ms > kill_ms;
    }
    long long rev3 = rget_int(r, mz_key_scoped_rev("post", "{\"post_id\":3}"));
    cr_assert(rev3 >= lower && rev3 <= upper,
              "post 3 revision after the restart is %lld; %lld comments were sent after the crash and %lld "
              "answered after it began, so it must lie in [%lld, %lld]",
              rev3, lower, upper, lower, upper);
    cr_log_info("post 3 revision %lld within [%lld, %lld]; crash %.0f ms into the load", rev3, lower, upper,
                kill_ms - origin);
    mz_gw_stop_ok(gw);
}

/* ------------------------------------------------------------------------
 * 2. Redis stalled: SIGSTOP / CLIENT PAUSE
 * ---------------------------------------------------------------------- */

enum stall_kind { STALL_SIGSTOP, STALL_CLIENT_PAUSE };

static void stall_under_load(enum stall_kind how)
{
    enum { TIMEOUT_MS = 200, STALL_MS = 2000, SLACK_MS = 300, MIN_FN_MS = 50 };
    const char *what = how == STALL_SIGSTOP ? "SIGSTOP" : "CLIENT PAUSE";
    mz_redis_t *r = mz_redis_start();
    mz_gw_t *gw = start_redis_gw(r, TIMEOUT_MS);
    char *alice = mz_token(gw, "alice", NULL);
    warm_contexts(gw);
    mz_load_t *load = start_redis_load(gw, alice);
    double load_ms = mz_now_ms();
    mz_sleep_ms(1200);

    /* Function time: the slowest answer of the healthy, warm system. */
    size_t nb = 0;
    mz_load_rec_t *base = mz_load_snapshot(load, &nb);
    double fn_ms = MIN_FN_MS;
    size_t nbase = 0;
    for (size_t i = 0; i < nb; i++) {
        if (base[i].start_ms < load_ms + 200)
            continue;
        nbase++;
        cr_assert(base[i].status == 200, "before the stall: %s", describe_rec(&base[i], KIND_NAMES, NKINDS, load_ms));
        if (latency(&base[i]) > fn_ms)
            fn_ms = latency(&base[i]);
    }
    cr_assert(nbase >= 50, "only %zu requests in the first second of load", nbase);
    double bound = TIMEOUT_MS + fn_ms + SLACK_MS;

    double stall_ms = mz_now_ms();
    double resume_ms;
    if (how == STALL_SIGSTOP) {
        mz_proc_pause(r->pid);
        mz_sleep_ms(STALL_MS);
        resume_ms = mz_now_ms();
        mz_proc_resume(r->pid);
    } else {
        const char *argv[] = {"CLIENT", "PAUSE", "2000", "ALL", NULL};
        mz_expect_json(mz_redis_cmd(r, argv), "\"OK\"");
        resume_ms = stall_ms + STALL_MS;
        mz_sleep_ms((int)(resume_ms - mz_now_ms()) + 1);
    }
    double waited = 0;
    mz_wait_status(gw, "/readyz", 200, 8000, &waited);
    double hits_ms = wait_hits(load, resume_ms, 8000);
    mz_sleep_ms(300);
    size_t n = 0;
    mz_load_rec_t *recs = mz_load_stop(load, &n);
    char *summary = mz_load_summary(recs, n);
    cr_log_info("redis %s for %d ms: %s; /readyz 200 %.0f ms and HIT on every context %.0f ms after it ended; "
                "latency bound %.0f ms (timeout %d + function %.0f + slack %d)",
                what, STALL_MS, summary, waited, hits_ms - resume_ms, bound, TIMEOUT_MS, fn_ms, SLACK_MS);

    size_t not_ok = 0, late = 0, during = 0, not_bypass = 0;
    double worst = 0;
    const mz_load_rec_t *worst_rec = NULL;
    for (size_t i = 0; i < n; i++) {
        not_ok += recs[i].status != 200;
        if (latency(&recs[i]) > worst) {
            worst = latency(&recs[i]);
            worst_rec = &recs[i];
        }
        late += latency(&recs[i]) >= bound;
        if (is_ctx(&recs[i]) && recs[i].start_ms > stall_ms + 50 && recs[i].end_ms < resume_ms) {
            during++;
            not_bypass += !is_bypass(&recs[i]);
        }
    }
    cr_assert(not_ok == 0, "redis %s: %zu of %zu requests were not 200 (%s):%s", what, not_ok, n, summary,
              first_bad(recs, n, is_200, KIND_NAMES, NKINDS, stall_ms));
    cr_assert(late == 0, "redis %s: %zu requests took %.0f ms or more (timeout %d ms + function %.0f ms + slack %d); "
              "worst %s\n%s",
              what, late, bound, TIMEOUT_MS, fn_ms, SLACK_MS,
              worst_rec != NULL ? describe_rec(worst_rec, KIND_NAMES, NKINDS, stall_ms) : "-", summary);
    cr_assert(during >= 20, "redis %s: only %zu context requests ran during the stall", what, during);
    cr_assert(not_bypass == 0, "redis %s: %zu of %zu context answers during the stall were not BYPASS (%s)", what,
              not_bypass, during, summary);
    cr_assert(mz_gw_log_count(gw, mz_fmt("no reply within %d ms", TIMEOUT_MS)) >= 1,
              "redis %s: no Redis command timed out (log line \"no reply within %d ms\"):\n%s", what, TIMEOUT_MS,
              mz_gw_log_tail(gw, 3000));

    /*
     * Redis kept its data: every acknowledged comment on post 3 bumped its
     * revision at least once; one whose INCR reached Redis but timed out
     * was also replayed, so at most once more.
     */
    long long acked = 0, stalled = 0;
    for (size_t i = 0; i < n; i++) {
        if (is_ctx(&recs[i]))
            continue;
        acked++;
        stalled += recs[i].end_ms > stall_ms - TIMEOUT_MS && recs[i].start_ms < resume_ms + 1000;
    }
    long long rev3 = rget_int(r, mz_key_scoped_rev("post", "{\"post_id\":3}"));
    cr_assert(rev3 >= acked && rev3 <= acked + stalled,
              "redis %s: post 3 revision is %lld after %lld acknowledged comments (%lld of them around the stall): "
              "an invalidation was %s",
              what, rev3, acked, stalled, rev3 < acked ? "lost" : "applied more than twice");
    mz_gw_stop_ok(gw);
}

Test(faults, redis_sigstop_bounded_by_timeout)
{
    stall_under_load(STALL_SIGSTOP);
}

Test(faults, redis_client_pause_bounded_by_timeout)
{
    stall_under_load(STALL_CLIENT_PAUSE);
}

/* ------------------------------------------------------------------------
 * 3. Functions past their deadline
 * ---------------------------------------------------------------------- */

Test(faults, slow_functions_answered_504_at_the_deadline)
{
    enum { DEADLINE = 200, N = 32, SLEEP = 2000, SLACK = 300 };
    /* sleep is the slow work here: its blog limit of 4 runs is lifted (max_concurrency 0). */
    mz_gw_t *gw = mz_gw_start(
        mz_json("{\"function_timeout_ms\": %d, \"workers\": 8, \"max_concurrency\": {\"sleep\": 0}}", DEADLINE));
    mz_req_t reqs[N];
    for (size_t i = 0; i < N; i++)
        reqs[i] = mz_call_req("sleep", mz_fmt("{\"ms\": %d}", SLEEP), NULL);
    double t0 = mz_now_ms();
    mz_result_t *res = mz_parallel(gw->port, N, reqs, 10000);
    double lo = 1e9, hi = 0;
    for (size_t i = 0; i < N; i++) {
        cr_assert(res[i].resp != NULL, "call %zu got no response: %s", i, res[i].err);
        cr_assert(res[i].resp->status == 504, "call %zu: expected 504, got\n%s", i, mz_describe(res[i].resp));
        mz_expect_error(res[i].resp, 504, "TIMEOUT");
        double ms = res[i].end_ms - res[i].start_ms;
        lo = ms < lo ? ms : lo;
        hi = ms > hi ? ms : hi;
    }
    cr_log_info("%d calls past a %d ms deadline: 504 after %.0f..%.0f ms", N, DEADLINE, lo, hi);
    cr_assert(lo >= DEADLINE - 10, "a 504 came after %.0f ms, before the %d ms deadline", lo, DEADLINE);
    cr_assert(hi < DEADLINE + SLACK, "a 504 came after %.0f ms, expected before %d ms (deadline + %d ms)", hi,
              DEADLINE + SLACK, SLACK);

    /* Workers are free again at once: the late handlers were cancelled. */
    for (int i = 0; i < 5; i++) {
        mz_resp_t *p = mz_call(gw, "ping", NULL, NULL);
        mz_expect_json(mz_expect_result(p), "\"pong\"");
        cr_assert(p->elapsed_ms < 150, "ping %d right after the timeouts took %.1f ms", i, p->elapsed_ms);
    }
    cr_assert_eq(mz_metric(gw, "mizan_function_timeouts_total{function=\"sleep\"}"), (double)N);

    /* After the late handlers' full sleep: nothing is still busy, all workers serve. */
    double left = SLEEP + 200 - (mz_now_ms() - t0);
    if (left > 0)
        mz_sleep_ms((int)left);
    double busy = mz_metric(gw, "mizan_workers_busy");
    cr_assert(busy == 0, "%.0f workers still run a handler %.0f ms after the calls began", busy, mz_now_ms() - t0);
    mz_req_t pings[8];
    for (size_t i = 0; i < 8; i++)
        pings[i] = mz_call_req("ping", NULL, NULL);
    mz_result_t *pr = mz_parallel(gw->port, 8, pings, 5000);
    for (size_t i = 0; i < 8; i++) {
        cr_assert(pr[i].resp != NULL, "ping %zu: %s", i, pr[i].err);
        mz_expect_json(mz_expect_result(pr[i].resp), "\"pong\"");
        cr_assert(pr[i].end_ms - pr[i].start_ms < 200, "parallel ping %zu took %.1f ms", i,
                  pr[i].end_ms - pr[i].start_ms);
    }
    mz_expect_json(mz_expect_result(mz_call(gw, "sleep", "{\"ms\": 50}", NULL)), "{\"slept_ms\": 50}");
    double stop_at = mz_now_ms();
    int st = mz_gw_stop(gw, 10000);
    cr_assert(st == 0, "exit status %d after SIGTERM (non-zero under ASan: a leak or error report)\n%s", st,
              mz_gw_log_tail(gw, 6000));
    cr_assert(mz_now_ms() - stop_at < 3000, "stopping took %.0f ms", mz_now_ms() - stop_at);
}

/* ------------------------------------------------------------------------
 * 4. Queue saturation
 * ---------------------------------------------------------------------- */

Test(faults, full_queue_answers_503_at_once)
{
    enum { WORKERS = 2, QUEUE = 4, N = 50, SLEEP = 300, FAST = 50 };
    /* The queue is the limit under test, not sleep's own limit of 4 runs (lifted). */
    mz_gw_t *gw = mz_gw_start(
        mz_json("{\"workers\": %d, \"queue_size\": %d, \"max_concurrency\": {\"sleep\": 0}}", WORKERS, QUEUE));
    mz_req_t reqs[N];
    for (size_t i = 0; i < N; i++)
        reqs[i] = mz_call_req("sleep", mz_fmt("{\"ms\": %d}", SLEEP), NULL);
    mz_result_t *res = mz_parallel(gw->port, N, reqs, 10000);
    size_t ok = 0, busy = 0;
    double first = 1e18, last = 0, busy_max = 0, ok_max = 0;
    for (size_t i = 0; i < N; i++) {
        cr_assert(res[i].resp != NULL, "request %zu got no response: %s", i, res[i].err);
        mz_resp_t *r = res[i].resp;
        double ms = res[i].end_ms - res[i].start_ms;
        first = res[i].start_ms < first ? res[i].start_ms : first;
        last = res[i].start_ms > last ? res[i].start_ms : last;
        if (r->status == 200) {
            mz_expect_json(mz_expect_result(r), mz_fmt("{\"slept_ms\": %d}", SLEEP));
            ok++;
            ok_max = ms > ok_max ? ms : ok_max;
            continue;
        }
        cr_assert(r->status == 503, "request %zu: expected 200 or 503, got\n%s", i, mz_describe(r));
        mz_expect_error(r, 503, "UNAVAILABLE");
        const char *ra = mz_header(r, "Retry-After");
        cr_assert(ra != NULL && ra[0] != '\0' && strspn(ra, "0123456789") == strlen(ra),
                  "503 without a delta-seconds Retry-After:\n%s", mz_describe(r));
        busy++;
        busy_max = ms > busy_max ? ms : busy_max;
    }
    cr_log_info("burst of %d: %zu ok (slowest %.0f ms), %zu busy (slowest %.1f ms), sent within %.1f ms", N, ok,
                ok_max, busy, busy_max, last - first);
    cr_assert(last - first < SLEEP - 50, "test set-up: the burst took %.0f ms to start, not before the first sleep "
              "ended", last - first);
    cr_assert(ok >= QUEUE && ok <= WORKERS + QUEUE,
              "%zu requests were accepted; %d workers + %d queue slots admit %d..%d of a burst", ok, WORKERS, QUEUE,
              QUEUE, WORKERS + QUEUE);
    cr_assert_eq(ok + busy, (size_t)N);
    cr_assert(busy_max < FAST, "a 503 took %.1f ms; a full queue must be answered at once (< %d ms)", busy_max, FAST);
    cr_assert(ok_max < (double)SLEEP * ((double)QUEUE / WORKERS + 1) + 300, "an accepted call took %.0f ms", ok_max);

    /*
     * After the burst, everything within capacity succeeds again. A burst
     * that lands at once on idle workers is admitted up to queue_size (the
     * workers may not have taken the first jobs off the queue yet), so
     * rounds of QUEUE simultaneous calls always fit.
     */
    for (int round = 0; round < 3; round++) {
        mz_req_t again[QUEUE];
        for (size_t i = 0; i < QUEUE; i++)
            again[i] = mz_call_req("sleep", "{\"ms\": 50}", NULL);
        mz_result_t *ar = mz_parallel(gw->port, QUEUE, again, 5000);
        for (size_t i = 0; i < QUEUE; i++) {
            cr_assert(ar[i].resp != NULL, "round %d, call %zu: %s", round, i, ar[i].err);
            mz_expect_json(mz_expect_result(ar[i].resp), "{\"slept_ms\": 50}");
        }
    }
    for (int i = 0; i < 10; i++)
        mz_expect_json(mz_expect_result(mz_call(gw, "ping", NULL, NULL)), "\"pong\"");
    mz_gw_stop_ok(gw);
}

/* ------------------------------------------------------------------------
 * 5. Clients that go away, slow clients, many clients, no descriptors
 * ---------------------------------------------------------------------- */

static const char *const QUICK_KINDS[] = {"ping", "add", "ctx feed"};

static mz_load_t *start_quick_load(const mz_gw_t *gw, size_t threads, int pause_ms, bool stop_when_closed)
{
    mz_req_t *reqs = mz_alloc(3 * sizeof(*reqs));
    reqs[0] = mz_call_req("ping", NULL, NULL);
    reqs[1] = mz_call_req("add", "{\"a\": 20, \"b\": 22}", NULL);
    reqs[2] = get_req(FEED);
    mz_load_opts_t o = {.port = gw->port, .threads = threads, .reqs = reqs, .nreqs = stop_when_closed ? 1 : 3,
                        .timeout_ms = 5000, .pause_ms = pause_ms, .stop_when_closed = stop_when_closed};
    return mz_load_start(&o);
}

/* Waits up to timeout_ms for gw's descriptor count to drop to at most want; returns the last count. */
static long wait_fds_at_most(const mz_gw_t *gw, long want, int timeout_ms)
{
    double deadline = mz_now_ms() + timeout_ms;
    long n;
    while ((n = mz_proc_fd_count(gw->pid)) > want && mz_now_ms() < deadline)
        mz_sleep_ms(50);
    return n;
}

Test(faults, clients_that_disconnect_mid_request)
{
    enum { HALF = 50, GONE = 50, SLEEP = 400, DRAIN = 8000 };
    mz_gw_t *gw = mz_gw_start(mz_json("{\"workers\": 64, \"drain_timeout_ms\": %d, \"max_concurrency\": {\"sleep\": 0}}", DRAIN));
    /* Warm every path the load uses, then count the gateway's descriptors at rest. */
    mz_expect_result(mz_call(gw, "ping", NULL, NULL));
    mz_expect_result(mz_call(gw, "add", "{\"a\": 1, \"b\": 2}", NULL));
    mz_expect_status(mz_get(gw, FEED, NULL), 200);
    mz_sleep_ms(200);
    long fds0 = mz_proc_fd_count(gw->pid);
    cr_assert(fds0 > 0, "cannot read /proc/%d/fd", (int)gw->pid);

    mz_load_t *load = start_quick_load(gw, 6, 2, false);
    mz_sleep_ms(300);
    char err[256];
    const char *half = "POST /api/mizan/call/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                       "Content-Length: 100\r\n\r\n{\"function\": \"sl";
    mz_req_t slow = mz_call_req("sleep", mz_fmt("{\"ms\": %d}", SLEEP), NULL);
    mz_conn_t *gone[GONE];
    for (size_t i = 0; i < HALF || i < GONE; i++) {
        if (i < HALF) {
            mz_conn_t *c = mz_connect(gw->port);
            cr_assert(mz_try_send_raw(c, half, strlen(half), err, sizeof(err)) == 0, "half body %zu: %s", i, err);
            mz_conn_close(c);
        }
        if (i < GONE) {
            gone[i] = mz_connect(gw->port);
            cr_assert(mz_try_send(gone[i], &slow, err, sizeof(err)) == 0, "slow call %zu: %s", i, err);
        }
    }
    mz_sleep_ms(100);
    for (size_t i = 0; i < GONE; i++)
        mz_conn_close(gone[i]);
    double closed_ms = mz_now_ms();

    /* The abandoned handlers finish; their answers go nowhere. */
    double deadline = closed_ms + SLEEP + 3000;
    double busy;
    while ((busy = mz_metric(gw, "mizan_workers_busy")) > 0 && mz_now_ms() < deadline)
        mz_sleep_ms(50);
    cr_assert(busy == 0, "%.0f workers still busy %.0f ms after the clients left", busy, mz_now_ms() - closed_ms);
    cr_assert_eq(mz_metric(gw, "mizan_function_runs_total{function=\"sleep\"}"), (double)GONE,
                 "every slow call was read in full, so each ran exactly once");
    mz_sleep_ms(300);
    size_t n = 0;
    mz_load_rec_t *recs = mz_load_stop(load, &n);
    char *summary = mz_load_summary(recs, n);
    cr_log_info("%d half bodies and %d abandoned slow calls beside: %s", HALF, GONE, summary);
    size_t not_ok = 0;
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        not_ok += recs[i].status != 200;
        worst = latency(&recs[i]) > worst ? latency(&recs[i]) : worst;
    }
    cr_assert(n >= 100 && not_ok == 0, "normal traffic beside the vanishing clients: %zu of %zu not 200 (%s):%s",
              not_ok, n, summary, first_bad(recs, n, is_200, QUICK_KINDS, 3, closed_ms));
    cr_assert(worst < 250, "normal traffic beside the vanishing clients: slowest %.1f ms (%s)", worst, summary);

    /* Every connection of a gone client was released. */
    long fds = wait_fds_at_most(gw, fds0, 3000);
    cr_assert(fds <= fds0, "the gateway holds %ld descriptors, %ld at rest before: connections leaked", fds, fds0);
    mz_expect_status(mz_get(gw, "/healthz", NULL), 200);
    mz_expect_json(mz_expect_result(mz_call(gw, "ping", NULL, NULL)), "\"pong\"");

    /* Nothing is still counted in flight: the stop does not wait for the drain budget. */
    double stop_at = mz_now_ms();
    int st = mz_gw_stop(gw, DRAIN + 5000);
    double took = mz_now_ms() - stop_at;
    cr_assert(st == 0, "exit status %d after SIGTERM\n%s", st, mz_gw_log_tail(gw, 6000));
    cr_assert(took < 3000, "stopping took %.0f ms (drain budget %d ms): an exchange of a gone client was still "
              "counted as in flight\n%s", took, DRAIN, mz_gw_log_tail(gw, 3000));
}

Test(faults, slowloris_clients_are_dropped)
{
    enum { N = 100, IDLE_S = 2, WRK_S = 4 };
    mz_gw_t *gw = mz_gw_start(mz_json("{\"idle_timeout_s\": %d}", IDLE_S));
    char *head = mz_fmt("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: %s", mz_repeat('a', 60));
    mz_trickle_t *slow = mz_trickle_start(gw->port, N, head, 1000);
    double t0 = mz_now_ms();

    /* Others are served normally meanwhile. */
    mz_wrk_t *w = mz_wrk_run(gw->port, "/api/mizan/call/", "{\"function\":\"ping\"}", 2, 8, WRK_S, 2);
    cr_log_info("wrk beside %d slowloris clients: %ld requests, non-2xx %ld, errors %ld/%ld/%ld/%ld, latency avg "
                "%.2f ms, p99 %.2f ms, max %.2f ms",
                N, w->requests, w->non2xx, w->err_connect, w->err_read, w->err_write, w->err_timeout,
                w->latency_avg_ms, w->latency_p99_ms, w->latency_max_ms);
    cr_assert(w->requests >= 200 && w->non2xx == 0 && w->err_connect + w->err_read + w->err_write + w->err_timeout == 0,
              "wrk beside slow clients:\n%s", w->out);
    cr_assert(w->latency_max_ms < 500, "wrk's slowest request took %.1f ms beside slow clients", w->latency_max_ms);

    /* Each slow client is dropped once it has spent idle_timeout_s on one request head. */
    double until = t0 + IDLE_S * 1000 + 3000;
    while (mz_trickle_open(slow) > 0 && mz_now_ms() < until)
        mz_sleep_ms(50);
    size_t sent = 0;
    double *closed = mz_trickle_stop(slow, &sent);
    size_t dropped = 0;
    double first = 1e18, last = 0;
    for (size_t i = 0; i < N; i++) {
        if (closed[i] < 0)
            continue;
        dropped++;
        first = closed[i] < first ? closed[i] : first;
        last = closed[i] > last ? closed[i] : last;
    }
    cr_log_info("slowloris: %zu of %d dropped (after %.0f..%.0f ms), %zu bytes sent each", dropped, N,
                dropped ? first : -1.0, dropped ? last : -1.0, sent);
    cr_assert(dropped == N,
              "only %zu of %d slow clients were dropped in %.0f ms; each sent one header byte a second (%zu bytes, "
              "request head never finished) and idle_timeout_s is %d\n--- gateway log tail ---\n%s",
              dropped, N, mz_now_ms() - t0, sent, IDLE_S, mz_gw_log_tail(gw, 1500));
    cr_assert(first >= IDLE_S * 1000 - 500 && last <= IDLE_S * 1000 + 1500,
              "slow clients dropped after %.0f..%.0f ms; expected about idle_timeout_s (%d s)", first, last, IDLE_S);
    mz_expect_json(mz_expect_result(mz_call(gw, "ping", NULL, NULL)), "\"pong\"");
    mz_gw_stop_ok(gw);
}

Test(faults, ten_thousand_connections)
{
    enum { N = 10000, SPARE = 512 };
    long have = mz_raise_nofile(N + SPARE);
    cr_assert(have >= N + SPARE,
              "this machine lets the test process open %ld descriptors (hard RLIMIT_NOFILE); %d client sockets need "
              "%d: raise the hard limit (ulimit -Hn, LimitNOFILE)",
              have, N, N + SPARE);
    mz_gw_t *gw = mz_gw_start(NULL);
    long gw_limit = mz_proc_nofile(gw->pid);
    cr_assert(gw_limit >= N + 64,
              "mizand's open file limit is %ld: it cannot hold %d connections on this machine (hard limit)", gw_limit,
              N);
    long fds0 = mz_proc_fd_count(gw->pid);

    double t0 = mz_now_ms();
    char err[256] = "";
    size_t est = 0;
    mz_many_t *many = mz_many_open(gw->port, N, 20000, &est, err, sizeof(err));
    double opened_ms = mz_now_ms() - t0;
    cr_assert(est == N, "only %zu of %d connections could be established in %.0f ms: %s", est, N, opened_ms, err);

    /* The gateway accepted every one of them. */
    double deadline = mz_now_ms() + 10000;
    long fds;
    while ((fds = mz_proc_fd_count(gw->pid)) < fds0 + N && mz_now_ms() < deadline)
        mz_sleep_ms(50);
    double accepted_ms = mz_now_ms() - t0;
    cr_assert(fds >= fds0 + N, "the gateway holds %ld descriptors (%ld at rest): not all %d connections accepted "
              "after %.0f ms\n%s", fds, fds0, N, accepted_ms, mz_gw_log_tail(gw, 3000));

    /* A separate client is served, and the gateway is healthy. */
    double worst = 0;
    for (int i = 0; i < 20; i++) {
        mz_resp_t *p = mz_call(gw, "add", mz_fmt("{\"a\": %d, \"b\": 1}", i), NULL);
        mz_expect_json(mz_expect_result(p), mz_fmt("%d", i + 1));
        worst = p->elapsed_ms > worst ? p->elapsed_ms : worst;
    }
    mz_expect_status(mz_get(gw, "/healthz", NULL), 200);
    cr_assert(worst < 500, "a call beside %d idle connections took %.1f ms", N, worst);
    cr_assert(mz_gw_alive(gw), "mizand died holding %d connections", N);
    size_t alive = mz_many_alive(many);
    cr_assert_eq(alive, (size_t)N, "the gateway closed %zu of the %d idle connections", N - alive, N);
    cr_log_info("%d connections: established in %.0f ms, all accepted after %.0f ms; calls beside them <= %.1f ms",
                N, opened_ms, accepted_ms, worst);

    mz_many_close(many);
    fds = wait_fds_at_most(gw, fds0 + 2, 10000);
    cr_assert(fds <= fds0 + 2, "after the clients closed, the gateway still holds %ld descriptors (%ld at rest)", fds,
              fds0);
    mz_expect_json(mz_expect_result(mz_call(gw, "ping", NULL, NULL)), "\"pong\"");
    mz_gw_stop_ok(gw);
}

Test(faults, out_of_file_descriptors)
{
    enum { LIMIT = 128, N = 300, CPU_WINDOW = 2000, CPU_MAX = 200 };
    mz_gw_opts_t opts = {.config = mz_json("{\"workers\": 4}")};
    mz_gw_t *gw = mz_gw_start_nofile(&opts, LIMIT);
    cr_assert_eq(mz_proc_nofile(gw->pid), LIMIT, "mizand runs with a descriptor limit of %ld, not %d",
                 mz_proc_nofile(gw->pid), LIMIT);
    mz_expect_json(mz_expect_result(mz_call(gw, "ping", NULL, NULL)), "\"pong\"");
    long fds0 = mz_proc_fd_count(gw->pid);
    cr_assert(fds0 > 0 && fds0 < LIMIT - 16, "the gateway already uses %ld of its %d descriptors at rest", fds0,
              LIMIT);

    char err[256] = "";
    size_t est = 0;
    mz_many_t *many = mz_many_open(gw->port, N, 10000, &est, err, sizeof(err));
    cr_assert(est == N, "only %zu of %d connections reached the listen backlog: %s", est, N, err);
    double deadline = mz_now_ms() + 3000;
    while (mz_gw_log_count(gw, "out of file descriptors") == 0 && mz_now_ms() < deadline)
        mz_sleep_ms(50);
    cr_assert(mz_gw_log_count(gw, "out of file descriptors") >= 1,
              "no log line saying \"out of file descriptors\" with %d connections and a limit of %d:\n%s", N, LIMIT,
              mz_gw_log_tail(gw, 3000));
    long fds = mz_proc_fd_count(gw->pid);
    cr_assert(fds <= LIMIT && fds >= LIMIT - 16, "the gateway holds %ld descriptors (limit %d)", fds, LIMIT);

    /* Paused, not spinning on the pending connections. */
    double cpu0 = mz_proc_cpu_ms(gw->pid);
    mz_sleep_ms(CPU_WINDOW);
    double cpu1 = mz_proc_cpu_ms(gw->pid);
    cr_assert(cpu0 >= 0 && cpu1 >= 0, "cannot read /proc/%d/stat", (int)gw->pid);
    cr_log_info("out of descriptors: %ld held, %.0f ms CPU in %d ms, %zu log lines", fds, cpu1 - cpu0, CPU_WINDOW,
                mz_gw_log_count(gw, "out of file descriptors"));
    cr_assert(cpu1 - cpu0 < CPU_MAX, "the gateway used %.0f ms of CPU in %d ms while out of descriptors (spinning)",
              cpu1 - cpu0, CPU_WINDOW);
    cr_assert(mz_gw_alive(gw), "mizand died out of descriptors:\n%s", mz_gw_log_tail(gw, 3000));

    /* Once the connections close, it serves again. */
    mz_many_close(many);
    double closed_ms = mz_now_ms();
    mz_resp_t *r = NULL;
    while (mz_now_ms() - closed_ms < 5000) {
        mz_conn_t *c = mz_try_connect(gw->port, 1000, err, sizeof(err));
        if (c != NULL) {
            c->timeout_ms = 1000;
            mz_req_t ping = mz_call_req("ping", NULL, NULL);
            if (mz_try_request(c, &ping, &r, err, sizeof(err)) == 0 && r->status == 200)
                break;
            mz_conn_close(c);
        }
        r = NULL;
        mz_sleep_ms(50);
    }
    cr_assert(r != NULL, "not serving 5 s after the connections closed (last error: %s)\n%s", err,
              mz_gw_log_tail(gw, 3000));
    cr_log_info("serving again %.0f ms after the connections closed", mz_now_ms() - closed_ms);
    for (int i = 0; i < 10; i++)
        mz_expect_json(mz_expect_result(mz_call(gw, "ping", NULL, NULL)), "\"pong\"");
    fds = wait_fds_at_most(gw, fds0 + 2, 3000);
    cr_assert(fds <= fds0 + 2, "the gateway still holds %ld descriptors (%ld at rest)", fds, fds0);
    mz_gw_stop_ok(gw);
}

/* ------------------------------------------------------------------------
 * 6. SIGTERM under load
 * ---------------------------------------------------------------------- */

static const char *const PING_KIND[] = {"ping"};

Test(faults, sigterm_under_load)
{
    /* GRACE: a quick call sent this long before the signal was surely read before it. */
    enum { SLOW = 40, SLEEP = 500, DRAIN = 5000, QUICK = 4, GRACE = 150 };
    mz_gw_t *gw = mz_gw_start(
        mz_json("{\"workers\": 48, \"queue_size\": 256, \"drain_timeout_ms\": %d, \"max_concurrency\": {\"sleep\": 0}}", DRAIN));
    mz_load_t *quick = start_quick_load(gw, QUICK, 2, true);
    double deadline = mz_now_ms() + 5000;
    while (mz_load_count(quick) < 40 && mz_now_ms() < deadline)
        mz_sleep_ms(10);
    mz_req_t reqs[SLOW];
    for (size_t i = 0; i < SLOW; i++)
        reqs[i] = mz_call_req("sleep", mz_fmt("{\"ms\": %d}", SLEEP), NULL);
    mz_batch_t *batch = mz_batch_start(gw->port, SLOW, reqs, 10000);
    cr_assert(mz_batch_wait_sent(batch, SLOW, 5000), "the %d slow calls were not all sent", SLOW);
    mz_sleep_ms(200);

    double sig_ms = mz_now_ms();
    mz_gw_signal(gw, SIGTERM);

    /* The listener closes: new connections are refused. */
    char err[256] = "";
    double refused_ms = -1;
    size_t accepted_meanwhile = 0;
    while (mz_now_ms() - sig_ms < 1000) {
        mz_conn_t *c = mz_try_connect(gw->port, 200, err, sizeof(err));
        if (c == NULL && strstr(err, "refused") != NULL) {
            refused_ms = mz_now_ms();
            break;
        }
        if (c != NULL) {
            accepted_meanwhile++;
            mz_conn_close(c);
        }
        mz_sleep_ms(5);
    }
    cr_assert(refused_ms > 0, "connections still accepted 1 s after SIGTERM (last: %s)", err[0] ? err : "accepted");
    for (int i = 0; i < 3; i++) {
        mz_conn_t *c = mz_try_connect(gw->port, 200, err, sizeof(err));
        cr_assert(c == NULL && strstr(err, "refused") != NULL, "a connection after the listener closed: %s",
                  c != NULL ? "accepted" : err);
    }

    /* Every slow call in flight at the signal is answered in full. */
    mz_result_t *res = mz_batch_join(batch);
    for (size_t i = 0; i < SLOW; i++) {
        cr_assert(res[i].resp != NULL, "in-flight call %zu lost at shutdown: %s\n%s", i, res[i].err,
                  mz_gw_log_tail(gw, 3000));
        mz_expect_json(mz_expect_result(res[i].resp), mz_fmt("{\"slept_ms\": %d}", SLEEP));
    }
    int st = mz_gw_wait(gw, DRAIN + 3000);
    double exit_ms = mz_now_ms();
    cr_assert(st == 0, "exit status after SIGTERM under load: %d (-1: still running)\n%s", st,
              mz_gw_log_tail(gw, 6000));
    cr_assert(exit_ms - sig_ms < DRAIN, "exit %.0f ms after SIGTERM; drain_timeout_ms is %d", exit_ms - sig_ms, DRAIN);

    /* The quick stream: complete answers only; 503 only after the signal, once per client. */
    deadline = mz_now_ms() + 6000;
    while (!mz_load_finished(quick) && mz_now_ms() < deadline)
        mz_sleep_ms(10);
    size_t n = 0;
    mz_load_rec_t *recs = mz_load_stop(quick, &n);
    char *summary = mz_load_summary(recs, n);
    size_t ok = 0, unavailable = 0, failed = 0, early_503 = 0, before_not_ok = 0;
    for (size_t i = 0; i < n; i++) {
        const mz_load_rec_t *x = &recs[i];
        if (x->status == 0) {
            failed++;
            continue;
        }
        if (x->status == 200)
            ok++;
        if (x->status == 503 && strcmp(x->code, "UNAVAILABLE") == 0 && x->retry_after) {
            unavailable++;
            early_503 += x->end_ms < sig_ms;
        }
        before_not_ok += x->start_ms < sig_ms - GRACE && x->status != 200;
    }
    cr_log_info("SIGTERM: refused new connections after %.0f ms (%zu accepted before), exit 0 after %.0f ms; "
                "quick stream %s",
                refused_ms - sig_ms, accepted_meanwhile, exit_ms - sig_ms, summary);
    cr_assert(failed == 0, "%zu quick requests got no complete answer:%s", failed,
              first_bad(recs, n, is_200, PING_KIND, 1, sig_ms));
    cr_assert(ok + unavailable == n, "quick requests answered other than 200 or 503 UNAVAILABLE with Retry-After "
              "(%s):%s", summary, first_bad(recs, n, is_200, PING_KIND, 1, sig_ms));
    cr_assert(early_503 == 0 && before_not_ok == 0,
              "%zu 503 answers came before SIGTERM and %zu requests sent over %d ms before it were not 200:%s",
              early_503, before_not_ok, GRACE, first_bad(recs, n, is_200, PING_KIND, 1, sig_ms));
    cr_assert(unavailable <= QUICK, "%zu 503 answers for %d clients that each stop at their first", unavailable,
              QUICK);
    cr_assert(ok >= 40, "only %zu quick calls succeeded", ok);
}
