/*
 * test_blog.c - end-to-end tests of the blog example module through HTTP
 * (BLOG_EXAMPLE.md): every function with its auth requirement, the exact
 * `invalidate` list of every mutation, the contexts and their bundles,
 * context params coercion and validation, tokens (bearer, cookie, bad
 * signatures, expiry, key ids), read-your-writes, the X-Mizan-Cache outcome
 * of each context fetch, and the fan-out latency that shows a context's
 * functions run concurrently. (Cache scoping, coalescing and the event
 * stream have their own suite, test_cache.c.)
 *
 * Every test starts its own gateway with a fresh blog.db (posts 1..3 by
 * alice, post 1 with two comments, post 2 with one).
 */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

TestSuite(blog, .init = mz_setup, .fini = mz_teardown, .timeout = 180);

/* ------------------------------------------------------------------------
 * Helpers
 * ---------------------------------------------------------------------- */

static json_t *query(const mz_gw_t *gw, const char *fn, const char *args, const char *token)
{
    return mz_expect_result(mz_call(gw, fn, args, token));
}

/* Runs a mutation, checks its invalidate list exactly, returns the result. */
static json_t *mutate(const mz_gw_t *gw, const char *fn, const char *args, const char *token,
                      const char *want_invalidate)
{
    mz_resp_t *r = mz_call(gw, fn, args, token);
    json_t *result = mz_expect_mutation(r);
    mz_expect_json(json_object_get(r->json, "invalidate"), want_invalidate);
    return result;
}

/* A post is exactly {id, title, body, author, published}. */
static void expect_post(const json_t *p)
{
    cr_assert(json_is_object(p) && json_object_size(p) == 5 &&
                  json_is_integer(json_object_get(p, "id")) &&
                  json_is_string(json_object_get(p, "title")) &&
                  json_is_string(json_object_get(p, "body")) &&
                  json_is_string(json_object_get(p, "author")) &&
                  json_is_boolean(json_object_get(p, "published")),
              "not a post {id, title, body, author, published}: %s", mz_dump(p));
}

/* A comment is exactly {id, post_id, author, text}. */
static void expect_comment(const json_t *c)
{
    cr_assert(json_is_object(c) && json_object_size(c) == 4 &&
                  json_is_integer(json_object_get(c, "id")) &&
                  json_is_integer(json_object_get(c, "post_id")) &&
                  json_is_string(json_object_get(c, "author")) &&
                  json_is_string(json_object_get(c, "text")),
              "not a comment {id, post_id, author, text}: %s", mz_dump(c));
}

static json_int_t int_member(const json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    cr_assert(json_is_integer(v), "%s is not an integer in %s", key, mz_dump(o));
    return json_integer_value(v);
}

static const char *str_member(const json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    cr_assert(json_is_string(v), "%s is not a string in %s", key, mz_dump(o));
    return json_string_value(v);
}

/* True when a list of posts holds one with that id. */
static bool has_post(const json_t *list, json_int_t id)
{
    size_t i;
    json_t *p;
    json_array_foreach((json_t *)list, i, p) {
        if (json_integer_value(json_object_get(p, "id")) == id)
            return true;
    }
    return false;
}

/*
 * X-Mizan-Cache (PROTOCOL.md §5): MISS when the bundle was computed and
 * stored, HIT when served from the cache, BYPASS when not cacheable (TTL 0,
 * a bundle with errors, cache unreachable).
 */
static void expect_cache(const mz_resp_t *r, const char *want)
{
    const char *v = mz_header(r, "X-Mizan-Cache");
    cr_assert(v != NULL && strcmp(v, want) == 0, "expected X-Mizan-Cache: %s:\n%s", want,
              mz_describe(r));
}

/* GET a context: 200, standard headers, the cache outcome, exactly
 * {context, params, data, errors}. Returns the body (borrowed). */
static json_t *ctx_ok(const mz_gw_t *gw, const char *path, const char *token, const char *name,
                      const char *cache)
{
    mz_resp_t *r = mz_get(gw, path, token);
    mz_expect_status(r, 200);
    mz_expect_std_headers(r);
    expect_cache(r, cache);
    json_t *b = r->json;
    cr_assert(json_is_object(b) && json_object_size(b) == 4 &&
                  json_is_string(json_object_get(b, "context")) &&
                  json_is_object(json_object_get(b, "params")) &&
                  json_is_object(json_object_get(b, "data")) &&
                  json_is_object(json_object_get(b, "errors")),
              "GET %s: not a bundle {context, params, data, errors}:\n%s", path, mz_describe(r));
    cr_assert_str_eq(str_member(b, "context"), name, "GET %s:\n%s", path, mz_describe(r));
    return b;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a;
    double y = *(const double *)b;
    return (x > y) - (x < y);
}

/* ------------------------------------------------------------------------
 * Seeded data and simple queries
 * ---------------------------------------------------------------------- */

Test(blog, seeded_posts_comments_and_authors)
{
    mz_gw_t *gw = mz_gw_start(NULL);
    for (int id = 1; id <= 3; id++) {
        json_t *p = query(gw, "get_post", mz_fmt("{\"post_id\": %d}", id), NULL);
        expect_post(p);
        cr_assert_eq(int_member(p, "id"), id);
        cr_assert_str_eq(str_member(p, "author"), "alice");
    }
    mz_expect_error(mz_call(gw, "get_post", "{\"post_id\": 4}", NULL), 404, "NOT_FOUND");
    mz_expect_error(mz_call(gw, "get_post", "{\"post_id\": 999999}", NULL), 404, "NOT_FOUND");

    json_t *c1 = query(gw, "list_comments", "{\"post_id\": 1}", NULL);
    cr_assert(json_is_array(c1) && json_array_size(c1) == 2, "%s", mz_dump(c1));
    for (size_t i = 0; i < 2; i++) {
        expect_comment(json_array_get(c1, i));
        cr_assert_eq(int_member(json_array_get(c1, i), "post_id"), 1);
    }
    cr_assert(int_member(json_array_get(c1, 0), "id") < int_member(json_array_get(c1, 1), "id"),
              "comments not oldest first: %s", mz_dump(c1));
    json_t *c2 = query(gw, "list_comments", "{\"post_id\": 2}", NULL);
    cr_assert(json_is_array(c2) && json_array_size(c2) == 1, "%s", mz_dump(c2));
    mz_expect_json(query(gw, "list_comments", "{\"post_id\": 3}", NULL), "[]");

    mz_expect_json(query(gw, "get_author", "{\"post_id\": 1}", NULL),
                   "{\"name\": \"alice\", \"posts\": 3}");

    json_t *d = mz_expect_error(mz_call(gw, "get_post", "{\"post_id\": \"1\"}", NULL), 422,
                                "VALIDATION_FAILED");
    mz_expect_violation(d, "[\"args\", \"post_id\"]", "type");
    d = mz_expect_error(mz_call(gw, "get_post", "{}", NULL), 422, "VALIDATION_FAILED");
    mz_expect_violation(d, "[\"args\", \"post_id\"]", "missing");
    d = mz_expect_error(mz_call(gw, "list_comments", "{\"post_id\": -1}", NULL), 422,
                        "VALIDATION_FAILED");
    mz_expect_violation(d, "[\"args\", \"post_id\"]", "minimum");
    mz_gw_stop_ok(gw);
}

Test(blog, list_posts_newest_first_with_limit)
{
    mz_gw_t *gw = mz_gw_start(NULL);
    char *tok = mz_token(gw, "writer", NULL);
    json_t *all = query(gw, "list_posts", NULL, NULL);
    cr_assert(json_is_array(all) && json_array_size(all) >= 1, "%s", mz_dump(all));
    for (size_t i = 0; i < json_array_size(all); i++) {
        expect_post(json_array_get(all, i));
        if (i > 0)
            cr_assert(int_member(json_array_get(all, i - 1), "id") >
                          int_member(json_array_get(all, i), "id"),
                      "list_posts not newest first: %s", mz_dump(all));
    }
    json_t *one = query(gw, "list_posts", "{\"limit\": 1}", NULL);
    cr_assert_eq(json_array_size(one), 1, "%s", mz_dump(one));
    cr_assert(json_equal(json_array_get(one, 0), json_array_get(all, 0)));

    json_t *d = mz_expect_error(mz_call(gw, "list_posts", "{\"limit\": 0}", NULL), 422,
                                "VALIDATION_FAILED");
    mz_expect_violation(d, "[\"args\", \"limit\"]", "minimum");
    d = mz_expect_error(mz_call(gw, "list_posts", "{\"limit\": 101}", NULL), 422,
                        "VALIDATION_FAILED");
    mz_expect_violation(d, "[\"args\", \"limit\"]", "maximum");

    /* 25 new published posts: the default limit is 20, newest first. */
    json_int_t last = 0;
    for (int i = 0; i < 25; i++) {
        json_t *p = mutate(gw, "create_post",
                           mz_fmt("{\"title\": \"post %d\", \"body\": \"b\"}", i), tok,
                           "[{\"context\": \"feed\"}, {\"context\": \"drafts\"}, {\"context\": \"post\"}]");
        last = int_member(p, "id");
    }
    json_t *page = query(gw, "list_posts", NULL, NULL);
    cr_assert_eq(json_array_size(page), 20, "default limit should be 20: %s", mz_dump(page));
    cr_assert_eq(int_member(json_array_get(page, 0), "id"), last, "newest first: %s",
                 mz_dump(page));
    json_t *big = query(gw, "list_posts", "{\"limit\": 100}", NULL);
    cr_assert(json_array_size(big) >= 25, "%s", mz_dump(big));
    mz_gw_stop_ok(gw);
}

Test(blog, sleep_and_slow_functions)
{
    mz_gw_t *gw = mz_gw_start(NULL);
    mz_resp_t *r = mz_call(gw, "sleep", "{\"ms\": 120}", NULL);
    mz_expect_json(mz_expect_result(r), "{\"slept_ms\": 120}");
    cr_assert(r->elapsed_ms >= 115, "sleep 120 answered after %.1f ms", r->elapsed_ms);
    mz_expect_json(query(gw, "sleep", "{\"ms\": 0}", NULL), "{\"slept_ms\": 0}");
    const char *names[] = {"slow_a", "slow_b", "slow_c", "slow_d"};
    for (size_t i = 0; i < 4; i++)
        mz_expect_json(query(gw, names[i], "{\"ms\": 10}", NULL),
                       mz_fmt("{\"fn\": \"%s\", \"slept_ms\": 10}", names[i]));
    json_t *d = mz_expect_error(mz_call(gw, "sleep", "{\"ms\": -1}", NULL), 422,
                                "VALIDATION_FAILED");
    mz_expect_violation(d, "[\"args\", \"ms\"]", "minimum");
    d = mz_expect_error(mz_call(gw, "slow_c", "{}", NULL), 422, "VALIDATION_FAILED");
    mz_expect_violation(d, "[\"args\", \"ms\"]", "missing");
    mz_gw_stop_ok(gw);
}

Test(blog, add_overflow_is_bad_request)
{
    mz_gw_t *gw = mz_gw_start(NULL);
    mz_expect_error(mz_call(gw, "add", "{\"a\": 9223372036854775807, \"b\": 1}", NULL), 400,
                    "BAD_REQUEST");
    mz_expect_error(mz_call(gw, "add", "{\"a\": -9223372036854775807, \"b\": -2}", NULL), 400,
                    "BAD_REQUEST");
    mz_expect_json(query(gw, "add", "{\"a\": -9223372036854775807, \"b\": -1}", NULL),
                   "-9223372036854775808");
    json_t *d = mz_expect_error(mz_call(gw, "add", "{\"a\": 1.5, \"b\": 1}", NULL), 422,
                                "VALIDATION_FAILED");
    mz_expect_violation(d, "[\"args\", \"a\"]", "type");
    mz_gw_stop_ok(gw);
}

/* ------------------------------------------------------------------------
 * Tokens and auth
 * ---------------------------------------------------------------------- */

Test(blog, whoami_and_token_transport)
{
    mz_gw_t *gw = mz_gw_start(NULL);
    mz_expect_error(mz_call(gw, "whoami", NULL, NULL), 401, "UNAUTHORIZED");

    char *plain = mz_token(gw, "bob", NULL);
    mz_expect_json(query(gw, "whoami", NULL, plain),
                   "{\"sub\": \"bob\", \"staff\": false, \"superuser\": false, \"perms\": []}");
    char *rich = mz_token(gw, "carol", "--staff", "--perm", "blog.view_drafts", "--perm",
                          "blog.publish_post", NULL);
    json_t *who = query(gw, "whoami", NULL, rich);
    cr_assert_str_eq(str_member(who, "sub"), "carol");
    cr_assert(json_is_true(json_object_get(who, "staff")), "%s", mz_dump(who));
    cr_assert(json_is_false(json_object_get(who, "superuser")), "%s", mz_dump(who));
    json_t *perms = json_object_get(who, "perms");
    cr_assert(json_is_array(perms) && json_array_size(perms) == 2, "%s", mz_dump(who));
    bool drafts = false, publish = false;
    for (size_t i = 0; i < 2; i++) {
        const char *p = json_string_value(json_array_get(perms, i));
        drafts = drafts || (p && strcmp(p, "blog.view_drafts") == 0);
        publish = publish || (p && strcmp(p, "blog.publish_post") == 0);
    }
    cr_assert(drafts && publish, "%s", mz_dump(who));
    char *su = mz_token(gw, "root", "--superuser", NULL);
    json_t *rw = query(gw, "whoami", NULL, su);
    cr_assert(json_is_true(json_object_get(rw, "superuser")), "%s", mz_dump(rw));
    cr_assert_eq(json_object_size(rw), 4, "%s", mz_dump(rw));

    /* The token in the default cookie, alone or among others. */
    const char *cookie1[] = {mz_fmt("Cookie: mwt=%s", plain), NULL};
    mz_req_t req = mz_call_req("whoami", NULL, NULL);
    req.headers = cookie1;
    cr_assert_str_eq(str_member(mz_expect_result(mz_http(gw, &req)), "sub"), "bob");
    const char *cookie2[] = {mz_fmt("Cookie: theme=dark; mwt=%s; lang=en", plain), NULL};
    req.headers = cookie2;
    cr_assert_str_eq(str_member(mz_expect_result(mz_http(gw, &req)), "sub"), "bob");
    const char *cookie3[] = {mz_fmt("Cookie: other=%s", plain), NULL};
    req.headers = cookie3;
    mz_expect_error(mz_http(gw, &req), 401, "UNAUTHORIZED");
    mz_gw_stop_ok(gw);
}

Test(blog, bad_tokens_are_401_on_any_endpoint)
{
    mz_gw_t *gw = mz_gw_start(NULL);
    char *good = mz_token(gw, "bob", NULL);
    /* Flip the last signature character. */
    char *tampered = mz_fmt("%s", good);
    size_t n = strlen(tampered);
    tampered[n - 1] = tampered[n - 1] == 'A' ? 'B' : 'A';
    /* Signed with another key. */
    json_t *other = mz_keep(mz_config_defaults(gw->dir));
    mz_json_merge(other, mz_json("{\"token\": {\"secret\": \"a-completely-different-secret-0123456789\"}}"));
    char *foreign = mz_token_cfg(mz_write_config(gw->dir, "other.json", other), "bob", NULL);
    /* A token whose header says alg none. */
    const char *none = "eyJhbGciOiJub25lIiwidHlwIjoiTVdUIn0."
                       "eyJzdWIiOiJib2IiLCJleHAiOjQxMDI0NDQ4MDB9.";
    const char *bad[] = {"garbage", "a.b.c", tampered, foreign, none};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        mz_expect_error(mz_call(gw, "whoami", NULL, bad[i]), 401, "UNAUTHORIZED");
        mz_expect_error(mz_call(gw, "ping", NULL, bad[i]), 401, "UNAUTHORIZED");
        mz_expect_error(mz_get(gw, "/api/mizan/ctx/feed/", bad[i]), 401, "UNAUTHORIZED");
    }
    mz_expect_result(mz_call(gw, "ping", NULL, good));
    mz_gw_stop_ok(gw);
}

Test(blog, expired_token_is_401)
{
    mz_gw_t *gw = mz_gw_start(NULL);
    char *brief = mz_token(gw, "bob", "--ttl", "1", NULL);
    mz_sleep_ms(2500);
    mz_expect_error(mz_call(gw, "whoami", NULL, brief), 401, "UNAUTHORIZED");
    mz_expect_error(mz_call(gw, "ping", NULL, brief), 401, "UNAUTHORIZED");
    mz_gw_stop_ok(gw);
}

/* Decodes the base64url (unpadded) first segment of a token into a new arena string. */
static char *token_header(const char *token)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t n = strcspn(token, ".");
    char *out = mz_alloc(n + 1);
    size_t len = 0;
    unsigned acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        const char *p = strchr(alphabet, token[i]);
        cr_assert(p != NULL && token[i] != '\0', "not base64url: %s", token);
        acc = (acc << 6) | (unsigned)(p - alphabet);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[len++] = (char)((acc >> bits) & 0xff);
        }
    }
    return out;
}

Test(blog, token_kid_picks_a_configured_key)
{
    mz_gw_t *gw = mz_gw_start(mz_json(
        "{\"token\": {\"keys\": [{\"kid\": \"2026-11\", "
        "\"secret\": \"rotation-secret-2026-11-0123456789abcdef\"}]}}"));
    char *kid_token = mz_token(gw, "kim", "--kid", "2026-11", NULL);
    json_t *hdr = mz_json("%s", token_header(kid_token));
    cr_assert_str_eq(str_member(hdr, "alg"), "HS256");
    cr_assert_str_eq(str_member(hdr, "kid"), "2026-11", "%s", mz_dump(hdr));
    cr_assert_str_eq(str_member(query(gw, "whoami", NULL, kid_token), "sub"), "kim");
    /* The primary key still works alongside. */
    cr_assert_str_eq(str_member(query(gw, "whoami", NULL, mz_token(gw, "pat", NULL)), "sub"), "pat");
    mz_gw_stop_ok(gw);

    /* A gateway that does not know the kid refuses the token. */
    mz_gw_t *other = mz_gw_start(NULL);
    mz_expect_error(mz_call(other, "whoami", NULL, kid_token), 401, "UNAUTHORIZED");
    mz_gw_stop_ok(other);
}

Test(blog, list_drafts_needs_the_perm)
{
    mz_gw_t *gw = mz_gw_start(NULL);
    char *writer = mz_token(gw, "bob", NULL);
    char *viewer = mz_token(gw, "vera", "--perm", "blog.view_drafts", NULL);
    char *staff = mz_token(gw, "sam", "--staff", NULL);
    char *su = mz_token(gw, "root", "--superuser", NULL);
    mz_expect_error(mz_call(gw, "list_drafts", NULL, NULL), 401, "UNAUTHORIZED");
    mz_expect_error(mz_call(gw, "list_drafts", NULL, writer), 403, "FORBIDDEN");
    mz_expect_error(mz_call(gw, "list_drafts", NULL, staff), 403, "FORBIDDEN");

    json_t *draft = mutate(gw, "create_post",
                           "{\"title\": \"secret draft\", \"body\": \"wip\", \"published\": false}",
                           writer, "[{\"context\": \"feed\"}, {\"context\": \"drafts\"}, {\"context\": \"post\"}]");
    expect_post(draft);
    cr_assert(json_is_false(json_object_get(draft, "published")), "%s", mz_dump(draft));
    json_int_t id = int_member(draft, "id");

    json_t *list = query(gw, "list_drafts", NULL, viewer);
    cr_assert(json_is_array(list) && has_post(list, id), "draft %lld not listed: %s",
              (long long)id, mz_dump(list));
    size_t i;
    json_t *p;
    json_array_foreach(list, i, p) {
        expect_post(p);
        cr_assert(json_is_false(json_object_get(p, "published")), "published post in drafts: %s",
                  mz_dump(list));
    }
    cr_assert(has_post(query(gw, "list_drafts", NULL, su), id));
    mz_gw_stop_ok(gw);
}

Test(blog, site_stats_superuser_only)
{
    mz_gw_t *gw = mz_gw_start(NULL);
    char *su = mz_token(gw, "root", "--superuser", NULL);
    mz_expect_json(query(gw, "site_stats", NULL, su), "{\"posts\": 3, \"comments\": 3}");
    mz_expect_error(mz_call(gw, "site_stats", NULL, NULL), 401, "UNAUTHORIZED");
    mz_expect_error(mz_call(gw, "site_stats", NULL, mz_token(gw, "sam", "--staff", NULL)), 403,
                    "FORBIDDEN");
    mz_expect_error(mz_call(gw, "site_stats", NULL,
                            mz_token(gw, "pat", "--perm", "blog.site_stats", NULL)),
                    403, "FORBIDDEN");
    mutate(gw, "add_comment", "{\"post_id\": 3, \"text\": \"first\"}", su,
           "[{\"context\": \"post\", \"params\": {\"post_id\": 3}}]");
    mz_expect_json(query(gw, "site_stats", NULL, su), "{\"posts\": 3, \"comments\": 4}");
    mz_gw_stop_ok(gw);
}

/* ------------------------------------------------------------------------
 * Mutations
 * ---------------------------------------------------------------------- */

Test(blog, create_post)
{
    mz_gw_t *gw = mz_gw_start(NULL);
    mz_expect_error(mz_call(gw, "create_post", "{\"title\": \"t\", \"body\": \"b\"}", NULL), 401,
                    "UNAUTHORIZED");
    char *bob = mz_token(gw, "bob", NULL);
    json_t *p = mutate(gw, "create_post", "{\"title\": \"Hello\", \"body\": \"World\"}", bob,
                       "[{\"context\": \"feed\"}, {\"context\": \"drafts\"}, {\"context\": \"post\"}]");
    expect_post(p);
    json_int_t id = int_member(p, "id");
    cr_assert_eq(id, 4, "the fourth post should get id 4: %s", mz_dump(p));
    mz_expect_json(p, "{\"id\": 4, \"title\": \"Hello\", \"body\": \"World\", \"author\": \"bob\", "
                      "\"published\": true}");
    /* Visible to the next query. */
    mz_expect_json(query(gw, "get_post", "{\"post_id\": 4}", NULL), mz_dump(p));
    mz_expect_json(json_array_get(query(gw, "list_posts", NULL, NULL), 0), mz_dump(p));
    mz_expect_json(query(gw, "get_author", "{\"post_id\": 4}", NULL),
                   "{\"name\": \"bob\", \"posts\": 1}");

    char *t200 = mz_repeat('x', 200);
    mutate(gw, "create_post", mz_fmt("{\"title\": \"%s\", \"body\": \"\"}", t200), bob,
           "[{\"context\": \"feed\"}, {\"context\": \"drafts\"}, {\"context\": \"post\"}]");
    json_t *d = mz_expect_error(mz_call(gw, "create_post", mz_fmt("{\"title\": \"%sx\", \"body\": \"b\"}", t200), bob),
                                422, "VALIDATION_FAILED");
    mz_expect_violation(d, "[\"args\", \"title\"]", "maxLength");
    d = mz_expect_error(mz_call(gw, "create_post", "{\"title\": \"\", \"body\": \"b\"}", bob), 422,
                        "VALIDATION_FAILED");
    mz_expect_violation(d, "[\"args\", \"title\"]", "minLength");
    d = mz_expect_error(mz_call(gw, "create_post",
                                "{\"title\": \"t\", \"body\": \"b\", \"published\": \"yes\"}", bob),
                        422, "VALIDATION_FAILED");
    mz_expect_violation(d, "[\"args\", \"published\"]", "type");
    mz_gw_stop_ok(gw);
}

Test(blog, update_post_author_staff_superuser)
{
    mz_gw_t *gw = mz_gw_start(NULL);
    char *alice = mz_token(gw, "alice", NULL);
    char *bob = mz_token(gw, "bob", NULL);
    char *staff = mz_token(gw, "sam", "--staff", NULL);
    char *su = mz_token(gw, "root", "--superuser", NULL);
    const char *inv1 = "[{\"context\": \"post\", \"params\": {\"post_id\": 1}}, {\"context\": \"feed\"}]";

    mz_expect_error(mz_call(gw, "update_post", "{\"post_id\": 1, \"title\": \"x\"}", NULL), 401,
                    "UNAUTHORIZED");
    mz_expect_error(mz_call(gw, "update_post", "{\"post_id\": 1, \"title\": \"by bob\"}", bob), 403,
                    "FORBIDDEN");
    mz_expect_error(mz_call(gw, "update_post", "{\"post_id\": 1, \"title\": \"by perm\"}",
                            mz_token(gw, "pat", "--perm", "blog.publish_post", NULL)),
                    403, "FORBIDDEN");
    cr_assert_str_neq(str_member(query(gw, "get_post", "{\"post_id\": 1}", NULL), "title"),
                      "by bob", "a forbidden update was applied");

    json_t *p = mutate(gw, "update_post", "{\"post_id\": 1, \"title\": \"by alice\"}", alice, inv1);
    expect_post(p);
    cr_assert_str_eq(str_member(p, "title"), "by alice");
    cr_assert_str_eq(str_member(p, "author"), "alice");
    p = mutate(gw, "update_post", "{\"post_id\": 1, \"body\": \"staff body\"}", staff, inv1);
    cr_assert_str_eq(str_member(p, "title"), "by alice", "title kept when omitted: %s",
                     mz_dump(p));
    cr_assert_str_eq(str_member(p, "body"), "staff body");
    cr_assert_str_eq(str_member(p, "author"), "alice", "staff edits keep the author");
    p = mutate(gw, "update_post", "{\"post_id\": 1, \"title\": \"by root\"}", su, inv1);
    cr_assert_str_eq(str_member(p, "title"), "by root");

    /* The BLOG_EXAMPLE.md case: post 5, by its author. */
    mutate(gw, "create_post", "{\"title\": \"four\", \"body\": \"4\"}", bob,
           "[{\"context\": \"feed\"}, {\"context\": \"drafts\"}, {\"context\": \"post\"}]");
    json_t *five = mutate(gw, "create_post", "{\"title\": \"five\", \"body\": \"5\"}", bob,
                          "[{\"context\": \"feed\"}, {\"context\": \"drafts\"}, {\"context\": \"post\"}]");
    cr_assert_eq(int_member(five, "id"), 5);
    p = mutate(gw, "update_post", "{\"post_id\": 5, \"title\": \"Hello\"}", bob,
               "[{\"context\": \"post\", \"params\": {\"post_id\": 5}}, {\"context\": \"feed\"}]");
    mz_expect_json(p, "{\"id\": 5, \"title\": \"Hello\", \"body\": \"5\", \"author\": \"bob\", "
                      "\"published\": true}");
    mz_expect_error(mz_call(gw, "update_post", "{\"post_id\": 5, \"title\": \"alice?\"}", alice), 403,
                    "FORBIDDEN");

    mz_expect_error(mz_call(gw, "update_post", "{\"post_id\": 999, \"title\": \"x\"}", staff), 404,
                    "NOT_FOUND");
    json_t *d = mz_expect_error(mz_call(gw, "update_post", "{\"title\": \"x\"}", staff), 422,
                                "VALIDATION_FAILED");
    mz_expect_violation(d, "[\"args\", \"post_id\"]", "missing");
    mz_gw_stop_ok(gw);
}

Test(blog, read_your_writes)
{
    mz_gw_t *gw = mz_gw_start(NULL);
    char *alice = mz_token(gw, "alice", NULL);
    /* Load the post and the feed first, then change the post. */
    ctx_ok(gw, "/api/mizan/ctx/post/?post_id=2", NULL, "post", "MISS");
    ctx_ok(gw, "/api/mizan/ctx/feed/", NULL, "feed", "MISS");
    ctx_ok(gw, "/api/mizan/ctx/post/?post_id=2", NULL, "post", "HIT");
    ctx_ok(gw, "/api/mizan/ctx/feed/", NULL, "feed", "HIT");
    mutate(gw, "update_post", "{\"post_id\": 2, \"title\": \"fresh title\"}", alice,
           "[{\"context\": \"post\", \"params\": {\"post_id\": 2}}, {\"context\": \"feed\"}]");
    cr_assert_str_eq(str_member(query(gw, "get_post", "{\"post_id\": 2}", NULL), "title"),
                     "fresh title");
    json_t *b = ctx_ok(gw, "/api/mizan/ctx/post/?post_id=2", NULL, "post", "MISS");
    cr_assert_str_eq(
        str_member(json_object_get(json_object_get(b, "data"), "get_post"), "title"),
        "fresh title", "%s", mz_dump(b));
    b = ctx_ok(gw, "/api/mizan/ctx/feed/", NULL, "feed", "MISS");
    json_t *feed = json_object_get(json_object_get(b, "data"), "list_posts");
    size_t i;
    json_t *p;
    bool seen = false;
    json_array_foreach(feed, i, p) {
        if (int_member(p, "id") == 2) {
            cr_assert_str_eq(str_member(p, "title"), "fresh title", "%s", mz_dump(feed));
            seen = true;
        }
    }
    cr_assert(seen, "post 2 not in the feed: %s", mz_dump(feed));
    mz_gw_stop_ok(gw);
}

Test(blog, add_comment)
{
    mz_gw_t *gw = mz_gw_start(NULL);
    mz_expect_error(mz_call(gw, "add_comment", "{\"post_id\": 2, \"text\": \"hi\"}", NULL), 401,
                    "UNAUTHORIZED");
    char *bob = mz_token(gw, "bob", NULL);
    json_t *c = mutate(gw, "add_comment", "{\"post_id\": 2, \"text\": \"nice post\"}", bob,
                       "[{\"context\": \"post\", \"params\": {\"post_id\": 2}}]");
    expect_comment(c);
    cr_assert_eq(int_member(c, "post_id"), 2);
    cr_assert_str_eq(str_member(c, "author"), "bob");
    cr_assert_str_eq(str_member(c, "text"), "nice post");
    json_t *list = query(gw, "list_comments", "{\"post_id\": 2}", NULL);
    cr_assert_eq(json_array_size(list), 2, "%s", mz_dump(list));
    mz_expect_json(json_array_get(list, 1), mz_dump(c));

    json_t *d = mz_expect_error(mz_call(gw, "add_comment", "{\"post_id\": 2, \"text\": \"\"}", bob),
                                422, "VALIDATION_FAILED");
    mz_expect_violation(d, "[\"args\", \"text\"]", "minLength");
    char *long_text = mz_repeat('y', 2001);
    d = mz_expect_error(mz_call(gw, "add_comment",
                                mz_fmt("{\"post_id\": 2, \"text\": \"%s\"}", long_text), bob),
                        422, "VALIDATION_FAILED");
    mz_expect_violation(d, "[\"args\", \"text\"]", "maxLength");
    d = mz_expect_error(mz_call(gw, "add_comment", "{\"text\": \"orphan\"}", bob), 422,
                        "VALIDATION_FAILED");
    mz_expect_violation(d, "[\"args\", \"post_id\"]", "missing");
    mz_gw_stop_ok(gw);
}

Test(blog, delete_post_staff_only)
{
    mz_gw_t *gw = mz_gw_start(NULL);
    char *alice = mz_token(gw, "alice", NULL);
    char *staff = mz_token(gw, "sam", "--staff", NULL);
    mz_expect_error(mz_call(gw, "delete_post", "{\"post_id\": 3}", NULL), 401, "UNAUTHORIZED");
    /* Even the author needs staff. */
    mz_expect_error(mz_call(gw, "delete_post", "{\"post_id\": 3}", alice), 403, "FORBIDDEN");
    query(gw, "get_post", "{\"post_id\": 3}", NULL);

    json_t *r = mutate(gw, "delete_post", "{\"post_id\": 3}", staff,
                       "[{\"context\": \"post\", \"params\": {\"post_id\": 3}}, "
                       "{\"context\": \"feed\"}, {\"context\": \"drafts\"}, {\"context\": \"post\"}]");
    mz_expect_json(r, "{\"deleted\": 3}");
    mz_expect_error(mz_call(gw, "get_post", "{\"post_id\": 3}", NULL), 404, "NOT_FOUND");
    cr_assert(!has_post(query(gw, "list_posts", NULL, NULL), 3));
    json_t *b = ctx_ok(gw, "/api/mizan/ctx/post/?post_id=3", NULL, "post", "BYPASS");
    cr_assert_str_eq(str_member(json_object_get(json_object_get(b, "errors"), "get_post"), "code"),
                     "NOT_FOUND", "%s", mz_dump(b));
    mz_gw_stop_ok(gw);
}

Test(blog, publish_post_needs_the_perm)
{
    mz_gw_t *gw = mz_gw_start(NULL);
    char *bob = mz_token(gw, "bob", NULL);
    char *publisher = mz_token(gw, "pub", "--perm", "blog.publish_post", NULL);
    char *viewer = mz_token(gw, "vera", "--perm", "blog.view_drafts", NULL);
    char *su = mz_token(gw, "root", "--superuser", NULL);
    json_int_t id = int_member(
        mutate(gw, "create_post", "{\"title\": \"draft\", \"body\": \"b\", \"published\": false}",
               bob, "[{\"context\": \"feed\"}, {\"context\": \"drafts\"}, {\"context\": \"post\"}]"),
        "id");
    char *args = mz_fmt("{\"post_id\": %lld}", (long long)id);
    mz_expect_error(mz_call(gw, "publish_post", args, NULL), 401, "UNAUTHORIZED");
    mz_expect_error(mz_call(gw, "publish_post", args, bob), 403, "FORBIDDEN");
    mz_expect_error(mz_call(gw, "publish_post", args, mz_token(gw, "sam", "--staff", NULL)), 403,
                    "FORBIDDEN");
    cr_assert(has_post(query(gw, "list_drafts", NULL, viewer), id));

    json_t *p = mutate(gw, "publish_post", args, publisher,
                       mz_fmt("[{\"context\": \"post\", \"params\": {\"post_id\": %lld}}, "
                              "{\"context\": \"feed\"}, {\"context\": \"drafts\"}]",
                              (long long)id));
    expect_post(p);
    cr_assert(json_is_true(json_object_get(p, "published")), "%s", mz_dump(p));
    cr_assert_str_eq(str_member(p, "author"), "bob");
    cr_assert(!has_post(query(gw, "list_drafts", NULL, viewer), id), "published post still a draft");
    cr_assert(has_post(query(gw, "list_posts", NULL, NULL), id));

    json_int_t id2 = int_member(
        mutate(gw, "create_post", "{\"title\": \"d2\", \"body\": \"b\", \"published\": false}", bob,
               "[{\"context\": \"feed\"}, {\"context\": \"drafts\"}, {\"context\": \"post\"}]"),
        "id");
    p = mutate(gw, "publish_post", mz_fmt("{\"post_id\": %lld}", (long long)id2), su,
               mz_fmt("[{\"context\": \"post\", \"params\": {\"post_id\": %lld}}, "
                      "{\"context\": \"feed\"}, {\"context\": \"drafts\"}]",
                      (long long)id2));
    cr_assert(json_is_true(json_object_get(p, "published")));
    mz_gw_stop_ok(gw);
}

Test(blog, queries_carry_no_invalidate)
{
    mz_gw_t *gw = mz_gw_start(NULL);
    char *su = mz_token(gw, "root", "--superuser", NULL);
    struct {
        const char *fn;
        const char *args;
    } queries[] = {
        {"ping", NULL},
        {"add", "{\"a\": 1, \"b\": 2}"},
        {"echo", "{\"value\": {\"invalidate\": []}}"},
        {"sleep", "{\"ms\": 1}"},
        {"slow_a", "{\"ms\": 1}"},
        {"slow_b", "{\"ms\": 1}"},
        {"slow_c", "{\"ms\": 1}"},
        {"slow_d", "{\"ms\": 1}"},
        {"get_post", "{\"post_id\": 1}"},
        {"list_comments", "{\"post_id\": 1}"},
        {"get_author", "{\"post_id\": 1}"},
        {"list_posts", NULL},
        {"whoami", NULL},
        {"list_drafts", NULL},
        {"site_stats", NULL},
    };
    for (size_t i = 0; i < sizeof(queries) / sizeof(queries[0]); i++) {
        /* mz_expect_result insists on a body of exactly {"result": ...}. */
        mz_expect_result(mz_call(gw, queries[i].fn, queries[i].args, su));
    }
    mz_gw_stop_ok(gw);
}

/* ------------------------------------------------------------------------
 * Contexts
 * ---------------------------------------------------------------------- */

Test(blog, ctx_post_bundle)
{
    mz_gw_t *gw = mz_gw_start(NULL);
    json_t *b = ctx_ok(gw, "/api/mizan/ctx/post/?post_id=1", NULL, "post", "MISS");
    mz_expect_json(ctx_ok(gw, "/api/mizan/ctx/post/?post_id=1", NULL, "post", "HIT"), mz_dump(b));
    mz_expect_json(json_object_get(b, "params"), "{\"post_id\": 1}");
    mz_expect_json(json_object_get(b, "errors"), "{}");
    json_t *data = json_object_get(b, "data");
    cr_assert_eq(json_object_size(data), 3, "%s", mz_dump(b));
    mz_expect_json(json_object_get(data, "get_post"),
                   mz_dump(query(gw, "get_post", "{\"post_id\": 1}", NULL)));
    mz_expect_json(json_object_get(data, "list_comments"),
                   mz_dump(query(gw, "list_comments", "{\"post_id\": 1}", NULL)));
    mz_expect_json(json_object_get(data, "get_author"),
                   mz_dump(query(gw, "get_author", "{\"post_id\": 1}", NULL)));
    mz_gw_stop_ok(gw);
}

Test(blog, ctx_post_missing_reports_function_error)
{
    mz_gw_t *gw = mz_gw_start(NULL);
    json_t *b = ctx_ok(gw, "/api/mizan/ctx/post/?post_id=999", NULL, "post", "BYPASS");
    /* A bundle with errors is never cached. */
    ctx_ok(gw, "/api/mizan/ctx/post/?post_id=999", NULL, "post", "BYPASS");
    mz_expect_json(json_object_get(b, "params"), "{\"post_id\": 999}");
    json_t *data = json_object_get(b, "data");
    json_t *err = json_object_get(json_object_get(b, "errors"), "get_post");
    cr_assert(json_object_get(data, "get_post") == NULL, "data has get_post: %s", mz_dump(b));
    cr_assert(json_is_object(err) && json_object_size(err) == 3 &&
                  json_is_string(json_object_get(err, "message")) &&
                  json_object_get(err, "details") != NULL,
              "errors.get_post is not {code, message, details}: %s", mz_dump(b));
    cr_assert_str_eq(str_member(err, "code"), "NOT_FOUND", "%s", mz_dump(b));
    /* Every function is accounted for exactly once. */
    const char *fns[] = {"get_post", "list_comments", "get_author"};
    for (size_t i = 0; i < 3; i++) {
        bool in_data = json_object_get(data, fns[i]) != NULL;
        bool in_errors = json_object_get(json_object_get(b, "errors"), fns[i]) != NULL;
        cr_assert(in_data != in_errors, "%s must be in exactly one of data/errors: %s", fns[i],
                  mz_dump(b));
    }
    mz_gw_stop_ok(gw);
}

Test(blog, ctx_feed_bundle)
{
    mz_gw_t *gw = mz_gw_start(NULL);
    json_t *b = ctx_ok(gw, "/api/mizan/ctx/feed/", NULL, "feed", "MISS");
    mz_expect_json(json_object_get(b, "params"), "{}");
    mz_expect_json(json_object_get(b, "errors"), "{}");
    json_t *data = json_object_get(b, "data");
    cr_assert_eq(json_object_size(data), 1, "%s", mz_dump(b));
    mz_expect_json(json_object_get(data, "list_posts"), mz_dump(query(gw, "list_posts", NULL, NULL)));
    mz_gw_stop_ok(gw);
}

Test(blog, ctx_me_needs_a_user)
{
    mz_gw_t *gw = mz_gw_start(NULL);
    mz_expect_error(mz_get(gw, "/api/mizan/ctx/me/", NULL), 401, "UNAUTHORIZED");
    char *bob = mz_token(gw, "bob", NULL);
    json_t *b = ctx_ok(gw, "/api/mizan/ctx/me/", bob, "me", "MISS");
    mz_expect_json(b, "{\"context\": \"me\", \"params\": {}, \"errors\": {}, \"data\": {\"whoami\": "
                      "{\"sub\": \"bob\", \"staff\": false, \"superuser\": false, \"perms\": []}}}");
    const char *cookie[] = {mz_fmt("Cookie: mwt=%s", bob), NULL};
    mz_req_t req = {.method = "GET", .path = "/api/mizan/ctx/me/", .headers = cookie};
    mz_resp_t *r = mz_http(gw, &req);
    mz_expect_status(r, 200);
    expect_cache(r, "HIT");
    mz_expect_json(r->json, mz_dump(b));
    mz_gw_stop_ok(gw);
}

Test(blog, ctx_drafts_needs_the_perm)
{
    mz_gw_t *gw = mz_gw_start(NULL);
    mz_expect_error(mz_get(gw, "/api/mizan/ctx/drafts/", NULL), 401, "UNAUTHORIZED");
    mz_expect_error(mz_get(gw, "/api/mizan/ctx/drafts/", mz_token(gw, "bob", NULL)), 403,
                    "FORBIDDEN");
    char *viewer = mz_token(gw, "vera", "--perm", "blog.view_drafts", NULL);
    json_t *b = ctx_ok(gw, "/api/mizan/ctx/drafts/", viewer, "drafts", "MISS");
    mz_expect_json(json_object_get(b, "errors"), "{}");
    mz_expect_json(json_object_get(json_object_get(b, "data"), "list_drafts"),
                   mz_dump(query(gw, "list_drafts", NULL, viewer)));
    mz_gw_stop_ok(gw);
}

Test(blog, ctx_fanout_runs_functions_concurrently)
{
    mz_gw_t *gw = mz_gw_start(NULL);
    mz_expect_result(mz_call(gw, "ping", NULL, NULL)); /* warm the workers */
    mz_resp_t *r = mz_get(gw, "/api/mizan/ctx/fanout/?ms=200", NULL);
    mz_expect_status(r, 200);
    mz_expect_std_headers(r);
    expect_cache(r, "BYPASS"); /* TTL 0 */
    mz_expect_json(r->json,
                   "{\"context\": \"fanout\", \"params\": {\"ms\": 200}, \"errors\": {}, \"data\": {"
                   "\"slow_a\": {\"fn\": \"slow_a\", \"slept_ms\": 200},"
                   "\"slow_b\": {\"fn\": \"slow_b\", \"slept_ms\": 200},"
                   "\"slow_c\": {\"fn\": \"slow_c\", \"slept_ms\": 200},"
                   "\"slow_d\": {\"fn\": \"slow_d\", \"slept_ms\": 200}}}");
    cr_assert(r->elapsed_ms >= 195 && r->elapsed_ms < 400,
              "4 x 200 ms functions should run concurrently: took %.1f ms", r->elapsed_ms);
    mz_gw_stop_ok(gw);
}

Test(blog, ctx_fanout_median_latency)
{
    mz_gw_t *gw = mz_gw_start(NULL);
    mz_conn_t *c = mz_connect(gw->port);
    mz_req_t req = {.method = "GET", .path = "/api/mizan/ctx/fanout/?ms=200"};
    for (int i = 0; i < 3; i++)
        mz_expect_status(mz_request(c, &req), 200);
    double ms[20];
    for (int i = 0; i < 20; i++) {
        mz_resp_t *r = mz_request(c, &req);
        mz_expect_status(r, 200);
        mz_expect_json(json_object_get(r->json, "errors"), "{}");
        ms[i] = r->elapsed_ms;
    }
    qsort(ms, 20, sizeof(ms[0]), cmp_double);
    double median = (ms[9] + ms[10]) / 2;
    cr_assert(median < 260, "median of 20 fetches of fanout?ms=200 is %.1f ms (want < 260); "
              "min %.1f max %.1f",
              median, ms[0], ms[19]);
    mz_gw_stop_ok(gw);
}

Test(blog, ctx_params_coercion_and_validation)
{
    mz_gw_t *gw = mz_gw_start(NULL);
    json_t *d = mz_expect_error(mz_get(gw, "/api/mizan/ctx/post/", NULL), 422, "VALIDATION_FAILED");
    mz_expect_violation(d, "[\"params\", \"post_id\"]", "missing");
    d = mz_expect_error(mz_get(gw, "/api/mizan/ctx/post/?post_id=abc", NULL), 422,
                        "VALIDATION_FAILED");
    mz_expect_violation(d, "[\"params\", \"post_id\"]", NULL);
    d = mz_expect_error(mz_get(gw, "/api/mizan/ctx/post/?post_id=1.5", NULL), 422,
                        "VALIDATION_FAILED");
    mz_expect_violation(d, "[\"params\", \"post_id\"]", NULL);
    d = mz_expect_error(mz_get(gw, "/api/mizan/ctx/post/?post_id=", NULL), 422,
                        "VALIDATION_FAILED");
    mz_expect_violation(d, "[\"params\", \"post_id\"]", NULL);
    d = mz_expect_error(mz_get(gw, "/api/mizan/ctx/post/?post_id=1&sort=asc", NULL), 422,
                        "VALIDATION_FAILED");
    mz_expect_violation(d, "[\"params\", \"sort\"]", NULL);
    d = mz_expect_error(mz_get(gw, "/api/mizan/ctx/feed/?page=2", NULL), 422, "VALIDATION_FAILED");
    mz_expect_violation(d, "[\"params\", \"page\"]", NULL);
    d = mz_expect_error(mz_get(gw, "/api/mizan/ctx/fanout/", NULL), 422, "VALIDATION_FAILED");
    mz_expect_violation(d, "[\"params\", \"ms\"]", "missing");
    mz_expect_error(mz_get(gw, "/api/mizan/ctx/post/?post_id=%zz", NULL), 400, "BAD_REQUEST");

    /* "5" is coerced to 5, and the coerced value is echoed. */
    json_t *b = ctx_ok(gw, "/api/mizan/ctx/post/?post_id=2", NULL, "post", "MISS");
    mz_expect_json(json_object_get(b, "params"), "{\"post_id\": 2}");
    mz_gw_stop_ok(gw);
}
