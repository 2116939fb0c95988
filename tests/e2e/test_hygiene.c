/*
 * test_hygiene.c - HTTP hygiene and input rules of PROTOCOL.md revision 2,
 * end to end over raw sockets: request smuggling (duplicate or non-digit
 * Content-Length, Transfer-Encoding with Content-Length or in HTTP/1.0, a
 * header name with whitespace, a body on GET) is 400 in the envelope with
 * nothing run and the connection closed; bodies over the limit are 413 in
 * the envelope whatever their declared size; every method a route does not
 * serve is 405 with Allow; malformed request lines are 400; HEAD gets a
 * body-less 405 and the connection stays in step; whole-name function
 * lookup; malformed percent-encoding; token kid and claim rules.
 *
 * "Nothing run" is observed twice: the count of answers on the socket, and
 * the gateway's own run counter of the function the smuggled request calls.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>

#include "cache_support.h"
#include "harness.h"

TestSuite(hygiene, .init = mz_setup, .fini = mz_teardown, .timeout = 180);

#define CALL "/api/mizan/call/"
#define PING_BODY "{\"function\":\"ping\"}"
#define PING_RUNS "mizan_function_runs_total{function=\"ping\"}"
#define ECHO_RUNS "mizan_function_runs_total{function=\"echo\"}"

/* A complete POST of `ping`, the request smuggled in the tests below. */
#define SMUGGLED "POST " CALL " HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 19\r\n\r\n" PING_BODY

/*
 * Complete answers at the start of the n bytes of raw: each is a head and
 * Content-Length bytes of body (none without the header, as for HEAD).
 */
static int complete_answers(const char *raw, size_t n)
{
    int count = 0;
    size_t at = 0;
    while (at < n && strncmp(raw + at, "HTTP/1.1 ", n - at < 9 ? n - at : 9) == 0) {
        const char *end = strstr(raw + at, "\r\n\r\n");
        if (end == NULL)
            break;
        size_t head_end = (size_t)(end - raw) + 4, body = 0;
        for (const char *h = raw + at; h < end; h++)
            if (strncasecmp(h, "\r\nContent-Length:", 17) == 0)
                body = (size_t)strtoul(h + 17, NULL, 10);
        if (head_end + body > n)
            break;
        count++;
        at = head_end + body;
    }
    return count;
}

/*
 * Sends raw bytes on a fresh connection and reads the gateway's answers
 * until `want` complete answers arrived (then waits up to wait_close_ms
 * more for the gateway to close the connection), or it closed, or 15 s
 * passed. *closed tells whether it closed. Returns the bytes (arena string).
 */
static char *exchange_raw(const mz_gw_t *gw, const char *bytes, size_t len, int want, int wait_close_ms,
                          bool *closed)
{
    mz_conn_t *c = mz_connect(gw->port);
    char err[256] = "";
    /* The gateway may refuse and close before everything is sent. */
    (void)mz_try_send_raw(c, bytes, len, err, sizeof(err));
    size_t cap = 1 << 16, n = 0;
    char *out = mz_alloc(cap);
    *closed = false;
    double deadline = mz_now_ms() + 15000;
    bool got_all = false;
    for (;;) {
        if (!got_all && complete_answers(out, n) >= want) {
            got_all = true;
            double close_by = mz_now_ms() + wait_close_ms;
            if (close_by < deadline)
                deadline = close_by;
        }
        int left = (int)(deadline - mz_now_ms());
        if (left <= 0)
            break;
        struct pollfd p = {.fd = c->fd, .events = POLLIN};
        int rc = poll(&p, 1, left);
        if (rc == 0)
            break;
        if (rc < 0 && errno == EINTR)
            continue;
        ssize_t got = recv(c->fd, out + n, cap - 1 - n, 0);
        if (got == 0 || (got < 0 && (errno == ECONNRESET || errno == EPIPE))) {
            *closed = true;
            break;
        }
        if (got < 0 && (errno == EAGAIN || errno == EINTR))
            continue;
        cr_assert(got > 0, "recv: %s", strerror(errno));
        n += (size_t)got;
        out[n] = '\0';
        cr_assert(n < cap - 1, "more than %zu bytes of answers", cap);
    }
    out[n] = '\0';
    mz_conn_close(c);
    return out;
}

/* Number of HTTP answers (status lines) in raw bytes. */
static int count_answers(const char *raw)
{
    int n = 0;
    for (const char *p = raw; (p = strstr(p, "HTTP/1.1 ")) != NULL; p += 9)
        n++;
    return n;
}

/* The JSON body of the first answer in raw (arena-owned), or NULL. */
static json_t *first_body(const char *raw)
{
    const char *b = strstr(raw, "\r\n\r\n");
    if (b == NULL)
        return NULL;
    const char *cl = strcasestr(raw, "\r\nContent-Length:");
    if (cl == NULL || cl > b)
        return NULL;
    size_t len = (size_t)strtoul(cl + 17, NULL, 10);
    return mz_keep(json_loadb(b + 4, len, 0, NULL));
}

/*
 * Asserts raw is exactly one answer: status `status`, the envelope with
 * `code`, the protocol's headers, Connection: close, and that the gateway
 * closed the connection.
 */
static void expect_refused(const char *what, const char *raw, bool closed, int status, const char *code)
{
    char line[32];
    snprintf(line, sizeof(line), "HTTP/1.1 %d ", status);
    cr_assert(strncmp(raw, line, strlen(line)) == 0, "%s: expected %d, got:\n%s", what, status, raw);
    cr_assert_eq(count_answers(raw), 1, "%s: expected one answer, got:\n%s", what, raw);
    cr_assert(strcasestr(raw, "\r\nContent-Type: application/json\r\n") != NULL, "%s: not JSON:\n%s", what, raw);
    cr_assert(strcasestr(raw, "\r\nCache-Control: no-store\r\n") != NULL, "%s: no Cache-Control:\n%s", what, raw);
    cr_assert(strcasestr(raw, "\r\nX-Request-Id: ") != NULL, "%s: no X-Request-Id:\n%s", what, raw);
    cr_assert(strcasestr(raw, "\r\nConnection: close\r\n") != NULL, "%s: no Connection: close:\n%s", what, raw);
    cr_assert(strstr(raw, "<HTML") == NULL && strstr(raw, "<html") == NULL, "%s: an HTML page:\n%s", what, raw);
    json_t *body = first_body(raw);
    cr_assert(json_is_object(body), "%s: body is not a JSON object:\n%s", what, raw);
    json_t *err = json_object_get(body, "error");
    cr_assert(json_is_object(err) && json_object_size(body) == 1 && json_object_size(err) == 3, "%s: not the envelope:\n%s",
              what, raw);
    cr_assert_str_eq(json_string_value(json_object_get(err, "code")), code, "%s:\n%s", what, raw);
    cr_assert(json_string_length(json_object_get(err, "message")) > 0, "%s: empty message", what);
    cr_assert(json_object_get(err, "details") != NULL, "%s: no details", what);
    cr_assert(closed, "%s: the connection was left open after:\n%s", what, raw);
}

/* Sends a head + body that must be refused 400 with nothing run. */
static void expect_smuggling_refused(const mz_gw_t *gw, const char *what, const char *request)
{
    double before = mz_metric(gw, PING_RUNS);
    bool closed = false;
    char *raw = exchange_raw(gw, request, strlen(request), 1, 5000, &closed);
    expect_refused(what, raw, closed, 400, "BAD_REQUEST");
    cr_assert_eq(mz_metric(gw, PING_RUNS), before, "%s: a smuggled ping ran", what);
}

/* ------------------------------------------------------------------------
 * Request smuggling
 * ---------------------------------------------------------------------- */

Test(hygiene, duplicate_content_length_is_400_and_nothing_runs)
{
    mz_gw_t *gw = mz_gw_start(NULL);
    /* Conflicting: the first length covers the call, the second the call plus a smuggled one. */
    size_t both = strlen(PING_BODY) + strlen(SMUGGLED);
    expect_smuggling_refused(gw, "conflicting Content-Length",
                             mz_fmt("POST " CALL " HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                                    "Content-Length: 19\r\nContent-Length: %zu\r\n\r\n" PING_BODY SMUGGLED,
                                    both));
    expect_smuggling_refused(gw, "conflicting Content-Length, longer first",
                             mz_fmt("POST " CALL " HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                                    "Content-Length: %zu\r\nContent-Length: 19\r\n\r\n" PING_BODY SMUGGLED,
                                    both));
    expect_smuggling_refused(gw, "identical Content-Length twice",
                             "POST " CALL " HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                             "Content-Length: 19\r\ncontent-length: 19\r\n\r\n" PING_BODY SMUGGLED);
    /* A single Content-Length still works, twice on one connection. */
    mz_expect_json(mz_expect_result(mz_call(gw, "ping", NULL, NULL)), "\"pong\"");
    bool closed = false;
    char *two = exchange_raw(gw, SMUGGLED SMUGGLED, strlen(SMUGGLED SMUGGLED), 2, 200, &closed);
    cr_assert_eq(count_answers(two), 2, "two pipelined pings:\n%s", two);
    cr_assert(!closed, "a keep-alive connection was closed after two good requests");
    mz_gw_stop_ok(gw);
}

Test(hygiene, content_length_must_be_plain_digits)
{
    mz_gw_t *gw = mz_gw_start(NULL);
    const char *values[] = {"+19", "-19", "0x13", "19abc", "1 9", "19,19", "", " ", NULL};
    for (size_t i = 0; values[i] != NULL; i++)
        expect_smuggling_refused(gw, mz_fmt("Content-Length: '%s'", values[i]),
                                 mz_fmt("POST " CALL " HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                                        "Content-Length: %s\r\n\r\n" PING_BODY SMUGGLED,
                                        values[i]));
    mz_gw_stop_ok(gw);
}

Test(hygiene, transfer_encoding_with_content_length_or_in_http10_is_400)
{
    mz_gw_t *gw = mz_gw_start(NULL);
    const char *chunked_ping = "13\r\n" PING_BODY "\r\n0\r\n\r\n";
    expect_smuggling_refused(gw, "Transfer-Encoding and Content-Length",
                             mz_fmt("POST " CALL " HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                                    "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n%s" SMUGGLED,
                                    chunked_ping));
    expect_smuggling_refused(gw, "Content-Length after Transfer-Encoding",
                             mz_fmt("POST " CALL " HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                                    "Transfer-Encoding: chunked\r\nContent-Length: 60\r\n\r\n%s" SMUGGLED,
                                    chunked_ping));
    expect_smuggling_refused(gw, "Transfer-Encoding in HTTP/1.0",
                             mz_fmt("POST " CALL " HTTP/1.0\r\nHost: x\r\nContent-Type: application/json\r\n"
                                    "Transfer-Encoding: chunked\r\n\r\n%s" SMUGGLED,
                                    chunked_ping));
    expect_smuggling_refused(gw, "two Transfer-Encoding headers",
                             mz_fmt("POST " CALL " HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                                    "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n%s" SMUGGLED,
                                    chunked_ping));
    expect_smuggling_refused(gw, "Transfer-Encoding other than chunked",
                             "POST " CALL " HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                             "Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n" SMUGGLED);
    /* A plain chunked call still works, with a request pipelined after it. */
    bool closed = false;
    char *ok = mz_fmt("POST " CALL " HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      "Transfer-Encoding: chunked\r\n\r\n%s" SMUGGLED,
                      chunked_ping);
    char *raw = exchange_raw(gw, ok, strlen(ok), 2, 200, &closed);
    cr_assert_eq(count_answers(raw), 2, "a chunked ping and a pipelined ping:\n%s", raw);
    cr_assert(strstr(raw, "HTTP/1.1 200 ") == raw && strstr(raw, "{\"result\":\"pong\"}") != NULL, "%s", raw);
    mz_gw_stop_ok(gw);
}

Test(hygiene, header_name_with_whitespace_is_400)
{
    mz_gw_t *gw = mz_gw_start(NULL);
    expect_smuggling_refused(gw, "'Transfer-Encoding :'",
                             "POST " CALL " HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                             "Content-Length: 19\r\nTransfer-Encoding : chunked\r\n\r\n" PING_BODY SMUGGLED);
    expect_smuggling_refused(gw, "'Content-Length\\t:'",
                             "POST " CALL " HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                             "Content-Length\t: 19\r\n\r\n" PING_BODY SMUGGLED);
    expect_smuggling_refused(gw, "a folded header line",
                             "POST " CALL " HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                             "X-A: 1\r\n Transfer-Encoding: chunked\r\nContent-Length: 19\r\n\r\n" PING_BODY SMUGGLED);
    expect_smuggling_refused(gw, "a header line without a colon",
                             "POST " CALL " HTTP/1.1\r\nHost x\r\nContent-Length: 19\r\n\r\n" PING_BODY SMUGGLED);
    mz_gw_stop_ok(gw);
}

Test(hygiene, body_on_get_is_400_and_not_read_as_a_request)
{
    mz_gw_t *gw = mz_gw_start(NULL);
    /* evhttp reads no body for GET: these bytes would be the next request. */
    expect_smuggling_refused(gw, "GET with a Content-Length body",
                             mz_fmt("GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: %zu\r\n\r\n" SMUGGLED,
                                    strlen(SMUGGLED)));
    expect_smuggling_refused(gw, "GET with a chunked body",
                             "GET /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" SMUGGLED);
    /* Content-Length: 0 on a GET is harmless. */
    bool closed = false;
    const char *zero = "GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n";
    char *raw = exchange_raw(gw, zero, strlen(zero), 1, 200, &closed);
    cr_assert(strncmp(raw, "HTTP/1.1 200 ", 13) == 0, "%s", raw);
    mz_gw_stop_ok(gw);
}

Test(hygiene, a_bad_request_behind_one_in_flight_is_refused_after_its_answer)
{
    mz_gw_t *gw = mz_gw_start(NULL);
    double before = mz_metric(gw, PING_RUNS);
    mz_conn_t *c = mz_connect(gw->port);
    char err[256] = "";
    const char *first = "GET /api/mizan/ctx/fanout/?ms=400 HTTP/1.1\r\nHost: x\r\n\r\n";
    cr_assert_eq(mz_try_send_raw(c, first, strlen(first), err, sizeof(err)), 0, "%s", err);
    mz_sleep_ms(100); /* the context is being computed */
    char *second = mz_fmt("GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: %zu\r\n\r\n" SMUGGLED,
                          strlen(SMUGGLED));
    cr_assert_eq(mz_try_send_raw(c, second, strlen(second), err, sizeof(err)), 0, "%s", err);
    mz_resp_t *r = NULL;
    cr_assert_eq(mz_try_recv(c, &r, err, sizeof(err)), 0, "%s", err);
    mz_expect_status(r, 200); /* the request in flight is answered first */
    cr_assert_eq(mz_try_recv(c, &r, err, sizeof(err)), 0, "no answer to the refused request: %s", err);
    mz_expect_error(r, 400, "BAD_REQUEST");
    cr_assert_str_eq(mz_header(r, "Connection"), "close");
    cr_assert_eq(mz_wait_closed(c, 5000), 1, "the connection stayed open after the refusal");
    cr_assert_eq(mz_metric(gw, PING_RUNS), before, "the smuggled ping ran");
    mz_gw_stop_ok(gw);
}

/* ------------------------------------------------------------------------
 * Bodies over the limit
 * ---------------------------------------------------------------------- */

Test(hygiene, bodies_over_the_limit_are_413_envelopes)
{
    mz_gw_t *gw = mz_gw_start(mz_json("{\"max_body_bytes\": 1024}"));
    double before = mz_metric(gw, ECHO_RUNS);
    const char *declared[] = {"1025", "4096", "4097", "5000", "1048576000", "99999999999999999999999999", NULL};
    for (size_t i = 0; declared[i] != NULL; i++) {
        /* Only the head is sent: the answer must not wait for the body. */
        char *head = mz_fmt("POST " CALL " HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                            "Content-Length: %s\r\n\r\n{\"function\":\"echo\",\"args\":{\"value\":1}}",
                            declared[i]);
        bool closed = false;
        char *raw = exchange_raw(gw, head, strlen(head), 1, 5000, &closed);
        expect_refused(mz_fmt("declared %s bytes", declared[i]), raw, closed, 413, "PAYLOAD_TOO_LARGE");
    }
    /* Actual size over the limit, chunked (no declared size at all). */
    char *big = mz_repeat('x', 3000);
    char *chunked = mz_fmt("POST " CALL " HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                           "Transfer-Encoding: chunked\r\n\r\n200\r\n%.512s\r\n200\r\n%.512s\r\n200\r\n%.512s\r\n0\r\n\r\n",
                           big, big, big);
    bool closed = false;
    char *raw = exchange_raw(gw, chunked, strlen(chunked), 1, 5000, &closed);
    expect_refused("a 1536-byte chunked body", raw, closed, 413, "PAYLOAD_TOO_LARGE");
    /* A body that declares its true size over the limit, sent whole. */
    char *whole = mz_fmt("{\"function\":\"echo\",\"args\":{\"value\":\"%s\"}}", big);
    mz_resp_t *r = mz_post(gw, CALL, whole, NULL);
    mz_expect_error(r, 413, "PAYLOAD_TOO_LARGE");
    cr_assert_eq(mz_metric(gw, ECHO_RUNS), before, "echo ran for a body over the limit");
    mz_gw_stop_ok(gw);
}

Test(hygiene, refusals_carry_cors_headers_for_an_allowed_origin)
{
    mz_gw_t *gw = mz_gw_start(mz_json("{\"max_body_bytes\": 1024, \"cors\": {\"origins\": [\"http://app.example\"]}}"));
    const char *origins[] = {"http://app.example", "http://evil.example"};
    for (int i = 0; i < 2; i++) {
        char *head = mz_fmt("POST " CALL " HTTP/1.1\r\nHost: x\r\nOrigin: %s\r\nContent-Type: application/json\r\n"
                            "Content-Length: 5000\r\n\r\n",
                            origins[i]);
        bool closed = false;
        char *raw = exchange_raw(gw, head, strlen(head), 1, 5000, &closed);
        expect_refused(origins[i], raw, closed, 413, "PAYLOAD_TOO_LARGE");
        cr_assert(strcasestr(raw, "\r\nVary: Origin\r\n") != NULL, "%s: no Vary: Origin:\n%s", origins[i], raw);
        char *acao = mz_fmt("\r\nAccess-Control-Allow-Origin: %s\r\n", origins[i]);
        if (i == 0)
            cr_assert(strcasestr(raw, acao) != NULL && strcasestr(raw, "\r\nAccess-Control-Expose-Headers: ") != NULL,
                      "an allowed origin cannot read the refusal:\n%s", raw);
        else
            cr_assert(strcasestr(raw, "Access-Control-Allow-Origin") == NULL, "another origin is allowed:\n%s", raw);
    }
    /* A chunked body that grows past the limit keeps its request's Origin and X-Request-Id. */
    char *big = mz_repeat('x', 600);
    char *chunked = mz_fmt("POST " CALL " HTTP/1.1\r\nHost: x\r\nOrigin: http://app.example\r\nX-Request-Id: up-1\r\n"
                           "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                           "258\r\n%s\r\n258\r\n%s\r\n0\r\n\r\n",
                           big, big);
    bool closed = false;
    char *raw = exchange_raw(gw, chunked, strlen(chunked), 1, 5000, &closed);
    expect_refused("chunked over the limit", raw, closed, 413, "PAYLOAD_TOO_LARGE");
    cr_assert(strcasestr(raw, "\r\nAccess-Control-Allow-Origin: http://app.example\r\n") != NULL, "%s", raw);
    cr_assert(strstr(raw, "\r\nX-Request-Id: up-1\r\n") != NULL, "%s", raw);
    mz_gw_stop_ok(gw);
}

/* ------------------------------------------------------------------------
 * Methods and request lines
 * ---------------------------------------------------------------------- */

/* Asserts a 405 envelope with an Allow header listing allow, connection kept. */
static void expect_405_raw(const mz_gw_t *gw, const char *method, const char *path, const char *allow)
{
    char *req = mz_fmt("%s %s HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", method, path);
    bool closed = false;
    char *raw = exchange_raw(gw, req, strlen(req), 2, 200, &closed);
    const char *what = mz_fmt("%s %s", method, path);
    cr_assert(strncmp(raw, "HTTP/1.1 405 ", 13) == 0, "%s: expected 405, got:\n%s", what, raw);
    cr_assert(strcasestr(raw, mz_fmt("\r\nAllow: %s\r\n", allow)) != NULL, "%s: Allow is not %s:\n%s", what, allow,
              raw);
    json_t *body = first_body(raw);
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(body, "error"), "code")),
                     "METHOD_NOT_ALLOWED", "%s:\n%s", what, raw);
    cr_assert(strstr(raw, "<HTML") == NULL, "%s: HTML:\n%s", what, raw);
    /* The connection stays usable: the pipelined GET was answered too. */
    cr_assert(strcasestr(raw, "\r\nContent-Length: ") != NULL, "%s: an unframed answer:\n%s", what, raw);
    cr_assert_eq(count_answers(raw), 2, "%s: the next request was not answered:\n%s", what, raw);
}

Test(hygiene, every_method_a_route_does_not_serve_is_405_with_allow)
{
    mz_gw_t *gw = mz_gw_start(NULL);
    const char *methods[] = {"TRACE", "CONNECT", "PROPFIND", "FOO", "BREW", "M-SEARCH", "DELETE", "PUT", NULL};
    for (size_t i = 0; methods[i] != NULL; i++) {
        expect_405_raw(gw, methods[i], CALL, "POST");
        expect_405_raw(gw, methods[i], "/api/mizan/ctx/feed/", "GET");
        expect_405_raw(gw, methods[i], "/healthz", "GET");
    }
    /* An unknown route stays 404 whatever the method. */
    bool closed = false;
    const char *req = "TRACE /nowhere HTTP/1.1\r\nHost: x\r\n\r\n";
    char *raw = exchange_raw(gw, req, strlen(req), 1, 200, &closed);
    cr_assert(strncmp(raw, "HTTP/1.1 404 ", 13) == 0 && strstr(raw, "\"NOT_FOUND\"") != NULL, "%s", raw);
    mz_gw_stop_ok(gw);
}

Test(hygiene, malformed_request_lines_are_400_envelopes)
{
    mz_gw_t *gw = mz_gw_start(NULL);
    const char *lines[] = {
        "GET /healthz\r\n\r\n",
        "GET  /healthz HTTP/1.1\r\n\r\n",
        "GET /healthz  HTTP/1.1\r\n\r\n",
        "GET /healthz HTTP/1.1 extra\r\n\r\n",
        "GET /healthz HTTP/2.0\r\n\r\n",
        "GET /healthz HTTP/1\r\n\r\n",
        "GET /healthz http/1.1\r\n\r\n",
        "G(T /healthz HTTP/1.1\r\n\r\n",
        "GET /he\x7flthz HTTP/1.1\r\n\r\n",
        "\x01GET /healthz HTTP/1.1\r\n\r\n",
        "GET /healthz HTTP/1.1\rX: y\r\n\r\n",
        "\r\n\r\n",
        NULL,
    };
    for (size_t i = 0; lines[i] != NULL; i++) {
        bool closed = false;
        char *raw = exchange_raw(gw, lines[i], strlen(lines[i]), 1, 5000, &closed);
        expect_refused(mz_fmt("request line %zu", i), raw, closed, 400, "BAD_REQUEST");
    }
    /* A head over max_header_bytes. */
    char *huge = mz_fmt("GET /healthz HTTP/1.1\r\nX-Big: %s\r\n\r\n", mz_repeat('a', 20000));
    bool closed = false;
    char *raw = exchange_raw(gw, huge, strlen(huge), 1, 5000, &closed);
    expect_refused("a 20 KB header", raw, closed, 400, "BAD_REQUEST");
    /* A sane X-Request-Id is echoed on a refusal too. */
    const char *with_rid = "GET /healthz HTTP/1.1\r\nX-Request-Id: refused-req-1\r\nContent-Length: 3\r\n\r\nabc";
    raw = exchange_raw(gw, with_rid, strlen(with_rid), 1, 5000, &closed);
    cr_assert(strstr(raw, "\r\nX-Request-Id: refused-req-1\r\n") != NULL, "%s", raw);
    mz_gw_stop_ok(gw);
}

Test(hygiene, head_is_405_without_a_body_and_the_connection_stays_in_step)
{
    mz_gw_t *gw = mz_gw_start(NULL);
    const char *paths[] = {"/healthz", CALL, "/api/mizan/ctx/feed/", "/metrics", NULL};
    for (size_t i = 0; paths[i] != NULL; i++) {
        char *req = mz_fmt("HEAD %s HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", paths[i]);
        bool closed = false;
        char *raw = exchange_raw(gw, req, strlen(req), 2, 200, &closed);
        cr_assert(strncmp(raw, "HTTP/1.1 405 ", 13) == 0, "HEAD %s:\n%s", paths[i], raw);
        cr_assert(strcasestr(raw, "\r\nAllow: ") != NULL, "HEAD %s: no Allow:\n%s", paths[i], raw);
        /* No body: the next answer starts right after the blank line. */
        const char *end = strstr(raw, "\r\n\r\n");
        cr_assert(end != NULL && strncmp(end + 4, "HTTP/1.1 200 ", 13) == 0,
                  "HEAD %s: a body follows the 405 head:\n%s", paths[i], raw);
        cr_assert_eq(count_answers(raw), 2, "HEAD %s:\n%s", paths[i], raw);
        cr_assert(!closed, "HEAD %s: the connection was closed", paths[i]);
    }
    mz_gw_stop_ok(gw);
}

/* ------------------------------------------------------------------------
 * Names and inputs
 * ---------------------------------------------------------------------- */

Test(hygiene, function_names_are_matched_whole)
{
    mz_gw_t *gw = mz_gw_start(NULL);
    double before = mz_metric(gw, PING_RUNS);
    const char *names[] = {"ping\\u0000junk", "ping\\u0000", "ping ", " ping", "1ping", "pi-ng", "", "ping\\n", NULL};
    for (size_t i = 0; names[i] != NULL; i++) {
        mz_resp_t *r = mz_post(gw, CALL, mz_fmt("{\"function\":\"%s\"}", names[i]), NULL);
        mz_expect_error(r, 404, "NOT_FOUND");
    }
    cr_assert_eq(mz_metric(gw, PING_RUNS), before, "ping ran for a name that is not \"ping\"");
    mz_expect_json(mz_expect_result(mz_call(gw, "ping", NULL, NULL)), "\"pong\"");
    mz_gw_stop_ok(gw);
}

Test(hygiene, malformed_percent_encoding_is_400)
{
    mz_gw_t *gw = mz_gw_start(NULL);
    const char *queries[] = {"post_id=%zz", "post_id=%", "post_id=1%2", "post_id=1%", "post%zz_id=1", "post_id=%00",
                             NULL};
    for (size_t i = 0; queries[i] != NULL; i++) {
        mz_resp_t *r = mz_get(gw, mz_fmt("/api/mizan/ctx/post/?%s", queries[i]), NULL);
        mz_expect_error(r, 400, "BAD_REQUEST");
        const char *msg = json_string_value(json_object_get(json_object_get(r->json, "error"), "message"));
        cr_assert(msg != NULL && strncmp(msg, "malformed query string", 22) == 0, "?%s: %s", queries[i], msg);
        r = mz_get(gw, mz_fmt("/api/mizan/events/?contexts=feed&x=%s", queries[i]), NULL);
        mz_expect_error(r, 400, "BAD_REQUEST");
    }
    /* Well-formed escapes still decode. */
    mz_resp_t *r = mz_get(gw, "/api/mizan/ctx/post/?post_id=%31", NULL);
    mz_expect_status(r, 200);
    mz_gw_stop_ok(gw);
}

/* HS256 token signed with the test key over exact header and payload texts (python3 stdlib). */
static char *sign_raw(const char *header, const char *payload)
{
    const char *script = "import sys, hmac, hashlib, base64\n"
                         "b = lambda s: base64.urlsafe_b64encode(s).rstrip(b'=')\n"
                         "m = b(sys.argv[2].encode()) + b'.' + b(sys.argv[3].encode())\n"
                         "print((m + b'.' + b(hmac.new(sys.argv[1].encode(), m, hashlib.sha256).digest())).decode())\n";
    const char *argv[] = {"/usr/bin/python3", "-c", script, MZ_TOKEN_SECRET, header, payload, NULL};
    mz_run_t *r = mz_run(argv, NULL, NULL, 20000);
    cr_assert_eq(r->status, 0, "python3: %s", r->err);
    size_t n = strlen(r->out);
    while (n > 0 && (r->out[n - 1] == '\n' || r->out[n - 1] == '\r'))
        r->out[--n] = '\0';
    return r->out;
}

Test(hygiene, token_kid_and_claim_rules)
{
    mz_gw_t *gw = mz_gw_start(NULL);
    long long exp = (long long)time(NULL) + 600;
    const char *h = "{\"alg\":\"HS256\",\"typ\":\"MWT\"}";
    /* The signing is right: the same key without kid is accepted. */
    mz_resp_t *r = mz_call(gw, "whoami", NULL, sign_raw(h, mz_fmt("{\"sub\":\"alice\",\"exp\":%lld}", exp)));
    mz_expect_result(r);
    const char *kid_empty = "{\"alg\":\"HS256\",\"typ\":\"MWT\",\"kid\":\"\"}";
    const char *bad[][2] = {
        {kid_empty, mz_fmt("{\"sub\":\"alice\",\"exp\":%lld}", exp)},
        {h, mz_fmt("{\"sub\":\"a\\nb\",\"exp\":%lld}", exp)},
        {h, mz_fmt("{\"sub\":\"alice\\r\",\"exp\":%lld}", exp)},
        {h, mz_fmt("{\"sub\":\"\\u007f\",\"exp\":%lld}", exp)},
        {h, mz_fmt("{\"sub\":\"alice\",\"exp\":%lld,\"perms\":[\"a\\nb\"]}", exp)},
        {h, mz_fmt("{\"sub\":\"alice\",\"exp\":%lld,\"perms\":[\"blog.view_drafts\",\"\"]}", exp)},
        {h, mz_fmt("{\"sub\":\"alice\",\"exp\":%lld,\"perms\":[\"blog.view_drafts\\u0001\"]}", exp)},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char *tok = sign_raw(bad[i][0], bad[i][1]);
        r = mz_call(gw, "ping", NULL, tok);
        mz_expect_error(r, 401, "UNAUTHORIZED");
        r = mz_get(gw, "/api/mizan/ctx/drafts/", tok);
        mz_expect_error(r, 401, "UNAUTHORIZED");
    }
    /* ["a", "b"] stays two permissions, neither of which is "a\nb". */
    char *two = sign_raw(h, mz_fmt("{\"sub\":\"alice\",\"exp\":%lld,\"perms\":[\"blog.view\",\"drafts\"]}", exp));
    mz_expect_error(mz_get(gw, "/api/mizan/ctx/drafts/", two), 403, "FORBIDDEN");
    mz_gw_stop_ok(gw);
}
