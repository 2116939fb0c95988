/*
 * test_auth.c - every caller check of PROTOCOL.md §3-5 end to end: tokens
 * minted by an independent JWT implementation (Debian's python3-jwt) are
 * accepted; every malformed, badly signed, non-HS256, expired or
 * not-yet-valid token is 401 on every API route with a message saying
 * which, never echoing the token; auth requirements give 401 / 403 exactly
 * as the blog example declares them; cookies and key rotation work.
 */
#include <criterion/criterion.h>
#include <string.h>
#include <time.h>

#include "harness.h"

TestSuite(auth, .init = mz_setup, .fini = mz_teardown, .timeout = 120);

/* Mints with PyJWT: header and payload as JSON texts, key as given. */
static char *pyjwt(const char *key, const char *alg, const char *headers_json, const char *payload_json)
{
    const char *script =
        "import sys, json, jwt\n"
        "tok = jwt.encode(json.loads(sys.argv[4]), sys.argv[1], algorithm=sys.argv[2], headers=json.loads(sys.argv[3]))\n"
        "print(tok if isinstance(tok, str) else tok.decode())\n";
    const char *argv[] = {"/usr/bin/python3", "-c", script, key, alg, headers_json, payload_json, NULL};
    mz_run_t *r = mz_run(argv, NULL, NULL, 20000);
    cr_assert_eq(r->status, 0, "python3-jwt failed (install python3-jwt): %s", r->err);
    size_t n = strlen(r->out);
    while (n > 0 && (r->out[n - 1] == '\n' || r->out[n - 1] == '\r'))
        r->out[--n] = '\0';
    return r->out;
}

static long long now_s(void)
{
    return (long long)time(NULL);
}

/* Asserts a 401 with exactly this message on every API route. */
static void expect_401_everywhere(const mz_gw_t *gw, const char *token, const char *message)
{
    const char *paths[] = {"/api/mizan/ctx/post/?post_id=1", "/api/mizan/schema/", "/api/mizan/ctx/feed/", NULL};
    for (size_t i = 0; paths[i] != NULL; i++) {
        mz_resp_t *r = mz_get(gw, paths[i], token);
        mz_expect_error(r, 401, "UNAUTHORIZED");
        cr_expect_str_eq(json_string_value(json_object_get(json_object_get(r->json, "error"), "message")), message,
                         "GET %s", paths[i]);
        if (strlen(token) >= 24)
            cr_expect_null(strstr(r->body, token + strlen(token) - 16), "the token is echoed back");
    }
    /* ping needs no token, but a bad one is still refused */
    mz_resp_t *r = mz_call(gw, "ping", NULL, token);
    mz_expect_error(r, 401, "UNAUTHORIZED");
    cr_expect_str_eq(json_string_value(json_object_get(json_object_get(r->json, "error"), "message")), message);
    /* the event stream refuses it before streaming */
    r = mz_get(gw, "/api/mizan/events/", token);
    mz_expect_error(r, 401, "UNAUTHORIZED");
}

Test(auth, bad_tokens_are_401_on_every_route)
{
    mz_gw_t *gw = mz_gw_start(NULL);
    char *payload_ok = mz_fmt("{\"sub\":\"alice\",\"exp\":%lld}", now_s() + 600);

    expect_401_everywhere(gw, "not-a-token", "token is malformed: it must have three parts");
    expect_401_everywhere(gw, "a.b.c.d", "token is malformed: it must have three parts");
    expect_401_everywhere(gw, "%%%.e30.abc", "token is malformed: invalid base64url");
    expect_401_everywhere(gw, pyjwt("another-secret-that-is-long-enough-000", "HS256", "{}", payload_ok),
                          "token signature is invalid");
    expect_401_everywhere(gw, pyjwt(MZ_TOKEN_SECRET, "HS384", "{}", payload_ok), "token algorithm must be HS256");
    expect_401_everywhere(gw, pyjwt(MZ_TOKEN_SECRET, "HS512", "{}", payload_ok), "token algorithm must be HS256");
    /* alg none, built by hand (with a dummy signature part) */
    expect_401_everywhere(gw, "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJhbGljZSIsImV4cCI6NDEwMjQ0NDgwMH0.c2ln",
                          "token algorithm must be HS256");
    /* alg none with an empty signature part is refused as malformed */
    mz_expect_error(mz_call(gw, "ping", NULL, "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJhbGljZSIsImV4cCI6NDEwMjQ0NDgwMH0."),
                    401, "UNAUTHORIZED");
    expect_401_everywhere(gw, pyjwt(MZ_TOKEN_SECRET, "HS256", "{}", mz_fmt("{\"sub\":\"alice\",\"exp\":%lld}", now_s() - 5)),
                          "token has expired");
    expect_401_everywhere(gw,
                          pyjwt(MZ_TOKEN_SECRET, "HS256", "{}",
                                mz_fmt("{\"sub\":\"alice\",\"exp\":%lld,\"nbf\":%lld}", now_s() + 600, now_s() + 300)),
                          "token is not valid yet");
    expect_401_everywhere(gw, pyjwt(MZ_TOKEN_SECRET, "HS256", "{}", mz_fmt("{\"exp\":%lld}", now_s() + 600)),
                          "token has no subject");
    expect_401_everywhere(gw, pyjwt(MZ_TOKEN_SECRET, "HS256", "{}", "{\"sub\":\"alice\"}"), "token has no expiry");
    expect_401_everywhere(gw, pyjwt(MZ_TOKEN_SECRET, "HS256", "{\"kid\":\"nope\"}", payload_ok),
                          "token key id is unknown");
    expect_401_everywhere(gw,
                          pyjwt(MZ_TOKEN_SECRET, "HS256", "{}",
                                mz_fmt("{\"sub\":\"alice\",\"exp\":%lld,\"staff\":\"yes\"}", now_s() + 600)),
                          "token is malformed: claim staff must be a boolean");

    /* a non-Bearer Authorization header */
    const char *hdrs[] = {"Authorization: Basic YWxpY2U6c2VjcmV0", NULL};
    mz_req_t req = {.method = "GET", .path = "/api/mizan/schema/", .headers = hdrs};
    mz_resp_t *r = mz_http(gw, &req);
    mz_expect_error(r, 401, "UNAUTHORIZED");
    mz_gw_stop_ok(gw);
}

Test(auth, tokens_from_an_independent_implementation_are_accepted)
{
    mz_gw_t *gw = mz_gw_start(NULL);
    const char *types[] = {"{\"typ\":\"JWT\"}", "{\"typ\":\"MWT\"}", "{}", NULL};
    for (size_t i = 0; types[i] != NULL; i++) {
        char *tok = pyjwt(MZ_TOKEN_SECRET, "HS256", types[i],
                          mz_fmt("{\"sub\":\"carol\",\"exp\":%lld,\"staff\":true,\"perms\":[\"blog.view_drafts\"],"
                                 "\"extra\":{\"ignored\":1}}",
                                 now_s() + 600));
        mz_resp_t *r = mz_call(gw, "whoami", NULL, tok);
        json_t *res = mz_expect_result(r);
        mz_expect_json(res, "{\"sub\":\"carol\",\"staff\":true,\"superuser\":false,\"perms\":[\"blog.view_drafts\"]}");
    }
    /* the PROTOCOL.md test vector itself (exp 2100-01-01) */
    const char *vector = "eyJhbGciOiJIUzI1NiIsInR5cCI6Ik1XVCJ9.eyJzdWIiOiJhbGljZSIsImV4cCI6NDEwMjQ0NDgwMCwic3RhZmYiOnRydWUsInBlcm1zIjpbImJsb2cuYWRkX3Bvc3QiXX0.8ZNtHZnN0nAQpS6CUizlZOqMoP2oFuNmePKbCffP-Tc";
    json_t *res = mz_expect_result(mz_call(gw, "whoami", NULL, vector));
    mz_expect_json(res, "{\"sub\":\"alice\",\"staff\":true,\"superuser\":false,\"perms\":[\"blog.add_post\"]}");
    mz_gw_stop_ok(gw);
}

Test(auth, cookie_and_leeway_and_rotation)
{
    json_t *cfg = mz_json("{\"token\":{\"keys\":[{\"kid\":\"old\",\"secret\":\"old-rotation-secret-0123456789abcdef\"},"
                          "{\"kid\":\"new\",\"secret\":\"new-rotation-secret-0123456789abcdef\"}],"
                          "\"primary\":\"new\",\"leeway_s\":30,\"cookie\":\"session_mwt\"}}");
    mz_gw_t *gw = mz_gw_start(cfg);
    long long exp = now_s() + 600;
    char *payload = mz_fmt("{\"sub\":\"dave\",\"exp\":%lld}", exp);
    /* kid selects the key; no kid means the primary ("new") */
    mz_expect_result(mz_call(gw, "whoami", NULL, pyjwt("old-rotation-secret-0123456789abcdef", "HS256", "{\"kid\":\"old\"}", payload)));
    mz_expect_result(mz_call(gw, "whoami", NULL, pyjwt("new-rotation-secret-0123456789abcdef", "HS256", "{}", payload)));
    mz_expect_error(mz_call(gw, "whoami", NULL, pyjwt("old-rotation-secret-0123456789abcdef", "HS256", "{}", payload)), 401,
                    "UNAUTHORIZED");
    /* expired 10 s ago but within the 30 s leeway */
    char *recent = pyjwt("new-rotation-secret-0123456789abcdef", "HS256", "{}",
                         mz_fmt("{\"sub\":\"dave\",\"exp\":%lld}", now_s() - 10));
    mz_expect_result(mz_call(gw, "whoami", NULL, recent));
    /* the configured cookie carries a token; another cookie name does not */
    char *cookie = mz_fmt("Cookie: theme=dark; session_mwt=%s; other=1", pyjwt("new-rotation-secret-0123456789abcdef", "HS256", "{}", payload));
    const char *hdrs[] = {"Content-Type: application/json", cookie, NULL};
    mz_req_t req = {.method = "POST", .path = "/api/mizan/call/", .headers = hdrs, .body = "{\"function\":\"whoami\"}"};
    json_t *res = mz_expect_result(mz_http(gw, &req));
    cr_expect_str_eq(json_string_value(json_object_get(res, "sub")), "dave");
    char *wrong = mz_fmt("Cookie: mwt=%s", pyjwt("new-rotation-secret-0123456789abcdef", "HS256", "{}", payload));
    const char *hdrs2[] = {"Content-Type: application/json", wrong, NULL};
    req.headers = hdrs2;
    mz_expect_error(mz_http(gw, &req), 401, "UNAUTHORIZED");
    /* mizand token mints with the primary key by default and with --kid on request */
    mz_expect_result(mz_call(gw, "whoami", NULL, mz_token(gw, "erin", NULL)));
    mz_expect_result(mz_call(gw, "whoami", NULL, mz_token(gw, "erin", "--kid", "old", NULL)));
    mz_gw_stop_ok(gw);
}

/* Every requirement of the blog example against every kind of caller. */
Test(auth, requirement_matrix)
{
    mz_gw_t *gw = mz_gw_start(NULL);
    const char *anon = NULL;
    char *plain = mz_token(gw, "bob", NULL);
    char *staff = mz_token(gw, "sam", "--staff", NULL);
    char *viewer = mz_token(gw, "vic", "--perm", "blog.view_drafts", NULL);
    char *publisher = mz_token(gw, "pat", "--perm", "blog.publish_post", NULL);
    char *root = mz_token(gw, "root", "--superuser", NULL);

    struct {
        const char *fn, *args;
        const char *token;
        int status;
    } cases[] = {
        {"ping", NULL, anon, 200},
        {"whoami", NULL, anon, 401},
        {"whoami", NULL, plain, 200},
        {"list_drafts", NULL, anon, 401},
        {"list_drafts", NULL, plain, 403},
        {"list_drafts", NULL, staff, 403},
        {"list_drafts", NULL, viewer, 200},
        {"list_drafts", NULL, root, 200},
        {"site_stats", NULL, staff, 403},
        {"site_stats", NULL, viewer, 403},
        {"site_stats", NULL, root, 200},
        {"create_post", "{\"title\":\"t\",\"body\":\"b\"}", anon, 401},
        {"create_post", "{\"title\":\"t\",\"body\":\"b\",\"published\":false}", plain, 200},
        {"delete_post", "{\"post_id\":999}", plain, 403},
        {"delete_post", "{\"post_id\":999}", anon, 401},
        {"delete_post", "{\"post_id\":999}", staff, 404},
        {"publish_post", "{\"post_id\":4}", plain, 403},
        {"publish_post", "{\"post_id\":4}", publisher, 200},
        {"publish_post", "{\"post_id\":4}", root, 200},
        {"update_post", "{\"post_id\":1,\"title\":\"x\"}", plain, 403}, /* not alice's post */
        {"update_post", "{\"post_id\":1,\"title\":\"x\"}", staff, 200},
        {"update_post", "{\"post_id\":1,\"title\":\"x\"}", root, 200},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        mz_resp_t *r = mz_call(gw, cases[i].fn, cases[i].args, cases[i].token);
        cr_expect_eq(r->status, cases[i].status, "case %zu: %s -> %d, expected %d: %s", i, cases[i].fn, r->status,
                     cases[i].status, r->body);
        if (cases[i].status == 401)
            mz_expect_error(r, 401, "UNAUTHORIZED");
        else if (cases[i].status == 403)
            mz_expect_error(r, 403, "FORBIDDEN");
    }
    /* contexts demand every requirement of their functions */
    mz_expect_error(mz_get(gw, "/api/mizan/ctx/me/", NULL), 401, "UNAUTHORIZED");
    mz_expect_status(mz_get(gw, "/api/mizan/ctx/me/", plain), 200);
    mz_expect_error(mz_get(gw, "/api/mizan/ctx/drafts/", NULL), 401, "UNAUTHORIZED");
    mz_expect_error(mz_get(gw, "/api/mizan/ctx/drafts/", plain), 403, "FORBIDDEN");
    mz_expect_status(mz_get(gw, "/api/mizan/ctx/drafts/", viewer), 200);
    mz_expect_status(mz_get(gw, "/api/mizan/ctx/drafts/", root), 200);
    mz_gw_stop_ok(gw);
}

/* PROTOCOL §3-5 hardening of what a caller sends. */
Test(auth, request_hardening)
{
    mz_gw_t *gw = mz_gw_start(NULL);
    /* nesting deeper than the limit (64) is 400 before parsing */
    char *deep = mz_fmt("{\"function\":\"echo\",\"args\":{\"value\":%s1%s}}", mz_repeat('[', 70), mz_repeat(']', 70));
    mz_expect_error(mz_post(gw, "/api/mizan/call/", deep, NULL), 400, "BAD_REQUEST");
    char *ok = mz_fmt("{\"function\":\"echo\",\"args\":{\"value\":%s1%s}}", mz_repeat('[', 60), mz_repeat(']', 60));
    mz_expect_result(mz_post(gw, "/api/mizan/call/", ok, NULL));
    /* invalid UTF-8 */
    mz_expect_error(mz_post(gw, "/api/mizan/call/", "{\"function\":\"echo\",\"args\":{\"value\":\"\xff\xfe\"}}", NULL), 400,
                    "BAD_REQUEST");
    /* integers outside int64 are refused, never wrapped */
    mz_expect_error(mz_post(gw, "/api/mizan/call/", "{\"function\":\"add\",\"args\":{\"a\":9223372036854775808,\"b\":1}}", NULL),
                    400, "BAD_REQUEST");
    mz_expect_error(mz_call(gw, "add", "{\"a\":9223372036854775807,\"b\":1}", NULL), 400, "BAD_REQUEST");
    /* query strings: malformed escapes and repeated keys are 400; undeclared params 422 */
    mz_expect_error(mz_get(gw, "/api/mizan/ctx/post/?post_id=%zz", NULL), 400, "BAD_REQUEST");
    mz_expect_error(mz_get(gw, "/api/mizan/ctx/post/?post_id=1&post_id=2", NULL), 400, "BAD_REQUEST");
    json_t *d = mz_expect_error(mz_get(gw, "/api/mizan/ctx/post/?post_id=1&utm_source=x", NULL), 422, "VALIDATION_FAILED");
    mz_expect_violation(d, "[\"params\",\"utm_source\"]", "additionalProperties");
    /* percent-encoded and plus-encoded values decode before coercion */
    mz_expect_status(mz_get(gw, "/api/mizan/ctx/post/?post_id=%31", NULL), 200);
    mz_gw_stop_ok(gw);
}
