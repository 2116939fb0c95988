/*
 * cache.c - bundles, revisions, coalescing and invalidation (see cache.h).
 *
 * DESIGN (threads): lookups, stores and invalidations run on the I/O loop
 * that owns the exchange. The embedded store (memcache.c) is thread-safe
 * and answers synchronously; Redis answers asynchronously on the same loop
 * (redis.c, one connection per loop). Coalescing is instance-wide: the
 * flight table is guarded by `lock`; a flight's leader answers waiters on
 * other loops by posting them the shared result (mizan_loop_post).
 */
#include "cache.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/http.h>

#include "cachekey.h"
#include "events.h"
#include "log.h"
#include "metrics.h"
#include "memcache.h"
#include "redis.h"

/* A computed bundle shared by a flight's leader and waiters. */
typedef struct shared_body {
    atomic_int refs;
    char *text;        /* the response body */
    size_t len;
    const char *cache; /* X-Mizan-Cache to answer with */
} shared_body_t;

typedef struct waiter {
    mizan_exchange_t *ex;
    struct waiter *next;
} waiter_t;

/* One computation in progress; lives in the flight table until it lands. */
typedef struct flight {
    char *key;            /* bundle key + "#" + revisions read */
    mizan_exchange_t *leader;
    waiter_t *waiters;    /* guarded by cache->lock */
    struct flight *next;
} flight_t;

/* Per-exchange cache state. Loop-thread only. */
struct mizan_lookup {
    char *bundle_key, *ctx_rev_key, *scoped_rev_key;
    long long rev[2];     /* revisions read before computing */
    bool have_revs;       /* rev is valid (a store may follow) */
    flight_t *leads;      /* the flight this exchange leads */
    bool waiting;         /* parked on another exchange's flight */
};

struct mizan_cache {
    mizan_gateway_t *gw;
    mizan_cachekey_t keys;
    mizan_memcache_t *mem;        /* embedded store, or NULL with Redis */
    mizan_redis_shared_t *shared; /* Redis, or NULL */
    char channel[96];             /* prefix "events" */
    pthread_mutex_t lock;         /* guards flights */
    flight_t *flights;
    atomic_llong hits, misses, bypasses, coalesced, invalidations, received;
    atomic_llong rejected; /* stored values whose mac did not verify */
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

int mizan_cache_new(mizan_gateway_t *gw, mizan_err_t *err)
{
    const mizan_config_t *cfg = &gw->cfg;
    mizan_cache_t *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return mizan_err_set(err, "out of memory");
    gw->cache = c;
    c->gw = gw;
    pthread_mutex_init(&c->lock, NULL);
    snprintf(c->channel, sizeof(c->channel), "%sevents", cfg->cache_prefix);
    if (mizan_cachekey_init(&c->keys, cfg->cache_secret, cfg->cache_secret_len, cfg->cache_prefix, err) < 0)
        return -1;
    if (cfg->redis_url == NULL) {
        if ((c->mem = mizan_memcache_new(cfg->cache_max_bytes)) == NULL)
            return mizan_err_set(err, "out of memory for the embedded cache");
        return 0;
    }
    c->shared = mizan_redis_shared_new(cfg->redis_url, cfg->redis_timeout_ms, err);
    if (c->shared != NULL)
        mizan_redis_shared_set_failover_wait(c->shared, cfg->redis_failover_wait_ms);
    return c->shared != NULL ? 0 : -1;
}

static void on_redis_state(void *arg, bool usable)
{
    mizan_loop_t *loop = arg;
    if (!usable)
        mizan_log(MIZAN_LOG_WARN, "loop %d: Redis unusable; contexts are computed without the cache", loop->index);
}

/*
 * The subscription came back after being down: events published meanwhile
 * (by any instance, including this one's replay) may have been missed, so
 * this instance's streams are told that every context may be stale.
 */
static void on_subscription_state(void *arg, bool usable)
{
    mizan_gateway_t *gw = arg;
    mizan_cache_t *c = gw->cache;
    if (!usable) {
        c->sub_was_down = true;
        return;
    }
    if (!c->sub_was_down)
        return;
    c->sub_was_down = false;
    for (size_t i = 0; i < gw->reg.nctxs; i++) {
        json_t *target = json_pack("{s:s}", "context", gw->reg.ctxs[i]->name);
        char *text = target != NULL ? event_text(c, target) : NULL;
        if (text != NULL)
            mizan_events_publish(gw, text, strlen(text));
        free(text);
        json_decref(target);
    }
    mizan_log(MIZAN_LOG_INFO, "event subscription restored: streams told every context may be stale");
}

int mizan_cache_loop_init(mizan_loop_t *loop, mizan_err_t *err)
{
    mizan_cache_t *c = loop->gw->cache;
    if (mizan_events_loop_init(loop, err) < 0)
        return -1;
    if (c->shared == NULL)
        return 0;
    if ((loop->redis = mizan_redis_new(loop->base, c->shared)) == NULL)
        return mizan_err_set(err, "cannot create the Redis client of loop %d", loop->index);
    mizan_redis_on_state(loop->redis, on_redis_state, loop);
    if (loop->index == 0) {
        loop->sub = mizan_redis_subscribe(loop->base, c->shared, c->channel, on_event_message, loop->gw);
        if (loop->sub == NULL)
            return mizan_err_set(err, "cannot create the Redis subscriber");
        mizan_redis_on_state(loop->sub, on_subscription_state, loop->gw);
    }
    return 0;
}

void mizan_cache_loop_deinit(mizan_loop_t *loop)
{
    if (loop->sub != NULL)
        mizan_redis_free(loop->sub);
    if (loop->redis != NULL)
        mizan_redis_free(loop->redis);
    loop->sub = loop->redis = NULL;
    mizan_events_loop_deinit(loop);
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

bool mizan_cache_ready(mizan_loop_t *loop)
{
    /* Usable means connected, set up, and no invalidation waiting for replay. */
    return loop->gw->cache->shared == NULL || mizan_redis_usable(loop->redis);
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
}

void mizan_cache_redis_stats(mizan_cache_t *c, mizan_redis_stats_t *out)
{
    memset(out, 0, sizeof(*out));
    if (c->shared != NULL)
        mizan_redis_shared_stats(c->shared, out);
}

/* ---- answering ------------------------------------------------------- */

static void reply_body(mizan_exchange_t *ex, const char *cache, const char *text, size_t len)
{
    ex->cache = cache;
    mizan_metrics_cache(ex->ctx, cache);
    mizan_reply_header(ex, "X-Mizan-Cache", cache);
    mizan_reply_text(ex, 200, text, len);
}

/* ---- coalescing -------------------------------------------------------- */

/* Joins an identical computation in progress, or registers ex as its leader. */
static bool join_or_lead(mizan_exchange_t *ex)
{
    mizan_cache_t *c = ex->loop->gw->cache;
    struct mizan_lookup *lk = ex->lookup;
    char *key = NULL;
    if (asprintf(&key, "%s#%lld#%lld", lk->bundle_key, lk->rev[0], lk->rev[1]) < 0)
        return false;
    pthread_mutex_lock(&c->lock);
    for (flight_t *f = c->flights; f != NULL; f = f->next) {
        if (strcmp(f->key, key) != 0)
            continue;
        waiter_t *w = malloc(sizeof(*w));
        if (w == NULL)
            break;
        w->ex = ex;
        w->next = f->waiters;
        f->waiters = w;
        lk->waiting = true;
        ex->external = true;
        pthread_mutex_unlock(&c->lock);
        free(key);
        atomic_fetch_add(&c->coalesced, 1);
        return true;
    }
    flight_t *f = calloc(1, sizeof(*f));
    if (f != NULL) {
        f->key = key;
        f->leader = ex;
        f->next = c->flights;
        c->flights = f;
        lk->leads = f;
        key = NULL;
    }
    pthread_mutex_unlock(&c->lock);
    free(key);
    return false;
}

/* On a waiter's loop: answer it with the leader's body, or 503 when the leader failed. */
static void deliver(mizan_loop_t *loop, void *arg);

typedef struct delivery {
    mizan_exchange_t *ex;
    shared_body_t *body; /* NULL: the leader was cut off */
} delivery_t;

static void deliver(mizan_loop_t *loop, void *arg)
{
    (void)loop;
    delivery_t *d = arg;
    d->ex->lookup->waiting = false;
    d->ex->external = false;
    if (d->body != NULL) {
        reply_body(d->ex, d->body->cache, d->body->text, d->body->len);
        body_unref(d->body);
    } else {
        mizan_reply_header(d->ex, "Retry-After", "1");
        mizan_reply_error(d->ex, MIZAN_UNAVAILABLE, "the gateway is shutting down", NULL);
    }
    free(d);
}

/* Lands the flight ex leads: every waiter gets body (a reference each), or 503 when NULL. */
static void land_flight(mizan_exchange_t *ex, shared_body_t *body)
{
    mizan_cache_t *c = ex->loop->gw->cache;
    flight_t *f = ex->lookup->leads;
    if (f == NULL)
        return;
    ex->lookup->leads = NULL;
    pthread_mutex_lock(&c->lock);
    for (flight_t **pp = &c->flights; *pp != NULL; pp = &(*pp)->next)
        if (*pp == f) {
            *pp = f->next;
            break;
        }
    waiter_t *w = f->waiters;
    pthread_mutex_unlock(&c->lock);
    while (w != NULL) {
        waiter_t *next = w->next;
        delivery_t *d = malloc(sizeof(*d));
        if (d != NULL) {
            d->ex = w->ex;
            d->body = body;
            if (body != NULL)
                atomic_fetch_add(&body->refs, 1);
            if (mizan_loop_post(w->ex->loop, deliver, d) < 0) {
                body_unref(body);
                free(d);
            }
        }
        free(w);
        w = next;
    }
    free(f->key);
    free(f);
}

/* ---- lookup ------------------------------------------------------------ */

/* Revisions and stored value are known: HIT, or compute (coalesced). */
static void after_lookup(mizan_exchange_t *ex, long long ctx_rev, long long scoped_rev, const char *value,
                         size_t len)
{
    mizan_cache_t *c = ex->loop->gw->cache;
    struct mizan_lookup *lk = ex->lookup;
    lk->rev[0] = ctx_rev;
    lk->rev[1] = scoped_rev;
    lk->have_revs = true;
    long long stored[2];
    const char *body;
    size_t blen;
    if (value != NULL) {
        mizan_err_t err = {{0}};
        if (mizan_cachekey_value_open(&c->keys, lk->bundle_key, value, len, stored, &body, &blen, &err) < 0) {
            /* Forged, copied from another key, or written by an older
             * gateway: a miss, and the recomputed bundle overwrites it. */
            atomic_fetch_add(&c->rejected, 1);
            mizan_log(MIZAN_LOG_WARN, "cache: stored value for context %s refused (%s); recomputing (request %s)",
                      ex->ctx->name, err.msg, ex->rid);
        } else if (stored[0] == ctx_rev && stored[1] == scoped_rev) {
            atomic_fetch_add(&c->hits, 1);
            reply_body(ex, "HIT", body, blen);
            return;
        }
    }
    if (join_or_lead(ex))
        return;
    mizan_context_compute(ex);
}

static void on_redis_lookup(void *arg, int rc, long long ctx_rev, long long scoped_rev, const char *value, size_t len)
{
    mizan_exchange_t *ex = arg;
    ex->external = false;
    if (rc == MIZAN_REDIS_LOOKUP_BAD_REV) {
        /* Someone wrote a non-revision into a revision key: overwrite it with
         * a fresh revision (stale bundles stay stale) and compute uncached
         * this once, instead of bypassing the cache for good. */
        struct mizan_lookup *lk = ex->lookup;
        mizan_log(MIZAN_LOG_WARN, "cache: a revision key of context %s held no revision; repairing it (request %s)",
                  ex->ctx->name, ex->rid);
        if (ctx_rev != 0)
            mizan_redis_repair_rev(ex->loop->redis, lk->ctx_rev_key, 0);
        if (scoped_rev != 0)
            mizan_redis_repair_rev(ex->loop->redis, lk->scoped_rev_key, 2 * (ex->ctx->ttl > 0 ? ex->ctx->ttl : 1));
        mizan_context_compute(ex);
        return;
    }
    if (rc < 0) {
        /* Unreachable or timed out: computed, not cached. */
        mizan_context_compute(ex);
        return;
    }
    after_lookup(ex, ctx_rev, scoped_rev, value, len);
}

void mizan_cache_fetch(mizan_exchange_t *ex)
{
    mizan_cache_t *c = ex->loop->gw->cache;
    const mizan_context_t *ctx = ex->ctx;
    struct mizan_lookup *lk = calloc(1, sizeof(*lk));
    ex->lookup = lk;
    if (lk == NULL) {
        mizan_reply_error(ex, MIZAN_INTERNAL_ERROR, "out of memory", NULL);
        return;
    }
    if (ctx->ttl == 0) {
        mizan_context_compute(ex);
        return;
    }
    mizan_err_t err = {{0}};
    size_t ksize = MIZAN_CACHEKEY_KEY_SIZE(strlen(ctx->name));
    const mizan_identity_t *id = &ex->caller->id;
    size_t ssize = MIZAN_CACHEKEY_SCOPE_SIZE(id->sub != NULL ? strlen(id->sub) : 0);
    char *scope = calloc(1, ssize);
    lk->bundle_key = calloc(1, ksize);
    lk->ctx_rev_key = calloc(1, ksize);
    lk->scoped_rev_key = calloc(1, ksize);
    int rc = scope != NULL && lk->bundle_key != NULL && lk->ctx_rev_key != NULL && lk->scoped_rev_key != NULL ? 0 : -1;
    if (rc == 0)
        rc = mizan_cachekey_scope(&c->keys, ctx->scope, id, scope, ssize, &err);
    if (rc == 0)
        rc = mizan_cachekey_bundle(&c->keys, ctx->name, ex->params, scope, lk->bundle_key, ksize, &err);
    if (rc == 0)
        rc = mizan_cachekey_context_rev(&c->keys, ctx->name, lk->ctx_rev_key, ksize, &err);
    if (rc == 0)
        rc = mizan_cachekey_scoped_rev(&c->keys, ctx->name, ex->params, lk->scoped_rev_key, ksize, &err);
    free(scope);
    if (rc < 0) {
        /* Keys that cannot be derived (e.g. a sub with control bytes): serve uncached. */
        mizan_log(MIZAN_LOG_WARN, "cache key for context %s not derivable: %s", ctx->name, err.msg);
        mizan_context_compute(ex);
        return;
    }
    if (c->mem != NULL) {
        long long r0 = 0, r1 = 0;
        char *value = NULL;
        size_t len = 0;
        if (mizan_memcache_mget(c->mem, lk->ctx_rev_key, lk->scoped_rev_key, lk->bundle_key, &r0, &r1, &value, &len,
                                &err) < 0) {
            mizan_context_compute(ex);
            return;
        }
        after_lookup(ex, r0, r1, value, len);
        free(value);
        return;
    }
    if (!mizan_redis_usable(ex->loop->redis)) {
        mizan_context_compute(ex);
        return;
    }
    ex->external = true;
    mizan_redis_lookup(ex->loop->redis, lk->ctx_rev_key, lk->scoped_rev_key, lk->bundle_key, on_redis_lookup, ex);
}

void mizan_cache_computed(mizan_exchange_t *ex, json_t *bundle, bool cacheable)
{
    mizan_cache_t *c = ex->loop->gw->cache;
    struct mizan_lookup *lk = ex->lookup;
    char *text = bundle != NULL ? json_dumps(bundle, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(bundle);
    if (text == NULL) {
        land_flight(ex, NULL);
        mizan_reply_error(ex, MIZAN_INTERNAL_ERROR, "cannot render the bundle", NULL);
        return;
    }
    size_t len = strlen(text);
    const char *status = "BYPASS";
    if (cacheable && lk != NULL && lk->have_revs && ex->ctx->ttl > 0) {
        mizan_err_t err = {{0}};
        size_t n = 0;
        char *stored = mizan_cachekey_value_seal(&c->keys, lk->bundle_key, lk->rev, text, len, &n, &err);
        if (stored != NULL) {
            if (c->mem != NULL) {
                if (mizan_memcache_set(c->mem, lk->bundle_key, stored, n, ex->ctx->ttl, &err) == 0)
                    status = "MISS";
            } else if (mizan_redis_usable(ex->loop->redis)) {
                mizan_redis_store(ex->loop->redis, lk->bundle_key, stored, n, ex->ctx->ttl);
                status = "MISS";
            }
            free(stored);
        }
    }
    atomic_fetch_add(strcmp(status, "MISS") == 0 ? &c->misses : &c->bypasses, 1);
    if (lk != NULL && lk->leads != NULL) {
        shared_body_t *b = malloc(sizeof(*b));
        if (b != NULL) {
            atomic_init(&b->refs, 1);
            b->text = text;
            b->len = len;
            b->cache = status;
            land_flight(ex, b);
            reply_body(ex, status, b->text, b->len);
            body_unref(b);
            return;
        }
        land_flight(ex, NULL);
    }
    reply_body(ex, status, text, len);
    free(text);
}

void mizan_cache_exchange_done(mizan_exchange_t *ex)
{
    struct mizan_lookup *lk = ex->lookup;
    if (lk == NULL)
        return;
    if (lk->leads != NULL)
        land_flight(ex, NULL);
    free(lk->bundle_key);
    free(lk->ctx_rev_key);
    free(lk->scoped_rev_key);
    free(lk);
    ex->lookup = NULL;
}

/* ---- invalidation ------------------------------------------------------ */

typedef struct inval_call {
    mizan_exchange_t *ex;
    void (*done)(mizan_exchange_t *ex, int rc);
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
    ic->ex->external = false;
    if (rc == 1)
        mizan_log(MIZAN_LOG_WARN, "Redis unavailable: invalidation queued for replay (request %s)", ic->ex->rid);
    /* Queued counts as recorded: it is replayed before this instance reads
     * bundles again. Only a failure to queue (out of memory) is an error. */
    ic->done(ic->ex, rc < 0 ? -1 : 0);
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
    json_object_set_new(ev, "origin", json_string(c->gw->cfg.instance));
    json_object_set_new(ev, "ts", json_integer((json_int_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000));
    char *text = json_dumps(ev, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(ev);
    return text;
}

void mizan_cache_invalidate(mizan_exchange_t *ex, const json_t *targets, void (*done)(mizan_exchange_t *ex, int rc))
{
    mizan_cache_t *c = ex->loop->gw->cache;
    mizan_registry_t *reg = &ex->loop->gw->reg;
    size_t n = json_array_size(targets);
    inval_call_t *ic = calloc(1, sizeof(*ic));
    mizan_redis_inval_t *items = calloc(n + 1, sizeof(*items));
    if (ic != NULL)
        ic->strings = calloc(2 * n + 1, sizeof(char *));
    if (ic == NULL || items == NULL || ic->strings == NULL)
        goto fail;
    ic->ex = ex;
    ic->done = done;
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
            mizan_events_publish(c->gw, items[i].event, items[i].event_len);
        }
        free(items);
        done(ex, 0);
        inval_call_free(ic);
        return;
    }
    ex->external = true;
    mizan_redis_invalidate(ex->loop->redis, items, n, c->channel, on_redis_invalidated, ic);
    free(items);
    return;
fail:
    free(items);
    if (ic != NULL)
        inval_call_free(ic);
    done(ex, -1);
}

/* A message on the events channel (subscriber loop): forward to every stream. */
static void on_event_message(void *arg, const char *msg, size_t len)
{
    mizan_gateway_t *gw = arg;
    atomic_fetch_add(&gw->cache->received, 1);
    mizan_events_publish(gw, msg, len);
}
