/*
 * context.c - GET {prefix}/ctx/{name}/: every function of a context run
 * concurrently and returned as one bundle (PROTOCOL.md section 5).
 *
 * The path of one request: read the params (check/), ask the store for the
 * bundle (store/cache.c); on a hit, reply; when told to compute, run the
 * functions (exec/), bundle their outcomes, hand the bundle to the store,
 * and reply with the X-Mizan-Cache the store gave. A STALE answer is
 * replied at once; when the store says this request leads the
 * recomputation, it runs in a background exchange (no request, route
 * "ctx_refresh") that stores the bundle and ends without a reply.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/http.h>

#include "context.h"

#include "jobs.h"
#include "envelope.h"
#include "exchange.h"
#include "jsontext.h"
#include "log.h"
#include "metrics.h"
#include "params.h"
#include "reply.h"
#include "request.h"
#include "text.h"

/* Decodes, coerces and validates the params; answers and returns NULL on failure. */
static json_t *read_params(mizan_exchange_t *ex, const mizan_context_t *c)
{
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(ex->req);
    mizan_err_t err = {{0}};
    json_t *raw = mizan_request_parse_query(uri != NULL ? evhttp_uri_get_query(uri) : NULL, &err);
    if (raw == NULL) {
        mizan_reply_error(ex, MIZAN_BAD_REQUEST, err.msg, NULL);
        return NULL;
    }
    json_t *params = json_object();
    const char *key;
    json_t *value;
    json_object_foreach(raw, key, value)
    {
        const json_t *types = NULL;
        for (size_t i = 0; i < c->nparams; i++)
            if (strcmp(c->param_names[i], key) == 0)
                types = c->param_types[i];
        json_object_set_new(params, key,
                            types != NULL ? mizan_params_coerce(types, json_string_value(value)) : json_incref(value));
    }
    json_decref(raw);
    json_t *errors = json_array();
    int nerr = params != NULL && errors != NULL ? mizan_schema_validate(c->params, params, "params", errors) : -1;
    if (nerr == 0) {
        json_decref(errors);
        return params;
    }
    json_decref(params);
    if (nerr < 0) {
        json_decref(errors);
        mizan_reply_error(ex, MIZAN_INTERNAL_ERROR, "validation failed to run", NULL);
    } else {
        mizan_reply_invalid(ex, errors);
    }
    return NULL;
}

/*
 * A value one function's args may hold (new reference): the value itself
 * when it is a scalar, which validation cannot change; a copy of an object
 * or array (a params default), into which validation may fill defaults.
 */
static json_t *arg_value(json_t *v)
{
    return json_is_object(v) || json_is_array(v) ? json_deep_copy(v) : json_incref(v);
}

/*
 * The args one function of the context receives (new reference): its own
 * object, so that its defaults land there, holding the params' scalar
 * values themselves rather than copies (query-string params are scalars).
 */
static json_t *args_for(const mizan_function_t *fn, const json_t *params)
{
    json_t *args = json_object();
    if (fn->open_args) {
        const char *key;
        json_t *v;
        json_object_foreach((json_t *)params, key, v)
        {
            if (args != NULL)
                json_object_set_new(args, key, arg_value(v));
        }
        return args;
    }
    for (size_t i = 0; args != NULL && i < fn->nargs; i++) {
        json_t *v = json_object_get(params, fn->arg_names[i]);
        if (v != NULL)
            json_object_set_new(args, fn->arg_names[i], arg_value(v));
    }
    return args;
}

/* Replies with a bundle's text (borrowed) and its X-Mizan-Cache value. */
static void reply_bundle(mizan_exchange_t *ex, const char *status, const char *text, size_t len)
{
    ex->cache = status;
    mizan_metrics_cache(ex->ctx, status);
    mizan_reply_header(ex, "X-Mizan-Cache", status);
    mizan_reply_text(ex, 200, text, len);
}

static void context_done(mizan_exchange_t *ex)
{
    for (size_t i = 0; i < ex->njobs; i++) {
        mizan_job_t *job = ex->jobs[i];
        if (job == NULL)
            continue;
        if (job->code == MIZAN_OK)
            json_object_set(ex->data, job->fn->name, job->result);
        else
            json_object_set_new(ex->errors, job->fn->name,
                                mizan_envelope_failure(job->code, job->message, job->details, ex->rid, job->fn->name));
    }
    json_t *body = json_pack("{s:s, s:O, s:O, s:O}", "context", ex->ctx->name, "params", ex->params, "data", ex->data,
                             "errors", ex->errors);
    size_t len = 0;
    char *owned = NULL;
    const char *text = mizan_jsontext_render(body, JSON_COMPACT | JSON_PRESERVE_ORDER, &len, &owned);
    json_decref(body);
    mizan_cache_loop_t *cl = &mizan_api_services(ex)->cache;
    /* A bundle with errors is never cached. */
    const char *status = mizan_cache_store(cl, ex->lookup, ex->ctx, text, len, json_object_size(ex->errors) == 0);
    if (ex->req == NULL) {
        /* A background recomputation: stored, nobody to answer. */
        free(owned);
        mizan_exchange_finish(ex, 200);
        return;
    }
    if (text == NULL) {
        mizan_reply_error(ex, MIZAN_INTERNAL_ERROR, "cannot render the bundle", NULL);
        return;
    }
    reply_bundle(ex, status, text, len);
    free(owned);
}

static void compute(mizan_exchange_t *ex);

/*
 * Hands ex's lookup (which leads the recomputation of a stale bundle) to a
 * background exchange of its own and starts it; ex is then answered with
 * the stale text. A background exchange counts as live (a drain waits for
 * it) and answers nobody.
 */
static void refresh_in_background(mizan_exchange_t *ex)
{
    mizan_exchange_t *bg = mizan_exchange_new(ex->loop, ex->req);
    if (bg == NULL)
        return; /* the lookup stays ex's: released with it, the recomputation is left to a later request */
    mizan_exchange_request_id(ex->loop, bg->rid, sizeof(bg->rid));
    bg->req = NULL;
    bg->route = "ctx_refresh";
    bg->external = true; /* bounded by its functions' deadlines: a shutdown abort waits for it */
    snprintf(bg->target, sizeof(bg->target), "%s", ex->target);
    bg->release = mizan_jobs_release;
    bg->caller = mizan_caller_ref(ex->caller);
    bg->ctx = ex->ctx;
    bg->params = json_incref(ex->params);
    bg->lookup = ex->lookup;
    ex->lookup = NULL;
    compute(bg);
}

/* The store's answer to ex's lookup. */
static void looked_up(void *arg, mizan_cache_outcome_t outcome, const char *status, const char *text, size_t len)
{
    mizan_exchange_t *ex = arg;
    ex->external = false;
    switch (outcome) {
    case MIZAN_CACHE_HIT:
    case MIZAN_CACHE_SHARED:
    case MIZAN_CACHE_STALE:
        reply_bundle(ex, status, text, len);
        return;
    case MIZAN_CACHE_STALE_REFRESH:
        refresh_in_background(ex);
        reply_bundle(ex, status, text, len);
        return;
    case MIZAN_CACHE_COMPUTE:
        compute(ex);
        return;
    case MIZAN_CACHE_GONE:
        mizan_reply_header(ex, "Retry-After", "1");
        mizan_reply_error(ex, MIZAN_UNAVAILABLE, "the gateway is shutting down", NULL);
        return;
    case MIZAN_CACHE_FAILED:
    default:
        mizan_reply_error(ex, MIZAN_INTERNAL_ERROR, "out of memory", NULL);
        return;
    }
}

void mizan_context_handle(mizan_exchange_t *ex, const char *name)
{
    const mizan_api_t *api = mizan_api_services(ex)->api;
    mizan_text_copy(ex->target, sizeof(ex->target), name);
    const mizan_context_t *c = mizan_registry_context(api->reg, name);
    if (c == NULL) {
        mizan_reply_error(ex, MIZAN_NOT_FOUND, "unknown context", NULL);
        return;
    }
    ex->ctx = c;
    /* Who may ask comes before what is asked. */
    mizan_code_t worst = mizan_registry_may_read(c, &ex->caller->id);
    if (worst == MIZAN_UNAUTHORIZED && c->scope == MIZAN_SCOPE_USER && ex->caller->id.sub == NULL) {
        mizan_reply_error(ex, MIZAN_UNAUTHORIZED, "this context is per user and requires a token", NULL);
        return;
    }
    if (worst != MIZAN_OK) {
        mizan_reply_error(ex, worst, worst == MIZAN_UNAUTHORIZED ? "this context requires a token" : NULL, NULL);
        return;
    }
    json_t *params = read_params(ex, c);
    if (params == NULL)
        return; /* answered (and freed) by read_params */
    ex->params = params;
    ex->external = true;
    mizan_cache_fetch(&mizan_api_services(ex)->cache, c, params, &ex->caller->id, ex->rid, &ex->lookup, looked_up, ex);
}

/* ex's computation could not start: answered, or ended when it has no request (background). */
static void compute_failed(mizan_exchange_t *ex, mizan_code_t code)
{
    if (ex->req == NULL)
        mizan_exchange_finish(ex, code == MIZAN_UNAVAILABLE ? 503 : 500);
    else if (code == MIZAN_UNAVAILABLE)
        mizan_reply_unavailable(ex);
    else
        mizan_reply_error(ex, code, "out of memory", NULL);
}

/* Runs the context's functions for ex; context_done() bundles them. */
static void compute(mizan_exchange_t *ex)
{
    const mizan_context_t *c = ex->ctx;
    ex->data = json_object();
    ex->errors = json_object();
    ex->jobs = calloc(c->nfns, sizeof(*ex->jobs));
    ex->njobs = c->nfns;
    if (ex->data == NULL || ex->errors == NULL || ex->jobs == NULL) {
        compute_failed(ex, MIZAN_INTERNAL_ERROR);
        return;
    }
    for (size_t i = 0; i < c->nfns; i++) {
        const mizan_function_t *fn = c->fns[i];
        if (fn->handler == NULL && fn->upstream == NULL) {
            json_object_set_new(ex->errors, fn->name,
                                json_pack("{s:s, s:s, s:n}", "code", "NOT_IMPLEMENTED", "message",
                                          "this function is declared but has no handler", "details"));
            continue;
        }
        json_t *args = args_for(fn, ex->params);
        json_t *errors = json_array();
        int nerr = args != NULL && errors != NULL ? mizan_schema_validate(fn->schema, args, "params", errors) : -1;
        if (nerr != 0) {
            json_decref(args);
            json_object_set_new(ex->errors, fn->name,
                                nerr < 0 ? json_pack("{s:s, s:s, s:n}", "code", "INTERNAL_ERROR", "message",
                                                     "internal error", "details")
                                         : json_pack("{s:s, s:s, s:o}", "code", "VALIDATION_FAILED", "message",
                                                     "the context's params do not fit this function", "details",
                                                     errors));
            if (nerr < 0)
                json_decref(errors);
            continue;
        }
        json_decref(errors);
        if ((ex->jobs[i] = mizan_job_new(fn, args, ex->caller)) == NULL) {
            compute_failed(ex, MIZAN_INTERNAL_ERROR);
            return;
        }
    }
    ex->done = context_done;
    if (mizan_jobs_submit(ex) < 0) {
        compute_failed(ex, MIZAN_UNAVAILABLE);
        return;
    }
    if (ex->pending == 0)
        context_done(ex);
}
