/*
 * call.c - POST {prefix}/call/: one function (PROTOCOL.md section 2), and
 * the invalidation list of a mutation (section 5).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/http.h>

#include "call.h"

#include "jobs.h"
#include "invalidate.h"
#include "log.h"
#include "reply.h"
#include "request.h"
#include "text.h"

/* Records ex's targets, then done(ex, rc). */
static void invalidate(mizan_exchange_t *ex, void (*done)(void *arg, int rc))
{
    ex->external = true;
    mizan_cache_invalidate(&mizan_api_services(ex)->cache, ex->targets, ex->rid, done, ex);
}

/* The mutation's invalidations are recorded (or failed): answer the client. */
static void invalidated(void *arg, int rc)
{
    mizan_exchange_t *ex = arg;
    ex->external = false;
    if (rc < 0) {
        mizan_reply_error(ex, MIZAN_INTERNAL_ERROR, "recording invalidations failed", NULL);
        return;
    }
    json_t *body = json_pack("{s:O, s:O}", "result", ex->jobs[0]->result, "invalidate", ex->targets);
    mizan_reply_json(ex, body);
}

/*
 * The invalidations of a mutation that may have run but failed are recorded
 * (or failed): answer its error, listing the targets in details.invalidate.
 */
static void invalidated_after_failure(void *arg, int rc)
{
    mizan_exchange_t *ex = arg;
    ex->external = false;
    mizan_job_t *job = ex->jobs[0];
    mizan_code_t code = job != NULL ? job->code : MIZAN_TIMEOUT;
    const char *message = job != NULL ? job->message : "function timed out";
    if (rc < 0) {
        mizan_reply_error(ex, MIZAN_INTERNAL_ERROR, "recording invalidations failed", NULL);
        return;
    }
    json_t *details = NULL;
    if (job != NULL && json_is_object(job->details)) {
        details = job->details;
        job->details = NULL;
    } else {
        details = json_object();
    }
    if (details != NULL)
        json_object_set(details, "invalidate", ex->targets);
    if (code == MIZAN_UNAVAILABLE)
        mizan_reply_header(ex, "Retry-After", "1");
    mizan_reply_error(ex, code, message, details);
}

/*
 * A mutation that may have run (PROTOCOL.md section 5 rev 2): it timed out
 * (the handler may still be committing), or its handler started, or its
 * upstream request went out, and it failed unexpectedly or as unavailable.
 * Its writes may have landed, so its targets are invalidated exactly as on
 * success before the error goes out. A handler's deliberate refusal
 * (NOT_FOUND, FORBIDDEN, ...) says it changed nothing.
 */
static bool may_have_run(const mizan_job_t *job)
{
    if (job == NULL || job->code == MIZAN_TIMEOUT)
        return true; /* timed out: the handler may still be running, the upstream may have committed */
    return job->ran && (job->code == MIZAN_INTERNAL_ERROR || job->code == MIZAN_UNAVAILABLE);
}

/* The shutdown's invalidations are recorded (or failed): answer 503 listing them. */
static void invalidated_at_shutdown(void *arg, int rc)
{
    mizan_exchange_t *ex = arg;
    ex->external = false;
    json_t *details = rc == 0 ? json_pack("{s:O}", "invalidate", ex->targets) : NULL;
    mizan_reply_header(ex, "Retry-After", "1");
    mizan_reply_error(ex, MIZAN_UNAVAILABLE, "the gateway is shutting down", details);
}

bool mizan_call_abort(mizan_exchange_t *ex)
{
    if (ex->fn == NULL || ex->fn->kind != MIZAN_MUTATION || ex->targets == NULL || ex->pending == 0)
        return false;
    /* The handler may be running: it is abandoned here (it comes back to
     * the loop on its own and is freed there), and what it may have written
     * is invalidated before the 503 goes out, as for a timeout. */
    for (size_t i = 0; i < ex->njobs; i++) {
        mizan_job_t *job = ex->jobs[i];
        if (job == NULL)
            continue;
        job->owner = NULL;
        atomic_store(&job->cancelled, true);
        ex->jobs[i] = NULL;
    }
    ex->pending = 0;
    invalidate(ex, invalidated_at_shutdown);
    return true;
}

/* The function's job is back or timed out. */
static void call_done(mizan_exchange_t *ex)
{
    mizan_job_t *job = ex->jobs[0];
    if (ex->fn->kind == MIZAN_MUTATION && may_have_run(job)) {
        if (job != NULL) {
            /* The handler's run-time targets count too. */
            json_t *all = mizan_invalidate_targets(ex->fn, job->args, job->targets);
            if (all != NULL) {
                json_decref(ex->targets);
                ex->targets = all;
            }
        }
        if (ex->targets == NULL) {
            mizan_reply_error(ex, MIZAN_INTERNAL_ERROR, "cannot build the invalidation list", NULL);
            return;
        }
        invalidate(ex, invalidated_after_failure);
        return;
    }
    if (job == NULL) {
        mizan_reply_error(ex, MIZAN_TIMEOUT, "function timed out", NULL);
        return;
    }
    if (job->code != MIZAN_OK) {
        if (job->code == MIZAN_INTERNAL_ERROR) {
            mizan_reply_error(ex, MIZAN_INTERNAL_ERROR, job->message, NULL);
            return;
        }
        json_t *details = job->details;
        job->details = NULL;
        if (job->code == MIZAN_UNAVAILABLE)
            mizan_reply_header(ex, "Retry-After", "1");
        mizan_reply_error(ex, job->code, job->message, details);
        return;
    }
    if (ex->fn->kind != MIZAN_MUTATION) {
        mizan_reply_json(ex, json_pack("{s:O}", "result", job->result));
        return;
    }
    if (job->targets != NULL || ex->targets == NULL) {
        /* The declared targets were built before the run (handlers cannot
         * change their args); only run-time targets call for a rebuild. */
        json_decref(ex->targets);
        ex->targets = mizan_invalidate_targets(ex->fn, job->args, job->targets);
    }
    if (ex->targets == NULL) {
        mizan_reply_error(ex, MIZAN_INTERNAL_ERROR, "cannot build the invalidation list", NULL);
        return;
    }
    invalidate(ex, invalidated);
}

/* Checks the body shape of PROTOCOL section 2; answers and returns NULL on failure. */
static json_t *read_body(mizan_exchange_t *ex, const char **fname)
{
    const mizan_config_t *cfg = ex->loop->cfg;
    struct evbuffer *in = evhttp_request_get_input_buffer(ex->req);
    size_t len = evbuffer_get_length(in);
    if (len > cfg->max_body_bytes) {
        char msg[96];
        snprintf(msg, sizeof(msg), "request body is over the %zu byte limit", cfg->max_body_bytes);
        mizan_reply_error(ex, MIZAN_PAYLOAD_TOO_LARGE, msg, NULL);
        return NULL;
    }
    const char *ctype = evhttp_find_header(evhttp_request_get_input_headers(ex->req), "Content-Type");
    if (ctype == NULL || strncasecmp(ctype, "application/json", 16) != 0 ||
        (ctype[16] != '\0' && ctype[16] != ';' && ctype[16] != ' ')) {
        mizan_reply_error(ex, MIZAN_BAD_REQUEST, "Content-Type must be application/json", NULL);
        return NULL;
    }
    mizan_err_t err = {{0}};
    const char *buf = (const char *)evbuffer_pullup(in, -1);
    json_t *body = mizan_request_parse_json(buf, len, cfg->max_json_depth, &err);
    if (body == NULL) {
        mizan_reply_error(ex, MIZAN_BAD_REQUEST, err.msg, NULL);
        return NULL;
    }
    const char *why = NULL;
    json_t *fn = json_object_get(body, "function"), *args = json_object_get(body, "args");
    if (!json_is_object(body))
        why = "the body must be a JSON object {\"function\": ..., \"args\": {...}}";
    else if (fn == NULL)
        why = "member \"function\" is required";
    else if (!json_is_string(fn))
        why = "member \"function\" must be a string";
    else if (args != NULL && !json_is_object(args))
        why = "member \"args\" must be an object";
    else if (json_object_size(body) != 1 + (args != NULL))
        why = "only \"function\" and \"args\" are allowed in the body";
    if (why != NULL) {
        json_decref(body);
        mizan_reply_error(ex, MIZAN_BAD_REQUEST, why, NULL);
        return NULL;
    }
    *fname = json_string_value(fn);
    return body;
}

void mizan_call_handle(mizan_exchange_t *ex)
{
    const mizan_api_t *api = mizan_api_services(ex)->api;
    const char *fname = NULL;
    json_t *body = read_body(ex, &fname);
    if (body == NULL)
        return;
    mizan_text_copy(ex->target, sizeof(ex->target), fname);
    /* Whole-name lookup: "ping\u0000junk" is not "ping" (PROTOCOL section 2). */
    json_t *fname_json = json_object_get(body, "function");
    const mizan_function_t *fn = mizan_request_name_valid(fname, json_string_length(fname_json))
                                     ? mizan_registry_function(api->reg, fname)
                                     : NULL;
    if (fn == NULL) {
        json_decref(body);
        mizan_reply_error(ex, MIZAN_NOT_FOUND, "unknown function", NULL);
        return;
    }
    ex->fn = fn;
    mizan_code_t auth = mizan_auth_check(&fn->auth, &ex->caller->id);
    if (auth != MIZAN_OK) {
        json_decref(body);
        mizan_reply_error(ex, auth, auth == MIZAN_UNAUTHORIZED ? "this function requires a token" : NULL, NULL);
        return;
    }
    json_t *args = json_object_get(body, "args");
    args = args != NULL ? json_incref(args) : json_object();
    json_decref(body);
    json_t *errors = json_array();
    int nerr = args != NULL && errors != NULL ? mizan_schema_validate(fn->schema, args, "args", errors) : -1;
    if (nerr != 0) {
        json_decref(args);
        if (nerr < 0) {
            json_decref(errors);
            mizan_reply_error(ex, MIZAN_INTERNAL_ERROR, "validation failed to run", NULL);
        } else {
            mizan_reply_invalid(ex, errors);
        }
        return;
    }
    json_decref(errors);
    if (fn->handler == NULL && fn->upstream == NULL) {
        json_decref(args);
        mizan_reply_error(ex, MIZAN_NOT_IMPLEMENTED, "this function is declared but has no handler", NULL);
        return;
    }
    if (fn->kind == MIZAN_MUTATION && (ex->targets = mizan_invalidate_targets(fn, args, NULL)) == NULL) {
        /* Built before the handler runs: a timeout leaves no args to build from. */
        json_decref(args);
        mizan_reply_error(ex, MIZAN_INTERNAL_ERROR, "cannot build the invalidation list", NULL);
        return;
    }
    ex->jobs = calloc(1, sizeof(*ex->jobs));
    ex->njobs = 1;
    if (ex->jobs == NULL || (ex->jobs[0] = mizan_job_new(fn, args, ex->caller)) == NULL) {
        if (ex->jobs == NULL)
            json_decref(args);
        mizan_reply_error(ex, MIZAN_INTERNAL_ERROR, "out of memory", NULL);
        return;
    }
    ex->done = call_done;
    if (mizan_jobs_submit(ex) < 0) {
        mizan_reply_unavailable(ex);
        return;
    }
    if (ex->pending == 0)
        call_done(ex); /* refused at the function's concurrency limit: 503 with Retry-After */
}
