/*
 * metrics.h - counters and histograms, rendered at /metrics in the
 * Prometheus text exposition format.
 *
 * Every counter is a relaxed atomic updated by the thread that observes
 * the event (I/O loops for requests, workers for function runs); the
 * renderer reads them without locks, so a scrape is a near-instant snapshot,
 * not a transaction.
 */
#ifndef MIZAN_METRICS_H
#define MIZAN_METRICS_H

#include <stdatomic.h>

#include "gateway.h"

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
    atomic_llong hit, miss, bypass;
} mizan_ctx_metrics_t;

/** Allocates the per-function and per-context slots. Start-up. */
int mizan_metrics_init(mizan_gateway_t *gw, mizan_err_t *err);
void mizan_metrics_deinit(mizan_gateway_t *gw);

/** Records a finished request (route, status, duration). Loop thread. */
void mizan_metrics_request(mizan_gateway_t *gw, const char *route, int status, long long us);

/** Records a handler run. Worker thread. */
void mizan_metrics_function(const mizan_function_t *fn, long long us, bool failed);

/** Records a function deadline passing. */
void mizan_metrics_timeout(const mizan_function_t *fn);

/** Records a run refused because the function was at its concurrency limit. Any thread. */
void mizan_metrics_limited(const mizan_function_t *fn);

/** Records a context's cache outcome ("HIT", "MISS", "BYPASS"). */
void mizan_metrics_cache(const mizan_context_t *ctx, const char *outcome);

/** Renders everything (new malloc'd text). */
char *mizan_metrics_render(mizan_gateway_t *gw);

#endif /* MIZAN_METRICS_H */
