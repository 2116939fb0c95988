/*
 * test_upstream.c - end-to-end tests of upstream functions (docs/upstream.md)
 * against a real HTTP service on loopback: examples/upstream/blog_api.py
 * with its test routes (upstream_support.h).
 *
 * Covered: args to path / query / body, static and identity headers and
 * token forwarding, RFC 6901 result pointers, a context mixing native and
 * upstream functions evaluated concurrently (timed), every error mapping
 * (no upstream body or address reaching the client), timeouts, retries
 * (queries on connection failure only), the circuit breaker opening and
 * recovering through a half-open probe, keep-alive connection reuse and
 * the pool bound (counted by the service), cache and invalidation compared
 * with the native blog module, the shipped example config, config errors,
 * and shutdown with requests in flight.
 *
 * Every test starts its own service and gateway (with the blog module too,
 * for the native functions), and ends with a clean stop so that a sanitizer
 * report in the gateway fails the test.
 */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "upstream_support.h"

TestSuite(upstream, .init = mz_setup, .fini = mz_teardown, .timeout = 240);

/* ------------------------------------------------------------------------
 * The test configuration
 * ---------------------------------------------------------------------- */

/* JSON written with single quotes (no apostrophes needed), @URL@ and @DEAD@
 * replaced by the service's URL and a URL nobody listens on. */
static json_t *jq(const char *text, const mz_upstream_t *u, const char *dead)
{
    size_t cap = strlen(text) * 2 + 256;
    char *out = mz_alloc(cap);
    size_t n = 0;
    for (const char *p = text; *p != '\0';) {
        const char *rep = NULL;
        size_t skip = 1;
        if (strncmp(p, "@URL@", 5) == 0) {
            rep = u != NULL ? u->url : "http://127.0.0.1:9";
            skip = 5;
        } else if (strncmp(p, "@DEAD@", 6) == 0) {
            rep = dead != NULL ? dead : "http://127.0.0.1:9";
            skip = 6;
        }
        if (rep != NULL) {
            size_t k = strlen(rep);
            cr_assert(n + k < cap);
            memcpy(out + n, rep, k);
            n += k;
        } else {
            cr_assert(n + 1 < cap);
            out[n++] = *p == '\'' ? '"' : *p;
        }
        p += skip;
    }
    out[n] = '\0';
    return mz_json("%s", out);
}

#define S_MS                                                                                 \
    "{'type':'object','properties':{'ms':{'type':'integer','minimum':0}},'required':['ms'],"  \
    "'additionalProperties':false}"
#define S_POST_ID                                                                                   \
    "{'type':'object','properties':{'post_id':{'type':'integer','minimum':1}},'required':['post_id']," \
    "'additionalProperties':false}"

static const char *const UPSTREAMS =
    "{'api': {'url': '@URL@', 'pool_size': 4, 'queue_size': 64, 'retries': 2, 'retry_backoff_ms': 10,"
    "         'connect_timeout_ms': 500, 'breaker': {'failures': 0}, 'headers': {'X-Api-Key': 'k1'}},"
    " 'based': {'url': '@URL@/_test/echo/base/', 'breaker': {'failures': 0}},"
    " 'fwd': {'url': '@URL@', 'forward_token': true,"
    "         'identity': {'sub': 'X-User', 'staff': false, 'superuser': false, 'perms': 'X-Perms'}},"
    " 'noident': {'url': '@URL@', 'identity': false},"
    " 'fragile': {'url': '@URL@', 'retries': 0, 'breaker': {'failures': 3, 'cooldown_ms': 1500}},"
    " 'dead': {'url': '@DEAD@', 'retries': 1, 'retry_backoff_ms': 5, 'breaker': {'failures': 0}},"
    " 'r1': {'url': '@URL@', 'retries': 2, 'retry_backoff_ms': 5, 'breaker': {'failures': 0}},"
    " 'r2': {'url': '@URL@', 'retries': 2, 'retry_backoff_ms': 5, 'breaker': {'failures': 0}},"
    " 'r3': {'url': '@URL@', 'retries': 2, 'retry_backoff_ms': 5, 'breaker': {'failures': 0}},"
    " 'tiny': {'url': '@URL@', 'pool_size': 1, 'queue_size': 0, 'breaker': {'failures': 0}},"
    " 'queued': {'url': '@URL@', 'pool_size': 1, 'queue_size': 16, 'breaker': {'failures': 0}}}";

/* One declaration per string (each under the C string length limit). */
static const char *const FUNCTIONS[] = {
    "{'name': 'up_echo_get', 'upstream': {'service': 'api', 'path': '/_test/echo/items/{id}/{name}',"
    "   'headers': {'X-Fn': 'f1'}},"
    " 'input_schema': {'type': 'object', 'properties': {'id': {'type': 'integer'}, 'name': {'type': 'string'},"
    "   'q': {'type': 'string'}, 'n': {'type': 'number'}, 'flags': {'type': 'array'}, 'f': {'type': 'boolean'},"
    "   'obj': {'type': 'object'}, 'skip': {'type': 'null'}}, 'required': ['id', 'name'],"
    "   'additionalProperties': false}}",
    "{'name': 'up_echo_post', 'upstream': {'service': 'api', 'method': 'POST', 'path': '/_test/echo/things/{id}'},"
    " 'input_schema': {'type': 'object', 'properties': {'id': {'type': 'integer'}}, 'required': ['id']}}",
    "{'name': 'up_echo_put', 'upstream': {'service': 'api', 'method': 'PUT', 'path': '/_test/echo/things/{id}',"
    "   'query': ['v'], 'body': ['title']},"
    " 'input_schema': {'type': 'object', 'properties': {'id': {'type': 'integer'}, 'v': {'type': 'string'},"
    "   'title': {'type': 'string'}, 'other': {'type': 'string'}}, 'required': ['id']}}",
    "{'name': 'up_echo_patch', 'upstream': {'service': 'api', 'method': 'PATCH', 'path': '/_test/echo/p',"
    "   'query': true}}",
    "{'name': 'up_echo_delete', 'upstream': {'service': 'api', 'method': 'DELETE', 'path': '/_test/echo/things/{id}'},"
    " 'input_schema': {'type': 'object', 'properties': {'id': {'type': 'integer'}}, 'required': ['id']}}",
    "{'name': 'up_based', 'upstream': {'service': 'based', 'path': '/x'}}",
    "{'name': 'up_whoami', 'auth': true, 'upstream': {'service': 'api', 'path': '/_test/echo/whoami'}}",
    "{'name': 'up_anon', 'upstream': {'service': 'api', 'path': '/_test/echo/anon'}}",
    "{'name': 'up_fwd', 'auth': true, 'upstream': {'service': 'fwd', 'path': '/_test/echo/fwd'}}",
    "{'name': 'up_noident', 'auth': true, 'upstream': {'service': 'noident', 'path': '/_test/echo/noident'}}",
    "{'name': 'up_status', 'upstream': {'service': 'api', 'path': '/_test/status/{code}'},"
    " 'input_schema': {'type': 'object', 'properties': {'code': {'type': 'integer'}, 'text': {'type': 'boolean'},"
    "   'violations': {'type': 'boolean'}}, 'required': ['code'], 'additionalProperties': false}}",
    "{'name': 'up_notjson', 'upstream': {'service': 'api', 'path': '/_test/notjson'}}",
    "{'name': 'up_empty', 'upstream': {'service': 'api', 'path': '/_test/empty'}}",
    "{'name': 'up_slow', 'timeout_ms': 400, 'input_schema': " S_MS ","
    " 'upstream': {'service': 'api', 'path': '/_test/slow', 'identity': false}}",
    "{'name': 'up_slow2', 'input_schema': " S_MS ","
    " 'upstream': {'service': 'api', 'path': '/_test/slow', 'identity': false}}",
    "{'name': 'up_slow3', 'input_schema': " S_MS ","
    " 'upstream': {'service': 'api', 'path': '/_test/slow', 'identity': false}}",
    "{'name': 'up_tiny', 'input_schema': " S_MS ", 'upstream': {'service': 'tiny', 'path': '/_test/slow'}}",
    "{'name': 'up_queued', 'input_schema': " S_MS ", 'upstream': {'service': 'queued', 'path': '/_test/slow'}}",
    "{'name': 'up_get_post', 'input_schema': " S_POST_ID ","
    " 'upstream': {'service': 'api', 'path': '/posts/{post_id}', 'result': '/post',"
    "   'identity': false}}",
    "{'name': 'up_list_comments', 'input_schema': " S_POST_ID ","
    " 'upstream': {'service': 'api', 'path': '/posts/{post_id}/comments', 'result': '/comments',"
    "   'identity': false}}",
    "{'name': 'up_get_author', 'input_schema': " S_POST_ID ","
    " 'upstream': {'service': 'api', 'path': '/posts/{post_id}/author', 'result': '/author',"
    "   'identity': false}}",
    "{'name': 'up_update_post', 'kind': 'mutation', 'auth': true, 'invalidates': ['up_post'],"
    " 'input_schema': {'type': 'object', 'properties': {'post_id': {'type': 'integer', 'minimum': 1},"
    "   'title': {'type': 'string'}, 'body': {'type': 'string'}}, 'required': ['post_id'],"
    "   'additionalProperties': false},"
    " 'upstream': {'service': 'api', 'method': 'PATCH', 'path': '/posts/{post_id}', 'body': ['title', 'body'],"
    "   'result': '/post'}}",
    "{'name': 'fragile_get', 'input_schema': " S_POST_ID ","
    " 'upstream': {'service': 'fragile', 'path': '/posts/{post_id}', 'result': '/post'}}",
    "{'name': 'dead_get', 'upstream': {'service': 'dead', 'path': '/posts/1'}}",
    "{'name': 'r1_get', 'upstream': {'service': 'r1', 'path': '/posts/1', 'result': '/post'}}",
    "{'name': 'r2_mut', 'kind': 'mutation', 'upstream': {'service': 'r2', 'method': 'POST', 'path': '/_test/echo/r2'}}",
    "{'name': 'r3_get', 'upstream': {'service': 'r3', 'path': '/posts/1'}}",
    NULL,
};

static const char *const CONTEXTS =
    "[{'name': 'up_post', 'ttl': 60, 'params_schema': " S_POST_ID ","
    "  'functions': ['up_get_post', 'up_list_comments', 'up_get_author']},"
    " {'name': 'mixed', 'ttl': 0, 'params_schema': " S_MS ", 'functions': ['slow_a', 'up_slow2', 'up_slow3']},"
    " {'name': 'slowmix', 'ttl': 60, 'params_schema': " S_MS ", 'functions': ['up_slow', 'slow_a']}]";

/* RFC 6901 section 5: pointer -> expected value (JSON text). */
static const struct {
    const char *name;
    const char *pointer;
    const char *expect; /* NULL: no such value */
} POINTERS[] = {
    {"ptr_whole", "", NULL},
    {"ptr_foo", "/foo", "[\"bar\", \"baz\"]"},
    {"ptr_foo0", "/foo/0", "\"bar\""},
    {"ptr_empty", "/", "0"},
    {"ptr_slash", "/a~1b", "1"},
    {"ptr_percent", "/c%d", "2"},
    {"ptr_caret", "/e^f", "3"},
    {"ptr_pipe", "/g|h", "4"},
    {"ptr_backslash", "/i\\j", "5"},
    {"ptr_quote", "/k\"l", "6"},
    {"ptr_space", "/ ", "7"},
    {"ptr_tilde", "/m~0n", "8"},
    {"ptr_missing", "/nope", NULL},
    {"ptr_leading_zero", "/foo/01", NULL},
    {"ptr_dash", "/foo/-", NULL},
    {"ptr_past_end", "/foo/2", NULL},
    {"ptr_through_scalar", "/a~1b/x", NULL},
};
#define NPOINTERS (sizeof(POINTERS) / sizeof(POINTERS[0]))

/* The whole test config for service u (borrowed, arena-owned). */
static json_t *test_config(const mz_upstream_t *u, const char *dead)
{
    json_t *cfg = json_object();
    json_object_set(cfg, "upstreams", jq(UPSTREAMS, u, dead));
    json_t *fns = json_array();
    for (size_t i = 0; FUNCTIONS[i] != NULL; i++)
        json_array_append(fns, jq(FUNCTIONS[i], u, dead));
    for (size_t i = 0; i < NPOINTERS; i++)
        json_array_append_new(fns, json_pack("{s:s, s:{s:s, s:s, s:s}}", "name", POINTERS[i].name, "upstream",
                                             "service", "api", "path", "/_test/rfc6901", "result",
                                             POINTERS[i].pointer));
    json_object_set_new(cfg, "functions", fns);
    json_object_set(cfg, "contexts", jq(CONTEXTS, u, dead));
    return mz_keep(cfg);
}

static mz_gw_t *start_gateway(const mz_upstream_t *u, const char *extra_json)
{
    char *dead = mz_fmt("http://127.0.0.1:%d", mz_free_port());
    json_t *cfg = test_config(u, dead);
    if (extra_json != NULL)
        mz_json_merge(cfg, jq(extra_json, u, dead));
    return mz_gw_start(cfg);
}

/* The echo route's view of the request behind a successful call. */
static json_t *echo_of(mz_resp_t *r)
{
    json_t *res = mz_expect_result(r);
    cr_assert(json_is_object(res) && json_is_string(json_object_get(res, "method")), "not an echo: %s",
              mz_dump(res));
    return res;
}

static const char *header_of(const json_t *echo, const char *lower_name)
{
    return json_string_value(json_object_get(json_object_get(echo, "headers"), lower_name));
}

/* The response leaks nothing of the upstream: no address, port or body. */
static void expect_no_leak(const mz_resp_t *r, const mz_upstream_t *u)
{
    char *port = mz_fmt("%d", u->port);
    cr_assert(strstr(r->body, "secret-upstream-detail") == NULL && strstr(r->body, "10.9.8.7") == NULL &&
                  strstr(r->body, "127.0.0.1") == NULL && strstr(r->body, port) == NULL &&
                  strstr(r->body, "Traceback") == NULL,
              "the response leaks upstream details:\n%s", mz_describe(r));
}

static const char *error_message(const mz_resp_t *r)
{
    return json_string_value(json_object_get(json_object_get(r->json, "error"), "message"));
}

/* ------------------------------------------------------------------------
 * Mapping arguments, headers and results
 * ---------------------------------------------------------------------- */

Test(upstream, args_map_to_path_query_and_body)
{
    mz_upstream_t *u = mz_upstream_start();
    mz_gw_t *gw = start_gateway(u, NULL);

    /* GET: path placeholders percent-encoded, the rest in the query string. */
    mz_resp_t *r = mz_call(gw, "up_echo_get",
                           "{\"id\": 7, \"name\": \"a/b c\", \"q\": \"hello world&x=1\", \"n\": 2.5,"
                           " \"flags\": [true, false], \"f\": true, \"obj\": {\"k\": \"v\"}, \"skip\": null}",
                           NULL);
    json_t *e = echo_of(r);
    cr_expect_str_eq(json_string_value(json_object_get(e, "method")), "GET");
    cr_expect_str_eq(json_string_value(json_object_get(e, "path")), "/_test/echo/items/7/a%2Fb%20c");
    mz_expect_json(json_object_get(e, "args"),
                   "{\"q\": [\"hello world&x=1\"], \"n\": [\"2.5\"], \"flags\": [\"true\", \"false\"],"
                   " \"f\": [\"true\"], \"obj\": [\"{\\\"k\\\":\\\"v\\\"}\"]}");
    cr_expect(json_is_null(json_object_get(e, "body")), "a GET carries no body: %s", mz_dump(e));
    cr_expect_str_eq(header_of(e, "host"), mz_fmt("127.0.0.1:%d", u->port));
    cr_expect_str_eq(header_of(e, "accept"), "application/json");
    cr_expect_str_eq(header_of(e, "x-api-key"), "k1");
    cr_expect_str_eq(header_of(e, "x-fn"), "f1");
    cr_expect_str_eq(header_of(e, "x-request-id"), mz_header(r, "X-Request-Id"));

    /* POST: the rest (declared or not) in a JSON body. */
    e = echo_of(mz_call(gw, "up_echo_post",
                        "{\"id\": 3, \"title\": \"T\", \"count\": 2, \"tags\": [\"a\", \"b\"], \"extra\": {\"z\": 1}}",
                        NULL));
    cr_expect_str_eq(json_string_value(json_object_get(e, "method")), "POST");
    cr_expect_str_eq(json_string_value(json_object_get(e, "path")), "/_test/echo/things/3");
    cr_expect_str_eq(json_string_value(json_object_get(e, "query")), "");
    mz_expect_json(json_object_get(e, "body"),
                   "{\"title\": \"T\", \"count\": 2, \"tags\": [\"a\", \"b\"], \"extra\": {\"z\": 1}}");
    cr_expect_str_eq(header_of(e, "content-type"), "application/json");

    /* PUT with explicit lists: v to the query, title to the body, other nowhere. */
    e = echo_of(mz_call(gw, "up_echo_put", "{\"id\": 4, \"v\": \"x y\", \"title\": \"t\", \"other\": \"o\"}", NULL));
    cr_expect_str_eq(json_string_value(json_object_get(e, "method")), "PUT");
    cr_expect_str_eq(json_string_value(json_object_get(e, "query")), "v=x%20y");
    mz_expect_json(json_object_get(e, "body"), "{\"title\": \"t\"}");

    /* PATCH with "query": true: everything in the query, an empty body. */
    e = echo_of(mz_call(gw, "up_echo_patch", "{\"a\": 1}", NULL));
    cr_expect_str_eq(json_string_value(json_object_get(e, "method")), "PATCH");
    cr_expect_str_eq(json_string_value(json_object_get(e, "query")), "a=1");
    cr_expect(json_is_null(json_object_get(e, "body")));
    cr_expect_str_eq(header_of(e, "content-length"), "0");

    /* DELETE: the rest in the query. */
    e = echo_of(mz_call(gw, "up_echo_delete", "{\"id\": 5, \"hard\": true}", NULL));
    cr_expect_str_eq(json_string_value(json_object_get(e, "method")), "DELETE");
    cr_expect_str_eq(json_string_value(json_object_get(e, "path")), "/_test/echo/things/5");
    cr_expect_str_eq(json_string_value(json_object_get(e, "query")), "hard=true");

    /* The base path of the upstream URL prefixes every path. */
    e = echo_of(mz_call(gw, "up_based", NULL, NULL));
    cr_expect_str_eq(json_string_value(json_object_get(e, "path")), "/_test/echo/base/x");

    /* A path argument cannot climb out of its segment. */
    const char *bad[] = {"\"..\"", "\".\"", "\"\""};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        r = mz_call(gw, "up_echo_get", mz_fmt("{\"id\": 1, \"name\": %s}", bad[i]), NULL);
        json_t *details = mz_expect_error(r, 422, "VALIDATION_FAILED");
        mz_expect_violation(details, "[\"args\", \"name\"]", "upstream");
    }
    /* The gateway's own schema still runs first. */
    r = mz_call(gw, "up_echo_get", "{\"id\": \"seven\", \"name\": \"x\"}", NULL);
    mz_expect_violation(mz_expect_error(r, 422, "VALIDATION_FAILED"), "[\"args\", \"id\"]", "type");
    mz_gw_stop_ok(gw);
}

Test(upstream, identity_headers_and_token_forwarding)
{
    mz_upstream_t *u = mz_upstream_start();
    mz_gw_t *gw = start_gateway(u, NULL);
    char *tok = mz_token(gw, "alice", "--staff", "--perm", "blog.add_post", "--perm", "x.y", NULL);

    json_t *e = echo_of(mz_call(gw, "up_whoami", NULL, tok));
    cr_expect_str_eq(header_of(e, "x-mizan-sub"), "alice");
    cr_expect_str_eq(header_of(e, "x-mizan-staff"), "true");
    cr_expect_str_eq(header_of(e, "x-mizan-superuser"), "false");
    cr_expect_str_eq(header_of(e, "x-mizan-perms"), "blog.add_post,x.y");
    cr_expect(header_of(e, "authorization") == NULL, "the token is not forwarded unless configured: %s",
              mz_dump(e));
    char *all = mz_dump(e);
    cr_expect(strstr(all, MZ_TOKEN_SECRET) == NULL && strstr(all, MZ_CACHE_SECRET) == NULL,
              "a gateway secret reached the upstream: %s", all);

    /* Identity headers a client sends never pass through; anonymous sends none. */
    const char *hdrs[] = {"Content-Type: application/json", "X-Mizan-Sub: mallory", "X-Mizan-Superuser: true",
                          "Cookie: other=1", NULL};
    char *body = mz_call_body("up_anon", NULL);
    mz_req_t req = {.method = "POST", .path = "/api/mizan/call/", .headers = hdrs, .body = body};
    e = echo_of(mz_http(gw, &req));
    json_t *h = json_object_get(e, "headers");
    const char *key;
    json_t *value;
    json_object_foreach(h, key, value)
    {
        cr_expect(strncmp(key, "x-mizan-", 8) != 0 && strcmp(key, "cookie") != 0 && strcmp(key, "authorization") != 0,
                  "header %s reached the upstream of an anonymous call: %s", key, mz_dump(h));
    }
    /* up_whoami needs a token: no call reaches the upstream without one. */
    mz_expect_error(mz_call(gw, "up_whoami", NULL, NULL), 401, "UNAUTHORIZED");

    /* Configured names, some identity fields off, and the caller's own token. */
    e = echo_of(mz_call(gw, "up_fwd", NULL, tok));
    cr_expect_str_eq(header_of(e, "x-user"), "alice");
    cr_expect_str_eq(header_of(e, "x-perms"), "blog.add_post,x.y");
    cr_expect(header_of(e, "x-mizan-sub") == NULL && header_of(e, "x-mizan-staff") == NULL &&
              header_of(e, "x-mizan-superuser") == NULL);
    cr_expect_str_eq(header_of(e, "authorization"), mz_fmt("Bearer %s", tok));
    /* A token that came in a cookie is forwarded as a bearer token too. */
    const char *cookie_hdrs[] = {"Content-Type: application/json", mz_fmt("Cookie: mwt=%s", tok), NULL};
    mz_req_t creq = {.method = "POST", .path = "/api/mizan/call/", .headers = cookie_hdrs,
                     .body = mz_call_body("up_fwd", NULL)};
    e = echo_of(mz_http(gw, &creq));
    cr_expect_str_eq(header_of(e, "authorization"), mz_fmt("Bearer %s", tok));
    cr_expect(header_of(e, "cookie") == NULL);

    /* identity: false sends none of them. */
    e = echo_of(mz_call(gw, "up_noident", NULL, tok));
    h = json_object_get(e, "headers");
    json_object_foreach(h, key, value)
    {
        cr_expect(strncmp(key, "x-mizan-", 8) != 0 && strcmp(key, "authorization") != 0, "unexpected %s in %s", key,
                  mz_dump(h));
    }
    mz_gw_stop_ok(gw);
}

Test(upstream, json_pointer_results)
{
    mz_upstream_t *u = mz_upstream_start();
    mz_gw_t *gw = start_gateway(u, NULL);
    for (size_t i = 0; i < NPOINTERS; i++) {
        mz_resp_t *r = mz_call(gw, POINTERS[i].name, NULL, NULL);
        if (strcmp(POINTERS[i].name, "ptr_whole") == 0) {
            json_t *res = mz_expect_result(r);
            cr_expect(json_object_size(res) == 10 && json_is_array(json_object_get(res, "foo")),
                      "the empty pointer is the whole document: %s", mz_dump(res));
            continue;
        }
        if (POINTERS[i].expect != NULL) {
            cr_expect(json_equal(mz_expect_result(r), mz_json("%s", POINTERS[i].expect)),
                      "%s (pointer %s): got %s, want %s", POINTERS[i].name, POINTERS[i].pointer, r->body,
                      POINTERS[i].expect);
            continue;
        }
        /* A pointer that finds nothing is the configuration's fault: 500, generic. */
        json_t *details = mz_expect_error(r, 500, "INTERNAL_ERROR");
        cr_expect(json_is_string(json_object_get(details, "request_id")), "%s", mz_describe(r));
        cr_expect_str_eq(error_message(r), "internal error", "%s: %s", POINTERS[i].name, mz_describe(r));
    }
    mz_gw_stop_ok(gw);
}

/* ------------------------------------------------------------------------
 * Concurrency in a context
 * ---------------------------------------------------------------------- */

Test(upstream, context_mixes_native_and_upstream_concurrently)
{
    mz_upstream_t *u = mz_upstream_start();
    mz_gw_t *gw = start_gateway(u, NULL);
    /* Warm the connections so the timing is about the functions. */
    mz_get(gw, "/api/mizan/ctx/mixed/?ms=0", NULL);
    mz_resp_t *r = mz_get(gw, "/api/mizan/ctx/mixed/?ms=300", NULL);
    mz_expect_status(r, 200);
    mz_expect_json(json_object_get(r->json, "data"),
                   "{\"slow_a\": {\"fn\": \"slow_a\", \"slept_ms\": 300}, \"up_slow2\": {\"slept_ms\": 300},"
                   " \"up_slow3\": {\"slept_ms\": 300}}");
    mz_expect_json(json_object_get(r->json, "errors"), "{}");
    cr_expect_str_eq(mz_header(r, "X-Mizan-Cache"), "BYPASS");
    /* One native and two upstream functions of 300 ms each: about 300 ms, not 900. */
    cr_expect(r->elapsed_ms >= 295 && r->elapsed_ms < 650, "mixed context took %.0f ms (sequential: 900)",
              r->elapsed_ms);
    fprintf(stderr, "upstream figures: mixed context (3 x 300 ms, 1 native + 2 upstream) answered in %.0f ms\n",
            r->elapsed_ms);

    /* The blog's post page through the upstream, as one bundle. */
    r = mz_get(gw, "/api/mizan/ctx/up_post/?post_id=1", NULL);
    mz_expect_status(r, 200);
    json_t *data = json_object_get(r->json, "data");
    cr_expect_str_eq(json_string_value(json_object_get(json_object_get(data, "up_get_post"), "title")),
                     "Welcome to the Mizan blog");
    cr_expect_eq(json_array_size(json_object_get(data, "up_list_comments")), 2);
    mz_expect_json(json_object_get(data, "up_get_author"), "{\"name\": \"alice\", \"posts\": 3}");
    mz_gw_stop_ok(gw);
}

/* ------------------------------------------------------------------------
 * Errors
 * ---------------------------------------------------------------------- */

Test(upstream, error_mapping)
{
    mz_upstream_t *u = mz_upstream_start();
    mz_gw_t *gw = start_gateway(u, NULL);
    static const struct {
        int upstream;
        const char *extra;
        int status;
        const char *code;
    } cases[] = {
        {404, "", 404, "NOT_FOUND"},
        {401, "", 401, "UNAUTHORIZED"},
        {403, "", 403, "FORBIDDEN"},
        {409, "", 400, "BAD_REQUEST"},
        {413, "", 413, "PAYLOAD_TOO_LARGE"},
        {408, "", 504, "TIMEOUT"},
        {429, "", 503, "UNAVAILABLE"},
        {500, "", 503, "UNAVAILABLE"},
        {502, "", 503, "UNAVAILABLE"},
        {503, "", 503, "UNAVAILABLE"},
        {504, "", 503, "UNAVAILABLE"},
        {500, ", \"text\": true", 503, "UNAVAILABLE"},
        {400, ", \"text\": true", 400, "BAD_REQUEST"},
        {301, "", 500, "INTERNAL_ERROR"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        mz_resp_t *r = mz_call(gw, "up_status", mz_fmt("{\"code\": %d%s}", cases[i].upstream, cases[i].extra), NULL);
        json_t *details = mz_expect_error(r, cases[i].status, cases[i].code);
        if (strcmp(cases[i].code, "INTERNAL_ERROR") != 0 && strcmp(cases[i].code, "BAD_REQUEST") != 0)
            cr_expect(json_is_null(details), "upstream %d: details %s", cases[i].upstream, mz_dump(details));
        expect_no_leak(r, u);
    }
    /* 400 with JSON: BAD_REQUEST carrying the upstream's JSON as details. */
    mz_resp_t *r = mz_call(gw, "up_status", "{\"code\": 400}", NULL);
    mz_expect_json(mz_expect_error(r, 400, "BAD_REQUEST"),
                   "{\"error\": {\"message\": \"upstream says no\", \"status\": 400}}");
    /* A text body never becomes details. */
    r = mz_call(gw, "up_status", "{\"code\": 400, \"text\": true}", NULL);
    cr_expect(json_is_null(mz_expect_error(r, 400, "BAD_REQUEST")));
    /* 422 (or 400) with a violation list: VALIDATION_FAILED under args. */
    const int vcodes[] = {422, 400};
    for (size_t i = 0; i < 2; i++) {
        r = mz_call(gw, "up_status", mz_fmt("{\"code\": %d, \"violations\": true}", vcodes[i]), NULL);
        json_t *details = mz_expect_error(r, 422, "VALIDATION_FAILED");
        mz_expect_json(details,
                       "[{\"loc\": [\"args\", \"title\"], \"msg\": \"too short\", \"type\": \"value_error\"}]");
        cr_expect_str_eq(error_message(r), "1 validation error");
    }
    /* 422 without a recognisable list: BAD_REQUEST with its JSON. */
    r = mz_call(gw, "up_status", "{\"code\": 422}", NULL);
    mz_expect_json(mz_expect_error(r, 400, "BAD_REQUEST"),
                   "{\"error\": {\"message\": \"upstream says no\", \"status\": 422}}");
    /* A success that is not JSON: the configuration's problem, 500 generic. */
    r = mz_call(gw, "up_notjson", NULL, NULL);
    mz_expect_error(r, 500, "INTERNAL_ERROR");
    cr_expect(strstr(r->body, "hello") == NULL, "%s", mz_describe(r));
    /* 204: a null result. */
    cr_expect(json_is_null(mz_expect_result(mz_call(gw, "up_empty", NULL, NULL))));
    /* Connection refused (after its retry): UNAVAILABLE, no address. */
    r = mz_call(gw, "dead_get", NULL, NULL);
    mz_expect_error(r, 503, "UNAVAILABLE");
    expect_no_leak(r, u);
    const char *dead_url =
        json_string_value(json_object_get(json_object_get(json_object_get(gw->config, "upstreams"), "dead"), "url"));
    cr_expect(strstr(r->body, strrchr(dead_url, ':') + 1) == NULL, "the dead port leaked: %s", r->body);
    /* In a context, each failure lands under errors and the bundle is not cached. */
    r = mz_get(gw, "/api/mizan/ctx/up_post/?post_id=99", NULL);
    mz_expect_status(r, 200);
    mz_expect_json(json_object_get(r->json, "data"), "{}");
    json_t *errors = json_object_get(r->json, "errors");
    cr_expect_eq(json_object_size(errors), 3);
    cr_expect_str_eq(json_string_value(json_object_get(json_object_get(errors, "up_get_post"), "code")), "NOT_FOUND");
    cr_expect_str_eq(mz_header(r, "X-Mizan-Cache"), "BYPASS");
    mz_gw_stop_ok(gw);
}

Test(upstream, timeouts)
{
    mz_upstream_t *u = mz_upstream_start();
    mz_gw_t *gw = start_gateway(u, NULL);
    mz_expect_result(mz_call(gw, "up_slow", "{\"ms\": 0}", NULL));
    long long before = mz_upstream_path_count(u, "/_test/slow");
    mz_resp_t *r = mz_call(gw, "up_slow", "{\"ms\": 2000}", NULL);
    mz_expect_error(r, 504, "TIMEOUT");
    cr_expect(r->elapsed_ms >= 390 && r->elapsed_ms < 1500, "the 400 ms deadline answered after %.0f ms",
              r->elapsed_ms);
    expect_no_leak(r, u);
    /* A timeout is not retried. */
    cr_expect_eq(mz_upstream_path_count(u, "/_test/slow"), before + 1);
    /* The cancelled connection is replaced: the next call works. */
    mz_expect_result(mz_call(gw, "up_slow", "{\"ms\": 10}", NULL));
    /* In a context the slow upstream function times out alone. */
    r = mz_get(gw, "/api/mizan/ctx/slowmix/?ms=1000", NULL);
    mz_expect_status(r, 200);
    mz_expect_json(json_object_get(r->json, "data"), "{\"slow_a\": {\"fn\": \"slow_a\", \"slept_ms\": 1000}}");
    cr_expect_str_eq(json_string_value(json_object_get(json_object_get(json_object_get(r->json, "errors"), "up_slow"),
                                                       "code")),
                     "TIMEOUT", "%s", r->body);
    cr_expect_str_eq(mz_header(r, "X-Mizan-Cache"), "BYPASS");
    mz_gw_stop_ok(gw);
}

Test(upstream, retries_only_queries_on_connection_failure)
{
    mz_upstream_t *u = mz_upstream_start();
    mz_gw_t *gw = start_gateway(u, NULL);
    /* A query whose first two connections are dropped succeeds on the third. */
    json_t *s0 = mz_upstream_control(u, "{\"drop_connections\": 2}");
    mz_resp_t *r = mz_call(gw, "r1_get", NULL, NULL);
    cr_expect_str_eq(json_string_value(json_object_get(mz_expect_result(r), "title")), "Welcome to the Mizan blog");
    json_t *s1 = mz_upstream_stats(u);
    long long conns = json_integer_value(json_object_get(s1, "connections")) -
                      json_integer_value(json_object_get(s0, "connections"));
    cr_expect_eq(json_integer_value(json_object_get(s1, "dropped")), 2);
    cr_expect_eq(conns, 3, "2 dropped + 1 served connection, got %lld", conns);
    cr_expect_eq(json_integer_value(json_object_get(s1, "requests")) -
                     json_integer_value(json_object_get(s0, "requests")),
                 1);

    /* A mutation is never retried: one dropped connection is a 503 and nothing ran. */
    mz_upstream_control(u, "{\"drop_connections\": 1}");
    r = mz_call(gw, "r2_mut", NULL, NULL);
    mz_expect_error(r, 503, "UNAVAILABLE");
    json_t *s2 = mz_upstream_stats(u);
    cr_expect_eq(json_integer_value(json_object_get(s2, "dropped")), 3);
    cr_expect_eq(json_integer_value(json_object_get(s2, "requests")),
                 json_integer_value(json_object_get(s1, "requests")));
    cr_expect_eq(mz_upstream_path_count(u, "/_test/echo/r2"), 0);

    /* Retries run out: 1 + 2 attempts, then UNAVAILABLE. */
    mz_upstream_control(u, "{\"drop_connections\": 3}");
    r = mz_call(gw, "r3_get", NULL, NULL);
    mz_expect_error(r, 503, "UNAVAILABLE");
    json_t *s3 = mz_upstream_stats(u);
    cr_expect_eq(json_integer_value(json_object_get(s3, "dropped")), 6);
    cr_expect_eq(json_integer_value(json_object_get(s3, "drop_pending")), 0);

    /* An answer is never retried, even a 5xx. */
    long long before = mz_upstream_path_count(u, "/_test/status/503");
    mz_expect_error(mz_call(gw, "up_status", "{\"code\": 503}", NULL), 503, "UNAVAILABLE");
    cr_expect_eq(mz_upstream_path_count(u, "/_test/status/503"), before + 1);
    fprintf(stderr, "upstream figures: query with 2 dropped connections: %lld connections, 1 request; "
                    "mutation with 1 dropped connection: 0 requests\n",
            conns);
    mz_gw_stop_ok(gw);
}

Test(upstream, breaker_opens_and_recovers)
{
    mz_upstream_t *u = mz_upstream_start();
    mz_gw_t *gw = start_gateway(u, NULL);
    /* 4xx answers are the service working: they never open the breaker. */
    for (int i = 0; i < 4; i++)
        mz_expect_error(mz_call(gw, "fragile_get", "{\"post_id\": 99}", NULL), 404, "NOT_FOUND");
    mz_expect_result(mz_call(gw, "fragile_get", "{\"post_id\": 1}", NULL));

    /* Three consecutive failures open it. */
    mz_upstream_control(u, "{\"outage\": true}");
    long long base = mz_upstream_stat(u, "requests");
    for (int i = 0; i < 3; i++)
        mz_expect_error(mz_call(gw, "fragile_get", "{\"post_id\": 1}", NULL), 503, "UNAVAILABLE");
    cr_expect_eq(mz_upstream_stat(u, "requests"), base + 3);
    /* Open: refused at once without touching the service, even once it is back. */
    mz_resp_t *r = mz_call(gw, "fragile_get", "{\"post_id\": 1}", NULL);
    mz_expect_error(r, 503, "UNAVAILABLE");
    cr_expect(strstr(error_message(r), "circuit open") != NULL, "%s", mz_describe(r));
    mz_upstream_control(u, "{\"outage\": false}");
    double opened = mz_now_ms();
    mz_expect_error(mz_call(gw, "fragile_get", "{\"post_id\": 1}", NULL), 503, "UNAVAILABLE");
    cr_expect_eq(mz_upstream_stat(u, "requests"), base + 3, "an open breaker sent a request");
    /* Past the cool-down one probe goes through; its success closes the breaker. */
    mz_sleep_ms(1700);
    mz_expect_result(mz_call(gw, "fragile_get", "{\"post_id\": 1}", NULL));
    cr_expect_eq(mz_upstream_stat(u, "requests"), base + 4);
    mz_expect_result(mz_call(gw, "fragile_get", "{\"post_id\": 2}", NULL));
    cr_expect_eq(mz_upstream_stat(u, "requests"), base + 5);
    fprintf(stderr, "upstream figures: breaker opened after 3 failures, recovered %.0f ms later through one probe\n",
            mz_now_ms() - opened);

    /* A failed probe opens it again for another cool-down. */
    mz_upstream_control(u, "{\"outage\": true}");
    for (int i = 0; i < 3; i++)
        mz_expect_error(mz_call(gw, "fragile_get", "{\"post_id\": 1}", NULL), 503, "UNAVAILABLE");
    mz_sleep_ms(1700);
    base = mz_upstream_stat(u, "requests");
    r = mz_call(gw, "fragile_get", "{\"post_id\": 1}", NULL);
    mz_expect_error(r, 503, "UNAVAILABLE");
    cr_expect(strstr(error_message(r), "circuit open") == NULL, "the probe reached the service: %s", mz_describe(r));
    cr_expect_eq(mz_upstream_stat(u, "requests"), base + 1);
    r = mz_call(gw, "fragile_get", "{\"post_id\": 1}", NULL);
    cr_expect(strstr(error_message(r), "circuit open") != NULL, "%s", mz_describe(r));
    cr_expect_eq(mz_upstream_stat(u, "requests"), base + 1);
    mz_upstream_control(u, "{\"outage\": false}");
    mz_sleep_ms(1700);
    mz_expect_result(mz_call(gw, "fragile_get", "{\"post_id\": 1}", NULL));
    /* Other upstreams never noticed. */
    mz_expect_result(mz_call(gw, "up_get_post", "{\"post_id\": 1}", NULL));
    mz_gw_stop_ok(gw);
}

/* ------------------------------------------------------------------------
 * Connections
 * ---------------------------------------------------------------------- */

static size_t count_status(const mz_result_t *res, size_t n, int status)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        k += res[i].resp != NULL && res[i].resp->status == status;
    return k;
}

Test(upstream, connections_are_reused_and_bounded)
{
    mz_upstream_t *u = mz_upstream_start();
    mz_gw_t *gw = start_gateway(u, NULL);
    mz_upstream_control(u, "{\"reset\": true}");

    /* 100 sequential calls over one client connection (one I/O loop): one upstream connection. */
    mz_conn_t *c = mz_connect(gw->port);
    for (int i = 0; i < 100; i++)
        mz_expect_result(mz_call_on(c, "up_get_post", mz_fmt("{\"post_id\": %d}", 1 + i % 3), NULL));
    long long seq_conns = mz_upstream_stat(u, "connections");
    cr_expect_eq(mz_upstream_stat(u, "requests"), 100);
    cr_expect_eq(seq_conns, 1, "100 sequential calls opened %lld upstream connections", seq_conns);

    /* 20 calls on fresh client connections (any loop): at most one per loop. */
    for (int i = 0; i < 20; i++)
        mz_expect_result(mz_call(gw, "up_get_post", "{\"post_id\": 1}", NULL));
    long long fresh_conns = mz_upstream_stat(u, "connections");
    cr_expect(fresh_conns <= 2, "20 calls over 2 loops opened %lld connections in all", fresh_conns);

    /* 24 concurrent slow calls: the pool (4 per loop, 2 loops) bounds the connections. */
    mz_req_t reqs[24];
    for (size_t i = 0; i < 24; i++)
        reqs[i] = mz_call_req("up_slow2", "{\"ms\": 150}", NULL);
    double t0 = mz_now_ms();
    mz_result_t *res = mz_parallel(gw->port, 24, reqs, 20000);
    double took = mz_now_ms() - t0;
    cr_expect_eq(count_status(res, 24, 200), 24);
    long long par_conns = mz_upstream_stat(u, "connections");
    cr_expect(par_conns <= 8, "24 concurrent calls opened %lld connections (bound: 8)", par_conns);

    /* A pool of 1 without a queue refuses what does not fit. */
    for (size_t i = 0; i < 6; i++)
        reqs[i] = mz_call_req("up_tiny", "{\"ms\": 400}", NULL);
    res = mz_parallel(gw->port, 6, reqs, 20000);
    size_t ok = count_status(res, 6, 200), busy = count_status(res, 6, 503);
    cr_expect(ok >= 1 && ok <= 2 && ok + busy == 6, "pool 1, queue 0: %zu ok, %zu busy", ok, busy);
    for (size_t i = 0; i < 6; i++)
        if (res[i].resp != NULL && res[i].resp->status == 503)
            cr_expect(strstr(error_message(res[i].resp), "busy") != NULL, "%s", mz_describe(res[i].resp));

    /* With a queue they wait their turn instead. */
    long long q0 = mz_upstream_stat(u, "connections");
    for (size_t i = 0; i < 6; i++)
        reqs[i] = mz_call_req("up_queued", "{\"ms\": 100}", NULL);
    double t1 = mz_now_ms();
    res = mz_parallel(gw->port, 6, reqs, 20000);
    double queued_took = mz_now_ms() - t1;
    cr_expect_eq(count_status(res, 6, 200), 6);
    cr_expect(mz_upstream_stat(u, "connections") - q0 <= 2);
    cr_expect(queued_took >= 290, "6 calls of 100 ms on at most 2 connections took %.0f ms", queued_took);
    fprintf(stderr,
            "upstream figures: 100 sequential calls -> %lld connection(s); 20 fresh-client calls -> %lld in all; "
            "24 concurrent 150 ms calls (pool 4 x 2 loops) -> %lld connections in all, %.0f ms\n",
            seq_conns, fresh_conns, par_conns, took);
    mz_gw_stop_ok(gw);
}

/* ------------------------------------------------------------------------
 * Cache and invalidation, the same as native functions
 * ---------------------------------------------------------------------- */

/* GET a context; returns X-Mizan-Cache. */
static const char *fetch(const mz_gw_t *gw, const char *ctx, int post_id, json_t **data)
{
    mz_resp_t *r = mz_get(gw, mz_fmt("/api/mizan/ctx/%s/?post_id=%d", ctx, post_id), NULL);
    mz_expect_status(r, 200);
    mz_expect_json(json_object_get(r->json, "errors"), "{}");
    if (data != NULL)
        *data = json_object_get(r->json, "data");
    return mz_header(r, "X-Mizan-Cache");
}

Test(upstream, cache_and_invalidation_like_native)
{
    mz_upstream_t *u = mz_upstream_start();
    mz_gw_t *gw = start_gateway(u, NULL);
    char *alice = mz_token(gw, "alice", NULL);
    static const struct {
        const char *ctx, *getter, *mutation;
    } kinds[] = {{"post", "get_post", "update_post"}, {"up_post", "up_get_post", "up_update_post"}};
    const char *seen[2][6];
    json_t *inv[2];
    for (size_t k = 0; k < 2; k++) {
        json_t *data;
        long long r0 = mz_upstream_stat(u, "requests");
        seen[k][0] = fetch(gw, kinds[k].ctx, 1, NULL);
        long long r1 = mz_upstream_stat(u, "requests");
        seen[k][1] = fetch(gw, kinds[k].ctx, 1, NULL);
        seen[k][2] = fetch(gw, kinds[k].ctx, 2, NULL);
        long long r2 = mz_upstream_stat(u, "requests");
        if (k == 1) {
            cr_expect_eq(r1 - r0, 3, "a MISS runs the three upstream functions");
            cr_expect_eq(r2 - r1, 3, "a HIT sends nothing upstream, the MISS of post 2 three");
        } else {
            cr_expect_eq(r2, r0, "native contexts never touch the upstream");
        }
        mz_resp_t *r = mz_call(gw, kinds[k].mutation, "{\"post_id\": 1, \"title\": \"Changed\"}", alice);
        cr_expect_str_eq(json_string_value(json_object_get(mz_expect_mutation(r), "title")), "Changed");
        inv[k] = json_object_get(r->json, "invalidate");
        seen[k][3] = fetch(gw, kinds[k].ctx, 1, &data);
        json_t *post = json_object_get(data, kinds[k].getter);
        cr_expect_str_eq(json_string_value(json_object_get(post, "title")), "Changed", "%s", mz_dump(data));
        seen[k][4] = fetch(gw, kinds[k].ctx, 2, NULL); /* scoped: post 2 untouched */
        seen[k][5] = fetch(gw, kinds[k].ctx, 1, NULL);
    }
    for (size_t i = 0; i < 6; i++)
        cr_expect_str_eq(seen[1][i], seen[0][i], "step %zu: upstream %s, native %s", i, seen[1][i], seen[0][i]);
    static const char *const want[6] = {"MISS", "HIT", "MISS", "MISS", "HIT", "HIT"};
    for (size_t i = 0; i < 6; i++)
        cr_expect_str_eq(seen[1][i], want[i], "step %zu", i);
    mz_expect_json(inv[0], "[{\"context\": \"post\", \"params\": {\"post_id\": 1}}, {\"context\": \"feed\"}]");
    mz_expect_json(inv[1], "[{\"context\": \"up_post\", \"params\": {\"post_id\": 1}}]");
    /* The upstream's own refusal comes through for a mutation too. */
    char *bob = mz_token(gw, "bob", NULL);
    mz_expect_error(mz_call(gw, "up_update_post", "{\"post_id\": 1, \"title\": \"x\"}", bob), 403, "FORBIDDEN");
    mz_gw_stop_ok(gw);
}

/* ------------------------------------------------------------------------
 * The shipped example
 * ---------------------------------------------------------------------- */

Test(upstream, example_config_serves_the_blog_like_the_module)
{
    mz_upstream_t *u = mz_upstream_start();
    const char *src = mz_env("MIZAN_TEST_SOURCE_DIR");
    json_error_t jerr;
    json_t *ex = json_load_file(mz_fmt("%s/examples/upstream/mizan.json", src), 0, &jerr);
    cr_assert(ex != NULL, "examples/upstream/mizan.json: %s", jerr.text);
    mz_keep(ex);
    json_object_set_new(ex, "listen", json_string("127.0.0.1:0"));
    json_object_set_new(ex, "validate_output", json_true()); /* the example's output schemas hold */
    json_object_set_new(json_object_get(json_object_get(ex, "upstreams"), "blog_api"), "url", json_string(u->url));
    mz_gw_opts_t opts = {.config = ex, .raw_config = true};
    mz_gw_t *up = mz_gw_start_opts(&opts);
    mz_gw_t *native = mz_gw_start(NULL);

    const char *paths[] = {"/api/mizan/ctx/post/?post_id=1", "/api/mizan/ctx/post/?post_id=2",
                           "/api/mizan/ctx/post/?post_id=3", "/api/mizan/ctx/feed/"};
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
        mz_resp_t *a = mz_get(up, paths[i], NULL), *b = mz_get(native, paths[i], NULL);
        mz_expect_status(a, 200);
        mz_expect_status(b, 200);
        cr_expect(json_equal(a->json, b->json), "%s differs:\nupstream %s\nnative   %s", paths[i], a->body, b->body);
    }
    char *alice_up = mz_token(up, "alice", NULL), *alice_native = mz_token(native, "alice", NULL);
    const char *args = "{\"post_id\": 2, \"title\": \"Through the upstream\"}";
    mz_resp_t *a = mz_call(up, "update_post", args, alice_up), *b = mz_call(native, "update_post", args, alice_native);
    cr_expect(json_equal(a->json, b->json), "update_post differs:\nupstream %s\nnative   %s", a->body, b->body);
    mz_expect_json(json_object_get(a->json, "invalidate"),
                   "[{\"context\": \"post\", \"params\": {\"post_id\": 2}}, {\"context\": \"feed\"}]");
    mz_resp_t *fa = mz_get(up, "/api/mizan/ctx/feed/", NULL), *fb = mz_get(native, "/api/mizan/ctx/feed/", NULL);
    cr_expect_str_eq(mz_header(fa, "X-Mizan-Cache"), "MISS");
    cr_expect(json_equal(fa->json, fb->json), "feed after the write differs:\n%s\n%s", fa->body, fb->body);
    /* The schema endpoint lists them as implemented functions. */
    json_t *schema = mz_get(up, "/api/mizan/schema/", NULL)->json;
    json_t *gp = json_object_get(json_object_get(schema, "functions"), "get_post");
    cr_expect(json_is_true(json_object_get(gp, "implemented")), "%s", mz_dump(gp));
    mz_gw_stop_ok(up);
    mz_gw_stop_ok(native);
}

/* ------------------------------------------------------------------------
 * Configuration errors and shutdown
 * ---------------------------------------------------------------------- */

Test(upstream, config_errors_name_the_field)
{
    char *dir = mz_tmpdir();
    static const struct {
        const char *config; /* merged onto a minimal valid one */
        const char *want;   /* in the error */
    } cases[] = {
        {"{'upstreams': {'a': {'url': 'http://127.0.0.1:9', 'pool': 3}}}", "upstreams.a.pool"},
        {"{'upstreams': {'a': {'url': 'https://127.0.0.1:9'}}}", "https upstreams are not supported"},
        {"{'upstreams': {'a': {'url': 'ftp://x'}}}", "upstreams.a.url"},
        {"{'upstreams': {'a': {'url': 'http://127.0.0.1:9', 'pool_size': 0}}}", "upstreams.a.pool_size"},
        {"{'upstreams': {'a': {'url': 'http://127.0.0.1:9', 'headers': {'Host': 'x'}}}}", "set by the gateway"},
        {"{'upstreams': {'a': {'url': 'http://127.0.0.1:9', 'headers': {'X-Mizan-Sub': 'x'}}}}", "identity"},
        {"{'functions': [{'name': 'f', 'upstream': {'service': 'nope', 'path': '/'}}]}",
         "functions[0].upstream.service"},
        {"{'functions': [{'name': 'f', 'upstream': {'service': 'a', 'path': '/x/{id}'}}]}", "{id}"},
        {"{'functions': [{'name': 'f', 'input_schema': {'type': 'object', 'properties': {'id': {'type': 'integer'}}},"
         " 'upstream': {'service': 'a', 'path': '/x/{id}'}}]}",
         "must be \"required\""},
        {"{'functions': [{'name': 'f', 'upstream': {'service': 'a', 'path': '/x', 'result': 'a/b'}}]}",
         "functions[0].upstream.result"},
        {"{'functions': [{'name': 'f', 'upstream': {'service': 'a', 'path': '/x', 'result': '/a~2'}}]}", "'~'"},
        {"{'functions': [{'name': 'f', 'upstream': {'service': 'a', 'path': '/x', 'body': true}}]}", "carries no body"},
        {"{'functions': [{'name': 'f', 'upstream': {'service': 'a', 'path': '/x', 'method': 'TRACE'}}]}",
         "functions[0].upstream.method"},
        {"{'functions': [{'name': 'f', 'kind': 'mutation', 'invalidates': ['nope'],"
         " 'upstream': {'service': 'a', 'path': '/x'}}]}",
         "unknown context"},
        {"{'functions': [{'name': 'f', 'upstream': {'service': 'a', 'path': '/x'}, 'auth': 'admin'}]}",
         "functions[0].auth"},
        {"{'contexts': [{'name': 'c', 'functions': ['missing_fn']}]}", "missing_fn"},
        {"{'contexts': [{'name': 'c', 'functions': ['f'], 'scope': 'world'}]}", "contexts[0].scope"},
        {"{'functions': [{'name': 'get_post', 'upstream': {'service': 'a', 'path': '/x'}}]}", "registered twice"},
    };
    const char *base = "{'upstreams': {'a': {'url': 'http://127.0.0.1:9'}},"
                       " 'functions': [{'name': 'f', 'upstream': {'service': 'a', 'path': '/x'}}]}";
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *cfg = mz_config_defaults(dir);
        mz_keep(cfg);
        json_t *extra = jq(cases[i].config, NULL, NULL);
        mz_json_merge(cfg, jq(base, NULL, NULL));
        mz_json_merge(cfg, extra);
        char *path = mz_write_config(dir, mz_fmt("bad-%zu.json", i), cfg);
        const char *argv[] = {mz_env("MIZAN_TEST_BIN"), "--check-config", "--config", path, NULL};
        mz_run_t *run = mz_run(argv, dir, NULL, 30000);
        cr_expect(run->status != 0, "case %zu was accepted:\n%s", i, mz_read_file(path));
        cr_expect(strstr(run->err, cases[i].want) != NULL, "case %zu: want \"%s\" in:\n%s", i, cases[i].want,
                  run->err);
    }
    /* And a valid one lists the upstream functions as implemented. */
    json_t *cfg = mz_keep(mz_config_defaults(dir));
    mz_json_merge(cfg, jq(base, NULL, NULL));
    char *path = mz_write_config(dir, "good.json", cfg);
    const char *argv[] = {mz_env("MIZAN_TEST_BIN"), "--check-config", "--config", path, NULL};
    mz_run_t *run = mz_run(argv, dir, NULL, 30000);
    cr_expect_eq(run->status, 0, "%s", run->err);
    json_t *doc = json_loads(run->out, JSON_DISABLE_EOF_CHECK, NULL);
    mz_keep(doc);
    cr_expect(json_is_true(json_object_get(json_object_get(json_object_get(doc, "functions"), "f"), "implemented")),
              "%s", run->out);
}

Test(upstream, shutdown_with_calls_in_flight)
{
    mz_upstream_t *u = mz_upstream_start();
    mz_gw_t *gw = start_gateway(u, "{'drain_timeout_ms': 300}");
    mz_req_t reqs[3];
    for (size_t i = 0; i < 3; i++)
        reqs[i] = mz_call_req("up_slow2", "{\"ms\": 4000}", NULL);
    mz_batch_t *b = mz_batch_start(gw->port, 3, reqs, 20000);
    cr_assert(mz_batch_wait_sent(b, 3, 5000));
    mz_sleep_ms(300);
    double t0 = mz_now_ms();
    mz_gw_stop_ok(gw);
    double stop_ms = mz_now_ms() - t0;
    mz_result_t *res = mz_batch_join(b);
    for (size_t i = 0; i < 3; i++)
        if (res[i].resp != NULL)
            mz_expect_error(res[i].resp, 503, "UNAVAILABLE");
    cr_expect(stop_ms < 3500, "stopping took %.0f ms with upstream calls in flight", stop_ms);
}
