/*
 * test_cache.c - end-to-end tests of the embedded (in-process) context
 * cache, invalidation and the event stream (PROTOCOL.md sections 5-7),
 * through HTTP against the built gateway and the blog example:
 * MISS / HIT / BYPASS, byte-identical hits, read-your-writes, scoped versus
 * whole-context invalidation, per-user and per-permission-set bundles,
 * coalescing of concurrent first fetches (counted in /metrics), and SSE
 * frames, filters and heartbeats.
 *
 * Every test starts its own gateway on a fresh blog.db (posts 1..3 by
 * alice, post 1 with two comments, post 2 with one).
 */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache_support.h"
#include "harness.h"

TestSuite(cache, .init = mz_setup, .fini = mz_teardown, .timeout = 240);

/* ------------------------------------------------------------------------
 * Helpers
 * ---------------------------------------------------------------------- */

#define POST1 "/api/mizan/ctx/post/?post_id=1"
#define POST2 "/api/mizan/ctx/post/?post_id=2"
#define FEED "/api/mizan/ctx/feed/"
#define ME "/api/mizan/ctx/me/"
#define DRAFTS "/api/mizan/ctx/drafts/"

static double runs(const mz_gw_t *gw, const char *fn)
{
    return mz_metric(gw, mz_fmt("mizan_function_runs_total{function=\"%s\"}", fn));
}

static void expect_same_body(const mz_resp_t *a, const mz_resp_t *b)
{
    cr_assert(a->body_len == b->body_len && memcmp(a->body, b->body, a->body_len) == 0,
              "bodies differ:\n%s\n%s", a->body, b->body);
}

/* ------------------------------------------------------------------------
 * MISS, HIT, BYPASS
 * ---------------------------------------------------------------------- */

Test(cache, post_miss_then_identical_hit)
{
    mz_gw_t *gw = mz_gw_start(NULL);
    double before = runs(gw, "get_post");
    mz_resp_t *miss = mz_ctx_get(gw, POST1, NULL, "MISS");
    mz_resp_t *hit = mz_ctx_get(gw, POST1, NULL, "HIT");
    expect_same_body(miss, hit);
    cr_assert_eq(runs(gw, "get_post") - before, 1.0, "a HIT must not run get_post again");

    /* The bundle is exactly the three functions' results. */
    json_t *b = miss->json;
    cr_assert_eq(json_object_size(b), 4, "%s", miss->body);
    mz_expect_json(json_object_get(b, "context"), "\"post\"");
    mz_expect_json(json_object_get(b, "params"), "{\"post_id\": 1}");
    mz_expect_json(json_object_get(b, "errors"), "{}");
    json_t *data = json_object_get(b, "data");
    cr_assert_eq(json_object_size(data), 3, "%s", miss->body);
    mz_expect_json(json_object_get(data, "get_post"),
                   mz_dump(mz_expect_result(mz_call(gw, "get_post", "{\"post_id\":1}", NULL))));
    mz_expect_json(json_object_get(data, "list_comments"),
                   mz_dump(mz_expect_result(mz_call(gw, "list_comments", "{\"post_id\":1}", NULL))));
    mz_expect_json(json_object_get(data, "get_author"),
                   mz_dump(mz_expect_result(mz_call(gw, "get_author", "{\"post_id\":1}", NULL))));

    /* Another post is another bundle; the path without its slash is the same one. */
    mz_ctx_get(gw, POST2, NULL, "MISS");
    mz_ctx_get(gw, POST2, NULL, "HIT");
    expect_same_body(mz_ctx_get(gw, "/api/mizan/ctx/post?post_id=1", NULL, "HIT"), miss);
    mz_gw_stop_ok(gw);
}

Test(cache, fanout_ttl0_is_always_bypass)
{
    mz_gw_t *gw = mz_gw_start(NULL);
    double before = runs(gw, "slow_a");
    for (int i = 0; i < 3; i++) {
        mz_resp_t *r = mz_ctx_get(gw, "/api/mizan/ctx/fanout/?ms=5", NULL, "BYPASS");
        mz_expect_json(json_object_get(json_object_get(r->json, "data"), "slow_a"),
                       "{\"fn\": \"slow_a\", \"slept_ms\": 5}");
    }
    cr_assert_eq(runs(gw, "slow_a") - before, 3.0, "every fanout request must run slow_a");
    mz_gw_stop_ok(gw);
}

Test(cache, bundle_with_errors_is_bypass_and_stays_bypass)
{
    mz_gw_t *gw = mz_gw_start(NULL);
    double before = runs(gw, "get_post");
    for (int i = 0; i < 3; i++) {
        mz_resp_t *r = mz_ctx_get(gw, "/api/mizan/ctx/post/?post_id=999", NULL, "BYPASS");
        json_t *err = json_object_get(json_object_get(r->json, "errors"), "get_post");
        cr_assert(json_is_object(err), "errors.get_post missing\n%s", mz_describe(r));
        mz_expect_json(json_object_get(err, "code"), "\"NOT_FOUND\"");
        cr_assert_null(json_object_get(json_object_get(r->json, "data"), "get_post"), "%s", r->body);
    }
    cr_assert_eq(runs(gw, "get_post") - before, 3.0, "a bundle with errors must never be served from the cache");
    /* The same post, once it exists, is cacheable (nothing negative was stored). */
    char *tok = mz_token(gw, "alice", NULL);
    json_t *post = mz_mutate(gw, "create_post", "{\"title\":\"x\",\"body\":\"y\"}", tok,
                          "[{\"context\":\"feed\"},{\"context\":\"drafts\"},{\"context\":\"post\"}]");
    mz_expect_json(json_object_get(post, "id"), "4");
    mz_ctx_get(gw, "/api/mizan/ctx/post/?post_id=4", NULL, "MISS");
    mz_ctx_get(gw, "/api/mizan/ctx/post/?post_id=4", NULL, "HIT");
    mz_gw_stop_ok(gw);
}

/* ------------------------------------------------------------------------
 * Invalidation
 * ---------------------------------------------------------------------- */

Test(cache, update_post_read_your_writes_and_scoping)
{
    mz_gw_t *gw = mz_gw_start(NULL);
    char *alice = mz_token(gw, "alice", NULL);
    mz_ctx_get(gw, POST1, NULL, "MISS");
    mz_ctx_get(gw, POST1, NULL, "HIT");
    mz_ctx_get(gw, POST2, NULL, "MISS");
    mz_ctx_get(gw, FEED, NULL, "MISS");
    mz_ctx_get(gw, FEED, NULL, "HIT");
    for (int round = 0; round < 5; round++) {
        char *title = mz_fmt("ryw title %d", round);
        mz_mutate(gw, "update_post", mz_fmt("{\"post_id\":1,\"title\":\"%s\"}", title), alice,
               "[{\"context\":\"post\",\"params\":{\"post_id\":1}},{\"context\":\"feed\"}]");
        mz_resp_t *r = mz_ctx_get(gw, POST1, NULL, "MISS");
        cr_assert_str_eq(mz_bundle_title(r), title, "stale post bundle after update_post\n%s", mz_describe(r));
        expect_same_body(mz_ctx_get(gw, POST1, NULL, "HIT"), r);
        /* Scoped: post 2's bundle survives. */
        mz_ctx_get(gw, POST2, NULL, "HIT");
        /* Whole context: the feed is recomputed and shows the title. */
        mz_resp_t *f = mz_ctx_get(gw, FEED, NULL, "MISS");
        json_t *posts = json_object_get(json_object_get(f->json, "data"), "list_posts");
        size_t i;
        json_t *p;
        bool found = false;
        json_array_foreach(posts, i, p)
        {
            if (json_integer_value(json_object_get(p, "id")) == 1) {
                found = true;
                cr_assert_str_eq(json_string_value(json_object_get(p, "title")), title, "%s", f->body);
            }
        }
        cr_assert(found, "post 1 missing from the feed: %s", f->body);
        mz_ctx_get(gw, FEED, NULL, "HIT");
    }
    mz_gw_stop_ok(gw);
}

Test(cache, add_comment_invalidates_only_its_post)
{
    mz_gw_t *gw = mz_gw_start(NULL);
    char *bob = mz_token(gw, "bob", NULL);
    mz_ctx_get(gw, POST1, NULL, "MISS");
    mz_ctx_get(gw, POST2, NULL, "MISS");
    mz_ctx_get(gw, FEED, NULL, "MISS");
    mz_mutate(gw, "add_comment", "{\"post_id\":1,\"text\":\"hello\"}", bob,
           "[{\"context\":\"post\",\"params\":{\"post_id\":1}}]");
    mz_resp_t *r = mz_ctx_get(gw, POST1, NULL, "MISS");
    json_t *comments = json_object_get(json_object_get(r->json, "data"), "list_comments");
    cr_assert_eq(json_array_size(comments), 3, "%s", r->body);
    mz_expect_json(json_object_get(json_array_get(comments, 2), "text"), "\"hello\"");
    mz_ctx_get(gw, POST2, NULL, "HIT");
    mz_ctx_get(gw, FEED, NULL, "HIT");
    mz_gw_stop_ok(gw);
}

Test(cache, create_post_invalidates_the_feed)
{
    mz_gw_t *gw = mz_gw_start(NULL);
    char *alice = mz_token(gw, "alice", NULL);
    mz_resp_t *before = mz_ctx_get(gw, FEED, NULL, "MISS");
    mz_ctx_get(gw, FEED, NULL, "HIT");
    mz_ctx_get(gw, POST1, NULL, "MISS");
    json_t *post = mz_mutate(gw, "create_post", "{\"title\":\"fresh post\",\"body\":\"b\"}", alice,
                          "[{\"context\":\"feed\"},{\"context\":\"drafts\"},{\"context\":\"post\"}]");
    json_int_t id = json_integer_value(json_object_get(post, "id"));
    mz_resp_t *after = mz_ctx_get(gw, FEED, NULL, "MISS");
    json_t *list = json_object_get(json_object_get(after->json, "data"), "list_posts");
    cr_assert_eq(json_array_size(list),
                 json_array_size(json_object_get(json_object_get(before->json, "data"), "list_posts")) + 1,
                 "%s", after->body);
    /* Newest first. */
    cr_assert_eq(json_integer_value(json_object_get(json_array_get(list, 0), "id")), id, "%s", after->body);
    mz_expect_json(json_object_get(json_array_get(list, 0), "title"), "\"fresh post\"");
    expect_same_body(mz_ctx_get(gw, FEED, NULL, "HIT"), after);
    /* create_post changes every post page of its author (get_author.posts):
     * the whole post context (BLOG_EXAMPLE rev 2). */
    mz_ctx_get(gw, POST1, NULL, "MISS");
    mz_ctx_get(gw, POST1, NULL, "HIT");
    mz_gw_stop_ok(gw);
}

/* ------------------------------------------------------------------------
 * Scopes
 * ---------------------------------------------------------------------- */

Test(cache, me_is_per_user)
{
    mz_gw_t *gw = mz_gw_start(NULL);
    char *alice = mz_token(gw, "alice", NULL);
    char *bob = mz_token(gw, "bob", "--staff", NULL);
    mz_resp_t *a1 = mz_ctx_get(gw, ME, alice, "MISS");
    mz_resp_t *b1 = mz_ctx_get(gw, ME, bob, "MISS");
    mz_expect_json(json_object_get(json_object_get(a1->json, "data"), "whoami"),
                   "{\"sub\":\"alice\",\"staff\":false,\"superuser\":false,\"perms\":[]}");
    mz_expect_json(json_object_get(json_object_get(b1->json, "data"), "whoami"),
                   "{\"sub\":\"bob\",\"staff\":true,\"superuser\":false,\"perms\":[]}");
    for (int i = 0; i < 3; i++) {
        mz_resp_t *a = mz_ctx_get(gw, ME, alice, "HIT");
        mz_resp_t *b = mz_ctx_get(gw, ME, bob, "HIT");
        expect_same_body(a, a1);
        expect_same_body(b, b1);
        cr_assert_null(strstr(a->body, "bob"), "alice was served bob's bundle: %s", a->body);
        cr_assert_null(strstr(b->body, "alice"), "bob was served alice's bundle: %s", b->body);
    }
    /* A different token of the same sub shares the bundle (scope is the sub). */
    char *alice2 = mz_token(gw, "alice", "--ttl", "120", NULL);
    expect_same_body(mz_ctx_get(gw, ME, alice2, "HIT"), a1);
    mz_expect_error(mz_get(gw, ME, NULL), 401, "UNAUTHORIZED");
    mz_gw_stop_ok(gw);
}

Test(cache, drafts_are_per_permission_set)
{
    mz_gw_t *gw = mz_gw_start(NULL);
    char *carol = mz_token(gw, "carol", "--perm", "blog.view_drafts", NULL);
    char *dave = mz_token(gw, "dave", "--perm", "blog.view_drafts", NULL);
    char *dup = mz_token(gw, "hank", "--perm", "blog.view_drafts", "--perm", "blog.view_drafts", NULL);
    char *erin = mz_token(gw, "erin", "--perm", "blog.view_drafts", "--perm", "blog.publish_post", NULL);
    char *gina = mz_token(gw, "gina", "--perm", "blog.publish_post", "--perm", "blog.view_drafts", NULL);
    char *frank = mz_token(gw, "frank", "--staff", "--perm", "blog.view_drafts", NULL);
    char *nobody = mz_token(gw, "ivan", NULL);

    mz_resp_t *c = mz_ctx_get(gw, DRAFTS, carol, "MISS");
    expect_same_body(mz_ctx_get(gw, DRAFTS, dave, "HIT"), c);   /* same perms, other user */
    expect_same_body(mz_ctx_get(gw, DRAFTS, dup, "HIT"), c);    /* duplicates dropped */
    mz_resp_t *e = mz_ctx_get(gw, DRAFTS, erin, "MISS");        /* more perms: its own bundle */
    expect_same_body(mz_ctx_get(gw, DRAFTS, gina, "HIT"), e);   /* perms order does not matter */
    mz_ctx_get(gw, DRAFTS, frank, "MISS");                      /* staff flag differs */
    mz_ctx_get(gw, DRAFTS, frank, "HIT");
    mz_ctx_get(gw, DRAFTS, carol, "HIT");
    mz_expect_error(mz_get(gw, DRAFTS, nobody), 403, "FORBIDDEN");

    /* A new draft invalidates every permission set's bundle. */
    char *alice = mz_token(gw, "alice", NULL);
    mz_mutate(gw, "create_post", "{\"title\":\"a draft\",\"body\":\"b\",\"published\":false}", alice,
           "[{\"context\":\"feed\"},{\"context\":\"drafts\"},{\"context\":\"post\"}]");
    mz_resp_t *c2 = mz_ctx_get(gw, DRAFTS, dave, "MISS");
    cr_assert_not_null(strstr(c2->body, "a draft"), "%s", c2->body);
    mz_ctx_get(gw, DRAFTS, carol, "HIT");
    mz_ctx_get(gw, DRAFTS, erin, "MISS");
    mz_ctx_get(gw, DRAFTS, frank, "MISS");
    mz_gw_stop_ok(gw);
}

/* ------------------------------------------------------------------------
 * Coalescing
 * ---------------------------------------------------------------------- */

Test(cache, fifty_concurrent_first_fetches_compute_once)
{
    mz_gw_t *gw = mz_gw_start(NULL);
    static const char *const fns[] = {"get_post", "list_comments", "get_author"};
    /* Three rounds, each on a bundle nobody fetched yet. */
    for (int post = 1; post <= 3; post++) {
        double before[3];
        for (int k = 0; k < 3; k++)
            before[k] = runs(gw, fns[k]);
        double coalesced_before = mz_metric(gw, "mizan_cache_coalesced_total");
        enum { N = 50 };
        mz_req_t reqs[N];
        char *path = mz_fmt("/api/mizan/ctx/post/?post_id=%d", post);
        for (int i = 0; i < N; i++)
            reqs[i] = (mz_req_t){.method = "GET", .path = path};
        mz_result_t *res = mz_parallel(gw->port, N, reqs, 0);
        int hits = 0, misses = 0;
        for (int i = 0; i < N; i++) {
            cr_assert_not_null(res[i].resp, "request %d: %s", i, res[i].err);
            cr_assert_eq(res[i].resp->status, 200, "request %d:\n%s", i, mz_describe(res[i].resp));
            const char *c = mz_header(res[i].resp, "X-Mizan-Cache");
            cr_assert(c != NULL && (strcmp(c, "MISS") == 0 || strcmp(c, "HIT") == 0),
                      "request %d: X-Mizan-Cache must be MISS or HIT\n%s", i, mz_describe(res[i].resp));
            hits += strcmp(c, "HIT") == 0;
            misses += strcmp(c, "MISS") == 0;
            expect_same_body(res[i].resp, res[0].resp);
        }
        for (int k = 0; k < 3; k++) {
            double delta = runs(gw, fns[k]) - before[k];
            cr_assert_eq(delta, 1.0,
                         "post %d: 50 concurrent first fetches ran %s %.0f times (expected exactly 1); "
                         "%d MISS, %d HIT, %.0f coalesced",
                         post, fns[k], delta, misses, hits,
                         mz_metric(gw, "mizan_cache_coalesced_total") - coalesced_before);
        }
        cr_log_info("post %d: %d MISS (leader + coalesced), %d HIT, %.0f coalesced", post, misses, hits,
                    mz_metric(gw, "mizan_cache_coalesced_total") - coalesced_before);
    }
    mz_gw_stop_ok(gw);
}

/* ------------------------------------------------------------------------
 * Events
 * ---------------------------------------------------------------------- */

#define POST1_EVENT "{\"context\":\"post\",\"params\":{\"post_id\":1}}"
#define FEED_EVENT "{\"context\":\"feed\"}"

Test(cache, sse_post_stream_gets_exact_invalidate_frame)
{
    mz_gw_t *gw = mz_gw_start(NULL);
    char *alice = mz_token(gw, "alice", NULL);
    mz_sse_t *s = mz_sse_open(gw, "contexts=post", NULL);
    mz_sse_frame_t *hello = NULL;
    char err[256] = "";
    cr_assert_eq(mz_sse_next(s, 5000, &hello, err, sizeof(err)), 1, "no first frame: %s", err);
    cr_assert_str_eq(hello->raw, "retry: 2000\n: connected", "first frame");

    mz_mutate(gw, "update_post", "{\"post_id\":1,\"title\":\"evented\"}", alice,
           "[{\"context\":\"post\",\"params\":{\"post_id\":1}},{\"context\":\"feed\"}]");
    mz_sse_frame_t *f = mz_sse_expect(s, "invalidate", POST1_EVENT, 5000);
    cr_assert_str_eq(f->raw, "event: invalidate\ndata: " POST1_EVENT, "frame bytes");
    /* The feed target of the same mutation is filtered out. */
    mz_sse_expect_no_context(s, "feed", 700);
    mz_gw_stop_ok(gw);
}

Test(cache, sse_filter_by_context)
{
    mz_gw_t *gw = mz_gw_start(NULL);
    char *alice = mz_token(gw, "alice", NULL);
    mz_sse_t *feed = mz_sse_open(gw, "contexts=feed", NULL);
    mz_sse_t *post = mz_sse_open(gw, "contexts=post", NULL);
    mz_sse_t *both = mz_sse_open(gw, "contexts=post,feed", NULL);
    /* Unfiltered: every context the caller may read (a superuser reads drafts). */
    mz_sse_t *all = mz_sse_open(gw, NULL, mz_token(gw, "root", "--superuser", NULL));

    /* add_comment: a post event only. */
    mz_mutate(gw, "add_comment", "{\"post_id\":1,\"text\":\"c\"}", alice,
           "[{\"context\":\"post\",\"params\":{\"post_id\":1}}]");
    mz_sse_expect(post, "invalidate", POST1_EVENT, 5000);
    mz_sse_expect(both, "invalidate", POST1_EVENT, 5000);
    mz_sse_expect(all, "invalidate", POST1_EVENT, 5000);
    mz_sse_expect_no_context(feed, "post", 700);

    /* update_post: post and feed; the feed stream sees feed and only feed. */
    mz_mutate(gw, "update_post", "{\"post_id\":1,\"title\":\"t\"}", alice,
           "[{\"context\":\"post\",\"params\":{\"post_id\":1}},{\"context\":\"feed\"}]");
    mz_sse_expect(feed, "invalidate", FEED_EVENT, 5000);
    mz_sse_expect(both, "invalidate", POST1_EVENT, 5000);
    mz_sse_expect(both, "invalidate", FEED_EVENT, 5000);
    mz_sse_expect(all, "invalidate", POST1_EVENT, 5000);
    mz_sse_expect(all, "invalidate", FEED_EVENT, 5000);
    mz_sse_expect_no_context(feed, "post", 500);

    /* create_post: feed, drafts and the whole post context; the post
     * stream sees only post. */
    mz_mutate(gw, "create_post", "{\"title\":\"n\",\"body\":\"b\"}", alice,
           "[{\"context\":\"feed\"},{\"context\":\"drafts\"},{\"context\":\"post\"}]");
    mz_sse_expect(feed, "invalidate", FEED_EVENT, 5000);
    mz_sse_expect(all, "invalidate", FEED_EVENT, 5000);
    mz_sse_expect(all, "invalidate", "{\"context\":\"drafts\"}", 5000);
    mz_sse_expect(post, "invalidate", "{\"context\":\"post\"}", 5000);
    mz_sse_expect_no_context(post, "feed", 300);
    mz_sse_expect_no_context(post, "drafts", 300);
    mz_sse_expect_no_context(feed, "drafts", 300);
    mz_gw_stop_ok(gw);
}

Test(cache, sse_unknown_context_is_404)
{
    mz_gw_t *gw = mz_gw_start(NULL);
    /* PROTOCOL section 7 rev 2: an unknown context is 404, as for GET /ctx/{name}/. */
    mz_expect_error(mz_get(gw, "/api/mizan/events/?contexts=nope", NULL), 404, "NOT_FOUND");
    mz_expect_error(mz_get(gw, "/api/mizan/events/?contexts=post,nope", NULL), 404, "NOT_FOUND");
    json_t *d = mz_expect_error(mz_get(gw, "/api/mizan/events/?contexts=post,,feed", NULL), 422, "VALIDATION_FAILED");
    mz_expect_violation(d, "[\"params\",\"contexts\"]", NULL);
    mz_expect_error(mz_get(gw, "/api/mizan/events/?context=post", NULL), 422, "VALIDATION_FAILED");
    /* The gateway still serves streams afterwards. */
    mz_sse_open(gw, "contexts=post", NULL);
    mz_gw_stop_ok(gw);
}

Test(cache, sse_heartbeat)
{
    mz_gw_t *gw = mz_gw_start(mz_json("{\"sse_heartbeat_s\": 1}"));
    mz_sse_t *s = mz_sse_open(gw, "contexts=feed", NULL);
    double beats[2];
    int n = 0;
    double deadline = mz_now_ms() + 5000;
    while (n < 2) {
        int left = (int)(deadline - mz_now_ms());
        mz_sse_frame_t *f = NULL;
        char err[256] = "";
        int rc = left > 0 ? mz_sse_next(s, left, &f, err, sizeof(err)) : 0;
        cr_assert_eq(rc, 1, "only %d heartbeat(s) within 5 s with sse_heartbeat_s 1 (%s)", n,
                     rc == 0 ? "timed out" : err);
        if (f->event == NULL && f->data == NULL && f->comment != NULL && strcmp(f->comment, "connected") != 0) {
            cr_assert_str_eq(f->raw, ": heartbeat", "heartbeat frame");
            beats[n++] = f->at_ms;
        }
    }
    cr_assert(beats[1] - beats[0] > 600 && beats[1] - beats[0] < 1600,
              "heartbeats %.0f ms apart with sse_heartbeat_s 1", beats[1] - beats[0]);
    mz_gw_stop_ok(gw);
}

/*
 * Streams whose clients went away are released (evhttp sees the EOF), and
 * the gateway still stops cleanly: under the sanitizer build a request
 * object leaked for a closed stream makes mizand exit non-zero at its
 * LeakSanitizer report, which mz_gw_stop_ok() rejects.
 */
Test(cache, sse_clients_gone_are_released)
{
    mz_gw_t *gw = mz_gw_start(NULL);
    char *alice = mz_token(gw, "alice", NULL);
    mz_sse_t *quiet = mz_sse_open(gw, "contexts=drafts", mz_token(gw, "carol", "--perm", "blog.view_drafts", NULL));
    mz_sse_t *noisy = mz_sse_open(gw, "contexts=feed", NULL);
    mz_sse_t *stays = mz_sse_open(gw, "contexts=feed", NULL);
    cr_assert_eq(mz_metric(gw, "mizan_sse_clients"), 3.0);
    mz_sse_close(quiet);
    mz_sse_close(noisy);
    double deadline = mz_now_ms() + 3000;
    double open = 0;
    while ((open = mz_metric(gw, "mizan_sse_clients")) != 1.0 && mz_now_ms() < deadline)
        mz_sleep_ms(50);
    cr_assert_eq(open, 1.0, "mizan_sse_clients is %.0f 3 s after two of three clients closed", open);
    mz_mutate(gw, "update_post", "{\"post_id\":1,\"title\":\"t\"}", alice,
           "[{\"context\":\"post\",\"params\":{\"post_id\":1}},{\"context\":\"feed\"}]");
    mz_sse_expect(stays, "invalidate", FEED_EVENT, 5000);
    mz_gw_stop_ok(gw);
}
