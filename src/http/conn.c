/*
 * conn.c - per-connection request deadlines, request framing checks and the
 * input bound of event streams (see conn.h).
 *
 * DESIGN: a connection's bufferevent is created here, with one extra
 * reference of ours so the pointer stays valid until we know evhttp's
 * connection object (read from the bufferevent's callback argument, which
 * evhttp sets right after creating it). At the next sweep we "attach":
 * register a close callback on the evhttp connection and drop our
 * reference; from then on the close callback tells us when it goes. A
 * connection evhttp freed before we attached is recognised by its cleared
 * callbacks and released by the sweep.
 *
 * DESIGN (framing): the input buffer's callback runs when bytes arrive,
 * before evhttp's read callback parses them. It follows the byte stream
 * with framing.c: every request head is checked whole before evhttp acts
 * on it, bodies are skipped by their length or chunk by chunk, so the
 * inspector always knows where the next head starts (pipelined requests
 * included). A head that breaks PROTOCOL.md section 1 puts the connection
 * in the refused state: everything it holds or later receives is drained
 * unread (evhttp never sees it, so nothing runs), the envelope answer is
 * written straight to the socket once no other answer is in flight, the
 * write side is shut, and the connection is freed when the client closes
 * it or after a short linger. A connection carrying an event stream is in
 * the streaming state: what its client sends is counted and discarded, and
 * past sse_max_input_bytes the stream is closed.
 */
#include "conn.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>

#include "cors.h"
#include "envelope.h"
#include "exchange.h"
#include "framing.h"
#include "log.h"
#include "metrics.h"
#include "text.h"

#define SWEEP_MS 500
/* How long a refused connection is kept to let the client read the answer. */
#define LINGER_MS 2000

/* What the input watch does with the bytes a connection receives. */
typedef enum {
    IN_HEAD = 0,    /* reading a request head (kept in `head`) */
    IN_BODY_LENGTH, /* skipping `left` body bytes */
    IN_BODY_CHUNKED,/* following a chunked body */
    IN_STREAMING,   /* an event stream: discard, count, bound */
    IN_REFUSED,     /* refused: discard everything */
} in_state_t;

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
    in_state_t in;                   /* what the input watch is reading */
    bool in_cb;                      /* inside the input watch (its own drains re-enter it) */
    char *head;                      /* IN_HEAD: the head so far (malloc'd) */
    size_t head_len, head_cap;
    size_t line_start;               /* IN_HEAD: offset of the current line in `head` */
    uint64_t left;                   /* IN_BODY_LENGTH: body bytes still to come */
    mizan_chunked_t chunked;         /* IN_BODY_CHUNKED: parser state */
    char *body_rid, *body_origin;    /* IN_BODY_CHUNKED: the request's X-Request-Id and Origin (malloc'd; may be NULL) */
    size_t stream_in;                /* IN_STREAMING: bytes received and discarded */
    char *refusal;                   /* IN_REFUSED: the answer to write (malloc'd), NULL once written */
    size_t refusal_len;
    bool refusal_due;                /* IN_REFUSED: waiting for the answer in flight to be flushed */
    bool closing;                    /* the kill event will free the connection */
    struct event *kill;              /* writes the refusal / frees the connection (loop thread) */
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

static void conn_free(conn_t *c)
{
    if (c->kill != NULL)
        event_free(c->kill);
    free(c->head);
    free(c->refusal);
    free(c->body_rid);
    free(c->body_origin);
    free(c);
}

static void forget(conn_t *c)
{
    size_t i = find_slot(c->cs, c->bev);
    if (i != SIZE_MAX)
        c->cs->slots[i] = TOMB;
    conn_free(c);
}

static bool attach(conn_t *c);
static void inspect(conn_t *c, struct evbuffer *buf, size_t n);

/*
 * Bytes arrived (before evhttp reads them): the first one of a request
 * starts its deadline, and the framing watch looks at them. Drains made by
 * the watch itself call back here; they are ignored.
 */
static void on_input(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
    conn_t *c = arg;
    if (info->n_added == 0 || c->in_cb)
        return;
    if (c->first_ms == 0)
        c->first_ms = now_ms();
    c->in_cb = true;
    inspect(c, buf, info->n_added);
    c->in_cb = false;
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

/* ---- framing watch ------------------------------------------------------ */

static void on_kill(evutil_socket_t fd, short what, void *arg);

/* Runs the kill event after ms (0: on the loop's next turn). */
static void kill_after(conn_t *c, int ms)
{
    if (c->kill == NULL)
        c->kill = evtimer_new(c->cs->loop->base, on_kill, c);
    if (c->kill == NULL) {
        mizan_log(MIZAN_LOG_ERROR, "out of memory: a refused connection is left to the request deadline");
        return;
    }
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    evtimer_add(c->kill, &tv);
}

static void drain_all(struct evbuffer *buf)
{
    evbuffer_drain(buf, evbuffer_get_length(buf));
}

static void head_reset(conn_t *c)
{
    free(c->head);
    c->head = NULL;
    c->head_len = c->head_cap = 0;
    c->line_start = 0;
}

/*
 * Refuses the connection: what it holds is dropped unread, the envelope
 * answer is prepared, and written as soon as no other answer is in flight.
 */
static void refuse(conn_t *c, int status, const char *reason, const char *rid, const char *origin)
{
    mizan_loop_t *loop = c->cs->loop;
    c->in = IN_REFUSED;
    head_reset(c);
    drain_all(bufferevent_get_input(c->bev));
    char own[40];
    if (rid == NULL || rid[0] == '\0') {
        mizan_exchange_request_id(loop, own, sizeof(own));
        rid = own;
    }
    mizan_code_t code = status == 413 ? MIZAN_PAYLOAD_TOO_LARGE : MIZAN_BAD_REQUEST;
    char *body = mizan_envelope_render(code, reason, NULL);
    /* A page on an allowed origin must be able to read the refusal (PROTOCOL section 8). */
    char cors[512];
    mizan_cors_header_lines(&loop->cfg->cors, origin != NULL && origin[0] != '\0' ? origin : NULL, cors,
                            sizeof(cors));
    int n = body == NULL ? -1
                         : asprintf(&c->refusal,
                                    "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nCache-Control: no-store\r\n"
                                    "X-Request-Id: %s\r\n%sConnection: close\r\nContent-Length: %zu\r\n\r\n%s",
                                    status, status == 413 ? "Payload Too Large" : "Bad Request", rid, cors,
                                    strlen(body), body);
    free(body);
    if (n < 0) {
        c->refusal = NULL; /* out of memory: the connection is closed without an answer */
        c->refusal_len = 0;
    } else {
        c->refusal_len = (size_t)n;
    }
    json_t *f = json_pack("{s:s, s:i, s:s}", "request_id", rid, "status", status, "reason", reason);
    mizan_log_fields(MIZAN_LOG_WARN, "refused a request before reading it", f);
    json_decref(f);
    mizan_metrics_request("unknown", status, 0);
    if (!c->busy && evbuffer_get_length(bufferevent_get_output(c->bev)) == 0)
        kill_after(c, 0);
    else
        c->refusal_due = true; /* after the answer in flight (mizan_conns_reply_flushed) */
}

/* Appends n bytes of a head; false when it passes max bytes. */
static bool head_append(conn_t *c, const char *p, size_t n, size_t max)
{
    if (c->head_len + n > max)
        return false;
    if (mizan_text_reserve(&c->head, &c->head_cap, c->head_len + n, 512) < 0)
        return false;
    memcpy(c->head + c->head_len, p, n);
    c->head_len += n;
    return true;
}

/* A whole head (len bytes at head): judge it and set up reading its body. */
static void head_judge(conn_t *c, const char *head, size_t len)
{
    const mizan_config_t *cfg = c->cs->loop->cfg;
    mizan_head_t h;
    mizan_framing_check_head(head, len, cfg->max_body_bytes, &h);
    head_reset(c);
    if (h.status != 0) {
        refuse(c, h.status, h.reason, h.rid, h.origin);
        return;
    }
    if (h.body == MIZAN_BODY_LENGTH) {
        c->left = h.length;
        c->in = IN_BODY_LENGTH;
    } else if (h.body == MIZAN_BODY_CHUNKED) {
        memset(&c->chunked, 0, sizeof(c->chunked));
        c->in = IN_BODY_CHUNKED;
        /* Kept for a refusal while the body arrives (over the limit). */
        free(c->body_rid);
        free(c->body_origin);
        c->body_rid = h.rid[0] != '\0' ? strdup(h.rid) : NULL;
        c->body_origin = h.origin[0] != '\0' ? strdup(h.origin) : NULL;
    }
}

/* True when a line of n bytes before its LF (at line) is the empty line that ends a head: nothing, or a lone CR. */
static bool ends_head(const char *line, size_t n)
{
    return n == 0 || (n == 1 && line[0] == '\r');
}

/*
 * Bytes from p through the empty line that ends a head starting at p, or 0
 * when the n bytes do not hold a whole head.
 */
static size_t head_end(const char *p, size_t n)
{
    size_t pos = 0;
    while (pos < n) {
        const char *lf = memchr(p + pos, '\n', n - pos);
        if (lf == NULL)
            return 0;
        if (ends_head(p + pos, (size_t)(lf - (p + pos))))
            return (size_t)(lf - p) + 1;
        pos = (size_t)(lf - p) + 1;
    }
    return 0;
}

/* Follows n received bytes through heads and bodies; may refuse c. */
static void feed(conn_t *c, const char *p, size_t n)
{
    const mizan_config_t *cfg = c->cs->loop->cfg;
    while (n > 0 && c->in != IN_REFUSED) {
        if (c->in == IN_HEAD && c->head_len == 0) {
            /* The usual case: a whole head in one piece of input, judged
             * where it lies instead of being copied line by line. */
            size_t end = head_end(p, n);
            if (end > 0 && end <= cfg->max_header_bytes) {
                head_judge(c, p, end);
                p += end;
                n -= end;
                continue;
            }
        }
        if (c->in == IN_HEAD) {
            const char *lf = memchr(p, '\n', n);
            size_t take = lf != NULL ? (size_t)(lf - p) + 1 : n;
            if (!head_append(c, p, take, cfg->max_header_bytes)) {
                char why[96];
                snprintf(why, sizeof(why), "request head is over the %zu byte limit", cfg->max_header_bytes);
                refuse(c, 400, why, NULL, NULL);
                return;
            }
            p += take;
            n -= take;
            if (lf != NULL) {
                bool blank = ends_head(c->head + c->line_start, c->head_len - 1 - c->line_start);
                c->line_start = c->head_len;
                if (blank)
                    head_judge(c, c->head, c->head_len);
            }
        } else if (c->in == IN_BODY_LENGTH) {
            size_t take = c->left < n ? (size_t)c->left : n;
            c->left -= take;
            p += take;
            n -= take;
            if (c->left == 0)
                c->in = IN_HEAD;
        } else if (c->in == IN_BODY_CHUNKED) {
            bool done = false;
            int status = 0;
            char why[112];
            long used = mizan_framing_chunked(&c->chunked, p, n, cfg->max_body_bytes, &done, &status, why,
                                              sizeof(why));
            if (used < 0) {
                if (status == 413)
                    snprintf(why, sizeof(why), "request body is over the %zu byte limit", cfg->max_body_bytes);
                refuse(c, status, why, c->body_rid, c->body_origin);
                return;
            }
            p += used;
            n -= (size_t)used;
            if (done)
                c->in = IN_HEAD;
        } else {
            return;
        }
    }
}

/* The last n bytes of buf just arrived. */
static void inspect(conn_t *c, struct evbuffer *buf, size_t n)
{
    if (c->in == IN_REFUSED) {
        drain_all(buf);
        return;
    }
    if (c->in == IN_STREAMING) {
        drain_all(buf);
        c->stream_in += n;
        size_t limit = c->cs->loop->cfg->sse_max_input_bytes;
        if (c->stream_in > limit && !c->closing) {
            c->closing = true;
            mizan_log(MIZAN_LOG_WARN, "closing an event stream whose client sent more than %zu bytes", limit);
            kill_after(c, 0);
        }
        return;
    }
    struct evbuffer_ptr pos;
    if (evbuffer_ptr_set(buf, &pos, evbuffer_get_length(buf) - n, EVBUFFER_PTR_SET) < 0)
        return;
    while (n > 0) {
        struct evbuffer_iovec v[8];
        int got = evbuffer_peek(buf, (ev_ssize_t)n, &pos, v, 8);
        if (got <= 0)
            return;
        size_t seen = 0;
        for (int i = 0; i < got && i < 8 && n > 0; i++) {
            size_t take = v[i].iov_len < n ? v[i].iov_len : n;
            feed(c, v[i].iov_base, take);
            if (c->in == IN_REFUSED)
                return; /* buf was drained: pos is gone */
            n -= take;
            seen += take;
        }
        if (n > 0 && evbuffer_ptr_set(buf, &pos, seen, EVBUFFER_PTR_ADD) < 0)
            return;
    }
}

/*
 * The kill event: writes a pending refusal (straight to the socket: evhttp
 * has nothing in flight, and its own write callbacks must not run for it),
 * shuts the write side and lingers; later, or for a stream that was sent
 * too much, frees the connection.
 */
static void on_kill(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    conn_t *c = arg;
    if (!attach(c))
        return; /* evhttp already let it go (c is freed) */
    if (c->in == IN_REFUSED && c->refusal != NULL) {
        evutil_socket_t s = bufferevent_getfd(c->bev);
        if (s >= 0) {
            ssize_t w = send(s, c->refusal, c->refusal_len, MSG_NOSIGNAL | MSG_DONTWAIT);
            (void)w; /* a short write on an empty socket buffer: the client sees a cut answer */
            shutdown(s, SHUT_WR);
        }
        free(c->refusal);
        c->refusal = NULL;
        kill_after(c, LINGER_MS);
        return;
    }
    evhttp_connection_free(c->evcon); /* on_closed forgets c */
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
    long long limit = (long long)cs->loop->cfg->idle_timeout_s * 1000, now = now_ms();
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
                  cs->loop->cfg->idle_timeout_s);
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
        conn_free(c);
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

void mizan_conns_streaming(mizan_loop_t *loop, struct evhttp_request *req)
{
    conn_t *c = conn_of(loop, req);
    if (c == NULL)
        return;
    head_reset(c);
    c->in = IN_STREAMING;
    /* What came after the stream's request (pipelined) counts as sent on it. */
    struct evbuffer *in = bufferevent_get_input(c->bev);
    c->stream_in = evbuffer_get_length(in);
    drain_all(in);
    if (c->stream_in > loop->cfg->sse_max_input_bytes && !c->closing) {
        c->closing = true;
        kill_after(c, 0);
    }
}

void mizan_conns_reply_flushed(mizan_loop_t *loop, struct evhttp_request *req)
{
    conn_t *c = conn_of(loop, req);
    if (c != NULL && c->in == IN_REFUSED && c->refusal_due) {
        c->refusal_due = false;
        kill_after(c, 0); /* after evhttp is done with the answer it just flushed */
    }
}

void mizan_conns_stream_ended(mizan_loop_t *loop, struct evhttp_request *req)
{
    conn_t *c = conn_of(loop, req);
    if (c == NULL || c->in != IN_STREAMING || c->closing)
        return;
    /* The connection may carry requests again: back to reading heads. */
    c->in = IN_HEAD;
    c->stream_in = 0;
    c->busy = false;
    c->first_ms = 0;
}
