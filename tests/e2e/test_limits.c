/*
 * test_limits.c - end-to-end tests of the gateway under pressure and at its
 * limits: body size (413), nesting depth, a full work queue (503 with
 * Retry-After), function deadlines (504, and a context that keeps going
 * when one of its functions times out), 200 parallel calls, 1000
 * concurrent keep-alive connections, graceful shutdown with requests in
 * flight, and idle/slow clients dropped after idle_timeout_s.
 */
#include <criterion/criterion.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "harness.h"

TestSuite(limits, .init = mz_setup, .fini = mz_teardown, .timeout = 300);

/* A call body for echo of exactly `size` bytes (padding inside the string). */
static char *echo_body_of_size(size_t size)
{
    const char *head = "{\"function\":\"echo\",\"args\":{\"value\":\"";
    const char *tail = "\"}}";
    size_t fixed = strlen(head) + strlen(tail);
    cr_assert(size > fixed);
    char *body = mz_fmt("%s%s%s", head, mz_repeat('x', size - fixed), tail);
    cr_assert_eq(strlen(body), size);
    return body;
}

/* A non-negative integer Retry-After (delta-seconds). */
static bool retry_after_ok(const mz_resp_t *r)
{
    const char *v = mz_header(r, "Retry-After");
    if (v == NULL || v[0] == '\0')
        return false;
    return strspn(v, "0123456789") == strlen(v);
}

/* ------------------------------------------------------------------------
 * Request size and shape
 * ---------------------------------------------------------------------- */

Test(limits, body_over_max_body_bytes_is_413)
{
    mz_gw_t *gw = mz_gw_start(mz_json("{\"max_body_bytes\": 1024}"));
    /* Exactly at the limit is fine. */
    char *at = echo_body_of_size(1024);
    mz_resp_t *r = mz_post(gw, "/api/mizan/call/", at, NULL);
    json_t *result = mz_expect_result(r);
    cr_assert_eq(json_string_length(result), 1024 - strlen("{\"function\":\"echo\",\"args\":{\"value\":\"\"}}"));

    size_t sizes[] = {1025, 1500, 2048};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        r = mz_post(gw, "/api/mizan/call/", echo_body_of_size(sizes[i]), NULL);
        cr_assert(r->status == 413, "a %zu-byte body (limit 1024): expected 413, got:\n%s",
                  sizes[i], mz_describe(r));
        mz_expect_error(r, 413, "PAYLOAD_TOO_LARGE");
    }
    /* Still serving. */
    mz_expect_json(mz_expect_result(mz_call(gw, "ping", NULL, NULL)), "\"pong\"");
    mz_gw_stop_ok(gw);
}

Test(limits, deep_nesting_is_400)
{
    mz_gw_t *gw = mz_gw_start(NULL);
    size_t depth = 10000;
    char *value = mz_fmt("%s%s", mz_repeat('[', depth), mz_repeat(']', depth));
    mz_resp_t *r = mz_call(gw, "echo", mz_fmt("{\"value\": %s}", value), NULL);
    mz_expect_error(r, 400, "BAD_REQUEST");
    /* Moderate nesting is data like any other. */
    char *ok = mz_fmt("%s%s", mz_repeat('[', 20), mz_repeat(']', 20));
    mz_expect_json(mz_expect_result(mz_call(gw, "echo", mz_fmt("{\"value\": %s}", ok), NULL)), ok);
    mz_gw_stop_ok(gw);
}

/* ------------------------------------------------------------------------
 * Work queue and deadlines
 * ---------------------------------------------------------------------- */

Test(limits, full_queue_is_503_with_retry_after)
{
    mz_gw_t *gw = mz_gw_start(mz_json("{\"workers\": 1, \"queue_size\": 1}"));
    enum { N = 8 };
    mz_req_t reqs[N];
    for (size_t i = 0; i < N; i++)
        reqs[i] = mz_call_req("sleep", "{\"ms\": 500}", NULL);
    mz_result_t *res = mz_parallel(gw->port, N, reqs, 20000);
    int ok = 0, busy = 0;
    for (size_t i = 0; i < N; i++) {
        cr_assert(res[i].resp != NULL, "request %zu got no response: %s", i, res[i].err);
        mz_resp_t *r = res[i].resp;
        if (r->status == 200) {
            mz_expect_json(mz_expect_result(r), "{\"slept_ms\": 500}");
            ok++;
        } else {
            cr_assert(r->status == 503, "request %zu: expected 200 or 503, got:\n%s", i,
                      mz_describe(r));
            mz_expect_error(r, 503, "UNAVAILABLE");
            cr_assert(retry_after_ok(r), "503 without a delta-seconds Retry-After:\n%s",
                      mz_describe(r));
            busy++;
        }
    }
    cr_assert(ok >= 1 && busy >= 1, "expected both 200s and 503s: %d ok, %d busy", ok, busy);
    cr_assert(ok <= 2 + 1, "1 worker + 1 queue slot, yet %d of %d requests ran", ok, N);
    /* Once the queue drains the gateway serves again. */
    mz_expect_result(mz_call(gw, "ping", NULL, NULL));
    mz_gw_stop_ok(gw);
}

Test(limits, deadline_is_504_and_gateway_recovers)
{
    mz_gw_t *gw = mz_gw_start(mz_json("{\"function_timeout_ms\": 300, \"workers\": 4}"));
    mz_resp_t *r = mz_call(gw, "sleep", "{\"ms\": 2000}", NULL);
    mz_expect_error(r, 504, "TIMEOUT");
    cr_assert(r->elapsed_ms >= 280 && r->elapsed_ms <= 1500,
              "504 expected at the 300 ms deadline, came after %.1f ms", r->elapsed_ms);

    /* Promptly serving while the late handler may still be sleeping. */
    r = mz_call(gw, "ping", NULL, NULL);
    mz_expect_result(r);
    cr_assert(r->elapsed_ms < 1000, "ping right after a timeout took %.1f ms", r->elapsed_ms);

    /* Within the deadline is fine. */
    mz_expect_json(mz_expect_result(mz_call(gw, "sleep", "{\"ms\": 50}", NULL)),
                   "{\"slept_ms\": 50}");

    /* After the late handler has surely finished, nothing broke. */
    mz_sleep_ms(2000);
    for (int i = 0; i < 8; i++)
        mz_expect_result(mz_call(gw, "ping", NULL, NULL));
    mz_expect_json(mz_expect_result(mz_call(gw, "add", "{\"a\": 20, \"b\": 22}", NULL)), "42");
    mz_gw_stop_ok(gw);
}

Test(limits, context_function_timeout_goes_to_errors)
{
    mz_gw_t *gw = mz_gw_start(mz_json("{\"function_timeout_ms\": 300, \"workers\": 8}"));
    mz_resp_t *r = mz_get(gw, "/api/mizan/ctx/fanout/?ms=2000", NULL);
    mz_expect_status(r, 200);
    mz_expect_std_headers(r);
    cr_assert(r->elapsed_ms <= 1500, "fanout with a 300 ms deadline took %.1f ms", r->elapsed_ms);
    mz_expect_json(json_object_get(r->json, "data"), "{}");
    json_t *errors = json_object_get(r->json, "errors");
    const char *names[] = {"slow_a", "slow_b", "slow_c", "slow_d"};
    for (size_t i = 0; i < 4; i++) {
        json_t *e = json_object_get(errors, names[i]);
        cr_assert(json_is_object(e) && json_object_size(e) == 3 &&
                      json_is_string(json_object_get(e, "message")) &&
                      json_object_get(e, "details") != NULL,
                  "errors.%s is not {code, message, details}:\n%s", names[i], mz_describe(r));
        cr_assert_str_eq(json_string_value(json_object_get(e, "code")), "TIMEOUT", "%s",
                         mz_describe(r));
    }
    const char *cache = mz_header(r, "X-Mizan-Cache");
    cr_assert(cache != NULL && strcmp(cache, "BYPASS") == 0, "a bundle with errors is never "
              "cached:\n%s", mz_describe(r));
    mz_sleep_ms(2000);
    mz_expect_status(mz_get(gw, "/api/mizan/ctx/fanout/?ms=10", NULL), 200);
    mz_gw_stop_ok(gw);
}

/* ------------------------------------------------------------------------
 * Concurrency
 * ---------------------------------------------------------------------- */

Test(limits, two_hundred_parallel_calls)
{
    mz_gw_t *gw = mz_gw_start(NULL);
    enum { N = 200 };
    mz_req_t *reqs = mz_alloc(N * sizeof(*reqs));
    for (size_t i = 0; i < N; i++)
        reqs[i] = mz_call_req("add", mz_fmt("{\"a\": %zu, \"b\": %zu}", i, 1000 + i), NULL);
    mz_result_t *res = mz_parallel(gw->port, N, reqs, 30000);
    for (size_t i = 0; i < N; i++) {
        cr_assert(res[i].resp != NULL, "call %zu got no response: %s", i, res[i].err);
        json_t *result = mz_expect_result(res[i].resp);
        cr_assert(json_is_integer(result) && json_integer_value(result) == (json_int_t)(1000 + 2 * i),
                  "call %zu: add(%zu, %zu) answered %s", i, i, 1000 + i, mz_dump(result));
    }
    mz_gw_stop_ok(gw);
}

Test(limits, thousand_concurrent_keepalive_connections)
{
    enum { N = 1000 };
    /*
     * The gateway is started with a soft RLIMIT_NOFILE of 256, the common
     * default being 1024: serving 1000 clients shows that it raises its own
     * soft limit towards the hard one. The test process then raises its own
     * to hold the client sockets.
     */
    struct rlimit rl;
    cr_assert(getrlimit(RLIMIT_NOFILE, &rl) == 0);
    cr_assert(rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= N + 256,
              "the hard RLIMIT_NOFILE (%llu) is below the %d this test needs",
              (unsigned long long)rl.rlim_max, N + 256);
    rl.rlim_cur = 256;
    cr_assert(setrlimit(RLIMIT_NOFILE, &rl) == 0);
    mz_gw_t *gw = mz_gw_start(NULL);
    long have = mz_raise_nofile(N + 256);
    cr_assert(have >= N + 64, "RLIMIT_NOFILE is %ld, need %d", have, N + 64);
    mz_conn_t **conns = mz_alloc(N * sizeof(*conns));
    char err[256];
    for (size_t i = 0; i < N; i++) {
        conns[i] = mz_try_connect(gw->port, 10000, err, sizeof(err));
        cr_assert(conns[i] != NULL, "connection %zu: %s", i, err);
        conns[i]->timeout_ms = 30000;
    }
    mz_req_t ping = mz_call_req("ping", NULL, NULL);
    mz_req_t add = mz_call_req("add", "{\"a\": 1, \"b\": 1}", NULL);
    for (int round = 0; round < 2; round++) {
        const mz_req_t *req = round == 0 ? &ping : &add;
        /* Every connection has a request in flight before any answer is read. */
        for (size_t i = 0; i < N; i++)
            cr_assert(mz_try_send(conns[i], req, err, sizeof(err)) == 0,
                      "round %d, connection %zu: %s", round, i, err);
        for (size_t i = 0; i < N; i++) {
            mz_resp_t *r = NULL;
            cr_assert(mz_try_recv(conns[i], &r, err, sizeof(err)) == 0,
                      "round %d, connection %zu: %s\n--- gateway log tail ---\n%s", round, i, err,
                      mz_gw_log_tail(gw, 3000));
            mz_expect_json(mz_expect_result(r), round == 0 ? "\"pong\"" : "2");
            cr_assert(!conns[i]->peer_closed, "round %d: connection %zu closed by the gateway",
                      round, i);
        }
    }
    mz_gw_stop_ok(gw);
}

/* ------------------------------------------------------------------------
 * Shutdown and idle clients
 * ---------------------------------------------------------------------- */

Test(limits, sigterm_drains_in_flight_requests)
{
    mz_gw_t *gw = mz_gw_start(
        mz_json("{\"workers\": 24, \"queue_size\": 64, \"drain_timeout_ms\": 10000, \"max_concurrency\": {\"sleep\": 0}}"));
    enum { N = 20 };
    mz_req_t reqs[N];
    for (size_t i = 0; i < N; i++)
        reqs[i] = mz_call_req("sleep", "{\"ms\": 500}", NULL);
    mz_batch_t *batch = mz_batch_start(gw->port, N, reqs, 20000);
    cr_assert(mz_batch_wait_sent(batch, N, 10000), "the 20 requests were not all sent");
    mz_sleep_ms(100);
    double sigterm_at = mz_now_ms();
    mz_gw_signal(gw, SIGTERM);

    /* While draining, a newcomer is refused or told UNAVAILABLE, never served. */
    mz_sleep_ms(50);
    char err[256] = "";
    mz_conn_t *late = mz_try_connect(gw->port, 2000, err, sizeof(err));
    if (late != NULL) {
        late->timeout_ms = 5000;
        mz_req_t ping = mz_call_req("ping", NULL, NULL);
        mz_resp_t *r = NULL;
        if (mz_try_request(late, &ping, &r, err, sizeof(err)) == 0)
            mz_expect_error(r, 503, "UNAVAILABLE");
    }

    mz_result_t *res = mz_batch_join(batch);
    for (size_t i = 0; i < N; i++) {
        cr_assert(res[i].resp != NULL, "in-flight request %zu lost at shutdown: %s\n--- log ---\n%s",
                  i, res[i].err, mz_gw_log_tail(gw, 3000));
        mz_expect_json(mz_expect_result(res[i].resp), "{\"slept_ms\": 500}");
    }
    int st = mz_gw_wait(gw, 15000);
    cr_assert(st == 0, "mizand exit status after SIGTERM: %d (-1: still running)\n--- log ---\n%s",
              st, mz_gw_log_tail(gw, 4000));
    cr_assert(mz_now_ms() - sigterm_at < 10000, "drain took longer than drain_timeout_ms");
    cr_assert(mz_try_connect(gw->port, 2000, err, sizeof(err)) == NULL,
              "a connection was accepted after shutdown");
    cr_assert(strstr(err, "refused") != NULL, "expected connection refused, got: %s", err);
}

Test(limits, idle_and_slow_clients_are_dropped)
{
    mz_gw_t *gw = mz_gw_start(mz_json("{\"idle_timeout_s\": 2}"));
    char err[256];
    /* Half a request head, then silence. */
    mz_conn_t *half_head = mz_connect(gw->port);
    const char *part1 = "POST /api/mizan/call/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Le";
    cr_assert(mz_try_send_raw(half_head, part1, strlen(part1), err, sizeof(err)) == 0, "%s", err);
    /* A full head, a tenth of the body, then silence. */
    mz_conn_t *half_body = mz_connect(gw->port);
    const char *part2 = "POST /api/mizan/call/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                        "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"functio";
    cr_assert(mz_try_send_raw(half_body, part2, strlen(part2), err, sizeof(err)) == 0, "%s", err);
    /* A kept-alive connection that goes quiet after one exchange. */
    mz_conn_t *quiet = mz_connect(gw->port);
    mz_expect_result(mz_call_on(quiet, "ping", NULL, NULL));
    double stalled_at = mz_now_ms();

    /* Others are served meanwhile. */
    for (int i = 0; i < 3; i++) {
        mz_sleep_ms(400);
        mz_resp_t *r = mz_call(gw, "ping", NULL, NULL);
        mz_expect_result(r);
        cr_assert(r->elapsed_ms < 1000, "ping %d took %.1f ms while slow clients stalled", i,
                  r->elapsed_ms);
    }

    mz_conn_t *stalled[] = {half_head, half_body, quiet};
    const char *what[] = {"half a request head", "half a request body", "an idle keep-alive"};
    for (size_t i = 0; i < 3; i++)
        cr_assert(mz_wait_closed(stalled[i], 0) == 0,
                  "a client that sent %s was dropped before idle_timeout_s (after %.0f ms)",
                  what[i], mz_now_ms() - stalled_at);
    for (size_t i = 0; i < 3; i++) {
        int closed = mz_wait_closed(stalled[i], 7000);
        double after = mz_now_ms() - stalled_at;
        cr_assert(closed == 1, "a client that sent %s was not dropped within %.0f ms (rc %d)",
                  what[i], after, closed);
        cr_assert(after >= 1500, "a client that sent %s was dropped after only %.0f ms", what[i],
                  after);
    }
    mz_expect_result(mz_call(gw, "ping", NULL, NULL));
    mz_gw_stop_ok(gw);
}
