/*
 * upstream_client.c - the run-time half of upstream functions (see
 * upstream.h): an asynchronous HTTP/1.1 client on every I/O loop, built on
 * libevent's evhttp client because the loops already run libevent (no
 * second event library, no extra thread, and the evhttp client speaks
 * keep-alive HTTP/1.1 with chunked answers out of the box).
 *
 * DESIGN (one call): mizan_upstream_start() turns a job into a call: it
 * builds the URI, body and headers once, asks the upstream's circuit
 * breaker, then takes an idle connection of the loop's pool for that
 * upstream (opening one while fewer than pool_size exist) or waits in a
 * bounded queue; a full queue is UNAVAILABLE at once. Each connection
 * carries one request at a time and stays open between requests
 * (keep-alive), so sequential calls reuse it. evhttp's own retries are off;
 * a query is retried here, after a short backoff, when the connection
 * failed (refused, reset, closed before an answer, or not established within
 * connect_timeout_ms), never after an answer or a timeout, and a mutation is
 * never retried. The call's deadline is the function's timeout_ms, measured
 * from the start: when it passes, the request is cancelled (its connection
 * closed) and the job comes back TIMEOUT, so a late answer is never read.
 *
 * Every evhttp callback only records what happened and activates the call's
 * timer event; the timer callback does the rest on the next turn of the
 * loop. So nothing re-enters evhttp from inside its own callbacks, and the
 * job is never handed back from within mizan_upstream_start().
 *
 * Circuit breaker (one per upstream per instance, atomics shared by the
 * loops): closed until breaker_failures consecutive calls fail (connection
 * failure, timeout, 5xx, 429 or an unreadable answer); then open for
 * breaker_cooldown_ms, during which calls are UNAVAILABLE without touching
 * the network; then half-open: exactly one call is let through as a probe;
 * its success closes the breaker, its failure opens it again.
 */
#include "upstream.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/http_struct.h>
#include <event2/keyvalq_struct.h>

#include "gateway.h"
#include "log.h"
#include "metrics.h"
#include "token.h"

typedef struct call call_t;
typedef struct pool pool_t;

/** One pooled connection. */
typedef struct conn {
    pool_t *pool;                    /**< owner */
    struct evhttp_connection *evcon; /**< NULL until first used; reconnects by itself after a close */
    call_t *call;                    /**< the call using it; NULL when idle */
} conn_t;

/** A loop's connections to one upstream. */
struct pool {
    mizan_upstream_t *up;    /**< the service */
    conn_t *conns;           /**< pool_size slots */
    call_t *wait_head;       /**< calls waiting for a connection, oldest first */
    call_t *wait_tail;
    int nwait;               /**< length of the wait queue */
};

/** A loop's client state (loop->upstream). Loop thread only. */
typedef struct mizan_upstream_loop {
    mizan_loop_t *loop;
    pool_t *pools;   /**< one per upstream, by mizan_upstream_t.index */
    size_t npools;
    call_t *calls;   /**< every unfinished call (for shutdown) */
    bool closing;    /**< tearing down: do not hand connections to waiters */
} upstream_loop_t;

typedef enum {
    C_NEW = 0, /**< being set up */
    C_WAITING, /**< in its pool's wait queue */
    C_ACTIVE,  /**< a request in flight on conn */
    C_BACKOFF, /**< waiting before a retry */
} call_state_t;

/** What an attempt ended with (recorded by the evhttp callbacks). */
typedef enum {
    OUT_NONE = 0, /**< nothing yet */
    OUT_RESPONSE, /**< an HTTP answer: status, body */
    OUT_CONNECT,  /**< the connection failed before an answer */
    OUT_TIMEOUT,  /**< evhttp's own inactivity timeout */
    OUT_INVALID,  /**< the answer could not be read (malformed, too large) */
} outcome_t;

/** One job's exchange with its upstream; loop thread only. */
struct call {
    mizan_job_t *job;                /**< handed back exactly once, by finish() */
    const mizan_upstream_fn_t *spec; /**< what to send */
    upstream_loop_t *ul;
    pool_t *pool;
    conn_t *conn;                    /**< while C_ACTIVE */
    struct evhttp_request *req;      /**< the attempt in flight (owned by evhttp); NULL otherwise */
    struct event *timer;             /**< deadline, connect check, backoff, and deferred settling */
    call_state_t state;
    outcome_t outcome;               /**< set by callbacks, consumed by settle() */
    int status;                      /**< HTTP status of OUT_RESPONSE */
    char *resp;                      /**< answer body (NUL-terminated copy) */
    size_t resp_len;
    int attempts;                    /**< requests sent so far */
    bool cancelling;                 /**< inside evhttp_cancel_request(): ignore its callback */
    bool connect_check;              /**< the timer also checks that the connection got established */
    bool probe;                      /**< the breaker's half-open probe */
    bool judged;                     /**< the breaker has been told how this call went */
    const char *doubt;               /**< why the answer's connection must not be reused (static), or NULL */
    bool violation;                  /**< doubt is a framing violation (logged, counted), not a plain close */
    long long t0, deadline;          /**< CLOCK_MONOTONIC ms */
    char *uri;                       /**< request target */
    char *payload;                   /**< JSON body or NULL */
    size_t payload_len;
    char *id_sub, *id_perms;         /**< identity header values (anonymous: NULL) */
    bool id_staff, id_superuser;
    char *bearer;                    /**< "Bearer <token>" when forwarded */
    char rid[132];                   /**< the gateway request id, for logs and X-Request-Id */
    call_t *prev, *next;             /**< ul->calls */
    call_t *wnext;                   /**< pool wait queue */
};

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void arm(call_t *c, long long at)
{
    long long delta = at - now_ms();
    if (delta < 0)
        delta = 0;
    struct timeval tv = {(time_t)(delta / 1000), (suseconds_t)((delta % 1000) * 1000)};
    evtimer_del(c->timer);
    evtimer_add(c->timer, &tv);
}

/* Runs the call's timer callback on the next turn of the loop. */
static void kick(call_t *c)
{
    event_active(c->timer, EV_TIMEOUT, 0);
}

/* ---- circuit breaker ---------------------------------------------------- */

typedef enum { B_ALLOW, B_PROBE, B_REJECT } verdict_t;

static verdict_t breaker_allow(mizan_upstream_t *up, long long now)
{
    if (up->breaker_failures == 0)
        return B_ALLOW;
    long long until = atomic_load_explicit(&up->open_until, memory_order_relaxed);
    if (until == 0)
        return B_ALLOW;
    if (now < until)
        return B_REJECT;
    bool expected = false;
    if (atomic_compare_exchange_strong(&up->probing, &expected, true))
        return B_PROBE;
    return B_REJECT;
}

/* Tells the breaker how call c went (once per call). */
static void breaker_judge(call_t *c, bool ok)
{
    mizan_upstream_t *up = c->pool->up;
    if (c->judged || up->breaker_failures == 0)
        return;
    c->judged = true;
    long long now = now_ms();
    if (ok) {
        atomic_store_explicit(&up->failures, 0, memory_order_relaxed);
        long long was = atomic_exchange(&up->open_until, 0);
        if (c->probe)
            atomic_store(&up->probing, false);
        if (was != 0)
            mizan_log(MIZAN_LOG_INFO, "upstream %s: circuit closed (a call succeeded)", up->name);
        return;
    }
    if (c->probe) {
        atomic_store(&up->open_until, now + up->breaker_cooldown_ms);
        atomic_store(&up->probing, false);
        atomic_fetch_add_explicit(&up->n_opened, 1, memory_order_relaxed);
        mizan_log(MIZAN_LOG_WARN, "upstream %s: half-open probe failed; circuit open for %d ms", up->name,
                  up->breaker_cooldown_ms);
        return;
    }
    int n = atomic_fetch_add_explicit(&up->failures, 1, memory_order_relaxed) + 1;
    long long closed = 0;
    if (n >= up->breaker_failures &&
        atomic_compare_exchange_strong(&up->open_until, &closed, now + up->breaker_cooldown_ms)) {
        atomic_fetch_add_explicit(&up->n_opened, 1, memory_order_relaxed);
        mizan_log(MIZAN_LOG_WARN, "upstream %s: %d consecutive failures; circuit open for %d ms", up->name, n,
                  up->breaker_cooldown_ms);
    }
}

/* ---- finishing ---------------------------------------------------------- */

static void call_free(call_t *c)
{
    if (c->timer != NULL)
        event_free(c->timer);
    free(c->resp);
    free(c->uri);
    free(c->payload);
    free(c->id_sub);
    free(c->id_perms);
    free(c->bearer);
    free(c);
}

/* Hands the job back (its result or error already set) and frees the call. */
static void finish(call_t *c)
{
    mizan_job_t *job = c->job;
    if (c->probe && !c->judged)
        atomic_store(&c->pool->up->probing, false); /* no verdict: let another call probe */
    /* "Ran" once a request was sent (or tried) to the service: a mutation
     * refused before that (circuit open, wait queue full) changed nothing. */
    job->ran = c->attempts > 0;
    job->run_us = (long)((now_ms() - c->t0) * 1000);
    if (job->code == MIZAN_OK && job->result == NULL)
        job->result = json_null();
    mizan_job_check_output(job);
    mizan_metrics_function(job->fn, job->run_us, job->code != MIZAN_OK);
    upstream_loop_t *ul = c->ul;
    if (c->prev != NULL)
        c->prev->next = c->next;
    else if (ul != NULL && ul->calls == c)
        ul->calls = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    call_free(c);
    mizan_loop_complete(job);
}

/* Sets the job's error (details stolen) and finishes. */
static void fail(call_t *c, mizan_code_t code, const char *message, json_t *details)
{
    mizan_req_error(c->job, code, message, details);
    finish(c);
}

/* Logs a failed call for operators (upstream name, status, attempts); never sent to clients. */
static void log_call(mizan_log_level_t level, const call_t *c, const char *what, int status)
{
    if (!mizan_log_enabled(level))
        return;
    json_t *f = json_pack("{s:s, s:s, s:s, s:i, s:i, s:s}", "upstream", c->pool != NULL ? c->pool->up->name : "?",
                          "function", c->job->fn->name, "reason", what, "status", status, "attempts", c->attempts,
                          "request_id", c->rid);
    mizan_log_fields(level, "upstream call failed", f);
    json_decref(f);
}

/* ---- connections ---------------------------------------------------------- */

static bool connected(const conn_t *cn)
{
    if (cn == NULL || cn->evcon == NULL)
        return false;
    struct bufferevent *bev = evhttp_connection_get_bufferevent(cn->evcon);
    evutil_socket_t fd = bev != NULL ? bufferevent_getfd(bev) : -1;
    if (fd < 0)
        return false;
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    return getpeername(fd, (struct sockaddr *)&ss, &len) == 0;
}

/* An idle slot: one with a connection object first (reuse), else an empty one. */
static conn_t *idle_conn(pool_t *p)
{
    conn_t *empty = NULL;
    for (int i = 0; i < p->up->pool_size; i++) {
        conn_t *cn = &p->conns[i];
        if (cn->call != NULL)
            continue;
        if (cn->evcon != NULL)
            return cn;
        if (empty == NULL)
            empty = cn;
    }
    return empty;
}

/* Cancels the attempt in flight, if any (closes its connection). */
static void abort_attempt(call_t *c)
{
    if (c->req == NULL)
        return;
    struct evhttp_request *req = c->req;
    c->req = NULL;
    c->cancelling = true;
    evhttp_cancel_request(req);
    c->cancelling = false;
}

static void dispatch(call_t *c, conn_t *cn);

/* Bytes waiting on a pooled connection that no request asked for. */
static bool stray_bytes(const conn_t *cn)
{
    struct bufferevent *bev = cn->evcon != NULL ? evhttp_connection_get_bufferevent(cn->evcon) : NULL;
    return bev != NULL && evbuffer_get_length(bufferevent_get_input(bev)) > 0;
}

/*
 * Closes a connection for good (its evcon is freed, the slot opens a fresh
 * one next time). A violation of the framing is logged and counted; a
 * plain close the service asked for is not. Never called from inside an
 * evhttp callback: evhttp may still use the connection there.
 */
static void drop_conn(conn_t *cn, const char *why, bool violation)
{
    if (cn == NULL || cn->evcon == NULL)
        return;
    mizan_upstream_t *up = cn->pool->up;
    evhttp_connection_free(cn->evcon);
    cn->evcon = NULL;
    if (!violation)
        return;
    atomic_fetch_add_explicit(&up->n_dropped, 1, memory_order_relaxed);
    mizan_log(MIZAN_LOG_WARN, "upstream %s: connection closed, not reused: %s", up->name, why);
}

/* Gives freed connections to waiting calls. */
static void pool_kick(pool_t *p, upstream_loop_t *ul)
{
    conn_t *cn;
    while (!ul->closing && p->wait_head != NULL && (cn = idle_conn(p)) != NULL) {
        call_t *w = p->wait_head;
        p->wait_head = w->wnext;
        if (p->wait_head == NULL)
            p->wait_tail = NULL;
        w->wnext = NULL;
        p->nwait--;
        dispatch(w, cn);
    }
}

static void release_conn(call_t *c)
{
    conn_t *cn = c->conn;
    if (cn == NULL)
        return;
    cn->call = NULL;
    c->conn = NULL;
    pool_kick(cn->pool, c->ul);
}

static void unwait(call_t *c)
{
    pool_t *p = c->pool;
    call_t **pp = &p->wait_head, *prev = NULL;
    while (*pp != NULL && *pp != c) {
        prev = *pp;
        pp = &(*pp)->wnext;
    }
    if (*pp == NULL)
        return;
    *pp = c->wnext;
    if (p->wait_tail == c)
        p->wait_tail = prev;
    c->wnext = NULL;
    p->nwait--;
}

/* ---- evhttp callbacks: record, then settle on the next turn ------------- */

static void on_error(enum evhttp_request_error e, void *arg)
{
    call_t *c = arg;
    if (c->cancelling || e == EVREQ_HTTP_REQUEST_CANCEL)
        return;
    c->req = NULL; /* evhttp frees it */
    if (c->outcome == OUT_NONE)
        c->outcome = e == EVREQ_HTTP_EOF       ? OUT_CONNECT
                     : e == EVREQ_HTTP_TIMEOUT ? OUT_TIMEOUT
                                               : OUT_INVALID;
    kick(c);
}

/* How many times the header list holds name (case-insensitively). */
static int header_count(const struct evkeyvalq *h, const char *name)
{
    int n = 0;
    for (const struct evkeyval *kv = h != NULL ? h->tqh_first : NULL; kv != NULL; kv = kv->next.tqe_next)
        if (strcasecmp(kv->key, name) == 0)
            n++;
    return n;
}

/* True when the comma-separated header value v lists token t (case-insensitively). */
static bool lists_token(const char *v, const char *t)
{
    size_t n = strlen(t);
    while (v != NULL && *v != '\0') {
        while (*v == ' ' || *v == '\t' || *v == ',')
            v++;
        size_t k = strcspn(v, ",");
        size_t e = k;
        while (e > 0 && (v[e - 1] == ' ' || v[e - 1] == '\t'))
            e--;
        if (e == n && strncasecmp(v, t, n) == 0)
            return true;
        v += k;
    }
    return false;
}

/*
 * Why the connection of the answer just read (req, status code) must not be
 * reused, or NULL when it may be. A violation (*violation set) leaves the
 * framing in doubt, so that whatever comes next on the connection could be
 * taken for the next caller's answer: bytes already received past the
 * answer's end (past Content-Length, after a chunked body's last chunk, a
 * body on a 1xx/204/304), a body announced where none may be, duplicate or
 * conflicting framing headers. Connection: close and answers other than
 * HTTP/1.1 just end the connection. Called inside evhttp's completion
 * callback, where the connection (evcon: evhttp has already detached it
 * from req) is idle and its input buffer holds exactly the unread bytes.
 */
static const char *reuse_refused(struct evhttp_connection *evcon, struct evhttp_request *req, int code,
                                 bool *violation)
{
    *violation = true;
    struct bufferevent *bev = evcon != NULL ? evhttp_connection_get_bufferevent(evcon) : NULL;
    if (bev == NULL || evbuffer_get_length(bufferevent_get_input(bev)) > 0)
        return "bytes arrived past the end of an answer";
    const struct evkeyvalq *h = evhttp_request_get_input_headers(req);
    int ncl = header_count(h, "Content-Length"), nte = header_count(h, "Transfer-Encoding");
    if (ncl > 1 || nte > 1 || (ncl > 0 && nte > 0))
        return "an answer with duplicate or conflicting Content-Length/Transfer-Encoding";
    bool no_body = (code >= 100 && code < 200) || code == 204 || code == 304;
    const char *cl = evhttp_find_header(h, "Content-Length");
    if (no_body && (nte > 0 || (cl != NULL && strcmp(cl, "0") != 0)))
        return "a body announced on a 1xx, 204 or 304 answer";
    *violation = false;
    if (lists_token(evhttp_find_header(h, "Connection"), "close"))
        return "the service asked to close it";
    if (req->major != 1 || req->minor != 1)
        return "an answer other than HTTP/1.1";
    return NULL;
}

static void on_done(struct evhttp_request *req, void *arg)
{
    call_t *c = arg;
    if (c->cancelling)
        return;
    c->req = NULL; /* evhttp frees it after this callback */
    if (c->outcome != OUT_NONE) {
        kick(c);
        return;
    }
    int code = req != NULL ? evhttp_request_get_response_code(req) : 0;
    if (code == 0) {
        /* No answer: the connection could not be made (or was lost). */
        c->outcome = OUT_CONNECT;
        kick(c);
        return;
    }
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = in != NULL ? evbuffer_get_length(in) : 0;
    free(c->resp);
    c->resp = malloc(len + 1);
    if (c->resp == NULL || (len > 0 && evbuffer_copyout(in, c->resp, len) != (ev_ssize_t)len)) {
        c->outcome = OUT_INVALID;
        kick(c);
        return;
    }
    c->resp[len] = '\0';
    c->resp_len = len;
    c->status = code;
    c->doubt = reuse_refused(c->conn != NULL ? c->conn->evcon : NULL, req, code, &c->violation);
    c->outcome = OUT_RESPONSE;
    kick(c);
}

/* ---- sending ---------------------------------------------------------------- */

static void add_header(struct evkeyvalq *h, const char *name, const char *value)
{
    evhttp_remove_header(h, name);
    evhttp_add_header(h, name, value);
}

/* Sends c's request on cn (never settles synchronously). */
static void dispatch(call_t *c, conn_t *cn)
{
    const mizan_upstream_fn_t *spec = c->spec;
    mizan_upstream_t *up = c->pool->up;
    mizan_loop_t *loop = c->ul->loop;
    c->state = C_ACTIVE;
    c->conn = cn;
    cn->call = c;
    c->attempts++;
    if (cn->evcon != NULL && stray_bytes(cn))
        drop_conn(cn, "bytes arrived on it while it was idle", true);
    if (cn->evcon == NULL) {
        cn->evcon = evhttp_connection_base_new(loop->base, NULL, up->address, (unsigned short)up->port);
        if (cn->evcon == NULL) {
            c->outcome = OUT_CONNECT;
            kick(c);
            return;
        }
        evhttp_connection_set_retries(cn->evcon, 0);
        struct timeval idle = {up->idle_timeout_ms / 1000, (up->idle_timeout_ms % 1000) * 1000};
        evhttp_connection_set_timeout_tv(cn->evcon, &idle);
        evhttp_connection_set_max_body_size(cn->evcon, (ev_ssize_t)up->max_response_bytes);
        evhttp_connection_set_max_headers_size(cn->evcon, 65536);
    }
    struct evhttp_request *req = evhttp_request_new(on_done, c);
    if (req == NULL) {
        c->outcome = OUT_CONNECT;
        kick(c);
        return;
    }
    evhttp_request_set_error_cb(req, on_error);
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Host", up->host_header);
    evhttp_add_header(h, "Accept", "application/json");
    for (size_t i = 0; i < up->nheaders; i++)
        add_header(h, up->headers[i].name, up->headers[i].value);
    for (size_t i = 0; i < spec->nheaders; i++)
        add_header(h, spec->headers[i].name, spec->headers[i].value);
    if (c->rid[0] != '\0')
        evhttp_add_header(h, "X-Request-Id", c->rid);
    if (c->id_sub != NULL) {
        if (up->sub_header != NULL)
            evhttp_add_header(h, up->sub_header, c->id_sub);
        if (up->staff_header != NULL)
            evhttp_add_header(h, up->staff_header, c->id_staff ? "true" : "false");
        if (up->superuser_header != NULL)
            evhttp_add_header(h, up->superuser_header, c->id_superuser ? "true" : "false");
        if (up->perms_header != NULL)
            evhttp_add_header(h, up->perms_header, c->id_perms != NULL ? c->id_perms : "");
    }
    if (c->bearer != NULL)
        evhttp_add_header(h, "Authorization", c->bearer);
    if (c->payload != NULL) {
        char len[32];
        snprintf(len, sizeof(len), "%zu", c->payload_len);
        evhttp_add_header(h, "Content-Type", "application/json");
        evhttp_add_header(h, "Content-Length", len);
        evbuffer_add(evhttp_request_get_output_buffer(req), c->payload, c->payload_len);
    } else if (spec->method == EVHTTP_REQ_POST || spec->method == EVHTTP_REQ_PUT ||
               spec->method == EVHTTP_REQ_PATCH) {
        evhttp_add_header(h, "Content-Length", "0");
    }
    bool fresh = !connected(cn);
    if (fresh)
        atomic_fetch_add_explicit(&up->n_connections, 1, memory_order_relaxed);
    long long now = now_ms();
    c->connect_check = fresh && now + up->connect_timeout_ms < c->deadline;
    arm(c, c->connect_check ? now + up->connect_timeout_ms : c->deadline);
    c->req = req;
    if (evhttp_make_request(cn->evcon, req, (enum evhttp_cmd_type)spec->method, c->uri) != 0) {
        /* evhttp freed the request. */
        c->req = NULL;
        if (c->outcome == OUT_NONE)
            c->outcome = OUT_CONNECT;
        kick(c);
    }
}

/* Sends on an idle connection, or queues, or refuses. */
static void acquire(call_t *c)
{
    pool_t *p = c->pool;
    conn_t *cn = idle_conn(p);
    if (cn != NULL && p->wait_head == NULL) {
        dispatch(c, cn);
        return;
    }
    if (p->nwait >= p->up->queue_size) {
        atomic_fetch_add_explicit(&p->up->n_rejected, 1, memory_order_relaxed);
        /* Overload: one line per refused call would flood the log at warn. */
        log_call(MIZAN_LOG_DEBUG, c, "every pooled connection is busy and the wait queue is full", 0);
        fail(c, MIZAN_UNAVAILABLE, "the upstream service is busy; retry shortly", NULL);
        return;
    }
    c->state = C_WAITING;
    c->wnext = NULL;
    if (p->wait_tail != NULL)
        p->wait_tail->wnext = c;
    else
        p->wait_head = c;
    p->wait_tail = c;
    p->nwait++;
    arm(c, c->deadline);
    if (cn != NULL)
        pool_kick(p, c->ul);
}

/* ---- answers ------------------------------------------------------------------ */

/*
 * A violation list found in the upstream's error body (doc borrowed): the
 * body itself, or its "detail", "details", "errors" or "error.details"
 * member, when every entry has loc (array), msg and type (strings).
 * Returns it normalised to {loc, msg, type} with loc under "args" (new), or
 * NULL when there is none.
 */
static json_t *violations(const json_t *doc)
{
    const json_t *cands[5] = {doc, json_object_get(doc, "detail"), json_object_get(doc, "details"),
                              json_object_get(doc, "errors"),
                              json_object_get(json_object_get(doc, "error"), "details")};
    for (size_t k = 0; k < sizeof(cands) / sizeof(cands[0]); k++) {
        const json_t *list = cands[k];
        if (!json_is_array(list) || json_array_size(list) == 0)
            continue;
        json_t *out = json_array();
        size_t i;
        json_t *item;
        json_array_foreach(list, i, item)
        {
            json_t *loc = json_object_get(item, "loc"), *msg = json_object_get(item, "msg");
            json_t *type = json_object_get(item, "type");
            if (out == NULL || !json_is_array(loc) || !json_is_string(msg) || !json_is_string(type)) {
                json_decref(out);
                out = NULL;
                break;
            }
            json_t *nloc = json_array();
            json_array_append_new(nloc, json_string("args"));
            size_t j;
            json_t *part;
            json_array_foreach(loc, j, part)
            {
                /* The upstream's own framing (where it read the argument) means nothing to our client. */
                if (j == 0 && json_is_string(part) &&
                    (strcmp(json_string_value(part), "body") == 0 || strcmp(json_string_value(part), "query") == 0 ||
                     strcmp(json_string_value(part), "path") == 0 || strcmp(json_string_value(part), "args") == 0))
                    continue;
                if (json_is_string(part) || json_is_integer(part))
                    json_array_append(nloc, part);
            }
            json_array_append_new(out, json_pack("{s:o, s:O, s:O}", "loc", nloc, "msg", msg, "type", type));
        }
        if (out != NULL)
            return out;
    }
    return NULL;
}

/* Maps an HTTP answer onto the job (result, or protocol error) and finishes. */
static void answer(call_t *c)
{
    mizan_upstream_t *up = c->pool->up;
    int st = c->status;
    json_error_t jerr;
    json_t *doc = c->resp_len > 0 ? json_loadb(c->resp, c->resp_len, JSON_DECODE_ANY, &jerr) : NULL;
    if (st >= 200 && st <= 299) {
        breaker_judge(c, true);
        json_t *whole = c->resp_len == 0 ? json_null() : doc;
        if (whole == NULL) {
            atomic_fetch_add_explicit(&up->n_invalid, 1, memory_order_relaxed);
            log_call(MIZAN_LOG_WARN, c, "a success answer whose body is not JSON", st);
            fail(c, MIZAN_INTERNAL_ERROR, "the upstream answer is not JSON", NULL);
            return;
        }
        json_t *v = mizan_json_pointer_get(&c->spec->result, whole);
        if (v == NULL) {
            atomic_fetch_add_explicit(&up->n_invalid, 1, memory_order_relaxed);
            log_call(MIZAN_LOG_WARN, c, "the result pointer matched nothing in the answer", st);
            json_decref(whole);
            fail(c, MIZAN_INTERNAL_ERROR, "the upstream answer lacks the configured result", NULL);
            return;
        }
        atomic_fetch_add_explicit(&up->n_ok, 1, memory_order_relaxed);
        mizan_req_result(c->job, json_incref(v));
        json_decref(whole);
        finish(c);
        return;
    }
    if (st == 408 || st == 429 || st >= 500) {
        breaker_judge(c, false);
        atomic_fetch_add_explicit(st == 408 ? &up->n_timeout : &up->n_server, 1, memory_order_relaxed);
        log_call(MIZAN_LOG_WARN, c, st == 408 ? "the upstream timed out" : "the upstream is failing or overloaded", st);
        json_decref(doc);
        if (st == 408)
            fail(c, MIZAN_TIMEOUT, "the upstream service did not answer in time", NULL);
        else
            fail(c, MIZAN_UNAVAILABLE, "the upstream service is unavailable", NULL);
        return;
    }
    if (st < 400) {
        /* 1xx leftovers and redirects: the config points at the wrong place. */
        breaker_judge(c, false);
        atomic_fetch_add_explicit(&up->n_invalid, 1, memory_order_relaxed);
        log_call(MIZAN_LOG_WARN, c, "an unexpected status (redirects are not followed)", st);
        json_decref(doc);
        fail(c, MIZAN_INTERNAL_ERROR, "the upstream answered with an unexpected status", NULL);
        return;
    }
    /* 4xx: the service works; the request or the caller was refused. */
    breaker_judge(c, true);
    atomic_fetch_add_explicit(&up->n_client, 1, memory_order_relaxed);
    switch (st) {
    case 401:
        json_decref(doc);
        fail(c, MIZAN_UNAUTHORIZED, "the upstream service requires authentication", NULL);
        return;
    case 403:
        json_decref(doc);
        fail(c, MIZAN_FORBIDDEN, "the upstream service refused this caller", NULL);
        return;
    case 404:
        json_decref(doc);
        fail(c, MIZAN_NOT_FOUND, "not found", NULL);
        return;
    case 413:
        json_decref(doc);
        fail(c, MIZAN_PAYLOAD_TOO_LARGE, "the upstream service found the request too large", NULL);
        return;
    default:
        break;
    }
    json_t *list = (st == 400 || st == 422) && doc != NULL ? violations(doc) : NULL;
    if (list != NULL) {
        char msg[64];
        size_t n = json_array_size(list);
        snprintf(msg, sizeof(msg), "%zu validation error%s", n, n == 1 ? "" : "s");
        json_decref(doc);
        fail(c, MIZAN_VALIDATION_FAILED, msg, list);
        return;
    }
    /* The upstream's own JSON explains; anything that is not JSON stays out. */
    fail(c, MIZAN_BAD_REQUEST, "the upstream service rejected the request", doc);
}

static bool retryable(const call_t *c, long long now)
{
    const mizan_upstream_t *up = c->pool->up;
    return c->job->fn->kind == MIZAN_QUERY && !c->probe && c->attempts <= up->retries && now < c->deadline &&
           (up->breaker_failures == 0 || atomic_load_explicit(&up->open_until, memory_order_relaxed) == 0);
}

/* Consumes the outcome of the attempt that just ended. */
static void settle(call_t *c)
{
    outcome_t o = c->outcome;
    mizan_upstream_t *up = c->pool->up;
    c->outcome = OUT_NONE;
    c->req = NULL;
    if (c->doubt != NULL)
        drop_conn(c->conn, c->doubt, c->violation);
    else if (o == OUT_RESPONSE && c->conn != NULL && stray_bytes(c->conn))
        drop_conn(c->conn, "bytes arrived past the end of an answer", true);
    c->doubt = NULL;
    release_conn(c);
    long long now = now_ms();
    switch (o) {
    case OUT_RESPONSE:
        answer(c);
        return;
    case OUT_CONNECT:
        if (retryable(c, now)) {
            long long backoff = (long long)up->retry_backoff_ms << (c->attempts - 1 < 10 ? c->attempts - 1 : 10);
            atomic_fetch_add_explicit(&up->n_retries, 1, memory_order_relaxed);
            c->state = C_BACKOFF;
            arm(c, now + backoff < c->deadline ? now + backoff : c->deadline);
            return;
        }
        breaker_judge(c, false);
        atomic_fetch_add_explicit(&up->n_connect, 1, memory_order_relaxed);
        log_call(MIZAN_LOG_WARN, c, "cannot connect, or the connection was lost before an answer", 0);
        fail(c, MIZAN_UNAVAILABLE, "the upstream service is unavailable", NULL);
        return;
    case OUT_TIMEOUT:
        breaker_judge(c, false);
        atomic_fetch_add_explicit(&up->n_timeout, 1, memory_order_relaxed);
        log_call(MIZAN_LOG_WARN, c, "the connection went silent past idle_timeout_ms", 0);
        fail(c, MIZAN_TIMEOUT, "the upstream service did not answer in time", NULL);
        return;
    case OUT_INVALID:
    default:
        breaker_judge(c, false);
        atomic_fetch_add_explicit(&up->n_invalid, 1, memory_order_relaxed);
        log_call(MIZAN_LOG_WARN, c, "an unreadable answer (malformed, or over max_response_bytes)", 0);
        fail(c, MIZAN_UNAVAILABLE, "the upstream service sent an invalid answer", NULL);
        return;
    }
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    call_t *c = arg;
    if (c->outcome != OUT_NONE) {
        settle(c);
        return;
    }
    mizan_upstream_t *up = c->pool->up;
    long long now = now_ms();
    switch (c->state) {
    case C_WAITING:
        unwait(c);
        atomic_fetch_add_explicit(&up->n_timeout, 1, memory_order_relaxed);
        log_call(MIZAN_LOG_WARN, c, "no pooled connection became free before the deadline", 0);
        fail(c, MIZAN_TIMEOUT, "the upstream service did not answer in time", NULL);
        return;
    case C_BACKOFF:
        if (now >= c->deadline) {
            breaker_judge(c, false);
            atomic_fetch_add_explicit(&up->n_connect, 1, memory_order_relaxed);
            log_call(MIZAN_LOG_WARN, c, "cannot connect before the deadline", 0);
            fail(c, MIZAN_UNAVAILABLE, "the upstream service is unavailable", NULL);
            return;
        }
        acquire(c);
        return;
    case C_ACTIVE:
        if (now >= c->deadline) {
            abort_attempt(c);
            release_conn(c);
            breaker_judge(c, false);
            atomic_fetch_add_explicit(&up->n_timeout, 1, memory_order_relaxed);
            log_call(MIZAN_LOG_WARN, c, "no answer before the function's deadline", 0);
            fail(c, MIZAN_TIMEOUT, "the upstream service did not answer in time", NULL);
            return;
        }
        if (c->connect_check) {
            c->connect_check = false;
            if (!connected(c->conn)) {
                /* Not established within connect_timeout_ms: a connection failure. */
                abort_attempt(c);
                c->outcome = OUT_CONNECT;
                settle(c);
                return;
            }
        }
        arm(c, c->deadline);
        return;
    case C_NEW:
    default:
        return;
    }
}

/* ---- building the request ------------------------------------------------------ */

static bool unreserved(unsigned char ch)
{
    return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-' ||
           ch == '.' || ch == '_' || ch == '~';
}

static void encode(struct evbuffer *b, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (unreserved(ch))
            evbuffer_add(b, &s[i], 1);
        else
            evbuffer_add_printf(b, "%%%02X", ch);
    }
}

/* The text form of v (borrowed), as a new string: a string as is, numbers
 * in shortest round-trip form, true/false, objects and arrays as compact
 * JSON; NULL for null or when out of memory. */
static char *scalar_text(const json_t *v)
{
    char buf[64];
    if (json_is_string(v))
        return strndup(json_string_value(v), json_string_length(v));
    if (json_is_integer(v)) {
        snprintf(buf, sizeof(buf), "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        return strdup(buf);
    }
    if (json_is_real(v)) {
        double d = json_real_value(v);
        for (int prec = 1; prec <= 17; prec++) {
            snprintf(buf, sizeof(buf), "%.*g", prec, d);
            if (strtod(buf, NULL) == d)
                break;
        }
        return strdup(buf);
    }
    if (json_is_boolean(v))
        return strdup(json_is_true(v) ? "true" : "false");
    if (json_is_null(v))
        return NULL;
    return json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS);
}

static bool listed(char *const *list, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(list[i], name) == 0)
            return true;
    return false;
}

static bool path_arg(const mizan_upstream_fn_t *s, const char *name)
{
    for (size_t i = 0; i < s->nsegs; i++)
        if (s->segs[i].is_arg && strcmp(s->segs[i].text, name) == 0)
            return true;
    return false;
}

/* Where one argument goes. */
static mizan_upstream_place_t place_of(const mizan_upstream_fn_t *s, const char *name)
{
    if (listed(s->query, s->nquery, name))
        return MIZAN_UPSTREAM_QUERY;
    if (listed(s->body, s->nbody, name))
        return MIZAN_UPSTREAM_BODY;
    return path_arg(s, name) ? MIZAN_UPSTREAM_NOWHERE : s->rest;
}

/* Appends v (borrowed) percent-encoded: a string's bytes as they are (NUL
 * included), anything else in its text form. -1 when out of memory. */
static int encode_value(struct evbuffer *b, const json_t *v)
{
    if (json_is_string(v)) {
        encode(b, json_string_value(v), json_string_length(v));
        return 0;
    }
    char *text = scalar_text(v);
    if (text == NULL)
        return -1;
    encode(b, text, strlen(text));
    free(text);
    return 0;
}

/* Appends "?name=value" or "&name=value" (v borrowed); null values are left out. */
static int add_query_pair(struct evbuffer *b, bool *first, const char *name, const json_t *v)
{
    if (json_is_null(v))
        return 0;
    evbuffer_add(b, *first ? "?" : "&", 1);
    *first = false;
    encode(b, name, strlen(name));
    evbuffer_add(b, "=", 1);
    return encode_value(b, v);
}

/* A VALIDATION_FAILED detail list for one argument (new reference). */
static json_t *arg_violation(const char *name, const char *msg)
{
    return json_pack("[{s:[s,s], s:s, s:s}]", "loc", "args", name, "msg", msg, "type", "upstream");
}

static char *take_string(struct evbuffer *b)
{
    size_t n = evbuffer_get_length(b);
    char *s = malloc(n + 1);
    if (s == NULL)
        return NULL;
    evbuffer_remove(b, s, n);
    s[n] = '\0';
    return s;
}

/*
 * Builds the URI and body from the job's args, and the identity headers
 * from its caller. -1 after failing the call (which is then freed).
 */
static int build(call_t *c, const mizan_exchange_t *ex)
{
    const mizan_upstream_fn_t *s = c->spec;
    const mizan_upstream_t *up = s->up;
    const json_t *args = c->job->args;
    struct evbuffer *b = evbuffer_new();
    json_t *body = s->has_body ? json_object() : NULL;
    int rc = -1;
    if (b == NULL || (s->has_body && body == NULL)) {
        fail(c, MIZAN_INTERNAL_ERROR, "out of memory", NULL);
        goto done;
    }
    evbuffer_add(b, up->base_path, strlen(up->base_path));
    for (size_t i = 0; i < s->nsegs; i++) {
        const mizan_upstream_seg_t *seg = &s->segs[i];
        if (!seg->is_arg) {
            evbuffer_add(b, seg->text, strlen(seg->text));
            continue;
        }
        const json_t *v = json_object_get(args, seg->text);
        if (v == NULL || json_is_null(v) || json_is_object(v) || json_is_array(v)) {
            fail(c, MIZAN_VALIDATION_FAILED, "1 validation error",
                 arg_violation(seg->text, "must be a string, number or boolean to fill the upstream path"));
            goto done;
        }
        if (json_is_string(v) && (json_string_length(v) == 0 || strcmp(json_string_value(v), ".") == 0 ||
                                  strcmp(json_string_value(v), "..") == 0)) {
            fail(c, MIZAN_VALIDATION_FAILED, "1 validation error",
                 arg_violation(seg->text, "cannot be empty, \".\" or \"..\" in the upstream path"));
            goto done;
        }
        if (encode_value(b, v) < 0) {
            fail(c, MIZAN_INTERNAL_ERROR, "out of memory", NULL);
            goto done;
        }
    }
    if (evbuffer_get_length(b) == 0)
        evbuffer_add(b, "/", 1);
    bool first = true;
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)args, key, v)
    {
        mizan_upstream_place_t where = place_of(s, key);
        if (where == MIZAN_UPSTREAM_BODY && body != NULL) {
            json_object_set(body, key, v);
            continue;
        }
        if (where != MIZAN_UPSTREAM_QUERY)
            continue;
        int qrc = 0;
        if (json_is_array(v)) {
            /* A list repeats the name: ?tag=a&tag=b. */
            size_t k;
            json_t *item;
            json_array_foreach(v, k, item) qrc |= add_query_pair(b, &first, key, item);
        } else {
            qrc = add_query_pair(b, &first, key, v);
        }
        if (qrc < 0) {
            fail(c, MIZAN_INTERNAL_ERROR, "out of memory", NULL);
            goto done;
        }
    }
    if ((c->uri = take_string(b)) == NULL) {
        fail(c, MIZAN_INTERNAL_ERROR, "out of memory", NULL);
        goto done;
    }
    if (body != NULL) {
        c->payload = json_dumps(body, JSON_COMPACT | JSON_SORT_KEYS);
        if (c->payload == NULL) {
            fail(c, MIZAN_INTERNAL_ERROR, "out of memory", NULL);
            goto done;
        }
        c->payload_len = strlen(c->payload);
    }
    const mizan_identity_t *id = &c->job->caller->id;
    if (id->sub != NULL && !s->no_identity) {
        struct evbuffer *p = evbuffer_new();
        bool safe = p != NULL;
        for (const unsigned char *q = (const unsigned char *)id->sub; safe && *q; q++)
            safe = *q >= 0x20 && *q != 0x7f;
        for (size_t i = 0; safe && i < id->nperms; i++) {
            for (const unsigned char *q = (const unsigned char *)id->perms[i]; safe && *q; q++)
                safe = *q >= 0x20 && *q != 0x7f && *q != ',';
            if (i > 0)
                evbuffer_add(p, ",", 1);
            evbuffer_add(p, id->perms[i], strlen(id->perms[i]));
        }
        if (!safe) {
            if (p != NULL)
                evbuffer_free(p);
            fail(c, p == NULL ? MIZAN_INTERNAL_ERROR : MIZAN_BAD_REQUEST,
                 p == NULL ? "out of memory" : "the token holds a claim that cannot be forwarded in an HTTP header",
                 NULL);
            goto done;
        }
        c->id_perms = take_string(p);
        evbuffer_free(p);
        c->id_sub = strdup(id->sub);
        c->id_staff = id->staff;
        c->id_superuser = id->superuser;
        if (c->id_perms == NULL || c->id_sub == NULL) {
            fail(c, MIZAN_INTERNAL_ERROR, "out of memory", NULL);
            goto done;
        }
        if (up->forward_token && ex != NULL && ex->req != NULL) {
            const mizan_config_t *cfg = &c->ul->loop->gw->cfg;
            struct evkeyvalq *in = evhttp_request_get_input_headers(ex->req);
            bool malformed = false;
            size_t len = 0;
            const char *tok = mizan_token_extract(evhttp_find_header(in, "Authorization"),
                                                  evhttp_find_header(in, "Cookie"), cfg->token_cookie, &len,
                                                  &malformed);
            if (tok != NULL && !malformed && asprintf(&c->bearer, "Bearer %.*s", (int)len, tok) < 0) {
                c->bearer = NULL;
                fail(c, MIZAN_INTERNAL_ERROR, "out of memory", NULL);
                goto done;
            }
        }
    }
    rc = 0;
done:
    if (b != NULL)
        evbuffer_free(b);
    json_decref(body);
    return rc;
}

/* ---- entry points -------------------------------------------------------------- */

void mizan_upstream_start(mizan_loop_t *loop, mizan_job_t *job)
{
    upstream_loop_t *ul = loop->upstream;
    const mizan_upstream_fn_t *spec = job->fn->upstream;
    call_t *c = calloc(1, sizeof(*c));
    if (c == NULL || ul == NULL || spec == NULL || spec->up->index >= ul->npools ||
        (c->timer = evtimer_new(loop->base, on_timer, c)) == NULL) {
        free(c);
        mizan_req_error(job, MIZAN_INTERNAL_ERROR, ul == NULL ? "no upstream client on this loop" : "out of memory",
                        NULL);
        job->ran = true;
        mizan_loop_complete(job);
        return;
    }
    c->job = job;
    c->spec = spec;
    c->ul = ul;
    c->pool = &ul->pools[spec->up->index];
    c->t0 = now_ms();
    c->deadline = c->t0 + job->fn->timeout_ms;
    c->next = ul->calls;
    if (ul->calls != NULL)
        ul->calls->prev = c;
    ul->calls = c;
    const mizan_exchange_t *ex = job->owner;
    if (ex != NULL)
        snprintf(c->rid, sizeof(c->rid), "%s", ex->rid);
    if (build(c, ex) < 0)
        return;
    mizan_upstream_t *up = spec->up;
    verdict_t v = breaker_allow(up, c->t0);
    if (v == B_REJECT) {
        atomic_fetch_add_explicit(&up->n_rejected, 1, memory_order_relaxed);
        fail(c, MIZAN_UNAVAILABLE, "the upstream service is unavailable (circuit open)", NULL);
        return;
    }
    c->probe = v == B_PROBE;
    acquire(c);
}

int mizan_upstream_loop_init(mizan_loop_t *loop, mizan_err_t *err)
{
    const mizan_upstreams_t *ups = loop->gw->upstreams;
    loop->upstream = NULL;
    if (ups == NULL || ups->nups == 0)
        return 0;
    upstream_loop_t *ul = calloc(1, sizeof(*ul));
    if (ul == NULL)
        return mizan_err_set(err, "out of memory");
    loop->upstream = ul;
    ul->loop = loop;
    if ((ul->pools = calloc(ups->nups, sizeof(*ul->pools))) == NULL)
        return mizan_err_set(err, "out of memory");
    ul->npools = ups->nups;
    for (size_t i = 0; i < ups->nups; i++) {
        pool_t *p = &ul->pools[i];
        p->up = ups->ups[i];
        if ((p->conns = calloc((size_t)p->up->pool_size, sizeof(*p->conns))) == NULL)
            return mizan_err_set(err, "out of memory");
        for (int k = 0; k < p->up->pool_size; k++)
            p->conns[k].pool = p;
    }
    return 0;
}

void mizan_upstream_loop_deinit(mizan_loop_t *loop)
{
    upstream_loop_t *ul = loop->upstream;
    if (ul == NULL)
        return;
    ul->closing = true;
    while (ul->calls != NULL) {
        call_t *c = ul->calls;
        abort_attempt(c);
        if (c->state == C_WAITING)
            unwait(c);
        release_conn(c);
        c->outcome = OUT_NONE;
        fail(c, MIZAN_UNAVAILABLE, "the gateway is shutting down", NULL);
    }
    for (size_t i = 0; ul->pools != NULL && i < ul->npools; i++) {
        pool_t *p = &ul->pools[i];
        for (int k = 0; p->conns != NULL && k < p->up->pool_size; k++)
            if (p->conns[k].evcon != NULL)
                evhttp_connection_free(p->conns[k].evcon);
        free(p->conns);
    }
    free(ul->pools);
    free(ul);
    loop->upstream = NULL;
}

/* ---- metrics ---------------------------------------------------------------------- */

char *mizan_upstream_metrics(const mizan_gateway_t *gw)
{
    const mizan_upstreams_t *ups = gw->upstreams;
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (f == NULL)
        return NULL;
    if (ups != NULL && ups->nups > 0) {
        static const char *const outcomes[] = {"ok", "client_error", "server_error", "timeout", "connect_error",
                                               "invalid", "rejected"};
        fprintf(f, "# HELP mizan_upstream_calls_total Upstream function calls by upstream and outcome.\n"
                   "# TYPE mizan_upstream_calls_total counter\n");
        for (size_t i = 0; i < ups->nups; i++) {
            mizan_upstream_t *up = ups->ups[i];
            atomic_llong *counts[] = {&up->n_ok,      &up->n_client,  &up->n_server,  &up->n_timeout,
                                      &up->n_connect, &up->n_invalid, &up->n_rejected};
            for (size_t k = 0; k < sizeof(outcomes) / sizeof(outcomes[0]); k++)
                fprintf(f, "mizan_upstream_calls_total{upstream=\"%s\",outcome=\"%s\"} %lld\n", up->name,
                        outcomes[k], atomic_load_explicit(counts[k], memory_order_relaxed));
        }
        fprintf(f, "# HELP mizan_upstream_retries_total Retries after a connection failure.\n"
                   "# TYPE mizan_upstream_retries_total counter\n");
        for (size_t i = 0; i < ups->nups; i++)
            fprintf(f, "mizan_upstream_retries_total{upstream=\"%s\"} %lld\n", ups->ups[i]->name,
                    atomic_load_explicit(&ups->ups[i]->n_retries, memory_order_relaxed));
        fprintf(f, "# HELP mizan_upstream_connections_opened_total TCP connections opened to the upstream.\n"
                   "# TYPE mizan_upstream_connections_opened_total counter\n");
        for (size_t i = 0; i < ups->nups; i++)
            fprintf(f, "mizan_upstream_connections_opened_total{upstream=\"%s\"} %lld\n", ups->ups[i]->name,
                    atomic_load_explicit(&ups->ups[i]->n_connections, memory_order_relaxed));
        fprintf(f, "# HELP mizan_upstream_connections_dropped_total Pooled connections closed because an answer "
                   "broke its framing (bytes past its end, conflicting framing headers).\n"
                   "# TYPE mizan_upstream_connections_dropped_total counter\n");
        for (size_t i = 0; i < ups->nups; i++)
            fprintf(f, "mizan_upstream_connections_dropped_total{upstream=\"%s\"} %lld\n", ups->ups[i]->name,
                    atomic_load_explicit(&ups->ups[i]->n_dropped, memory_order_relaxed));
        fprintf(f, "# HELP mizan_upstream_breaker_state Circuit breaker: 0 closed, 1 open, 2 half-open.\n"
                   "# TYPE mizan_upstream_breaker_state gauge\n");
        long long now = now_ms();
        for (size_t i = 0; i < ups->nups; i++) {
            long long until = atomic_load(&ups->ups[i]->open_until);
            fprintf(f, "mizan_upstream_breaker_state{upstream=\"%s\"} %d\n", ups->ups[i]->name,
                    until == 0 ? 0 : now < until ? 1 : 2);
        }
        fprintf(f, "# HELP mizan_upstream_breaker_opened_total Times the circuit breaker opened.\n"
                   "# TYPE mizan_upstream_breaker_opened_total counter\n");
        for (size_t i = 0; i < ups->nups; i++)
            fprintf(f, "mizan_upstream_breaker_opened_total{upstream=\"%s\"} %lld\n", ups->ups[i]->name,
                    atomic_load_explicit(&ups->ups[i]->n_opened, memory_order_relaxed));
    }
    if (fclose(f) != 0) {
        free(text);
        return NULL;
    }
    return text;
}
