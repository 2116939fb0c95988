/*
 * test_core.c - end-to-end tests of the gateway core: routing (with and
 * without trailing slashes, unknown routes, wrong methods), the heads of
 * the metrics exposition and the event stream, the call
 * endpoint's body rules, validation and error envelopes, request ids, the
 * headers every response carries, keep-alive, the schema and health
 * endpoints, and the command line (--version, --help, --check-config and
 * its diagnostics for bad configs).
 *
 * Every test starts its own mizand from MIZAN_TEST_BIN on a free port in a
 * fresh temp dir (see support/harness.h) and stops it at the end, asserting
 * a clean exit.
 */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blog.h"
#include "harness.h"

TestSuite(core, .init = mz_setup, .fini = mz_teardown, .timeout = 180);

/* Calls fn and returns its result after checking the exact success shape. */
static json_t *call_ok(const mz_gw_t *gw, const char *fn, const char *args)
{
    return mz_expect_result(mz_call(gw, fn, args, NULL));
}

/* ------------------------------------------------------------------------
 * Calls
 * ---------------------------------------------------------------------- */

Test(core, ping_add_echo)
{
    mz_gw_t *gw = mz_gw_start(NULL);
    mz_expect_json(call_ok(gw, "ping", NULL), "\"pong\"");
    mz_expect_json(call_ok(gw, "ping", "{}"), "\"pong\"");
    mz_expect_json(call_ok(gw, "add", "{\"a\": 2, \"b\": 3}"), "5");
    mz_expect_json(call_ok(gw, "add", "{\"a\": -7, \"b\": 3}"), "-4");
    mz_expect_json(call_ok(gw, "add", "{\"a\": 4611686018427387904, \"b\": 4611686018427387903}"),
                   "9223372036854775807");
    mz_expect_json(call_ok(gw, "echo", "{\"value\": {\"x\": [1, \"two\", null, true, 1.5]}}"),
                   "{\"x\": [1, \"two\", null, true, 1.5]}");
    mz_expect_json(call_ok(gw, "echo", "{\"value\": \"caf\\u00e9 \\\"q\\\"\\n\"}"),
                   "\"caf\\u00e9 \\\"q\\\"\\n\"");
    mz_expect_json(call_ok(gw, "echo", "{\"value\": null}"), "null");
    mz_expect_json(call_ok(gw, "echo", "{\"value\": []}"), "[]");
    mz_gw_stop_ok(gw);
}

Test(core, call_with_and_without_trailing_slash)
{
    mz_gw_t *gw = mz_gw_start(NULL);
    const char *body = mz_call_body("add", "{\"a\": 1, \"b\": 1}");
    mz_expect_json(mz_expect_result(mz_post(gw, "/api/mizan/call/", body, NULL)), "2");
    mz_expect_json(mz_expect_result(mz_post(gw, "/api/mizan/call", body, NULL)), "2");
    mz_gw_stop_ok(gw);
}

Test(core, context_with_and_without_trailing_slash)
{
    mz_gw_t *gw = mz_gw_start(NULL);
    const char *paths[] = {"/api/mizan/ctx/feed/", "/api/mizan/ctx/feed",
                           "/api/mizan/ctx/post/?post_id=1", "/api/mizan/ctx/post?post_id=1"};
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
        mz_resp_t *r = mz_get(gw, paths[i], NULL);
        mz_expect_status(r, 200);
        mz_expect_std_headers(r);
        const char *want = strstr(paths[i], "feed") ? "feed" : "post";
        cr_assert_str_eq(json_string_value(json_object_get(r->json, "context")), want,
                         "GET %s: %s", paths[i], mz_describe(r));
        cr_assert(json_is_object(json_object_get(r->json, "data")), "GET %s: %s", paths[i],
                  mz_describe(r));
        mz_expect_json(json_object_get(r->json, "errors"), "{}");
    }
    mz_gw_stop_ok(gw);
}

/* ------------------------------------------------------------------------
 * Not found, method not allowed
 * ---------------------------------------------------------------------- */

Test(core, unknown_function_is_404)
{
    mz_gw_t *gw = mz_gw_start(NULL);
    mz_expect_error(mz_call(gw, "no_such_function", NULL, NULL), 404, "NOT_FOUND");
    mz_expect_error(mz_call(gw, "no_such_function", "{\"a\": 1}", NULL), 404, "NOT_FOUND");
    mz_gw_stop_ok(gw);
}

Test(core, unknown_context_is_404)
{
    mz_gw_t *gw = mz_gw_start(NULL);
    mz_expect_error(mz_get(gw, "/api/mizan/ctx/no_such_context/", NULL), 404, "NOT_FOUND");
    mz_expect_error(mz_get(gw, "/api/mizan/ctx/no_such_context", NULL), 404, "NOT_FOUND");
    mz_gw_stop_ok(gw);
}

Test(core, unknown_route_is_404_envelope)
{
    mz_gw_t *gw = mz_gw_start(NULL);
    const char *paths[] = {"/", "/nope", "/api/mizan/", "/api/mizan/nope/", "/api/mizan/callx/",
                           "/api/mizan/call/extra/", "/api/mizan/ctx/", "/healthzz"};
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++)
        mz_expect_error(mz_get(gw, paths[i], NULL), 404, "NOT_FOUND");
    mz_expect_error(mz_post(gw, "/nope", "{}", NULL), 404, "NOT_FOUND");
    mz_gw_stop_ok(gw);
}

/* True when line is a Prometheus text-format sample: name[{labels}] value [ts]. */
static bool is_sample(const char *line)
{
    size_t n = strspn(line, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_:");
    if (n == 0 || (line[0] >= '0' && line[0] <= '9'))
        return false;
    const char *p = line + n;
    if (*p == '{') {
        p = strchr(p, '}');
        if (p == NULL)
            return false;
        p++;
    }
    if (*p != ' ')
        return false;
    p++;
    if (strncmp(p, "+Inf", 4) == 0 || strncmp(p, "-Inf", 4) == 0 || strncmp(p, "NaN", 3) == 0)
        return true;
    char *end = NULL;
    strtod(p, &end);
    return end != p && (*end == '\0' || *end == ' ');
}

Test(core, metrics_exposition)
{
    mz_gw_t *gw = mz_gw_start(NULL);
    mz_expect_result(mz_call(gw, "ping", NULL, NULL));
    mz_resp_t *r = mz_get(gw, "/metrics", NULL);
    mz_expect_status(r, 200);
    const char *ct = mz_header(r, "Content-Type");
    cr_assert(ct != NULL && strncmp(ct, "text/plain", 10) == 0,
              "expected a text/plain exposition:\n%s", mz_describe(r));
    cr_assert_str_eq(mz_header(r, "Cache-Control"), "no-store", "%s", mz_describe(r));
    cr_assert(mz_request_id_sane(mz_header(r, "X-Request-Id")), "%s", mz_describe(r));
    int types = 0, samples = 0;
    char *copy = mz_fmt("%s", r->body);
    for (char *save = NULL, *line = strtok_r(copy, "\n", &save); line;
         line = strtok_r(NULL, "\n", &save)) {
        if (strncmp(line, "# TYPE ", 7) == 0)
            types++;
        else if (strncmp(line, "# ", 2) == 0)
            continue;
        else {
            cr_assert(is_sample(line), "not a Prometheus sample line: %s", line);
            samples++;
        }
    }
    cr_assert(types > 0 && samples > 0, "no metrics exposed:\n%s", mz_describe(r));
    mz_gw_stop_ok(gw);
}

Test(core, events_stream_head)
{
    mz_gw_t *gw = mz_gw_start(NULL);
    const char *paths[] = {"/api/mizan/events/?contexts=post,feed", "/api/mizan/events?contexts=feed"};
    for (size_t i = 0; i < 2; i++) {
        mz_resp_t *head = NULL;
        mz_stream_open(gw, paths[i], NULL, NULL, &head);
        mz_expect_status(head, 200);
        const char *ct = mz_header(head, "Content-Type");
        cr_assert(ct != NULL && strncmp(ct, "text/event-stream", 17) == 0,
                  "GET %s: expected Content-Type: text/event-stream:\n%s", paths[i],
                  mz_describe(head));
        cr_assert_str_eq(mz_header(head, "Cache-Control"), "no-store", "%s", mz_describe(head));
        cr_assert(mz_request_id_sane(mz_header(head, "X-Request-Id")), "%s", mz_describe(head));
    }
    /* Open streams do not stop a graceful shutdown. */
    mz_gw_stop_ok(gw);
}

/* Asserts r is a 405 envelope whose Allow header lists method. */
static void expect_405(const mz_resp_t *r, const char *method, const char *what)
{
    mz_expect_error(r, 405, "METHOD_NOT_ALLOWED");
    const char *allow = mz_header(r, "Allow");
    cr_assert(allow != NULL, "%s: 405 without an Allow header:\n%s", what, mz_describe(r));
    /* Allow is a comma-separated list of methods. */
    bool listed = false;
    char *copy = mz_fmt("%s", allow);
    for (char *save = NULL, *tok = strtok_r(copy, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save))
        listed = listed || strcmp(tok, method) == 0;
    cr_assert(listed, "%s: Allow: %s does not list %s", what, allow, method);
}

Test(core, wrong_method_is_405_with_allow)
{
    mz_gw_t *gw = mz_gw_start(NULL);
    expect_405(mz_get(gw, "/api/mizan/call/", NULL), "POST", "GET /api/mizan/call/");
    expect_405(mz_get(gw, "/api/mizan/call", NULL), "POST", "GET /api/mizan/call");
    expect_405(mz_post(gw, "/api/mizan/ctx/feed/", "{}", NULL), "GET",
               "POST /api/mizan/ctx/feed/");
    expect_405(mz_post(gw, "/api/mizan/ctx/post?post_id=1", NULL, NULL), "GET",
               "POST /api/mizan/ctx/post");
    expect_405(mz_post(gw, "/api/mizan/schema/", "{}", NULL), "GET", "POST /api/mizan/schema/");
    mz_req_t del = {.method = "DELETE", .path = "/api/mizan/call/"};
    expect_405(mz_http(gw, &del), "POST", "DELETE /api/mizan/call/");
    mz_req_t put = {.method = "PUT", .path = "/healthz", .body = "{}"};
    expect_405(mz_http(gw, &put), "GET", "PUT /healthz");
    expect_405(mz_post(gw, "/api/mizan/events/", "{}", NULL), "GET", "POST /api/mizan/events/");
    expect_405(mz_post(gw, "/metrics", "{}", NULL), "GET", "POST /metrics");
    mz_gw_stop_ok(gw);
}

/* ------------------------------------------------------------------------
 * Request bodies and validation
 * ---------------------------------------------------------------------- */

Test(core, malformed_call_bodies_are_400)
{
    mz_gw_t *gw = mz_gw_start(NULL);
    const char *bodies[] = {
        "this is not json",
        "{\"function\": \"ping\"",                    /* truncated */
        "{\"function\": \"ping\"} trailing",          /* garbage after the object */
        "[\"ping\"]",                                 /* an array */
        "\"ping\"",                                   /* a string */
        "null",
        "{}",                                         /* function missing */
        "{\"args\": {}}",                             /* function missing */
        "{\"function\": 5}",                          /* non-string function */
        "{\"function\": null}",
        "{\"function\": [\"ping\"]}",
        "{\"function\": \"ping\", \"args\": [1, 2]}", /* args not an object */
        "{\"function\": \"ping\", \"args\": \"x\"}",
        "{\"function\": \"ping\", \"args\": 1}",
        "{\"function\": \"ping\", \"args\": null}",
        "{\"function\": \"ping\", \"extra\": 1}",     /* extra top-level member */
        "{\"function\": \"ping\", \"args\": {}, \"id\": 7}",
    };
    for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
        mz_resp_t *r = mz_post(gw, "/api/mizan/call/", bodies[i], NULL);
        cr_assert(r->status == 400, "body %s: expected 400, got:\n%s", bodies[i], mz_describe(r));
        mz_expect_error(r, 400, "BAD_REQUEST");
    }
    /* An empty body is not one JSON object either. */
    mz_req_t empty = {.method = "POST", .path = "/api/mizan/call/", .body = ""};
    mz_expect_error(mz_http(gw, &empty), 400, "BAD_REQUEST");
    mz_gw_stop_ok(gw);
}

Test(core, args_omitted_means_empty_object)
{
    mz_gw_t *gw = mz_gw_start(NULL);
    mz_expect_json(call_ok(gw, "ping", NULL), "\"pong\"");
    /* add without args: both required members reported missing. */
    json_t *details = mz_expect_error(mz_call(gw, "add", NULL, NULL), 422, "VALIDATION_FAILED");
    cr_assert_eq(json_array_size(details), 2, "%s", mz_dump(details));
    mz_expect_violation(details, "[\"args\", \"a\"]", "missing");
    mz_expect_violation(details, "[\"args\", \"b\"]", "missing");
    mz_gw_stop_ok(gw);
}

Test(core, validation_lists_every_violation)
{
    mz_gw_t *gw = mz_gw_start(NULL);
    json_t *details =
        mz_expect_error(mz_call(gw, "add", "{\"b\": \"two\"}", NULL), 422, "VALIDATION_FAILED");
    cr_assert_eq(json_array_size(details), 2, "expected exactly 2 violations: %s",
                 mz_dump(details));
    mz_expect_violation(details, "[\"args\", \"a\"]", "missing");
    mz_expect_violation(details, "[\"args\", \"b\"]", "type");

    details = mz_expect_error(mz_call(gw, "sleep", "{\"ms\": 10001}", NULL), 422,
                              "VALIDATION_FAILED");
    cr_assert_eq(json_array_size(details), 1, "%s", mz_dump(details));
    mz_expect_violation(details, "[\"args\", \"ms\"]", "maximum");

    details = mz_expect_error(mz_call(gw, "get_post", "{\"post_id\": 0}", NULL), 422,
                              "VALIDATION_FAILED");
    mz_expect_violation(details, "[\"args\", \"post_id\"]", "minimum");
    mz_gw_stop_ok(gw);
}

Test(core, boom_is_generic_internal_error)
{
    mz_gw_t *gw = mz_gw_start(NULL);
    mz_resp_t *r = mz_call(gw, "boom", NULL, NULL);
    json_t *details = mz_expect_error(r, 500, "INTERNAL_ERROR");
    const char *rid = mz_header(r, "X-Request-Id");
    json_t *want = mz_keep(json_pack("{s:s}", "request_id", rid));
    mz_expect_json(details, mz_dump(want));
    const char *msg = json_string_value(json_object_get(json_object_get(r->json, "error"), "message"));
    const char *leaks[] = {"boom", ".c", "0x", "/", "sqlite", "SQL", "errno"};
    for (size_t i = 0; i < sizeof(leaks) / sizeof(leaks[0]); i++)
        cr_assert(strstr(msg, leaks[i]) == NULL,
                  "INTERNAL_ERROR message %s is not generic (contains \"%s\")", msg, leaks[i]);

    /* With a client-sent id, details carry that id. */
    const char *hdrs[] = {"X-Request-Id: boom-request-0001", NULL};
    mz_req_t req = mz_call_req("boom", NULL, NULL);
    req.headers = hdrs;
    r = mz_http(gw, &req);
    details = mz_expect_error(r, 500, "INTERNAL_ERROR");
    cr_assert_str_eq(mz_header(r, "X-Request-Id"), "boom-request-0001");
    mz_expect_json(details, "{\"request_id\": \"boom-request-0001\"}");
    mz_gw_stop_ok(gw);
}

/* ------------------------------------------------------------------------
 * Request ids and standard headers
 * ---------------------------------------------------------------------- */

/* Sends ping with one X-Request-Id header line; returns the response. */
static mz_resp_t *ping_with_header(const mz_gw_t *gw, const char *header_line)
{
    const char *hdrs[] = {header_line, NULL};
    mz_req_t req = mz_call_req("ping", NULL, NULL);
    req.headers = header_line ? hdrs : NULL;
    mz_resp_t *r = mz_http(gw, &req);
    mz_expect_result(r);
    return r;
}

Test(core, request_id_echoed_or_generated)
{
    mz_gw_t *gw = mz_gw_start(NULL);
    const char *id128 = mz_repeat('a', 128);
    const char *sane[] = {"abc", "A.b_c-9", "0", "req-2024.11.25_x", id128};
    for (size_t i = 0; i < sizeof(sane) / sizeof(sane[0]); i++) {
        mz_resp_t *r = ping_with_header(gw, mz_fmt("X-Request-Id: %s", sane[i]));
        cr_assert_str_eq(mz_header(r, "X-Request-Id"), sane[i], "sane id not echoed:\n%s",
                         mz_describe(r));
    }
    /* Errors echo it too. */
    const char *hdrs[] = {"X-Request-Id: err-id-1", NULL};
    mz_req_t req = {.method = "GET", .path = "/nope", .headers = hdrs};
    mz_resp_t *r = mz_http(gw, &req);
    mz_expect_error(r, 404, "NOT_FOUND");
    cr_assert_str_eq(mz_header(r, "X-Request-Id"), "err-id-1");

    const char *id129 = mz_repeat('b', 129);
    const char *id300 = mz_repeat('c', 300);
    const char *bad[] = {"has space", id129, id300, "bad/slash", "semi;colon", "quote\"d",
                         "caf\xc3\xa9", ""};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        r = ping_with_header(gw, mz_fmt("X-Request-Id: %s", bad[i]));
        const char *got = mz_header(r, "X-Request-Id");
        cr_assert(mz_request_id_sane(got), "bad id \"%s\": generated id not sane:\n%s", bad[i],
                  mz_describe(r));
        cr_assert(strcmp(got, bad[i]) != 0, "bad id \"%s\" was echoed", bad[i]);
    }
    /* Generated ids are unique per request. */
    const char *a = mz_header(ping_with_header(gw, NULL), "X-Request-Id");
    const char *b = mz_header(ping_with_header(gw, NULL), "X-Request-Id");
    cr_assert(mz_request_id_sane(a) && mz_request_id_sane(b));
    cr_assert_str_neq(a, b, "two requests got the same generated X-Request-Id");
    mz_gw_stop_ok(gw);
}

Test(core, standard_headers_on_success_and_errors)
{
    mz_gw_t *gw = mz_gw_start(NULL);
    /* mz_expect_result/error check Cache-Control, Content-Type, X-Request-Id. */
    mz_expect_result(mz_call(gw, "ping", NULL, NULL));
    mz_expect_error(mz_call(gw, "nope", NULL, NULL), 404, "NOT_FOUND");
    mz_expect_error(mz_post(gw, "/api/mizan/call/", "not json", NULL), 400, "BAD_REQUEST");
    mz_expect_error(mz_call(gw, "add", "{}", NULL), 422, "VALIDATION_FAILED");
    mz_expect_error(mz_call(gw, "boom", NULL, NULL), 500, "INTERNAL_ERROR");
    mz_expect_error(mz_get(gw, "/api/mizan/call/", NULL), 405, "METHOD_NOT_ALLOWED");
    mz_expect_error(mz_call(gw, "whoami", NULL, NULL), 401, "UNAUTHORIZED");
    const char *gets[] = {"/api/mizan/ctx/feed/", "/api/mizan/schema/", "/healthz", "/readyz"};
    for (size_t i = 0; i < sizeof(gets) / sizeof(gets[0]); i++) {
        mz_resp_t *r = mz_get(gw, gets[i], NULL);
        mz_expect_status(r, 200);
        mz_expect_std_headers(r);
    }
    mz_gw_stop_ok(gw);
}

/* ------------------------------------------------------------------------
 * Connections
 * ---------------------------------------------------------------------- */

Test(core, keep_alive_50_requests_on_one_connection)
{
    mz_gw_t *gw = mz_gw_start(NULL);
    mz_conn_t *c = mz_connect(gw->port);
    for (int i = 0; i < 50; i++) {
        mz_resp_t *r = mz_call_on(c, "add", mz_fmt("{\"a\": %d, \"b\": %d}", i, 2 * i), NULL);
        json_t *result = mz_expect_result(r);
        cr_assert(json_is_integer(result) && json_integer_value(result) == 3 * i,
                  "request %d on the kept-alive connection: %s", i, mz_describe(r));
        cr_assert(!c->peer_closed, "the gateway closed the connection after request %d:\n%s", i,
                  mz_describe(r));
    }
    /* GETs and errors keep the connection too. */
    mz_req_t get = {.method = "GET", .path = "/api/mizan/ctx/feed/"};
    mz_expect_status(mz_request(c, &get), 200);
    mz_req_t nf = {.method = "GET", .path = "/nope"};
    mz_expect_error(mz_request(c, &nf), 404, "NOT_FOUND");
    mz_expect_result(mz_call_on(c, "ping", NULL, NULL));
    cr_assert(!c->peer_closed);
    mz_gw_stop_ok(gw);
}

/* ------------------------------------------------------------------------
 * Schema and health
 * ---------------------------------------------------------------------- */

/*
 * Finds the entry of `name` in a schema section that is either an object
 * keyed by name or an array of objects with a "name" member. Returns it
 * (borrowed) or NULL.
 */
static json_t *section_entry(json_t *section, const char *name)
{
    if (json_is_object(section))
        return json_object_get(section, name);
    size_t i;
    json_t *e;
    json_array_foreach(section, i, e) {
        const char *n = json_string_value(json_object_get(e, "name"));
        if (n != NULL && strcmp(n, name) == 0)
            return e;
    }
    return NULL;
}

/* True when v (recursively) holds an object with "properties" naming both keys. */
static bool holds_properties(json_t *v, const char *k1, const char *k2)
{
    if (json_is_object(v)) {
        json_t *props = json_object_get(v, "properties");
        if (json_is_object(props) && json_object_get(props, k1) && json_object_get(props, k2))
            return true;
        const char *key;
        json_t *child;
        json_object_foreach(v, key, child) {
            if (holds_properties(child, k1, k2))
                return true;
        }
    } else if (json_is_array(v)) {
        size_t i;
        json_t *child;
        json_array_foreach(v, i, child) {
            if (holds_properties(child, k1, k2))
                return true;
        }
    }
    return false;
}

/* True when v (recursively) holds the string s. */
static bool holds_string(json_t *v, const char *s)
{
    if (json_is_string(v))
        return strcmp(json_string_value(v), s) == 0;
    if (json_is_object(v)) {
        const char *key;
        json_t *child;
        json_object_foreach(v, key, child) {
            if (holds_string(child, s))
                return true;
        }
    } else if (json_is_array(v)) {
        size_t i;
        json_t *child;
        json_array_foreach(v, i, child) {
            if (holds_string(child, s))
                return true;
        }
    }
    return false;
}

static bool is_mutation(const char *name)
{
    for (const char *const *m = mz_blog_mutations; *m; m++) {
        if (strcmp(*m, name) == 0)
            return true;
    }
    return false;
}

Test(core, schema_lists_functions_and_contexts)
{
    mz_gw_t *gw = mz_gw_start(NULL);
    mz_resp_t *r = mz_get(gw, "/api/mizan/schema/", NULL);
    mz_expect_status(r, 200);
    mz_expect_std_headers(r);
    json_t *fns = json_object_get(r->json, "functions");
    json_t *ctxs = json_object_get(r->json, "contexts");
    cr_assert((json_is_object(fns) || json_is_array(fns)) &&
                  (json_is_object(ctxs) || json_is_array(ctxs)),
              "schema has no \"functions\"/\"contexts\" collections:\n%s", mz_describe(r));
    for (const char *const *f = mz_blog_functions; *f; f++) {
        json_t *e = section_entry(fns, *f);
        cr_assert(json_is_object(e), "schema lacks function %s:\n%s", *f, mz_describe(r));
        const char *kind = json_string_value(json_object_get(e, "kind"));
        cr_assert(kind != NULL && strcmp(kind, is_mutation(*f) ? "mutation" : "query") == 0,
                  "function %s: kind should be %s: %s", *f,
                  is_mutation(*f) ? "mutation" : "query", mz_dump(e));
    }
    cr_assert(holds_properties(section_entry(fns, "add"), "a", "b"),
              "the input schema of add (properties a, b) is not in %s",
              mz_dump(section_entry(fns, "add")));
    for (const char *const *c = mz_blog_contexts; *c; c++)
        cr_assert(json_is_object(section_entry(ctxs, *c)), "schema lacks context %s:\n%s", *c,
                  mz_describe(r));
    json_t *post = section_entry(ctxs, "post");
    cr_assert(holds_string(post, "get_post") && holds_string(post, "list_comments") &&
                  holds_string(post, "get_author"),
              "context post does not list its functions: %s", mz_dump(post));
    mz_expect_status(mz_get(gw, "/api/mizan/schema", NULL), 200);
    mz_gw_stop_ok(gw);
}

Test(core, healthz_and_readyz)
{
    mz_gw_t *gw = mz_gw_start(NULL);
    const char *paths[] = {"/healthz", "/readyz"};
    for (size_t i = 0; i < 2; i++) {
        mz_resp_t *r = mz_get(gw, paths[i], NULL);
        mz_expect_status(r, 200);
        mz_expect_std_headers(r);
        cr_assert(json_is_object(r->json), "GET %s: body is not a JSON object:\n%s", paths[i],
                  mz_describe(r));
    }
    mz_gw_stop_ok(gw);
}

Test(core, token_secret_env_override)
{
    /* The PROTOCOL.md §4 vector is signed with MZ_TOKEN_SECRET. */
    const char *vector =
        "eyJhbGciOiJIUzI1NiIsInR5cCI6Ik1XVCJ9.eyJzdWIiOiJhbGljZSIsImV4cCI6NDEwMjQ0NDgwMCwic3Rh"
        "ZmYiOnRydWUsInBlcm1zIjpbImJsb2cuYWRkX3Bvc3QiXX0.8ZNtHZnN0nAQpS6CUizlZOqMoP2oFuNmePKbC"
        "ffP-Tc";
    mz_gw_t *gw = mz_gw_start(NULL);
    mz_expect_json(mz_expect_result(mz_call(gw, "whoami", NULL, vector)),
                   "{\"sub\": \"alice\", \"staff\": true, \"superuser\": false, "
                   "\"perms\": [\"blog.add_post\"]}");
    mz_gw_stop_ok(gw);

    const char *env[] = {"MIZAN_TOKEN_SECRET=another-secret-of-enough-length-0123456789", NULL};
    mz_gw_opts_t opts = {.env = env};
    gw = mz_gw_start_opts(&opts);
    mz_expect_error(mz_call(gw, "whoami", NULL, vector), 401, "UNAUTHORIZED");
    mz_gw_stop_ok(gw);
}

/* ------------------------------------------------------------------------
 * Command line
 * ---------------------------------------------------------------------- */

/* The project version from the top-level CMakeLists.txt. */
static const char *project_version(void)
{
    const char *src = mz_env("MIZAN_TEST_SOURCE_DIR");
    char *text = mz_read_file(mz_fmt("%s/CMakeLists.txt", src));
    cr_assert(text != NULL, "cannot read %s/CMakeLists.txt", src);
    const char *p = strstr(text, "project(mizan VERSION ");
    cr_assert(p != NULL, "no project(mizan VERSION x.y.z) in CMakeLists.txt");
    p += strlen("project(mizan VERSION ");
    return mz_fmt("%.*s", (int)strspn(p, "0123456789."), p);
}

Test(core, version_flag)
{
    const char *argv[] = {mz_env("MIZAN_TEST_BIN"), "--version", NULL};
    mz_run_t *run = mz_run(argv, NULL, NULL, 10000);
    cr_assert_eq(run->status, 0, "--version exited %d: %s %s", run->status, run->out, run->err);
    const char *v = project_version();
    cr_assert(strstr(run->out, v) != NULL, "--version printed \"%s\", expected it to contain %s",
              run->out, v);
}

Test(core, help_flag)
{
    const char *argv[] = {mz_env("MIZAN_TEST_BIN"), "--help", NULL};
    mz_run_t *run = mz_run(argv, NULL, NULL, 10000);
    cr_assert_eq(run->status, 0, "--help exited %d: %s %s", run->status, run->out, run->err);
    cr_assert(strstr(run->out, "--config") != NULL && strstr(run->out, "--check-config") != NULL &&
                  strstr(run->out, "token") != NULL,
              "--help does not describe --config, --check-config and token:\n%s", run->out);
}

/* Runs `mizand --check-config --config path` in dir with env. */
static mz_run_t *check_config(const char *dir, const char *path, const char *const *env)
{
    const char *argv[] = {mz_env("MIZAN_TEST_BIN"), "--check-config", "--config", path, NULL};
    return mz_run(argv, dir, env, 30000);
}

static void expect_lists_functions(const mz_run_t *run)
{
    for (const char *const *f = mz_blog_functions; *f; f++) {
        /* Match the name as a whole word so "add" is not found in "add_comment". */
        bool found = false;
        size_t n = strlen(*f);
        for (const char *p = strstr(run->out, *f); p && !found; p = strstr(p + 1, *f)) {
            char before = p == run->out ? ' ' : p[-1];
            char after = p[n];
            bool word_before = (before >= 'a' && before <= 'z') || before == '_';
            bool word_after = (after >= 'a' && after <= 'z') || after == '_';
            found = !word_before && !word_after;
        }
        cr_assert(found, "--check-config output does not list function %s:\n%s", *f, run->out);
    }
}

Test(core, check_config_example)
{
    const char *src = mz_env("MIZAN_TEST_SOURCE_DIR");
    char *dir = mz_tmpdir();
    const char *env[] = {mz_fmt("MIZAN_BLOG_DB=%s/blog.db", dir), NULL};
    char *example = mz_fmt("%s/examples/blog/mizan.json", src);
    mz_run_t *run = check_config(dir, example, env);
    cr_assert_eq(run->status, 0, "--check-config %s exited %d\nstdout: %s\nstderr: %s", example,
                 run->status, run->out, run->err);
    expect_lists_functions(run);
}

Test(core, check_config_generated)
{
    char *dir = mz_tmpdir();
    json_t *cfg = mz_keep(mz_config_defaults(dir));
    char *path = mz_write_config(dir, "ok.json", cfg);
    mz_run_t *run = check_config(dir, path, NULL);
    cr_assert_eq(run->status, 0, "--check-config exited %d\nstdout: %s\nstderr: %s", run->status,
                 run->out, run->err);
    expect_lists_functions(run);
    for (const char *const *c = mz_blog_contexts; *c; c++)
        cr_assert(strstr(run->out, *c) != NULL, "--check-config output lacks context %s:\n%s", *c,
                  run->out);
}

/* A config with one member changed (value is JSON text; NULL deletes it). */
static char *config_with(const char *dir, const char *name, const char *member, const char *value)
{
    json_t *cfg = mz_keep(mz_config_defaults(dir));
    json_t *patch = mz_json("{\"%s\": %s}", member, value ? value : "null");
    mz_json_merge(cfg, patch);
    return mz_write_config(dir, name, cfg);
}

/* Runs --check-config and serve mode on path; both must fail, stderr must hold every needle. */
static void expect_bad_config(const char *dir, const char *path, const char *const *needles)
{
    mz_run_t *run = check_config(dir, path, NULL);
    cr_assert(run->status != 0 && run->status != -1,
              "--check-config on %s should fail, exited %d\nstdout: %s\nstderr: %s", path,
              run->status, run->out, run->err);
    for (const char *const *n = needles; *n; n++)
        cr_assert(strstr(run->err, *n) != NULL,
                  "--check-config on %s: stderr should mention \"%s\":\n%s", path, *n, run->err);

    const char *argv[] = {mz_env("MIZAN_TEST_BIN"), "--config", path, NULL};
    run = mz_run(argv, dir, NULL, 30000);
    cr_assert(run->status != 0 && run->status != -1,
              "mizand --config %s should refuse to start, exited %d\nstderr: %s", path,
              run->status, run->err);
    for (const char *const *n = needles; *n; n++)
        cr_assert(strstr(run->err, *n) != NULL, "mizand --config %s: stderr should mention \"%s\":\n%s",
                  path, *n, run->err);
}

Test(core, bad_config_syntax_names_file_line_column)
{
    char *dir = mz_tmpdir();
    char *path = mz_write_file(dir, "syntax.json",
                               "{\n"
                               "  \"listen\": \"127.0.0.1:0\",\n"
                               "  \"workers\": 4,,\n"
                               "  \"io_threads\": 1\n"
                               "}\n");
    /* Where the parser the gateway uses locates the error. */
    json_error_t e;
    json_t *v = json_load_file(path, 0, &e);
    cr_assert(v == NULL);
    const char *needles[] = {path, mz_fmt("%d:%d", e.line, e.column), NULL};
    expect_bad_config(dir, path, needles);
}

Test(core, bad_config_negative_workers)
{
    char *dir = mz_tmpdir();
    const char *needles[] = {"workers", NULL};
    expect_bad_config(dir, config_with(dir, "workers.json", "workers", "-1"), needles);
}

Test(core, bad_config_short_token_secret)
{
    char *dir = mz_tmpdir();
    json_t *cfg = mz_keep(mz_config_defaults(dir));
    mz_json_merge(cfg, mz_json("{\"token\": {\"secret\": \"0123456789\"}}"));
    const char *needles[] = {"secret", "32", NULL};
    expect_bad_config(dir, mz_write_config(dir, "secret.json", cfg), needles);
}

Test(core, bad_config_short_cache_secret)
{
    char *dir = mz_tmpdir();
    json_t *cfg = mz_keep(mz_config_defaults(dir));
    mz_json_merge(cfg, mz_json("{\"cache\": {\"secret\": \"short\"}}"));
    const char *needles[] = {"secret", "32", NULL};
    expect_bad_config(dir, mz_write_config(dir, "cache.json", cfg), needles);
}

Test(core, bad_config_unknown_field)
{
    char *dir = mz_tmpdir();
    const char *needles[] = {"bogus_field", NULL};
    expect_bad_config(dir, config_with(dir, "unknown.json", "bogus_field", "1"), needles);
}

Test(core, bad_config_missing_file)
{
    char *dir = mz_tmpdir();
    char *path = mz_fmt("%s/does-not-exist.json", dir);
    const char *needles[] = {path, NULL};
    expect_bad_config(dir, path, needles);
}
