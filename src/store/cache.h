/*
 * cache.h - context bundles, revisions and invalidation events
 * (PROTOCOL.md sections 5-7), over the embedded in-process store or a
 * shared Redis.
 *
 * A context request flows: mizan_cache_fetch() looks the bundle up (one
 * MGET of context revision, scoped revision and bundle); a fresh stored
 * bundle is a HIT; one past its TTL but within the context's stale_s is
 * STALE (one lookup per instance, and with Redis per fleet, is told to
 * recompute it in the background); otherwise the request joins an identical computation
 * already running on this instance (coalescing, keyed by the bundle key and
 * the revisions read) or is told to compute, and mizan_cache_store() stores
 * the result with the revisions read before the functions ran (MISS). With
 * Redis and cache.fill_lock, a leader first takes a fill lock in Redis on
 * (bundle key, revisions): the loser polls for the winner's bundle (every
 * 25 ms, up to the lock's TTL) and serves it, or takes the lock once it
 * lapses. The result is stored as
 * an authenticated value (mac "\n" doc, PROTOCOL.md section 6): a value
 * whose mac does not verify is a miss, never served. A
 * mutation's targets go through mizan_cache_invalidate(): revision bumps
 * and events, completed before its response is sent.
 *
 * Read-your-writes: a mutation's revision bump completes before its
 * response, and every bundle is stored with the revisions read before it
 * was computed, so any instance reading after the acknowledgement sees a
 * newer revision than the stored one and recomputes.
 *
 * The store never computes, never answers HTTP and never delivers events
 * itself: outcomes go to the caller's callbacks (on the caller's loop, by
 * the poster that loop's part was given), and events to the bus.
 *
 * DESIGN (threads): mizan_cache_t is shared by every loop; its flight
 * table is guarded by `lock`, its counters are atomics, the rest is
 * immutable after start-up. A mizan_cache_loop_t and every lookup belong
 * to one loop's thread.
 */
#ifndef MIZAN_CACHE_H
#define MIZAN_CACHE_H

#include <stdatomic.h>
#include <stdbool.h>

#include <jansson.h>

#include "bus.h"
#include "config.h"
#include "metrics.h"
#include "registry.h"

struct event_base;
struct mizan_redis;

typedef struct mizan_cache mizan_cache_t;
typedef struct mizan_lookup mizan_lookup_t;

/** Counters for metrics and tests (all monotonic). */
typedef struct mizan_cache_stats {
    long long hits, misses, bypasses, coalesced, invalidations, events_received;
    long long rejected; /**< stored values refused: their mac did not verify */
    long long stale;    /**< expired bundles served within stale_s */
    long long lock_won, lock_waited, lock_served, lock_expired; /**< fill locks, see mizan_stats_t */
} mizan_cache_stats_t;

/** Runs fn(arg) on the thread of the loop `target` names. Any thread; -1 when it cannot. */
typedef int (*mizan_cache_poster_t)(void *target, void (*fn)(void *arg), void *arg);

/** One loop's part of the cache. Loop thread only, after set-up. */
typedef struct mizan_cache_loop {
    mizan_cache_t *cache;       /**< the instance's */
    int index;                  /**< the loop's index (loop 0 subscribes to the events channel) */
    struct mizan_redis *redis;  /**< this loop's Redis commands (NULL: embedded) */
    struct mizan_redis *sub;    /**< the instance's subscriber (loop 0 only) */
    mizan_cache_poster_t post;  /**< runs a completion on this loop */
    void *target;               /**< post's first argument: this loop */
    struct event_base *base;    /**< the loop's (fill lock polling) */
    char *value;                /**< embedded store: the buffer a lookup reads a value into (reused) */
    size_t value_cap;
} mizan_cache_loop_t;

/** What a lookup found. */
typedef enum mizan_cache_outcome {
    MIZAN_CACHE_HIT,      /**< a fresh stored bundle: text */
    MIZAN_CACHE_COMPUTE,  /**< compute, then mizan_cache_store() (stored when the revisions are known) */
    MIZAN_CACHE_SHARED,   /**< an identical computation's answer: text, with its X-Mizan-Cache in status */
    MIZAN_CACHE_GONE,     /**< the computation this lookup waited for was cut off (shutdown) */
    MIZAN_CACHE_FAILED,   /**< out of memory */
    MIZAN_CACHE_STALE,    /**< an expired bundle within its stale_s: text, status "STALE"; another request
                               (on this instance or another) is recomputing it */
    MIZAN_CACHE_STALE_REFRESH, /**< STALE, and this lookup leads the recomputation: reply with text, then
                               compute and mizan_cache_store() (whose status is then not a reply's) */
} mizan_cache_outcome_t;

/**
 * A lookup's answer, on the asking loop: text (borrowed for the call) for
 * HIT and SHARED, with status the X-Mizan-Cache value ("HIT", "MISS",
 * "BYPASS"). Called exactly once per mizan_cache_fetch().
 */
typedef void (*mizan_cache_answer_t)(void *arg, mizan_cache_outcome_t outcome, const char *status, const char *text,
                                     size_t len);

/** Creates the cache (embedded or Redis by cfg); events go to bus. Start-up only. */
mizan_cache_t *mizan_cache_new(const mizan_config_t *cfg, const mizan_registry_t *reg, const mizan_bus_t *bus,
                               mizan_err_t *err);

/** Sets up a loop's part on base (Redis connections, the subscriber on loop 0). Main thread, before the loop runs. */
int mizan_cache_loop_init(mizan_cache_loop_t *cl, mizan_cache_t *cache, struct event_base *base, int index,
                          mizan_cache_poster_t post, void *target, mizan_err_t *err);

/** Frees a loop's part (after the loop thread stopped). */
void mizan_cache_loop_deinit(mizan_cache_loop_t *cl);

void mizan_cache_free(mizan_cache_t *cache);

/**
 * The keys of one bundle: context ctx's for params under one scope
 * (PROTOCOL.md section 6). Immutable once made; a caller may keep them and
 * fetch with them again for the same (context, params, scope).
 */
typedef struct mizan_cache_keys mizan_cache_keys_t;

/** The scope string of ctx for caller id into out (outlen bytes). Returns 0, or -1 with err. */
int mizan_cache_scope(const mizan_cache_loop_t *cl, const mizan_context_t *ctx, const mizan_identity_t *id,
                      char *out, size_t outlen, mizan_err_t *err);

/**
 * Derives the keys of ctx's bundle for params (borrowed) under scope (from
 * mizan_cache_scope()). Returns new keys (mizan_cache_keys_free()), or
 * NULL with err when they cannot be derived. Any thread.
 */
mizan_cache_keys_t *mizan_cache_keys_new(const mizan_cache_loop_t *cl, const mizan_context_t *ctx,
                                         const json_t *params, const char *scope, mizan_err_t *err);

void mizan_cache_keys_free(mizan_cache_keys_t *keys);

/**
 * Looks up context ctx's bundle under keys (borrowed for the call; NULL:
 * not cached, the answer is COMPUTE); *lk receives the lookup state (the
 * caller frees it with mizan_cache_lookup_free() when its request ends,
 * after the answer). answer(arg, ...) runs once: now or later, on this
 * loop. rid names the request in logs. Loop thread.
 */
void mizan_cache_fetch(mizan_cache_loop_t *cl, const mizan_context_t *ctx, const mizan_cache_keys_t *keys,
                       const char *rid, mizan_lookup_t **lk, mizan_cache_answer_t answer, void *arg);

/**
 * The computed bundle text (borrowed) of a COMPUTE lookup: stored when
 * cacheable and the revisions are known, handed to the lookups waiting on
 * this one. Returns the X-Mizan-Cache value ("MISS" or "BYPASS"). lk NULL
 * (no lookup was made) counts as BYPASS. Loop thread.
 */
const char *mizan_cache_store(mizan_cache_loop_t *cl, mizan_lookup_t *lk, const mizan_context_t *ctx,
                              const char *text, size_t len, bool cacheable);

/** Releases a lookup (and fails the computation waiters share, if it led one unfinished). NULL ok. */
void mizan_cache_lookup_free(mizan_lookup_t *lk);

/**
 * Bumps revisions and publishes events for targets (borrowed), then
 * done(arg, rc), now or later on this loop: 0 when recorded (or queued for
 * replay), -1 on failure. Loop thread.
 */
void mizan_cache_invalidate(mizan_cache_loop_t *cl, const json_t *targets, const char *rid,
                            void (*done)(void *arg, int rc), void *arg);

/** True when the loop can read and write bundles (always, embedded). That loop's thread. */
bool mizan_cache_ready(const mizan_cache_loop_t *cl);

void mizan_cache_stats(mizan_cache_t *cache, mizan_cache_stats_t *out);

/** A stats reader (metrics.h) for the cache and its Redis connections; arg is the cache. */
void mizan_cache_read_stats(void *arg, mizan_stats_t *out);

#endif /* MIZAN_CACHE_H */
