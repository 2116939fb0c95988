/*
 * test_inline.c - end-to-end tests of non-blocking functions: a function
 * declared non-blocking (module ABI field `nonblocking`, or the config's
 * "nonblocking" table) runs on the I/O loop that received the request and
 * never waits for a worker, so calls and contexts made only of such
 * functions are served while every worker is busy and the work queue is
 * full. Deadlines, concurrency limits and counters still apply to them.
 *
 * The blog declares ping, add, echo and boom non-blocking.
 */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache_support.h"
#include "harness.h"

TestSuite(inline_run, .init = mz_setup, .fini = mz_teardown, .timeout = 180);

/* Waits until /readyz of gw reports busy workers and queued jobs. */
static void wait_load(const mz_gw_t *gw, int busy, int queued)
{
    double until = mz_now_ms() + 10000;
    for (;;) {
        mz_resp_t *r = mz_get(gw, "/readyz", NULL);
        if (json_integer_value(json_object_get(r->json, "busy")) == busy &&
            json_integer_value(json_object_get(r->json, "queued")) == queued)
            return;
        cr_assert(mz_now_ms() < until, "/readyz never reported %d busy and %d queued:\n%s", busy, queued,
                  mz_describe(r));
        mz_sleep_ms(20);
    }
}

/*
 * Occupies the only worker, then the only queue slot, of gw with two long
 * sleeps (one after the other: sent together, the second could find the
 * first still queued and be refused). Returns the batches to join.
 */
static void fill_workers(const mz_gw_t *gw, mz_req_t *reqs, mz_batch_t **b)
{
    for (int i = 0; i < 2; i++) {
        reqs[i] = mz_call_req("sleep", "{\"ms\": 2000}", NULL);
        b[i] = mz_batch_start(gw->port, 1, &reqs[i], 30000);
        cr_assert(mz_batch_wait_sent(b[i], 1, 10000), "sleep %d was not sent", i);
        wait_load(gw, 1, i);
    }
    /* A blocking function now finds the queue full. */
    mz_expect_error(mz_call(gw, "get_post", "{\"post_id\": 1}", NULL), 503, "UNAVAILABLE");
}

static void join_sleeps(mz_batch_t **b)
{
    for (int i = 0; i < 2; i++) {
        mz_result_t *res = mz_batch_join(b[i]);
        cr_assert(res[0].resp != NULL, "sleep %d got no response: %s", i, res[0].err);
        mz_expect_json(mz_expect_result(res[0].resp), "{\"slept_ms\": 2000}");
    }
}

Test(inline_run, calls_served_while_every_worker_is_busy)
{
    mz_gw_t *gw = mz_gw_start(mz_json("{\"workers\": 1, \"queue_size\": 1}"));
    double runs_before = mz_metric(gw, "mizan_function_runs_total{function=\"add\"}");
    mz_req_t reqs[2];
    mz_batch_t *b[2];
    fill_workers(gw, reqs, b);

    mz_expect_json(mz_expect_result(mz_call(gw, "ping", NULL, NULL)), "\"pong\"");
    mz_expect_json(mz_expect_result(mz_call(gw, "add", "{\"a\": 2, \"b\": 40}", NULL)), "42");
    mz_expect_json(mz_expect_result(mz_call(gw, "echo", "{\"value\": {\"k\": [1, 2]}}", NULL)), "{\"k\": [1, 2]}");
    /* A failing one answers as it does from a worker: generic 500 with the request id. */
    mz_resp_t *boom = mz_call(gw, "boom", NULL, NULL);
    mz_expect_error(boom, 500, "INTERNAL_ERROR");
    cr_assert(json_is_string(json_object_get(json_object_get(json_object_get(boom->json, "error"), "details"),
                                             "request_id")),
              "the 500 of an inline run carries no request id:\n%s", mz_describe(boom));
    /* Validation still comes first. */
    mz_expect_error(mz_call(gw, "add", "{\"a\": \"two\", \"b\": 40}", NULL), 422, "VALIDATION_FAILED");

    /* Inline runs are counted like any other. */
    double runs_after = mz_metric(gw, "mizan_function_runs_total{function=\"add\"}");
    cr_assert(runs_after == runs_before + 1, "add ran once, yet its run counter went from %g to %g", runs_before,
              runs_after);
    join_sleeps(b);
    mz_gw_stop_ok(gw);
}

Test(inline_run, context_of_non_blocking_functions_served_while_workers_are_busy)
{
    mz_gw_t *gw = mz_gw_start(mz_json("{\"workers\": 1, \"queue_size\": 1,"
                                      " \"contexts\": [{\"name\": \"quick\", \"functions\": [\"ping\", \"boom\"],"
                                      "                 \"ttl\": 0}]}"));
    mz_req_t reqs[2];
    mz_batch_t *b[2];
    fill_workers(gw, reqs, b);
    mz_resp_t *r = mz_get(gw, "/api/mizan/ctx/quick/", NULL);
    mz_expect_status(r, 200);
    mz_expect_json(json_object_get(json_object_get(r->json, "data"), "ping"), "\"pong\"");
    json_t *err = json_object_get(json_object_get(r->json, "errors"), "boom");
    cr_assert(err != NULL && strcmp(json_string_value(json_object_get(err, "code")), "INTERNAL_ERROR") == 0,
              "boom's slot is not an INTERNAL_ERROR:\n%s", mz_describe(r));
    cr_assert_str_eq(mz_header(r, "X-Mizan-Cache"), "BYPASS");
    join_sleeps(b);
    mz_gw_stop_ok(gw);
}

Test(inline_run, config_declared_non_blocking_keeps_its_deadline)
{
    /* sleep declared non-blocking by the config: it runs on the loop, where
     * its deadline still cuts it short (mizan_req_sleep sees the deadline). */
    mz_gw_t *gw = mz_gw_start(mz_json("{\"workers\": 1, \"queue_size\": 1, \"function_timeout_ms\": 300,"
                                      " \"nonblocking\": {\"sleep\": true}}"));
    double before = mz_metric(gw, "mizan_function_timeouts_total{function=\"sleep\"}");
    mz_resp_t *r = mz_call(gw, "sleep", "{\"ms\": 10000}", NULL);
    mz_expect_error(r, 504, "TIMEOUT");
    cr_assert(r->elapsed_ms < 15000, "an inline run past its 300 ms deadline took %.0f ms", r->elapsed_ms);
    double after = mz_metric(gw, "mizan_function_timeouts_total{function=\"sleep\"}");
    cr_assert(after == before + 1, "the timeout was not counted: %g then %g", before, after);
    /* The loop is free again, and a short run still succeeds. */
    mz_expect_json(mz_expect_result(mz_call(gw, "sleep", "{\"ms\": 1}", NULL)), "{\"slept_ms\": 1}");
    mz_gw_stop_ok(gw);
}

Test(inline_run, config_can_send_a_function_back_to_the_workers)
{
    /* "nonblocking": {"ping": false} overrides the module: ping queues again. */
    mz_gw_t *gw = mz_gw_start(mz_json("{\"workers\": 1, \"queue_size\": 1, \"nonblocking\": {\"ping\": false}}"));
    mz_req_t reqs[2];
    mz_batch_t *b[2];
    fill_workers(gw, reqs, b);
    mz_expect_error(mz_call(gw, "ping", NULL, NULL), 503, "UNAVAILABLE");
    mz_expect_json(mz_expect_result(mz_call(gw, "add", "{\"a\": 1, \"b\": 1}", NULL)), "2");
    join_sleeps(b);
    mz_gw_stop_ok(gw);
}

/* Runs `mizand --check-config` on a config with extra (merged onto the defaults). */
static mz_run_t *check_config(const char *extra)
{
    char *dir = mz_tmpdir();
    json_t *cfg = mz_keep(mz_config_defaults(dir));
    mz_json_merge(cfg, mz_json("%s", extra));
    char *path = mz_write_config(dir, "mizan.json", cfg);
    const char *argv[] = {mz_env("MIZAN_TEST_BIN"), "--check-config", "--config", path, NULL};
    return mz_run(argv, dir, NULL, 30000);
}

Test(inline_run, config_table_is_checked)
{
    static const struct {
        const char *config, *says;
    } cases[] = {
        {"{\"nonblocking\": [\"ping\"]}", "\"nonblocking\" must be an object"},
        {"{\"nonblocking\": {\"nope\": true}}", "nonblocking.nope"},
        {"{\"nonblocking\": {\"ping\": 1}}", "must be true or false"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        mz_run_t *run = check_config(cases[i].config);
        cr_assert(run->status != 0, "--check-config accepted %s", cases[i].config);
        cr_assert(strstr(run->err, cases[i].says) != NULL, "for %s the error does not say \"%s\":\n%s",
                  cases[i].config, cases[i].says, run->err);
    }
    mz_run_t *ok = check_config("{\"nonblocking\": {\"sleep\": true, \"ping\": false}}");
    cr_assert_eq(ok->status, 0, "a valid \"nonblocking\" table was refused:\n%s", ok->err);
}
