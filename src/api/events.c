/*
 * events.c - Server-Sent Events streams of invalidations (see events.h).
 *
 * DESIGN (what reaches a stream): an event's frame is rebuilt from checked
 * parts, never copied: the event type is the fixed word "invalidate", the
 * context a name of the function-name grammar, params an object of
 * scalars, and the data line a compact JSON rendering (JSON escapes every
 * CR and LF inside strings). A message with a raw CR or LF anywhere, or
 * any other shape, is dropped, logged and counted, so nothing written to
 * the events channel can add a line or a frame to a stream.
 *
 * DESIGN (who may stream): a stream opens only for contexts the caller may
 * read, with the checks of GET /ctx/{name}/; a stream without a filter
 * gets the contexts the caller may read. Streams are bounded per instance
 * (sse_max_clients) and per client address (sse_max_clients_per_address):
 * the counts per address live in one small table under `addr_lock`, taken
 * only when a stream opens or closes, from any loop.
 */
#include "events.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>

#include "services.h"
#include "conn.h"
#include "cors.h"
#include "exchange.h"
#include "log.h"
#include "loop.h"
#include "reply.h"
#include "request.h"

/* Streams across all loops (for metrics and the limit). */
static atomic_size_t total_clients;

/* Messages from the events channel dropped as malformed (metrics). */
static atomic_size_t dropped_events;

/* Open streams per client address. Guarded by addr_lock (any loop). */
typedef struct addr_count {
    char addr[64];            /* numeric address as evhttp reports it */
    size_t n;                 /* streams open from it */
    struct addr_count *next;  /* bucket chain */
} addr_count_t;

#define ADDR_BUCKETS 256
static pthread_mutex_t addr_lock = PTHREAD_MUTEX_INITIALIZER;
static addr_count_t *addr_table[ADDR_BUCKETS];

static size_t addr_bucket(const char *a)
{
    size_t h = 5381;
    for (; *a != '\0'; a++)
        h = h * 33 + (unsigned char)*a;
    return h % ADDR_BUCKETS;
}

/* Takes one stream slot of addr unless it holds max already; true when taken. */
static bool addr_take(const char *addr, size_t max)
{
    bool ok = false;
    pthread_mutex_lock(&addr_lock);
    addr_count_t **pp = &addr_table[addr_bucket(addr)];
    while (*pp != NULL && strcmp((*pp)->addr, addr) != 0)
        pp = &(*pp)->next;
    if (*pp == NULL) {
        addr_count_t *a = calloc(1, sizeof(*a));
        if (a != NULL) {
            snprintf(a->addr, sizeof(a->addr), "%s", addr);
            *pp = a;
        }
    }
    if (*pp != NULL && (*pp)->n < max) {
        (*pp)->n++;
        ok = true;
    }
    pthread_mutex_unlock(&addr_lock);
    return ok;
}

/* Gives back one stream slot of addr. */
static void addr_give(const char *addr)
{
    pthread_mutex_lock(&addr_lock);
    addr_count_t **pp = &addr_table[addr_bucket(addr)];
    while (*pp != NULL && strcmp((*pp)->addr, addr) != 0)
        pp = &(*pp)->next;
    if (*pp != NULL && --(*pp)->n == 0) {
        addr_count_t *a = *pp;
        *pp = a->next;
        free(a);
    }
    pthread_mutex_unlock(&addr_lock);
}

/* One open stream. Loop-thread only. */
typedef struct client {
    struct evhttp_request *req;
    struct evhttp_connection *evcon;
    char **contexts;    /* the contexts streamed (those the caller may read) */
    size_t ncontexts;
    char addr[64];      /* client address holding one slot of addr_table */
    struct mizan_sse *sse;
    struct client *prev, *next;
} client_t;

/* A loop's streams. */
typedef struct mizan_sse {
    mizan_loop_t *loop;
    client_t *clients;
    struct event *heartbeat;
} mizan_sse_t;

/* The loops that carry streams (set at start-up, before any publish). */
#define MAX_LOOPS 256
static mizan_loop_t *stream_loops[MAX_LOOPS];
static int nstream_loops;

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

/* Frees a client that is not (or no longer) on its loop's list, and gives
 * back its slots (per address and instance-wide). */
static void client_release(client_t *cl)
{
    for (size_t i = 0; i < cl->ncontexts; i++)
        free(cl->contexts[i]);
    free(cl->contexts);
    addr_give(cl->addr);
    free(cl);
    atomic_fetch_sub(&total_clients, 1);
}

/* Unlinks a client from its loop's list and frees it. */
static void client_free(client_t *cl)
{
    mizan_sse_t *sse = cl->sse;
    if (cl->prev != NULL)
        cl->prev->next = cl->next;
    else
        sse->clients = cl->next;
    if (cl->next != NULL)
        cl->next->prev = cl->prev;
    client_release(cl);
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
    const mizan_config_t *cfg = cl->sse->loop->cfg;
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
    loop->services->sse = sse;
    if (loop->index >= 0 && loop->index < MAX_LOOPS) {
        stream_loops[loop->index] = loop;
        if (loop->index >= nstream_loops)
            nstream_loops = loop->index + 1;
    }
    sse->heartbeat = event_new(loop->base, -1, EV_PERSIST, on_heartbeat, sse);
    if (sse->heartbeat == NULL)
        return mizan_err_set(err, "cannot create the event-stream heartbeat");
    struct timeval tv = {loop->cfg->sse_heartbeat_s, 0};
    event_add(sse->heartbeat, &tv);
    return 0;
}

void mizan_events_loop_deinit(mizan_loop_t *loop)
{
    mizan_sse_t *sse = loop->services->sse;
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
    loop->services->sse = NULL;
}

void mizan_events_close_all(mizan_loop_t *loop)
{
    mizan_sse_t *sse = loop->services->sse;
    if (sse == NULL)
        return;
    while (sse->clients != NULL) {
        client_t *cl = sse->clients;
        mizan_conns_on_close(loop, cl->evcon, NULL, NULL);
        mizan_conns_stream_ended(loop, cl->req);
        evhttp_send_reply_end(cl->req);
        client_free(cl);
    }
}

void mizan_events_read_stats(void *arg, mizan_stats_t *out)
{
    (void)arg;
    out->sse_clients = atomic_load(&total_clients);
    out->events_dropped = atomic_load(&dropped_events);
}

static bool wanted(const client_t *cl, const char *context)
{
    for (size_t i = 0; i < cl->ncontexts; i++)
        if (strcmp(cl->contexts[i], context) == 0)
            return true;
    return false;
}

/* On each loop: write the frame to the matching streams. */
typedef struct delivery {
    mizan_loop_t *loop;
    frame_t *frame;
} delivery_t;

static void deliver(void *arg)
{
    delivery_t *d = arg;
    mizan_loop_t *loop = d->loop;
    frame_t *f = d->frame;
    free(d);
    mizan_sse_t *sse = loop->services->sse;
    for (client_t *cl = sse != NULL ? sse->clients : NULL, *next; cl != NULL; cl = next) {
        next = cl->next;
        if (wanted(cl, f->context))
            write_to(cl, f->text, f->len);
    }
    frame_unref(f);
}


/* True when params (borrowed) is an object whose members are all scalars. */
static bool scalar_object(const json_t *params)
{
    if (!json_is_object(params))
        return false;
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)params, key, v)
    {
        (void)key;
        if (json_is_object(v) || json_is_array(v))
            return false;
    }
    return true;
}

/* Counts and logs a dropped message (never its text: it may be hostile). */
static void drop_event(const char *why)
{
    atomic_fetch_add(&dropped_events, 1);
    mizan_log(MIZAN_LOG_WARN, "dropped a message on the events channel: %s", why);
}

void mizan_events_publish(void *arg, const char *event, size_t len)
{
    (void)arg;
    /* Raw CR and LF cannot be part of a JSON string, only of the spaces
     * between tokens: no message a gateway publishes has any. */
    if (memchr(event, '\r', len) != NULL || memchr(event, '\n', len) != NULL) {
        drop_event("it holds a raw CR or LF");
        return;
    }
    json_error_t jerr;
    json_t *ev = json_loadb(event, len, JSON_REJECT_DUPLICATES, &jerr);
    json_t *type = json_object_get(ev, "type"), *context = json_object_get(ev, "context"),
           *params = json_object_get(ev, "params");
    const char *why = NULL;
    if (!json_is_object(ev))
        why = "not a JSON object";
    else if (!json_is_string(type) || strcmp(json_string_value(type), "invalidate") != 0 ||
             json_string_length(type) != strlen("invalidate"))
        why = "its type is not \"invalidate\"";
    else if (!json_is_string(context) ||
             !mizan_request_name_valid(json_string_value(context), json_string_length(context)))
        why = "its context is not a valid name";
    else if (params != NULL && !scalar_object(params))
        why = "its params are not an object of scalars";
    if (why != NULL) {
        drop_event(why);
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
        asprintf(&f->text, "event: invalidate\ndata: %s\n\n", text) < 0) {
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
    int nloops = nstream_loops;
    atomic_init(&f->refs, nloops + 1);
    for (int i = 0; i < nloops; i++) {
        delivery_t *d = stream_loops[i] != NULL ? malloc(sizeof(*d)) : NULL;
        if (d != NULL) {
            d->loop = stream_loops[i];
            d->frame = f;
        }
        if (d == NULL || mizan_loop_post(stream_loops[i], deliver, d) < 0) {
            free(d);
            frame_unref(f);
        }
    }
    frame_unref(f);
}

/* Adds name (copied) to cl's contexts; -1 when out of memory. */
static int add_context(client_t *cl, const char *name, size_t cap)
{
    if (cl->contexts == NULL && (cl->contexts = calloc(cap > 0 ? cap : 1, sizeof(*cl->contexts))) == NULL)
        return -1;
    char *copy = strdup(name);
    if (copy == NULL)
        return -1;
    cl->contexts[cl->ncontexts++] = copy;
    return 0;
}

/* Every context of the registry the caller may read. 0, or -1 when out of memory. */
static int readable_contexts(mizan_exchange_t *ex, client_t *cl)
{
    const mizan_registry_t *reg = mizan_api_services(ex)->api->reg;
    for (size_t i = 0; i < reg->nctxs; i++)
        if (mizan_registry_may_read(reg->ctxs[i], &ex->caller->id) == MIZAN_OK && add_context(cl, reg->ctxs[i]->name, reg->nctxs) < 0)
            return -1;
    return 0;
}

/*
 * Splits "a,b" into context names the caller may read. An empty name is
 * 422, an unknown context 404, one the caller may not read 401 or 403 (as
 * GET /ctx/{name}/ would answer). Returns 0, 1 after answering, or -1 when
 * out of memory.
 */
static int parse_filter(mizan_exchange_t *ex, const char *list, client_t *cl)
{
    const mizan_registry_t *reg = mizan_api_services(ex)->api->reg;
    size_t n = 1;
    for (const char *p = list; *p; p++)
        n += *p == ',';
    const mizan_context_t **found = calloc(n, sizeof(*found));
    if (found == NULL)
        return -1;
    size_t nfound = 0;
    int rc = 0;
    const char *p = list;
    for (;;) {
        const char *comma = strchr(p, ',');
        size_t len = comma != NULL ? (size_t)(comma - p) : strlen(p);
        char *name = strndup(p, len);
        if (name == NULL) {
            rc = -1;
            goto done;
        }
        const mizan_context_t *c = len > 0 ? mizan_registry_context(reg, name) : NULL;
        free(name);
        if (len == 0) {
            json_t *details = json_pack("[{s:[s,s], s:s, s:s}]", "loc", "params", "contexts", "msg",
                                        "empty context name", "type", "minLength");
            mizan_reply_invalid(ex, details);
            rc = 1;
            goto done;
        }
        if (c == NULL) {
            mizan_reply_error(ex, MIZAN_NOT_FOUND, "unknown context", NULL);
            rc = 1;
            goto done;
        }
        found[nfound++] = c;
        if (comma == NULL)
            break;
        p = comma + 1;
    }
    /* Who may listen, once every name is known. */
    mizan_code_t worst = MIZAN_OK;
    for (size_t i = 0; i < nfound && worst != MIZAN_UNAUTHORIZED; i++) {
        mizan_code_t a = mizan_registry_may_read(found[i], &ex->caller->id);
        if (a != MIZAN_OK)
            worst = a;
    }
    if (worst != MIZAN_OK) {
        mizan_reply_error(ex, worst, worst == MIZAN_UNAUTHORIZED ? "this context requires a token" : NULL, NULL);
        rc = 1;
        goto done;
    }
    for (size_t i = 0; i < nfound; i++) {
        bool dup = false;
        for (size_t j = 0; j < cl->ncontexts && !dup; j++)
            dup = strcmp(cl->contexts[j], found[i]->name) == 0;
        if (!dup && add_context(cl, found[i]->name, nfound) < 0) {
            rc = -1;
            goto done;
        }
    }
done:
    free(found);
    return rc;
}

void mizan_events_handle(mizan_exchange_t *ex)
{
    mizan_loop_t *loop = ex->loop;
    const mizan_config_t *cfg = loop->cfg;
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
    if (atomic_load(loop->draining)) {
        json_decref(q);
        mizan_reply_unavailable(ex);
        return;
    }
    client_t *cl = calloc(1, sizeof(*cl));
    if (cl == NULL) {
        json_decref(q);
        mizan_reply_error(ex, MIZAN_INTERNAL_ERROR, "out of memory", NULL);
        return;
    }
    const char *list = json_string_value(json_object_get(q, "contexts"));
    int rc = list != NULL && list[0] != '\0' ? parse_filter(ex, list, cl) : readable_contexts(ex, cl);
    json_decref(q);
    struct evhttp_connection *evcon = rc == 0 ? evhttp_request_get_connection(ex->req) : NULL;
    if (rc == 0) {
        char *peer = NULL;
        ev_uint16_t port = 0;
        if (evcon != NULL)
            evhttp_connection_get_peer(evcon, &peer, &port);
        snprintf(cl->addr, sizeof(cl->addr), "%s", peer != NULL ? peer : "");
        if (atomic_fetch_add(&total_clients, 1) >= (size_t)cfg->sse_max_clients) {
            atomic_fetch_sub(&total_clients, 1);
            mizan_reply_header(ex, "Retry-After", "5");
            mizan_reply_error(ex, MIZAN_UNAVAILABLE, "too many event streams on this instance", NULL);
            rc = 1;
        } else if (!addr_take(cl->addr, (size_t)cfg->sse_max_clients_per_address)) {
            atomic_fetch_sub(&total_clients, 1);
            mizan_reply_header(ex, "Retry-After", "5");
            mizan_reply_error(ex, MIZAN_UNAVAILABLE, "too many event streams from this address", NULL);
            rc = 1;
        }
    }
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
        client_release(cl);
        return;
    }
    mizan_sse_t *sse = loop->services->sse;
    cl->sse = sse;
    cl->next = sse->clients;
    if (cl->next != NULL)
        cl->next->prev = cl;
    sse->clients = cl;
    evhttp_send_reply_start(cl->req, 200, "OK");
    mizan_conns_on_close(loop, cl->evcon, on_close, cl);
    mizan_conns_streaming(loop, cl->req);
    static const char hello[] = "retry: 2000\n: connected\n\n";
    write_to(cl, hello, sizeof(hello) - 1);
}
