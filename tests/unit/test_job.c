/*
 * test_job.c - one invocation of a function (src/job.c): how a handler's
 * result, error and return code become the job's outcome, the mizan_req_*
 * API a handler sees (arguments, identity, module data, run-time
 * invalidation targets, cancellation-aware sleep), callers and their
 * references, per-function counters, and the process-wide cancellation at
 * shutdown (checked in a child process, since it cannot be undone).
 */
#include <criterion/criterion.h>

#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "job.h"
#include "metrics.h"
#include "registry.h"

/* ---- helpers -------------------------------------------------------------------- */

/* A function outside any registry, running the given handler. */
static mizan_function_t make_fn(const char *name, mizan_kind_t kind, mizan_handler_fn handler)
{
    mizan_function_t fn;
    memset(&fn, 0, sizeof(fn));
    fn.name = (char *)name;
    fn.kind = kind;
    fn.handler = handler;
    fn.timeout_ms = 5000;
    return fn;
}

/* Runs fn once with args (stolen; NULL: {}) as the anonymous caller. */
static mizan_job_t *run(const mizan_function_t *fn, json_t *args)
{
    mizan_job_t *job = mizan_job_new(fn, args != NULL ? args : json_object(), mizan_caller_anonymous());
    cr_assert_not_null(job);
    mizan_job_run(job);
    return job;
}

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- handlers --------------------------------------------------------------------- */

static int calls;

static int h_result(mizan_req_t *req)
{
    calls++;
    mizan_req_result(req, json_pack("{s:i}", "id", 5));
    return 0;
}

static int h_nothing(mizan_req_t *req)
{
    (void)req;
    calls++;
    return 0;
}

static int h_null_result(mizan_req_t *req)
{
    mizan_req_result(req, NULL);
    return 0;
}

static int h_result_twice(mizan_req_t *req)
{
    mizan_req_result(req, json_string("first"));
    mizan_req_result(req, json_string("second"));
    return 0;
}

static int h_error(mizan_req_t *req)
{
    char msg[64];
    strcpy(msg, "post 7 does not exist");
    int rc = mizan_req_error(req, MIZAN_NOT_FOUND, msg, json_pack("{s:i}", "post_id", 7));
    memset(msg, 'x', sizeof(msg) - 1); /* the message was copied */
    return rc;
}

static int h_error_then_zero(mizan_req_t *req)
{
    mizan_req_result(req, json_string("ignored"));
    mizan_req_error(req, MIZAN_FORBIDDEN, "not yours", NULL);
    return 0;
}

static int h_result_then_error(mizan_req_t *req)
{
    mizan_req_result(req, json_string("partial"));
    return mizan_req_error(req, MIZAN_VALIDATION_FAILED, "bad", NULL);
}

static int h_fail_silently(mizan_req_t *req)
{
    (void)req;
    return -1;
}

static int h_return_5(mizan_req_t *req)
{
    mizan_req_result(req, json_true());
    return 5;
}

static int h_error_ok_code(mizan_req_t *req)
{
    return mizan_req_error(req, MIZAN_OK, "ok is not an error code", NULL);
}

static int h_error_twice(mizan_req_t *req)
{
    mizan_req_error(req, MIZAN_BAD_REQUEST, "first", json_string("d1"));
    return mizan_req_error(req, MIZAN_UNAVAILABLE, NULL, NULL);
}

/* ---- outcome of a run ----------------------------------------------------------------- */

Test(job_run, result_and_zero)
{
    calls = 0;
    mizan_function_t fn = make_fn("get", MIZAN_QUERY, h_result);
    mizan_job_t *job = run(&fn, NULL);
    cr_assert_eq(calls, 1);
    cr_assert(job->ran);
    cr_assert_eq(job->code, MIZAN_OK);
    cr_assert_null(job->message);
    cr_assert_null(job->details);
    json_t *want = json_pack("{s:i}", "id", 5);
    cr_assert(json_equal(job->result, want));
    json_decref(want);
    cr_assert_geq(job->run_us, 0);
    mizan_job_free(job);
}

Test(job_run, zero_without_result_answers_null)
{
    mizan_function_t fn = make_fn("f", MIZAN_QUERY, h_nothing);
    mizan_job_t *job = run(&fn, NULL);
    cr_assert_eq(job->code, MIZAN_OK);
    cr_assert_not_null(job->result);
    cr_assert(json_is_null(job->result));
    mizan_job_free(job);
}

Test(job_run, null_result_is_json_null)
{
    mizan_function_t fn = make_fn("f", MIZAN_QUERY, h_null_result);
    mizan_job_t *job = run(&fn, NULL);
    cr_assert_eq(job->code, MIZAN_OK);
    cr_assert(json_is_null(job->result));
    mizan_job_free(job);
}

Test(job_run, last_result_wins)
{
    mizan_function_t fn = make_fn("f", MIZAN_QUERY, h_result_twice);
    mizan_job_t *job = run(&fn, NULL);
    cr_assert_str_eq(json_string_value(job->result), "second");
    mizan_job_free(job);
}

Test(job_run, error_and_minus_one)
{
    mizan_function_t fn = make_fn("f", MIZAN_QUERY, h_error);
    mizan_job_t *job = run(&fn, NULL);
    cr_assert(job->ran);
    cr_assert_eq(job->code, MIZAN_NOT_FOUND);
    cr_assert_str_eq(job->message, "post 7 does not exist");
    json_t *want = json_pack("{s:i}", "post_id", 7);
    cr_assert(json_equal(job->details, want));
    json_decref(want);
    cr_assert_null(job->result);
    mizan_job_free(job);
}

Test(job_run, error_then_zero_keeps_the_error)
{
    mizan_function_t fn = make_fn("f", MIZAN_QUERY, h_error_then_zero);
    mizan_job_t *job = run(&fn, NULL);
    cr_assert_eq(job->code, MIZAN_FORBIDDEN);
    cr_assert_str_eq(job->message, "not yours");
    cr_assert_null(job->result, "the result set before the error is dropped");
    mizan_job_free(job);
}

Test(job_run, result_then_error_is_an_error)
{
    mizan_function_t fn = make_fn("f", MIZAN_QUERY, h_result_then_error);
    mizan_job_t *job = run(&fn, NULL);
    cr_assert_eq(job->code, MIZAN_VALIDATION_FAILED);
    cr_assert_str_eq(job->message, "bad");
    mizan_job_free(job);
}

Test(job_run, minus_one_without_error_is_internal)
{
    mizan_function_t fn = make_fn("f", MIZAN_QUERY, h_fail_silently);
    mizan_job_t *job = run(&fn, NULL);
    cr_assert_eq(job->code, MIZAN_INTERNAL_ERROR);
    cr_assert_str_eq(job->message, "handler failed without raising an error");
    cr_assert_null(job->details);
    mizan_job_free(job);
}

Test(job_run, other_nonzero_return_is_internal)
{
    mizan_function_t fn = make_fn("f", MIZAN_QUERY, h_return_5);
    mizan_job_t *job = run(&fn, NULL);
    cr_assert_eq(job->code, MIZAN_INTERNAL_ERROR);
    mizan_job_free(job);
}

Test(job_run, error_with_ok_code_is_internal)
{
    mizan_function_t fn = make_fn("f", MIZAN_QUERY, h_error_ok_code);
    mizan_job_t *job = run(&fn, NULL);
    cr_assert_eq(job->code, MIZAN_INTERNAL_ERROR);
    cr_assert_str_eq(job->message, "ok is not an error code");
    mizan_job_free(job);
}

Test(job_run, last_error_wins)
{
    mizan_function_t fn = make_fn("f", MIZAN_QUERY, h_error_twice);
    mizan_job_t *job = run(&fn, NULL);
    cr_assert_eq(job->code, MIZAN_UNAVAILABLE);
    cr_assert_null(job->message, "a NULL message means the code's default");
    cr_assert_null(job->details);
    mizan_job_free(job);
}

Test(job_run, error_returns_minus_one)
{
    mizan_function_t fn = make_fn("f", MIZAN_QUERY, h_nothing);
    mizan_job_t *job = mizan_job_new(&fn, json_object(), mizan_caller_anonymous());
    cr_assert_eq(mizan_req_error(job, MIZAN_TIMEOUT, "late", NULL), -1);
    cr_assert_eq(job->code, MIZAN_TIMEOUT);
    mizan_job_free(job);
}

Test(job_run, cancelled_before_start_is_skipped)
{
    calls = 0;
    mizan_function_t fn = make_fn("f", MIZAN_QUERY, h_result);
    mizan_job_t *job = mizan_job_new(&fn, json_object(), mizan_caller_anonymous());
    atomic_store(&job->cancelled, true);
    mizan_job_run(job);
    cr_assert_eq(calls, 0);
    cr_assert(!job->ran);
    cr_assert_null(job->result);
    cr_assert_eq(job->code, MIZAN_OK);
    mizan_job_free(job);
}

Test(job_run, counters)
{
    mizan_fn_metrics_t m;
    memset(&m, 0, sizeof(m));
    mizan_function_t ok = make_fn("ok", MIZAN_QUERY, h_result);
    mizan_function_t bad = make_fn("bad", MIZAN_QUERY, h_error);
    ok.metrics = &m;
    bad.metrics = &m;
    mizan_job_free(run(&ok, NULL));
    mizan_job_free(run(&ok, NULL));
    mizan_job_free(run(&bad, NULL));
    cr_assert_eq(atomic_load(&m.runs), 3);
    cr_assert_eq(atomic_load(&m.errors), 1);
    cr_assert_eq(atomic_load(&m.duration.count), 3);
    long long in_buckets = 0;
    for (int i = 0; i <= MIZAN_METRICS_NBUCKETS; i++)
        in_buckets += atomic_load(&m.duration.buckets[i]);
    cr_assert_eq(in_buckets, 3);
    /* A skipped job is not a run. */
    mizan_job_t *job = mizan_job_new(&ok, json_object(), mizan_caller_anonymous());
    atomic_store(&job->cancelled, true);
    mizan_job_run(job);
    mizan_job_free(job);
    cr_assert_eq(atomic_load(&m.runs), 3);
}

/* ---- what the handler sees ------------------------------------------------------------- */

static const json_t *seen_args;
static const mizan_identity_t *seen_id;
static void *seen_data;
static const char *seen_name;

static int h_observe(mizan_req_t *req)
{
    seen_args = mizan_req_args(req);
    seen_id = mizan_req_identity(req);
    seen_data = mizan_req_module_data(req);
    seen_name = mizan_req_function(req);
    mizan_req_result(req, json_deep_copy(seen_args));
    return 0;
}

Test(job_req, accessors_for_an_anonymous_caller)
{
    static int data;
    mizan_modinst_t mod;
    memset(&mod, 0, sizeof(mod));
    mod.name = "m";
    mod.data = &data;
    mizan_function_t fn = make_fn("blog.get", MIZAN_QUERY, h_observe);
    fn.module = &mod;
    json_t *args = json_pack("{s:i}", "post_id", 3);
    mizan_job_t *job = run(&fn, args);
    cr_assert_eq(seen_args, args, "args are borrowed, not copied");
    cr_assert_null(seen_id->sub);
    cr_assert(!seen_id->staff);
    cr_assert(!seen_id->superuser);
    cr_assert_eq(seen_id->nperms, 0);
    cr_assert_eq(seen_data, &data);
    cr_assert_str_eq(seen_name, "blog.get");
    cr_assert(json_equal(job->result, args));
    mizan_job_free(job);
}

Test(job_req, module_data_without_a_module)
{
    mizan_function_t fn = make_fn("f", MIZAN_QUERY, h_observe);
    mizan_job_free(run(&fn, NULL));
    cr_assert_null(seen_data);
}

Test(job_req, identity_of_a_verified_caller)
{
    mizan_token_claims_t claims;
    memset(&claims, 0, sizeof(claims));
    claims.sub = strdup("alice");
    claims.staff = true;
    claims.perms = calloc(2, sizeof(char *));
    cr_assert_not_null(claims.perms);
    claims.perms[0] = strdup("blog.add_post");
    claims.perms[1] = strdup("blog.view_drafts");
    claims.nperms = 2;
    mizan_caller_t *caller = mizan_caller_new(&claims);
    cr_assert_not_null(caller);
    cr_assert_null(claims.sub, "the claims were stolen");
    cr_assert_eq(atomic_load(&caller->refs), 1);

    mizan_function_t fn = make_fn("f", MIZAN_QUERY, h_observe);
    mizan_job_t *job = mizan_job_new(&fn, json_object(), caller);
    cr_assert_eq(atomic_load(&caller->refs), 2, "a job holds a reference");
    mizan_job_run(job);
    cr_assert_str_eq(seen_id->sub, "alice");
    cr_assert(seen_id->staff);
    cr_assert(!seen_id->superuser);
    cr_assert_eq(seen_id->nperms, 2);
    cr_assert_str_eq(seen_id->perms[1], "blog.view_drafts");
    cr_assert(mizan_identity_has_perm(seen_id, "blog.add_post"));
    mizan_job_free(job);
    cr_assert_eq(atomic_load(&caller->refs), 1);
    cr_assert_eq(mizan_caller_ref(caller), caller);
    cr_assert_eq(atomic_load(&caller->refs), 2);
    mizan_caller_unref(caller);
    mizan_caller_unref(caller); /* freed here; ASan reports a leak otherwise */
}

Test(job_req, anonymous_caller_is_static)
{
    mizan_caller_t *anon = mizan_caller_anonymous();
    cr_assert_eq(mizan_caller_anonymous(), anon);
    int before = atomic_load(&anon->refs);
    cr_assert_eq(mizan_caller_ref(anon), anon);
    mizan_caller_unref(anon);
    mizan_caller_unref(anon);
    mizan_caller_unref(NULL);
    cr_assert_eq(atomic_load(&anon->refs), before);
    cr_assert_null(anon->id.sub);
}

Test(job_req, job_free_null)
{
    mizan_job_free(NULL);
}

/* ---- run-time invalidation targets ---------------------------------------------------------- */

static mizan_registry_t reg;
static mizan_modinst_t mod;

static int h_dummy(mizan_req_t *req)
{
    (void)req;
    return 0;
}

static void registry_setup(void)
{
    mizan_registry_init(&reg, 5000);
    memset(&mod, 0, sizeof(mod));
    mod.name = "testmod";
    mod.reg = &reg;
    const char *post_fns[] = {"get_post", NULL};
    const char *upd_inv[] = {"post", NULL};
    mizan_function_def_t get = {.name = "get_post", .kind = MIZAN_QUERY, .handler = h_dummy};
    mizan_function_def_t upd = {.name = "update_post", .kind = MIZAN_MUTATION, .handler = h_dummy,
                                .invalidates = upd_inv};
    mizan_context_def_t post = {.name = "post",
                                .params_schema = "{\"type\": \"object\", \"additionalProperties\": false, "
                                                 "\"properties\": {\"post_id\": {\"type\": \"integer\"}}}",
                                .functions = post_fns};
    mizan_context_def_t feed = {.name = "feed", .functions = post_fns};
    cr_assert_eq(mizan_module_add_function((mizan_module_t *)&mod, &get), 0);
    cr_assert_eq(mizan_module_add_function((mizan_module_t *)&mod, &upd), 0);
    cr_assert_eq(mizan_module_add_context((mizan_module_t *)&mod, &post), 0);
    cr_assert_eq(mizan_module_add_context((mizan_module_t *)&mod, &feed), 0);
    mizan_err_t err = {{0}};
    cr_assert_eq(mizan_registry_finish(&reg, &err), 0, "%s", err.msg);
}

static void registry_teardown(void)
{
    mizan_registry_deinit(&reg);
}

TestSuite(job_invalidate, .init = registry_setup, .fini = registry_teardown);

static mizan_job_t *job_for(const char *fn_name)
{
    const mizan_function_t *fn = mizan_registry_function(&reg, fn_name);
    cr_assert_not_null(fn);
    mizan_job_t *job = mizan_job_new(fn, json_object(), mizan_caller_anonymous());
    cr_assert_not_null(job);
    return job;
}

Test(job_invalidate, mutation_adds_targets)
{
    mizan_job_t *job = job_for("update_post");
    cr_assert_eq(mizan_req_invalidate(job, "feed", NULL), 0);
    cr_assert_eq(mizan_req_invalidate(job, "post", json_pack("{s:i}", "post_id", 9)), 0);
    json_t *want = json_loads("[{\"context\": \"feed\"}, {\"context\": \"post\", \"params\": {\"post_id\": 9}}]", 0,
                              NULL);
    cr_assert(json_equal(job->targets, want));
    json_decref(want);
    mizan_job_free(job);
}

Test(job_invalidate, query_targets_are_ignored)
{
    mizan_job_t *job = job_for("get_post");
    cr_assert_eq(mizan_req_invalidate(job, "post", json_pack("{s:i}", "post_id", 9)), 0);
    cr_assert_eq(mizan_req_invalidate(job, "feed", NULL), 0);
    cr_assert_eq(mizan_req_invalidate(job, "no_such_context", NULL), 0);
    cr_assert_null(job->targets);
    mizan_job_free(job);
}

Test(job_invalidate, unknown_context_is_refused)
{
    mizan_job_t *job = job_for("update_post");
    cr_assert_eq(mizan_req_invalidate(job, "nope", json_pack("{s:i}", "post_id", 9)), -1);
    cr_assert_eq(mizan_req_invalidate(job, NULL, NULL), -1);
    cr_assert_eq(mizan_req_invalidate(job, "get_post", NULL), -1, "a function name is not a context");
    cr_assert(job->targets == NULL || json_array_size(job->targets) == 0);
    mizan_job_free(job);
}

Test(job_invalidate, params_must_be_an_object)
{
    mizan_job_t *job = job_for("update_post");
    cr_assert_eq(mizan_req_invalidate(job, "post", json_pack("[i]", 9)), -1);
    cr_assert_eq(mizan_req_invalidate(job, "post", json_integer(9)), -1);
    cr_assert_eq(mizan_req_invalidate(job, "post", json_null()), -1);
    cr_assert(job->targets == NULL || json_array_size(job->targets) == 0);
    mizan_job_free(job);
    /* Also on a query (the params are stolen either way: no leak). */
    job = job_for("get_post");
    cr_assert_eq(mizan_req_invalidate(job, "post", json_string("x")), -1);
    mizan_job_free(job);
}

Test(job_invalidate, mutation_outside_a_registry)
{
    mizan_function_t fn = make_fn("m", MIZAN_MUTATION, h_dummy);
    mizan_job_t *job = mizan_job_new(&fn, json_object(), mizan_caller_anonymous());
    cr_assert_eq(mizan_req_invalidate(job, "post", json_object()), -1);
    mizan_job_free(job);
}

/* ---- sleeping and cancellation ------------------------------------------------------------------ */

Test(job_sleep, full_sleep)
{
    mizan_function_t fn = make_fn("f", MIZAN_QUERY, h_nothing);
    mizan_job_t *job = mizan_job_new(&fn, json_object(), mizan_caller_anonymous());
    long long t0 = now_ms();
    cr_assert_eq(mizan_req_sleep(job, 60), 0);
    long long took = now_ms() - t0;
    cr_assert_geq(took, 60, "slept %lld ms", took);
    cr_assert_lt(took, 1000, "slept %lld ms", took);
    cr_assert(!mizan_req_cancelled(job));
    mizan_job_free(job);
}

Test(job_sleep, over_a_second)
{
    mizan_function_t fn = make_fn("f", MIZAN_QUERY, h_nothing);
    mizan_job_t *job = mizan_job_new(&fn, json_object(), mizan_caller_anonymous());
    long long t0 = now_ms();
    cr_assert_eq(mizan_req_sleep(job, 1250), 0);
    long long took = now_ms() - t0;
    cr_assert_geq(took, 1250, "slept %lld ms", took);
    cr_assert_lt(took, 2500, "slept %lld ms", took);
    mizan_job_free(job);
}

Test(job_sleep, zero_and_negative_return_at_once)
{
    mizan_function_t fn = make_fn("f", MIZAN_QUERY, h_nothing);
    mizan_job_t *job = mizan_job_new(&fn, json_object(), mizan_caller_anonymous());
    long long t0 = now_ms();
    cr_assert_eq(mizan_req_sleep(job, 0), 0);
    cr_assert_eq(mizan_req_sleep(job, -5), 0);
    cr_assert_lt(now_ms() - t0, 50);
    mizan_job_free(job);
}

Test(job_sleep, already_cancelled)
{
    mizan_function_t fn = make_fn("f", MIZAN_QUERY, h_nothing);
    mizan_job_t *job = mizan_job_new(&fn, json_object(), mizan_caller_anonymous());
    atomic_store(&job->cancelled, true);
    cr_assert(mizan_req_cancelled(job));
    long long t0 = now_ms();
    cr_assert_eq(mizan_req_sleep(job, 10000), -1);
    cr_assert_lt(now_ms() - t0, 50);
    mizan_job_free(job);
}

static void *cancel_later(void *arg)
{
    struct timespec ts = {0, 40 * 1000000L};
    nanosleep(&ts, NULL);
    atomic_store(&((mizan_job_t *)arg)->cancelled, true);
    return NULL;
}

Test(job_sleep, cancelled_while_sleeping)
{
    mizan_function_t fn = make_fn("f", MIZAN_QUERY, h_nothing);
    mizan_job_t *job = mizan_job_new(&fn, json_object(), mizan_caller_anonymous());
    pthread_t t;
    long long t0 = now_ms();
    cr_assert_eq(pthread_create(&t, NULL, cancel_later, job), 0);
    int rc = mizan_req_sleep(job, 10000);
    long long took = now_ms() - t0;
    pthread_join(t, NULL);
    cr_assert_eq(rc, -1);
    cr_assert_geq(took, 40, "woke after %lld ms, before the cancellation", took);
    cr_assert_lt(took, 500, "woke %lld ms after the start; cancellation must be noticed quickly", took);
    mizan_job_free(job);
}

Test(job_sleep, sleeping_until_cancelled)
{
    /* LONG_MAX milliseconds: "until cancelled", with no overflow on the way. */
    mizan_function_t fn = make_fn("f", MIZAN_QUERY, h_nothing);
    mizan_job_t *job = mizan_job_new(&fn, json_object(), mizan_caller_anonymous());
    pthread_t t;
    long long t0 = now_ms();
    cr_assert_eq(pthread_create(&t, NULL, cancel_later, job), 0);
    int rc = mizan_req_sleep(job, LONG_MAX);
    long long took = now_ms() - t0;
    pthread_join(t, NULL);
    cr_assert_eq(rc, -1);
    cr_assert_lt(took, 500, "woke after %lld ms", took);
    mizan_job_free(job);
}

/* ---- process-wide cancellation (shutdown) ---------------------------------------------------------- */

/* Exit codes of the child: 0 when every check held. */
static int child_checks(void)
{
    mizan_function_t fn = make_fn("f", MIZAN_QUERY, h_result);
    mizan_job_t *before = mizan_job_new(&fn, json_object(), mizan_caller_anonymous());
    if (mizan_req_cancelled(before))
        return 1;
    mizan_job_cancel_all();
    mizan_job_t *after = mizan_job_new(&fn, json_object(), mizan_caller_anonymous());
    if (!mizan_req_cancelled(before) || !mizan_req_cancelled(after))
        return 2;
    long long t0 = now_ms();
    if (mizan_req_sleep(after, 10000) != -1 || now_ms() - t0 > 100)
        return 3;
    calls = 0;
    mizan_job_run(after);
    if (calls != 0 || after->ran || after->result != NULL)
        return 4;
    mizan_job_free(before);
    mizan_job_free(after);
    return 0;
}

Test(job_cancel_all, every_request_is_cancelled)
{
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0)
        _exit(child_checks());
    int status = 0;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFEXITED(status), "child died (status %d)", status);
    cr_assert_eq(WEXITSTATUS(status), 0, "check %d failed in the child", WEXITSTATUS(status));
    /* This process was not shut down. */
    mizan_function_t fn = make_fn("f", MIZAN_QUERY, h_nothing);
    mizan_job_t *job = mizan_job_new(&fn, json_object(), mizan_caller_anonymous());
    cr_assert(!mizan_req_cancelled(job));
    mizan_job_free(job);
}

static void *sleep_long(void *arg)
{
    mizan_job_t *job = arg;
    return mizan_req_sleep(job, 10000) == -1 ? job : NULL;
}

/* A handler asleep in another thread wakes at shutdown. */
static int child_sleeper(void)
{
    mizan_function_t fn = make_fn("f", MIZAN_QUERY, h_nothing);
    mizan_job_t *job = mizan_job_new(&fn, json_object(), mizan_caller_anonymous());
    pthread_t t;
    if (pthread_create(&t, NULL, sleep_long, job) != 0)
        return 1;
    struct timespec ts = {0, 30 * 1000000L};
    nanosleep(&ts, NULL);
    long long t0 = now_ms();
    mizan_job_cancel_all();
    void *res = NULL;
    pthread_join(t, &res);
    if (res != job)
        return 2;
    if (now_ms() - t0 > 200)
        return 3;
    mizan_job_free(job);
    return 0;
}

Test(job_cancel_all, wakes_a_sleeping_handler)
{
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0)
        _exit(child_sleeper());
    int status = 0;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFEXITED(status), "child died (status %d)", status);
    cr_assert_eq(WEXITSTATUS(status), 0, "check %d failed in the child", WEXITSTATUS(status));
}
