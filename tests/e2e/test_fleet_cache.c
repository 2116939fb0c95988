/*
 * test_fleet_cache.c - end-to-end tests of stale-while-revalidate and of
 * the fleet-wide fill lock (docs/cache.md), with real gateways sharing a
 * real redis-server (and one state directory, like instances sharing a
 * database), using the fl_* contexts of the test module
 * tests/e2e/modules/fleet.c:
 *   - an expired bundle within stale_s is served STALE at once while exactly
 *     one recomputation runs across two instances (counted in /metrics);
 *   - a bundle made stale by a mutation is never served, not even within
 *     stale_s (write on A, read on B);
 *   - the same with the embedded cache on one instance;
 *   - 3 instances x 100 concurrent first requests run the function once
 *     across the fleet;
 *   - the same on a Redis Cluster, the lock on its context's slot;
 *   - with the lock holder killed mid-computation, the others answer once
 *     the lock lapses, within lock TTL + one computation (plus slack).
 * Measured figures are printed on stderr ("fleet:" lines).
 */
#include <criterion/criterion.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache_support.h"
#include "harness.h"
#include "rcluster.h"

TestSuite(fleet, .init = mz_setup, .fini = mz_teardown, .timeout = 300);

#define ITEM1 "/api/mizan/ctx/fl_item/?id=1"
#define SLOW1 "/api/mizan/ctx/fl_slow/?id=1"

/*
 * Starts a gateway in dir with the fleet test module (state in dir), on
 * Redis r when not NULL, plus extra config (JSON text merged on top; may
 * be NULL).
 */
static mz_gw_t *start_gw(const char *dir, const mz_redis_t *r, const char *instance, const char *module_cfg,
                         const char *extra)
{
    json_t *cfg = mz_json("{\"instance\":\"%s\",\"modules\":[{\"name\":\"mz_fleet\",\"config\":{\"dir\":\"%s\"%s%s}}]}",
                          instance, dir, module_cfg != NULL ? "," : "", module_cfg != NULL ? module_cfg : "");
    return mz_cache_gw_start(dir, cfg, r, extra);
}

/* data.<fn>.n of a fleet-module bundle. */
static long long bundle_n(const mz_resp_t *r, const char *fn)
{
    cr_assert(r->json != NULL, "no JSON body in\n%s", mz_describe(r));
    json_t *n = json_object_get(json_object_get(json_object_get(r->json, "data"), fn), "n");
    cr_assert(json_is_integer(n), "no data.%s.n in\n%s", fn, mz_describe(r));
    return json_integer_value(n);
}

static const char *cache_of(const mz_resp_t *r)
{
    const char *c = mz_header(r, "X-Mizan-Cache");
    return c != NULL ? c : "(none)";
}

static double runs(const mz_gw_t *gw, const char *fn)
{
    return mz_metric(gw, mz_fmt("mizan_function_runs_total{function=\"%s\"}", fn));
}

/* Requests until fn has run `want` times on gw (the background recomputation landed), up to timeout_ms. */
static void wait_runs(mz_gw_t *const *gws, size_t n, const char *fn, double want, int timeout_ms)
{
    double t0 = mz_now_ms(), got = 0;
    while (mz_now_ms() - t0 < timeout_ms) {
        got = 0;
        for (size_t i = 0; i < n; i++)
            got += runs(gws[i], fn);
        if (got >= want)
            return;
        mz_sleep_ms(20);
    }
    cr_assert_fail("%s ran %.0f times, expected %.0f", fn, got, want);
}

/* ------------------------------------------------------------------------
 * Stale-while-revalidate
 * ---------------------------------------------------------------------- */

/* Two instances: the expired bundle is served STALE on both, one recomputation in all. */
Test(fleet, stale_served_within_stale_s_and_recomputed_once)
{
    mz_redis_t *r = mz_redis_start();
    char *dir = mz_tmpdir();
    /* The recomputation takes 600 ms, so every request below arrives while it runs. */
    mz_gw_t *a = start_gw(dir, r, "a", "\"read_ms\":600", NULL);
    mz_gw_t *b = start_gw(dir, r, "b", "\"read_ms\":600", NULL);
    mz_gw_t *gws[] = {a, b};
    mz_resp_t *first = mz_ctx_get(a, ITEM1, NULL, "MISS");
    cr_assert_eq(bundle_n(first, "fl_read"), 0);
    cr_assert_str_eq(cache_of(mz_ctx_get(b, ITEM1, NULL, NULL)), "HIT");
    mz_sleep_ms(1300); /* past the 1 s TTL, well within stale_s (60 s) */

    enum { N = 20 };
    mz_req_t reqs[N];
    for (size_t i = 0; i < N; i++)
        reqs[i] = (mz_req_t){.method = "GET", .path = ITEM1};
    mz_batch_t *ba = mz_batch_start(a->port, N, reqs, 0);
    mz_batch_t *bb = mz_batch_start(b->port, N, reqs, 0);
    mz_result_t *ra = mz_batch_join(ba), *rb = mz_batch_join(bb);
    int stale = 0;
    for (size_t i = 0; i < 2 * N; i++) {
        const mz_result_t *res = i < N ? &ra[i] : &rb[i - N];
        cr_assert_not_null(res->resp, "request %zu failed: %s", i, res->err);
        mz_expect_status(res->resp, 200);
        const char *c = cache_of(res->resp);
        cr_assert(strcmp(c, "STALE") == 0 || strcmp(c, "HIT") == 0, "request %zu: X-Mizan-Cache %s", i, c);
        if (strcmp(c, "STALE") == 0) {
            stale++;
            cr_assert_str_eq(res->resp->body, first->body, "a STALE answer is the stored bundle, byte for byte");
        }
    }
    cr_assert_gt(stale, 0, "no STALE answer");
    /* One recomputation across both instances: 1 (first MISS) + 1. */
    wait_runs(gws, 2, "fl_read", 2, 10000);
    mz_sleep_ms(300);
    double total = runs(a, "fl_read") + runs(b, "fl_read");
    cr_assert_eq(total, 2, "fl_read ran %.0f times across the fleet, expected 2", total);
    double stale_a = mz_metric(a, "mizan_cache_requests_total{context=\"fl_item\",outcome=\"stale\"}");
    double stale_b = mz_metric(b, "mizan_cache_requests_total{context=\"fl_item\",outcome=\"stale\"}");
    cr_assert_eq(stale_a + stale_b, stale);
    /* The recomputed bundle is fresh again: a HIT. */
    cr_assert_str_eq(cache_of(mz_ctx_get(b, ITEM1, NULL, NULL)), "HIT");
    fprintf(stderr, "fleet: swr: %d of %d requests STALE, fl_read runs across 2 instances: %.0f\n", stale, 2 * N,
            total);
}

/* A mutation makes a bundle unservable, within stale_s or not: write on A, read on B. */
Test(fleet, never_stale_after_a_mutation)
{
    mz_redis_t *r = mz_redis_start();
    char *dir = mz_tmpdir();
    mz_gw_t *a = start_gw(dir, r, "a", NULL, NULL);
    mz_gw_t *b = start_gw(dir, r, "b", NULL, NULL);
    long long want = 0;
    cr_assert_eq(bundle_n(mz_ctx_get(b, ITEM1, NULL, "MISS"), "fl_read"), want);
    for (int i = 0; i < 4; i++) {
        /* Every other round, the bundle on B has expired (it would be STALE). */
        if (i % 2 == 0)
            mz_sleep_ms(1200);
        mz_expect_mutation(mz_call(a, "fl_bump", "{\"id\":1}", NULL));
        want++;
        mz_resp_t *got = mz_get(b, ITEM1, NULL);
        mz_expect_status(got, 200);
        cr_assert_str_neq(cache_of(got), "STALE", "round %d: a bundle older than the mutation was served", i);
        cr_assert_eq(bundle_n(got, "fl_read"), want, "round %d: read on B after the write on A", i);
    }
}

/* The embedded cache serves STALE the same way, with one recomputation. */
Test(fleet, stale_in_the_embedded_cache)
{
    char *dir = mz_tmpdir();
    mz_gw_t *gw = start_gw(dir, NULL, "solo", "\"read_ms\":400", NULL);
    mz_gw_t *gws[] = {gw};
    mz_resp_t *first = mz_ctx_get(gw, ITEM1, NULL, "MISS");
    mz_sleep_ms(1300);
    enum { N = 10 };
    mz_req_t reqs[N];
    for (size_t i = 0; i < N; i++)
        reqs[i] = (mz_req_t){.method = "GET", .path = ITEM1};
    mz_result_t *res = mz_parallel(gw->port, N, reqs, 0);
    int stale = 0;
    for (size_t i = 0; i < N; i++) {
        cr_assert_not_null(res[i].resp, "request %zu failed: %s", i, res[i].err);
        if (strcmp(cache_of(res[i].resp), "STALE") == 0) {
            stale++;
            cr_assert_str_eq(res[i].resp->body, first->body);
        } else {
            cr_assert_str_eq(cache_of(res[i].resp), "HIT");
        }
    }
    cr_assert_gt(stale, 0);
    wait_runs(gws, 1, "fl_read", 2, 10000);
    mz_sleep_ms(200);
    cr_assert_eq(runs(gw, "fl_read"), 2);
    /* After a mutation, never STALE. */
    mz_sleep_ms(1200);
    mz_expect_mutation(mz_call(gw, "fl_bump", "{\"id\":1}", NULL));
    mz_resp_t *after = mz_get(gw, ITEM1, NULL);
    cr_assert_str_eq(cache_of(after), "MISS");
    cr_assert_eq(bundle_n(after, "fl_read"), 1);
}

/* A context declared in the config file takes stale_s too. */
Test(fleet, config_declared_context_with_stale_s)
{
    char *dir = mz_tmpdir();
    mz_gw_t *gw = start_gw(dir, NULL, "solo", NULL,
                           "{\"contexts\":[{\"name\":\"cfg_item\",\"functions\":[\"fl_read\"],\"ttl\":1,"
                           "\"stale_s\":30,\"params_schema\":{\"type\":\"object\",\"additionalProperties\":false,"
                           "\"required\":[\"id\"],\"properties\":{\"id\":{\"type\":\"integer\"}}}}]}");
    const char *path = "/api/mizan/ctx/cfg_item/?id=1";
    mz_resp_t *first = mz_ctx_get(gw, path, NULL, "MISS");
    cr_assert_str_eq(cache_of(mz_get(gw, path, NULL)), "HIT");
    mz_sleep_ms(1300);
    mz_resp_t *stale = mz_ctx_get(gw, path, NULL, "STALE");
    cr_assert_str_eq(stale->body, first->body);
    mz_gw_t *gws[] = {gw};
    wait_runs(gws, 1, "fl_read", 2, 10000);
    cr_assert_eq(mz_metric(gw, "mizan_cache_requests_total{context=\"cfg_item\",outcome=\"stale\"}"), 1);
}

/* ------------------------------------------------------------------------
 * One computation per bundle across the fleet
 * ---------------------------------------------------------------------- */

/* Sends N concurrent first requests to each gateway; returns the 200s' bundles' computation count. */
static double storm(mz_gw_t *const *gws, size_t ngw, size_t n)
{
    mz_req_t *reqs = mz_alloc(n * sizeof(*reqs));
    for (size_t i = 0; i < n; i++)
        reqs[i] = (mz_req_t){.method = "GET", .path = SLOW1};
    mz_batch_t *batches[8];
    for (size_t g = 0; g < ngw; g++)
        batches[g] = mz_batch_start(gws[g]->port, n, reqs, 30000);
    for (size_t g = 0; g < ngw; g++) {
        mz_result_t *res = mz_batch_join(batches[g]);
        for (size_t i = 0; i < n; i++) {
            cr_assert_not_null(res[i].resp, "gateway %zu request %zu failed: %s", g, i, res[i].err);
            mz_expect_status(res[i].resp, 200);
            cr_assert_eq(bundle_n(res[i].resp, "fl_read_slow"), 0);
        }
    }
    double total = 0;
    for (size_t g = 0; g < ngw; g++)
        total += runs(gws[g], "fl_read_slow");
    return total;
}

Test(fleet, one_computation_per_bundle_across_three_instances)
{
    mz_redis_t *r = mz_redis_start();
    char *dir = mz_tmpdir();
    mz_gw_t *gws[3];
    for (int i = 0; i < 3; i++)
        gws[i] = start_gw(dir, r, mz_fmt("g%d", i), "\"slow_ms\":1500", NULL);
    double total = storm(gws, 3, 100);
    double won = 0, waited = 0, served = 0;
    for (int i = 0; i < 3; i++) {
        won += mz_metric(gws[i], "mizan_cache_fill_locks_total{outcome=\"won\"}");
        waited += mz_metric(gws[i], "mizan_cache_fill_locks_total{outcome=\"waited\"}");
        served += mz_metric(gws[i], "mizan_cache_fill_locks_total{outcome=\"served\"}");
    }
    fprintf(stderr, "fleet: 3 x 100 first requests: fl_read_slow runs %.0f; locks won %.0f, waited %.0f, served %.0f\n",
            total, won, waited, served);
    cr_assert_eq(total, 1, "fl_read_slow ran %.0f times across the fleet", total);
    cr_assert_eq(won, 1);
    cr_assert_eq(served, waited);
}

/* On a Redis Cluster: the lock lands on the slot of {fl_slow}, and the storm computes once. */
Test(fleet, one_computation_on_a_redis_cluster)
{
    mz_rcluster_t *cl = mz_rcluster_start(3, 0, 2000);
    char *dir = mz_tmpdir();
    mz_gw_t *gws[3];
    for (int i = 0; i < 3; i++) {
        json_t *cfg = mz_json("{\"instance\":\"g%d\",\"modules\":[{\"name\":\"mz_fleet\",\"config\":{\"dir\":\"%s\","
                              "\"slow_ms\":1500}}],\"cache\":{\"redis_url\":\"%s\"}}",
                              i, dir, cl->url);
        mz_gw_opts_t opts = {.config = cfg, .dir = dir};
        gws[i] = mz_gw_start_opts(&opts);
        mz_wait_status(gws[i], "/readyz", 200, 15000, NULL);
    }
    double total = storm(gws, 3, 50);
    int owner = mz_rcluster_owner(cl, mz_rcluster_keyslot(cl, "{fl_slow}"));
    cr_assert_geq(owner, 0);
    for (int i = 0; i < cl->n; i++) {
        long long evals = mz_rcluster_cmdstat(cl, i, "eval");
        if (i == owner)
            cr_assert_geq(evals, 1, "the lock's release went elsewhere than the {fl_slow} slot's master");
        else
            cr_assert_eq(evals, 0, "node %d (not the slot's master) got %lld EVAL", i, evals);
    }
    fprintf(stderr, "fleet: Redis Cluster, 3 x 50 first requests: fl_read_slow runs %.0f\n", total);
    cr_assert_eq(total, 1, "fl_read_slow ran %.0f times across the fleet", total);
}

/* With cache.fill_lock false, the same storm computes once per instance (the lock is what makes it one). */
Test(fleet, without_the_fill_lock_each_instance_computes)
{
    mz_redis_t *r = mz_redis_start();
    char *dir = mz_tmpdir();
    mz_gw_t *gws[3];
    for (int i = 0; i < 3; i++)
        gws[i] = start_gw(dir, r, mz_fmt("g%d", i), "\"slow_ms\":1500", "{\"cache\":{\"fill_lock\":false}}");
    double total = storm(gws, 3, 30);
    fprintf(stderr, "fleet: 3 x 30 first requests without the fill lock: fl_read_slow runs %.0f\n", total);
    cr_assert_eq(total, 3, "fl_read_slow ran %.0f times, expected once per instance", total);
}

/* The lock holder is killed mid-computation: the others take over once the lock lapses. */
Test(fleet, holder_killed_others_answer_after_the_lock_lapses)
{
    mz_redis_t *r = mz_redis_start();
    char *dir = mz_tmpdir();
    /* A 1 s computation under a 2.5 s deadline: the lock TTL is 3 s (deadline + 500 ms). */
    const char *mod = "\"slow_ms\":1000,\"slow_timeout_ms\":2500";
    mz_gw_t *a = start_gw(dir, r, "a", mod, NULL);
    mz_gw_t *b = start_gw(dir, r, "b", mod, NULL);
    mz_gw_t *c = start_gw(dir, r, "c", mod, NULL);
    mz_req_t one = {.method = "GET", .path = SLOW1};
    mz_batch_t *held = mz_batch_start(a->port, 1, &one, 30000);
    /* Wait until A holds the lock. */
    double t0 = mz_now_ms();
    for (;;) {
        const char *argv[] = {"KEYS", "mizan:lock:*", NULL};
        json_t *keys = mz_redis_cmd(r, argv);
        if (json_array_size(keys) == 1)
            break;
        cr_assert(mz_now_ms() - t0 < 10000, "A never took the fill lock");
        mz_sleep_ms(10);
    }
    double locked_at = mz_now_ms();
    enum { N = 10 };
    mz_req_t reqs[N];
    for (size_t i = 0; i < N; i++)
        reqs[i] = (mz_req_t){.method = "GET", .path = SLOW1};
    mz_batch_t *bb = mz_batch_start(b->port, N, reqs, 30000);
    mz_batch_t *bc = mz_batch_start(c->port, N, reqs, 30000);
    mz_sleep_ms(300);
    mz_gw_signal(a, SIGKILL);
    mz_gw_wait(a, 5000);
    mz_batch_join(held); /* A's own client: cut off */
    mz_result_t *rb = mz_batch_join(bb), *rc = mz_batch_join(bc);
    double latest = 0;
    for (size_t i = 0; i < 2 * N; i++) {
        const mz_result_t *res = i < N ? &rb[i] : &rc[i - N];
        cr_assert_not_null(res->resp, "request %zu failed: %s", i, res->err);
        mz_expect_status(res->resp, 200);
        cr_assert_eq(bundle_n(res->resp, "fl_read_slow"), 0);
        if (res->end_ms - locked_at > latest)
            latest = res->end_ms - locked_at;
    }
    double total = runs(b, "fl_read_slow") + runs(c, "fl_read_slow");
    double expired = mz_metric(b, "mizan_cache_fill_locks_total{outcome=\"expired\"}") +
                     mz_metric(c, "mizan_cache_fill_locks_total{outcome=\"expired\"}");
    fprintf(stderr, "fleet: holder killed: last answer %.0f ms after the lock was taken (lock TTL 3000 ms + one "
                    "1000 ms computation); runs on the survivors %.0f, expired-then-computed %.0f\n",
            latest, total, expired);
    cr_assert_eq(total, 1, "the survivors ran fl_read_slow %.0f times", total);
    cr_assert_eq(expired, 1);
    /* Lock TTL 3 s + one 1 s computation, with generous slack for a loaded machine. */
    cr_assert_lt(latest, 3000 + 1000 + 8000, "answers came %.0f ms after the lock was taken", latest);
    cr_assert_gt(latest, 2500, "answered before the dead holder's lock could lapse (%.0f ms)", latest);
}
