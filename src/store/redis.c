/*
 * redis.c - the Redis layer (see redis.h): URL parsing, the connection state
 * machine over hiredis' async API on libevent, command timeouts, the replay
 * queue of invalidations, and Redis Cluster routing.
 *
 * Redis Cluster: a router (a mizan_redis_t with `cl` set, one per loop, in
 * shared->conns like a plain command connection but with no context of its
 * own) owns one ordinary command connection per node (`router` set, never in
 * shared->conns, never replaying by themselves). Its retry timer paces slot
 * map refreshes; its kick also drops connections the map no longer needs.
 * A routed command keeps a copy of itself (cmdcopy_t) so that a MOVED or
 * ASK reply can send it again to another node; the op then moves to that
 * node's list. An invalidation batch may span nodes (its ops are on several
 * connections, b->r is the router); failed items of a mutation's batch are
 * held on the router (cl->waiting) until their slots have a master again or
 * failover_wait_ms passes, then they join the replay queue.
 *
 * Connection states (mizan_redis_t.state), loop thread only:
 *   WAIT     no hiredis context; the retry timer will make one
 *   SETUP    context made; AUTH / SELECT / PING (or SUBSCRIBE) sent, the last
 *            one not yet answered
 *   READY    set up; a command connection may be replaying the queue
 *   BROKEN   the context is doomed: an error was seen and hiredis is tearing
 *            it down, or a teardown was requested from inside a callback
 *   FREEING  mizan_redis_free is running; nothing is reported any more
 *
 * hiredis rules followed here: a context is never freed from inside one of
 * its own callbacks (a teardown wanted there is deferred to the `kick` event);
 * on_disconnect / a failed on_connect is where a context is learned to be
 * gone; every command carries a heap record (op_t) that lives until hiredis
 * calls its callback, which it does exactly once, with a NULL reply when the
 * context dies. A context torn down by us is detached first (r->ac = NULL),
 * so callbacks that arrive during the teardown see it as foreign.
 */
#include "redis.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <event2/event.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "log.h"
#include "request.h"
#include "text.h"

/* ------------------------------------------------------------------------ */
/* The connection's events on the loop                                      */
/* ------------------------------------------------------------------------ */

/*
 * hiredis asks for read and write interest through ac->ev. The read event
 * is persistent and stays registered for the connection's life (hiredis
 * asks for it again after every read). A write is not registered at once:
 * the first command of a loop turn activates a flush that runs once the
 * turn's other callbacks have queued theirs, and writes them all with one
 * system call; only a socket that cannot take everything (or a connect in
 * progress) registers for writability. So a lookup costs no epoll_ctl.
 */
typedef struct redis_events {
    redisAsyncContext *ac;
    struct event *rev, *wev, *flush;
    bool reading;      /* rev registered */
    bool want_write;   /* hiredis has bytes to write (or a connect to finish) */
    bool flushing;     /* inside the flush's write: hiredis says next whether bytes are left */
} redis_events_t;

static void ev_on_read(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    redisAsyncHandleRead(((redis_events_t *)arg)->ac);
}

static void ev_on_write(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    redisAsyncHandleWrite(((redis_events_t *)arg)->ac);
}

/* The turn's commands are queued: write them, and wait for writability only if some are left. */
static void ev_on_flush(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    redis_events_t *e = arg;
    if (!e->want_write)
        return;
    /* hiredis answers with delWrite (all written) or addWrite (bytes left):
     * both see the flag. On a write error it may free the context, and e
     * with it, so nothing here touches e afterwards. */
    e->flushing = true;
    redisAsyncHandleWrite(e->ac);
}

static void ev_add_read(void *arg)
{
    redis_events_t *e = arg;
    if (!e->reading && event_add(e->rev, NULL) == 0)
        e->reading = true;
}

static void ev_del_read(void *arg)
{
    redis_events_t *e = arg;
    if (e->reading)
        event_del(e->rev);
    e->reading = false;
}

static void ev_add_write(void *arg)
{
    redis_events_t *e = arg;
    if (e->flushing) {
        /* The flush could not write everything: wait until the socket drains. */
        e->flushing = false;
        e->want_write = true;
        event_add(e->wev, NULL);
        return;
    }
    if (e->want_write)
        return;
    e->want_write = true;
    if ((e->ac->c.flags & REDIS_CONNECTED) == 0)
        event_add(e->wev, NULL); /* a connect in progress: only writability says it finished */
    else
        event_active(e->flush, EV_WRITE, 1);
}

static void ev_del_write(void *arg)
{
    redis_events_t *e = arg;
    e->flushing = false;
    e->want_write = false;
    event_del(e->wev);
}

static void ev_cleanup(void *arg)
{
    redis_events_t *e = arg;
    event_free(e->rev);
    event_free(e->wev);
    event_free(e->flush);
    free(e);
}

/* Binds ac's events to base in place of hiredis's own adapter. Returns 0 or -1. */
static int ev_attach(redisAsyncContext *ac, struct event_base *base)
{
    if (ac->ev.data != NULL)
        return -1;
    redis_events_t *e = calloc(1, sizeof(*e));
    if (e == NULL)
        return -1;
    e->ac = ac;
    e->rev = event_new(base, ac->c.fd, EV_READ | EV_PERSIST, ev_on_read, e);
    e->wev = event_new(base, ac->c.fd, EV_WRITE | EV_PERSIST, ev_on_write, e);
    e->flush = event_new(base, -1, 0, ev_on_flush, e);
    if (e->rev == NULL || e->wev == NULL || e->flush == NULL) {
        ev_cleanup(e);
        return -1;
    }
    ac->ev.addRead = ev_add_read;
    ac->ev.delRead = ev_del_read;
    ac->ev.addWrite = ev_add_write;
    ac->ev.delWrite = ev_del_write;
    ac->ev.cleanup = ev_cleanup;
    ac->ev.data = e;
    /* The connect completes when the socket turns writable. */
    ev_add_read(e);
    ev_add_write(e);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* URL parsing                                                              */
/* ------------------------------------------------------------------------ */

/*
 * Percent-decodes [s, s + n) into out (cap bytes, NUL-terminated).
 * 0, or -1 on a bad escape or an escaped NUL, -2 when it does not fit.
 */
static int decode_part(const char *s, size_t n, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        int c = (unsigned char)s[i];
        if (c == '%') {
            if (n - i < 3)
                return -1;
            int hi = mizan_hex_digit((unsigned char)s[i + 1]);
            int lo = mizan_hex_digit((unsigned char)s[i + 2]);
            if (hi < 0 || lo < 0)
                return -1;
            c = hi * 16 + lo;
            if (c == 0)
                return -1;
            i += 2;
        }
        if (o + 1 >= cap)
            return -2;
        out[o++] = (char)c;
    }
    out[o] = '\0';
    return 0;
}

/* Reads up to max_digits decimal digits at *p; -1 when there are none or too many. */
static int parse_digits(const char **p, int max_digits, long *out)
{
    long v = 0;
    int nd = 0;
    while (**p >= '0' && **p <= '9') {
        if (++nd > max_digits)
            return -1;
        v = v * 10 + (**p - '0');
        (*p)++;
    }
    if (nd == 0)
        return -1;
    *out = v;
    return 0;
}

static bool host_char_ok(int c, bool bracketed)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.')
        return true;
    if (bracketed)
        return c == ':' || c == '%';
    return c == '-' || c == '_';
}

/* user:password@ (the last '@' ends them, so a raw '@' or '/' in a password works); advances *pp. */
static int parse_credentials(const char **pp, mizan_redis_url_t *out, mizan_err_t *err)
{
    const char *p = *pp;
    const char *at = strrchr(p, '@');
    if (at == NULL)
        return 0;
    const char *colon = memchr(p, ':', (size_t)(at - p));
    if (colon == NULL)
        return mizan_err_set(err, "Redis URL: credentials must be written user:password@ or :password@");
    int rc = decode_part(p, (size_t)(colon - p), out->user, sizeof(out->user));
    if (rc == -1)
        return mizan_err_set(err, "Redis URL: bad percent-escape in the user name");
    if (rc == -2)
        return mizan_err_set(err, "Redis URL: user name longer than %zu bytes", sizeof(out->user) - 1);
    rc = decode_part(colon + 1, (size_t)(at - colon - 1), out->password, sizeof(out->password));
    if (rc == -1)
        return mizan_err_set(err, "Redis URL: bad percent-escape in the password (write a literal %% as %%25)");
    if (rc == -2)
        return mizan_err_set(err, "Redis URL: password longer than %zu bytes", sizeof(out->password) - 1);
    *pp = at + 1;
    return 0;
}

/* host[:port] at *pp into addr (port defaults to 6379); advances *pp. */
static int parse_hostport(const char **pp, mizan_redis_addr_t *addr, mizan_err_t *err)
{
    const char *p = *pp;
    const char *host;
    size_t hlen;
    bool bracketed = (*p == '[');
    if (bracketed) {
        const char *close = strchr(p, ']');
        if (close == NULL)
            return mizan_err_set(err, "Redis URL: '[' without ']' in the host");
        host = p + 1;
        hlen = (size_t)(close - host);
        p = close + 1;
    } else {
        host = p;
        hlen = strcspn(p, ":/?#,");
        p += hlen;
    }
    if (hlen == 0)
        return mizan_err_set(err, "Redis URL has no host");
    if (hlen >= sizeof(addr->host))
        return mizan_err_set(err, "Redis URL: host longer than %zu bytes", sizeof(addr->host) - 1);
    for (size_t i = 0; i < hlen; i++)
        if (!host_char_ok((unsigned char)host[i], bracketed))
            return mizan_err_set(err, "Redis URL: invalid character in the host%s",
                                 bracketed ? "" : " (write an IPv6 address as [addr])");
    memcpy(addr->host, host, hlen);
    addr->host[hlen] = '\0';
    addr->port = 6379;
    if (*p == ':') {
        p++;
        long port;
        if (parse_digits(&p, 5, &port) != 0 || port < 1 || port > 65535)
            return mizan_err_set(err, "Redis URL: the port must be a number from 1 to 65535");
        addr->port = (int)port;
    }
    *pp = p;
    return 0;
}

/* The list of nodes of a redis-cluster:// URL, after the credentials. */
static int parse_cluster_nodes(const char *p, mizan_redis_url_t *out, mizan_err_t *err)
{
    for (;;) {
        if (out->nseeds == MIZAN_REDIS_MAX_SEEDS)
            return mizan_err_set(err, "Redis URL: a cluster URL lists at most %d nodes", MIZAN_REDIS_MAX_SEEDS);
        if (parse_hostport(&p, &out->seeds[out->nseeds], err) != 0)
            return -1;
        out->nseeds++;
        if (*p != ',')
            break;
        p++;
    }
    if (*p == '/') {
        p++;
        if (*p != '\0' && !(p[0] == '0' && p[1] == '\0'))
            return mizan_err_set(err, "Redis URL: a cluster has only database 0");
        p += strlen(p);
    }
    if (*p == '?')
        return mizan_err_set(err, "Redis URL: query parameters are not supported");
    if (*p != '\0')
        return mizan_err_set(err, "Redis URL: unexpected text after a cluster node (write host:port,host:port)");
    snprintf(out->host, sizeof(out->host), "%s", out->seeds[0].host);
    out->port = out->seeds[0].port;
    return 0;
}

/* The parse proper; the caller wipes out on failure. */
static int parse_url(const char *url, mizan_redis_url_t *out, mizan_err_t *err)
{
    out->port = 6379;
    if (url == NULL || url[0] == '\0')
        return mizan_err_set(err, "Redis URL is empty");
    if (strncasecmp(url, "rediss://", 9) == 0 || strncasecmp(url, "rediss-cluster://", 17) == 0)
        return mizan_err_set(err, "Redis URL: TLS (rediss://) is not supported");
    const char *p;
    if (strncasecmp(url, "redis-cluster://", 16) == 0) {
        out->cluster = true;
        p = url + 16;
    } else if (strncasecmp(url, "redis://", 8) == 0) {
        p = url + 8;
    } else {
        return mizan_err_set(err, "Redis URL must start with redis:// or redis-cluster://");
    }
    if (parse_credentials(&p, out, err) != 0)
        return -1;
    if (out->cluster)
        return parse_cluster_nodes(p, out, err);

    mizan_redis_addr_t addr;
    if (parse_hostport(&p, &addr, err) != 0)
        return -1;
    memcpy(out->host, addr.host, sizeof(out->host));
    out->port = addr.port;
    if (*p == ',')
        return mizan_err_set(err, "Redis URL: several nodes need the redis-cluster:// form");
    if (*p == '/') {
        p++;
        if (*p != '\0' && *p != '?' && *p != '#') {
            long db;
            if (parse_digits(&p, 9, &db) != 0)
                return mizan_err_set(err, "Redis URL: the database must be a number");
            out->db = (int)db;
        }
    }
    if (*p == '?')
        return mizan_err_set(err, "Redis URL: query parameters are not supported");
    if (*p != '\0')
        return mizan_err_set(err, "Redis URL: unexpected text after the host, port or database");
    return 0;
}

int mizan_redis_url_parse(const char *url, mizan_redis_url_t *out, mizan_err_t *err)
{
    memset(out, 0, sizeof(*out));
    if (parse_url(url, out, err) == 0)
        return 0;
    /* Leave no half-parsed credentials behind. */
    explicit_bzero(out, sizeof(*out));
    return -1;
}

/* ------------------------------------------------------------------------ */
/* Types                                                                    */
/* ------------------------------------------------------------------------ */

/* One invalidation, owned: the struct and its strings are one allocation. */
typedef struct qitem {
    struct qitem *next;
    bool failed;         /* set by the batch applying it when a command failed */
    int expire_s;
    const char *rev_key; /* NUL-terminated, after the struct */
    const char *channel; /* NUL-terminated, after rev_key */
    const char *event;   /* event_len bytes (plus a NUL), after channel */
    size_t event_len;
} qitem_t;

struct mizan_redis_shared {
    mizan_redis_url_t url; /* immutable after new */
    int timeout_ms;        /* immutable after new */
    int backoff_min_ms;    /* set before any connection exists */
    int backoff_max_ms;
    int failover_wait_ms;  /* cluster: how long an invalidation waits for a new master */

    pthread_mutex_t lock; /* guards qhead/qtail/qlen, inflight and conns */
    qitem_t *qhead;       /* the replay queue, oldest first */
    qitem_t *qtail;
    size_t qlen;
    size_t inflight;         /* items a connection took from the queue and is replaying */
    atomic_size_t npending;  /* qlen + inflight; written under lock, read without it */
    struct mizan_redis *conns; /* command connections, woken when the queue changes */

    atomic_int connections_up;
    atomic_llong reconnects;
    atomic_llong replayed;
    atomic_llong published;
    atomic_llong messages;
    atomic_llong repaired; /* revision keys overwritten because they held no revision */
    atomic_llong moved;    /* cluster: MOVED replies followed */
    atomic_llong asked;    /* cluster: ASK replies followed */
    atomic_llong refreshes; /* cluster: slot maps applied */
};

typedef enum conn_kind { KIND_CMD, KIND_SUB } conn_kind_t;

typedef enum conn_state { ST_WAIT, ST_SETUP, ST_READY, ST_BROKEN, ST_FREEING } conn_state_t;

typedef enum op_kind {
    OP_SETUP,       /* AUTH / SELECT / PING */
    OP_LOOKUP,      /* MGET */
    OP_STORE,       /* SET ... EX, and a fill lock's release (EVAL) */
    OP_LOCK,        /* SET lockkey token NX PX ms: a fill lock */
    OP_ITEM,        /* INCR / EXPIRE / PUBLISH of one invalidation item */
    OP_SUB,         /* SUBSCRIBE: confirmation, then every message */
    OP_SLOTS,       /* cluster: CLUSTER SLOTS for the router */
    OP_ASKING,      /* cluster: ASKING before a command redirected by ASK */
    OP_ROLE,        /* cluster: ROLE on a master the slot map lists without replicas */
    OP_DEFER_LOOKUP, /* a lookup failure waiting for the next loop turn */
    OP_DEFER_DONE,  /* an invalidation result waiting for the next loop turn */
} op_kind_t;

typedef struct batch batch_t;

/* One command awaiting its reply, or one result waiting to be delivered. */
typedef struct op {
    struct op *prev, *next; /* r->ops (awaiting reply, send order) or r->defer list */
    bool linked;            /* on one of those lists */
    bool spare;             /* one of r->spare, not heap */
    struct mizan_redis *r;
    op_kind_t kind;
    long long deadline;     /* monotonic ms by which the reply is due */
    bool last;              /* OP_SETUP: its success completes the set-up; OP_ROLE: counted in roles_pending */
    bool is_publish;        /* OP_ITEM: an acknowledged PUBLISH is counted */
    bool is_incr;           /* OP_ITEM: the INCR (an error reply triggers a repair) */
    bool is_wait;           /* OP_ITEM: WAIT for the replica (fewer acks: the item failed) */
    bool recheck;           /* OP_ITEM INCR: sent before the node's first ROLE reply, no WAIT behind it */
    unsigned redirects;     /* cluster: MOVED / ASK followed so far */
    struct cmdcopy *cmd;    /* cluster: the command, kept to resend it on MOVED / ASK */
    mizan_redis_lookup_cb lookup_cb; /* OP_LOOKUP, OP_DEFER_LOOKUP */
    mizan_redis_done_cb done_cb;     /* OP_DEFER_DONE, OP_LOCK */
    void *arg;
    int rc;                 /* OP_DEFER_DONE */
    batch_t *batch;         /* OP_ITEM */
    qitem_t *item;          /* OP_ITEM */
} op_t;

/* A set of invalidation items being applied on one connection. */
struct batch {
    struct mizan_redis *r;
    bool replay;          /* taken from the shared queue (failures go back to its front) */
    qitem_t *head, *tail; /* the items, in order */
    size_t n;
    size_t outstanding;   /* commands sent and not yet answered */
    mizan_redis_done_cb cb; /* not replay: the caller's callback */
    void *arg;
    long long give_up_at; /* cluster: until then failed items wait for a failover (monotonic ms) */
    struct batch *next_wait; /* cluster: the router's waiting batches */
};

#define NSPARE 8

struct mizan_redis {
    mizan_redis_shared_t *shared;
    struct event_base *base;
    conn_kind_t kind;
    conn_state_t state;
    redisAsyncContext *ac; /* NULL in WAIT (and once detached for teardown) */

    op_t *ops_head, *ops_tail;     /* commands awaiting a reply, oldest first */
    op_t *defer_head, *defer_tail; /* results to deliver from the next loop turn */
    op_t spare[NSPARE];            /* deferred records when malloc fails */

    struct event *timer; /* fires when the oldest command is late */
    struct event *retry; /* backoff before the next connection attempt */
    struct event *kick;  /* deferred work: teardown, deliveries, queue changes */
    int backoff_ms;      /* delay before the next attempt (before jitter) */
    unsigned fails;      /* consecutive failed attempts, for quieter logs */
    uint64_t rng;        /* jitter */

    bool kill;           /* a teardown was requested from inside a callback */
    char kill_why[160];
    bool counted_up;     /* counted in shared->connections_up */
    bool ever_ready;     /* set up at least once (a later set-up is a reconnect) */
    bool reported;       /* the last usable value given to state_cb */
    batch_t *replay;     /* the replay under way, or NULL */

    void (*state_cb)(void *arg, bool usable);
    void *state_arg;

    char *channel; /* KIND_SUB */
    void (*msg_cb)(void *arg, const char *msg, size_t len);
    void *msg_arg;

    struct mizan_redis *next_conn; /* shared->conns, under shared->lock */

    char host[256]; /* the address this connection dials */
    int port;
    int seed_next;  /* cluster subscription: the URL node to try next */

    struct mizan_redis *router; /* cluster node connection: the router it serves */
    int replicas;   /* cluster node: replicas the last slot map (or the node's ROLE) listed for it */
    int roles_out;  /* cluster node: ROLE probes not answered yet */
    bool role_known; /* cluster node: a ROLE reply arrived */
    bool owner;     /* cluster node: the last slot map gives it slots */
    struct cluster *cl; /* a cluster router: its nodes and slot map */
};

#define NSLOTS 16384
#define NO_NODE 0xFFFFu
#define MAX_NODES 64
#define MAX_REDIRECTS 5
#define REFRESH_IDLE_MS 5000 /* slot map refresh while everything is fine */
#define REFRESH_SICK_MS 250  /* ... while an owning node is down or a replay waits */


/* A command kept whole so that it can be sent again: one allocation. */
typedef struct cmdcopy {
    int argc;
    const char *argv[6];
    size_t lens[6];
} cmdcopy_t;

/* A router's view of the cluster (loop thread only). */
struct cluster {
    mizan_redis_t *nodes[MAX_NODES]; /* node connections, never removed before the router is freed */
    size_t nnodes;
    uint16_t slots[NSLOTS]; /* index in nodes of each slot's master, NO_NODE when unknown */
    bool map_ok;            /* a slot map was applied */
    bool refreshing;        /* a CLUSTER SLOTS is in flight */
    bool replay_hold;       /* a replay failed: retry after the next slot map */
    long long refresh_due;  /* monotonic ms of the scheduled refresh, 0 when none */
    batch_t *waiting;       /* invalidations held until their slots have a master again */
    size_t probe;           /* where the next refresh starts looking for a node */
    size_t prefer;          /* a node to ask first (the target of the last MOVED), or NO_NODE */
    bool prune;             /* drop the connections the new slot map does not need (from the kick) */
    size_t roles_pending;   /* ROLE probes of the first slot map not answered yet (not usable until 0) */
};

static void on_reply(redisAsyncContext *ac, void *reply, void *privdata);
static int send_op(mizan_redis_t *r, op_t *op, int argc, const char **argv, const size_t *lens);
static void conn_lost(mizan_redis_t *r, const char *why);
static void maybe_replay(mizan_redis_t *r);
static void router_node_changed(mizan_redis_t *router, mizan_redis_t *node, bool up);
static void router_refresh_in(mizan_redis_t *router, int ms);
static void router_refresh(mizan_redis_t *router);
static void router_prune(mizan_redis_t *router);
static bool router_usable(const mizan_redis_t *router);
static mizan_redis_t *route(mizan_redis_t *router, const char *key);
static void router_apply_slots(mizan_redis_t *router, mizan_redis_t *from, const redisReply *reply);
static bool try_redirect(op_t *op, const redisReply *reply);
static int send_role(mizan_redis_t *node, bool gate);
static bool role_unknown(const mizan_redis_t *node);
static int send_routed(mizan_redis_t *node, op_t *op, int argc, const char **argv, const size_t *lens);
static mizan_redis_t *conn_new(struct event_base *base, mizan_redis_shared_t *s, conn_kind_t kind);
static void conn_start(mizan_redis_t *r);

/* ------------------------------------------------------------------------ */
/* Shared state and the replay queue                                        */
/* ------------------------------------------------------------------------ */

mizan_redis_shared_t *mizan_redis_shared_new(const char *url, int command_timeout_ms, mizan_err_t *err)
{
    if (command_timeout_ms <= 0) {
        mizan_err_set(err, "Redis command timeout must be positive (got %d ms)", command_timeout_ms);
        return NULL;
    }
    mizan_redis_shared_t *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        mizan_err_set(err, "out of memory");
        return NULL;
    }
    if (mizan_redis_url_parse(url, &s->url, err) != 0) {
        free(s);
        return NULL;
    }
    if (pthread_mutex_init(&s->lock, NULL) != 0) {
        explicit_bzero(&s->url, sizeof(s->url));
        free(s);
        mizan_err_set(err, "cannot create a mutex");
        return NULL;
    }
    s->timeout_ms = command_timeout_ms;
    s->backoff_min_ms = 100;
    s->backoff_max_ms = 5000;
    s->failover_wait_ms = 10000;
    atomic_init(&s->npending, 0);
    atomic_init(&s->connections_up, 0);
    atomic_init(&s->reconnects, 0);
    atomic_init(&s->replayed, 0);
    atomic_init(&s->published, 0);
    atomic_init(&s->messages, 0);
    atomic_init(&s->repaired, 0);
    atomic_init(&s->moved, 0);
    atomic_init(&s->asked, 0);
    atomic_init(&s->refreshes, 0);
    return s;
}

void mizan_redis_shared_set_backoff(mizan_redis_shared_t *s, int min_ms, int max_ms)
{
    if (min_ms < 1)
        min_ms = 1;
    if (max_ms < min_ms)
        max_ms = min_ms;
    s->backoff_min_ms = min_ms;
    s->backoff_max_ms = max_ms;
}

void mizan_redis_shared_set_failover_wait(mizan_redis_shared_t *s, int ms)
{
    s->failover_wait_ms = ms > 0 ? ms : 0;
}

void mizan_redis_shared_free(mizan_redis_shared_t *s)
{
    if (s == NULL)
        return;
    if (s->conns != NULL)
        mizan_log(MIZAN_LOG_ERROR, "redis: shared state freed while connections still use it");
    if (s->qlen > 0)
        mizan_log(MIZAN_LOG_WARN, "redis: %zu queued invalidation(s) dropped at shutdown", s->qlen);
    for (qitem_t *it = s->qhead, *next; it != NULL; it = next) {
        next = it->next;
        free(it);
    }
    pthread_mutex_destroy(&s->lock);
    explicit_bzero(&s->url, sizeof(s->url));
    free(s);
}

void mizan_redis_shared_stats(mizan_redis_shared_t *s, mizan_redis_stats_t *out)
{
    out->connections_up = atomic_load(&s->connections_up);
    out->reconnects = atomic_load(&s->reconnects);
    out->replay_queued = atomic_load(&s->npending);
    out->replayed = atomic_load(&s->replayed);
    out->published = atomic_load(&s->published);
    out->messages = atomic_load(&s->messages);
    out->repaired = atomic_load(&s->repaired);
    out->moved = atomic_load(&s->moved);
    out->asked = atomic_load(&s->asked);
    out->refreshes = atomic_load(&s->refreshes);
}

bool mizan_redis_shared_pending(mizan_redis_shared_t *s)
{
    return atomic_load(&s->npending) > 0;
}

/* Wakes every command connection so it replays or re-evaluates. Lock held. */
static void wake_all_locked(mizan_redis_shared_t *s)
{
    for (mizan_redis_t *c = s->conns; c != NULL; c = c->next_conn)
        event_active(c->kick, EV_TIMEOUT, 1);
}

static void set_pending_locked(mizan_redis_shared_t *s)
{
    atomic_store(&s->npending, s->qlen + s->inflight);
}

/* Appends a chain of n items at the tail of the queue and wakes everyone. */
static void queue_append(mizan_redis_shared_t *s, qitem_t *head, qitem_t *tail, size_t n)
{
    if (n == 0)
        return;
    pthread_mutex_lock(&s->lock);
    if (s->qtail != NULL)
        s->qtail->next = head;
    else
        s->qhead = head;
    s->qtail = tail;
    s->qlen += n;
    set_pending_locked(s);
    wake_all_locked(s);
    pthread_mutex_unlock(&s->lock);
}

/* A copy of one invalidation item for the queue; NULL when out of memory. */
static qitem_t *qitem_new(const mizan_redis_inval_t *in, const char *channel)
{
    size_t kl = strlen(in->rev_key), cl = strlen(channel);
    size_t fixed = sizeof(qitem_t) + kl + 1 + cl + 1 + 1;
    if (in->event_len > SIZE_MAX - fixed)
        return NULL;
    char *mem = malloc(fixed + in->event_len);
    if (mem == NULL)
        return NULL;
    qitem_t *it = (qitem_t *)(void *)mem;
    char *p = mem + sizeof(qitem_t);
    memset(it, 0, sizeof(*it));
    it->expire_s = in->expire_s;
    memcpy(p, in->rev_key, kl + 1);
    it->rev_key = p;
    p += kl + 1;
    memcpy(p, channel, cl + 1);
    it->channel = p;
    p += cl + 1;
    if (in->event_len > 0)
        memcpy(p, in->event, in->event_len);
    p[in->event_len] = '\0';
    it->event = p;
    it->event_len = in->event_len;
    return it;
}

/* ------------------------------------------------------------------------ */
/* Small helpers                                                            */
/* ------------------------------------------------------------------------ */

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000LL + ts.tv_nsec / 1000000L;
}

static struct timeval ms_tv(long long ms)
{
    if (ms < 0)
        ms = 0;
    struct timeval tv = {.tv_sec = (time_t)(ms / 1000), .tv_usec = (suseconds_t)((ms % 1000) * 1000)};
    return tv;
}

static const char *kind_name(const mizan_redis_t *r)
{
    return r->kind == KIND_CMD ? "command" : "subscription";
}

/* A delay between half and all of ms. */
static int jittered(mizan_redis_t *r, int ms)
{
    r->rng ^= r->rng << 13;
    r->rng ^= r->rng >> 7;
    r->rng ^= r->rng << 17;
    int half = ms / 2;
    return half + (int)(r->rng % (uint64_t)(ms - half + 1));
}

/* Parses a whole decimal integer of len bytes. */
static int parse_ll(const char *s, size_t len, long long *out)
{
    char buf[32];
    if (len == 0 || len >= sizeof(buf))
        return -1;
    memcpy(buf, s, len);
    buf[len] = '\0';
    char *end;
    errno = 0;
    long long v = strtoll(buf, &end, 10);
    if (errno != 0 || *end != '\0' || buf[0] == ' ' || buf[0] == '+')
        return -1;
    *out = v;
    return 0;
}

/*
 * The value a revision key that holds something else is overwritten with:
 * the wall clock in microseconds. Revisions otherwise grow by one per
 * mutation from 0 (or from an earlier repair value), so the new value is
 * above every revision a stored bundle can carry and matches none of them:
 * the repair invalidates like an INCR would.
 */
static long long repair_value(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* SET key <repair value> [EX expire_s]: op is the caller's, sent on r. */
static int send_repair(mizan_redis_t *r, op_t *op, const char *key, int expire_s)
{
    char val[32], ttl[16];
    snprintf(val, sizeof(val), "%lld", repair_value());
    snprintf(ttl, sizeof(ttl), "%d", expire_s);
    const char *argv[5] = {"SET", key, val, "EX", ttl};
    size_t lens[5] = {3, strlen(key), strlen(val), 2, strlen(ttl)};
    return send_op(r, op, expire_s > 0 ? 5 : 3, argv, lens);
}

/* ------------------------------------------------------------------------ */
/* In-flight commands and the timeout timer                                 */
/* ------------------------------------------------------------------------ */

/* Arms the timer on the oldest command's deadline, or stops it. */
static void arm_timer(mizan_redis_t *r)
{
    if (r->ops_head == NULL || r->ac == NULL) {
        evtimer_del(r->timer);
        return;
    }
    struct timeval tv = ms_tv(r->ops_head->deadline - now_ms());
    evtimer_add(r->timer, &tv);
}

static void ops_link(mizan_redis_t *r, op_t *op)
{
    op->prev = r->ops_tail;
    op->next = NULL;
    if (r->ops_tail != NULL)
        r->ops_tail->next = op;
    else
        r->ops_head = op;
    r->ops_tail = op;
    op->linked = true;
    if (r->ops_head == op)
        arm_timer(r);
}

static void ops_unlink(mizan_redis_t *r, op_t *op)
{
    bool was_head = (r->ops_head == op);
    if (op->prev != NULL)
        op->prev->next = op->next;
    else
        r->ops_head = op->next;
    if (op->next != NULL)
        op->next->prev = op->prev;
    else
        r->ops_tail = op->prev;
    op->prev = op->next = NULL;
    op->linked = false;
    if (was_head)
        arm_timer(r);
}

static op_t *op_new(mizan_redis_t *r, op_kind_t kind)
{
    op_t *op = calloc(1, sizeof(*op));
    if (op != NULL) {
        op->r = r;
        op->kind = kind;
    }
    return op;
}

/*
 * Queues a command on r's context with op as its record. -1 when there is no
 * context or hiredis refuses (the context is going away); op is then unlinked
 * and still the caller's.
 */
/* Appends the RESP length line "<mark><n>\r\n" at p; returns the end. */
static char *resp_len(char *p, char mark, size_t n)
{
    char digits[20];
    int i = 0;
    do {
        digits[i++] = (char)('0' + n % 10);
        n /= 10;
    } while (n > 0);
    *p++ = mark;
    while (i > 0)
        *p++ = digits[--i];
    *p++ = '\r';
    *p++ = '\n';
    return p;
}

/*
 * Writes the command as RESP into buf (size bytes): a multi-bulk of argc
 * bulk strings, NUL-terminated. Returns its length (without the NUL), or 0
 * when it does not fit (hiredis formats it then).
 */
static size_t resp_format(char *buf, size_t size, int argc, const char **argv, const size_t *lens)
{
    size_t need = 25; /* with the NUL hiredis's command scan stops at */
    for (int i = 0; i < argc; i++)
        need += lens[i] + 26;
    if (need > size)
        return 0;
    char *p = resp_len(buf, '*', (size_t)argc);
    for (int i = 0; i < argc; i++) {
        p = resp_len(p, '$', lens[i]);
        memcpy(p, argv[i], lens[i]);
        p += lens[i];
        *p++ = '\r';
        *p++ = '\n';
    }
    *p = '\0'; /* hiredis looks for the command's name with strchr */
    return (size_t)(p - buf);
}

static int send_op(mizan_redis_t *r, op_t *op, int argc, const char **argv, const size_t *lens)
{
    if (r->ac == NULL)
        return -1;
    op->deadline = now_ms() + r->shared->timeout_ms;
    ops_link(r, op);
    /* The common commands (a lookup's MGET: three short keys) are formatted
     * here on the stack; hiredis copies the bytes into its output buffer. */
    char buf[1024];
    size_t len = resp_format(buf, sizeof(buf), argc, argv, lens);
    int rc = len > 0 ? redisAsyncFormattedCommand(r->ac, on_reply, op, buf, len)
                     : redisAsyncCommandArgv(r->ac, on_reply, op, argc, argv, lens);
    if (rc != REDIS_OK) {
        ops_unlink(r, op);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Deferred deliveries                                                      */
/* ------------------------------------------------------------------------ */

/*
 * Delivers a failure (lookup) or a result (invalidation) from the loop's next
 * turn, so that a call never calls back into its caller.
 */
static void defer_result(mizan_redis_t *r, op_kind_t kind, mizan_redis_lookup_cb lcb, mizan_redis_done_cb dcb,
                         void *arg, int rc)
{
    op_t *op = calloc(1, sizeof(*op));
    if (op == NULL) {
        for (size_t i = 0; i < NSPARE; i++) {
            if (!r->spare[i].linked) {
                op = &r->spare[i];
                memset(op, 0, sizeof(*op));
                op->spare = true;
                break;
            }
        }
    }
    if (op == NULL) {
        /* Nothing left to defer with: the one case that calls back at once. */
        mizan_log(MIZAN_LOG_ERROR, "redis: out of memory; delivering a result synchronously");
        if (kind == OP_DEFER_LOOKUP)
            lcb(arg, -1, 0, 0, NULL, 0);
        else
            dcb(arg, rc);
        return;
    }
    op->r = r;
    op->kind = kind;
    op->lookup_cb = lcb;
    op->done_cb = dcb;
    op->arg = arg;
    op->rc = rc;
    op->linked = true;
    op->next = NULL;
    if (r->defer_tail != NULL)
        r->defer_tail->next = op;
    else
        r->defer_head = op;
    r->defer_tail = op;
    event_active(r->kick, EV_TIMEOUT, 1);
}

/* Delivers what is deferred now (results deferred meanwhile wait a turn). */
static void deliver_deferred(mizan_redis_t *r)
{
    op_t *list = r->defer_head;
    r->defer_head = r->defer_tail = NULL;
    while (list != NULL) {
        op_t *op = list;
        list = op->next;
        op_kind_t kind = op->kind;
        mizan_redis_lookup_cb lcb = op->lookup_cb;
        mizan_redis_done_cb dcb = op->done_cb;
        void *arg = op->arg;
        int rc = op->rc;
        op->linked = false;
        if (!op->spare)
            free(op);
        if (kind == OP_DEFER_LOOKUP)
            lcb(arg, -1, 0, 0, NULL, 0);
        else
            dcb(arg, rc);
    }
}

/* ------------------------------------------------------------------------ */
/* Connection state                                                         */
/* ------------------------------------------------------------------------ */

bool mizan_redis_usable(const mizan_redis_t *r)
{
    if (r == NULL || r->state != ST_READY)
        return false;
    if (r->kind == KIND_SUB)
        return true;
    if (r->cl != NULL)
        return router_usable(r);
    return r->replay == NULL && atomic_load(&r->shared->npending) == 0;
}

void mizan_redis_on_state(mizan_redis_t *r, void (*cb)(void *arg, bool usable), void *arg)
{
    r->state_cb = cb;
    r->state_arg = arg;
    r->reported = mizan_redis_usable(r);
}

/* Tells state_cb when usability changed since it was last told. */
static void update_usable(mizan_redis_t *r)
{
    if (r->state == ST_FREEING)
        return;
    bool now = mizan_redis_usable(r);
    if (now == r->reported)
        return;
    r->reported = now;
    if (r->state_cb != NULL)
        r->state_cb(r->state_arg, now);
}

/*
 * Asks for the context to be torn down from the next loop turn (we may be
 * inside one of its callbacks). r stops being usable at once.
 */
static void request_kill(mizan_redis_t *r, const char *why)
{
    if (r->ac == NULL || (r->state != ST_SETUP && r->state != ST_READY))
        return;
    r->state = ST_BROKEN;
    r->kill = true;
    snprintf(r->kill_why, sizeof(r->kill_why), "%s", why);
    event_active(r->kick, EV_TIMEOUT, 1);
}

/*
 * Tears the context down now: every pending callback fails, then the
 * connection waits for its next attempt. Never from inside a hiredis callback.
 */
static void kill_now(mizan_redis_t *r, const char *why)
{
    char reason[160];
    snprintf(reason, sizeof(reason), "%s", why);
    redisAsyncContext *ac = r->ac;
    r->ac = NULL;
    if (r->state != ST_FREEING)
        r->state = ST_BROKEN;
    if (ac != NULL)
        redisAsyncFree(ac);
    conn_lost(r, reason);
}

/* The context is gone (r->ac already NULL): schedule the next attempt. */
static void conn_lost(mizan_redis_t *r, const char *why)
{
    if (r->state == ST_FREEING)
        return;
    mizan_redis_shared_t *s = r->shared;
    bool was_up = r->counted_up;
    if (r->counted_up) {
        r->counted_up = false;
        atomic_fetch_sub(&s->connections_up, 1);
    }
    r->state = ST_WAIT;
    r->kill = false;
    evtimer_del(r->timer);

    int delay = jittered(r, r->backoff_ms);
    r->backoff_ms = r->backoff_ms > s->backoff_max_ms / 2 ? s->backoff_max_ms : r->backoff_ms * 2;
    if (was_up) {
        mizan_log(MIZAN_LOG_WARN, "redis: %s connection to %s:%d lost (%s); reconnecting", kind_name(r),
                  r->host, r->port, why);
        r->fails = 1;
    } else {
        mizan_log(r->fails == 0 ? MIZAN_LOG_WARN : MIZAN_LOG_DEBUG,
                  "redis: %s connection to %s:%d failed (%s); retrying in %d ms", kind_name(r), r->host,
                  r->port, why, delay);
        r->fails++;
    }
    if (r->kind == KIND_SUB && s->url.cluster) {
        /* The node may be gone for good (a failed master): try the next one. */
        r->seed_next = (r->seed_next + 1) % s->url.nseeds;
        snprintf(r->host, sizeof(r->host), "%s", s->url.seeds[r->seed_next].host);
        r->port = s->url.seeds[r->seed_next].port;
        if (was_up)
            delay = 0;
    }
    struct timeval tv = ms_tv(delay);
    evtimer_add(r->retry, &tv);
    update_usable(r);
    if (r->router != NULL)
        router_node_changed(r->router, r, false);
}

/* The last set-up reply arrived: r is up (and replays the queue first). */
static void setup_done(mizan_redis_t *r)
{
    mizan_redis_shared_t *s = r->shared;
    r->state = ST_READY;
    r->backoff_ms = s->backoff_min_ms;
    r->fails = 0;
    if (!r->counted_up) {
        r->counted_up = true;
        atomic_fetch_add(&s->connections_up, 1);
    }
    if (r->ever_ready)
        atomic_fetch_add(&s->reconnects, 1);
    if (r->kind == KIND_SUB)
        mizan_log(MIZAN_LOG_INFO, "redis: subscription connection to %s:%d %s; subscribed to %s", r->host,
                  r->port, r->ever_ready ? "re-established" : "established", r->channel);
    else
        mizan_log(r->router != NULL && !r->ever_ready ? MIZAN_LOG_DEBUG : MIZAN_LOG_INFO,
                  "redis: command connection to %s:%d db %d %s", r->host, r->port, s->url.db,
                  r->ever_ready ? "re-established" : "established");
    r->ever_ready = true;
    /* An owner the slot map listed without replicas: ask the node itself
     * (see router_apply_slots). */
    if (r->router != NULL && r->owner && r->replicas <= 0)
        (void)send_role(r, false);
    maybe_replay(r);
    update_usable(r);
    if (r->router != NULL)
        router_node_changed(r->router, r, true);
}

/* ------------------------------------------------------------------------ */
/* Invalidation batches and replay                                          */
/* ------------------------------------------------------------------------ */

/*
 * Sends INCR / EXPIRE / PUBLISH for every item of b. A command that cannot
 * be queued marks its item failed and dooms the connection (so the rest are
 * not tried).
 */
enum { STEP_INCR, STEP_EXPIRE, STEP_WAIT, STEP_PUBLISH, NSTEPS };

/*
 * Sends one step of item it of b on c (a plain connection, or a cluster node
 * whose INCR / EXPIRE are kept for MOVED / ASK). 0, or -1 when it could not
 * be queued: the item is then failed and c doomed.
 */
static int send_item_step(mizan_redis_t *c, batch_t *b, qitem_t *it, int step)
{
    char ttl[16], wait_ms[16];
    snprintf(ttl, sizeof(ttl), "%d", it->expire_s);
    /* WAIT stays well inside the command timeout, so the commands behind it
     * on the connection are not timed out by a slow replica. */
    snprintf(wait_ms, sizeof(wait_ms), "%d", c->shared->timeout_ms / 2 > 0 ? c->shared->timeout_ms / 2 : 1);
    const char *argv[NSTEPS][3] = {
        {"INCR", it->rev_key, NULL},
        {"EXPIRE", it->rev_key, ttl},
        {"WAIT", "1", wait_ms},
        {"PUBLISH", it->channel, it->event},
    };
    size_t lens[NSTEPS][3] = {
        {4, strlen(it->rev_key), 0},
        {6, strlen(it->rev_key), strlen(ttl)},
        {4, 1, strlen(wait_ms)},
        {7, strlen(it->channel), it->event_len},
    };
    static const int argc[NSTEPS] = {2, 3, 3, 3};
    op_t *op = op_new(c, OP_ITEM);
    if (op != NULL) {
        op->batch = b;
        op->item = it;
        op->is_publish = (step == STEP_PUBLISH);
        op->is_incr = (step == STEP_INCR);
        op->is_wait = (step == STEP_WAIT);
        op->recheck = (step == STEP_INCR && c->router != NULL && c->replicas <= 0 && role_unknown(c));
    }
    bool keep = c->router != NULL && (step == STEP_INCR || step == STEP_EXPIRE);
    if (op == NULL || (keep ? send_routed(c, op, argc[step], argv[step], lens[step])
                            : send_op(c, op, argc[step], argv[step], lens[step])) != 0) {
        free(op);
        it->failed = true;
        request_kill(c, "could not queue a command");
        return -1;
    }
    b->outstanding++;
    return 0;
}

/*
 * Sends INCR / EXPIRE / (cluster: WAIT) / PUBLISH for every item of b, each
 * item on the owner of its key's slot when r is a cluster router. A command
 * that cannot be queued marks its item failed and dooms its connection (so
 * the rest are not tried there); an item whose owner is not connected is
 * failed without sending anything.
 */
static void send_items(mizan_redis_t *r, batch_t *b)
{
    for (qitem_t *it = b->head; it != NULL; it = it->next) {
        mizan_redis_t *c = r->cl != NULL ? route(r, it->rev_key) : r;
        if (c == NULL) {
            it->failed = true;
            continue;
        }
        for (int step = 0; step < NSTEPS; step++) {
            if (step == STEP_EXPIRE && it->expire_s <= 0)
                continue;
            /* A master with a replica acknowledges an increment only once
             * the replica has it: a failover cannot take it back. (While
             * its first ROLE is unanswered, the INCR's reply decides.) */
            if (step == STEP_WAIT && (c->router == NULL || c->replicas <= 0))
                continue;
            if (c->state != ST_READY) {
                it->failed = true;
                break;
            }
            if (send_item_step(c, b, it, step) != 0)
                break;
        }
    }
}

/* Every reply of b arrived: queue what failed, report, free b. */
static void batch_finish(batch_t *b)
{
    mizan_redis_t *r = b->r;
    mizan_redis_shared_t *s = r->shared;
    qitem_t *fhead = NULL, *ftail = NULL;
    size_t nfail = 0, nok = 0;
    for (qitem_t *it = b->head, *next; it != NULL; it = next) {
        next = it->next;
        it->next = NULL;
        if (it->failed) {
            it->failed = false;
            if (ftail != NULL)
                ftail->next = it;
            else
                fhead = it;
            ftail = it;
            nfail++;
        } else {
            free(it);
            nok++;
        }
    }

    if (!b->replay && nfail > 0 && r->cl != NULL && r->state != ST_FREEING && now_ms() < b->give_up_at) {
        /* A cluster node failed: hold the failed items (and the mutation's
         * answer) until a replica takes the slots over, rather than
         * acknowledge a write that another instance could not see. */
        b->head = fhead;
        b->tail = ftail;
        b->n = nfail;
        b->outstanding = 0;
        b->next_wait = r->cl->waiting;
        r->cl->waiting = b;
        router_refresh_in(r, REFRESH_SICK_MS);
        return;
    }
    if (!b->replay) {
        mizan_redis_done_cb cb = b->cb;
        void *arg = b->arg;
        free(b);
        if (nfail > 0) {
            mizan_log(MIZAN_LOG_WARN, "redis: %zu invalidation(s) not applied; queued for replay", nfail);
            queue_append(s, fhead, ftail, nfail);
        }
        cb(arg, nfail > 0 ? 1 : 0);
        return;
    }

    /* A replay: failures go back to the front, in their order. */
    pthread_mutex_lock(&s->lock);
    s->inflight -= b->n;
    if (nfail > 0) {
        ftail->next = s->qhead;
        s->qhead = fhead;
        if (s->qtail == NULL)
            s->qtail = ftail;
        s->qlen += nfail;
    }
    set_pending_locked(s);
    if (nfail > 0 || s->qlen + s->inflight == 0)
        wake_all_locked(s);
    pthread_mutex_unlock(&s->lock);

    r->replay = NULL;
    free(b);
    atomic_fetch_add(&s->replayed, (long long)nok);
    mizan_log(nfail > 0 ? MIZAN_LOG_WARN : MIZAN_LOG_INFO,
              "redis: replayed %zu queued invalidation(s)%s", nok, nfail > 0 ? "; some failed and stay queued" : "");
    if (nfail > 0 && r->cl != NULL) {
        /* An owner may be gone (failover under way): ask for the map again
         * and replay after it arrives, instead of retrying at once. */
        r->cl->replay_hold = true;
        router_refresh_in(r, REFRESH_SICK_MS);
    } else if (nfail > 0) {
        request_kill(r, "replay failed");
    }
    maybe_replay(r);
    update_usable(r);
}

/* When r is up and the queue has items, takes them all and replays them. */
static void maybe_replay(mizan_redis_t *r)
{
    if (r->kind != KIND_CMD || r->state != ST_READY || r->replay != NULL || r->router != NULL)
        return;
    /* A router replays when every owning node is up and no failed replay
     * waits for a fresher slot map. */
    if (r->cl != NULL && (r->cl->replay_hold || !r->cl->map_ok))
        return;
    mizan_redis_shared_t *s = r->shared;
    if (atomic_load(&s->npending) == 0)
        return;
    batch_t *b = calloc(1, sizeof(*b));
    if (b == NULL) {
        request_kill(r, "out of memory starting a replay");
        return;
    }
    pthread_mutex_lock(&s->lock);
    b->head = s->qhead;
    b->tail = s->qtail;
    b->n = s->qlen;
    s->qhead = s->qtail = NULL;
    s->qlen = 0;
    s->inflight += b->n;
    pthread_mutex_unlock(&s->lock);
    if (b->n == 0) {
        /* Someone else is replaying it. */
        free(b);
        return;
    }
    b->r = r;
    b->replay = true;
    r->replay = b;
    mizan_log(MIZAN_LOG_INFO, "redis: replaying %zu queued invalidation(s)", b->n);
    send_items(r, b);
    if (b->outstanding == 0)
        batch_finish(b);
}

/* ------------------------------------------------------------------------ */
/* hiredis callbacks                                                        */
/* ------------------------------------------------------------------------ */

static void finish_lookup(op_t *op, const redisReply *reply)
{
    long long revs[2] = {0, 0};
    bool bad[2] = {false, false};
    const char *value = NULL;
    size_t len = 0;
    int rc = -1;
    if (reply != NULL && reply->type == REDIS_REPLY_ARRAY && reply->elements == 3) {
        rc = 0;
        for (int i = 0; i < 2; i++) {
            const redisReply *e = reply->element[i];
            if (e->type == REDIS_REPLY_NIL)
                continue;
            if (e->type != REDIS_REPLY_STRING || parse_ll(e->str, e->len, &revs[i]) != 0) {
                bad[i] = true;
                rc = MIZAN_REDIS_LOOKUP_BAD_REV;
            }
        }
        const redisReply *v = reply->element[2];
        if (rc == 0 && v->type == REDIS_REPLY_STRING) {
            value = v->str;
            len = v->len;
        } else if (v->type != REDIS_REPLY_NIL && v->type != REDIS_REPLY_STRING) {
            rc = -1;
        }
        if (rc == MIZAN_REDIS_LOOKUP_BAD_REV)
            mizan_log(MIZAN_LOG_WARN, "redis: a revision key holds something that is not a revision; it is repaired");
    } else if (reply != NULL && reply->type == REDIS_REPLY_ERROR) {
        mizan_log(MIZAN_LOG_WARN, "redis: MGET failed: %s", reply->str);
    }
    if (rc == MIZAN_REDIS_LOOKUP_BAD_REV) {
        op->lookup_cb(op->arg, rc, bad[0], bad[1], NULL, 0);
        return;
    }
    if (rc != 0) {
        revs[0] = revs[1] = 0;
        value = NULL;
        len = 0;
    }
    op->lookup_cb(op->arg, rc, revs[0], revs[1], value, len);
}

/* A set-up command was refused: say why, without ever echoing a password. */
static void setup_refused(mizan_redis_t *r, const redisReply *reply)
{
    const char *pw = r->shared->url.password;
    const char *msg = reply->str != NULL ? reply->str : "";
    if (pw[0] != '\0' && strstr(msg, pw) != NULL)
        msg = "(server message withheld: it contains the password)";
    mizan_log(MIZAN_LOG_WARN, "redis: %s connection set-up refused by %s:%d: %s", kind_name(r), r->host, r->port,
              msg);
    request_kill(r, "set-up refused");
}

/* A reply on the subscription: its confirmation, then messages. */
static void sub_reply(mizan_redis_t *r, const redisAsyncContext *ac, op_t *op, const redisReply *reply)
{
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 3 ||
        reply->element[0]->type != REDIS_REPLY_STRING)
        return;
    const char *what = reply->element[0]->str;
    if (strcasecmp(what, "subscribe") == 0) {
        if (op->linked)
            ops_unlink(r, op);
        if (r->ac == ac && r->state == ST_SETUP)
            setup_done(r);
    } else if (strcasecmp(what, "message") == 0) {
        const redisReply *m = reply->element[2];
        if (m->type != REDIS_REPLY_STRING)
            return;
        atomic_fetch_add(&r->shared->messages, 1);
        if (r->msg_cb != NULL && r->state == ST_READY)
            r->msg_cb(r->msg_arg, m->str, m->len);
    }
}

static void on_reply(redisAsyncContext *ac, void *reply_, void *privdata)
{
    op_t *op = privdata;
    const redisReply *reply = reply_;
    mizan_redis_t *r = op->r;
    bool current = (r->ac == ac);

    if (op->kind == OP_SUB && reply != NULL) {
        sub_reply(r, ac, op, reply);
        return;
    }
    if (op->linked)
        ops_unlink(r, op);
    /* A cluster node answered MOVED or ASK: the command goes to the node
     * named, and op lives on there. */
    if (reply != NULL && reply->type == REDIS_REPLY_ERROR && op->cmd != NULL && try_redirect(op, reply))
        return;
    /* A NULL reply on our live context: hiredis is tearing it down, and
     * on_disconnect / on_connect will say so; stop being usable now. */
    if (reply == NULL && current && r->state != ST_FREEING)
        r->state = ST_BROKEN;

    switch (op->kind) {
    case OP_SETUP:
        if (reply == NULL || !current)
            break;
        if (reply->type == REDIS_REPLY_ERROR)
            setup_refused(r, reply);
        else if (op->last && r->state == ST_SETUP)
            setup_done(r);
        break;
    case OP_LOOKUP:
        finish_lookup(op, reply);
        break;
    case OP_STORE:
        if (reply != NULL && reply->type == REDIS_REPLY_ERROR)
            mizan_log(MIZAN_LOG_WARN, "redis: SET failed: %s", reply->str);
        break;
    case OP_LOCK: {
        /* OK: taken; nil: someone holds it; anything else: unknown. */
        int rc = -1;
        if (reply != NULL && reply->type == REDIS_REPLY_STATUS && strcasecmp(reply->str, "OK") == 0)
            rc = 1;
        else if (reply != NULL && reply->type == REDIS_REPLY_NIL)
            rc = 0;
        else if (reply != NULL && reply->type == REDIS_REPLY_ERROR)
            mizan_log(MIZAN_LOG_WARN, "redis: fill lock SET failed: %s", reply->str);
        op->done_cb(op->arg, rc);
        break;
    }
    case OP_ITEM: {
        batch_t *b = op->batch;
        if (reply != NULL && reply->type == REDIS_REPLY_ERROR && op->is_incr && current && r->state == ST_READY) {
            /* The revision key holds a list, a hash, text or an integer at
             * its limit: INCR can never succeed, and queueing the item would
             * keep the instance unready for good. Overwrite it with a fresh
             * revision (which invalidates just as well) in the same batch. */
            mizan_log(MIZAN_LOG_WARN, "redis: INCR of a revision key failed (%s); overwriting the key with a fresh revision",
                      reply->str);
            atomic_fetch_add(&r->shared->repaired, 1);
            op_t *fix = op_new(r, OP_ITEM);
            if (fix != NULL) {
                fix->batch = b;
                fix->item = op->item;
                if (send_repair(r, fix, op->item->rev_key, op->item->expire_s) == 0) {
                    b->outstanding++;
                    /* The event already went out, before the repair: a
                     * client refetching at once could read the old bundle,
                     * so it is published again after the repair. */
                    op_t *again = op_new(r, OP_ITEM);
                    if (again != NULL) {
                        again->batch = b;
                        again->item = op->item;
                        again->is_publish = true;
                        const char *argv[3] = {"PUBLISH", op->item->channel, op->item->event};
                        size_t lens[3] = {7, strlen(op->item->channel), op->item->event_len};
                        if (send_op(r, again, 3, argv, lens) == 0)
                            b->outstanding++;
                        else
                            free(again);
                    }
                } else {
                    free(fix);
                    op->item->failed = true;
                    request_kill(r, "could not queue a command");
                }
            } else {
                op->item->failed = true;
            }
        } else if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
            if (reply != NULL)
                mizan_log(MIZAN_LOG_WARN, "redis: invalidation command failed: %s", reply->str);
            op->item->failed = true;
        } else if (op->is_wait && (reply->type != REDIS_REPLY_INTEGER || reply->integer < 1)) {
            /* Only the master has the increment: a failover now could undo it. */
            mizan_log(MIZAN_LOG_WARN, "redis: the replica of %s:%d did not confirm an invalidation in time; "
                                      "queued for replay", r->host, r->port);
            op->item->failed = true;
            if (r->router != NULL)
                router_refresh_in(r->router, REFRESH_SICK_MS);
        } else if (op->is_publish) {
            atomic_fetch_add(&r->shared->published, 1);
        } else if (op->recheck && current && r->state == ST_READY && r->replicas > 0) {
            /* The node's ROLE (answered before this INCR) lists a replica:
             * wait for it, and publish again after it. */
            (void)send_item_step(r, b, op->item, STEP_WAIT);
            (void)send_item_step(r, b, op->item, STEP_PUBLISH);
        }
        if (--b->outstanding == 0)
            batch_finish(b);
        break;
    }
    case OP_SLOTS:
        if (r->router != NULL && r->router->state != ST_FREEING) {
            r->router->cl->refreshing = false;
            if (reply != NULL && reply->type == REDIS_REPLY_ARRAY)
                router_apply_slots(r->router, r, reply);
            else
                router_refresh_in(r->router, REFRESH_SICK_MS);
        }
        break;
    case OP_ROLE:
        r->roles_out--;
        if (reply != NULL && current && reply->type == REDIS_REPLY_ARRAY && reply->elements >= 3 &&
            reply->element[2]->type == REDIS_REPLY_ARRAY) {
            r->replicas = (int)reply->element[2]->elements;
            r->role_known = true;
        }
        if (op->last && r->router != NULL && r->router->state != ST_FREEING && r->router->cl->roles_pending > 0) {
            r->router->cl->roles_pending--;
            update_usable(r->router);
        }
        break;
    case OP_ASKING:
    case OP_SUB:
    case OP_DEFER_LOOKUP:
    case OP_DEFER_DONE:
        break;
    }
    free(op->cmd);
    free(op);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    mizan_redis_t *r = ac->data;
    if (r == NULL || r->ac != ac || status == REDIS_OK)
        return; /* success: the set-up replies decide readiness */
    char why[160];
    snprintf(why, sizeof(why), "%s", ac->c.errstr[0] != '\0' ? ac->c.errstr : "connect failed");
    r->ac = NULL; /* hiredis frees the context when this returns */
    if (r->state != ST_FREEING)
        r->state = ST_BROKEN;
    conn_lost(r, why);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    mizan_redis_t *r = ac->data;
    if (r == NULL || r->ac != ac)
        return; /* a context we detached ourselves */
    char why[160];
    snprintf(why, sizeof(why), "%s",
             status == REDIS_OK ? "closed" : ac->c.errstr[0] != '\0' ? ac->c.errstr : "connection error");
    r->ac = NULL; /* hiredis frees the context when this returns */
    if (r->state != ST_FREEING)
        r->state = ST_BROKEN;
    conn_lost(r, why);
}

/* ------------------------------------------------------------------------ */
/* Connecting                                                               */
/* ------------------------------------------------------------------------ */

/* Queues a new set-up record of kind with its command; NULL on failure. */
static op_t *send_setup_cmd(mizan_redis_t *r, op_kind_t kind, int argc, const char **argv, const size_t *lens)
{
    op_t *op = op_new(r, kind);
    if (op == NULL)
        return NULL;
    if (send_op(r, op, argc, argv, lens) != 0) {
        free(op);
        return NULL;
    }
    return op;
}

/* AUTH when there are credentials, then SELECT / PING, or SUBSCRIBE. */
static int send_setup(mizan_redis_t *r)
{
    const mizan_redis_url_t *u = &r->shared->url;
    if (u->user[0] != '\0' || u->password[0] != '\0') {
        const char *argv[3] = {"AUTH"};
        size_t lens[3] = {4};
        int argc = 1;
        if (u->user[0] != '\0') {
            argv[argc] = u->user;
            lens[argc++] = strlen(u->user);
        }
        argv[argc] = u->password;
        lens[argc++] = strlen(u->password);
        if (send_setup_cmd(r, OP_SETUP, argc, argv, lens) == NULL)
            return -1;
    }
    if (r->kind == KIND_SUB) {
        const char *argv[2] = {"SUBSCRIBE", r->channel};
        size_t lens[2] = {9, strlen(r->channel)};
        return send_setup_cmd(r, OP_SUB, 2, argv, lens) != NULL ? 0 : -1;
    }
    op_t *last;
    if (u->db != 0) {
        char db[16];
        snprintf(db, sizeof(db), "%d", u->db);
        const char *argv[2] = {"SELECT", db};
        size_t lens[2] = {6, strlen(db)};
        last = send_setup_cmd(r, OP_SETUP, 2, argv, lens);
    } else {
        const char *argv[1] = {"PING"};
        size_t lens[1] = {4};
        last = send_setup_cmd(r, OP_SETUP, 1, argv, lens);
    }
    if (last == NULL)
        return -1;
    last->last = true;
    return 0;
}

static void start_connect(mizan_redis_t *r)
{
    char why[160];
    redisAsyncContext *ac = redisAsyncConnect(r->host, r->port);
    if (ac == NULL) {
        conn_lost(r, "out of memory");
        return;
    }
    if (ac->err != 0) {
        snprintf(why, sizeof(why), "%s", ac->c.errstr);
        redisAsyncFree(ac);
        conn_lost(r, why);
        return;
    }
    if (ev_attach(ac, r->base) < 0) {
        redisAsyncFree(ac);
        conn_lost(r, "cannot attach to the event loop");
        return;
    }
    ac->data = r;
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    (void)redisEnableKeepAlive(&ac->c);
    r->ac = ac;
    r->state = ST_SETUP;
    if (send_setup(r) != 0)
        kill_now(r, "could not queue the set-up commands");
}

/* ------------------------------------------------------------------------ */
/* Events                                                                   */
/* ------------------------------------------------------------------------ */

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    mizan_redis_t *r = arg;
    if (r->cl != NULL)
        router_refresh(r); /* a router's retry timer paces its slot map refreshes */
    else if (r->state == ST_WAIT)
        start_connect(r);
}

static void on_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    mizan_redis_t *r = arg;
    if (r->ac == NULL || r->ops_head == NULL)
        return;
    if (r->ops_head->deadline > now_ms()) {
        arm_timer(r);
        return;
    }
    char why[64];
    snprintf(why, sizeof(why), "no reply within %d ms", r->shared->timeout_ms);
    kill_now(r, why);
}

static void on_kick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    mizan_redis_t *r = arg;
    if (r->kill) {
        r->kill = false;
        if (r->ac != NULL)
            kill_now(r, r->kill_why);
    }
    deliver_deferred(r);
    if (r->cl != NULL && r->cl->prune)
        router_prune(r);
    maybe_replay(r);
    update_usable(r);
}

/* ------------------------------------------------------------------------ */
/* Redis Cluster: slots, the slot map, routing and redirections             */
/* ------------------------------------------------------------------------ */

/* CRC16-CCITT (XMODEM: polynomial 0x1021, initial value 0), as Redis Cluster uses. */
static unsigned crc16(const char *buf, size_t len)
{
    unsigned crc = 0;
    for (size_t i = 0; i < len; i++) {
        crc ^= (unsigned)(unsigned char)buf[i] << 8;
        for (int b = 0; b < 8; b++)
            crc = (crc & 0x8000u) ? ((crc << 1) ^ 0x1021u) & 0xFFFFu : (crc << 1) & 0xFFFFu;
    }
    return crc;
}

unsigned mizan_redis_key_slot(const char *key, size_t len)
{
    const char *open = memchr(key, '{', len);
    if (open != NULL) {
        size_t rest = len - (size_t)(open - key) - 1;
        const char *close = memchr(open + 1, '}', rest);
        if (close != NULL && close > open + 1)
            return crc16(open + 1, (size_t)(close - open - 1)) & (NSLOTS - 1);
    }
    return crc16(key, len) & (NSLOTS - 1);
}

/* The connected owner of key's slot, or NULL (no map, no owner, owner down). */
static mizan_redis_t *route(mizan_redis_t *router, const char *key)
{
    struct cluster *cl = router->cl;
    if (!cl->map_ok)
        return NULL;
    unsigned idx = cl->slots[mizan_redis_key_slot(key, strlen(key))];
    if (idx == NO_NODE)
        return NULL;
    mizan_redis_t *node = cl->nodes[idx];
    return node->state == ST_READY ? node : NULL;
}

/* send_op, keeping a copy of the command on op to resend it after MOVED / ASK. */
static int send_routed(mizan_redis_t *node, op_t *op, int argc, const char **argv, const size_t *lens)
{
    size_t total = sizeof(cmdcopy_t);
    for (int i = 0; i < argc; i++) {
        if (lens[i] > SIZE_MAX - total - 1)
            return -1;
        total += lens[i] + 1;
    }
    cmdcopy_t *c = malloc(total);
    if (c == NULL)
        return -1;
    char *p = (char *)(c + 1);
    c->argc = argc;
    for (int i = 0; i < argc; i++) {
        memcpy(p, argv[i], lens[i]);
        p[lens[i]] = '\0';
        c->argv[i] = p;
        c->lens[i] = lens[i];
        p += lens[i] + 1;
    }
    op->cmd = c;
    if (send_op(node, op, argc, argv, lens) != 0) {
        op->cmd = NULL;
        free(c);
        return -1;
    }
    return 0;
}

/* The router's connection to host:port, made (and started) when new; NULL at the limit. */
static mizan_redis_t *node_get(mizan_redis_t *router, const char *host, int port, size_t *idx_out)
{
    struct cluster *cl = router->cl;
    for (size_t i = 0; i < cl->nnodes; i++) {
        if (cl->nodes[i]->port == port && strcmp(cl->nodes[i]->host, host) == 0) {
            *idx_out = i;
            return cl->nodes[i];
        }
    }
    if (cl->nnodes == MAX_NODES || strlen(host) >= sizeof(router->host)) {
        mizan_log(MIZAN_LOG_WARN, "redis: cluster node %s:%d ignored (more than %d nodes, or a bad address)", host,
                  port, MAX_NODES);
        return NULL;
    }
    mizan_redis_t *node = conn_new(router->base, router->shared, KIND_CMD);
    if (node == NULL)
        return NULL;
    snprintf(node->host, sizeof(node->host), "%s", host);
    node->port = port;
    node->router = router;
    *idx_out = cl->nnodes;
    cl->nodes[cl->nnodes++] = node;
    conn_start(node);
    return node;
}

/* Whether every node the map gives slots to is connected and set up. */
static bool owners_up(const mizan_redis_t *router)
{
    const struct cluster *cl = router->cl;
    if (!cl->map_ok)
        return false;
    for (size_t i = 0; i < cl->nnodes; i++)
        if (cl->nodes[i]->owner && cl->nodes[i]->state != ST_READY)
            return false;
    return true;
}

/*
 * A router is usable once it has a slot map and nothing is queued: a node
 * that is down only makes the lookups of its own slots fail (computed,
 * BYPASS) while its replica takes over, and the mutations whose
 * invalidations land there wait for it, so no instance has anything queued
 * and /readyz stays 200 through a failover.
 */
static bool router_usable(const mizan_redis_t *router)
{
    return router->state == ST_READY && router->cl->map_ok && router->cl->roles_pending == 0 &&
           router->replay == NULL && atomic_load(&router->shared->npending) == 0;
}

/*
 * Sends the held invalidations again when every owner is up; gives up on
 * those past their time (queued for replay, reported with rc 1), and on all
 * of them when give_up is set (the router is being freed).
 */
static void router_retry_waiting(mizan_redis_t *router, bool give_up)
{
    batch_t *list = router->cl->waiting;
    router->cl->waiting = NULL;
    long long now = now_ms();
    bool up = !give_up && owners_up(router);
    while (list != NULL) {
        batch_t *b = list;
        list = b->next_wait;
        b->next_wait = NULL;
        if (give_up || now >= b->give_up_at) {
            b->give_up_at = 0;
            for (qitem_t *it = b->head; it != NULL; it = it->next)
                it->failed = true;
            batch_finish(b);
        } else if (up) {
            send_items(router, b);
            if (b->outstanding == 0)
                batch_finish(b);
        } else {
            b->next_wait = router->cl->waiting;
            router->cl->waiting = b;
        }
    }
}

/* Schedules a slot map refresh within ms (an earlier one already due stays). */
static void router_refresh_in(mizan_redis_t *router, int ms)
{
    struct cluster *cl = router->cl;
    if (router->state == ST_FREEING)
        return;
    long long due = now_ms() + ms;
    if (cl->refresh_due != 0 && cl->refresh_due <= due)
        return;
    cl->refresh_due = due;
    struct timeval tv = ms_tv(ms);
    evtimer_add(router->retry, &tv);
}

/* Sends CLUSTER SLOTS to a connected node (in turn), or retries soon when none is. */
static void router_refresh(mizan_redis_t *router)
{
    struct cluster *cl = router->cl;
    cl->refresh_due = 0;
    if (router->state == ST_FREEING)
        return;
    router_retry_waiting(router, false);
    if (cl->waiting != NULL)
        router_refresh_in(router, REFRESH_SICK_MS);
    if (cl->refreshing)
        return;
    /* The target of a MOVED knows its new slot first: gossip may not have
     * reached the others yet. */
    if (cl->prefer != NO_NODE && cl->prefer < cl->nnodes && cl->nodes[cl->prefer]->state == ST_READY) {
        mizan_redis_t *node = cl->nodes[cl->prefer];
        op_t *op = op_new(node, OP_SLOTS);
        const char *argv[2] = {"CLUSTER", "SLOTS"};
        size_t lens[2] = {7, 5};
        cl->prefer = NO_NODE;
        if (op != NULL && send_op(node, op, 2, argv, lens) == 0) {
            cl->refreshing = true;
            return;
        }
        free(op);
    }
    for (size_t k = 0; k < cl->nnodes; k++) {
        mizan_redis_t *node = cl->nodes[(cl->probe + k) % cl->nnodes];
        if (node->state != ST_READY)
            continue;
        cl->probe = (cl->probe + k + 1) % cl->nnodes;
        op_t *op = op_new(node, OP_SLOTS);
        const char *argv[2] = {"CLUSTER", "SLOTS"};
        size_t lens[2] = {7, 5};
        if (op != NULL && send_op(node, op, 2, argv, lens) == 0) {
            cl->refreshing = true;
            return;
        }
        free(op);
    }
    /* Nothing connected: the URL's nodes again (connections to them may
     * have been dropped as unneeded). */
    for (int i = 0; i < router->shared->url.nseeds; i++) {
        size_t idx;
        (void)node_get(router, router->shared->url.seeds[i].host, router->shared->url.seeds[i].port, &idx);
    }
    router_refresh_in(router, REFRESH_SICK_MS);
}

/*
 * Frees the connections to nodes that own no slot and have nothing in
 * flight (replicas, the URL's nodes once the map is known, a failed master
 * after the failover), so that there is one connection per master per loop
 * and the node table does not fill up as nodes come and go. Runs from the
 * router's kick, never inside a hiredis callback.
 */
static void router_prune(mizan_redis_t *router)
{
    struct cluster *cl = router->cl;
    cl->prune = false;
    if (router->state == ST_FREEING || !cl->map_ok)
        return;
    uint16_t remap[MAX_NODES];
    size_t kept = 0;
    for (size_t i = 0; i < cl->nnodes; i++) {
        mizan_redis_t *node = cl->nodes[i];
        if (node->owner || node->ops_head != NULL || i == cl->prefer) {
            remap[i] = (uint16_t)kept;
            cl->nodes[kept++] = node;
        } else {
            remap[i] = NO_NODE;
            mizan_redis_free(node);
        }
    }
    if (kept == cl->nnodes)
        return;
    for (size_t sl = 0; sl < NSLOTS; sl++)
        if (cl->slots[sl] != NO_NODE)
            cl->slots[sl] = remap[cl->slots[sl]];
    cl->prefer = cl->prefer != NO_NODE && cl->prefer < cl->nnodes ? remap[cl->prefer] : NO_NODE;
    cl->nnodes = kept;
    cl->probe = 0;
}

/* A node connection came up or went down. */
static void router_node_changed(mizan_redis_t *router, mizan_redis_t *node, bool up)
{
    if (router->state == ST_FREEING)
        return;
    if (up) {
        if (!router->cl->map_ok || router->cl->refresh_due == 0)
            router_refresh_in(router, router->cl->map_ok ? REFRESH_IDLE_MS : 0);
        router_retry_waiting(router, false);
        maybe_replay(router);
    } else if (node->owner || !router->cl->map_ok) {
        /* Its slots may have moved to a promoted replica. */
        router_refresh_in(router, REFRESH_SICK_MS);
    }
    update_usable(router);
}

/* A string element of a CLUSTER SLOTS node entry, or NULL. */
static const char *elem_str(const redisReply *e)
{
    return e != NULL && (e->type == REDIS_REPLY_STRING || e->type == REDIS_REPLY_STATUS) ? e->str : NULL;
}

/* A node whose first ROLE probe is still out: whether it has replicas is unknown. */
static bool role_unknown(const mizan_redis_t *node)
{
    return node->roles_out > 0 && !node->role_known;
}

/*
 * Sends ROLE to an owning node (its reply sets node->replicas); gate counts
 * it in the router's roles_pending. 0, or -1 when it could not be sent.
 */
static int send_role(mizan_redis_t *node, bool gate)
{
    if (node->state != ST_READY)
        return -1;
    op_t *op = op_new(node, OP_ROLE);
    const char *argv[1] = {"ROLE"};
    size_t lens[1] = {4};
    if (op == NULL)
        return -1;
    op->last = gate;
    if (send_op(node, op, 1, argv, lens) != 0) {
        free(op);
        return -1;
    }
    node->roles_out++;
    if (gate)
        node->router->cl->roles_pending++;
    return 0;
}

/*
 * Applies a CLUSTER SLOTS reply: [[start, end, [host, port, id...],
 * [replica...]...]...]. An empty host means the node that answered. The
 * map is replaced whole; connections to new masters are made at once.
 */
static void router_apply_slots(mizan_redis_t *router, mizan_redis_t *from, const redisReply *reply)
{
    struct cluster *cl = router->cl;
    uint16_t *slots = malloc(sizeof(cl->slots));
    if (slots == NULL) {
        router_refresh_in(router, REFRESH_SICK_MS);
        return;
    }
    for (size_t i = 0; i < NSLOTS; i++)
        slots[i] = NO_NODE;
    bool owner[MAX_NODES] = {false};
    int replicas[MAX_NODES] = {0};
    size_t covered = 0;
    for (size_t i = 0; i < reply->elements; i++) {
        const redisReply *e = reply->element[i];
        if (e->type != REDIS_REPLY_ARRAY || e->elements < 3 || e->element[0]->type != REDIS_REPLY_INTEGER ||
            e->element[1]->type != REDIS_REPLY_INTEGER || e->element[2]->type != REDIS_REPLY_ARRAY ||
            e->element[2]->elements < 2 || e->element[2]->element[1]->type != REDIS_REPLY_INTEGER)
            continue;
        long long lo = e->element[0]->integer, hi = e->element[1]->integer;
        const char *host = elem_str(e->element[2]->element[0]);
        long long port = e->element[2]->element[1]->integer;
        if (lo < 0 || hi >= NSLOTS || lo > hi || host == NULL || strcmp(host, "?") == 0 || port < 1 || port > 65535)
            continue;
        if (host[0] == '\0')
            host = from->host;
        size_t idx;
        if (node_get(router, host, (int)port, &idx) == NULL)
            continue;
        owner[idx] = true;
        replicas[idx] = (int)e->elements - 3;
        for (long long sl = lo; sl <= hi; sl++)
            slots[sl] = (uint16_t)idx;
        covered += (size_t)(hi - lo + 1);
    }
    memcpy(cl->slots, slots, sizeof(cl->slots));
    free(slots);
    bool first = !cl->map_ok;
    for (size_t i = 0; i < cl->nnodes; i++) {
        cl->nodes[i]->owner = owner[i];
        /* CLUSTER SLOTS leaves out a replica until gossip has carried its
         * replication offset (for a moment after it attached): the master's
         * own ROLE says which replicas it has. */
        if (owner[i] && replicas[i] == 0 && send_role(cl->nodes[i], first) == 0)
            continue;
        cl->nodes[i]->replicas = replicas[i];
    }
    if (!cl->map_ok)
        mizan_log(MIZAN_LOG_INFO, "redis: cluster slot map from %s:%d: %zu of %d slots covered, %zu node(s)",
                  from->host, from->port, covered, NSLOTS, cl->nnodes);
    cl->map_ok = true;
    cl->replay_hold = false;
    router->state = ST_READY;
    atomic_fetch_add(&router->shared->refreshes, 1);
    router_refresh_in(router, owners_up(router) && covered == NSLOTS ? REFRESH_IDLE_MS : REFRESH_SICK_MS);
    router_retry_waiting(router, false);
    maybe_replay(router);
    update_usable(router);
    if (owners_up(router)) {
        cl->prune = true;
        event_active(router->kick, EV_TIMEOUT, 1);
    }
}

/* Parses "MOVED <slot> <host>:<port>" / "ASK ..."; 1 moved, 2 ask, 0 neither. */
static int parse_redirect(const char *msg, unsigned *slot, char *host, size_t hostcap, int *port)
{
    int kind;
    if (strncmp(msg, "MOVED ", 6) == 0) {
        kind = 1;
        msg += 6;
    } else if (strncmp(msg, "ASK ", 4) == 0) {
        kind = 2;
        msg += 4;
    } else {
        return 0;
    }
    char *end;
    errno = 0;
    unsigned long sl = strtoul(msg, &end, 10);
    if (errno != 0 || end == msg || *end != ' ' || sl >= NSLOTS)
        return 0;
    const char *addr = end + 1;
    const char *colon = strrchr(addr, ':');
    if (colon == NULL || (size_t)(colon - addr) >= hostcap)
        return 0;
    long p = strtol(colon + 1, &end, 10);
    if (*end != '\0' || p < 1 || p > 65535)
        return 0;
    memcpy(host, addr, (size_t)(colon - addr));
    host[colon - addr] = '\0';
    *slot = (unsigned)sl;
    *port = (int)p;
    return kind;
}

/*
 * A node answered op's command with MOVED or ASK: sends it again to the node
 * named (after ASKING for ASK; a MOVED also updates the map and asks for a
 * fresh one). true when op was sent (it now belongs to that node); false
 * when the error stands (op is still the caller's).
 */
static bool try_redirect(op_t *op, const redisReply *reply)
{
    mizan_redis_t *from = op->r;
    mizan_redis_t *router = from->router;
    if (router == NULL || router->state == ST_FREEING || from->state == ST_FREEING || reply->str == NULL)
        return false;
    unsigned slot;
    int port;
    char host[256];
    int kind = parse_redirect(reply->str, &slot, host, sizeof(host), &port);
    if (kind == 0 || op->redirects >= MAX_REDIRECTS)
        return false;
    size_t idx;
    mizan_redis_t *to = node_get(router, host, port, &idx);
    if (kind == 1) {
        atomic_fetch_add(&router->shared->moved, 1);
        if (to != NULL) {
            router->cl->slots[slot] = (uint16_t)idx;
            router->cl->prefer = idx;
            to->owner = true;
        }
        router_refresh_in(router, 0);
    } else {
        atomic_fetch_add(&router->shared->asked, 1);
    }
    if (to == NULL || to->state != ST_READY)
        return false;
    if (kind == 2) {
        op_t *asking = op_new(to, OP_ASKING);
        const char *argv[1] = {"ASKING"};
        size_t lens[1] = {6};
        if (asking == NULL || send_op(to, asking, 1, argv, lens) != 0) {
            free(asking);
            return false;
        }
    }
    op->r = to;
    op->redirects++;
    if (send_op(to, op, op->cmd->argc, op->cmd->argv, op->cmd->lens) != 0) {
        op->r = from;
        return false;
    }
    if (op->kind == OP_ITEM && op->is_incr) {
        /* The increment now lands on another node: wait for that node's
         * replica, and publish again after it (the first event went out
         * before the increment was applied). */
        if (to->replicas > 0)
            (void)send_item_step(to, op->batch, op->item, STEP_WAIT);
        (void)send_item_step(to, op->batch, op->item, STEP_PUBLISH);
    }
    return true;
}

/* A router on base: seed connections now, the slot map as soon as one is up. */
static mizan_redis_t *router_new(struct event_base *base, mizan_redis_shared_t *s)
{
    mizan_redis_t *r = conn_new(base, s, KIND_CMD);
    if (r == NULL)
        return NULL;
    r->cl = calloc(1, sizeof(*r->cl));
    if (r->cl == NULL) {
        event_free(r->timer);
        event_free(r->retry);
        event_free(r->kick);
        free(r);
        return NULL;
    }
    for (size_t i = 0; i < NSLOTS; i++)
        r->cl->slots[i] = NO_NODE;
    r->cl->prefer = NO_NODE;
    for (int i = 0; i < s->url.nseeds; i++) {
        size_t idx;
        (void)node_get(r, s->url.seeds[i].host, s->url.seeds[i].port, &idx);
    }
    return r;
}

/* ------------------------------------------------------------------------ */
/* Public interface                                                         */
/* ------------------------------------------------------------------------ */

static mizan_redis_t *conn_new(struct event_base *base, mizan_redis_shared_t *s, conn_kind_t kind)
{
    mizan_redis_t *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return NULL;
    r->shared = s;
    r->base = base;
    r->kind = kind;
    r->state = ST_WAIT;
    r->backoff_ms = s->backoff_min_ms;
    snprintf(r->host, sizeof(r->host), "%s", s->url.host);
    r->port = s->url.port;
    r->rng = ((uint64_t)(uintptr_t)r ^ (uint64_t)now_ms() * 0x9e3779b97f4a7c15ULL) | 1u;
    r->timer = evtimer_new(base, on_timeout, r);
    r->retry = evtimer_new(base, on_retry, r);
    r->kick = event_new(base, -1, 0, on_kick, r);
    if (r->timer == NULL || r->retry == NULL || r->kick == NULL) {
        if (r->timer != NULL)
            event_free(r->timer);
        if (r->retry != NULL)
            event_free(r->retry);
        if (r->kick != NULL)
            event_free(r->kick);
        free(r);
        return NULL;
    }
    return r;
}

/* Makes the first attempt from the loop's next turn. */
static void conn_start(mizan_redis_t *r)
{
    struct timeval zero = {0, 0};
    evtimer_add(r->retry, &zero);
}

mizan_redis_t *mizan_redis_new(struct event_base *base, mizan_redis_shared_t *shared)
{
    mizan_redis_t *r = shared->url.cluster ? router_new(base, shared) : conn_new(base, shared, KIND_CMD);
    if (r == NULL)
        return NULL;
    pthread_mutex_lock(&shared->lock);
    r->next_conn = shared->conns;
    shared->conns = r;
    pthread_mutex_unlock(&shared->lock);
    if (r->cl == NULL)
        conn_start(r);
    return r;
}

mizan_redis_t *mizan_redis_subscribe(struct event_base *base, mizan_redis_shared_t *shared,
                                     const char *channel,
                                     void (*cb)(void *arg, const char *msg, size_t len), void *arg)
{
    mizan_redis_t *r = conn_new(base, shared, KIND_SUB);
    if (r == NULL)
        return NULL;
    r->channel = strdup(channel);
    if (r->channel == NULL) {
        event_free(r->timer);
        event_free(r->retry);
        event_free(r->kick);
        free(r);
        return NULL;
    }
    r->msg_cb = cb;
    r->msg_arg = arg;
    conn_start(r);
    return r;
}

void mizan_redis_free(mizan_redis_t *r)
{
    if (r == NULL)
        return;
    mizan_redis_shared_t *s = r->shared;
    if (r->kind == KIND_CMD) {
        pthread_mutex_lock(&s->lock);
        for (mizan_redis_t **pp = &s->conns; *pp != NULL; pp = &(*pp)->next_conn) {
            if (*pp == r) {
                *pp = r->next_conn;
                break;
            }
        }
        pthread_mutex_unlock(&s->lock);
    }
    r->state = ST_FREEING;
    if (r->ac != NULL) {
        redisAsyncContext *ac = r->ac;
        r->ac = NULL;
        redisAsyncFree(ac); /* every pending callback fails here */
    }
    if (r->cl != NULL) {
        /* Held invalidations are queued and reported; the nodes' pending
         * callbacks fail here; batches spanning nodes finish with the last
         * of them (past their wait: they are queued, not held). */
        router_retry_waiting(r, true);
        for (size_t i = 0; i < r->cl->nnodes; i++)
            mizan_redis_free(r->cl->nodes[i]);
        free(r->cl);
        r->cl = NULL;
    }
    while (r->defer_head != NULL)
        deliver_deferred(r);
    if (r->counted_up)
        atomic_fetch_sub(&s->connections_up, 1);
    event_free(r->timer);
    event_free(r->retry);
    event_free(r->kick);
    free(r->channel);
    free(r);
}

void mizan_redis_lookup(mizan_redis_t *r, const char *k1, const char *k2, const char *k3,
                        mizan_redis_lookup_cb cb, void *arg)
{
    /* A cluster lookup goes to the owner of the {C} slot all three keys share. */
    mizan_redis_t *c = r->cl != NULL ? route(r, k1) : r;
    if (r->kind == KIND_CMD && mizan_redis_usable(r) && c != NULL) {
        op_t *op = op_new(c, OP_LOOKUP);
        if (op != NULL) {
            op->lookup_cb = cb;
            op->arg = arg;
            const char *argv[4] = {"MGET", k1, k2, k3};
            size_t lens[4] = {4, strlen(k1), strlen(k2), strlen(k3)};
            if ((c != r ? send_routed(c, op, 4, argv, lens) : send_op(c, op, 4, argv, lens)) == 0)
                return;
            free(op);
            request_kill(c, "could not queue a command");
        }
    }
    defer_result(r, OP_DEFER_LOOKUP, cb, NULL, arg, -1);
}

void mizan_redis_repair_rev(mizan_redis_t *r, const char *key, int expire_s)
{
    if (r->cl != NULL && (r = route(r, key)) == NULL)
        return;
    if (r->kind != KIND_CMD || r->state != ST_READY)
        return;
    op_t *op = op_new(r, OP_STORE);
    if (op == NULL)
        return;
    atomic_fetch_add(&r->shared->repaired, 1);
    if (send_repair(r, op, key, expire_s) != 0)
        free(op);
}

void mizan_redis_store(mizan_redis_t *r, const char *key, const char *value, size_t len, int ttl_s)
{
    if (ttl_s <= 0 || r->kind != KIND_CMD || !mizan_redis_usable(r))
        return;
    mizan_redis_t *c = r->cl != NULL ? route(r, key) : r;
    if (c == NULL)
        return;
    op_t *op = op_new(c, OP_STORE);
    if (op == NULL)
        return;
    char ttl[16];
    snprintf(ttl, sizeof(ttl), "%d", ttl_s);
    const char *argv[5] = {"SET", key, value, "EX", ttl};
    size_t lens[5] = {3, strlen(key), len, 2, strlen(ttl)};
    if ((c != r ? send_routed(c, op, 5, argv, lens) : send_op(c, op, 5, argv, lens)) != 0)
        free(op);
}

void mizan_redis_lock(mizan_redis_t *r, const char *key, const char *token, int ttl_ms, mizan_redis_done_cb cb,
                      void *arg)
{
    mizan_redis_t *c = r->cl != NULL ? route(r, key) : r;
    if (r->kind == KIND_CMD && mizan_redis_usable(r) && c != NULL && ttl_ms > 0) {
        op_t *op = op_new(c, OP_LOCK);
        if (op != NULL) {
            op->done_cb = cb;
            op->arg = arg;
            char ms[16];
            snprintf(ms, sizeof(ms), "%d", ttl_ms);
            const char *argv[6] = {"SET", key, token, "NX", "PX", ms};
            size_t lens[6] = {3, strlen(key), strlen(token), 2, 2, strlen(ms)};
            if ((c != r ? send_routed(c, op, 6, argv, lens) : send_op(c, op, 6, argv, lens)) == 0)
                return;
            free(op);
            request_kill(c, "could not queue a command");
        }
    }
    defer_result(r, OP_DEFER_DONE, NULL, cb, arg, -1);
}

/* Deletes KEYS[1] only while it still holds ARGV[1]: a lock that expired and
 * was taken by another instance is left to its new holder. EXPIRE 0 deletes
 * it: the ACL of deploy/redis/redis-cache.conf (which applies inside
 * scripts) allows EXPIRE and withholds DEL. */
static const char unlock_script[] =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('EXPIRE', KEYS[1], 0) else return 0 end";

void mizan_redis_unlock(mizan_redis_t *r, const char *key, const char *token)
{
    if (r->kind != KIND_CMD || !mizan_redis_usable(r))
        return;
    mizan_redis_t *c = r->cl != NULL ? route(r, key) : r;
    if (c == NULL)
        return;
    op_t *op = op_new(c, OP_STORE);
    if (op == NULL)
        return;
    const char *argv[5] = {"EVAL", unlock_script, "1", key, token};
    size_t lens[5] = {4, sizeof(unlock_script) - 1, 1, strlen(key), strlen(token)};
    if ((c != r ? send_routed(c, op, 5, argv, lens) : send_op(c, op, 5, argv, lens)) != 0)
        free(op);
}

void mizan_redis_invalidate(mizan_redis_t *r, const mizan_redis_inval_t *items, size_t n,
                            const char *channel, mizan_redis_done_cb cb, void *arg)
{
    qitem_t *head = NULL, *tail = NULL;
    for (size_t i = 0; i < n; i++) {
        qitem_t *it = qitem_new(&items[i], channel);
        if (it == NULL) {
            for (qitem_t *q = head, *next; q != NULL; q = next) {
                next = q->next;
                free(q);
            }
            mizan_log(MIZAN_LOG_ERROR, "redis: out of memory copying %zu invalidation(s); none applied", n);
            defer_result(r, OP_DEFER_DONE, NULL, cb, arg, -1);
            return;
        }
        if (tail != NULL)
            tail->next = it;
        else
            head = it;
        tail = it;
    }
    if (n == 0) {
        defer_result(r, OP_DEFER_DONE, NULL, cb, arg, 0);
        return;
    }
    if (r->kind == KIND_CMD && r->state == ST_READY) {
        batch_t *b = calloc(1, sizeof(*b));
        if (b != NULL) {
            b->r = r;
            b->head = head;
            b->tail = tail;
            b->n = n;
            b->cb = cb;
            b->arg = arg;
            if (r->cl != NULL)
                b->give_up_at = now_ms() + r->shared->failover_wait_ms;
            send_items(r, b);
            if (b->outstanding > 0)
                return; /* batch_finish reports after the last reply */
            if (r->cl != NULL) {
                /* Nothing could be sent: wait for the owners (never reports from here). */
                b->next_wait = r->cl->waiting;
                r->cl->waiting = b;
                router_refresh_in(r, REFRESH_SICK_MS);
                return;
            }
            free(b);
            for (qitem_t *q = head; q != NULL; q = q->next)
                q->failed = false;
        }
    }
    queue_append(r->shared, head, tail, n);
    defer_result(r, OP_DEFER_DONE, NULL, cb, arg, 1);
}
