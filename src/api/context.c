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
 *
 * Plans: reading params (decode, coerce, validate) and deriving a bundle's
 * cache keys (three HMACs) depend only on the context, the caller's scope
 * and the query text, so each loop remembers, for the query texts it read
 * last, the params they gave and their keys: a repeated request (the
 * common case for a cached context) goes straight to the lookup. The table
 * is direct-mapped (PLAN_SLOTS entries, a newcomer replaces whatever held
 * its slot), so its size is bounded whatever callers send, and it belongs
 * to the loop's thread (no lock). Only valid params are remembered; a miss
 * in the table reads the params as before.
 */
#include <errno.h>
#include <limits.h>
#include <stdint.h>
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

/** Remembered query texts per loop (a power of two). */
#define PLAN_SLOTS 16384
/** Longest scope + query text remembered; longer requests are read every time. */
#define PLAN_MAX_TEXT 1024

/* One remembered request: (context, scope "\n" query) -> params and keys. */
typedef struct plan {
    const mizan_context_t *ctx;
    uint64_t hash;
    json_t *params;            /* valid params; shared read-only with the exchanges using them */
    mizan_cache_keys_t *keys;
    size_t len;
    char text[];               /* scope "\n" query, NUL-terminated */
} plan_t;

struct mizan_plans {
    plan_t *slot[PLAN_SLOTS];
};

static void plan_free(plan_t *p)
{
    if (p != NULL) {
        json_decref(p->params);
        mizan_cache_keys_free(p->keys);
        free(p);
    }
}

void mizan_context_loop_deinit(mizan_services_t *svc)
{
    if (svc->plans == NULL)
        return;
    for (size_t i = 0; i < PLAN_SLOTS; i++)
        plan_free(svc->plans->slot[i]);
    free(svc->plans);
    svc->plans = NULL;
}

/* A multiply-xor hash over the context's address and the text, eight
 * bytes at a time: a slot, not a secret (a collision only costs a re-read). */
static uint64_t plan_hash(const mizan_context_t *c, const char *text, size_t len)
{
    const uint64_t m = 0x9E3779B97F4A7C15ULL;
    uint64_t h = ((uint64_t)(uintptr_t)c ^ len) * m;
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t w;
        memcpy(&w, text + i, 8);
        h = (h ^ w) * m;
        h ^= h >> 29;
    }
    uint64_t w = 0;
    memcpy(&w, text + i, len - i);
    h = (h ^ w) * m;
    return h ^ (h >> 32);
}

/*
 * Writes scope "\n" query into out (PLAN_MAX_TEXT bytes); returns its
 * length, or 0 when it is too long to remember.
 */
static size_t plan_text(const char *scope, const char *query, char *out)
{
    size_t sl = strlen(scope), ql = strlen(query);
    if (sl + 1 + ql >= PLAN_MAX_TEXT)
        return 0;
    memcpy(out, scope, sl);
    out[sl] = '\n';
    memcpy(out + sl + 1, query, ql + 1);
    return sl + 1 + ql;
}

/* Derives the keys of ex's params under scope and remembers them with text
 * (len bytes, hash h) in slot (NULL: not remembered). Returns the keys,
 * owned by the slot when remembered and otherwise by *own, or NULL
 * (uncached). */
static mizan_cache_keys_t *plan_keys(mizan_exchange_t *ex, const mizan_context_t *c, const char *scope,
                                     const char *text, size_t len, uint64_t h, plan_t **slot, mizan_cache_keys_t **own)
{
    mizan_err_t err = {{0}};
    mizan_cache_keys_t *keys = mizan_cache_keys_new(&mizan_api_services(ex)->cache, c, ex->params, scope, &err);
    if (keys == NULL) {
        /* Keys that cannot be derived (e.g. a sub with control bytes): served uncached. */
        mizan_log(MIZAN_LOG_WARN, "cache key for context %s not derivable: %s", c->name, err.msg);
        return NULL;
    }
    plan_t *p = slot != NULL ? malloc(sizeof(*p) + len + 1) : NULL;
    if (p == NULL) {
        *own = keys;
        return keys;
    }
    p->ctx = c;
    p->hash = h;
    p->params = json_incref(ex->params);
    p->keys = keys;
    p->len = len;
    memcpy(p->text, text, len + 1);
    plan_free(*slot);
    *slot = p;
    return keys;
}

/* Decodes, coerces and validates the params of query; answers and returns NULL on failure. */
static json_t *read_params(mizan_exchange_t *ex, const mizan_context_t *c, const char *query)
{
    mizan_err_t err = {{0}};
    json_t *raw = mizan_request_parse_query(query, &err);
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
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(ex->req);
    const char *query = uri != NULL ? evhttp_uri_get_query(uri) : NULL;
    mizan_services_t *svc = mizan_api_services(ex);
    if (c->ttl == 0) {
        /* Never cached: nothing to remember. */
        json_t *params = read_params(ex, c, query);
        if (params == NULL)
            return; /* answered (and ended) by read_params */
        ex->params = params;
        ex->external = true;
        mizan_cache_fetch(&svc->cache, c, NULL, ex->rid, &ex->lookup, looked_up, ex);
        return;
    }
    /* The scope: a caller whose keys cannot be derived is served uncached,
     * after its params were read (a 422 comes first). */
    char scope[PLAN_MAX_TEXT], text[PLAN_MAX_TEXT];
    mizan_err_t err = {{0}};
    bool scoped = mizan_cache_scope(&svc->cache, c, &ex->caller->id, scope, sizeof(scope), &err) == 0;
    size_t len = scoped ? plan_text(scope, query != NULL ? query : "", text) : 0;
    uint64_t h = len > 0 ? plan_hash(c, text, len) : 0;
    if (len > 0 && svc->plans == NULL)
        svc->plans = calloc(1, sizeof(*svc->plans));
    plan_t **slot = len > 0 && svc->plans != NULL ? &svc->plans->slot[h & (PLAN_SLOTS - 1)] : NULL;
    plan_t *p = slot != NULL ? *slot : NULL;
    if (p != NULL && p->ctx == c && p->hash == h && p->len == len && memcmp(p->text, text, len) == 0) {
        ex->params = json_incref(p->params);
        ex->external = true;
        mizan_cache_fetch(&svc->cache, c, p->keys, ex->rid, &ex->lookup, looked_up, ex);
        return;
    }
    json_t *params = read_params(ex, c, query);
    if (params == NULL)
        return; /* answered (and ended) by read_params */
    ex->params = params;
    mizan_cache_keys_t *own = NULL, *keys = NULL;
    if (scoped)
        keys = plan_keys(ex, c, scope, text, len, h, slot, &own);
    else
        mizan_log(MIZAN_LOG_WARN, "cache key for context %s not derivable: %s", c->name, err.msg);
    ex->external = true;
    mizan_cache_fetch(&svc->cache, c, keys, ex->rid, &ex->lookup, looked_up, ex);
    mizan_cache_keys_free(own);
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
