/*
 * test_schema_doc.c - end-to-end tests of output schemas and the schema
 * document (PROTOCOL.md section 4, docs/schema-document.md): the document's
 * versioned shape, the blog's declared output schemas, config-declared
 * upstream functions with an `output_schema`, and `validate_output`
 * turning a result that strays from its schema into INTERNAL_ERROR (on for
 * every e2e gateway by default; off when the config says so).
 *
 * The upstream functions are served by examples/upstream/blog_api.py
 * (support/upstream_support.h), so the results checked are real answers.
 */
#include <criterion/criterion.h>

#include <string.h>

#include "blog.h"
#include "harness.h"
#include "upstream_support.h"

TestSuite(schema_doc, .init = mz_setup, .fini = mz_teardown, .timeout = 180);

/* The schema document of gw, with the standard headers checked. */
static json_t *schema_doc(const mz_gw_t *gw)
{
    mz_resp_t *r = mz_get(gw, "/api/mizan/schema/", NULL);
    mz_expect_status(r, 200);
    mz_expect_std_headers(r);
    cr_assert(json_is_object(r->json), "%s", mz_describe(r));
    return r->json;
}

Test(schema_doc, versioned_shape_with_every_blog_schema)
{
    mz_gw_t *gw = mz_gw_start(NULL);
    json_t *doc = schema_doc(gw);
    mz_expect_json(json_object_get(doc, "version"), "1");
    mz_expect_json(json_object_get(doc, "protocol"), "1");
    json_t *fns = json_object_get(doc, "functions"), *ctxs = json_object_get(doc, "contexts");
    for (const char *const *f = mz_blog_functions; *f; f++) {
        json_t *fn = json_object_get(fns, *f);
        cr_assert(json_is_object(fn), "function %s missing: %s", *f, mz_dump(doc));
        for (const char *const *k = (const char *const[]){"kind", "input_schema", "output_schema", "auth", "contexts",
                                                            "implemented", "timeout_ms", "description", NULL};
             *k; k++)
            cr_assert_not_null(json_object_get(fn, *k), "function %s lacks \"%s\": %s", *f, *k, mz_dump(fn));
        json_t *out = json_object_get(fn, "output_schema");
        cr_assert(json_is_object(out) || json_is_boolean(out), "blog function %s declares no output schema: %s", *f,
                  mz_dump(fn));
    }
    /* Exactly the shapes of BLOG_EXAMPLE.md. */
    mz_expect_json(json_object_get(json_object_get(fns, "add"), "output_schema"), "{\"type\": \"integer\"}");
    mz_expect_json(json_object_get(json_object_get(fns, "ping"), "output_schema"),
                   "{\"type\": \"string\", \"const\": \"pong\"}");
    mz_expect_json(json_object_get(json_object_get(fns, "boom"), "output_schema"), "false");
    json_t *post = json_object_get(json_object_get(fns, "get_post"), "output_schema");
    mz_expect_json(json_object_get(post, "required"), "[\"id\", \"title\", \"body\", \"author\", \"published\"]");
    mz_expect_json(json_object_get(post, "additionalProperties"), "false");
    json_t *comments = json_object_get(json_object_get(fns, "list_comments"), "output_schema");
    mz_expect_json(json_object_get(comments, "type"), "\"array\"");
    mz_expect_json(json_object_get(json_object_get(comments, "items"), "required"),
                   "[\"id\", \"post_id\", \"author\", \"text\"]");
    mz_expect_json(json_object_get(json_object_get(fns, "update_post"), "invalidates"), "[\"post\", \"feed\"]");
    /* Contexts: params, scope, ttl, functions. */
    for (const char *const *c = mz_blog_contexts; *c; c++) {
        json_t *ctx = json_object_get(ctxs, *c);
        cr_assert(json_is_object(ctx), "context %s missing: %s", *c, mz_dump(doc));
        for (const char *const *k = (const char *const[]){"params_schema", "functions", "ttl", "scope", NULL}; *k; k++)
            cr_assert_not_null(json_object_get(ctx, *k), "context %s lacks \"%s\": %s", *c, *k, mz_dump(ctx));
    }
    mz_expect_json(json_object_get(json_object_get(ctxs, "me"), "scope"), "\"user\"");
    mz_expect_json(json_object_get(json_object_get(ctxs, "drafts"), "scope"), "\"perms\"");
    mz_expect_json(json_object_get(json_object_get(ctxs, "post"), "functions"),
                   "[\"get_post\", \"list_comments\", \"get_author\"]");
    mz_gw_stop_ok(gw);
}

/* Every blog function answers within its declared output schema while validate_output is on. */
Test(schema_doc, blog_results_match_their_schemas)
{
    mz_gw_t *gw = mz_gw_start(NULL);
    char *tok = mz_token(gw, "alice", "--staff", "--superuser", "--perm", "blog.view_drafts", "--perm",
                         "blog.publish_post", NULL);
    struct {
        const char *fn, *args;
    } calls[] = {
        {"ping", NULL},
        {"add", "{\"a\": 2, \"b\": 40}"},
        {"echo", "{\"value\": {\"any\": [1, \"thing\"]}}"},
        {"sleep", "{\"ms\": 1}"},
        {"slow_c", "{\"ms\": 1}"},
        {"get_post", "{\"post_id\": 1}"},
        {"list_comments", "{\"post_id\": 1}"},
        {"get_author", "{\"post_id\": 1}"},
        {"list_posts", NULL},
        {"whoami", NULL},
        {"site_stats", NULL},
        {"create_post", "{\"title\": \"Draft\", \"body\": \"text\", \"published\": false}"},
        {"list_drafts", NULL},
        {"update_post", "{\"post_id\": 2, \"title\": \"Edited\"}"},
        {"add_comment", "{\"post_id\": 2, \"text\": \"Nice\"}"},
        {"publish_post", "{\"post_id\": 4}"},
        {"delete_post", "{\"post_id\": 3}"},
    };
    for (size_t i = 0; i < sizeof(calls) / sizeof(calls[0]); i++) {
        mz_resp_t *r = mz_call(gw, calls[i].fn, calls[i].args, tok);
        cr_assert_eq(r->status, 200, "%s under validate_output: %s", calls[i].fn, mz_describe(r));
    }
    mz_resp_t *r = mz_get(gw, "/api/mizan/ctx/post/?post_id=1", NULL);
    mz_expect_status(r, 200);
    mz_expect_json(json_object_get(r->json, "errors"), "{}");
    cr_assert(strstr(mz_gw_log_tail(gw, 1 << 20), "does not match the declared output schema") == NULL,
              "a blog result strayed from its schema:\n%s", mz_gw_log_tail(gw, 1 << 16));
    mz_gw_stop_ok(gw);
}

/* Upstream functions: one whose output schema matches, one whose does not, in a call and in a context. */
static json_t *upstream_config(const mz_upstream_t *u, bool validate)
{
    const char *post_schema =
        "{\"type\": \"object\", \"properties\": {\"id\": {\"type\": \"integer\"}, \"title\": {\"type\": \"string\"}},"
        " \"required\": [\"id\", \"title\"]}";
    const char *arg = "{\"type\": \"object\", \"properties\": {\"post_id\": {\"type\": \"integer\", \"minimum\": 1}},"
                      " \"required\": [\"post_id\"], \"additionalProperties\": false}";
    return mz_json(
        "{\"validate_output\": %s, \"upstreams\": {\"api\": {\"url\": \"%s\"}},"
        " \"functions\": ["
        "  {\"name\": \"up.post_ok\", \"input_schema\": %s, \"output_schema\": %s,"
        "   \"upstream\": {\"service\": \"api\", \"path\": \"/posts/{post_id}\", \"result\": \"/post\", \"identity\": false}},"
        "  {\"name\": \"up.post_bad\", \"input_schema\": %s,"
        "   \"output_schema\": {\"type\": \"object\", \"properties\": {\"id\": {\"type\": \"string\"}},"
        "     \"required\": [\"id\", \"subtitle\"]},"
        "   \"upstream\": {\"service\": \"api\", \"path\": \"/posts/{post_id}\", \"result\": \"/post\", \"identity\": false}},"
        "  {\"name\": \"up.post_plain\", \"input_schema\": %s,"
        "   \"upstream\": {\"service\": \"api\", \"path\": \"/posts/{post_id}\", \"result\": \"/post\", \"identity\": false}}],"
        " \"contexts\": [{\"name\": \"uppost\", \"ttl\": 0, \"params_schema\": %s,"
        "   \"functions\": [\"up.post_ok\", \"up.post_bad\", \"up.post_plain\"]}]}",
        validate ? "true" : "false", u->url, arg, post_schema, arg, arg, arg);
}

Test(schema_doc, upstream_output_schema_validated)
{
    mz_upstream_t *u = mz_upstream_start();
    mz_gw_t *gw = mz_gw_start(upstream_config(u, true));
    json_t *doc = schema_doc(gw);
    json_t *fns = json_object_get(doc, "functions");
    mz_expect_json(json_object_get(json_object_get(json_object_get(fns, "up.post_ok"), "output_schema"), "required"),
                   "[\"id\", \"title\"]");
    mz_expect_json(json_object_get(json_object_get(fns, "up.post_plain"), "output_schema"), "null");

    json_t *ok = mz_expect_result(mz_call(gw, "up.post_ok", "{\"post_id\": 1}", NULL));
    mz_expect_json(json_object_get(ok, "id"), "1");
    mz_resp_t *r = mz_call(gw, "up.post_bad", "{\"post_id\": 1}", NULL);
    json_t *details = mz_expect_error(r, 500, "INTERNAL_ERROR");
    cr_assert(json_is_string(json_object_get(details, "request_id")), "%s", mz_describe(r));
    cr_assert(strstr(r->body, "subtitle") == NULL, "violations must not reach the client: %s", mz_describe(r));
    mz_expect_result(mz_call(gw, "up.post_plain", "{\"post_id\": 1}", NULL));
    /* In a context the one failing function lands under errors. */
    r = mz_get(gw, "/api/mizan/ctx/uppost/?post_id=2", NULL);
    mz_expect_status(r, 200);
    json_t *data = json_object_get(r->json, "data"), *errors = json_object_get(r->json, "errors");
    cr_assert(json_is_object(json_object_get(data, "up.post_ok")), "%s", mz_describe(r));
    cr_assert(json_is_object(json_object_get(data, "up.post_plain")), "%s", mz_describe(r));
    cr_assert_null(json_object_get(data, "up.post_bad"), "%s", mz_describe(r));
    mz_expect_json(json_object_get(json_object_get(errors, "up.post_bad"), "code"), "\"INTERNAL_ERROR\"");
    mz_gw_stop_ok(gw);
    /* The log names the function and every violation. */
    char *log = mz_gw_log_tail(gw, 1 << 20);
    const char *line = strstr(log, "result does not match the declared output schema");
    cr_assert_not_null(line, "no log line about the mismatch:\n%s", log);
    cr_assert(strstr(line, "up.post_bad") != NULL && strstr(line, "\"subtitle\"") != NULL &&
                  strstr(line, "expected string, got integer") != NULL,
              "the log line should name the function and the violations:\n%s", line);
}

Test(schema_doc, validation_off_by_config)
{
    mz_upstream_t *u = mz_upstream_start();
    mz_gw_t *gw = mz_gw_start(upstream_config(u, false));
    json_t *res = mz_expect_result(mz_call(gw, "up.post_bad", "{\"post_id\": 1}", NULL));
    mz_expect_json(json_object_get(res, "id"), "1");
    /* The schema is still published. */
    json_t *doc = schema_doc(gw);
    cr_assert(json_is_object(
        json_object_get(json_object_get(json_object_get(doc, "functions"), "up.post_bad"), "output_schema")));
    mz_gw_stop_ok(gw);
}

Test(schema_doc, bad_output_schemas_refused)
{
    mz_upstream_t *u = mz_upstream_start();
    char *dir = mz_tmpdir();
    const char *cases[][2] = {
        {"{\"type\": \"strnig\"}", "output schema"},
        {"{\"type\": \"object\", \"oneOf\": []}", "oneOf"},
        {"\"object\"", "output_schema"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *cfg = mz_keep(mz_config_defaults(dir));
        mz_json_merge(cfg, mz_json("{\"upstreams\": {\"api\": {\"url\": \"%s\"}}, \"functions\": [{\"name\": \"x\","
                                   " \"output_schema\": %s, \"upstream\": {\"service\": \"api\", \"path\": \"/posts\"}}]}",
                                   u->url, cases[i][0]));
        char *path = mz_write_config(dir, mz_fmt("bad%zu.json", i), cfg);
        const char *argv[] = {mz_env("MIZAN_TEST_BIN"), "--check-config", "--config", path, NULL};
        mz_run_t *run = mz_run(argv, dir, NULL, 30000);
        cr_assert(run->status != 0 && run->status != -1, "output_schema %s should be refused:\n%s", cases[i][0],
                  run->err);
        cr_assert(strstr(run->err, cases[i][1]) != NULL, "output_schema %s: stderr should mention %s:\n%s",
                  cases[i][0], cases[i][1], run->err);
    }
    json_t *cfg = mz_keep(mz_config_defaults(dir));
    mz_json_merge(cfg, mz_json("{\"validate_output\": \"yes\"}"));
    char *path = mz_write_config(dir, "badvo.json", cfg);
    const char *argv[] = {mz_env("MIZAN_TEST_BIN"), "--check-config", "--config", path, NULL};
    mz_run_t *run = mz_run(argv, dir, NULL, 30000);
    cr_assert(run->status != 0 && strstr(run->err, "validate_output") != NULL, "%s", run->err);
}
