/*
 * memcache.c - the embedded cache: a byte-bounded LRU of bundles plus a
 * table of revision counters, under one mutex (see memcache.h).
 *
 * Layout:
 *
 *   bundles  chained hash table (power-of-two buckets, grows at load 1)
 *            + doubly linked LRU list, most recently used at the head;
 *   revs     a second chained hash table, no list, no byte bound.
 *
 * Both tables share one node header and the code that finds, inserts,
 * removes and grows. Nodes taken out under the lock are chained on a local
 * "graveyard" through their hash link and freed after the unlock.
 */
#include "memcache.h"

#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Buckets of a new table. */
#define INITIAL_BUCKETS 64

/* Buckets of each table examined for expired nodes on every write. */
#define SWEEP_BUCKETS 4

/* Header shared by both kinds of node; always the first member. */
struct hnode {
    struct hnode *next; /* hash chain, or graveyard once removed */
    uint64_t hash;      /* hash of key */
    size_t key_len;     /* bytes of key, without the NUL */
    const char *key;    /* NUL-terminated; points into the node itself */
    long long expires;  /* monotonic ms at which it expires; 0 = never */
};

/* A cached bundle. */
struct entry {
    struct hnode h;           /* must stay first */
    struct entry *prev;       /* LRU neighbour towards the head (more recent) */
    struct entry *lru_next;   /* LRU neighbour towards the tail (less recent) */
    size_t value_len;         /* bytes of value, without the NUL */
    size_t cost;              /* bytes charged: key + value + overhead */
    char *value;              /* NUL-terminated; points into data */
    char data[];              /* key NUL value NUL */
};

/* A revision counter. */
struct rev {
    struct hnode h;   /* must stay first */
    long long value;  /* current value; >= 1 once created */
    char data[];      /* key NUL */
};

/* A chained hash table of hnodes. */
struct table {
    struct hnode **buckets; /* nbuckets chains */
    size_t nbuckets;        /* a power of two */
    size_t count;           /* nodes held */
    size_t sweep;           /* next bucket the expiry sweep looks at */
};

struct mizan_memcache {
    pthread_mutex_t lock;           /* guards every field below but clock */
    size_t max_bytes;               /* bound on bytes (immutable) */
    size_t bytes;                   /* bytes charged to the bundles held */
    struct table bundles;           /* key -> struct entry */
    struct table revs;              /* key -> struct rev */
    struct entry *head;             /* most recently used bundle */
    struct entry *tail;             /* least recently used bundle */
    unsigned long long evictions;   /* bundles evicted for room */
    unsigned long long expired;     /* nodes dropped at expiry */
    mizan_memcache_clock_fn clock;  /* set before sharing; read unlocked */
    void *clock_ud;                 /* argument of clock */
};

/* ------------------------------------------------------------------------ */
/* Clock and hashing                                                        */
/* ------------------------------------------------------------------------ */

static long long monotonic_ms(void *ud)
{
    (void)ud;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static long long now_ms(const mizan_memcache_t *c)
{
    return c->clock(c->clock_ud);
}

/* FNV-1a. Keys are HMAC digests under a secret nobody outside holds, so
 * they cannot be chosen to collide; a keyed hash would buy nothing. */
static uint64_t hash_key(const char *key, size_t len)
{
    uint64_t h = 14695981039346656037ull;
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)key[i];
        h *= 1099511628211ull;
    }
    return h;
}

/* The expiry ttl_s (> 0) seconds after now; never 0, which means "never". */
static long long deadline(long long now, int ttl_s)
{
    long long t = now + (long long)ttl_s * 1000;
    return t != 0 ? t : 1;
}

static bool is_expired(const struct hnode *n, long long now)
{
    return n->expires != 0 && now >= n->expires;
}

/* ------------------------------------------------------------------------ */
/* Hash tables (lock held)                                                  */
/* ------------------------------------------------------------------------ */

static int table_init(struct table *t)
{
    t->buckets = calloc(INITIAL_BUCKETS, sizeof(*t->buckets));
    if (t->buckets == NULL)
        return -1;
    t->nbuckets = INITIAL_BUCKETS;
    t->count = 0;
    t->sweep = 0;
    return 0;
}

/* The link that points at the node with this key, or at the NULL ending
 * its chain when there is none. */
static struct hnode **table_find(struct table *t, const char *key, size_t len, uint64_t hash)
{
    struct hnode **link = &t->buckets[hash & (t->nbuckets - 1)];
    for (; *link != NULL; link = &(*link)->next) {
        struct hnode *n = *link;
        if (n->hash == hash && n->key_len == len && memcmp(n->key, key, len) == 0)
            break;
    }
    return link;
}

/* Doubles the buckets when the table is fuller than one node per bucket.
 * Without memory for that it stays as it is: slower, still correct. */
static void table_grow(struct table *t)
{
    if (t->count <= t->nbuckets || t->nbuckets > SIZE_MAX / 2 / sizeof(*t->buckets))
        return;
    size_t nb = t->nbuckets * 2;
    struct hnode **b = calloc(nb, sizeof(*b));
    if (b == NULL)
        return;
    for (size_t i = 0; i < t->nbuckets; i++) {
        struct hnode *n = t->buckets[i];
        while (n != NULL) {
            struct hnode *next = n->next;
            struct hnode **slot = &b[n->hash & (nb - 1)];
            n->next = *slot;
            *slot = n;
            n = next;
        }
    }
    free(t->buckets);
    t->buckets = b;
    t->nbuckets = nb;
    t->sweep = 0;
}

/* Adds a node known not to be in the table. */
static void table_insert(struct table *t, struct hnode *n)
{
    struct hnode **slot = &t->buckets[n->hash & (t->nbuckets - 1)];
    n->next = *slot;
    *slot = n;
    t->count++;
    table_grow(t);
}

/* Unlinks the node *link points at and returns it. */
static struct hnode *table_unlink(struct table *t, struct hnode **link)
{
    struct hnode *n = *link;
    *link = n->next;
    n->next = NULL;
    t->count--;
    return n;
}

/* ------------------------------------------------------------------------ */
/* Bundles (lock held)                                                      */
/* ------------------------------------------------------------------------ */

static void lru_push_head(mizan_memcache_t *c, struct entry *e)
{
    e->prev = NULL;
    e->lru_next = c->head;
    if (c->head != NULL)
        c->head->prev = e;
    c->head = e;
    if (c->tail == NULL)
        c->tail = e;
}

static void lru_unlink(mizan_memcache_t *c, struct entry *e)
{
    if (e->prev != NULL)
        e->prev->lru_next = e->lru_next;
    else
        c->head = e->lru_next;
    if (e->lru_next != NULL)
        e->lru_next->prev = e->prev;
    else
        c->tail = e->prev;
    e->prev = e->lru_next = NULL;
}

/* Takes the bundle *link points at out of the table, the list and the byte
 * count, and puts it on the graveyard. */
static void bundle_remove(mizan_memcache_t *c, struct hnode **link, struct hnode **graveyard)
{
    struct entry *e = (struct entry *)table_unlink(&c->bundles, link);
    lru_unlink(c, e);
    c->bytes -= e->cost;
    e->h.next = *graveyard;
    *graveyard = &e->h;
}

/* The link of a bundle found by node rather than by key. */
static struct hnode **bundle_link(mizan_memcache_t *c, struct entry *e)
{
    return table_find(&c->bundles, e->h.key, e->h.key_len, e->h.hash);
}

/* Drops expired nodes from the next few buckets of a table. Bundles need
 * the LRU bookkeeping of bundle_remove; revisions just leave the table. */
static void sweep(mizan_memcache_t *c, struct table *t, long long now, struct hnode **graveyard)
{
    for (int k = 0; k < SWEEP_BUCKETS; k++) {
        t->sweep = (t->sweep + 1) & (t->nbuckets - 1);
        struct hnode **link = &t->buckets[t->sweep];
        while (*link != NULL) {
            if (!is_expired(*link, now)) {
                link = &(*link)->next;
                continue;
            }
            c->expired++;
            if (t == &c->bundles) {
                bundle_remove(c, link, graveyard);
            } else {
                struct hnode *n = table_unlink(t, link);
                n->next = *graveyard;
                *graveyard = n;
            }
        }
    }
}

/* Frees a graveyard; called without the lock. */
static void bury(struct hnode *n)
{
    while (n != NULL) {
        struct hnode *next = n->next;
        free(n);
        n = next;
    }
}

/* ------------------------------------------------------------------------ */
/* Revisions (lock held)                                                    */
/* ------------------------------------------------------------------------ */

/* The live counter under key, or NULL; an expired one goes to the graveyard. */
static struct rev *rev_lookup(mizan_memcache_t *c, const char *key, long long now,
                              struct hnode **graveyard)
{
    size_t len = strlen(key);
    struct hnode **link = table_find(&c->revs, key, len, hash_key(key, len));
    if (*link == NULL)
        return NULL;
    if (is_expired(*link, now)) {
        struct hnode *n = table_unlink(&c->revs, link);
        n->next = *graveyard;
        *graveyard = n;
        c->expired++;
        return NULL;
    }
    return (struct rev *)*link;
}

/* ------------------------------------------------------------------------ */
/* Public functions                                                         */
/* ------------------------------------------------------------------------ */

mizan_memcache_t *mizan_memcache_new(size_t max_bytes)
{
    mizan_memcache_t *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    if (table_init(&c->bundles) < 0)
        goto fail;
    if (table_init(&c->revs) < 0)
        goto fail;
    if (pthread_mutex_init(&c->lock, NULL) != 0)
        goto fail;
    c->max_bytes = max_bytes;
    c->clock = monotonic_ms;
    return c;
fail:
    free(c->bundles.buckets);
    free(c->revs.buckets);
    free(c);
    return NULL;
}

void mizan_memcache_free(mizan_memcache_t *c)
{
    if (c == NULL)
        return;
    for (struct entry *e = c->head; e != NULL;) {
        struct entry *next = e->lru_next;
        free(e);
        e = next;
    }
    for (size_t i = 0; i < c->revs.nbuckets; i++)
        bury(c->revs.buckets[i]);
    free(c->bundles.buckets);
    free(c->revs.buckets);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

void mizan_memcache_set_clock(mizan_memcache_t *c, mizan_memcache_clock_fn fn, void *ud)
{
    pthread_mutex_lock(&c->lock);
    c->clock = fn != NULL ? fn : monotonic_ms;
    c->clock_ud = fn != NULL ? ud : NULL;
    pthread_mutex_unlock(&c->lock);
}

int mizan_memcache_mget_into(mizan_memcache_t *c, const char *ctx_rev_key, const char *scoped_rev_key,
                             const char *bundle_key, long long *ctx_rev, long long *scoped_rev, char **buf,
                             size_t *cap, size_t *value_len, mizan_err_t *err)
{
    int rc = 0;
    struct hnode *graveyard = NULL;
    size_t bundle_len = bundle_key != NULL ? strlen(bundle_key) : 0;
    uint64_t bundle_hash = bundle_key != NULL ? hash_key(bundle_key, bundle_len) : 0;
    long long now = now_ms(c);

    if (value_len != NULL)
        *value_len = 0;

    pthread_mutex_lock(&c->lock);
    if (ctx_rev_key != NULL && ctx_rev != NULL) {
        struct rev *r = rev_lookup(c, ctx_rev_key, now, &graveyard);
        *ctx_rev = r != NULL ? r->value : 0;
    }
    if (scoped_rev_key != NULL && scoped_rev != NULL) {
        struct rev *r = rev_lookup(c, scoped_rev_key, now, &graveyard);
        *scoped_rev = r != NULL ? r->value : 0;
    }
    if (bundle_key != NULL && buf != NULL && cap != NULL) {
        struct hnode **link = table_find(&c->bundles, bundle_key, bundle_len, bundle_hash);
        if (*link != NULL && is_expired(*link, now)) {
            c->expired++;
            bundle_remove(c, link, &graveyard);
        } else if (*link != NULL) {
            struct entry *e = (struct entry *)*link;
            /* Copying under the lock keeps the lookup one atomic step;
             * values are at most max_bytes / 8. The caller's buffer is
             * reused while it is big enough. */
            if (*buf == NULL || *cap < e->value_len + 1) {
                char *grown = realloc(*buf, e->value_len + 1);
                if (grown != NULL) {
                    *buf = grown;
                    *cap = e->value_len + 1;
                }
            }
            if (*buf == NULL || *cap < e->value_len + 1) {
                rc = mizan_err_set(err, "embedded cache: out of memory");
            } else {
                memcpy(*buf, e->value, e->value_len + 1);
                if (value_len != NULL)
                    *value_len = e->value_len;
                lru_unlink(c, e);
                lru_push_head(c, e);
            }
        }
    }
    pthread_mutex_unlock(&c->lock);
    bury(graveyard);
    return rc;
}

int mizan_memcache_mget(mizan_memcache_t *c, const char *ctx_rev_key, const char *scoped_rev_key,
                        const char *bundle_key, long long *ctx_rev, long long *scoped_rev,
                        char **value, size_t *value_len, mizan_err_t *err)
{
    char *buf = NULL;
    size_t cap = 0, len = 0;
    int rc = mizan_memcache_mget_into(c, ctx_rev_key, scoped_rev_key, bundle_key, ctx_rev, scoped_rev,
                                      value != NULL ? &buf : NULL, &cap, &len, err);
    if (rc < 0 || len == 0) {
        free(buf);
        buf = NULL;
        len = 0;
    }
    if (value != NULL)
        *value = buf;
    if (value_len != NULL)
        *value_len = len;
    return rc;
}

int mizan_memcache_set(mizan_memcache_t *c, const char *key, const char *value, size_t len,
                       int ttl_s, mizan_err_t *err)
{
    struct hnode *graveyard = NULL;
    size_t key_len = strlen(key);
    uint64_t hash = hash_key(key, key_len);
    struct entry *e = NULL;
    int rc = 0;

    /* Cost in a way that cannot overflow: anything near SIZE_MAX is refused. */
    size_t limit = c->max_bytes / 8;
    bool too_big = key_len > limit || len > limit ||
                   key_len + len + MIZAN_MEMCACHE_ENTRY_OVERHEAD > limit;
    if (too_big) {
        rc = mizan_err_set(err, "embedded cache: %zu-byte value over the per-entry limit of %zu",
                           len, limit);
    } else if (ttl_s <= 0) {
        rc = mizan_err_set(err, "embedded cache: TTL must be positive (got %d)", ttl_s);
    } else {
        e = malloc(sizeof(*e) + key_len + 1 + len + 1);
    }
    if (e == NULL && rc == 0) {
        rc = mizan_err_set(err, "embedded cache: out of memory");
    } else if (e != NULL) {
        memcpy(e->data, key, key_len + 1);
        e->value = e->data + key_len + 1;
        memcpy(e->value, value, len);
        e->value[len] = '\0';
        e->h.next = NULL;
        e->h.hash = hash;
        e->h.key_len = key_len;
        e->h.key = e->data;
        e->value_len = len;
        e->cost = key_len + len + MIZAN_MEMCACHE_ENTRY_OVERHEAD;
        e->prev = e->lru_next = NULL;
    }
    long long now = now_ms(c);
    if (e != NULL)
        e->h.expires = deadline(now, ttl_s);

    pthread_mutex_lock(&c->lock);
    struct hnode **link = table_find(&c->bundles, key, key_len, hash);
    if (*link != NULL)
        bundle_remove(c, link, &graveyard);
    if (e != NULL) {
        sweep(c, &c->bundles, now, &graveyard);
        table_insert(&c->bundles, &e->h);
        lru_push_head(c, e);
        c->bytes += e->cost;
        while (c->bytes > c->max_bytes && c->tail != NULL && c->tail != e) {
            c->evictions++;
            bundle_remove(c, bundle_link(c, c->tail), &graveyard);
        }
    }
    sweep(c, &c->revs, now, &graveyard);
    pthread_mutex_unlock(&c->lock);
    bury(graveyard);
    return rc;
}

int mizan_memcache_del(mizan_memcache_t *c, const char *key)
{
    struct hnode *graveyard = NULL;
    size_t key_len = strlen(key);
    uint64_t hash = hash_key(key, key_len);

    pthread_mutex_lock(&c->lock);
    struct hnode **link = table_find(&c->bundles, key, key_len, hash);
    int found = *link != NULL;
    if (found)
        bundle_remove(c, link, &graveyard);
    pthread_mutex_unlock(&c->lock);
    bury(graveyard);
    return found;
}

long long mizan_memcache_incr(mizan_memcache_t *c, const char *rev_key, int min_ttl_s,
                              mizan_err_t *err)
{
    struct hnode *graveyard = NULL;
    size_t key_len = strlen(rev_key);
    long long result = -1;

    /* A node for the case the counter is new, made before locking; it goes
     * to the graveyard when the counter exists. */
    struct rev *fresh = malloc(sizeof(*fresh) + key_len + 1);
    if (fresh == NULL)
        return mizan_err_set(err, "embedded cache: out of memory");
    memcpy(fresh->data, rev_key, key_len + 1);
    fresh->h.next = NULL;
    fresh->h.hash = hash_key(rev_key, key_len);
    fresh->h.key_len = key_len;
    fresh->h.key = fresh->data;
    fresh->h.expires = 0;
    fresh->value = 0;
    long long now = now_ms(c);

    pthread_mutex_lock(&c->lock);
    struct rev *r = rev_lookup(c, rev_key, now, &graveyard);
    if (r == NULL) {
        r = fresh;
        table_insert(&c->revs, &r->h);
    } else {
        fresh->h.next = graveyard;
        graveyard = &fresh->h;
    }
    if (r->value == LLONG_MAX) {
        mizan_err_set(err, "embedded cache: revision counter at its maximum");
    } else {
        result = ++r->value;
        if (min_ttl_s > 0 && r->h.expires != 0) {
            long long until = deadline(now, min_ttl_s);
            if (r->h.expires < until)
                r->h.expires = until;
        } else if (min_ttl_s > 0 && r == fresh) {
            r->h.expires = deadline(now, min_ttl_s);
        }
    }
    sweep(c, &c->revs, now, &graveyard);
    pthread_mutex_unlock(&c->lock);
    bury(graveyard);
    return result;
}

size_t mizan_memcache_drop_prefix(mizan_memcache_t *c, const char *key_prefix)
{
    struct hnode *graveyard = NULL;
    size_t plen = strlen(key_prefix);
    size_t dropped = 0;

    pthread_mutex_lock(&c->lock);
    for (struct entry *e = c->head; e != NULL;) {
        struct entry *next = e->lru_next;
        if (e->h.key_len >= plen && memcmp(e->h.key, key_prefix, plen) == 0) {
            bundle_remove(c, bundle_link(c, e), &graveyard);
            dropped++;
        }
        e = next;
    }
    pthread_mutex_unlock(&c->lock);
    bury(graveyard);
    return dropped;
}

size_t mizan_memcache_bytes(const mizan_memcache_t *c)
{
    mizan_memcache_stats_t st;
    mizan_memcache_stats(c, &st);
    return st.bytes;
}

size_t mizan_memcache_count(const mizan_memcache_t *c)
{
    mizan_memcache_stats_t st;
    mizan_memcache_stats(c, &st);
    return st.count;
}

void mizan_memcache_stats(const mizan_memcache_t *c, mizan_memcache_stats_t *st)
{
    /* The cache is allocated non-const; reading needs the lock all the same. */
    mizan_memcache_t *mc = (mizan_memcache_t *)c;
    pthread_mutex_lock(&mc->lock);
    st->bytes = mc->bytes;
    st->count = mc->bundles.count;
    st->revs = mc->revs.count;
    st->evictions = mc->evictions;
    st->expired = mc->expired;
    pthread_mutex_unlock(&mc->lock);
}
