/*
 * test_framing.c - the request framing rules (framing.c): which heads are
 * accepted and how their body is delimited, every refusal of PROTOCOL.md
 * section 1 rev 2, and the chunked body follower fed byte by byte and in
 * one piece.
 */
#include <criterion/criterion.h>

#include <stdio.h>
#include <string.h>

#include "framing.h"

#define LIMIT 1024

static mizan_head_t check(const char *head)
{
    mizan_head_t h;
    mizan_framing_check_head(head, strlen(head), LIMIT, &h);
    return h;
}

static void expect_ok(const char *head, mizan_body_kind_t body, uint64_t length)
{
    mizan_head_t h = check(head);
    cr_assert_eq(h.status, 0, "refused (%s): %s", h.reason, head);
    cr_assert_eq(h.body, body, "body kind of: %s", head);
    cr_assert_eq(h.length, length, "length of: %s", head);
}

static void expect_refused(const char *head, int status, const char *why)
{
    mizan_head_t h = check(head);
    cr_assert_eq(h.status, status, "status %d (%s) for: %s", h.status, h.reason, head);
    cr_assert(strstr(h.reason, why) != NULL, "reason '%s' lacks '%s' for: %s", h.reason, why, head);
}

Test(framing_head, accepted_heads_and_their_bodies)
{
    expect_ok("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", MIZAN_BODY_NONE, 0);
    expect_ok("GET /healthz HTTP/1.0\n\n", MIZAN_BODY_NONE, 0);
    expect_ok("GET /healthz HTTP/1.1\r\nContent-Length: 0\r\n\r\n", MIZAN_BODY_NONE, 0);
    expect_ok("POST /c HTTP/1.1\r\nContent-Length: 19\r\n\r\n", MIZAN_BODY_LENGTH, 19);
    expect_ok("POST /c HTTP/1.1\r\ncontent-length:\t 007 \r\n\r\n", MIZAN_BODY_LENGTH, 7);
    expect_ok("POST /c HTTP/1.1\r\nContent-Length: 1024\r\n\r\n", MIZAN_BODY_LENGTH, 1024);
    expect_ok("POST /c HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n", MIZAN_BODY_CHUNKED, 0);
    expect_ok("POST /c HTTP/1.1\r\n\r\n", MIZAN_BODY_NONE, 0);
    expect_ok("POST /c HTTP/1.1\r\nConnection: close\r\n\r\n", MIZAN_BODY_NONE, 0);
    expect_ok("PUT /c HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n", MIZAN_BODY_LENGTH, 3);
    expect_ok("FOO /c HTTP/1.1\r\n\r\n", MIZAN_BODY_NONE, 0);
    expect_ok("M-SEARCH * HTTP/1.1\r\n\r\n", MIZAN_BODY_NONE, 0);
}

Test(framing_head, smuggling_shapes_are_400)
{
    expect_refused("POST /c HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 19\r\n\r\n", 400, "more than one");
    expect_refused("POST /c HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", 400, "more than one");
    expect_refused("POST /c HTTP/1.1\r\nContent-Length: +19\r\n\r\n", 400, "decimal digits");
    expect_refused("POST /c HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400, "decimal digits");
    expect_refused("POST /c HTTP/1.1\r\nContent-Length: 1,2\r\n\r\n", 400, "decimal digits");
    expect_refused("POST /c HTTP/1.1\r\nContent-Length:\r\n\r\n", 400, "decimal digits");
    expect_refused("POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", 400,
                   "together with Content-Length");
    expect_refused("POST /c HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400, "HTTP/1.0");
    expect_refused("POST /c HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 400, "Transfer-Encoding");
    expect_refused("POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 400,
                   "Transfer-Encoding");
    expect_refused("POST /c HTTP/1.1\r\nTransfer-Encoding : chunked\r\n\r\n", 400, "whitespace");
    expect_refused("POST /c HTTP/1.1\r\nContent-Length\t: 3\r\n\r\n", 400, "whitespace");
    expect_refused("POST /c HTTP/1.1\r\nX: 1\r\n Content-Length: 3\r\n\r\n", 400, "folded");
    expect_refused("POST /c HTTP/1.1\r\nNoColon\r\n\r\n", 400, "malformed header line");
    expect_refused("POST /c HTTP/1.1\r\n: empty name\r\n\r\n", 400, "malformed header line");
    expect_refused("GET /c HTTP/1.1\r\nContent-Length: 4\r\n\r\n", 400, "does not take a request body");
    expect_refused("DELETE /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 400, "does not take a request body");
    expect_refused("POST /c HTTP/1.1\r\nConnection: keep-alive\r\n\r\n", 400, "needs a Content-Length");
    expect_refused("POST /c HTTP/1.1\r\nExpect: 200-ok\r\nContent-Length: 1\r\n\r\n", 400, "Expect");
}

Test(framing_head, request_lines)
{
    expect_refused("\r\n\r\n", 400, "malformed request line");
    expect_refused("GET /healthz\r\n\r\n", 400, "malformed request line");
    expect_refused("GET  /healthz HTTP/1.1\r\n\r\n", 400, "malformed request line");
    expect_refused(" GET /healthz HTTP/1.1\r\n\r\n", 400, "malformed request line");
    expect_refused("GET /healthz HTTP/1.1 \r\n\r\n", 400, "malformed request line");
    expect_refused("GET /healthz HTTP/1.2\r\n\r\n", 400, "malformed request line");
    expect_refused("GET /healthz HTTP/2\r\n\r\n", 400, "malformed request line");
    expect_refused("GE(T /healthz HTTP/1.1\r\n\r\n", 400, "malformed request line");
    expect_refused("GET /a\x7f HTTP/1.1\r\n\r\n", 400, "control character");
    expect_refused("GET /a\rb HTTP/1.1\r\n\r\n", 400, "CR");
    expect_refused("GET /a HTTP/1.1\r\nX: a\x01\r\n\r\n", 400, "control character");
    expect_ok("GET /a HTTP/1.1\r\nX: tab\there \xc3\xa9\r\n\r\n", MIZAN_BODY_NONE, 0);
}

Test(framing_head, declared_bodies_over_the_limit_are_413)
{
    expect_refused("POST /c HTTP/1.1\r\nContent-Length: 1025\r\n\r\n", 413, "1024 byte limit");
    expect_refused("POST /c HTTP/1.1\r\nContent-Length: 4097\r\n\r\n", 413, "limit");
    expect_refused("POST /c HTTP/1.1\r\nContent-Length: 99999999999999999999999999999\r\n\r\n", 413, "limit");
}

Test(framing_head, request_id_is_kept_when_sane)
{
    mizan_head_t h = check("GET / HTTP/1.1\r\nX-Request-Id: abc-1.2_3\r\n\r\n");
    cr_assert_str_eq(h.rid, "abc-1.2_3");
    h = check("GET / HTTP/1.1\r\nX-Request-Id: a b\r\n\r\n");
    cr_assert_str_eq(h.rid, "");
}

/* Feeds body in pieces of `step` bytes (0: all at once); returns bytes used, -1 on refusal. */
static long feed(const char *body, size_t len, size_t step, bool *done, int *status)
{
    mizan_chunked_t st;
    memset(&st, 0, sizeof(st));
    char why[112];
    size_t used = 0;
    *done = false;
    while (used < len && !*done) {
        size_t n = step == 0 || step > len - used ? len - used : step;
        long r = mizan_framing_chunked(&st, body + used, n, LIMIT, done, status, why, sizeof(why));
        if (r < 0)
            return -1;
        used += (size_t)r;
        if (!*done)
            cr_assert_eq((size_t)r, n, "bytes left over before the end of the body");
    }
    return (long)used;
}

Test(framing_chunked, bodies_end_exactly_where_they_end)
{
    const char *body = "13\r\n{\"function\":\"ping\"}\r\n0\r\n\r\nPOST /next HTTP/1.1\r\n";
    size_t end = strlen("13\r\n{\"function\":\"ping\"}\r\n0\r\n\r\n");
    for (size_t step = 0; step <= 3; step++) {
        bool done = false;
        int status = 0;
        long used = feed(body, strlen(body), step, &done, &status);
        cr_assert(done, "step %zu: the body did not end", step);
        cr_assert_eq((size_t)used, end, "step %zu", step);
    }
    bool done = false;
    int status = 0;
    cr_assert_eq(feed("5\nhello\n0\n\n", 11, 1, &done, &status), 11);
    cr_assert(done);
    cr_assert_eq(feed("A \r\n0123456789\r\n0\r\n\r\n", 21, 0, &done, &status), 21);
    cr_assert(done);
}

Test(framing_chunked, malformed_and_oversize_bodies_are_refused)
{
    const char *bad[] = {"x\r\n", "5;ext=1\r\nhello\r\n0\r\n\r\n", "5\r\nhelloX\r\n", "0\r\nTrailer: 1\r\n\r\n",
                         "\r\n5\r\nhello\r\n0\r\n\r\n", "5\rX", NULL};
    for (size_t i = 0; bad[i] != NULL; i++) {
        bool done = false;
        int status = 0;
        cr_assert_eq(feed(bad[i], strlen(bad[i]), 1, &done, &status), -1, "accepted: %s", bad[i]);
        cr_assert_eq(status, 400, "%s", bad[i]);
    }
    bool done = false;
    int status = 0;
    cr_assert_eq(feed("401\r\n", 5, 0, &done, &status), -1);
    cr_assert_eq(status, 413);
    cr_assert_eq(feed("200\r\n", 5, 0, &done, &status), 5); /* 512: fine so far */
    cr_assert_eq(feed("ffffffffffffffffff\r\n", 20, 0, &done, &status), -1);
    cr_assert_eq(status, 413);
    /* Two chunks that together pass the limit. */
    char two[1200];
    int n = snprintf(two, sizeof(two), "200\r\n%0512d\r\n201\r\n", 0);
    cr_assert_eq(feed(two, (size_t)n, 0, &done, &status), -1);
    cr_assert_eq(status, 413);
}
