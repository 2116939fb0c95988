/*
 * cache.c - bundles, revisions, coalescing and invalidation (see cache.h).
 *
 * DESIGN (threads): lookups, stores and invalidations run on the I/O loop
 * that asks. The embedded store (memcache.c) is thread-safe
 * and answers synchronously; Redis answers asynchronously on the same loop
 * (redis.c, one connection per loop). Coalescing is instance-wide: the
 * flight table is guarded by `lock`; a flight's leader answers waiters on
 * other loops by posting them the shared result through that loop's poster.
 *
 * Stale-while-revalidate: a context with stale_s stores its values for
 * ttl + stale_s with the freshness deadline (unix ms) inside the
 * authenticated doc, so a lookup tells fresh (HIT) from stale (STALE) by
 * itself; only a value whose revisions are current may be stale, so a
 * mutation still makes it a miss. The recomputation is a flight of its own
 * ("stale#" key): the first stale lookup leads it (with Redis, once it won
 * the fill lock), the others only serve the stale text.
 *
 * Fill locks (Redis, cache.fill_lock): a flight's leader takes
 * SET <prefix>lock:{C}:<bundle hex>:<revs> token NX PX ttl before it
 * computes (reading the bundle once more after winning it, in case a holder
 * stored it just before), and releases it (compare-and-delete) after
 * storing. A leader
 * that finds it held polls: one MGET every POLL_MS, serving the bundle once
 * it is stored with the revisions it read, taking the lock once it lapses
 * (the holder died), and computing anyway once two lock TTLs (plus a
 * margin) have passed. A lock that cannot be taken (Redis down) means
 * computing, as before.
 */
#include "cache.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include <event2/event.h>

#include "cachekey.h"
#include "log.h"
#include "memcache.h"
#include "redis.h"

/** Largest embedded-store read buffer a loop keeps between lookups. */
#define VALUE_BUFFER_KEEP (256 * 1024)

/* A computed bundle shared by a flight's leader and waiters. */
typedef struct shared_body {
    atomic_int refs;
    char *text;        /* the response body */
    size_t len;
    const char *cache; /* X-Mizan-Cache to answer with */
} shared_body_t;

typedef struct waiter {
    mizan_cache_loop_t *cl;   /* the waiter's loop */
    mizan_lookup_t *lk;       /* the waiter's lookup */
    struct waiter *next;
} waiter_t;

/* One computation in progress; lives in the flight table until it lands. */
typedef struct flight {
    char *key;            /* bundle key + "#" + revisions read */
    waiter_t *waiters;    /* guarded by cache->lock */
    struct flight *next;
} flight_t;

/* Per-exchange cache state. Loop-thread only. */
struct mizan_lookup {
    mizan_cache_t *cache;
    mizan_cache_loop_t *cl;
    const mizan_context_t *ctx;
    const char *rid;      /* the request's id, for logs (the caller's; outlives the lookup) */
    mizan_cache_answer_t answer;
    void *arg;
    char *bundle_key, *ctx_rev_key, *scoped_rev_key; /* in the lookup's own block, after it */
    long long rev[2];     /* revisions read before computing */
    bool have_revs;       /* rev is valid (a store may follow) */
    flight_t *leads;      /* the flight this exchange leads */
    bool waiting;         /* parked on another exchange's flight */
    char *stale_text;     /* STALE: the expired bundle, kept while the fill lock is asked */
    size_t stale_len;
    char *lock_key;       /* fill lock: its key, while asked for or held */
    char lock_token[48];
    bool locked;          /* holds the fill lock (released after the store) */
    bool lock_waited;     /* found the lock held: polling for the holder's bundle */
    long long wait_until; /* monotonic ms: stop polling and compute */
    bool refused;         /* a stored value was refused (counted and logged once per lookup) */
    struct event *poll;   /* the polling timer */
};

struct mizan_cache {
    const mizan_config_t *cfg;
    const mizan_registry_t *reg;
    const mizan_bus_t *bus;       /* where events go */
    mizan_cachekey_t keys;
    mizan_memcache_t *mem;        /* embedded store, or NULL with Redis */
    mizan_redis_shared_t *shared; /* Redis, or NULL */
    char channel[96];             /* prefix "events" */
    pthread_mutex_t lock;         /* guards flights */
    flight_t *flights;
    atomic_llong hits, misses, bypasses, coalesced, invalidations, received;
    atomic_llong rejected; /* stored values whose mac did not verify */
    atomic_llong stale, lock_won, lock_waited, lock_served, lock_expired;
    atomic_llong lock_seq;         /* fill lock tokens: seed "-" sequence */
    char lock_seed[33];
    bool sub_was_down; /* the subscription dropped since it was last up (loop 0 only) */
};

static void body_unref(shared_body_t *b)
{
    if (b != NULL && atomic_fetch_sub(&b->refs, 1) == 1) {
        free(b->text);
        free(b);
    }
}

/* ---- set-up ------------------------------------------------------------ */

static void on_event_message(void *arg, const char *msg, size_t len);
static char *event_text(const mizan_cache_t *c, const json_t *target);

mizan_cache_t *mizan_cache_new(const mizan_config_t *cfg, const mizan_registry_t *reg, const mizan_bus_t *bus,
                               mizan_err_t *err)
{
    mizan_cache_t *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        mizan_err_set(err, "out of memory");
        return NULL;
    }
    c->cfg = cfg;
    c->reg = reg;
    c->bus = bus;
    pthread_mutex_init(&c->lock, NULL);
    unsigned char seed[16] = {0};
    if (getrandom(seed, sizeof(seed), 0) != (ssize_t)sizeof(seed)) {
        /* Tokens only need to differ between instances. */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        memcpy(seed, &ts, sizeof(ts) < sizeof(seed) ? sizeof(ts) : sizeof(seed));
    }
    for (size_t i = 0; i < sizeof(seed); i++)
        snprintf(c->lock_seed + 2 * i, 3, "%02x", seed[i]);
    snprintf(c->channel, sizeof(c->channel), "%sevents", cfg->cache_prefix);
    if (mizan_cachekey_init(&c->keys, cfg->cache_secret, cfg->cache_secret_len, cfg->cache_prefix, err) < 0)
        goto fail;
    if (cfg->redis_url == NULL) {
        if ((c->mem = mizan_memcache_new(cfg->cache_max_bytes)) == NULL) {
            mizan_err_set(err, "out of memory for the embedded cache");
            goto fail;
        }
        return c;
    }
    if ((c->shared = mizan_redis_shared_new(cfg->redis_url, cfg->redis_timeout_ms, err)) != NULL) {
        mizan_redis_shared_set_failover_wait(c->shared, cfg->redis_failover_wait_ms);
        return c;
    }
fail:
    mizan_cache_free(c);
    return NULL;
}

static void on_redis_state(void *arg, bool usable)
{
    mizan_cache_loop_t *cl = arg;
    if (!usable)
        mizan_log(MIZAN_LOG_WARN, "loop %d: Redis unusable; contexts are computed without the cache", cl->index);
}

/*
 * The subscription came back after being down: events published meanwhile
 * (by any instance, including this one's replay) may have been missed, so
 * this instance's streams are told that every context may be stale.
 */
static void on_subscription_state(void *arg, bool usable)
{
    mizan_cache_t *c = arg;
    if (!usable) {
        c->sub_was_down = true;
        return;
    }
    if (!c->sub_was_down)
        return;
    c->sub_was_down = false;
    for (size_t i = 0; i < c->reg->nctxs; i++) {
        json_t *target = json_pack("{s:s}", "context", c->reg->ctxs[i]->name);
        char *text = target != NULL ? event_text(c, target) : NULL;
        if (text != NULL)
            mizan_bus_publish(c->bus, text, strlen(text));
        free(text);
        json_decref(target);
    }
    mizan_log(MIZAN_LOG_INFO, "event subscription restored: streams told every context may be stale");
}

int mizan_cache_loop_init(mizan_cache_loop_t *cl, mizan_cache_t *c, struct event_base *base, int index,
                          mizan_cache_poster_t post, void *target, mizan_err_t *err)
{
    cl->cache = c;
    cl->index = index;
    cl->post = post;
    cl->target = target;
    cl->base = base;
    if (c->shared == NULL)
        return 0;
    if ((cl->redis = mizan_redis_new(base, c->shared)) == NULL)
        return mizan_err_set(err, "cannot create the Redis client of loop %d", index);
    mizan_redis_on_state(cl->redis, on_redis_state, cl);
    if (index == 0) {
        cl->sub = mizan_redis_subscribe(base, c->shared, c->channel, on_event_message, c);
        if (cl->sub == NULL)
            return mizan_err_set(err, "cannot create the Redis subscriber");
        mizan_redis_on_state(cl->sub, on_subscription_state, c);
    }
    return 0;
}

void mizan_cache_loop_deinit(mizan_cache_loop_t *cl)
{
    if (cl->sub != NULL)
        mizan_redis_free(cl->sub);
    if (cl->redis != NULL)
        mizan_redis_free(cl->redis);
    cl->sub = cl->redis = NULL;
    free(cl->value);
    cl->value = NULL;
    cl->value_cap = 0;
}

void mizan_cache_free(mizan_cache_t *c)
{
    if (c == NULL)
        return;
    mizan_memcache_free(c->mem);
    if (c->shared != NULL)
        mizan_redis_shared_free(c->shared);
    mizan_cachekey_deinit(&c->keys);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

bool mizan_cache_ready(const mizan_cache_loop_t *cl)
{
    /* Usable means connected, set up, and no invalidation waiting for replay. */
    return cl->cache->shared == NULL || mizan_redis_usable(cl->redis);
}

void mizan_cache_stats(mizan_cache_t *c, mizan_cache_stats_t *out)
{
    out->hits = atomic_load(&c->hits);
    out->misses = atomic_load(&c->misses);
    out->bypasses = atomic_load(&c->bypasses);
    out->coalesced = atomic_load(&c->coalesced);
    out->invalidations = atomic_load(&c->invalidations);
    out->events_received = atomic_load(&c->received);
    out->rejected = atomic_load(&c->rejected);
    out->stale = atomic_load(&c->stale);
    out->lock_won = atomic_load(&c->lock_won);
    out->lock_waited = atomic_load(&c->lock_waited);
    out->lock_served = atomic_load(&c->lock_served);
    out->lock_expired = atomic_load(&c->lock_expired);
}

void mizan_cache_read_stats(void *arg, mizan_stats_t *out)
{
    mizan_cache_t *c = arg;
    mizan_cache_stats_t cs;
    mizan_cache_stats(c, &cs);
    out->coalesced = cs.coalesced;
    out->invalidations = cs.invalidations;
    out->events_received = cs.events_received;
    out->rejected = cs.rejected;
    out->lock_won = cs.lock_won;
    out->lock_waited = cs.lock_waited;
    out->lock_served = cs.lock_served;
    out->lock_expired = cs.lock_expired;
    if (c->shared != NULL) {
        mizan_redis_stats_t rs = {0};
        mizan_redis_shared_stats(c->shared, &rs);
        out->redis = true;
        out->redis_up = rs.connections_up;
        out->redis_reconnects = rs.reconnects;
        out->redis_replay_queued = rs.replay_queued;
        out->redis_repaired = rs.repaired;
        out->redis_cluster = strncmp(c->cfg->redis_url, "redis-cluster://", 16) == 0;
        out->redis_moved = rs.moved;
        out->redis_asked = rs.asked;
        out->redis_slot_maps = rs.refreshes;
    }
}

/* ---- answering ------------------------------------------------------- */

static void answer(mizan_lookup_t *lk, mizan_cache_outcome_t outcome, const char *status, const char *text,
                   size_t len)
{
    lk->answer(lk->arg, outcome, status, text, len);
}

/* ---- coalescing -------------------------------------------------------- */

/*
 * Joins an identical computation in progress, or registers lk as its
 * leader. A stale lookup (stale true) never waits: it only learns whether a
 * recomputation is already running (true) or that it now leads one.
 */
static bool join_or_lead(mizan_lookup_t *lk, bool stale)
{
    mizan_cache_t *c = lk->cache;
    char *key = NULL;
    if (asprintf(&key, "%s%s#%lld#%lld", stale ? "stale#" : "", lk->bundle_key, lk->rev[0], lk->rev[1]) < 0)
        return false;
    pthread_mutex_lock(&c->lock);
    for (flight_t *f = c->flights; f != NULL; f = f->next) {
        if (strcmp(f->key, key) != 0)
            continue;
        if (stale) {
            pthread_mutex_unlock(&c->lock);
            free(key);
            return true;
        }
        waiter_t *w = malloc(sizeof(*w));
        if (w == NULL)
            break;
        w->cl = lk->cl;
        w->lk = lk;
        w->next = f->waiters;
        f->waiters = w;
        lk->waiting = true;
        pthread_mutex_unlock(&c->lock);
        free(key);
        atomic_fetch_add(&c->coalesced, 1);
        return true;
    }
    flight_t *f = calloc(1, sizeof(*f));
    if (f != NULL) {
        f->key = key;
        f->next = c->flights;
        c->flights = f;
        lk->leads = f;
        key = NULL;
    }
    pthread_mutex_unlock(&c->lock);
    free(key);
    return false;
}

typedef struct delivery {
    mizan_lookup_t *lk;
    shared_body_t *body; /* NULL: the leader was cut off */
} delivery_t;

/* On a waiter's loop: answer it with the leader's body, or GONE when the leader failed. */
static void deliver(void *arg)
{
    delivery_t *d = arg;
    d->lk->waiting = false;
    if (d->body != NULL) {
        answer(d->lk, MIZAN_CACHE_SHARED, d->body->cache, d->body->text, d->body->len);
        body_unref(d->body);
    } else {
        answer(d->lk, MIZAN_CACHE_GONE, NULL, NULL, 0);
    }
    free(d);
}

/* Lands the flight lk leads: every waiter gets a copy of text (status), or GONE when text is NULL. */
static void land_flight(mizan_lookup_t *lk, const char *status, const char *text, size_t len)
{
    mizan_cache_t *c = lk->cache;
    flight_t *f = lk->leads;
    if (f == NULL)
        return;
    lk->leads = NULL;
    pthread_mutex_lock(&c->lock);
    for (flight_t **pp = &c->flights; *pp != NULL; pp = &(*pp)->next)
        if (*pp == f) {
            *pp = f->next;
            break;
        }
    waiter_t *w = f->waiters;
    pthread_mutex_unlock(&c->lock);
    shared_body_t *body = NULL;
    if (w != NULL && text != NULL && (body = malloc(sizeof(*body))) != NULL) {
        /* Waiters outlive the leader's text: one shared copy for them all. */
        if ((body->text = malloc(len + 1)) == NULL) {
            free(body);
            body = NULL;
        } else {
            memcpy(body->text, text, len);
            body->text[len] = '\0';
            body->len = len;
            body->cache = status;
            atomic_init(&body->refs, 1);
        }
    }
    while (w != NULL) {
        waiter_t *next = w->next;
        delivery_t *d = malloc(sizeof(*d));
        if (d != NULL) {
            d->lk = w->lk;
            d->body = body;
            if (body != NULL)
                atomic_fetch_add(&body->refs, 1);
            if (w->cl->post(w->cl->target, deliver, d) < 0) {
                body_unref(body);
                free(d);
            }
        }
        free(w);
        w = next;
    }
    body_unref(body);
    free(f->key);
    free(f);
}

/* ---- lookup ------------------------------------------------------------ */

#define POLL_MS 25 /* a fill lock's loser looks for the holder's bundle this often */

static long long now_ms(clockid_t clock)
{
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The fill lock's TTL for ctx: cache.fill_lock_ms, or its longest function deadline + 500 ms. */
static int lock_ttl_ms(const mizan_cache_t *c, const mizan_context_t *ctx)
{
    if (c->cfg->cache_fill_lock_ms > 0)
        return c->cfg->cache_fill_lock_ms;
    int longest = 0;
    for (size_t i = 0; i < ctx->nfns; i++)
        if (ctx->fns[i] != NULL && ctx->fns[i]->timeout_ms > longest)
            longest = ctx->fns[i]->timeout_ms;
    return longest + 500;
}

static bool fill_locks(const mizan_lookup_t *lk)
{
    return lk->cache->shared != NULL && lk->cache->cfg->cache_fill_lock;
}

/* What a stored value says, for a lookup that read revisions rev. */
typedef enum found { FOUND_NOTHING, FOUND_FRESH, FOUND_STALE } found_t;

/* Opens value (borrowed): FRESH or STALE with *body in value, or NOTHING (absent, refused, outdated, expired). */
static found_t open_value(mizan_lookup_t *lk, const long long rev[2], const char *value, size_t len,
                          const char **body, size_t *blen)
{
    mizan_cache_t *c = lk->cache;
    if (value == NULL)
        return FOUND_NOTHING;
    long long stored[2], fresh = 0;
    mizan_err_t err = {{0}};
    /* A value from the embedded store never left this process: only the
     * gateway wrote it, so its mac is not checked again on every hit. */
    int rc = c->mem != NULL ? mizan_cachekey_value_read_fresh(value, len, stored, &fresh, body, blen, &err)
                            : mizan_cachekey_value_open_fresh(&c->keys, lk->bundle_key, value, len, stored, &fresh,
                                                              body, blen, &err);
    if (rc < 0) {
        /* Forged, copied from another key, or written by an older
         * gateway: a miss, and the recomputed bundle overwrites it. A
         * lookup that reads it again (fill lock) says so once. */
        if (!lk->refused) {
            lk->refused = true;
            atomic_fetch_add(&c->rejected, 1);
            mizan_log(MIZAN_LOG_WARN, "cache: stored value for context %s refused (%s); recomputing (request %s)",
                      lk->ctx->name, err.msg, lk->rid);
        }
        return FOUND_NOTHING;
    }
    /* A mutation since the store: never served, not even stale. */
    if (stored[0] != rev[0] || stored[1] != rev[1])
        return FOUND_NOTHING;
    if (fresh == 0)
        return FOUND_FRESH; /* no deadline: fresh until the store lets it expire */
    long long now = now_ms(CLOCK_REALTIME);
    if (now < fresh)
        return FOUND_FRESH;
    if (now < fresh + (long long)lk->ctx->stale_s * 1000)
        return FOUND_STALE;
    return FOUND_NOTHING;
}

static void take_lock(mizan_lookup_t *lk, void (*cb)(void *arg, int rc));

/* A stale lookup holds the lock: unless another instance refreshed the bundle meanwhile, lead the recomputation. */
static void on_stale_locked_read(void *arg, int rc, long long ctx_rev, long long scoped_rev, const char *value,
                                 size_t len)
{
    mizan_lookup_t *lk = arg;
    mizan_cache_t *c = lk->cache;
    char *text = lk->stale_text;
    lk->stale_text = NULL;
    long long rev[2] = {ctx_rev, scoped_rev};
    const char *body;
    size_t blen;
    if (rc == 0 && rev[0] == lk->rev[0] && rev[1] == lk->rev[1] &&
        open_value(lk, rev, value, len, &body, &blen) == FOUND_FRESH) {
        mizan_redis_unlock(lk->cl->redis, lk->lock_key, lk->lock_token);
        lk->locked = false;
        land_flight(lk, NULL, NULL, 0);
        atomic_fetch_add(&c->hits, 1);
        answer(lk, MIZAN_CACHE_HIT, "HIT", body, blen);
        free(text);
        return;
    }
    atomic_fetch_add(&c->lock_won, 1);
    atomic_fetch_add(&c->stale, 1);
    answer(lk, MIZAN_CACHE_STALE_REFRESH, "STALE", text, lk->stale_len);
    free(text);
}

/* A stale lookup's fill lock answer: lead the recomputation, or leave it to its holder. */
static void on_stale_lock(void *arg, int rc)
{
    mizan_lookup_t *lk = arg;
    mizan_cache_t *c = lk->cache;
    if (rc == 1) {
        lk->locked = true;
        mizan_redis_lookup(lk->cl->redis, lk->ctx_rev_key, lk->scoped_rev_key, lk->bundle_key, on_stale_locked_read,
                           lk);
        return;
    }
    char *text = lk->stale_text;
    lk->stale_text = NULL;
    if (rc == 0) {
        /* Another instance recomputes it. */
        free(lk->lock_key);
        lk->lock_key = NULL;
        land_flight(lk, NULL, NULL, 0);
    }
    atomic_fetch_add(&c->stale, 1);
    answer(lk, rc == 0 ? MIZAN_CACHE_STALE : MIZAN_CACHE_STALE_REFRESH, "STALE", text, lk->stale_len);
    free(text);
}

/* Serves an expired bundle (body, in a buffer the caller owns) within stale_s. */
static void serve_stale(mizan_lookup_t *lk, const char *body, size_t blen)
{
    mizan_cache_t *c = lk->cache;
    if (join_or_lead(lk, true)) {
        atomic_fetch_add(&c->stale, 1);
        answer(lk, MIZAN_CACHE_STALE, "STALE", body, blen);
        return;
    }
    if (lk->leads == NULL || !fill_locks(lk)) {
        atomic_fetch_add(&c->stale, 1);
        answer(lk, lk->leads != NULL ? MIZAN_CACHE_STALE_REFRESH : MIZAN_CACHE_STALE, "STALE", body, blen);
        return;
    }
    if ((lk->stale_text = malloc(blen + 1)) == NULL) {
        land_flight(lk, NULL, NULL, 0);
        atomic_fetch_add(&c->stale, 1);
        answer(lk, MIZAN_CACHE_STALE, "STALE", body, blen);
        return;
    }
    memcpy(lk->stale_text, body, blen);
    lk->stale_text[blen] = '\0';
    lk->stale_len = blen;
    take_lock(lk, on_stale_lock);
}

static void on_fill_lock(void *arg, int rc);

/* Asks for the fill lock of lk's bundle key and revisions; cb(lk, rc) as mizan_redis_lock(). */
static void take_lock(mizan_lookup_t *lk, void (*cb)(void *arg, int rc))
{
    mizan_cache_t *c = lk->cache;
    free(lk->lock_key);
    lk->lock_key = NULL;
    /* <prefix>ctx:{C}:<hex> -> <prefix>lock:{C}:<hex>:<r0>:<r1>: the {C} tag keeps it on the context's slot. */
    size_t plen = strlen(c->cfg->cache_prefix);
    if (asprintf(&lk->lock_key, "%slock:%s:%lld:%lld", c->cfg->cache_prefix, lk->bundle_key + plen + 4, lk->rev[0],
                 lk->rev[1]) < 0) {
        lk->lock_key = NULL;
        cb(lk, -1);
        return;
    }
    snprintf(lk->lock_token, sizeof(lk->lock_token), "%s-%lld", c->lock_seed, atomic_fetch_add(&c->lock_seq, 1));
    mizan_redis_lock(lk->cl->redis, lk->lock_key, lk->lock_token, lock_ttl_ms(c, lk->ctx), cb, lk);
}

static void poll_tick(evutil_socket_t fd, short what, void *arg);

/* A poll's MGET: serve the holder's bundle, take over a lapsed lock, or wait on. */
static void on_poll_lookup(void *arg, int rc, long long ctx_rev, long long scoped_rev, const char *value, size_t len)
{
    mizan_lookup_t *lk = arg;
    mizan_cache_t *c = lk->cache;
    if (rc != 0) {
        answer(lk, MIZAN_CACHE_COMPUTE, NULL, NULL, 0);
        return;
    }
    long long rev[2] = {ctx_rev, scoped_rev};
    const char *body;
    size_t blen;
    if (rev[0] == lk->rev[0] && rev[1] == lk->rev[1] && open_value(lk, rev, value, len, &body, &blen) != FOUND_NOTHING) {
        atomic_fetch_add(&c->lock_served, 1);
        atomic_fetch_add(&c->hits, 1);
        land_flight(lk, "HIT", body, blen);
        answer(lk, MIZAN_CACHE_HIT, "HIT", body, blen);
        return;
    }
    /* A mutation since (new revisions: a lock of its own) or nothing stored
     * yet: ask for the lock again; it is free when the holder died. */
    lk->rev[0] = rev[0];
    lk->rev[1] = rev[1];
    take_lock(lk, on_fill_lock);
}

static void poll_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    mizan_lookup_t *lk = arg;
    if (now_ms(CLOCK_MONOTONIC) >= lk->wait_until || !mizan_redis_usable(lk->cl->redis)) {
        /* Bounded: the holder is stuck beyond its lock's TTL, or Redis went away. */
        answer(lk, MIZAN_CACHE_COMPUTE, NULL, NULL, 0);
        return;
    }
    mizan_redis_lookup(lk->cl->redis, lk->ctx_rev_key, lk->scoped_rev_key, lk->bundle_key, on_poll_lookup, lk);
}

/*
 * The lock is ours: one more read first, because a holder may have stored
 * and released it between this lookup's MGET and its SET NX (the store
 * goes before the release, on one connection, so this read sees it).
 */
static void on_locked_read(void *arg, int rc, long long ctx_rev, long long scoped_rev, const char *value,
                           size_t len)
{
    mizan_lookup_t *lk = arg;
    mizan_cache_t *c = lk->cache;
    long long rev[2] = {ctx_rev, scoped_rev};
    const char *body;
    size_t blen;
    if (rc == 0 && rev[0] == lk->rev[0] && rev[1] == lk->rev[1] &&
        open_value(lk, rev, value, len, &body, &blen) != FOUND_NOTHING) {
        mizan_redis_unlock(lk->cl->redis, lk->lock_key, lk->lock_token);
        lk->locked = false;
        if (lk->lock_waited)
            atomic_fetch_add(&c->lock_served, 1);
        atomic_fetch_add(&c->hits, 1);
        land_flight(lk, "HIT", body, blen);
        answer(lk, MIZAN_CACHE_HIT, "HIT", body, blen);
        return;
    }
    if (rc == 0) {
        /* Computed from now on: stored with the revisions just read. */
        lk->rev[0] = rev[0];
        lk->rev[1] = rev[1];
    }
    atomic_fetch_add(&c->lock_won, 1);
    if (lk->lock_waited)
        atomic_fetch_add(&c->lock_expired, 1);
    answer(lk, MIZAN_CACHE_COMPUTE, NULL, NULL, 0);
}

/* A leader's fill lock answer: compute (won, or Redis cannot say), or poll for the holder's bundle. */
static void on_fill_lock(void *arg, int rc)
{
    mizan_lookup_t *lk = arg;
    mizan_cache_t *c = lk->cache;
    if (rc == 1) {
        lk->locked = true;
        mizan_redis_lookup(lk->cl->redis, lk->ctx_rev_key, lk->scoped_rev_key, lk->bundle_key, on_locked_read, lk);
        return;
    }
    if (rc != 0) {
        answer(lk, MIZAN_CACHE_COMPUTE, NULL, NULL, 0);
        return;
    }
    if (!lk->lock_waited) {
        lk->lock_waited = true;
        atomic_fetch_add(&c->lock_waited, 1);
        /* Two lock TTLs: the holder's, and that of whoever takes the lock
         * over when the holder died (each computation ends within its
         * functions' deadlines, below the TTL). */
        lk->wait_until = now_ms(CLOCK_MONOTONIC) + 2LL * lock_ttl_ms(c, lk->ctx) + 2 * c->cfg->redis_timeout_ms;
    }
    if (lk->poll == NULL)
        lk->poll = evtimer_new(lk->cl->base, poll_tick, lk);
    struct timeval tv = {0, POLL_MS * 1000};
    if (lk->poll == NULL || evtimer_add(lk->poll, &tv) < 0)
        answer(lk, MIZAN_CACHE_COMPUTE, NULL, NULL, 0);
}

/* Revisions and stored value are known: HIT, STALE, or compute (coalesced, fill-locked). */
static void after_lookup(mizan_lookup_t *lk, long long ctx_rev, long long scoped_rev, const char *value, size_t len)
{
    mizan_cache_t *c = lk->cache;
    lk->rev[0] = ctx_rev;
    lk->rev[1] = scoped_rev;
    lk->have_revs = true;
    const char *body;
    size_t blen;
    switch (open_value(lk, lk->rev, value, len, &body, &blen)) {
    case FOUND_FRESH:
        atomic_fetch_add(&c->hits, 1);
        answer(lk, MIZAN_CACHE_HIT, "HIT", body, blen);
        return;
    case FOUND_STALE:
        serve_stale(lk, body, blen);
        return;
    case FOUND_NOTHING:
        break;
    }
    if (join_or_lead(lk, false))
        return;
    if (lk->leads != NULL && fill_locks(lk)) {
        take_lock(lk, on_fill_lock);
        return;
    }
    answer(lk, MIZAN_CACHE_COMPUTE, NULL, NULL, 0);
}

static void on_redis_lookup(void *arg, int rc, long long ctx_rev, long long scoped_rev, const char *value, size_t len)
{
    mizan_lookup_t *lk = arg;
    if (rc == MIZAN_REDIS_LOOKUP_BAD_REV) {
        /* Someone wrote a non-revision into a revision key: overwrite it with
         * a fresh revision (stale bundles stay stale) and compute uncached
         * this once, instead of bypassing the cache for good. */
        mizan_log(MIZAN_LOG_WARN, "cache: a revision key of context %s held no revision; repairing it (request %s)",
                  lk->ctx->name, lk->rid);
        if (ctx_rev != 0)
            mizan_redis_repair_rev(lk->cl->redis, lk->ctx_rev_key, 0);
        if (scoped_rev != 0)
            mizan_redis_repair_rev(lk->cl->redis, lk->scoped_rev_key, 2 * (lk->ctx->ttl > 0 ? lk->ctx->ttl : 1));
        answer(lk, MIZAN_CACHE_COMPUTE, NULL, NULL, 0);
        return;
    }
    if (rc < 0) {
        /* Unreachable or timed out: computed, not cached. */
        answer(lk, MIZAN_CACHE_COMPUTE, NULL, NULL, 0);
        return;
    }
    after_lookup(lk, ctx_rev, scoped_rev, value, len);
}

/* ---- keys and lookups ---------------------------------------------------- */

/* One bundle's three keys, in one block (see cache.h). */
struct mizan_cache_keys {
    size_t size;       /* bytes of each key's slot */
    char *bundle, *ctx_rev, *scoped_rev;
};

int mizan_cache_scope(const mizan_cache_loop_t *cl, const mizan_context_t *ctx, const mizan_identity_t *id,
                      char *out, size_t outlen, mizan_err_t *err)
{
    return mizan_cachekey_scope(&cl->cache->keys, ctx->scope, id, out, outlen, err);
}

mizan_cache_keys_t *mizan_cache_keys_new(const mizan_cache_loop_t *cl, const mizan_context_t *ctx,
                                         const json_t *params, const char *scope, mizan_err_t *err)
{
    const mizan_cache_t *c = cl->cache;
    size_t ksize = MIZAN_CACHEKEY_KEY_SIZE(strlen(ctx->name));
    mizan_cache_keys_t *k = malloc(sizeof(*k) + 3 * ksize);
    if (k == NULL) {
        mizan_err_set(err, "out of memory");
        return NULL;
    }
    k->size = ksize;
    k->bundle = (char *)(k + 1);
    k->ctx_rev = k->bundle + ksize;
    k->scoped_rev = k->bundle + 2 * ksize;
    if (mizan_cachekey_bundle(&c->keys, ctx->name, params, scope, k->bundle, ksize, err) < 0 ||
        mizan_cachekey_context_rev(&c->keys, ctx->name, k->ctx_rev, ksize, err) < 0 ||
        mizan_cachekey_scoped_rev(&c->keys, ctx->name, params, k->scoped_rev, ksize, err) < 0) {
        free(k);
        return NULL;
    }
    return k;
}

void mizan_cache_keys_free(mizan_cache_keys_t *keys)
{
    free(keys);
}

void mizan_cache_fetch(mizan_cache_loop_t *cl, const mizan_context_t *ctx, const mizan_cache_keys_t *keys,
                       const char *rid, mizan_lookup_t **lkp, mizan_cache_answer_t ans, void *arg)
{
    mizan_cache_t *c = cl->cache;
    /* One allocation for the lookup and a copy of its keys (the caller's
     * may go before the lookup ends). */
    size_t ksize = keys != NULL ? keys->size : 0;
    mizan_lookup_t *lk = malloc(sizeof(*lk) + 3 * ksize);
    *lkp = lk;
    if (lk == NULL) {
        ans(arg, MIZAN_CACHE_FAILED, NULL, NULL, 0);
        return;
    }
    memset(lk, 0, sizeof(*lk));
    lk->cache = c;
    lk->cl = cl;
    lk->ctx = ctx;
    lk->rid = rid;
    lk->answer = ans;
    lk->arg = arg;
    if (keys == NULL || ctx->ttl == 0) {
        /* Not cached (TTL 0), or keys that could not be derived: computed, never stored. */
        answer(lk, MIZAN_CACHE_COMPUTE, NULL, NULL, 0);
        return;
    }
    memcpy(lk + 1, keys + 1, 3 * ksize);
    lk->bundle_key = (char *)(lk + 1);
    lk->ctx_rev_key = lk->bundle_key + ksize;
    lk->scoped_rev_key = lk->bundle_key + 2 * ksize;
    if (c->mem != NULL) {
        long long r0 = 0, r1 = 0;
        size_t len = 0;
        mizan_err_t err = {{0}};
        if (mizan_memcache_mget_into(c->mem, lk->ctx_rev_key, lk->scoped_rev_key, lk->bundle_key, &r0, &r1,
                                     &cl->value, &cl->value_cap, &len, &err) < 0) {
            answer(lk, MIZAN_CACHE_COMPUTE, NULL, NULL, 0);
            return;
        }
        /* The loop's buffer: the answer borrows it for the call only. */
        after_lookup(lk, r0, r1, len > 0 ? cl->value : NULL, len);
        if (cl->value_cap > VALUE_BUFFER_KEEP) {
            free(cl->value); /* a rare large bundle: not kept for the loop's life */
            cl->value = NULL;
            cl->value_cap = 0;
        }
        return;
    }
    if (!mizan_redis_usable(cl->redis)) {
        answer(lk, MIZAN_CACHE_COMPUTE, NULL, NULL, 0);
        return;
    }
    mizan_redis_lookup(cl->redis, lk->ctx_rev_key, lk->scoped_rev_key, lk->bundle_key, on_redis_lookup, lk);
}

const char *mizan_cache_store(mizan_cache_loop_t *cl, mizan_lookup_t *lk, const mizan_context_t *ctx,
                              const char *text, size_t len, bool cacheable)
{
    mizan_cache_t *c = cl->cache;
    if (text == NULL) {
        if (lk != NULL) {
            if (lk->locked)
                mizan_redis_unlock(cl->redis, lk->lock_key, lk->lock_token);
            lk->locked = false;
            land_flight(lk, NULL, NULL, 0);
        }
        return "BYPASS";
    }
    const char *status = "BYPASS";
    if (cacheable && lk != NULL && lk->have_revs && ctx->ttl > 0) {
        mizan_err_t err = {{0}};
        size_t n = 0;
        /* With stale_s the value outlives its TTL and says when it stops being fresh. */
        long long fresh = ctx->stale_s > 0 ? now_ms(CLOCK_REALTIME) + (long long)ctx->ttl * 1000 : 0;
        char *stored = mizan_cachekey_value_seal_fresh(&c->keys, lk->bundle_key, lk->rev, fresh, text, len, &n, &err);
        if (stored != NULL) {
            if (c->mem != NULL) {
                if (mizan_memcache_set(c->mem, lk->bundle_key, stored, n, ctx->ttl + ctx->stale_s, &err) == 0)
                    status = "MISS";
            } else if (mizan_redis_usable(cl->redis)) {
                mizan_redis_store(cl->redis, lk->bundle_key, stored, n, ctx->ttl + ctx->stale_s);
                status = "MISS";
            }
            free(stored);
        }
    }
    /* After the SET on the same connection (the same node: one slot): the
     * waiters polling see the bundle once the lock is gone. */
    if (lk != NULL && lk->locked) {
        mizan_redis_unlock(cl->redis, lk->lock_key, lk->lock_token);
        lk->locked = false;
    }
    atomic_fetch_add(strcmp(status, "MISS") == 0 ? &c->misses : &c->bypasses, 1);
    if (lk != NULL && lk->leads != NULL)
        land_flight(lk, status, text, len);
    return status;
}

void mizan_cache_lookup_free(mizan_lookup_t *lk)
{
    if (lk == NULL)
        return;
    if (lk->leads != NULL)
        land_flight(lk, NULL, NULL, 0);
    /* A computation cut off: its lock is left to expire (the loop's Redis
     * connection may be gone already); the others take over after its TTL. */
    if (lk->poll != NULL)
        event_free(lk->poll);
    free(lk->lock_key);
    free(lk->stale_text);
    free(lk); /* the keys live in the same block */
}

/* ---- invalidation ------------------------------------------------------ */

typedef struct inval_call {
    void (*done)(void *arg, int rc);
    void *arg;
    const char *rid;
    char **strings; /* keys and event texts to free */
    size_t nstrings;
} inval_call_t;

static void inval_call_free(inval_call_t *ic)
{
    for (size_t i = 0; i < ic->nstrings; i++)
        free(ic->strings[i]);
    free(ic->strings);
    free(ic);
}

static void on_redis_invalidated(void *arg, int rc)
{
    inval_call_t *ic = arg;
    if (rc == 1)
        mizan_log(MIZAN_LOG_WARN, "Redis unavailable: invalidation queued for replay (request %s)", ic->rid);
    /* Queued counts as recorded: it is replayed before this instance reads
     * bundles again. Only a failure to queue (out of memory) is an error. */
    ic->done(ic->arg, rc < 0 ? -1 : 0);
    inval_call_free(ic);
}

/* The event text of one target (new malloc'd string). */
static char *event_text(const mizan_cache_t *c, const json_t *target)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    json_t *ev = json_pack("{s:s, s:O}", "type", "invalidate", "context", json_object_get(target, "context"));
    if (ev == NULL)
        return NULL;
    json_t *params = json_object_get(target, "params");
    if (params != NULL)
        json_object_set(ev, "params", params);
    json_object_set_new(ev, "origin", json_string(c->cfg->instance));
    json_object_set_new(ev, "ts", json_integer((json_int_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000));
    char *text = json_dumps(ev, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(ev);
    return text;
}

void mizan_cache_invalidate(mizan_cache_loop_t *cl, const json_t *targets, const char *rid,
                            void (*done)(void *arg, int rc), void *arg)
{
    mizan_cache_t *c = cl->cache;
    const mizan_registry_t *reg = c->reg;
    size_t n = json_array_size(targets);
    inval_call_t *ic = calloc(1, sizeof(*ic));
    mizan_redis_inval_t *items = calloc(n + 1, sizeof(*items));
    if (ic != NULL)
        ic->strings = calloc(2 * n + 1, sizeof(char *));
    if (ic == NULL || items == NULL || ic->strings == NULL)
        goto fail;
    ic->done = done;
    ic->arg = arg;
    ic->rid = rid;
    mizan_err_t err = {{0}};
    for (size_t i = 0; i < n; i++) {
        const json_t *t = json_array_get(targets, i);
        const mizan_context_t *ctx = mizan_registry_context(reg, json_string_value(json_object_get(t, "context")));
        if (ctx == NULL)
            goto fail;
        size_t ksize = MIZAN_CACHEKEY_KEY_SIZE(strlen(ctx->name));
        char *key = malloc(ksize);
        if (key == NULL)
            goto fail;
        ic->strings[ic->nstrings++] = key;
        json_t *params = json_object_get(t, "params");
        int rc = params != NULL ? mizan_cachekey_scoped_rev(&c->keys, ctx->name, params, key, ksize, &err)
                                : mizan_cachekey_context_rev(&c->keys, ctx->name, key, ksize, &err);
        char *ev = event_text(c, t);
        if (rc < 0 || ev == NULL) {
            free(ev);
            goto fail;
        }
        ic->strings[ic->nstrings++] = ev;
        items[i].rev_key = key;
        /* A scoped revision must outlive every bundle stored against it. */
        items[i].expire_s = params != NULL ? 2 * (ctx->ttl > 0 ? ctx->ttl : 1) : 0;
        items[i].event = ev;
        items[i].event_len = strlen(ev);
    }
    atomic_fetch_add(&c->invalidations, (long long)n);
    if (c->mem != NULL) {
        for (size_t i = 0; i < n; i++) {
            if (mizan_memcache_incr(c->mem, items[i].rev_key, items[i].expire_s, &err) < 0)
                goto fail;
            mizan_bus_publish(c->bus, items[i].event, items[i].event_len);
        }
        free(items);
        inval_call_free(ic);
        done(arg, 0);
        return;
    }
    mizan_redis_invalidate(cl->redis, items, n, c->channel, on_redis_invalidated, ic);
    free(items);
    return;
fail:
    free(items);
    if (ic != NULL)
        inval_call_free(ic);
    done(arg, -1);
}

/* A message on the events channel (subscriber loop): hand it to the bus. */
static void on_event_message(void *arg, const char *msg, size_t len)
{
    mizan_cache_t *c = arg;
    atomic_fetch_add(&c->received, 1);
    mizan_bus_publish(c->bus, msg, len);
}
