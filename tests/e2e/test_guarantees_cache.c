/*
 * test_guarantees_cache.c - end-to-end tests of the cache guarantees of
 * PROTOCOL.md revision 2, each one an attack or a failure that broke them
 * before:
 *
 *  - a mutation that may have run but failed (a native one that commits
 *    then passes its deadline or fails; an upstream one that times out or
 *    answers 5xx) still invalidates its targets before its error goes out,
 *    and lists them in details.invalidate; one refused by its upstream
 *    (404) invalidates nothing (section 5);
 *  - exact auto-scoping: a context with an optional param, and one with a
 *    param typed ["integer","string"], are invalidated whole; the targets
 *    and events carry canonical params (12.0 is 12) (section 5);
 *  - user-scoped bundles belong to one sub and one permission set
 *    (section 6);
 *  - stored values are authenticated: a forged value, a value copied from
 *    another key and a revision-1 value are never served; a revision key
 *    of the wrong type is repaired and the instance stays ready (section 6);
 *  - the blog's post bundles follow the author's post count (BLOG_EXAMPLE
 *    rev 2).
 *
 * The guarantee tests use tests/e2e/modules/guarantees.c, a test-only
 * module whose state (one counter in a file) is shared by gateways started
 * on the same directory, so a stale bundle shows as an old counter.
 */
#include <criterion/criterion.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache_support.h"
#include "harness.h"
#include "upstream_support.h"

TestSuite(guarantees_cache, .init = mz_setup, .fini = mz_teardown, .timeout = 300);

#define POST1 "/api/mizan/ctx/post/?post_id=1"
#define POST2 "/api/mizan/ctx/post/?post_id=2"
#define POST3 "/api/mizan/ctx/post/?post_id=3"
#define ME "/api/mizan/ctx/me/"
#define ITEM1 "/api/mizan/ctx/gt_item/?id=1"

/* ------------------------------------------------------------------------
 * Helpers
 * ---------------------------------------------------------------------- */

/*
 * Starts a gateway in dir with the blog and the guarantees test module
 * (both keeping their state in dir), on Redis r when not NULL, plus the
 * extra config (JSON text merged on top; may be NULL).
 */
static mz_gw_t *start_gw(const char *dir, const mz_redis_t *r, const char *instance, const char *extra)
{
    json_t *cfg = mz_json("{\"instance\":\"%s\",\"modules\":[{\"name\":\"blog\",\"config\":{\"db\":\"%s/blog.db\"}},"
                          "{\"name\":\"mz_guarantees\",\"config\":{\"dir\":\"%s\"}}]}",
                          instance, dir, dir);
    return mz_cache_gw_start(dir, cfg, r, extra);
}

/* data.gt_read.n of a guarantees-module bundle. */
static long long counter_of(const mz_resp_t *r)
{
    json_t *n = json_object_get(json_object_get(json_object_get(r->json, "data"), "gt_read"), "n");
    cr_assert(json_is_integer(n), "no data.gt_read.n in\n%s", mz_describe(r));
    return (long long)json_integer_value(n);
}

/* data.get_author.posts of a post bundle. */
static long long author_posts(const mz_resp_t *r)
{
    json_t *n = json_object_get(json_object_get(json_object_get(r->json, "data"), "get_author"), "posts");
    cr_assert(json_is_integer(n), "no data.get_author.posts in\n%s", mz_describe(r));
    return (long long)json_integer_value(n);
}

/* The X-Mizan-Cache of r (never NULL: asserted). */
static const char *cache_of(const mz_resp_t *r)
{
    const char *c = mz_header(r, "X-Mizan-Cache");
    cr_assert_not_null(c, "no X-Mizan-Cache\n%s", mz_describe(r));
    return c;
}

/* Asserts r is the error (status, code) whose details.invalidate is exactly want (JSON text). */
static void expect_failed_mutation(const mz_resp_t *r, int status, const char *code, const char *want)
{
    json_t *details = mz_expect_error(r, status, code);
    cr_assert(json_is_object(details), "details should list the invalidated targets\n%s", mz_describe(r));
    mz_expect_json(json_object_get(details, "invalidate"), want);
}

/* SET key value with the redis-cli command line, as anyone with access to Redis could. */
static void redis_cli_set(const mz_redis_t *r, const char *key, const char *value)
{
    char *cli = mz_find_exe("redis-cli");
    cr_assert_not_null(cli, "redis-cli is missing (package redis-tools)");
    const char *argv[] = {cli, "-p", mz_fmt("%d", r->port), "SET", key, value, NULL};
    mz_run_t *run = mz_run(argv, NULL, NULL, 10000);
    cr_assert_eq(run->status, 0, "redis-cli SET failed: %s %s", run->out, run->err);
    cr_assert(strstr(run->out, "OK") != NULL, "redis-cli SET: %s", run->out);
}

/* GET key through the harness's Redis client (string, or NULL when missing). */
static const char *redis_get(const mz_redis_t *r, const char *key)
{
    const char *argv[] = {"GET", key, NULL};
    json_t *v = mz_redis_cmd(r, argv);
    cr_assert(json_is_string(v) || json_is_null(v), "GET %s: %s", key, mz_dump(v));
    return json_string_value(v);
}

/* ------------------------------------------------------------------------
 * Item: a mutation that may have run invalidates (section 5 rev 2)
 * ---------------------------------------------------------------------- */

/*
 * A native mutation commits, then passes its 300 ms deadline: 504, and on
 * two instances sharing Redis and the data the next reads are not the
 * pre-write bundle.
 */
Test(guarantees_cache, native_mutation_that_times_out_after_committing_invalidates_everywhere)
{
    mz_redis_t *r = mz_redis_start();
    char *dir = mz_tmpdir();
    mz_gw_t *a = start_gw(dir, r, "A", NULL);
    mz_gw_t *b = start_gw(dir, r, "B", NULL);
    mz_sse_t *events = mz_sse_open(b, "contexts=gt_item", NULL);

    mz_resp_t *first = mz_ctx_get(a, ITEM1, NULL, "MISS");
    long long before = counter_of(first);
    mz_ctx_get(a, ITEM1, NULL, "HIT");
    mz_ctx_get(b, ITEM1, NULL, "HIT");

    mz_resp_t *resp = mz_call(a, "gt_bump_slow", "{\"id\":1,\"ms\":3000}", NULL);

    /* The handler committed before its deadline: both instances show it. */
    mz_resp_t *on_b = mz_ctx_get(b, ITEM1, NULL, NULL);
    mz_resp_t *on_a = mz_ctx_get(a, ITEM1, NULL, NULL);
    cr_log_info("after a timed-out mutation: B %s n=%lld, A %s n=%lld (before n=%lld)", cache_of(on_b),
                counter_of(on_b), cache_of(on_a), counter_of(on_a), before);
    cr_assert_str_eq(cache_of(on_b), "MISS", "B served the pre-write bundle\n%s", mz_describe(on_b));
    cr_assert_eq(counter_of(on_b), before + 1);
    cr_assert_eq(counter_of(on_a), before + 1, "A served the pre-write bundle\n%s", mz_describe(on_a));
    expect_failed_mutation(resp, 504, "TIMEOUT", "[{\"context\":\"gt_item\",\"params\":{\"id\":1}}]");
    mz_sse_expect(events, "invalidate", "{\"context\":\"gt_item\",\"params\":{\"id\":1}}", 5000);
    mz_gw_stop_ok(a);
    mz_gw_stop_ok(b);
}

/* A native mutation commits and then fails: 500 with request_id and invalidate. */
Test(guarantees_cache, native_mutation_that_fails_after_committing_invalidates)
{
    mz_redis_t *r = mz_redis_start();
    char *dir = mz_tmpdir();
    mz_gw_t *a = start_gw(dir, r, "A", NULL);
    mz_gw_t *b = start_gw(dir, r, "B", NULL);
    long long before = counter_of(mz_ctx_get(a, ITEM1, NULL, "MISS"));
    mz_ctx_get(b, ITEM1, NULL, "HIT");

    mz_resp_t *resp = mz_call(a, "gt_bump_fail", "{\"id\":1}", NULL);
    mz_resp_t *first_b = mz_ctx_get(b, ITEM1, NULL, NULL);
    cr_log_info("after a mutation that failed after committing: B %s n=%lld (before n=%lld)", cache_of(first_b),
                counter_of(first_b), before);
    cr_assert_eq(counter_of(first_b), before + 1, "B served the pre-write bundle");
    json_t *details = mz_expect_error(resp, 500, "INTERNAL_ERROR");
    cr_assert(json_is_string(json_object_get(details, "request_id")), "%s", mz_describe(resp));
    mz_expect_json(json_object_get(details, "invalidate"), "[{\"context\":\"gt_item\",\"params\":{\"id\":1}}]");
    /* The handler's reason stays in the log. */
    cr_assert_null(strstr(resp->body, "committing"), "%s", resp->body);

    cr_assert_str_eq(cache_of(first_b), "MISS");
    cr_assert_eq(counter_of(mz_ctx_get(a, ITEM1, NULL, "HIT")), before + 1);
    mz_gw_stop_ok(a);
    mz_gw_stop_ok(b);
}

/* The embedded cache (no Redis) follows the same rule. */
Test(guarantees_cache, embedded_cache_timed_out_mutation_invalidates)
{
    char *dir = mz_tmpdir();
    mz_gw_t *gw = start_gw(dir, NULL, "solo", NULL);
    long long before = counter_of(mz_ctx_get(gw, ITEM1, NULL, "MISS"));
    mz_ctx_get(gw, ITEM1, NULL, "HIT");
    mz_resp_t *resp = mz_call(gw, "gt_bump_slow", "{\"id\":1,\"ms\":3000}", NULL);
    mz_resp_t *after = mz_ctx_get(gw, ITEM1, NULL, NULL);
    cr_log_info("embedded, after a timed-out mutation: %s n=%lld (before n=%lld)", cache_of(after),
                counter_of(after), before);
    cr_assert_str_eq(cache_of(after), "MISS");
    cr_assert_eq(counter_of(after), before + 1);
    expect_failed_mutation(resp, 504, "TIMEOUT", "[{\"context\":\"gt_item\",\"params\":{\"id\":1}}]");
    mz_gw_stop_ok(gw);
}

/*
 * The drain budget runs out while a mutation's handler is running (after it
 * committed): the 503 it gets lists the targets, invalidated first.
 */
Test(guarantees_cache, mutation_cut_off_by_shutdown_invalidates)
{
    mz_redis_t *r = mz_redis_start();
    char *dir = mz_tmpdir();
    /* A's slow mutation has a long deadline: only the shutdown cuts it off. */
    mz_gw_t *a = start_gw(dir, r, "A",
                          mz_fmt("{\"drain_timeout_ms\":200,\"modules\":[{\"name\":\"blog\",\"config\":{\"db\":"
                                 "\"%s/blog.db\"}},{\"name\":\"mz_guarantees\",\"config\":{\"dir\":\"%s\","
                                 "\"slow_timeout_ms\":20000}}]}",
                                 dir, dir));
    mz_gw_t *b = start_gw(dir, r, "B", NULL);
    long long before = counter_of(mz_ctx_get(b, ITEM1, NULL, "MISS"));
    mz_ctx_get(a, ITEM1, NULL, "HIT");

    mz_req_t req = mz_call_req("gt_bump_slow", "{\"id\":1,\"ms\":8000}", NULL);
    mz_batch_t *batch = mz_batch_start(a->port, 1, &req, 20000);
    cr_assert(mz_batch_wait_sent(batch, 1, 10000));
    /* Wait until the handler has committed (the counter file moved). */
    double until = mz_now_ms() + 10000;
    char *path = mz_fmt("%s/gt-counter", dir);
    while (mz_now_ms() < until) {
        char *text = mz_read_file(path);
        if (text != NULL && strtoll(text, NULL, 10) == before + 1)
            break;
        mz_sleep_ms(10);
    }
    mz_gw_signal(a, SIGTERM);
    mz_result_t *res = mz_batch_join(batch);
    cr_assert_not_null(res[0].resp, "no answer: %s", res[0].err);
    mz_resp_t *on_b = mz_ctx_get(b, ITEM1, NULL, NULL);
    cr_log_info("after a mutation cut off by shutdown: A answered %d, B %s n=%lld (before n=%lld)",
                res[0].resp->status, cache_of(on_b), counter_of(on_b), before);
    cr_assert_eq(counter_of(on_b), before + 1, "B served the pre-write bundle");
    cr_assert_str_eq(cache_of(on_b), "MISS");
    expect_failed_mutation(res[0].resp, 503, "UNAVAILABLE", "[{\"context\":\"gt_item\",\"params\":{\"id\":1}}]");
    cr_assert_eq(mz_gw_wait(a, 15000), 0, "A did not stop cleanly:\n%s", mz_gw_log_tail(a, 4000));
    mz_gw_stop_ok(b);
}

/* Upstream mutations of the config: a timeout and a 503 invalidate; a 404 does not. */
Test(guarantees_cache, upstream_mutation_that_may_have_run_invalidates)
{
    mz_upstream_t *u = mz_upstream_start();
    mz_redis_t *r = mz_redis_start();
    char *dir = mz_tmpdir();
    const char *fn_schema = "{\"type\":\"object\",\"required\":[\"post_id\"],\"properties\":"
                            "{\"post_id\":{\"type\":\"integer\"},\"ms\":{\"type\":\"integer\"}}}";
    char *extra = mz_fmt(
        "{\"upstreams\":{\"api\":{\"url\":\"%s\",\"timeout_ms\":2000,\"breaker\":{\"failures\":0}}},"
        "\"functions\":["
        "{\"name\":\"up_slow\",\"kind\":\"mutation\",\"input_schema\":%s,\"invalidates\":[\"post\"],\"timeout_ms\":300,"
        " \"upstream\":{\"service\":\"api\",\"method\":\"POST\",\"path\":\"/_test/slow\",\"query\":[\"ms\"],"
        " \"body\":[\"post_id\"]}},"
        "{\"name\":\"up_503\",\"kind\":\"mutation\",\"input_schema\":%s,\"invalidates\":[\"post\"],"
        " \"upstream\":{\"service\":\"api\",\"method\":\"POST\",\"path\":\"/_test/status/503\"}},"
        "{\"name\":\"up_404\",\"kind\":\"mutation\",\"input_schema\":%s,\"invalidates\":[\"post\"],"
        " \"upstream\":{\"service\":\"api\",\"method\":\"POST\",\"path\":\"/_test/status/404\"}}]}",
        u->url, fn_schema, fn_schema, fn_schema);
    mz_gw_t *a = start_gw(dir, r, "A", extra);
    mz_gw_t *b = start_gw(dir, r, "B", extra);
    const char *want = "[{\"context\":\"post\",\"params\":{\"post_id\":1}}]";

    /* Refused by the service (404): nothing invalidated, still a HIT. */
    mz_ctx_get(a, POST1, NULL, "MISS");
    mz_ctx_get(b, POST1, NULL, "HIT");
    mz_resp_t *resp = mz_call(a, "up_404", "{\"post_id\":1}", NULL);
    mz_expect_error(resp, 404, "NOT_FOUND");
    mz_ctx_get(b, POST1, NULL, "HIT");
    mz_ctx_get(a, POST1, NULL, "HIT");

    /* The request went out and the answer did not come in time. */
    resp = mz_call(a, "up_slow", "{\"post_id\":1,\"ms\":2500}", NULL);
    mz_resp_t *on_b = mz_ctx_get(b, POST1, NULL, NULL);
    cr_log_info("after an upstream timeout: B %s", cache_of(on_b));
    cr_assert_str_eq(cache_of(on_b), "MISS", "B served the pre-write bundle");
    expect_failed_mutation(resp, 504, "TIMEOUT", want);
    mz_ctx_get(a, POST1, NULL, "HIT");

    /* The service answered 503 after receiving the request. */
    resp = mz_call(b, "up_503", "{\"post_id\":1}", NULL);
    mz_resp_t *on_a = mz_ctx_get(a, POST1, NULL, NULL);
    cr_log_info("after an upstream 503: A %s", cache_of(on_a));
    cr_assert_str_eq(cache_of(on_a), "MISS", "A served the pre-write bundle");
    expect_failed_mutation(resp, 503, "UNAVAILABLE", want);
    cr_assert_not_null(mz_header(resp, "Retry-After"), "%s", mz_describe(resp));
    mz_gw_stop_ok(a);
    mz_gw_stop_ok(b);
}

/* A mutation refused before it ran (401, 422) lists nothing and bumps nothing. */
Test(guarantees_cache, refused_mutation_invalidates_nothing)
{
    mz_redis_t *r = mz_redis_start();
    char *dir = mz_tmpdir();
    mz_gw_t *gw = start_gw(dir, r, "A", NULL);
    mz_ctx_get(gw, ITEM1, NULL, "MISS");
    mz_expect_error(mz_call(gw, "gt_bump_slow", "{\"id\":\"x\",\"ms\":1}", NULL), 422, "VALIDATION_FAILED");
    mz_expect_error(mz_call(gw, "update_post", "{\"post_id\":1,\"title\":\"t\"}", NULL), 401, "UNAUTHORIZED");
    mz_ctx_get(gw, ITEM1, NULL, "HIT");
    cr_assert_null(redis_get(r, mz_key_scoped_rev("gt_item", "{\"id\":1}")));
    mz_gw_stop_ok(gw);
}

/* ------------------------------------------------------------------------
 * Item: exact auto-scoping (section 5 rev 2)
 * ---------------------------------------------------------------------- */

/* (a) An optional param: the bundle of ?id=1 is keyed {"id":1}, the mutation knows {"id":1,"lang":"en"}. */
Test(guarantees_cache, optional_param_invalidates_the_whole_context)
{
    char *dir = mz_tmpdir();
    mz_gw_t *gw = start_gw(dir, NULL, "solo", NULL);
    const char *path = "/api/mizan/ctx/gt_opt/?id=1";
    const char *with_lang = "/api/mizan/ctx/gt_opt/?id=1&lang=en";
    long long before = counter_of(mz_ctx_get(gw, path, NULL, "MISS"));
    mz_ctx_get(gw, path, NULL, "HIT");
    mz_ctx_get(gw, with_lang, NULL, "MISS");
    mz_sse_t *events = mz_sse_open(gw, "contexts=gt_opt", NULL);
    mz_resp_t *resp = mz_call(gw, "gt_bump", "{\"id\":1,\"lang\":\"en\"}", NULL);
    mz_resp_t *after = mz_ctx_get(gw, path, NULL, NULL);
    cr_log_info("?id=1 after a mutation with {id:1, lang:en}: %s n=%lld (before n=%lld)", cache_of(after),
                counter_of(after), before);
    cr_assert_str_eq(cache_of(after), "MISS");
    cr_assert_eq(counter_of(after), before + 1);
    mz_expect_mutation(resp);
    mz_expect_json(json_object_get(resp->json, "invalidate"),
                   "[{\"context\":\"gt_item\",\"params\":{\"id\":1}},{\"context\":\"gt_opt\"},"
                   "{\"context\":\"gt_multi\"}]");
    mz_sse_expect(events, "invalidate", "{\"context\":\"gt_opt\"}", 5000);
    cr_assert_eq(counter_of(mz_ctx_get(gw, with_lang, NULL, "MISS")), before + 1);
    mz_gw_stop_ok(gw);
}

/* (b) A param typed ["integer","string"]: ?key=1 is the integer 1, the mutation says "1". */
Test(guarantees_cache, value_read_two_ways_invalidates_the_whole_context)
{
    mz_redis_t *r = mz_redis_start();
    char *dir = mz_tmpdir();
    mz_gw_t *a = start_gw(dir, r, "A", NULL);
    mz_gw_t *b = start_gw(dir, r, "B", NULL);
    const char *path = "/api/mizan/ctx/gt_multi/?key=1";
    mz_resp_t *first = mz_ctx_get(a, path, NULL, "MISS");
    mz_expect_json(json_object_get(first->json, "params"), "{\"key\":1}");
    long long before = counter_of(first);
    mz_ctx_get(b, path, NULL, "HIT");
    mz_resp_t *resp = mz_call(a, "gt_bump", "{\"key\":\"1\"}", NULL);
    mz_resp_t *on_b = mz_ctx_get(b, path, NULL, NULL);
    cr_log_info("?key=1 on B after a mutation with {key:\"1\"} on A: %s n=%lld (before n=%lld)", cache_of(on_b),
                counter_of(on_b), before);
    cr_assert_str_eq(cache_of(on_b), "MISS");
    cr_assert_eq(counter_of(on_b), before + 1);
    mz_expect_mutation(resp);
    mz_expect_json(json_object_get(resp->json, "invalidate"),
                   "[{\"context\":\"gt_item\"},{\"context\":\"gt_opt\"},{\"context\":\"gt_multi\"}]");
    /* A key with one reading is scoped: ?key=abc and the mutation's "abc". */
    const char *abc = "/api/mizan/ctx/gt_multi/?key=abc";
    mz_ctx_get(a, abc, NULL, "MISS");
    mz_ctx_get(a, path, NULL, "HIT");
    mz_mutate(a, "gt_bump", "{\"key\":\"abc\"}", NULL,
              "[{\"context\":\"gt_item\"},{\"context\":\"gt_opt\"},"
              "{\"context\":\"gt_multi\",\"params\":{\"key\":\"abc\"}}]");
    cr_assert_eq(counter_of(mz_ctx_get(b, abc, NULL, "MISS")), before + 2);
    mz_ctx_get(b, path, NULL, "HIT");
    mz_gw_stop_ok(a);
    mz_gw_stop_ok(b);
}

/* The invalidate list, the Redis event and the SSE frame carry canonical params: 12.0 is 12. */
Test(guarantees_cache, targets_and_events_carry_canonical_params)
{
    mz_redis_t *r = mz_redis_start();
    char *dir = mz_tmpdir();
    mz_gw_t *gw = start_gw(dir, r, "A", NULL);
    mz_redis_sub_t *sub = mz_redis_subscribe(r, "mizan:events");
    mz_sse_t *events = mz_sse_open(gw, "contexts=gt_item", NULL);
    const char *path = "/api/mizan/ctx/gt_item/?id=12";
    long long before = counter_of(mz_ctx_get(gw, path, NULL, "MISS"));
    mz_resp_t *resp = mz_call(gw, "gt_bump", "{\"id\":12.0}", NULL);
    mz_expect_mutation(resp);
    cr_assert_not_null(strstr(resp->body, "\"invalidate\":[{\"context\":\"gt_item\",\"params\":{\"id\":12}},"),
                       "the list must carry the canonical 12:\n%s", resp->body);
    char *msg = mz_redis_sub_next(sub, 5000);
    cr_assert_not_null(msg, "no event on mizan:events");
    cr_assert_not_null(strstr(msg, "\"context\":\"gt_item\",\"params\":{\"id\":12},"), "event: %s", msg);
    mz_sse_frame_t *f = mz_sse_expect(events, "invalidate", "{\"context\":\"gt_item\",\"params\":{\"id\":12}}", 5000);
    cr_assert_str_eq(f->data, "{\"context\":\"gt_item\",\"params\":{\"id\":12}}");
    cr_assert_eq(counter_of(mz_ctx_get(gw, path, NULL, "MISS")), before + 1);
    mz_gw_stop_ok(gw);
}

/* ------------------------------------------------------------------------
 * Item: user scope keyed by sub and permission set (section 6 rev 2)
 * ---------------------------------------------------------------------- */

Test(guarantees_cache, same_sub_with_fewer_claims_gets_its_own_user_bundle)
{
    mz_redis_t *r = mz_redis_start();
    char *dir = mz_tmpdir();
    mz_gw_t *gw = start_gw(dir, r, "A", NULL);
    char *full = mz_token(gw, "alice", "--superuser", "--staff", "--perm", "blog.view_drafts", NULL);
    char *down = mz_token(gw, "alice", NULL);
    mz_resp_t *su = mz_ctx_get(gw, ME, full, "MISS");
    mz_expect_json(json_object_get(json_object_get(su->json, "data"), "whoami"),
                   "{\"sub\":\"alice\",\"staff\":true,\"superuser\":true,\"perms\":[\"blog.view_drafts\"]}");
    mz_ctx_get(gw, ME, full, "HIT");
    mz_resp_t *plain = mz_ctx_get(gw, ME, down, NULL);
    cr_log_info("down-scoped token after the superuser's bundle: %s", cache_of(plain));
    cr_assert_str_eq(cache_of(plain), "MISS", "the down-scoped token was served the superuser's bundle\n%s",
                     mz_describe(plain));
    mz_expect_json(json_object_get(json_object_get(plain->json, "data"), "whoami"),
                   "{\"sub\":\"alice\",\"staff\":false,\"superuser\":false,\"perms\":[]}");
    mz_ctx_get(gw, ME, down, "HIT");
    mz_ctx_get(gw, ME, full, "HIT");
    /* Stored under the rev 2 keys, one per permission set. */
    const char *view[] = {"blog.view_drafts", NULL};
    cr_assert_not_null(redis_get(r, mz_key_bundle("me", "{}", mz_key_user_scope("alice", true, true, view))));
    cr_assert_not_null(redis_get(r, mz_key_bundle("me", "{}", mz_key_user_scope("alice", false, false, NULL))));
    mz_gw_stop_ok(gw);
}

/* ------------------------------------------------------------------------
 * Item: authenticated values, repaired revisions (section 6 rev 2)
 * ---------------------------------------------------------------------- */

#define FORGED_BUNDLE                                                                                         \
    "{\"context\":\"post\",\"params\":{\"post_id\":1},\"data\":{\"get_post\":{\"id\":1,\"title\":\"FORGED\","  \
    "\"body\":\"x\",\"author\":\"mallory\",\"published\":true},\"list_comments\":[],"                         \
    "\"get_author\":{\"name\":\"mallory\",\"posts\":1}},\"errors\":{}}"

Test(guarantees_cache, forged_values_are_never_served)
{
    mz_redis_t *r = mz_redis_start();
    char *dir = mz_tmpdir();
    mz_gw_t *gw = start_gw(dir, r, "A", NULL);
    char *key = mz_key_bundle("post", "{\"post_id\":1}", "public");
    mz_resp_t *good = mz_ctx_get(gw, POST1, NULL, "MISS");
    mz_ctx_get(gw, POST1, NULL, "HIT");
    const char *genuine = redis_get(r, key);
    cr_assert_not_null(genuine);

    const char *forgeries[] = {
        /* what revision 1 served */
        "{\"v\":1,\"rev\":[0,0],\"bundle\":" FORGED_BUNDLE "}",
        /* the rev 2 shape without the secret */
        "0000000000000000000000000000000000000000000000000000000000000000\n{\"v\":2,\"rev\":[0,0],\"bundle\":"
        FORGED_BUNDLE "}",
        /* a genuine mac over other bytes */
        mz_fmt("%.64s\n{\"v\":2,\"rev\":[0,0],\"bundle\":" FORGED_BUNDLE "}", genuine),
    };
    for (size_t i = 0; i < sizeof(forgeries) / sizeof(forgeries[0]); i++) {
        redis_cli_set(r, key, forgeries[i]);
        mz_resp_t *got = mz_ctx_get(gw, POST1, NULL, NULL);
        cr_log_info("forgery %zu: %s", i, cache_of(got));
        cr_assert_str_neq(cache_of(got), "HIT", "forgery %zu was served\n%s", i, mz_describe(got));
        cr_assert_null(strstr(got->body, "FORGED"), "forgery %zu reached the client", i);
        cr_assert_str_eq(got->body, good->body);
        /* Recomputed and stored over the forgery. */
        cr_assert_str_eq(mz_ctx_get(gw, POST1, NULL, "HIT")->body, good->body);
    }
    /* What the gateway stores is the authenticated rev 2 value. */
    cr_assert_str_eq(redis_get(r, key), mz_stored_value(key, 0, 0, good->body));
    double rejected = mz_metric(gw, "mizan_cache_rejected_total");
    cr_assert_eq(rejected, 3.0, "rejected values counted: %g", rejected);
    cr_assert_not_null(strstr(mz_gw_log_tail(gw, 1 << 20), "stored value for context post refused"),
                       "the refusal is logged");
    mz_gw_stop_ok(gw);
}

Test(guarantees_cache, a_value_copied_to_another_key_is_not_served)
{
    mz_redis_t *r = mz_redis_start();
    char *dir = mz_tmpdir();
    mz_gw_t *gw = start_gw(dir, r, "A", NULL);
    char *k1 = mz_key_bundle("post", "{\"post_id\":1}", "public");
    char *k2 = mz_key_bundle("post", "{\"post_id\":2}", "public");
    mz_resp_t *p1 = mz_ctx_get(gw, POST1, NULL, "MISS");
    mz_resp_t *p2 = mz_ctx_get(gw, POST2, NULL, "MISS");
    /* Same revisions (0, 0): on revision 1 this was a HIT of post 2 under post 1. */
    redis_cli_set(r, k1, redis_get(r, k2));
    mz_resp_t *got = mz_ctx_get(gw, POST1, NULL, NULL);
    cr_log_info("post 1 after copying post 2's value over it: %s", cache_of(got));
    cr_assert_str_eq(cache_of(got), "MISS", "%s", mz_describe(got));
    cr_assert_str_eq(got->body, p1->body);
    cr_assert_str_neq(got->body, p2->body);
    cr_assert_eq(mz_metric(gw, "mizan_cache_rejected_total"), 1.0);
    mz_gw_stop_ok(gw);
}

Test(guarantees_cache, revision_key_of_the_wrong_type_is_repaired_and_readyz_stays_200)
{
    mz_redis_t *r = mz_redis_start();
    char *dir = mz_tmpdir();
    mz_gw_t *a = start_gw(dir, r, "A", NULL);
    mz_gw_t *b = start_gw(dir, r, "B", NULL);
    char *alice = mz_token(a, "alice", NULL);
    char *ctx_rev = mz_key_ctx_rev("feed");
    char *scoped = mz_key_scoped_rev("post", "{\"post_id\":1}");

    /* A list where the feed's context revision should be. */
    const char *rpush[] = {"RPUSH", ctx_rev, "junk", NULL};
    mz_redis_cmd(r, rpush);
    mz_ctx_get(a, "/api/mizan/ctx/feed/", NULL, "MISS");
    mz_ctx_get(b, "/api/mizan/ctx/feed/", NULL, "HIT");
    /* The post's scoped revision set to text. */
    redis_cli_set(r, scoped, "not a revision");
    mz_resp_t *post = mz_ctx_get(a, POST1, NULL, NULL);
    cr_log_info("post 1 with a text revision: %s", cache_of(post));

    /* The mutation's INCRs fail on both keys: repaired, not queued. */
    mz_mutate(a, "update_post", "{\"post_id\":1,\"title\":\"after repair\"}", alice,
              "[{\"context\":\"post\",\"params\":{\"post_id\":1}},{\"context\":\"feed\"}]");
    mz_resp_t *ready = mz_get(a, "/readyz", NULL);
    cr_assert_eq(ready->status, 200, "/readyz after the failed INCR:\n%s", mz_describe(ready));
    cr_assert_eq(mz_metric(a, "mizan_redis_replay_queued"), 0.0);
    cr_assert(mz_metric(a, "mizan_redis_revisions_repaired_total") >= 2.0);
    cr_assert_not_null(strstr(mz_gw_log_tail(a, 1 << 20), "overwriting the key with a fresh revision"));
    /* Both keys hold revisions again, and the write is visible everywhere. */
    const char *type[] = {"TYPE", ctx_rev, NULL};
    mz_expect_json(mz_redis_cmd(r, type), "\"string\"");
    mz_resp_t *feed_b = mz_ctx_get(b, "/api/mizan/ctx/feed/", NULL, "MISS");
    cr_assert_not_null(strstr(feed_b->body, "after repair"), "%s", feed_b->body);
    mz_resp_t *post_b = mz_ctx_get(b, POST1, NULL, "MISS");
    cr_assert_str_eq(mz_bundle_title(post_b), "after repair");
    mz_ctx_get(a, POST1, NULL, "HIT");
    mz_ctx_get(a, "/api/mizan/ctx/feed/", NULL, "HIT");

    /* Corrupted again between mutations: the next read repairs it and the cache comes back. */
    redis_cli_set(r, scoped, "garbage");
    mz_resp_t *again = mz_ctx_get(b, POST1, NULL, "BYPASS");
    cr_assert_str_eq(mz_bundle_title(again), "after repair");
    mz_ctx_get(b, POST1, NULL, "MISS");
    mz_ctx_get(a, POST1, NULL, "HIT");
    cr_assert_eq(mz_get(b, "/readyz", NULL)->status, 200);
    cr_assert_eq(mz_get(a, "/readyz", NULL)->status, 200);
    mz_gw_stop_ok(a);
    mz_gw_stop_ok(b);
}

/* ------------------------------------------------------------------------
 * Item: the blog's author counts (BLOG_EXAMPLE rev 2)
 * ---------------------------------------------------------------------- */

Test(guarantees_cache, blog_author_count_follows_new_and_deleted_posts)
{
    mz_redis_t *r = mz_redis_start();
    char *dir = mz_tmpdir();
    mz_gw_t *a = start_gw(dir, r, "A", NULL);
    mz_gw_t *b = start_gw(dir, r, "B", NULL);
    char *alice = mz_token(a, "alice", NULL);
    char *staff = mz_token(a, "sam", "--staff", NULL);
    long long count = author_posts(mz_ctx_get(a, POST2, NULL, "MISS"));
    cr_assert_eq(count, 3);
    mz_ctx_get(a, POST3, NULL, "MISS");
    mz_ctx_get(b, POST2, NULL, "HIT");
    mz_ctx_get(b, POST3, NULL, "HIT");

    mz_resp_t *resp = mz_call(a, "create_post", "{\"title\":\"fourth\",\"body\":\"b\"}", alice);
    json_int_t id = json_integer_value(json_object_get(mz_expect_mutation(resp), "id"));
    mz_resp_t *p2 = mz_ctx_get(b, POST2, NULL, NULL);
    cr_log_info("post 2 after create_post: %s posts=%lld", cache_of(p2), author_posts(p2));
    cr_assert_eq(author_posts(p2), 4, "a stale author count\n%s", mz_describe(p2));
    cr_assert_str_eq(cache_of(p2), "MISS");
    mz_expect_json(json_object_get(resp->json, "invalidate"),
                   "[{\"context\":\"feed\"},{\"context\":\"drafts\"},{\"context\":\"post\"}]");
    cr_assert_eq(author_posts(mz_ctx_get(a, POST3, NULL, "MISS")), 4);

    mz_mutate(b, "delete_post", mz_fmt("{\"post_id\":%lld}", (long long)id), staff,
              mz_fmt("[{\"context\":\"post\",\"params\":{\"post_id\":%lld}},{\"context\":\"feed\"},"
                     "{\"context\":\"drafts\"},{\"context\":\"post\"}]",
                     (long long)id));
    cr_assert_eq(author_posts(mz_ctx_get(a, POST2, NULL, "MISS")), 3);
    cr_assert_eq(author_posts(mz_ctx_get(b, POST3, NULL, "MISS")), 3);
    mz_gw_stop_ok(a);
    mz_gw_stop_ok(b);
}
