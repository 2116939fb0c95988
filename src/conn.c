/*
 * conn.c - per-connection request deadlines (see conn.h).
 *
 * DESIGN: a connection's bufferevent is created here, with one extra
 * reference of ours so the pointer stays valid until we know evhttp's
 * connection object (read from the bufferevent's callback argument, which
 * evhttp sets right after creating it). At the next sweep we "attach":
 * register a close callback on the evhttp connection and drop our
 * reference; from then on the close callback tells us when it goes. A
 * connection evhttp freed before we attached is recognised by its cleared
 * callbacks and released by the sweep.
 */
#include "conn.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>

#include "log.h"

#define SWEEP_MS 500

struct mizan_conns;

typedef struct conn {
    struct mizan_conns *cs;          /* the loop's set */
    struct bufferevent *bev;
    struct evhttp_connection *evcon; /* NULL until attached */
    struct evbuffer_cb_entry *watch; /* on the input buffer */
    long long first_ms;              /* first byte of the request being read; 0: none */
    bool busy;                       /* a request is in the gateway's hands (or streaming) */
    void (*on_close)(struct evhttp_connection *, void *); /* chained close callback */
    void *on_close_arg;
} conn_t;

/* Open-addressing set of connections keyed by bufferevent pointer. */
typedef struct mizan_conns {
    mizan_loop_t *loop;
    conn_t **slots;
    size_t cap;  /* power of two */
    size_t used; /* live entries + tombstones */
    struct event *sweep;
} mizan_conns_t;

static conn_t tombstone;
#define TOMB (&tombstone)

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static size_t hash_ptr(const void *p, size_t cap)
{
    uint64_t x = (uint64_t)(uintptr_t)p;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return (size_t)x & (cap - 1);
}

static size_t find_slot(const mizan_conns_t *cs, const struct bufferevent *bev)
{
    for (size_t i = hash_ptr(bev, cs->cap), n = 0; n < cs->cap; i = (i + 1) & (cs->cap - 1), n++) {
        if (cs->slots[i] == NULL)
            return SIZE_MAX;
        if (cs->slots[i] != TOMB && cs->slots[i]->bev == bev)
            return i;
    }
    return SIZE_MAX;
}

/* Places c in a table known to have room. */
static void place(conn_t **slots, size_t cap, conn_t *c)
{
    size_t i = hash_ptr(c->bev, cap);
    while (slots[i] != NULL)
        i = (i + 1) & (cap - 1);
    slots[i] = c;
}

/* Rebuilds the table (dropping tombstones), doubling it when half full. */
static int rehash(mizan_conns_t *cs)
{
    size_t live = 0;
    for (size_t i = 0; i < cs->cap; i++)
        live += cs->slots[i] != NULL && cs->slots[i] != TOMB;
    size_t ncap = cs->cap;
    while (live * 2 >= ncap)
        ncap *= 2;
    conn_t **slots = calloc(ncap, sizeof(*slots));
    if (slots == NULL)
        return -1;
    for (size_t i = 0; i < cs->cap; i++)
        if (cs->slots[i] != NULL && cs->slots[i] != TOMB)
            place(slots, ncap, cs->slots[i]);
    free(cs->slots);
    cs->slots = slots;
    cs->cap = ncap;
    cs->used = live;
    return 0;
}

static int insert(mizan_conns_t *cs, conn_t *c)
{
    if ((cs->used + 1) * 4 > cs->cap * 3 && rehash(cs) < 0)
        return -1;
    size_t i = hash_ptr(c->bev, cs->cap);
    while (cs->slots[i] != NULL && cs->slots[i] != TOMB)
        i = (i + 1) & (cs->cap - 1);
    if (cs->slots[i] == NULL)
        cs->used++;
    cs->slots[i] = c;
    return 0;
}

static conn_t *lookup(const mizan_conns_t *cs, const struct bufferevent *bev)
{
    size_t i = bev != NULL ? find_slot(cs, bev) : SIZE_MAX;
    return i == SIZE_MAX ? NULL : cs->slots[i];
}

static void forget(conn_t *c)
{
    size_t i = find_slot(c->cs, c->bev);
    if (i != SIZE_MAX)
        c->cs->slots[i] = TOMB;
    free(c);
}

/* Bytes arrived: the first one of a request starts its deadline. */
static void on_input(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
    (void)buf;
    conn_t *c = arg;
    if (info->n_added > 0 && c->first_ms == 0)
        c->first_ms = now_ms();
}

/* evhttp is closing the connection: chain, then forget it. */
static void on_closed(struct evhttp_connection *evcon, void *arg)
{
    conn_t *c = arg;
    if (c->on_close != NULL)
        c->on_close(evcon, c->on_close_arg);
    evbuffer_remove_cb_entry(bufferevent_get_input(c->bev), c->watch);
    forget(c);
}

/*
 * Learns the evhttp connection of c and hands lifetime tracking over to
 * its close callback. Returns false when evhttp already freed it (c is
 * released then).
 */
static bool attach(conn_t *c)
{
    if (c->evcon != NULL)
        return true;
    bufferevent_event_cb eventcb = NULL;
    void *cbarg = NULL;
    bufferevent_getcb(c->bev, NULL, NULL, &eventcb, &cbarg);
    if (eventcb == NULL || cbarg == NULL) {
        /* evhttp let go of it: ours is the last reference. */
        struct bufferevent *bev = c->bev;
        evbuffer_remove_cb_entry(bufferevent_get_input(bev), c->watch);
        forget(c);
        bufferevent_decref(bev);
        return false;
    }
    c->evcon = cbarg;
    evhttp_connection_set_closecb(c->evcon, on_closed, c);
    bufferevent_decref(c->bev);
    return true;
}

static struct bufferevent *on_new_connection(struct event_base *base, void *arg)
{
    mizan_loop_t *loop = arg;
    struct bufferevent *bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
    conn_t *c = calloc(1, sizeof(*c));
    if (bev == NULL || c == NULL) {
        free(c);
        return bev; /* served without a deadline rather than refused */
    }
    c->cs = loop->conns;
    c->bev = bev;
    c->watch = evbuffer_add_cb(bufferevent_get_input(bev), on_input, c);
    if (c->watch == NULL || insert(loop->conns, c) < 0) {
        if (c->watch != NULL)
            evbuffer_remove_cb_entry(bufferevent_get_input(bev), c->watch);
        free(c);
        return bev;
    }
    bufferevent_incref(bev);
    return bev;
}

/* Every SWEEP_MS: attach new connections, close those whose request is overdue. */
static void on_sweep(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    mizan_conns_t *cs = arg;
    long long limit = (long long)cs->loop->gw->cfg.idle_timeout_s * 1000, now = now_ms();
    size_t dropped = 0, live = 0;
    for (size_t i = 0; i < cs->cap; i++) {
        conn_t *c = cs->slots[i];
        if (c == NULL || c == TOMB || !attach(c))
            continue;
        if (!c->busy && c->first_ms != 0 && now - c->first_ms > limit) {
            dropped++;
            evhttp_connection_free(c->evcon); /* on_closed forgets c */
        } else {
            live++;
        }
    }
    if (dropped > 0)
        mizan_log(MIZAN_LOG_WARN, "closed %zu connection(s) that took over %d s to send a request", dropped,
                  cs->loop->gw->cfg.idle_timeout_s);
    /* Tombstones pile up with connection churn: rebuild when they dominate. */
    if (cs->used > 64 && cs->used > live * 2)
        rehash(cs);
}

int mizan_conns_init(mizan_loop_t *loop, mizan_err_t *err)
{
    mizan_conns_t *cs = calloc(1, sizeof(*cs));
    if (cs == NULL || (cs->slots = calloc(64, sizeof(*cs->slots))) == NULL) {
        free(cs);
        return mizan_err_set(err, "out of memory");
    }
    cs->cap = 64;
    cs->loop = loop;
    loop->conns = cs;
    cs->sweep = event_new(loop->base, -1, EV_PERSIST, on_sweep, cs);
    if (cs->sweep == NULL)
        return mizan_err_set(err, "cannot create the request-deadline sweep");
    struct timeval tv = {0, SWEEP_MS * 1000};
    event_add(cs->sweep, &tv);
    evhttp_set_bevcb(loop->http, on_new_connection, loop);
    return 0;
}

void mizan_conns_deinit(mizan_loop_t *loop)
{
    mizan_conns_t *cs = loop->conns;
    if (cs == NULL)
        return;
    /* evhttp_free() closed every attached connection (forgetting it); what
     * is left was never attached and holds our reference. */
    for (size_t i = 0; i < cs->cap; i++) {
        conn_t *c = cs->slots[i];
        if (c == NULL || c == TOMB)
            continue;
        struct bufferevent *bev = c->bev;
        evbuffer_remove_cb_entry(bufferevent_get_input(bev), c->watch);
        free(c);
        bufferevent_decref(bev);
    }
    if (cs->sweep != NULL)
        event_free(cs->sweep);
    free(cs->slots);
    free(cs);
    loop->conns = NULL;
}

/* The tracked connection a request arrived on, or NULL. */
static conn_t *conn_of(mizan_loop_t *loop, struct evhttp_request *req)
{
    struct evhttp_connection *evcon = evhttp_request_get_connection(req);
    return evcon != NULL && loop->conns != NULL ? lookup(loop->conns, evhttp_connection_get_bufferevent(evcon))
                                                : NULL;
}

void mizan_conns_request_read(mizan_loop_t *loop, struct evhttp_request *req)
{
    conn_t *c = conn_of(loop, req);
    if (c != NULL) {
        c->first_ms = 0;
        c->busy = true;
    }
}

void mizan_conns_reply_sending(mizan_loop_t *loop, struct evhttp_request *req)
{
    conn_t *c = conn_of(loop, req);
    if (c != NULL) {
        c->busy = false;
        c->first_ms = 0;
    }
}

void mizan_conns_on_close(mizan_loop_t *loop, struct evhttp_connection *evcon,
                          void (*cb)(struct evhttp_connection *, void *), void *arg)
{
    conn_t *c = loop->conns != NULL ? lookup(loop->conns, evhttp_connection_get_bufferevent(evcon)) : NULL;
    if (c == NULL || !attach(c)) {
        evhttp_connection_set_closecb(evcon, cb, arg);
        return;
    }
    c->on_close = cb;
    c->on_close_arg = arg;
}
