/*
 * events.c - Server-Sent Events streams of invalidations (see events.h).
 */
#include "events.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>

#include "conn.h"
#include "cors.h"
#include "log.h"
#include "request.h"

/* Streams across all loops (for metrics and the limit). */
static atomic_size_t total_clients;

/* One open stream. Loop-thread only. */
typedef struct client {
    struct evhttp_request *req;
    struct evhttp_connection *evcon;
    char **contexts;    /* filter; NULL: every context */
    size_t ncontexts;
    struct mizan_sse *sse;
    struct client *prev, *next;
} client_t;

/* A loop's streams. */
typedef struct mizan_sse {
    mizan_loop_t *loop;
    client_t *clients;
    struct event *heartbeat;
} mizan_sse_t;

/* A rendered event shared by every loop it is posted to. */
typedef struct frame {
    atomic_int refs;
    char *context;
    char *text;
    size_t len;
} frame_t;

static void frame_unref(frame_t *f)
{
    if (atomic_fetch_sub(&f->refs, 1) == 1) {
        free(f->context);
        free(f->text);
        free(f);
    }
}

static void client_free(client_t *cl)
{
    mizan_sse_t *sse = cl->sse;
    if (cl->prev != NULL)
        cl->prev->next = cl->next;
    else
        sse->clients = cl->next;
    if (cl->next != NULL)
        cl->next->prev = cl->prev;
    for (size_t i = 0; i < cl->ncontexts; i++)
        free(cl->contexts[i]);
    free(cl->contexts);
    free(cl);
    atomic_fetch_sub(&total_clients, 1);
}

/* evhttp is closing the connection (client gone or write failed). */
static void on_close(struct evhttp_connection *evcon, void *arg)
{
    (void)evcon;
    client_t *cl = arg;
    /* On EOF evhttp detaches a request still being streamed instead of
     * freeing it; an attached one is freed with the connection. */
    if (evhttp_request_get_connection(cl->req) == NULL)
        evhttp_request_free(cl->req);
    client_free(cl);
}

/* Drops a stream whose client stopped reading; the close callback frees cl. */
static void drop(client_t *cl)
{
    mizan_log(MIZAN_LOG_WARN, "dropping an event stream whose client stopped reading");
    evhttp_connection_free(cl->evcon);
}

/* Writes text to cl, or drops cl when it is too far behind. */
static void write_to(client_t *cl, const char *text, size_t len)
{
    const mizan_config_t *cfg = &cl->sse->loop->gw->cfg;
    struct bufferevent *bev = evhttp_connection_get_bufferevent(cl->evcon);
    if (bev != NULL && evbuffer_get_length(bufferevent_get_output(bev)) + len > cfg->sse_max_buffer_bytes) {
        drop(cl);
        return;
    }
    struct evbuffer *buf = evbuffer_new();
    if (buf == NULL)
        return;
    evbuffer_add(buf, text, len);
    evhttp_send_reply_chunk(cl->req, buf);
    evbuffer_free(buf);
}

static void on_heartbeat(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    mizan_sse_t *sse = arg;
    static const char beat[] = ": heartbeat\n\n";
    for (client_t *cl = sse->clients, *next; cl != NULL; cl = next) {
        next = cl->next;
        write_to(cl, beat, sizeof(beat) - 1);
    }
}

int mizan_events_loop_init(mizan_loop_t *loop, mizan_err_t *err)
{
    mizan_sse_t *sse = calloc(1, sizeof(*sse));
    if (sse == NULL)
        return mizan_err_set(err, "out of memory");
    sse->loop = loop;
    loop->sse = sse;
    sse->heartbeat = event_new(loop->base, -1, EV_PERSIST, on_heartbeat, sse);
    if (sse->heartbeat == NULL)
        return mizan_err_set(err, "cannot create the event-stream heartbeat");
    struct timeval tv = {loop->gw->cfg.sse_heartbeat_s, 0};
    event_add(sse->heartbeat, &tv);
    return 0;
}

void mizan_events_loop_deinit(mizan_loop_t *loop)
{
    mizan_sse_t *sse = loop->sse;
    if (sse == NULL)
        return;
    /* Streams opened after the drain began: stop hearing of their
     * connections, which evhttp_free() closes afterwards. */
    while (sse->clients != NULL) {
        mizan_conns_on_close(loop, sse->clients->evcon, NULL, NULL);
        client_free(sse->clients);
    }
    if (sse->heartbeat != NULL)
        event_free(sse->heartbeat);
    free(sse);
    loop->sse = NULL;
}

void mizan_events_close_all(mizan_loop_t *loop)
{
    mizan_sse_t *sse = loop->sse;
    if (sse == NULL)
        return;
    while (sse->clients != NULL) {
        client_t *cl = sse->clients;
        mizan_conns_on_close(loop, cl->evcon, NULL, NULL);
        evhttp_send_reply_end(cl->req);
        client_free(cl);
    }
}

size_t mizan_events_clients(mizan_gateway_t *gw)
{
    (void)gw;
    return atomic_load(&total_clients);
}

static bool wanted(const client_t *cl, const char *context)
{
    if (cl->contexts == NULL)
        return true;
    for (size_t i = 0; i < cl->ncontexts; i++)
        if (strcmp(cl->contexts[i], context) == 0)
            return true;
    return false;
}

/* On each loop: write the frame to the matching streams. */
static void deliver(mizan_loop_t *loop, void *arg)
{
    frame_t *f = arg;
    for (client_t *cl = loop->sse != NULL ? loop->sse->clients : NULL, *next; cl != NULL; cl = next) {
        next = cl->next;
        if (wanted(cl, f->context))
            write_to(cl, f->text, f->len);
    }
    frame_unref(f);
}

void mizan_events_publish(mizan_gateway_t *gw, const char *event, size_t len)
{
    json_error_t jerr;
    json_t *ev = json_loadb(event, len, JSON_REJECT_DUPLICATES, &jerr);
    json_t *context = json_object_get(ev, "context"), *params = json_object_get(ev, "params");
    if (!json_is_string(context) || (params != NULL && !json_is_object(params)) ||
        !json_is_string(json_object_get(ev, "type"))) {
        mizan_log(MIZAN_LOG_WARN, "ignoring a malformed event on the events channel");
        json_decref(ev);
        return;
    }
    json_t *data = json_pack("{s:O}", "context", context);
    if (data != NULL && params != NULL)
        json_object_set(data, "params", params);
    char *text = data != NULL ? json_dumps(data, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(data);
    frame_t *f = calloc(1, sizeof(*f));
    if (text == NULL || f == NULL || (f->context = strdup(json_string_value(context))) == NULL ||
        asprintf(&f->text, "event: %s\ndata: %s\n\n", json_string_value(json_object_get(ev, "type")), text) < 0) {
        if (f != NULL)
            free(f->context);
        free(f);
        free(text);
        json_decref(ev);
        return;
    }
    free(text);
    json_decref(ev);
    f->len = strlen(f->text);
    atomic_init(&f->refs, gw->nloops + 1);
    for (int i = 0; i < gw->nloops; i++)
        if (mizan_loop_post(&gw->loops[i], deliver, f) < 0)
            frame_unref(f);
    frame_unref(f);
}

/* Splits "a,b" into context names; answers 422 for an unknown one. */
static int parse_filter(mizan_exchange_t *ex, const char *list, client_t *cl)
{
    const mizan_registry_t *reg = &ex->loop->gw->reg;
    size_t n = 1;
    for (const char *p = list; *p; p++)
        n += *p == ',';
    cl->contexts = calloc(n, sizeof(*cl->contexts));
    if (cl->contexts == NULL)
        return -1;
    const char *p = list;
    for (;;) {
        const char *comma = strchr(p, ',');
        size_t len = comma != NULL ? (size_t)(comma - p) : strlen(p);
        char *name = strndup(p, len);
        if (name == NULL)
            return -1;
        if (len == 0 || mizan_registry_context(reg, name) == NULL) {
            json_t *details = json_pack("[{s:[s,s], s:s, s:s}]", "loc", "params", "contexts", "msg",
                                        len == 0 ? "empty context name" : "unknown context", "type", "enum");
            free(name);
            mizan_reply_invalid(ex, details);
            return 1;
        }
        cl->contexts[cl->ncontexts++] = name;
        if (comma == NULL)
            return 0;
        p = comma + 1;
    }
}

void mizan_events_handle(mizan_exchange_t *ex)
{
    mizan_loop_t *loop = ex->loop;
    const mizan_config_t *cfg = &loop->gw->cfg;
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(ex->req);
    mizan_err_t err = {{0}};
    json_t *q = mizan_request_parse_query(uri != NULL ? evhttp_uri_get_query(uri) : NULL, &err);
    if (q == NULL) {
        mizan_reply_error(ex, MIZAN_BAD_REQUEST, err.msg, NULL);
        return;
    }
    const char *key;
    json_t *value;
    json_object_foreach(q, key, value)
    {
        if (strcmp(key, "contexts") != 0) {
            json_t *details = json_pack("[{s:[s,s], s:s, s:s}]", "loc", "params", key, "msg", "unexpected property",
                                        "type", "additionalProperties");
            json_decref(q);
            mizan_reply_invalid(ex, details);
            return;
        }
    }
    if (atomic_load(&loop->gw->draining)) {
        json_decref(q);
        mizan_reply_unavailable(ex);
        return;
    }
    if (atomic_load(&total_clients) >= (size_t)cfg->sse_max_clients) {
        json_decref(q);
        mizan_reply_header(ex, "Retry-After", "5");
        mizan_reply_error(ex, MIZAN_UNAVAILABLE, "too many event streams on this instance", NULL);
        return;
    }
    client_t *cl = calloc(1, sizeof(*cl));
    if (cl == NULL) {
        json_decref(q);
        mizan_reply_error(ex, MIZAN_INTERNAL_ERROR, "out of memory", NULL);
        return;
    }
    const char *list = json_string_value(json_object_get(q, "contexts"));
    int rc = list != NULL && list[0] != '\0' ? parse_filter(ex, list, cl) : 0;
    json_decref(q);
    if (rc != 0) {
        for (size_t i = 0; i < cl->ncontexts; i++)
            free(cl->contexts[i]);
        free(cl->contexts);
        free(cl);
        if (rc < 0)
            mizan_reply_error(ex, MIZAN_INTERNAL_ERROR, "out of memory", NULL);
        return;
    }
    struct evkeyvalq *h = evhttp_request_get_output_headers(ex->req);
    evhttp_add_header(h, "Content-Type", "text/event-stream");
    evhttp_add_header(h, "Cache-Control", "no-store");
    evhttp_add_header(h, "X-Request-Id", ex->rid);
    evhttp_add_header(h, "X-Accel-Buffering", "no");
    mizan_cors_headers(&cfg->cors, ex->req);
    ex->route = "events";
    cl->req = mizan_exchange_detach(ex);
    cl->evcon = evhttp_request_get_connection(cl->req);
    if (cl->evcon == NULL) {
        /* The client is already gone: this frees the request. */
        evhttp_send_reply(cl->req, 200, "OK", NULL);
        for (size_t i = 0; i < cl->ncontexts; i++)
            free(cl->contexts[i]);
        free(cl->contexts);
        free(cl);
        return;
    }
    cl->sse = loop->sse;
    atomic_fetch_add(&total_clients, 1);
    cl->next = loop->sse->clients;
    if (cl->next != NULL)
        cl->next->prev = cl;
    loop->sse->clients = cl;
    evhttp_send_reply_start(cl->req, 200, "OK");
    mizan_conns_on_close(loop, cl->evcon, on_close, cl);
    static const char hello[] = "retry: 2000\n: connected\n\n";
    write_to(cl, hello, sizeof(hello) - 1);
}
