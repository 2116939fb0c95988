/*
 * metrics.c - counters and the stats readers (see metrics.h). The
 * exposition is rendered by the metrics endpoint (api/metrics_page.c).
 */
#include "metrics.h"

#include <dirent.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>


/* Bucket bounds in seconds. */
const double mizan_metrics_bounds[MIZAN_METRICS_NBUCKETS] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                      0.1,    0.25,  0.5,    1,     2.5,  5,     10};

/* Routes with their own series; anything else is "other". */
const char *const mizan_metrics_routes[MIZAN_METRICS_NROUTES] = {"call", "ctx", "schema", "events", "healthz", "readyz", "metrics", "draining", "unknown"};
#define NROUTES MIZAN_METRICS_NROUTES
#define routes mizan_metrics_routes
#define bounds mizan_metrics_bounds
const int mizan_metrics_statuses[MIZAN_METRICS_NSTATUSES] = {200, 400, 401, 403, 404, 405, 413, 422, 500, 501, 503, 504};
#define NSTATUSES MIZAN_METRICS_NSTATUSES
#define statuses mizan_metrics_statuses

atomic_llong mizan_metrics_requests[NROUTES][NSTATUSES + 1];
mizan_histogram_t mizan_metrics_latency[NROUTES];
#define requests mizan_metrics_requests
#define route_latency mizan_metrics_latency

/* The stats readers registered at assembly (start-up; read-only afterwards). */
static struct {
    mizan_stats_reader_t read;
    void *arg;
} readers[8];
static size_t nreaders;

static void observe(mizan_histogram_t *h, long long us)
{
    double s = (double)us / 1e6;
    size_t i = 0;
    while (i < MIZAN_METRICS_NBUCKETS && s > bounds[i])
        i++;
    atomic_fetch_add_explicit(&h->buckets[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum_us, us, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->count, 1, memory_order_relaxed);
}

int mizan_metrics_init(mizan_registry_t *reg, mizan_err_t *err)
{
    for (size_t i = 0; i < reg->nfns; i++)
        if ((reg->fns[i]->metrics = calloc(1, sizeof(mizan_fn_metrics_t))) == NULL)
            return mizan_err_set(err, "out of memory");
    for (size_t i = 0; i < reg->nctxs; i++)
        if ((reg->ctxs[i]->metrics = calloc(1, sizeof(mizan_ctx_metrics_t))) == NULL)
            return mizan_err_set(err, "out of memory");
    return 0;
}

void mizan_metrics_deinit(mizan_registry_t *reg)
{
    for (size_t i = 0; i < reg->nfns; i++) {
        free(reg->fns[i]->metrics);
        reg->fns[i]->metrics = NULL;
    }
    for (size_t i = 0; i < reg->nctxs; i++) {
        free(reg->ctxs[i]->metrics);
        reg->ctxs[i]->metrics = NULL;
    }
    nreaders = 0;
}

int mizan_metrics_add_reader(mizan_stats_reader_t read, void *arg)
{
    if (nreaders >= sizeof(readers) / sizeof(readers[0]))
        return -1;
    readers[nreaders].read = read;
    readers[nreaders].arg = arg;
    nreaders++;
    return 0;
}

void mizan_metrics_read(mizan_stats_t *out)
{
    memset(out, 0, sizeof(*out));
    for (size_t i = 0; i < nreaders; i++)
        readers[i].read(readers[i].arg, out);
}

static size_t route_index(const char *route)
{
    for (size_t i = 0; i < NROUTES; i++)
        if (strcmp(routes[i], route) == 0)
            return i;
    return NROUTES - 1;
}

void mizan_metrics_request(const char *route, int status, long long us)
{
    size_t r = route_index(route), s = 0;
    while (s < NSTATUSES && statuses[s] != status)
        s++;
    atomic_fetch_add_explicit(&requests[r][s], 1, memory_order_relaxed);
    observe(&route_latency[r], us);
}

void mizan_metrics_function(const mizan_function_t *fn, long long us, bool failed)
{
    if (fn->metrics == NULL)
        return;
    atomic_fetch_add_explicit(&fn->metrics->runs, 1, memory_order_relaxed);
    if (failed)
        atomic_fetch_add_explicit(&fn->metrics->errors, 1, memory_order_relaxed);
    observe(&fn->metrics->duration, us);
}

void mizan_metrics_timeout(const mizan_function_t *fn)
{
    if (fn->metrics != NULL)
        atomic_fetch_add_explicit(&fn->metrics->timeouts, 1, memory_order_relaxed);
}

void mizan_metrics_limited(const mizan_function_t *fn)
{
    if (fn->metrics != NULL)
        atomic_fetch_add_explicit(&fn->metrics->limited, 1, memory_order_relaxed);
}

void mizan_metrics_cache(const mizan_context_t *ctx, const char *outcome)
{
    if (ctx->metrics == NULL)
        return;
    atomic_llong *slot = outcome[0] == 'H'   ? &ctx->metrics->hit
                         : outcome[0] == 'M' ? &ctx->metrics->miss
                         : outcome[0] == 'S' ? &ctx->metrics->stale
                                             : &ctx->metrics->bypass;
    atomic_fetch_add_explicit(slot, 1, memory_order_relaxed);
}

