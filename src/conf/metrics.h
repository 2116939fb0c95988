/*
 * metrics.h - counters and histograms, written by every layer, and the
 * small stats interface through which the metrics endpoint reads the
 * services' own figures (cache, workers, streams, Redis, upstreams).
 *
 * Every counter is a relaxed atomic updated by the thread that observes
 * the event (I/O loops for requests, workers for function runs); the
 * endpoint (api/metrics_page.c) reads them without locks, so a scrape is a
 * near-instant snapshot, not a transaction. This file calls no other
 * layer: the services register readers at assembly (gateway.c).
 */
#ifndef MIZAN_METRICS_H
#define MIZAN_METRICS_H

#include <stdatomic.h>

#include <stdbool.h>
#include <stddef.h>

#include "registry.h"

/** Histogram bucket upper bounds in seconds (shared by every histogram). */
#define MIZAN_METRICS_NBUCKETS 14

/** A latency histogram. */
typedef struct mizan_histogram {
    atomic_llong buckets[MIZAN_METRICS_NBUCKETS + 1]; /**< last: +Inf */
    atomic_llong sum_us;
    atomic_llong count;
} mizan_histogram_t;

/** Per-function counters (one per registry entry). */
typedef struct mizan_fn_metrics {
    mizan_histogram_t duration; /**< handler run time */
    atomic_llong runs;          /**< handler runs */
    atomic_llong errors;        /**< runs that raised an error */
    atomic_llong timeouts;      /**< deadlines passed */
    atomic_llong limited;       /**< runs refused at the function's concurrency limit */
} mizan_fn_metrics_t;

/** Per-context cache outcome counters. */
typedef struct mizan_ctx_metrics {
    atomic_llong hit, miss, bypass, stale;
} mizan_ctx_metrics_t;

/** Routes with their own series (the last, "unknown", takes the rest), and the statuses counted. */
#define MIZAN_METRICS_NROUTES 9
#define MIZAN_METRICS_NSTATUSES 12
extern const char *const mizan_metrics_routes[MIZAN_METRICS_NROUTES];
extern const int mizan_metrics_statuses[MIZAN_METRICS_NSTATUSES];
extern const double mizan_metrics_bounds[MIZAN_METRICS_NBUCKETS];
/** Requests by route and status (last column: any other status). */
extern atomic_llong mizan_metrics_requests[MIZAN_METRICS_NROUTES][MIZAN_METRICS_NSTATUSES + 1];
/** Time from routing to the reply, by route. */
extern mizan_histogram_t mizan_metrics_latency[MIZAN_METRICS_NROUTES];

/** What the services report at a scrape (each reader fills its part). */
typedef struct mizan_stats {
    /* the cache (store/cache.c) */
    long long coalesced, invalidations, events_received, rejected;
    long long lock_won, lock_waited, lock_served, lock_expired; /**< fill locks (Redis): taken, found held,
                                                                     waited and then served, expired then taken */
    bool redis;                 /**< the cache is a shared Redis */
    int redis_up;
    long long redis_reconnects, redis_repaired;
    size_t redis_replay_queued;
    bool redis_cluster;         /**< the shared Redis is a Redis Cluster */
    long long redis_moved, redis_asked, redis_slot_maps; /**< cluster redirects followed, slot maps read */
    /* the worker pool (exec/pool.c) */
    size_t queued, busy, capacity;
    int workers;
    /* event streams (api/events.c) */
    size_t sse_clients, events_dropped;
    /* upstreams (exec/upstream_client.c): exposition lines, owned (malloc'd), or NULL */
    char *upstream_text;
} mizan_stats_t;

/** A stats reader: adds its figures to out. Any thread; must not block. */
typedef void (*mizan_stats_reader_t)(void *arg, mizan_stats_t *out);

/** Registers a reader (assembly, before the loops run). -1 when the table is full. */
int mizan_metrics_add_reader(mizan_stats_reader_t read, void *arg);

/** Runs every reader into out (zeroed first). Any thread. */
void mizan_metrics_read(mizan_stats_t *out);

/** Allocates the per-function and per-context slots. Start-up. */
int mizan_metrics_init(mizan_registry_t *reg, mizan_err_t *err);

/** Frees the slots and forgets the readers. Main thread, after the loops stopped. */
void mizan_metrics_deinit(mizan_registry_t *reg);

/** Records a finished request (route, status, duration). Loop thread. */
void mizan_metrics_request(const char *route, int status, long long us);

/** Records a handler run. Worker thread. */
void mizan_metrics_function(const mizan_function_t *fn, long long us, bool failed);

/** Records a function deadline passing. */
void mizan_metrics_timeout(const mizan_function_t *fn);

/** Records a run refused because the function was at its concurrency limit. Any thread. */
void mizan_metrics_limited(const mizan_function_t *fn);

/** Records a context's cache outcome ("HIT", "MISS", "BYPASS", "STALE"). */
void mizan_metrics_cache(const mizan_context_t *ctx, const char *outcome);

#endif /* MIZAN_METRICS_H */
