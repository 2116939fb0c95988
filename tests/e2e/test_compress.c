/*
 * test_compress.c - end-to-end tests of response compression (PROTOCOL.md
 * section 8): large calls, bundles, the schema document and error
 * envelopes come back gzip-compressed when Accept-Encoding allows it and
 * decompress (with zlib, here) to exactly the uncompressed answer; the
 * threshold is exclusive and configurable; q=0 and other refusals are
 * honoured; compress_level 0 turns it off; event streams are never
 * compressed.
 */
#include <criterion/criterion.h>

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <zlib.h>

#include "harness.h"

TestSuite(compress, .init = mz_setup, .fini = mz_teardown, .timeout = 180);

/* Inflates a gzip body (asserting it is one) into an arena string. */
static char *gunzip(const mz_resp_t *r, size_t *out_len)
{
    z_stream zs;
    memset(&zs, 0, sizeof(zs));
    cr_assert_eq(inflateInit2(&zs, 15 + 16), Z_OK);
    size_t cap = 8 << 20;
    char *out = mz_alloc(cap + 1);
    zs.next_in = (Bytef *)r->body;
    zs.avail_in = (uInt)r->body_len;
    zs.next_out = (Bytef *)out;
    zs.avail_out = (uInt)cap;
    int rc = inflate(&zs, Z_FINISH);
    size_t left = zs.avail_in;
    *out_len = zs.total_out;
    inflateEnd(&zs);
    cr_assert_eq(rc, Z_STREAM_END, "not one whole gzip member (inflate %d): %s", rc, mz_describe(r));
    cr_assert_eq(left, 0, "bytes after the gzip member");
    out[*out_len] = '\0';
    return out;
}

/* A request with Accept-Encoding ae (NULL: none). */
static mz_resp_t *fetch(const mz_gw_t *gw, const char *method, const char *path, const char *body, const char *ae)
{
    const char *headers[] = {"Content-Type: application/json", ae != NULL ? mz_fmt("Accept-Encoding: %s", ae) : NULL,
                             NULL};
    mz_req_t req = {.method = method, .path = path, .headers = headers, .body = body};
    return mz_http(gw, &req);
}

static bool vary_has(const mz_resp_t *r, const char *what)
{
    for (size_t i = 0; i < r->nheaders; i++)
        if (strcasecmp(r->headers[i].name, "Vary") == 0 && strstr(r->headers[i].value, what) != NULL)
            return true;
    return false;
}

/* Asserts r is the gzip form of plain (same status, same body once inflated). */
static void expect_gzip_of(const mz_resp_t *r, const mz_resp_t *plain)
{
    cr_assert_eq(r->status, plain->status, "%s", mz_describe(r));
    const char *ce = mz_header(r, "Content-Encoding");
    cr_assert(ce != NULL && strcmp(ce, "gzip") == 0, "expected Content-Encoding: gzip: %s", mz_describe(r));
    cr_assert(vary_has(r, "Accept-Encoding"), "Vary: Accept-Encoding missing: %s", mz_describe(r));
    cr_assert(r->body_len < plain->body_len, "compressed %zu >= plain %zu", r->body_len, plain->body_len);
    size_t n;
    char *text = gunzip(r, &n);
    cr_assert_eq(n, plain->body_len, "inflated %zu bytes, plain body has %zu", n, plain->body_len);
    cr_assert(memcmp(text, plain->body, n) == 0, "inflated body differs from the plain one:\n%s\n---\n%s", text,
              plain->body);
    cr_assert_str_eq(mz_header(r, "Content-Type"), mz_header(plain, "Content-Type"));
    cr_assert_null(mz_header(plain, "Content-Encoding"), "%s", mz_describe(plain));
}

Test(compress, large_answers_round_trip)
{
    char *dir = mz_tmpdir();
    json_t *cfg = mz_json("{\"modules\": [{\"name\": \"blog\", \"config\": {\"db\": \"%s/blog.db\", \"seed_posts\": 60}}]}",
                          dir);
    mz_gw_opts_t opts = {.config = cfg, .dir = dir};
    mz_gw_t *gw = mz_gw_start_opts(&opts);
    /* A call. */
    const char *body = mz_call_body("echo", mz_fmt("{\"value\": \"%s\"}", mz_repeat('x', 5000)));
    mz_resp_t *plain = fetch(gw, "POST", "/api/mizan/call/", body, NULL);
    mz_expect_status(plain, 200);
    cr_assert(vary_has(plain, "Accept-Encoding"), "a large answer varies on Accept-Encoding: %s", mz_describe(plain));
    expect_gzip_of(fetch(gw, "POST", "/api/mizan/call/", body, "gzip"), plain);
    expect_gzip_of(fetch(gw, "POST", "/api/mizan/call/", body, "br;q=1.0, gzip;q=0.8, deflate"), plain);
    /* A bundle (20 posts), with its X-Mizan-Cache header kept. */
    plain = fetch(gw, "GET", "/api/mizan/ctx/feed/", NULL, NULL);
    mz_expect_status(plain, 200);
    cr_assert(plain->body_len > 1024, "the feed should be over the threshold: %zu", plain->body_len);
    mz_resp_t *z = fetch(gw, "GET", "/api/mizan/ctx/feed/", NULL, "gzip, deflate");
    expect_gzip_of(z, plain);
    cr_assert_str_eq(mz_header(z, "X-Mizan-Cache"), "HIT", "%s", mz_describe(z));
    /* The schema document and the metrics page. */
    expect_gzip_of(fetch(gw, "GET", "/api/mizan/schema/", NULL, "*"), fetch(gw, "GET", "/api/mizan/schema/", NULL, NULL));
    mz_resp_t *mz = fetch(gw, "GET", "/metrics", NULL, "gzip");
    cr_assert_str_eq(mz_header(mz, "Content-Encoding"), "gzip", "%s", mz_describe(mz));
    size_t n;
    cr_assert(strstr(gunzip(mz, &n), "mizan_") != NULL);
    /* A large error envelope (422 with one violation per unexpected arg). */
    json_t *args = json_object();
    for (int i = 0; i < 60; i++)
        json_object_set_new(args, mz_fmt("unexpected_argument_%02d", i), json_integer(i));
    char *bad = mz_call_body("ping", mz_dump(mz_keep(args)));
    plain = fetch(gw, "POST", "/api/mizan/call/", bad, NULL);
    mz_expect_error(plain, 422, "VALIDATION_FAILED");
    cr_assert(plain->body_len > 1024, "%zu", plain->body_len);
    expect_gzip_of(fetch(gw, "POST", "/api/mizan/call/", bad, "gzip"), plain);
    /* Small answers are never compressed, and do not vary. */
    mz_resp_t *small = fetch(gw, "POST", "/api/mizan/call/", mz_call_body("ping", NULL), "gzip");
    mz_expect_json(mz_expect_result(small), "\"pong\"");
    cr_assert_null(mz_header(small, "Content-Encoding"), "%s", mz_describe(small));
    cr_assert(!vary_has(small, "Accept-Encoding"), "%s", mz_describe(small));
    mz_gw_stop_ok(gw);
}

Test(compress, threshold_is_exclusive_and_configurable)
{
    mz_gw_t *gw = mz_gw_start(mz_json("{\"compress_min_bytes\": 100}"));
    /* {"result":"xxx..."} is 13 bytes around the value. */
    char *at = mz_call_body("echo", mz_fmt("{\"value\": \"%s\"}", mz_repeat('x', 87)));
    char *over = mz_call_body("echo", mz_fmt("{\"value\": \"%s\"}", mz_repeat('x', 88)));
    mz_resp_t *r = fetch(gw, "POST", "/api/mizan/call/", at, "gzip");
    cr_assert_eq(r->body_len, 100, "calibration: %s", mz_describe(r));
    cr_assert_null(mz_header(r, "Content-Encoding"), "a body of exactly the threshold stays plain: %s", mz_describe(r));
    cr_assert(!vary_has(r, "Accept-Encoding"), "%s", mz_describe(r));
    mz_resp_t *plain = fetch(gw, "POST", "/api/mizan/call/", over, NULL);
    cr_assert_eq(plain->body_len, 101, "calibration: %s", mz_describe(plain));
    expect_gzip_of(fetch(gw, "POST", "/api/mizan/call/", over, "gzip"), plain);
    mz_gw_stop_ok(gw);
}

Test(compress, refusals_are_honoured)
{
    mz_gw_t *gw = mz_gw_start(NULL);
    const char *body = mz_call_body("echo", mz_fmt("{\"value\": \"%s\"}", mz_repeat('y', 4000)));
    const char *refuse[] = {"gzip;q=0", "gzip; q=0.000", "*;q=0", "identity", "deflate, br", "gzip;q=0, *",
                            "x-gzip;q=0", "gzip;q=nonsense"};
    for (size_t i = 0; i < sizeof(refuse) / sizeof(refuse[0]); i++) {
        mz_resp_t *r = fetch(gw, "POST", "/api/mizan/call/", body, refuse[i]);
        mz_expect_status(r, 200);
        cr_assert_null(mz_header(r, "Content-Encoding"), "Accept-Encoding: %s: %s", refuse[i], mz_describe(r));
        cr_assert(vary_has(r, "Accept-Encoding"), "%s", mz_describe(r));
        cr_assert(r->json != NULL && strlen(json_string_value(json_object_get(r->json, "result"))) == 4000,
                  "Accept-Encoding: %s: %s", refuse[i], mz_describe(r));
    }
    mz_gw_stop_ok(gw);
}

Test(compress, level_zero_turns_it_off)
{
    mz_gw_t *gw = mz_gw_start(mz_json("{\"compress_level\": 0}"));
    const char *body = mz_call_body("echo", mz_fmt("{\"value\": \"%s\"}", mz_repeat('z', 4000)));
    mz_resp_t *r = fetch(gw, "POST", "/api/mizan/call/", body, "gzip");
    mz_expect_status(r, 200);
    cr_assert_null(mz_header(r, "Content-Encoding"), "%s", mz_describe(r));
    cr_assert(!vary_has(r, "Accept-Encoding"), "%s", mz_describe(r));
    mz_gw_stop_ok(gw);
}

Test(compress, event_streams_never_compressed)
{
    mz_gw_t *gw = mz_gw_start(mz_json("{\"compress_min_bytes\": 0}"));
    const char *headers[] = {"Accept-Encoding: gzip", NULL};
    mz_resp_t *head = NULL;
    mz_stream_t *s = mz_stream_open(gw, "/api/mizan/events/?contexts=post", headers, NULL, &head);
    cr_assert_eq(head->status, 200, "%s", mz_describe(head));
    cr_assert_null(mz_header(head, "Content-Encoding"), "an event stream must not be compressed: %s", mz_describe(head));
    char *tok = mz_token(gw, "alice", NULL);
    mz_expect_mutation(mz_call(gw, "update_post", "{\"post_id\": 1, \"title\": \"Plain text events\"}", tok));
    json_t *ev = mz_stream_next_event(s, "invalidate", 10000);
    cr_assert_not_null(ev, "no readable invalidate frame on the stream");
    mz_expect_json(ev, "{\"context\": \"post\", \"params\": {\"post_id\": 1}}");
    /* With the threshold at 0 every other answer that shrinks is compressed. */
    mz_resp_t *r = fetch(gw, "POST", "/api/mizan/call/",
                         mz_call_body("echo", mz_fmt("{\"value\": \"%s\"}", mz_repeat('e', 200))), "gzip");
    cr_assert_str_eq(mz_header(r, "Content-Encoding"), "gzip", "%s", mz_describe(r));
    mz_stream_close(s);
    mz_gw_stop_ok(gw);
}
