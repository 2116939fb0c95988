/*
 * memcache.h - the embedded cache, used when no Redis is configured.
 *
 * It runs the scheme of PROTOCOL.md section 6 in process, with the same
 * keys and the same stored values as Redis:
 *
 *  - bundles: key -> the stored value text, mac "\n"
 *    `{"v":2,"rev":[context_rev, scoped_rev],"bundle":{...}}` (sealed and
 *    checked by cache.c with cachekey.c, the same as in Redis), each with an
 *    expiry (the context's TTL), in a least-recently-used list bounded in
 *    bytes; the least recently set or read bundle goes first;
 *  - revision counters: key -> integer, missing reads as 0. Context
 *    revisions never expire; scoped revisions carry an expiry that an
 *    increment extends to at least a given TTL. Counters live in their own
 *    table and are never evicted to make room for bundles: losing one could
 *    resurrect a stale bundle.
 *
 * Expired entries are dropped when they are looked up, and a few hash
 * buckets are swept on every write so that entries nobody asks for again
 * do not linger.
 *
 * DESIGN: one mutex guards everything. Critical sections are short: new
 * entries are allocated and filled before the lock is taken and dropped
 * entries are freed after it is released, so inside the lock there are
 * only hash lookups, list splices and, for a hit, one copy of the value.
 * Every function below may be called from any thread.
 */
#ifndef MIZAN_MEMCACHE_H
#define MIZAN_MEMCACHE_H

#include <stddef.h>

#include "error.h"

/** An embedded cache; opaque. */
typedef struct mizan_memcache mizan_memcache_t;

/** A monotonic clock in milliseconds (tests substitute a fake one). */
typedef long long (*mizan_memcache_clock_fn)(void *ud);

/** Counters for metrics. */
typedef struct mizan_memcache_stats {
    size_t bytes;                  /**< bytes charged to the bundles held */
    size_t count;                  /**< bundles held */
    size_t revs;                   /**< revision counters held */
    unsigned long long evictions;  /**< bundles dropped to make room */
    unsigned long long expired;    /**< bundles and counters dropped at expiry */
} mizan_memcache_stats_t;

/**
 * Bytes charged for a bundle: its key, its value and this much bookkeeping.
 * A bundle costing more than an eighth of the cache is refused.
 */
#define MIZAN_MEMCACHE_ENTRY_OVERHEAD 96

/**
 * A new, empty cache holding at most max_bytes of bundles (see
 * MIZAN_MEMCACHE_ENTRY_OVERHEAD). Returns NULL when out of memory.
 */
mizan_memcache_t *mizan_memcache_new(size_t max_bytes);

/** Frees c and everything in it. No other thread may be using it. NULL is fine. */
void mizan_memcache_free(mizan_memcache_t *c);

/**
 * Replaces the clock (NULL restores CLOCK_MONOTONIC). For tests; call it
 * before other threads use c. fn is called without the lock held.
 */
void mizan_memcache_set_clock(mizan_memcache_t *c, mizan_memcache_clock_fn fn, void *ud);

/**
 * One lookup, as Redis `MGET ctx_rev scoped_rev bundle` answers it, taken
 * atomically: the two revisions (0 when missing or expired) and a new
 * malloc'd NUL-terminated copy of the stored value in *value (NULL when
 * missing or expired), its length in *value_len. Any key may be NULL, and
 * then its output is left alone (revisions) or set to NULL/0 (value). A hit
 * makes the bundle the most recently used. Returns 0, or -1 (err filled,
 * *value NULL) when the copy cannot be allocated.
 */
int mizan_memcache_mget(mizan_memcache_t *c, const char *ctx_rev_key, const char *scoped_rev_key,
                        const char *bundle_key, long long *ctx_rev, long long *scoped_rev,
                        char **value, size_t *value_len, mizan_err_t *err);

/**
 * mizan_memcache_mget() into the caller's buffer: *buf (malloc'd, *cap
 * bytes; NULL/0 at first) is reused, or grown with realloc, to hold the
 * value; *value_len is 0 when there is none. The caller frees *buf.
 */
int mizan_memcache_mget_into(mizan_memcache_t *c, const char *ctx_rev_key, const char *scoped_rev_key,
                             const char *bundle_key, long long *ctx_rev, long long *scoped_rev, char **buf,
                             size_t *cap, size_t *value_len, mizan_err_t *err);

/**
 * Stores a copy of value (len bytes) under key for ttl_s seconds (must be
 * > 0), replacing any previous value, evicting least recently used bundles
 * as needed. Returns 0, or -1 with err filled and nothing stored when the
 * bundle costs more than max_bytes / 8, ttl_s is not positive, or memory
 * runs out. An earlier value under the key is removed even when the new
 * one is not stored, so a failed store never leaves an older text behind.
 */
int mizan_memcache_set(mizan_memcache_t *c, const char *key, const char *value, size_t len,
                       int ttl_s, mizan_err_t *err);

/** Removes the bundle under key. Returns 1 when there was one, else 0. */
int mizan_memcache_del(mizan_memcache_t *c, const char *key);

/**
 * Adds one to the revision counter rev_key (a missing or expired counter
 * counts from 0) and returns the new value. With min_ttl_s > 0 the counter
 * then lives at least min_ttl_s more seconds (a longer expiry, or none, is
 * kept); with 0 a new counter never expires and an existing one keeps its
 * expiry. Returns -1 with err filled when out of memory or at LLONG_MAX.
 */
long long mizan_memcache_incr(mizan_memcache_t *c, const char *rev_key, int min_ttl_s,
                              mizan_err_t *err);

/**
 * Removes every bundle whose key starts with key_prefix (for example
 * "mizan:ctx:{post}:" for every bundle of context post), to give the memory
 * back once an invalidation made them stale. Walks all bundles. Returns how
 * many were removed.
 */
size_t mizan_memcache_drop_prefix(mizan_memcache_t *c, const char *key_prefix);

/** Bytes charged to the bundles currently held. */
size_t mizan_memcache_bytes(const mizan_memcache_t *c);

/** Number of bundles currently held (expired ones not yet dropped included). */
size_t mizan_memcache_count(const mizan_memcache_t *c);

/** A consistent snapshot of the counters. */
void mizan_memcache_stats(const mizan_memcache_t *c, mizan_memcache_stats_t *st);

#endif /* MIZAN_MEMCACHE_H */
