/*
 * test_redis.c - end-to-end tests of the shared Redis cache (PROTOCOL.md
 * sections 5-7) against a real redis-server started per test on a free
 * port: bundle keys and stored values checked byte for byte against keys
 * derived independently (openssl HMAC), revision bumps of every blog
 * mutation, events on the Redis channel and on SSE streams, per-user and
 * per-permission-set isolation, read-your-writes across two gateway
 * instances sharing Redis and one SQLite file, and the behaviour through a
 * Redis crash and restart on the same port (BYPASS, /readyz 503, queued
 * invalidations replayed, replayed events delivered).
 */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cache_support.h"
#include "harness.h"

TestSuite(redis, .init = mz_setup, .fini = mz_teardown, .timeout = 300);

/* ------------------------------------------------------------------------
 * Helpers
 * ---------------------------------------------------------------------- */

#define POST1 "/api/mizan/ctx/post/?post_id=1"
#define FEED "/api/mizan/ctx/feed/"
#define ME "/api/mizan/ctx/me/"
#define DRAFTS "/api/mizan/ctx/drafts/"
#define POST1_JCS "{\"post_id\":1}"
#define POST1_TARGET "{\"context\":\"post\",\"params\":{\"post_id\":1}}"
#define POST_FEED_TARGETS "[" POST1_TARGET ",{\"context\":\"feed\"}]"

/* Starts a gateway on Redis r (in dir, or a new temp dir) and waits until it is ready. */
static mz_gw_t *start_gw(const mz_redis_t *r, const char *instance, const char *dir)
{
    json_t *cfg = mz_json("{\"instance\":\"%s\",\"cache\":{\"redis_url\":\"redis://127.0.0.1:%d/0\"}}", instance,
                          r->port);
    mz_gw_opts_t opts = {.config = cfg, .dir = dir};
    mz_gw_t *gw = mz_gw_start_opts(&opts);
    mz_wait_status(gw, "/readyz", 200, 10000, NULL);
    return gw;
}

/* One two-word Redis command; the reply is arena-owned (borrowed). */
static json_t *rcmd2(const mz_redis_t *r, const char *cmd, const char *key)
{
    const char *argv[] = {cmd, key, NULL};
    return mz_redis_cmd(r, argv);
}

/* GET key: the string value, or NULL when missing. */
static const char *rget(const mz_redis_t *r, const char *key)
{
    json_t *v = rcmd2(r, "GET", key);
    cr_assert(json_is_string(v) || json_is_null(v), "GET %s: %s", key, mz_dump(v));
    return json_string_value(v);
}

static long long rttl(const mz_redis_t *r, const char *key)
{
    json_t *v = rcmd2(r, "TTL", key);
    cr_assert(json_is_integer(v), "TTL %s: %s", key, mz_dump(v));
    return json_integer_value(v);
}

/* The revision key holds exactly want ("3"), or is missing when want is NULL. */
static void expect_rev(const mz_redis_t *r, const char *what, const char *key, const char *want)
{
    const char *got = rget(r, key);
    if (want == NULL)
        cr_assert_null(got, "%s (%s) should not exist, holds %s", what, key, got);
    else
        cr_assert(got != NULL && strcmp(got, want) == 0, "%s (%s): expected %s, got %s", what, key, want,
                  got != NULL ? got : "(missing)");
}

/* A scoped revision carries a TTL of about twice the context's (ttl_s). */
static void expect_scoped_ttl(const mz_redis_t *r, const char *key, int ttl_s)
{
    long long t = rttl(r, key);
    cr_assert(t > 2 * ttl_s - 10 && t <= 2 * ttl_s, "TTL of scoped revision %s: %lld, expected about %d", key, t,
              2 * ttl_s);
}

/* The stored value of key is exactly mac "\n" {"v":2,"rev":[r0,r1],"bundle":body}. */
static void expect_stored(const mz_redis_t *r, const char *key, long long r0, long long r1, const mz_resp_t *resp)
{
    const char *got = rget(r, key);
    char *want = mz_stored_value(key, r0, r1, resp->body);
    cr_assert(got != NULL, "bundle key %s is missing from Redis (expected %s)", key, want);
    cr_assert_str_eq(got, want, "stored value of %s", key);
}

/* ------------------------------------------------------------------------
 * The key derivation used by these tests matches PROTOCOL.md's vectors
 * ---------------------------------------------------------------------- */

Test(redis, key_helpers_match_protocol_vectors)
{
    cr_assert_str_eq(mz_key_params_digest("post", "{\"post_id\":5}"),
                     "82d21d6a3238fa1479ed6567c287c214b50cabfe4d4ed7c7e0c1bfab5d37e17e");
    cr_assert_str_eq(mz_key_bundle("post", "{\"post_id\":5}", "public"),
                     "mizan:ctx:{post}:609fa05978b34ce85e89ca31370427d12c3b0afbc8f4bf0c491c023bcd5d63ba");
    cr_assert_str_eq(mz_key_bundle("feed", "{}", "public"),
                     "mizan:ctx:{feed}:db93c64f7a52713920064bfc20ec4851dd65b1bcdebcab0ce10a00153061d096");
    cr_assert_str_eq(mz_key_bundle("inbox", "{\"folder\":\"spam\",\"page\":2,\"unread\":true}",
                                   mz_key_user_scope("alice", false, false, NULL)),
                     "mizan:ctx:{inbox}:67c89b2bede14a59e0d25f1c6a68641c11ea900f7f339cadbf461ec1cbb67789");
    const char *inbox_perms[] = {"blog.add_post", "blog.change_post", NULL};
    cr_assert_str_eq(mz_key_bundle("inbox", "{\"folder\":\"spam\",\"page\":2,\"unread\":true}",
                                   mz_key_user_scope("alice", true, false, inbox_perms)),
                     "mizan:ctx:{inbox}:bca496e706505bff0f5d1c040669dec519a8538ddb848827486e42148f052e69");
    cr_assert_str_eq(mz_stored_value(mz_key_bundle("post", "{\"post_id\":5}", "public"), 3, 1,
                                     "{\"context\":\"post\",\"params\":{\"post_id\":5},\"data\":{},\"errors\":{}}"),
                     "4a547b80a40dda85403df1aab92a673df20233bbe6cffa38a8bbd1bb996dbeb0\n"
                     "{\"v\":2,\"rev\":[3,1],\"bundle\":{\"context\":\"post\",\"params\":{\"post_id\":5},"
                     "\"data\":{},\"errors\":{}}}");
    const char *search = "{\"lang\":null,\"q\":\"caf\xc3\xa9 \\\"x\\\"\\n\\u0001\"}";
    cr_assert_str_eq(mz_key_params_digest("search", search),
                     "4130766662be562a422e368ca39f9433d22f602da6066ee8fdaf1927309db597");
    cr_assert_str_eq(mz_key_bundle("search", search, "public"),
                     "mizan:ctx:{search}:ea35e942feeedca42bdab9123ba7c02211273beb5c30a1b90cec71df51c8cbb4");
    const char *perms[] = {"blog.change_post", "blog.add_post", "blog.add_post", NULL};
    char *pk = mz_key_perm(true, false, perms);
    cr_assert_str_eq(pk, "7fb395021657b7031b7eaad9b7a377eadb3c1a750518083eb5531ee32ec406b7");
    cr_assert_str_eq(mz_key_perm(false, false, NULL),
                     "6f250f2a4599d67141bc29cdc33f9542a3b1a7d41aa752efc8a0c12ab13d90c2");
    cr_assert_str_eq(mz_key_bundle("dashboard", "{}", mz_fmt("perms:%s", pk)),
                     "mizan:ctx:{dashboard}:d8a08ff9e4b0eb23b759670d263131c1e3bce920ead79a574110d55e6bf33bc7");
    cr_assert_str_eq(mz_key_scoped_rev("post", "{\"post_id\":5}"),
                     "mizan:rev:{post}:82d21d6a3238fa1479ed6567c287c214b50cabfe4d4ed7c7e0c1bfab5d37e17e");
    cr_assert_str_eq(mz_key_ctx_rev("feed"), "mizan:rev:{feed}");
}

/* ------------------------------------------------------------------------
 * Bundles in Redis
 * ---------------------------------------------------------------------- */

Test(redis, miss_hit_and_exact_stored_value)
{
    mz_redis_t *r = mz_redis_start();
    mz_gw_t *gw = start_gw(r, "A", NULL);
    char *alice = mz_token(gw, "alice", NULL);
    char *post_key = mz_key_bundle("post", POST1_JCS, "public");
    char *feed_key = mz_key_bundle("feed", "{}", "public");

    mz_resp_t *miss = mz_ctx_get(gw, POST1, NULL, "MISS");
    mz_resp_t *hit = mz_ctx_get(gw, POST1, NULL, "HIT");
    cr_assert_str_eq(hit->body, miss->body, "HIT body differs from the MISS body");
    expect_stored(r, post_key, 0, 0, miss);
    long long ttl = rttl(r, post_key);
    cr_assert(ttl > 0 && ttl <= 60, "TTL of %s is %lld, expected 1..60 (the post context's ttl)", post_key, ttl);

    mz_resp_t *feed = mz_ctx_get(gw, FEED, NULL, "MISS");
    mz_ctx_get(gw, FEED, NULL, "HIT");
    expect_stored(r, feed_key, 0, 0, feed);
    ttl = rttl(r, feed_key);
    cr_assert(ttl > 0 && ttl <= 30, "TTL of %s is %lld, expected 1..30 (the feed context's ttl)", feed_key, ttl);

    /* fanout (ttl 0) writes nothing. */
    mz_ctx_get(gw, "/api/mizan/ctx/fanout/?ms=1", NULL, "BYPASS");
    mz_ctx_get(gw, "/api/mizan/ctx/fanout/?ms=1", NULL, "BYPASS");
    const char *dbsize[] = {"DBSIZE", NULL};
    mz_expect_json(mz_redis_cmd(r, dbsize), "2");
    /* Nor does a bundle with errors. */
    mz_ctx_get(gw, "/api/mizan/ctx/post/?post_id=999", NULL, "BYPASS");
    mz_ctx_get(gw, "/api/mizan/ctx/post/?post_id=999", NULL, "BYPASS");
    cr_assert_null(rget(r, mz_key_bundle("post", "{\"post_id\":999}", "public")));
    mz_expect_json(mz_redis_cmd(r, dbsize), "2");

    /* After update_post: scoped revision 1, feed revision 1; the values stored next carry them. */
    mz_mutate(gw, "update_post", "{\"post_id\":1,\"title\":\"stored anew\"}", alice, POST_FEED_TARGETS);
    mz_resp_t *again = mz_ctx_get(gw, POST1, NULL, "MISS");
    cr_assert_str_eq(mz_bundle_title(again), "stored anew");
    expect_stored(r, post_key, 0, 1, again);
    cr_assert_str_eq(mz_ctx_get(gw, POST1, NULL, "HIT")->body, again->body);
    mz_resp_t *feed2 = mz_ctx_get(gw, FEED, NULL, "MISS");
    expect_stored(r, feed_key, 1, 0, feed2);
    mz_ctx_get(gw, FEED, NULL, "HIT");
    mz_gw_stop_ok(gw);
}

Test(redis, every_mutation_bumps_the_right_revisions)
{
    mz_redis_t *r = mz_redis_start();
    mz_gw_t *gw = start_gw(r, "A", NULL);
    char *alice = mz_token(gw, "alice", NULL);
    char *staff = mz_token(gw, "sam", "--staff", NULL);
    char *publisher = mz_token(gw, "pat", "--perm", "blog.publish_post", NULL);
    char *feed = mz_key_ctx_rev("feed"), *drafts = mz_key_ctx_rev("drafts"), *postctx = mz_key_ctx_rev("post");
    char *p1 = mz_key_scoped_rev("post", "{\"post_id\":1}");
    char *p2 = mz_key_scoped_rev("post", "{\"post_id\":2}");
    char *p3 = mz_key_scoped_rev("post", "{\"post_id\":3}");

    /* create_post: feed, drafts and post, whole contexts (no params to scope by); no expiry. */
    json_t *created = mz_mutate(gw, "create_post", "{\"title\":\"n\",\"body\":\"b\"}", alice,
                             "[{\"context\":\"feed\"},{\"context\":\"drafts\"},{\"context\":\"post\"}]");
    mz_expect_json(json_object_get(created, "id"), "4");
    expect_rev(r, "feed revision", feed, "1");
    expect_rev(r, "drafts revision", drafts, "1");
    expect_rev(r, "post revision", postctx, "1");
    cr_assert_eq(rttl(r, postctx), -1, "a context revision must not expire");
    cr_assert_eq(rttl(r, feed), -1, "a context revision must not expire");
    cr_assert_eq(rttl(r, drafts), -1, "a context revision must not expire");

    /* update_post on a published post: scoped post revision + feed. */
    mz_mutate(gw, "update_post", "{\"post_id\":1,\"title\":\"u\"}", alice, POST_FEED_TARGETS);
    expect_rev(r, "post 1 revision", p1, "1");
    expect_scoped_ttl(r, p1, 60);
    expect_rev(r, "feed revision", feed, "2");
    expect_rev(r, "drafts revision", drafts, "1");

    /* add_comment: the scoped post revision only. */
    mz_mutate(gw, "add_comment", "{\"post_id\":2,\"text\":\"c\"}", alice,
           "[{\"context\":\"post\",\"params\":{\"post_id\":2}}]");
    expect_rev(r, "post 2 revision", p2, "1");
    expect_scoped_ttl(r, p2, 60);
    expect_rev(r, "post 1 revision", p1, "1");
    expect_rev(r, "feed revision", feed, "2");

    /* A draft, then update_post on it: the drafts target is added at run time. */
    mz_mutate(gw, "create_post", "{\"title\":\"d\",\"body\":\"b\",\"published\":false}", alice,
           "[{\"context\":\"feed\"},{\"context\":\"drafts\"},{\"context\":\"post\"}]");
    expect_rev(r, "feed revision", feed, "3");
    expect_rev(r, "drafts revision", drafts, "2");
    mz_mutate(gw, "update_post", "{\"post_id\":5,\"title\":\"d2\"}", alice,
           "[{\"context\":\"post\",\"params\":{\"post_id\":5}},{\"context\":\"feed\"},{\"context\":\"drafts\"}]");
    char *p5 = mz_key_scoped_rev("post", "{\"post_id\":5}");
    expect_rev(r, "post 5 revision", p5, "1");
    expect_scoped_ttl(r, p5, 60);
    expect_rev(r, "feed revision", feed, "4");
    expect_rev(r, "drafts revision", drafts, "3");

    /* publish_post: post, feed, drafts. */
    mz_mutate(gw, "publish_post", "{\"post_id\":5}", publisher,
           "[{\"context\":\"post\",\"params\":{\"post_id\":5}},{\"context\":\"feed\"},{\"context\":\"drafts\"}]");
    expect_rev(r, "post 5 revision", p5, "2");
    expect_scoped_ttl(r, p5, 60);
    expect_rev(r, "feed revision", feed, "5");
    expect_rev(r, "drafts revision", drafts, "4");

    /* delete_post: post, feed, drafts, and the whole post context (the
     * author's other post pages count one post fewer), added at run time. */
    mz_mutate(gw, "delete_post", "{\"post_id\":3}", staff,
           "[{\"context\":\"post\",\"params\":{\"post_id\":3}},{\"context\":\"feed\"},{\"context\":\"drafts\"},"
           "{\"context\":\"post\"}]");
    expect_rev(r, "post revision", postctx, "3");
    expect_rev(r, "post 3 revision", p3, "1");
    expect_scoped_ttl(r, p3, 60);
    expect_rev(r, "feed revision", feed, "6");
    expect_rev(r, "drafts revision", drafts, "5");

    /* No blog mutation invalidates me or fanout. */
    expect_rev(r, "me context revision", mz_key_ctx_rev("me"), NULL);
    expect_rev(r, "post 4 revision", mz_key_scoped_rev("post", "{\"post_id\":4}"), NULL);

    /* A refused mutation bumps nothing. */
    mz_expect_error(mz_call(gw, "update_post", "{\"post_id\":2,\"title\":\"x\"}", publisher), 403, "FORBIDDEN");
    expect_rev(r, "post 2 revision", p2, "1");
    expect_rev(r, "feed revision", feed, "6");
    mz_gw_stop_ok(gw);
}

Test(redis, events_on_the_redis_channel)
{
    mz_redis_t *r = mz_redis_start();
    mz_gw_t *gw = start_gw(r, "instance-A", NULL);
    char *alice = mz_token(gw, "alice", NULL);
    mz_redis_sub_t *sub = mz_redis_subscribe(r, "mizan:events");
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    long long now_ms = (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    mz_mutate(gw, "update_post", "{\"post_id\":1,\"title\":\"e\"}", alice, POST_FEED_TARGETS);
    const char *want[] = {POST1_TARGET, "{\"context\":\"feed\"}"};
    for (int i = 0; i < 2; i++) {
        char *msg = mz_redis_sub_next(sub, 5000);
        cr_assert_not_null(msg, "no message %d on mizan:events within 5 s", i + 1);
        json_t *ev = mz_keep(json_loads(msg, 0, NULL));
        cr_assert(json_is_object(ev), "event is not a JSON object: %s", msg);
        json_t *ts_v = json_object_get(ev, "ts");
        cr_assert(json_is_integer(ts_v) && llabs(json_integer_value(ts_v) - now_ms) < 60000,
                  "ts must be unix ms: %s", msg);
        /* Everything but ts is exact. */
        json_object_del(ev, "ts");
        json_t *expect = mz_json("%s", want[i]);
        json_object_set_new(expect, "type", json_string("invalidate"));
        json_object_set_new(expect, "origin", json_string("instance-A"));
        mz_expect_json(ev, mz_dump(expect));
    }
    cr_assert_null(mz_redis_sub_next(sub, 300), "more than two events for one update_post");
    mz_gw_stop_ok(gw);
}

Test(redis, read_your_writes_one_instance)
{
    mz_redis_t *r = mz_redis_start();
    mz_gw_t *gw = start_gw(r, "A", NULL);
    char *alice = mz_token(gw, "alice", NULL);
    for (int round = 0; round < 20; round++) {
        mz_ctx_get(gw, POST1, NULL, NULL);
        mz_ctx_get(gw, POST1, NULL, "HIT");
        char *title = mz_fmt("single %d", round);
        mz_mutate(gw, "update_post", mz_fmt("{\"post_id\":1,\"title\":\"%s\"}", title), alice, POST_FEED_TARGETS);
        mz_resp_t *after = mz_ctx_get(gw, POST1, NULL, "MISS");
        cr_assert_str_eq(mz_bundle_title(after), title, "round %d: stale bundle right after update_post", round);
    }
    mz_gw_stop_ok(gw);
}

Test(redis, user_and_perms_isolation)
{
    mz_redis_t *r = mz_redis_start();
    mz_gw_t *gw = start_gw(r, "A", NULL);
    char *alice = mz_token(gw, "alice", NULL);
    char *bob = mz_token(gw, "bob", NULL);

    mz_resp_t *a = mz_ctx_get(gw, ME, alice, "MISS");
    mz_resp_t *b = mz_ctx_get(gw, ME, bob, "MISS");
    mz_expect_json(json_object_get(json_object_get(a->json, "data"), "whoami"),
                   "{\"sub\":\"alice\",\"staff\":false,\"superuser\":false,\"perms\":[]}");
    mz_expect_json(json_object_get(json_object_get(b->json, "data"), "whoami"),
                   "{\"sub\":\"bob\",\"staff\":false,\"superuser\":false,\"perms\":[]}");
    cr_assert_str_eq(mz_ctx_get(gw, ME, alice, "HIT")->body, a->body);
    cr_assert_str_eq(mz_ctx_get(gw, ME, bob, "HIT")->body, b->body);
    expect_stored(r, mz_key_bundle("me", "{}", mz_key_user_scope("alice", false, false, NULL)), 0, 0, a);
    expect_stored(r, mz_key_bundle("me", "{}", mz_key_user_scope("bob", false, false, NULL)), 0, 0, b);

    char *carol = mz_token(gw, "carol", "--perm", "blog.view_drafts", NULL);
    char *dave = mz_token(gw, "dave", "--perm", "blog.view_drafts", NULL);
    char *erin = mz_token(gw, "erin", "--perm", "blog.view_drafts", "--perm", "blog.publish_post", NULL);
    char *frank = mz_token(gw, "frank", "--staff", "--perm", "blog.view_drafts", NULL);
    mz_resp_t *c = mz_ctx_get(gw, DRAFTS, carol, "MISS");
    cr_assert_str_eq(mz_ctx_get(gw, DRAFTS, dave, "HIT")->body, c->body);
    mz_resp_t *e = mz_ctx_get(gw, DRAFTS, erin, "MISS");
    mz_ctx_get(gw, DRAFTS, erin, "HIT");
    mz_resp_t *f = mz_ctx_get(gw, DRAFTS, frank, "MISS");
    const char *view[] = {"blog.view_drafts", NULL};
    const char *view_pub[] = {"blog.view_drafts", "blog.publish_post", NULL};
    expect_stored(r, mz_key_bundle("drafts", "{}", mz_fmt("perms:%s", mz_key_perm(false, false, view))), 0, 0, c);
    expect_stored(r, mz_key_bundle("drafts", "{}", mz_fmt("perms:%s", mz_key_perm(false, false, view_pub))), 0, 0,
                  e);
    expect_stored(r, mz_key_bundle("drafts", "{}", mz_fmt("perms:%s", mz_key_perm(true, false, view))), 0, 0, f);
    const char *dbsize[] = {"DBSIZE", NULL};
    mz_expect_json(mz_redis_cmd(r, dbsize), "5");
    mz_gw_stop_ok(gw);
}

/* ------------------------------------------------------------------------
 * Two instances
 * ---------------------------------------------------------------------- */

Test(redis, two_instances_read_your_writes_and_events)
{
    mz_redis_t *r = mz_redis_start();
    char *dir = mz_tmpdir();
    mz_gw_t *a = start_gw(r, "A", dir);
    mz_gw_t *b = start_gw(r, "B", dir);
    cr_assert_str_eq(json_string_value(json_object_get(
                         json_object_get(json_array_get(json_object_get(a->config, "modules"), 0), "config"), "db")),
                     json_string_value(json_object_get(
                         json_object_get(json_array_get(json_object_get(b->config, "modules"), 0), "config"), "db")),
                     "both instances must use one SQLite file");
    char *alice = mz_token(a, "alice", NULL);
    mz_sse_t *sse = mz_sse_open(b, "contexts=post", NULL);

    enum { ROUNDS = 50 };
    long tag = (long)time(NULL);
    for (int round = 0; round < ROUNDS; round++) {
        /* Warm B: its bundle is in Redis and it serves it. */
        mz_ctx_get(b, POST1, NULL, NULL);
        mz_ctx_get(b, POST1, NULL, "HIT");
        mz_ctx_get(b, FEED, NULL, NULL);
        mz_ctx_get(b, FEED, NULL, "HIT");
        char *title = mz_fmt("round %d of %ld", round, tag);
        mz_mutate(a, "update_post", mz_fmt("{\"post_id\":1,\"title\":\"%s\"}", title), alice, POST_FEED_TARGETS);
        mz_resp_t *post = mz_ctx_get(b, POST1, NULL, NULL);
        cr_assert_str_eq(mz_bundle_title(post), title,
                         "round %d: instance B served a stale post bundle (X-Mizan-Cache %s) after A acknowledged "
                         "update_post",
                         round, mz_header(post, "X-Mizan-Cache"));
        cr_assert_str_eq(mz_header(post, "X-Mizan-Cache"), "MISS", "round %d", round);
        mz_resp_t *feed = mz_ctx_get(b, FEED, NULL, "MISS");
        cr_assert_not_null(strstr(feed->body, mz_fmt("\"title\":\"%s\"", title)),
                           "round %d: B's feed lacks the new title: %s", round, feed->body);
        /* And A agrees. */
        cr_assert_str_eq(mz_bundle_title(mz_ctx_get(a, POST1, NULL, "HIT")), title, "round %d", round);
    }

    /* B's stream got every event A published, and only post events. */
    for (int i = 0; i < ROUNDS; i++) {
        mz_sse_frame_t *f = NULL;
        char err[256] = "";
        int rc = mz_sse_next(sse, 5000, &f, err, sizeof(err));
        cr_assert_eq(rc, 1, "B's stream: only %d of %d events from A (%s)", i, ROUNDS, rc == 0 ? "timed out" : err);
        if (f->event == NULL) {
            i--; /* the connected comment or a heartbeat */
            continue;
        }
        cr_assert_str_eq(f->raw, "event: invalidate\ndata: " POST1_TARGET, "frame %d on B", i);
    }
    mz_sse_expect_no_context(sse, "post", 300);
    mz_gw_stop_ok(b);
    mz_gw_stop_ok(a);
}

/* ------------------------------------------------------------------------
 * Redis outage
 * ---------------------------------------------------------------------- */

Test(redis, outage_bypass_then_replay_on_restart)
{
    mz_redis_t *r = mz_redis_start();
    mz_gw_t *gw = start_gw(r, "A", NULL);
    char *alice = mz_token(gw, "alice", NULL);
    char *viewer = mz_token(gw, "carol", "--perm", "blog.view_drafts", NULL);
    mz_ctx_get(gw, POST1, NULL, "MISS");
    mz_ctx_get(gw, POST1, NULL, "HIT");
    mz_sse_t *sse = mz_sse_open(gw, "contexts=post,feed", NULL);

    /* Crash Redis. */
    mz_redis_kill(r);
    double waited;
    mz_resp_t *nr = mz_wait_status(gw, "/readyz", 503, 5000, &waited);
    mz_expect_error(nr, 503, "UNAVAILABLE");
    cr_log_info("readyz went 503 %.0f ms after the crash", waited);
    mz_expect_status(mz_get(gw, "/healthz", NULL), 200);

    /* Contexts still answer, uncached. */
    cr_assert_str_eq(mz_bundle_title(mz_ctx_get(gw, POST1, NULL, "BYPASS")), "Welcome to the Mizan blog");
    mz_ctx_get(gw, POST1, NULL, "BYPASS");
    mz_ctx_get(gw, FEED, NULL, "BYPASS");
    mz_ctx_get(gw, ME, alice, "BYPASS");
    mz_ctx_get(gw, DRAFTS, viewer, "BYPASS");
    mz_ctx_get(gw, "/api/mizan/ctx/fanout/?ms=1", NULL, "BYPASS");

    /* Mutations still succeed, with their invalidate lists. */
    mz_mutate(gw, "update_post", "{\"post_id\":1,\"title\":\"during outage 1\"}", alice, POST_FEED_TARGETS);
    mz_mutate(gw, "update_post", "{\"post_id\":1,\"title\":\"during outage 2\"}", alice, POST_FEED_TARGETS);
    cr_assert_str_eq(mz_bundle_title(mz_ctx_get(gw, POST1, NULL, "BYPASS")), "during outage 2");
    cr_assert_eq(mz_metric(gw, "mizan_redis_replay_queued"), 4.0, "4 invalidations must wait for Redis");
    cr_assert_eq(mz_metric(gw, "mizan_redis_up"), 0.0);
    /* Long enough for the reconnection backoff to grow past its first steps. */
    mz_sleep_ms(3000);
    mz_expect_status(mz_get(gw, "/readyz", NULL), 503);
    mz_ctx_get(gw, POST1, NULL, "BYPASS");

    /* Redis comes back empty on the same port. */
    mz_redis_restart(r);
    double back_at = mz_now_ms();
    mz_wait_status(gw, "/readyz", 200, 10000, &waited);
    cr_log_info("readyz back to 200 %.0f ms after the restart", waited);

    /* The queued invalidations were replayed: INCR twice each, scoped TTL set. */
    char *p1 = mz_key_scoped_rev("post", POST1_JCS);
    expect_rev(r, "replayed post 1 revision", p1, "2");
    expect_scoped_ttl(r, p1, 60);
    expect_rev(r, "replayed feed revision", mz_key_ctx_rev("feed"), "2");
    cr_assert_eq(mz_metric(gw, "mizan_redis_replay_queued"), 0.0);

    /*
     * Cached again. Each I/O loop has its own Redis connection, reconnecting
     * on its own backoff, so poll until 20 requests in a row (on fresh
     * connections, spread over the loops) are served through the cache.
     */
    mz_resp_t *first = NULL;
    int streak = 0, bypass_after_ready = 0;
    double ready_at = mz_now_ms();
    while (streak < 20) {
        cr_assert(mz_now_ms() - back_at < 10000,
                  "contexts still BYPASS 10 s after Redis came back (%d BYPASS after /readyz was 200)",
                  bypass_after_ready);
        mz_resp_t *x = mz_ctx_get(gw, POST1, NULL, NULL);
        cr_assert_str_eq(mz_bundle_title(x), "during outage 2");
        if (strcmp(mz_header(x, "X-Mizan-Cache"), "BYPASS") == 0) {
            bypass_after_ready++;
            streak = 0;
            mz_sleep_ms(20);
            continue;
        }
        if (first == NULL) {
            cr_assert_str_eq(mz_header(x, "X-Mizan-Cache"), "MISS", "nothing was cached since the restart");
            first = x;
            expect_stored(r, mz_key_bundle("post", POST1_JCS, "public"), 0, 2, first);
        } else {
            cr_assert_str_eq(x->body, first->body);
        }
        streak++;
    }
    cr_log_info("%d BYPASS answers in the %.0f ms after /readyz turned 200", bypass_after_ready,
                mz_now_ms() - ready_at);
    mz_ctx_get(gw, POST1, NULL, "HIT");

    /* Events published while the subscription was down (the replay may go
     * out before this instance's subscription is back) can be missed, so
     * on its return the stream is told every context may be stale (in
     * context name order: feed before post). */
    mz_sse_expect(sse, "invalidate", "{\"context\":\"feed\"}", 5000);
    mz_sse_expect(sse, "invalidate", "{\"context\":\"post\"}", 5000);
    cr_log_info("replayed events arrived %.0f ms after the restart", mz_now_ms() - back_at);
    mz_gw_stop_ok(gw);
}
