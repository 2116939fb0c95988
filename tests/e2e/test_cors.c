/*
 * test_cors.c - end-to-end tests of cross-origin browsers (PROTOCOL.md
 * section 8): the OPTIONS preflight of every route from allowed and refused
 * origins, the Access-Control-* headers on successes, errors, 405s and
 * event streams, credentials mode, the default (no cross-origin access at
 * all) and the start-up checks of the `cors` config object.
 *
 * Every test starts its own mizand (support/harness.h) and speaks raw
 * HTTP/1.1 to it, sending the Origin header a browser would send.
 */
#include <criterion/criterion.h>

#include <string.h>

#include "harness.h"

TestSuite(cors, .init = mz_setup, .fini = mz_teardown, .timeout = 180);

#define APP "http://app.example.test:5173"
#define EVIL "http://evil.example.test"

/* One route and the methods it serves. */
typedef struct route {
    const char *path;
    const char *methods;
} route_t;

static const route_t routes[] = {
    {"/api/mizan/call/", "POST"},
    {"/api/mizan/call", "POST"},
    {"/api/mizan/ctx/post/?post_id=1", "GET"},
    {"/api/mizan/ctx/feed", "GET"},
    {"/api/mizan/schema/", "GET"},
    {"/api/mizan/events/?contexts=post", "GET"},
    {"/healthz", "GET"},
    {"/readyz", "GET"},
    {"/metrics", "GET"},
};
#define NROUTES (sizeof(routes) / sizeof(routes[0]))

/* A gateway allowing APP (and, with extra, what extra adds: JSON text or NULL). */
static mz_gw_t *start_with_cors(const char *cors_json)
{
    json_t *cfg = mz_json("{\"cors\": %s}", cors_json);
    return mz_gw_start(cfg);
}

/* A browser's preflight for method with the headers a Bearer JSON call needs. */
static mz_resp_t *preflight(const mz_gw_t *gw, const char *path, const char *origin, const char *method)
{
    const char *headers[] = {mz_fmt("Origin: %s", origin), mz_fmt("Access-Control-Request-Method: %s", method),
                             "Access-Control-Request-Headers: authorization,content-type,x-request-id", NULL};
    mz_req_t req = {.method = "OPTIONS", .path = path, .headers = headers};
    return mz_http(gw, &req);
}

/* A request with an Origin header (origin NULL: none) and an optional body. */
static mz_resp_t *from_origin(const mz_gw_t *gw, const char *method, const char *path, const char *origin,
                              const char *body, const char *token)
{
    const char *headers[] = {origin != NULL ? mz_fmt("Origin: %s", origin) : NULL, "Content-Type: application/json",
                             NULL};
    mz_req_t req = {.method = method, .path = path, .headers = origin != NULL ? headers : headers + 1,
                    .body = body, .token = token};
    return mz_http(gw, &req);
}

/* The headers every answer to an allowed origin carries. */
static void expect_cors_answer(const mz_resp_t *r, const char *origin, bool credentials)
{
    const char *acao = mz_header(r, "Access-Control-Allow-Origin");
    cr_assert(acao != NULL && strcmp(acao, origin) == 0, "Access-Control-Allow-Origin should be %s: %s", origin,
              mz_describe(r));
    cr_assert_eq(mz_header_count(r, "Access-Control-Allow-Origin"), 1, "%s", mz_describe(r));
    const char *expose = mz_header(r, "Access-Control-Expose-Headers");
    cr_assert(expose != NULL && strstr(expose, "X-Mizan-Cache") != NULL && strstr(expose, "X-Request-Id") != NULL,
              "Access-Control-Expose-Headers should list X-Mizan-Cache and X-Request-Id: %s", mz_describe(r));
    const char *vary = mz_header(r, "Vary");
    cr_assert(vary != NULL && strstr(vary, "Origin") != NULL, "Vary: Origin missing: %s", mz_describe(r));
    const char *acac = mz_header(r, "Access-Control-Allow-Credentials");
    if (credentials)
        cr_assert(acac != NULL && strcmp(acac, "true") == 0, "credentials mode: %s", mz_describe(r));
    else
        cr_assert_null(acac, "no credentials configured, yet: %s", mz_describe(r));
}

/* No Access-Control-* header at all. */
static void expect_no_cors(const mz_resp_t *r)
{
    for (size_t i = 0; i < r->nheaders; i++)
        cr_assert(strncasecmp(r->headers[i].name, "Access-Control-", 15) != 0, "unexpected %s: %s",
                  r->headers[i].name, mz_describe(r));
}

Test(cors, default_allows_no_origin)
{
    mz_gw_t *gw = mz_gw_start(NULL);
    for (size_t i = 0; i < NROUTES; i++) {
        mz_resp_t *r = preflight(gw, routes[i].path, APP, routes[i].methods);
        mz_expect_error(r, 403, "FORBIDDEN");
        expect_no_cors(r);
    }
    /* A simple request is served (same-origin tools, curl) but a browser may not read it. */
    mz_resp_t *r = from_origin(gw, "POST", "/api/mizan/call/", APP, mz_call_body("add", "{\"a\": 1, \"b\": 2}"), NULL);
    mz_expect_json(mz_expect_result(r), "3");
    expect_no_cors(r);
    mz_gw_stop_ok(gw);
}

Test(cors, preflight_allowed_on_every_route)
{
    mz_gw_t *gw = start_with_cors("{\"origins\": [\"" APP "\", \"https://other.example.test\"], \"max_age_s\": 300}");
    for (size_t i = 0; i < NROUTES; i++) {
        mz_resp_t *r = preflight(gw, routes[i].path, APP, routes[i].methods);
        cr_assert_eq(r->status, 204, "OPTIONS %s: %s", routes[i].path, mz_describe(r));
        cr_assert_eq(r->body_len, 0, "OPTIONS %s: a 204 has no body: %s", routes[i].path, mz_describe(r));
        expect_cors_answer(r, APP, false);
        const char *m = mz_header(r, "Access-Control-Allow-Methods");
        cr_assert(m != NULL && strcmp(m, routes[i].methods) == 0, "OPTIONS %s: Allow-Methods should be %s: %s",
                  routes[i].path, routes[i].methods, mz_describe(r));
        const char *h = mz_header(r, "Access-Control-Allow-Headers");
        cr_assert(h != NULL && strstr(h, "Authorization") && strstr(h, "Content-Type") && strstr(h, "X-Request-Id"),
                  "OPTIONS %s: Allow-Headers: %s", routes[i].path, mz_describe(r));
        const char *age = mz_header(r, "Access-Control-Max-Age");
        cr_assert(age != NULL && strcmp(age, "300") == 0, "OPTIONS %s: Max-Age: %s", routes[i].path, mz_describe(r));
        cr_assert(mz_request_id_sane(mz_header(r, "X-Request-Id")), "%s", mz_describe(r));
    }
    /* The second listed origin, in another letter case (origins compare case-insensitively). */
    mz_resp_t *r = preflight(gw, "/api/mizan/call/", "HTTPS://Other.Example.Test", "POST");
    cr_assert_eq(r->status, 204, "%s", mz_describe(r));
    mz_gw_stop_ok(gw);
}

Test(cors, preflight_refused_on_every_route)
{
    mz_gw_t *gw = start_with_cors("{\"origins\": [\"" APP "\"]}");
    const char *refused[] = {EVIL, APP ".evil.test", "http://app.example.test", "https://app.example.test:5173",
                             "null", APP "/"};
    for (size_t k = 0; k < sizeof(refused) / sizeof(refused[0]); k++)
        for (size_t i = 0; i < NROUTES; i++) {
            mz_resp_t *r = preflight(gw, routes[i].path, refused[k], routes[i].methods);
            json_t *details = mz_expect_error(r, 403, "FORBIDDEN");
            cr_assert(json_is_null(details), "%s", mz_describe(r));
            cr_assert_null(mz_header(r, "Access-Control-Allow-Origin"), "origin %s on %s: %s", refused[k],
                           routes[i].path, mz_describe(r));
            cr_assert_null(mz_header(r, "Access-Control-Allow-Methods"), "%s", mz_describe(r));
        }
    /* An OPTIONS without Origin is no preflight: 204 with Allow. */
    mz_req_t plain = {.method = "OPTIONS", .path = "/api/mizan/call/"};
    mz_resp_t *r = mz_http(gw, &plain);
    cr_assert_eq(r->status, 204, "%s", mz_describe(r));
    cr_assert_str_eq(mz_header(r, "Allow"), "POST", "%s", mz_describe(r));
    cr_assert_null(mz_header(r, "Access-Control-Allow-Origin"), "%s", mz_describe(r));
    mz_gw_stop_ok(gw);
}

Test(cors, headers_on_successes_errors_and_405)
{
    mz_gw_t *gw = start_with_cors("{\"origins\": [\"" APP "\"]}");
    /* Successes. */
    mz_resp_t *r = from_origin(gw, "POST", "/api/mizan/call/", APP, mz_call_body("add", "{\"a\": 2, \"b\": 3}"), NULL);
    mz_expect_json(mz_expect_result(r), "5");
    expect_cors_answer(r, APP, false);
    r = from_origin(gw, "GET", "/api/mizan/ctx/post/?post_id=1", APP, NULL, NULL);
    mz_expect_status(r, 200);
    cr_assert_not_null(mz_header(r, "X-Mizan-Cache"), "%s", mz_describe(r));
    expect_cors_answer(r, APP, false);
    r = from_origin(gw, "GET", "/api/mizan/schema/", APP, NULL, NULL);
    mz_expect_status(r, 200);
    expect_cors_answer(r, APP, false);
    r = from_origin(gw, "GET", "/metrics", APP, NULL, NULL);
    mz_expect_status(r, 200);
    expect_cors_answer(r, APP, false);
    /* A mutation with a token (the case a browser preflights). */
    char *tok = mz_token(gw, "alice", NULL);
    r = from_origin(gw, "POST", "/api/mizan/call/", APP,
                    mz_call_body("update_post", "{\"post_id\": 1, \"title\": \"Cross-origin\"}"), tok);
    mz_expect_mutation(r);
    expect_cors_answer(r, APP, false);
    /* Errors. */
    r = from_origin(gw, "POST", "/api/mizan/call/", APP, mz_call_body("add", "{\"a\": \"x\"}"), NULL);
    mz_expect_error(r, 422, "VALIDATION_FAILED");
    expect_cors_answer(r, APP, false);
    r = from_origin(gw, "POST", "/api/mizan/call/", APP, mz_call_body("no_such_fn", NULL), NULL);
    mz_expect_error(r, 404, "NOT_FOUND");
    expect_cors_answer(r, APP, false);
    r = from_origin(gw, "POST", "/api/mizan/call/", APP, mz_call_body("whoami", NULL), NULL);
    mz_expect_error(r, 401, "UNAUTHORIZED");
    expect_cors_answer(r, APP, false);
    r = from_origin(gw, "GET", "/api/mizan/ctx/me/", APP, NULL, "not.a.token");
    mz_expect_error(r, 401, "UNAUTHORIZED");
    expect_cors_answer(r, APP, false);
    r = from_origin(gw, "POST", "/api/mizan/call/", APP, mz_call_body("boom", NULL), NULL);
    mz_expect_error(r, 500, "INTERNAL_ERROR");
    expect_cors_answer(r, APP, false);
    r = from_origin(gw, "GET", "/api/mizan/nowhere/", APP, NULL, NULL);
    mz_expect_error(r, 404, "NOT_FOUND");
    expect_cors_answer(r, APP, false);
    /* 405s carry them too (with Allow). */
    r = from_origin(gw, "GET", "/api/mizan/call/", APP, NULL, NULL);
    mz_expect_error(r, 405, "METHOD_NOT_ALLOWED");
    cr_assert_str_eq(mz_header(r, "Allow"), "POST", "%s", mz_describe(r));
    expect_cors_answer(r, APP, false);
    r = from_origin(gw, "DELETE", "/api/mizan/schema/", APP, NULL, NULL);
    mz_expect_error(r, 405, "METHOD_NOT_ALLOWED");
    expect_cors_answer(r, APP, false);
    /* Another origin is served (as to curl) without any Access-Control-* header, but with Vary. */
    r = from_origin(gw, "POST", "/api/mizan/call/", EVIL, mz_call_body("add", "{\"a\": 2, \"b\": 3}"), NULL);
    mz_expect_json(mz_expect_result(r), "5");
    expect_no_cors(r);
    cr_assert(mz_header(r, "Vary") != NULL && strstr(mz_header(r, "Vary"), "Origin"), "%s", mz_describe(r));
    /* And so is a request without Origin. */
    r = from_origin(gw, "GET", "/api/mizan/ctx/feed/", NULL, NULL, NULL);
    mz_expect_status(r, 200);
    expect_no_cors(r);
    mz_gw_stop_ok(gw);
}

Test(cors, event_stream_headers)
{
    mz_gw_t *gw = start_with_cors("{\"origins\": [\"" APP "\"]}");
    const char *headers[] = {"Origin: " APP, NULL};
    mz_resp_t *head = NULL;
    mz_stream_t *s = mz_stream_open(gw, "/api/mizan/events/?contexts=post", headers, NULL, &head);
    cr_assert_eq(head->status, 200, "%s", mz_describe(head));
    cr_assert(strncmp(mz_header(head, "Content-Type"), "text/event-stream", 17) == 0, "%s", mz_describe(head));
    expect_cors_answer(head, APP, false);
    /* The stream works: an invalidation arrives on it. */
    char *tok = mz_token(gw, "alice", NULL);
    mz_expect_mutation(mz_call(gw, "update_post", "{\"post_id\": 1, \"title\": \"Seen by the stream\"}", tok));
    json_t *ev = mz_stream_next_event(s, "invalidate", 10000);
    cr_assert_not_null(ev, "no invalidate event on the cross-origin stream");
    mz_expect_json(json_object_get(ev, "context"), "\"post\"");
    mz_stream_close(s);
    /* A stream refused with an error carries them as well. */
    mz_stream_t *bad = mz_stream_open(gw, "/api/mizan/events/?contexts=nope", headers, NULL, &head);
    (void)bad;
    cr_assert(head->status >= 400, "%s", mz_describe(head));
    expect_cors_answer(head, APP, false);
    mz_gw_stop_ok(gw);
}

Test(cors, credentials_mode)
{
    mz_gw_t *gw = start_with_cors("{\"origins\": [\"" APP "\"], \"credentials\": true}");
    mz_resp_t *r = preflight(gw, "/api/mizan/call/", APP, "POST");
    cr_assert_eq(r->status, 204, "%s", mz_describe(r));
    expect_cors_answer(r, APP, true);
    /* The cookie carries the token (PROTOCOL section 4); the answer names the origin, never "*". */
    char *tok = mz_token(gw, "alice", NULL);
    const char *headers[] = {"Origin: " APP, "Content-Type: application/json", mz_fmt("Cookie: mwt=%s", tok), NULL};
    mz_req_t req = {.method = "POST", .path = "/api/mizan/call/", .headers = headers,
                    .body = mz_call_body("whoami", NULL)};
    r = mz_http(gw, &req);
    json_t *res = mz_expect_result(r);
    mz_expect_json(json_object_get(res, "sub"), "\"alice\"");
    expect_cors_answer(r, APP, true);
    r = from_origin(gw, "POST", "/api/mizan/call/", APP, mz_call_body("whoami", NULL), NULL);
    mz_expect_error(r, 401, "UNAUTHORIZED");
    expect_cors_answer(r, APP, true);
    /* Refused origins get nothing, credentials or not. */
    r = preflight(gw, "/api/mizan/call/", EVIL, "POST");
    mz_expect_error(r, 403, "FORBIDDEN");
    expect_no_cors(r);
    mz_gw_stop_ok(gw);
}

Test(cors, wildcard_echoes_the_origin)
{
    mz_gw_t *gw = start_with_cors("{\"origins\": [\"*\"]}");
    const char *origins[] = {APP, EVIL, "https://anything.example:8443"};
    for (size_t i = 0; i < 3; i++) {
        mz_resp_t *r = preflight(gw, "/api/mizan/ctx/feed/", origins[i], "GET");
        cr_assert_eq(r->status, 204, "%s", mz_describe(r));
        expect_cors_answer(r, origins[i], false);
        r = from_origin(gw, "GET", "/api/mizan/ctx/feed/", origins[i], NULL, NULL);
        mz_expect_status(r, 200);
        expect_cors_answer(r, origins[i], false);
    }
    /* Something that is no origin at all is not echoed. */
    mz_resp_t *r = preflight(gw, "/api/mizan/ctx/feed/", "javascript:alert(1)", "GET");
    mz_expect_error(r, 403, "FORBIDDEN");
    mz_gw_stop_ok(gw);
}

/* mizand --check-config on a config with that cors object must fail naming needle. */
static void expect_bad_cors(const char *cors_json, const char *needle)
{
    char *dir = mz_tmpdir();
    json_t *cfg = mz_keep(mz_config_defaults(dir));
    mz_json_merge(cfg, mz_json("{\"cors\": %s}", cors_json));
    char *path = mz_write_config(dir, "cors.json", cfg);
    const char *argv[] = {mz_env("MIZAN_TEST_BIN"), "--check-config", "--config", path, NULL};
    mz_run_t *run = mz_run(argv, dir, NULL, 30000);
    cr_assert(run->status != 0 && run->status != -1, "cors %s should be refused, exited %d\n%s", cors_json,
              run->status, run->err);
    cr_assert(strstr(run->err, needle) != NULL, "cors %s: stderr should mention %s:\n%s", cors_json, needle,
              run->err);
}

Test(cors, bad_configs_refused_at_start_up)
{
    expect_bad_cors("{\"origins\": [\"*\"], \"credentials\": true}", "cors.credentials");
    expect_bad_cors("{\"origins\": [\"http://app.test/\"]}", "cors.origins[0]");
    expect_bad_cors("{\"origins\": [\"" APP "\", \"app.test\"]}", "cors.origins[1]");
    expect_bad_cors("{\"origins\": \"" APP "\"}", "cors.origins");
    expect_bad_cors("{\"origin\": [\"" APP "\"]}", "cors.origin");
    expect_bad_cors("{\"max_age_s\": -1}", "cors.max_age_s");
    expect_bad_cors("{\"credentials\": \"yes\"}", "cors.credentials");
    expect_bad_cors("[\"" APP "\"]", "\"cors\" must be an object");
}
