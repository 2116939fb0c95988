/*
 * test_context_plans.c - what a loop remembers of the context requests it
 * read (api/context.c: query text -> params and cache keys) never changes
 * an answer: scopes stay apart under one query text, a mutation still
 * makes the next request with the same text a MISS, texts that share a
 * table slot or give the same params answer for their own params, and an
 * invalid text is refused every time.
 *
 * One I/O thread, so every request lands on the loop that remembered the
 * earlier ones.
 */
#include <criterion/criterion.h>

#include <string.h>

#include "harness.h"

TestSuite(context_plans, .init = mz_setup, .fini = mz_teardown, .timeout = 180);

static mz_gw_t *start_one_loop(void)
{
    return mz_gw_start(mz_json("{\"io_threads\": 1}"));
}

/* GETs path with token; asserts 200 and the X-Mizan-Cache value, returns the body. */
static json_t *ctx_get(mz_gw_t *gw, const char *path, const char *token, const char *cache)
{
    mz_resp_t *r = mz_get(gw, path, token);
    mz_expect_status(r, 200);
    const char *got = mz_header(r, "X-Mizan-Cache");
    cr_assert(got != NULL && strcmp(got, cache) == 0, "%s: expected %s: %s", path, cache, mz_describe(r));
    json_error_t e;
    json_t *body = json_loadb(r->body, r->body_len, 0, &e);
    cr_assert_not_null(body, "%s: %s", path, e.text);
    return mz_keep(body);
}

static const char *post_title(const json_t *bundle)
{
    const char *t = json_string_value(json_object_get(json_object_get(json_object_get(bundle, "data"), "get_post"),
                                                      "title"));
    cr_assert_not_null(t, "no data.get_post.title in %s", mz_dump(bundle));
    return t;
}

Test(context_plans, one_query_text_keeps_users_and_permission_sets_apart)
{
    mz_gw_t *gw = start_one_loop();
    char *alice = mz_token(gw, "alice", NULL);
    char *bob = mz_token(gw, "bob", NULL);
    char *alice_staff = mz_token(gw, "alice", "--staff", NULL);
    const char *subs[][2] = {{alice, "alice"}, {bob, "bob"}, {alice_staff, "alice"}};
    /* Same text, "/ctx/me/", three scopes: each computes its own. */
    for (size_t i = 0; i < 3; i++) {
        json_t *b = ctx_get(gw, "/api/mizan/ctx/me/", subs[i][0], "MISS");
        const char *sub = json_string_value(json_object_get(json_object_get(json_object_get(b, "data"), "whoami"),
                                                            "sub"));
        cr_assert(sub != NULL && strcmp(sub, subs[i][1]) == 0, "%zu: %s", i, mz_dump(b));
    }
    /* And each is then served its own. */
    for (size_t i = 0; i < 3; i++) {
        json_t *b = ctx_get(gw, "/api/mizan/ctx/me/", subs[i][0], "HIT");
        const char *sub = json_string_value(json_object_get(json_object_get(json_object_get(b, "data"), "whoami"),
                                                            "sub"));
        cr_assert(sub != NULL && strcmp(sub, subs[i][1]) == 0, "%zu: %s", i, mz_dump(b));
    }
    /* A permission-scoped context: two permission sets share no bundle. */
    char *one = mz_token(gw, "carol", "--perm", "blog.view_drafts", NULL);
    char *two = mz_token(gw, "dave", "--staff", "--perm", "blog.view_drafts", NULL);
    ctx_get(gw, "/api/mizan/ctx/drafts/", one, "MISS");
    ctx_get(gw, "/api/mizan/ctx/drafts/", two, "MISS");
    ctx_get(gw, "/api/mizan/ctx/drafts/", one, "HIT");
    ctx_get(gw, "/api/mizan/ctx/drafts/", two, "HIT");
    mz_gw_stop_ok(gw);
}

Test(context_plans, a_mutation_still_makes_the_same_text_a_miss)
{
    mz_gw_t *gw = start_one_loop();
    char *alice = mz_token(gw, "alice", NULL);
    const char *path = "/api/mizan/ctx/post/?post_id=2";
    ctx_get(gw, path, NULL, "MISS");
    ctx_get(gw, path, NULL, "HIT");
    for (int round = 0; round < 3; round++) {
        const char *title = mz_fmt("plans round %d", round);
        mz_expect_mutation(mz_call(gw, "update_post", mz_fmt("{\"post_id\": 2, \"title\": \"%s\"}", title), alice));
        cr_assert_str_eq(post_title(ctx_get(gw, path, NULL, "MISS")), title);
        cr_assert_str_eq(post_title(ctx_get(gw, path, NULL, "HIT")), title);
    }
    mz_gw_stop_ok(gw);
}

Test(context_plans, many_texts_each_answer_for_their_own_params)
{
    /* 2,000 posts read twice through one loop: more texts than fit without
     * sharing slots, so entries replace each other; every answer must still
     * be its own post's. */
    char *dir = mz_tmpdir();
    mz_gw_t *gw = mz_gw_start(mz_json("{\"io_threads\": 1, \"modules\": [{\"name\": \"blog\", \"config\": "
                                      "{\"db\": \"%s/blog.db\", \"seed_posts\": 2000}}]}",
                                      dir));
    const int n = 2000;
    for (int pass = 0; pass < 2; pass++) {
        for (int id = 1; id <= n; id++) {
            mz_resp_t *r = mz_get(gw, mz_fmt("/api/mizan/ctx/post/?post_id=%d", id), NULL);
            mz_expect_status(r, 200);
            cr_assert_str_eq(mz_header(r, "X-Mizan-Cache"), pass == 0 ? "MISS" : "HIT", "post %d: %s", id,
                             mz_describe(r));
            json_t *b = mz_keep(json_loadb(r->body, r->body_len, 0, NULL));
            json_int_t got = json_integer_value(
                json_object_get(json_object_get(json_object_get(b, "data"), "get_post"), "id"));
            cr_assert_eq(got, id, "post %d answered with post %lld", id, (long long)got);
            cr_assert_eq(json_integer_value(json_object_get(json_object_get(b, "params"), "post_id")), id);
        }
    }
    mz_gw_stop_ok(gw);
}

Test(context_plans, texts_that_give_the_same_params_share_the_bundle)
{
    mz_gw_t *gw = start_one_loop();
    ctx_get(gw, "/api/mizan/ctx/post/?post_id=3", NULL, "MISS");
    /* Another text for the same params: remembered on its own, same bundle. */
    json_t *b = ctx_get(gw, "/api/mizan/ctx/post/?post_id=%33", NULL, "HIT");
    cr_assert_eq(json_integer_value(json_object_get(json_object_get(b, "params"), "post_id")), 3);
    ctx_get(gw, "/api/mizan/ctx/post/?post_id=%33", NULL, "HIT");
    mz_gw_stop_ok(gw);
}

Test(context_plans, an_invalid_text_is_refused_every_time)
{
    mz_gw_t *gw = start_one_loop();
    for (int i = 0; i < 3; i++) {
        mz_expect_error(mz_get(gw, "/api/mizan/ctx/post/?post_id=abc", NULL), 422, "VALIDATION_FAILED");
        mz_expect_error(mz_get(gw, "/api/mizan/ctx/post/", NULL), 422, "VALIDATION_FAILED");
        ctx_get(gw, "/api/mizan/ctx/post/?post_id=1", NULL, i == 0 ? "MISS" : "HIT");
    }
    mz_gw_stop_ok(gw);
}
