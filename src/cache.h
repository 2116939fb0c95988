/*
 * cache.h - context bundles, revisions and invalidation events
 * (PROTOCOL.md sections 5-7), over the embedded in-process store or a
 * shared Redis.
 *
 * A context request flows: mizan_cache_fetch() looks the bundle up (one
 * MGET of context revision, scoped revision and bundle); a fresh stored
 * bundle is a HIT; otherwise the request joins an identical computation
 * already running on this instance (coalescing, keyed by the bundle key and
 * the revisions read) or leads a new one, and mizan_cache_computed() stores
 * the result with the revisions read before the functions ran (MISS), as
 * an authenticated value (mac "\n" doc, PROTOCOL.md section 6): a value
 * whose mac does not verify is a miss, never served. A
 * mutation's targets go through mizan_cache_invalidate(): revision bumps
 * and events, completed before its response is sent.
 *
 * Read-your-writes: a mutation's revision bump completes before its
 * response, and every bundle is stored with the revisions read before it
 * was computed, so any instance reading after the acknowledgement sees a
 * newer revision than the stored one and recomputes.
 */
#ifndef MIZAN_CACHE_H
#define MIZAN_CACHE_H

#include <stdatomic.h>
#include <stdbool.h>

#include <jansson.h>

#include "gateway.h"

typedef struct mizan_cache mizan_cache_t;

/** Counters for metrics and tests (all monotonic). */
typedef struct mizan_cache_stats {
    long long hits, misses, bypasses, coalesced, invalidations, events_received;
    long long rejected; /**< stored values refused: their mac did not verify */
} mizan_cache_stats_t;

/** Creates the cache of gw (embedded or Redis by the config). Start-up only. */
int mizan_cache_new(mizan_gateway_t *gw, mizan_err_t *err);

/** Attaches the loop's Redis connections and event streams. Main thread, before the loop runs. */
int mizan_cache_loop_init(mizan_loop_t *loop, mizan_err_t *err);

/** Frees the loop's part (after the loop thread stopped). */
void mizan_cache_loop_deinit(mizan_loop_t *loop);

void mizan_cache_free(mizan_cache_t *cache);

/** Serves a validated, authorised context request: HIT, or computes via mizan_context_compute(). */
void mizan_cache_fetch(mizan_exchange_t *ex);

/** The computed bundle (stolen) of ex: store when cacheable, answer ex and coalesced waiters. */
void mizan_cache_computed(mizan_exchange_t *ex, json_t *bundle, bool cacheable);

/** Releases the lookup state of a finished exchange (and fails its flight if it led one). */
void mizan_cache_exchange_done(mizan_exchange_t *ex);

/**
 * Bumps revisions and publishes events for targets (borrowed), then
 * done(ex, rc). Used by successful mutations and by mutations that failed
 * after they may have run (call.c). Loop thread.
 */
void mizan_cache_invalidate(mizan_exchange_t *ex, const json_t *targets, void (*done)(mizan_exchange_t *ex, int rc));

/** True when the loop can read and write bundles (always, embedded). That loop's thread. */
bool mizan_cache_ready(mizan_loop_t *loop);

void mizan_cache_stats(mizan_cache_t *cache, mizan_cache_stats_t *out);

struct mizan_redis_stats;
/** Redis connection counters (zeros when embedded). */
void mizan_cache_redis_stats(mizan_cache_t *cache, struct mizan_redis_stats *out);


/* context.c: runs the context's functions for ex and calls mizan_cache_computed(). */
void mizan_context_compute(mizan_exchange_t *ex);

#endif /* MIZAN_CACHE_H */
