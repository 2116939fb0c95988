/*
 * metrics.c - counters and the /metrics exposition (see metrics.h).
 */
#include "metrics.h"

#include <dirent.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cache.h"
#include "events.h"
#include "redis.h"
#include "upstream.h"

/* Bucket bounds in seconds. */
static const double bounds[MIZAN_METRICS_NBUCKETS] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                      0.1,    0.25,  0.5,    1,     2.5,  5,     10};

/* Routes with their own series; anything else is "other". */
static const char *routes[] = {"call", "ctx", "schema", "events", "healthz", "readyz", "metrics", "draining", "unknown"};
#define NROUTES (sizeof(routes) / sizeof(routes[0]))
static const int statuses[] = {200, 400, 401, 403, 404, 405, 413, 422, 500, 501, 503, 504};
#define NSTATUSES (sizeof(statuses) / sizeof(statuses[0]))

static atomic_llong requests[NROUTES][NSTATUSES + 1];
static mizan_histogram_t route_latency[NROUTES];

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

int mizan_metrics_init(mizan_gateway_t *gw, mizan_err_t *err)
{
    for (size_t i = 0; i < gw->reg.nfns; i++)
        if ((gw->reg.fns[i]->metrics = calloc(1, sizeof(mizan_fn_metrics_t))) == NULL)
            return mizan_err_set(err, "out of memory");
    for (size_t i = 0; i < gw->reg.nctxs; i++)
        if ((gw->reg.ctxs[i]->metrics = calloc(1, sizeof(mizan_ctx_metrics_t))) == NULL)
            return mizan_err_set(err, "out of memory");
    return 0;
}

void mizan_metrics_deinit(mizan_gateway_t *gw)
{
    for (size_t i = 0; i < gw->reg.nfns; i++) {
        free(gw->reg.fns[i]->metrics);
        gw->reg.fns[i]->metrics = NULL;
    }
    for (size_t i = 0; i < gw->reg.nctxs; i++) {
        free(gw->reg.ctxs[i]->metrics);
        gw->reg.ctxs[i]->metrics = NULL;
    }
}

static size_t route_index(const char *route)
{
    for (size_t i = 0; i < NROUTES; i++)
        if (strcmp(routes[i], route) == 0)
            return i;
    return NROUTES - 1;
}

void mizan_metrics_request(mizan_gateway_t *gw, const char *route, int status, long long us)
{
    (void)gw;
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
    atomic_llong *slot = outcome[0] == 'H' ? &ctx->metrics->hit : outcome[0] == 'M' ? &ctx->metrics->miss
                                                                                     : &ctx->metrics->bypass;
    atomic_fetch_add_explicit(slot, 1, memory_order_relaxed);
}

/* ---- rendering ---------------------------------------------------------- */

typedef struct out {
    char *buf;
    size_t len, cap;
    int failed;
} out_t;

static void emit(out_t *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void emit(out_t *o, const char *fmt, ...)
{
    if (o->failed)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(o->buf + o->len, o->cap - o->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            o->failed = 1;
            return;
        }
        if ((size_t)n < o->cap - o->len) {
            o->len += (size_t)n;
            return;
        }
        size_t ncap = (o->cap + (size_t)n) * 2;
        char *p = realloc(o->buf, ncap);
        if (p == NULL) {
            o->failed = 1;
            return;
        }
        o->buf = p;
        o->cap = ncap;
    }
}

static void emit_histogram(out_t *o, const char *name, const char *label, const char *value,
                           const mizan_histogram_t *h)
{
    long long cum = 0;
    for (size_t i = 0; i <= MIZAN_METRICS_NBUCKETS; i++) {
        cum += atomic_load_explicit(&h->buckets[i], memory_order_relaxed);
        if (i < MIZAN_METRICS_NBUCKETS)
            emit(o, "%s_bucket{%s=\"%s\",le=\"%g\"} %lld\n", name, label, value, bounds[i], cum);
        else
            emit(o, "%s_bucket{%s=\"%s\",le=\"+Inf\"} %lld\n", name, label, value, cum);
    }
    emit(o, "%s_sum{%s=\"%s\"} %.6f\n", name, label, value, (double)atomic_load(&h->sum_us) / 1e6);
    emit(o, "%s_count{%s=\"%s\"} %lld\n", name, label, value, atomic_load(&h->count));
}

static long rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    long pages = 0, rss = 0;
    if (f == NULL)
        return 0;
    if (fscanf(f, "%ld %ld", &pages, &rss) != 2)
        rss = 0;
    fclose(f);
    return rss * sysconf(_SC_PAGESIZE);
}

static long open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    long n = 0;
    if (d == NULL)
        return 0;
    while (readdir(d) != NULL)
        n++;
    closedir(d);
    return n > 3 ? n - 3 : 0; /* ".", ".." and the directory's own fd */
}

char *mizan_metrics_render(mizan_gateway_t *gw)
{
    out_t o = {0};
    o.cap = 16384;
    if ((o.buf = malloc(o.cap)) == NULL)
        return NULL;
    o.buf[0] = '\0';
    emit(&o, "# HELP mizan_requests_total HTTP requests answered, by route and status.\n"
             "# TYPE mizan_requests_total counter\n");
    for (size_t r = 0; r < NROUTES; r++)
        for (size_t s = 0; s <= NSTATUSES; s++) {
            long long n = atomic_load(&requests[r][s]);
            if (n > 0 || (s == 0 && r == 0))
            {
                char code[16];
                snprintf(code, sizeof(code), "%d", s < NSTATUSES ? statuses[s] : 0);
                emit(&o, "mizan_requests_total{route=\"%s\",status=\"%s\"} %lld\n", routes[r],
                     s < NSTATUSES ? code : "other", n);
            }
        }
    emit(&o, "# HELP mizan_request_duration_seconds Time from routing to the reply, by route.\n"
             "# TYPE mizan_request_duration_seconds histogram\n");
    for (size_t r = 0; r < NROUTES; r++)
        emit_histogram(&o, "mizan_request_duration_seconds", "route", routes[r], &route_latency[r]);

    emit(&o, "# HELP mizan_function_duration_seconds Handler run time, by function.\n"
             "# TYPE mizan_function_duration_seconds histogram\n");
    for (size_t i = 0; i < gw->reg.nfns; i++)
        if (gw->reg.fns[i]->metrics != NULL)
            emit_histogram(&o, "mizan_function_duration_seconds", "function", gw->reg.fns[i]->name,
                           &gw->reg.fns[i]->metrics->duration);
    static const struct {
        const char *name, *help;
        size_t off;
    } fn_counters[] = {
        {"mizan_function_runs_total", "Handler runs, by function.", offsetof(mizan_fn_metrics_t, runs)},
        {"mizan_function_errors_total", "Handler runs that raised an error, by function.",
         offsetof(mizan_fn_metrics_t, errors)},
        {"mizan_function_timeouts_total", "Deadlines passed, by function.", offsetof(mizan_fn_metrics_t, timeouts)},
        {"mizan_function_limited_total", "Runs refused at once at the function's max_concurrency, by function.",
         offsetof(mizan_fn_metrics_t, limited)},
    };
    for (size_t k = 0; k < sizeof(fn_counters) / sizeof(fn_counters[0]); k++) {
        emit(&o, "# HELP %s %s\n# TYPE %s counter\n", fn_counters[k].name, fn_counters[k].help, fn_counters[k].name);
        for (size_t i = 0; i < gw->reg.nfns; i++) {
            const mizan_fn_metrics_t *m = gw->reg.fns[i]->metrics;
            if (m != NULL)
                emit(&o, "%s{function=\"%s\"} %lld\n", fn_counters[k].name, gw->reg.fns[i]->name,
                     atomic_load((atomic_llong *)((char *)m + fn_counters[k].off)));
        }
    }
    emit(&o, "# HELP mizan_cache_requests_total Context requests by cache outcome.\n"
             "# TYPE mizan_cache_requests_total counter\n");
    for (size_t i = 0; i < gw->reg.nctxs; i++) {
        const mizan_context_t *c = gw->reg.ctxs[i];
        if (c->metrics == NULL)
            continue;
        emit(&o, "mizan_cache_requests_total{context=\"%s\",outcome=\"hit\"} %lld\n", c->name,
             atomic_load(&c->metrics->hit));
        emit(&o, "mizan_cache_requests_total{context=\"%s\",outcome=\"miss\"} %lld\n", c->name,
             atomic_load(&c->metrics->miss));
        emit(&o, "mizan_cache_requests_total{context=\"%s\",outcome=\"bypass\"} %lld\n", c->name,
             atomic_load(&c->metrics->bypass));
    }
    mizan_cache_stats_t cs = {0};
    if (gw->cache != NULL)
        mizan_cache_stats(gw->cache, &cs);
    size_t queued = 0, busy = 0;
    mizan_pool_load(&gw->pool, &queued, &busy);
    emit(&o,
         "# HELP mizan_cache_coalesced_total Context requests answered by a computation already in progress.\n"
         "# TYPE mizan_cache_coalesced_total counter\nmizan_cache_coalesced_total %lld\n"
         "# HELP mizan_invalidations_published_total Invalidation targets recorded by mutations.\n"
         "# TYPE mizan_invalidations_published_total counter\nmizan_invalidations_published_total %lld\n"
         "# HELP mizan_invalidations_received_total Invalidation events received from the shared bus.\n"
         "# TYPE mizan_invalidations_received_total counter\nmizan_invalidations_received_total %lld\n"
         "# HELP mizan_worker_queue_depth Jobs waiting for a worker.\n"
         "# TYPE mizan_worker_queue_depth gauge\nmizan_worker_queue_depth %zu\n"
         "# HELP mizan_worker_queue_capacity Bound of the job queue.\n"
         "# TYPE mizan_worker_queue_capacity gauge\nmizan_worker_queue_capacity %d\n"
         "# HELP mizan_workers_busy Workers running a handler.\n"
         "# TYPE mizan_workers_busy gauge\nmizan_workers_busy %zu\n"
         "# HELP mizan_workers Worker threads.\n"
         "# TYPE mizan_workers gauge\nmizan_workers %d\n"
         "# HELP mizan_sse_clients Open event streams.\n"
         "# TYPE mizan_sse_clients gauge\nmizan_sse_clients %zu\n"
         "# HELP mizan_events_dropped_total Malformed messages on the events channel, dropped unseen.\n"
         "# TYPE mizan_events_dropped_total counter\nmizan_events_dropped_total %zu\n",
         cs.coalesced, cs.invalidations, cs.events_received, queued, gw->cfg.queue_size, busy, gw->pool.nthreads,
         mizan_events_clients(gw), mizan_events_dropped());
    emit(&o,
         "# HELP mizan_cache_rejected_total Stored values refused because their mac did not verify.\n"
         "# TYPE mizan_cache_rejected_total counter\nmizan_cache_rejected_total %lld\n",
         cs.rejected);
    if (gw->cache != NULL && gw->cfg.redis_url != NULL) {
        mizan_redis_stats_t rs = {0};
        mizan_cache_redis_stats(gw->cache, &rs);
        emit(&o,
             "# HELP mizan_redis_up Redis connections of this instance that are up.\n"
             "# TYPE mizan_redis_up gauge\nmizan_redis_up %d\n"
             "# HELP mizan_redis_reconnects_total Redis reconnections.\n"
             "# TYPE mizan_redis_reconnects_total counter\nmizan_redis_reconnects_total %lld\n"
             "# HELP mizan_redis_replay_queued Invalidations waiting for Redis to come back.\n"
             "# TYPE mizan_redis_replay_queued gauge\nmizan_redis_replay_queued %zu\n"
             "# HELP mizan_redis_revisions_repaired_total Revision keys overwritten because they held no revision.\n"
             "# TYPE mizan_redis_revisions_repaired_total counter\nmizan_redis_revisions_repaired_total %lld\n",
             rs.connections_up, rs.reconnects, rs.replay_queued, rs.repaired);
        if (strncmp(gw->cfg.redis_url, "redis-cluster://", 16) == 0)
            emit(&o,
                 "# HELP mizan_redis_cluster_redirects_total MOVED and ASK replies followed.\n"
                 "# TYPE mizan_redis_cluster_redirects_total counter\n"
                 "mizan_redis_cluster_redirects_total{kind=\"moved\"} %lld\n"
                 "mizan_redis_cluster_redirects_total{kind=\"ask\"} %lld\n"
                 "# HELP mizan_redis_cluster_slot_maps_total Cluster slot maps received.\n"
                 "# TYPE mizan_redis_cluster_slot_maps_total counter\nmizan_redis_cluster_slot_maps_total %lld\n",
                 rs.moved, rs.asked, rs.refreshes);
    }
    char *up = mizan_upstream_metrics(gw);
    if (up != NULL) {
        emit(&o, "%s", up);
        free(up);
    }
    emit(&o,
         "# HELP process_resident_memory_bytes Resident set size.\n"
         "# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes %ld\n"
         "# HELP process_open_fds Open file descriptors.\n"
         "# TYPE process_open_fds gauge\nprocess_open_fds %ld\n",
         rss_bytes(), open_fds());
    if (o.failed) {
        free(o.buf);
        return NULL;
    }
    return o.buf;
}
