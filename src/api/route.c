/*
 * route.c - the evhttp entry point: creates the exchange, matches the path
 * against PROTOCOL.md section 1, identifies the caller, and dispatches to
 * the call, context and small built-in endpoints.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/http.h>

#include "route.h"

#include "call.h"
#include "context.h"
#include "jobs.h"
#include "metrics_page.h"
#include "conn.h"
#include "cors.h"
#include "events.h"
#include "exchange.h"
#include "log.h"
#include "reply.h"
#include "text.h"

/* Strips one trailing slash (but not the root's) into out. */
static void normalise(const char *path, char *out, size_t len)
{
    mizan_text_copy(out, len, path != NULL && path[0] != '\0' ? path : "/");
    size_t n = strlen(out);
    if (n > 1 && out[n - 1] == '/')
        out[n - 1] = '\0';
}

/* 405 with the Allow header, unless method is allowed; OPTIONS is the CORS preflight. */
static bool method_ok(mizan_exchange_t *ex, enum evhttp_cmd_type allowed, const char *allow)
{
    if (evhttp_request_get_command(ex->req) == allowed)
        return true;
    if (evhttp_request_get_command(ex->req) == EVHTTP_REQ_OPTIONS) {
        if (mizan_cors_preflight(&ex->loop->cfg->cors, ex->req, allow) == 0)
            mizan_reply_text(ex, 204, "", 0);
        else
            mizan_reply_error(ex, MIZAN_FORBIDDEN, "cross-origin requests from this origin are not allowed", NULL);
        return false;
    }
    mizan_reply_header(ex, "Allow", allow);
    mizan_reply_error(ex, MIZAN_METHOD_NOT_ALLOWED, NULL, NULL);
    return false;
}

/*
 * Verifies the caller's token, if any. A malformed, badly signed, expired
 * or not-yet-valid token is 401 on every API route, even one that needs no
 * token. Returns false after answering.
 */
static bool identify(mizan_exchange_t *ex)
{
    const mizan_config_t *cfg = ex->loop->cfg;
    struct evkeyvalq *in = evhttp_request_get_input_headers(ex->req);
    bool malformed = false;
    size_t len = 0;
    const char *tok = mizan_token_extract(evhttp_find_header(in, "Authorization"), evhttp_find_header(in, "Cookie"),
                                          cfg->token_cookie, &len, &malformed);
    if (malformed) {
        mizan_reply_error(ex, MIZAN_UNAUTHORIZED, "the Authorization header must be \"Bearer <token>\"", NULL);
        return false;
    }
    if (tok == NULL)
        return true;
    mizan_token_claims_t claims;
    mizan_err_t err = {{0}};
    if (mizan_token_verify(&cfg->tokens, tok, len, (long long)time(NULL), &claims, &err) < 0) {
        mizan_reply_error(ex, MIZAN_UNAUTHORIZED, err.msg, NULL);
        return false;
    }
    mizan_caller_t *caller = mizan_caller_new(&claims);
    if (caller == NULL || mizan_caller_keep_token(caller, tok, len) < 0) {
        mizan_caller_unref(caller);
        mizan_reply_error(ex, MIZAN_INTERNAL_ERROR, "out of memory", NULL);
        return false;
    }
    mizan_caller_unref(ex->caller);
    ex->caller = caller;
    return true;
}

static void handle_health(mizan_exchange_t *ex, bool ready)
{
    ex->route = ready ? "readyz" : "healthz";
    if (!method_ok(ex, EVHTTP_REQ_GET, "GET"))
        return;
    const mizan_services_t *svc = mizan_api_services(ex);
    const mizan_api_t *api = svc->api;
    if (ready && atomic_load(api->draining)) {
        mizan_reply_unavailable(ex);
        return;
    }
    if (ready && !mizan_cache_ready(&svc->cache)) {
        mizan_reply_header(ex, "Retry-After", "1");
        mizan_reply_error(ex, MIZAN_UNAVAILABLE, "the shared cache (Redis) is unreachable", NULL);
        return;
    }
    size_t queued, busy;
    mizan_pool_load(api->pool, &queued, &busy);
    json_t *body = ready ? json_pack("{s:s, s:i, s:i, s:i}", "status", "ready", "workers", api->pool->nthreads,
                                     "queued", (int)queued, "busy", (int)busy)
                         : json_pack("{s:s, s:I}", "status", "ok", "uptime_s", (json_int_t)(time(NULL) - api->started));
    mizan_reply_json(ex, body);
}

static void handle_schema(mizan_exchange_t *ex)
{
    const char *text = mizan_api_services(ex)->api->reg->schema_json;
    mizan_reply_text(ex, 200, text, strlen(text));
}

void mizan_route_request(struct evhttp_request *req, void *arg)
{
    mizan_loop_t *loop = arg;
    const mizan_api_t *api = loop->services->api;
    mizan_conns_request_read(loop, req);
    mizan_exchange_t *ex = mizan_exchange_new(loop, req);
    if (ex == NULL) {
        evhttp_send_error(req, 500, "Internal Server Error");
        return;
    }
    ex->caller = mizan_caller_anonymous();
    ex->release = mizan_jobs_release;
    /* While draining, requests on connections accepted before it are still
     * served (each answer closes its connection): a proxy cannot retry a 503
     * for a POST. Only once the drain is over is what arrives refused. */
    if (atomic_load(api->closing)) {
        ex->route = "draining";
        mizan_reply_unavailable(ex);
        return;
    }
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    char path[1024];
    const char *raw = uri != NULL ? evhttp_uri_get_path(uri) : NULL;
    /* evhttp parses a CONNECT target as an authority: route its text as a path. */
    if (evhttp_request_get_command(req) == EVHTTP_REQ_CONNECT)
        raw = evhttp_request_get_uri(req);
    if (raw == NULL || strlen(raw) >= sizeof(path)) {
        mizan_reply_error(ex, MIZAN_NOT_FOUND, "no such route", NULL);
        return;
    }
    normalise(raw, path, sizeof(path));

    if (strcmp(path, "/healthz") == 0 || strcmp(path, "/readyz") == 0) {
        handle_health(ex, path[1] == 'r');
        return;
    }
    if (strcmp(path, "/metrics") == 0) {
        ex->route = "metrics";
        if (!method_ok(ex, EVHTTP_REQ_GET, "GET"))
            return;
        char *text = mizan_metrics_render(api);
        if (text == NULL) {
            mizan_reply_error(ex, MIZAN_INTERNAL_ERROR, "cannot render metrics", NULL);
            return;
        }
        mizan_reply_header(ex, "Content-Type", "text/plain; version=0.0.4; charset=utf-8");
        mizan_reply_text(ex, 200, text, strlen(text));
        free(text);
        return;
    }
    const char *prefix = api->cfg->api_prefix;
    size_t plen = strlen(prefix);
    if (strncmp(path, prefix, plen) != 0 || (path[plen] != '/' && path[plen] != '\0')) {
        mizan_reply_error(ex, MIZAN_NOT_FOUND, "no such route", NULL);
        return;
    }
    const char *rest = path + plen;
    if (strcmp(rest, "/call") == 0) {
        ex->route = "call";
        if (method_ok(ex, EVHTTP_REQ_POST, "POST") && identify(ex))
            mizan_call_handle(ex);
        return;
    }
    if (strncmp(rest, "/ctx/", 5) == 0 && rest[5] != '\0' && strchr(rest + 5, '/') == NULL) {
        ex->route = "ctx";
        if (method_ok(ex, EVHTTP_REQ_GET, "GET") && identify(ex))
            mizan_context_handle(ex, rest + 5);
        return;
    }
    if (strcmp(rest, "/schema") == 0) {
        ex->route = "schema";
        if (method_ok(ex, EVHTTP_REQ_GET, "GET") && identify(ex))
            handle_schema(ex);
        return;
    }
    if (strcmp(rest, "/events") == 0) {
        ex->route = "events";
        if (method_ok(ex, EVHTTP_REQ_GET, "GET") && identify(ex))
            mizan_events_handle(ex);
        return;
    }
    mizan_reply_error(ex, MIZAN_NOT_FOUND, "no such route", NULL);
}

void mizan_route_abort(mizan_loop_t *loop)
{
    mizan_exchange_t *ex = loop->live;
    while (ex != NULL) {
        mizan_exchange_t *next = ex->next;
        /* One waiting on Redis or on another loop's computation is answered
         * by that completion, which is bounded by timeouts. */
        if (!ex->external && !mizan_call_abort(ex))
            mizan_reply_unavailable(ex);
        ex = next;
    }
}

void mizan_route_drain(mizan_loop_t *loop)
{
    mizan_events_close_all(loop);
}
