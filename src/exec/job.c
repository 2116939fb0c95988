/*
 * job.c - the handler-facing side of an invocation: the mizan_req_* API of
 * include/mizan/mizan.h, callers, and running a handler on a worker.
 */
#include "job.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "metrics.h"
#include "registry.h"

/* Set once at shutdown; read by every handler through mizan_req_cancelled. */
static atomic_bool shutting_down;

mizan_job_t *mizan_job_new(const mizan_function_t *fn, json_t *args, mizan_caller_t *caller)
{
    mizan_job_t *job = calloc(1, sizeof(*job));
    if (job == NULL) {
        json_decref(args);
        return NULL;
    }
    job->fn = fn;
    job->args = args;
    job->caller = mizan_caller_ref(caller);
    job->code = MIZAN_OK;
    atomic_init(&job->cancelled, false);
    return job;
}

void mizan_job_free(mizan_job_t *job)
{
    if (job == NULL)
        return;
    json_decref(job->args);
    json_decref(job->result);
    json_decref(job->details);
    json_decref(job->targets);
    free(job->message);
    mizan_caller_unref(job->caller);
    free(job);
}

void mizan_job_cancel_all(void)
{
    atomic_store(&shutting_down, true);
}

static long elapsed_us(const struct timespec *a, const struct timespec *b)
{
    return (long)((b->tv_sec - a->tv_sec) * 1000000L + (b->tv_nsec - a->tv_nsec) / 1000L);
}

void mizan_job_run(mizan_job_t *job)
{
    if (mizan_req_cancelled(job))
        return;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    job->ran = true;
    int rc = job->fn->handler(job);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    job->run_us = elapsed_us(&t0, &t1);
    if (rc != 0 && job->code == MIZAN_OK)
        mizan_req_error(job, MIZAN_INTERNAL_ERROR, "handler failed without raising an error", NULL);
    if (rc == 0 && job->code != MIZAN_OK) {
        /* An error raised and then success returned: the error stands. */
        json_decref(job->result);
        job->result = NULL;
    }
    if (job->code == MIZAN_OK && job->result == NULL)
        job->result = json_null();
    mizan_job_check_output(job);
    mizan_metrics_function(job->fn, job->run_us, job->code != MIZAN_OK);
}

void mizan_job_check_output(mizan_job_t *job)
{
    const mizan_function_t *f = job->fn;
    if (!f->check_output || job->code != MIZAN_OK)
        return;
    /* Validation fills in defaults: check a copy, so the client gets what
     * the handler returned, byte for byte. */
    json_t *copy = json_deep_copy(job->result);
    json_t *errors = json_array();
    int n = copy != NULL && errors != NULL ? mizan_schema_validate(f->output, copy, "result", errors) : -1;
    json_decref(copy);
    if (n != 0) {
        json_t *fields = json_pack("{s:s, s:O}", "function", f->name, "violations", errors != NULL ? errors : json_null());
        mizan_log_fields(MIZAN_LOG_ERROR, n > 0 ? "result does not match the declared output schema"
                                                : "output validation could not run",
                         fields);
        json_decref(fields);
        json_decref(job->result);
        job->result = NULL;
        mizan_req_error(job, MIZAN_INTERNAL_ERROR,
                        n > 0 ? "the result does not match the declared output schema" : "output validation failed to run",
                        NULL);
    }
    json_decref(errors);
}

/* ---- the module-facing API ------------------------------------------ */

const json_t *mizan_req_args(const mizan_req_t *req)
{
    return req->args;
}

const mizan_identity_t *mizan_req_identity(const mizan_req_t *req)
{
    return &req->caller->id;
}

void *mizan_req_module_data(const mizan_req_t *req)
{
    return req->fn->module != NULL ? req->fn->module->data : NULL;
}

const char *mizan_req_function(const mizan_req_t *req)
{
    return req->fn->name;
}

bool mizan_req_cancelled(const mizan_req_t *req)
{
    if (atomic_load(&req->cancelled) || atomic_load(&shutting_down))
        return true;
    if (req->deadline.tv_sec == 0)
        return false;
    /* An inline run: no timer can fire while it holds its loop. */
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return now.tv_sec > req->deadline.tv_sec ||
           (now.tv_sec == req->deadline.tv_sec && now.tv_nsec >= req->deadline.tv_nsec);
}

int mizan_req_sleep(const mizan_req_t *req, long ms)
{
    /* A year is "until cancelled" for any handler; larger would overflow. */
    const long max_ms = 366L * 24 * 3600 * 1000;
    if (ms > max_ms)
        ms = max_ms;
    if (ms < 0)
        ms = 0;
    struct timespec now, until;
    clock_gettime(CLOCK_MONOTONIC, &now);
    until = now;
    until.tv_sec += ms / 1000;
    until.tv_nsec += (ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    /* Sleep in short slices so cancellation is noticed within 5 ms. */
    for (;;) {
        if (mizan_req_cancelled(req))
            return -1;
        clock_gettime(CLOCK_MONOTONIC, &now);
        long left_us = elapsed_us(&now, &until);
        if (left_us <= 0)
            return 0;
        long slice_us = left_us < 5000 ? left_us : 5000;
        struct timespec slice = {0, slice_us * 1000L};
        while (nanosleep(&slice, &slice) != 0 && errno == EINTR)
            ;
    }
}

void mizan_req_result(mizan_req_t *req, json_t *result)
{
    json_decref(req->result);
    req->result = result != NULL ? result : json_null();
}

int mizan_req_error(mizan_req_t *req, mizan_code_t code, const char *message, json_t *details)
{
    if (code == MIZAN_OK)
        code = MIZAN_INTERNAL_ERROR;
    req->code = code;
    free(req->message);
    req->message = message != NULL ? strdup(message) : NULL;
    json_decref(req->details);
    req->details = details;
    return -1;
}

int mizan_req_invalidate(mizan_req_t *req, const char *context, json_t *params)
{
    if (params != NULL && !json_is_object(params)) {
        json_decref(params);
        return -1;
    }
    if (req->fn->kind != MIZAN_MUTATION) {
        json_decref(params);
        return 0;
    }
    const mizan_registry_t *reg = req->fn->module != NULL ? req->fn->module->reg : NULL;
    if (context == NULL || reg == NULL || mizan_registry_context(reg, context) == NULL ||
        (req->targets == NULL && (req->targets = json_array()) == NULL)) {
        json_decref(params);
        return -1;
    }
    json_t *t = json_pack("{s:s}", "context", context);
    if (t == NULL) {
        json_decref(params);
        return -1;
    }
    if (params != NULL)
        json_object_set_new(t, "params", params);
    json_array_append_new(req->targets, t);
    return 0;
}
