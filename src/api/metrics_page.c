/*
 * metrics_page.c - GET /metrics: the Prometheus text exposition of the
 * counters (conf/metrics.c) and of what the services report through their
 * stats readers. Loop thread (any thread would do: it only reads).
 */
#include <dirent.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "metrics_page.h"
#include "metrics.h"

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
            emit(o, "%s_bucket{%s=\"%s\",le=\"%g\"} %lld\n", name, label, value, mizan_metrics_bounds[i], cum);
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

char *mizan_metrics_render(const mizan_api_t *api)
{
    const mizan_registry_t *reg = api->reg;
    mizan_stats_t st;
    mizan_metrics_read(&st);
    out_t o = {0};
    o.cap = 16384;
    if ((o.buf = malloc(o.cap)) == NULL) {
        free(st.upstream_text);
        return NULL;
    }
    o.buf[0] = '\0';
    emit(&o, "# HELP mizan_requests_total HTTP requests answered, by route and status.\n"
             "# TYPE mizan_requests_total counter\n");
    for (size_t r = 0; r < MIZAN_METRICS_NROUTES; r++)
        for (size_t s = 0; s <= MIZAN_METRICS_NSTATUSES; s++) {
            long long n = atomic_load(&mizan_metrics_requests[r][s]);
            if (n > 0 || (s == 0 && r == 0))
            {
                char code[16];
                snprintf(code, sizeof(code), "%d", s < MIZAN_METRICS_NSTATUSES ? mizan_metrics_statuses[s] : 0);
                emit(&o, "mizan_requests_total{route=\"%s\",status=\"%s\"} %lld\n", mizan_metrics_routes[r],
                     s < MIZAN_METRICS_NSTATUSES ? code : "other", n);
            }
        }
    emit(&o, "# HELP mizan_request_duration_seconds Time from routing to the reply, by route.\n"
             "# TYPE mizan_request_duration_seconds histogram\n");
    for (size_t r = 0; r < MIZAN_METRICS_NROUTES; r++)
        emit_histogram(&o, "mizan_request_duration_seconds", "route", mizan_metrics_routes[r], &mizan_metrics_latency[r]);

    emit(&o, "# HELP mizan_function_duration_seconds Handler run time, by function.\n"
             "# TYPE mizan_function_duration_seconds histogram\n");
    for (size_t i = 0; i < reg->nfns; i++)
        if (reg->fns[i]->metrics != NULL)
            emit_histogram(&o, "mizan_function_duration_seconds", "function", reg->fns[i]->name,
                           &reg->fns[i]->metrics->duration);
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
        for (size_t i = 0; i < reg->nfns; i++) {
            const mizan_fn_metrics_t *m = reg->fns[i]->metrics;
            if (m != NULL)
                emit(&o, "%s{function=\"%s\"} %lld\n", fn_counters[k].name, reg->fns[i]->name,
                     atomic_load((atomic_llong *)((char *)m + fn_counters[k].off)));
        }
    }
    emit(&o, "# HELP mizan_cache_requests_total Context requests by cache outcome.\n"
             "# TYPE mizan_cache_requests_total counter\n");
    for (size_t i = 0; i < reg->nctxs; i++) {
        const mizan_context_t *c = reg->ctxs[i];
        if (c->metrics == NULL)
            continue;
        emit(&o, "mizan_cache_requests_total{context=\"%s\",outcome=\"hit\"} %lld\n", c->name,
             atomic_load(&c->metrics->hit));
        emit(&o, "mizan_cache_requests_total{context=\"%s\",outcome=\"miss\"} %lld\n", c->name,
             atomic_load(&c->metrics->miss));
        emit(&o, "mizan_cache_requests_total{context=\"%s\",outcome=\"bypass\"} %lld\n", c->name,
             atomic_load(&c->metrics->bypass));
        if (c->stale_s > 0)
            emit(&o, "mizan_cache_requests_total{context=\"%s\",outcome=\"stale\"} %lld\n", c->name,
                 atomic_load(&c->metrics->stale));
    }
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
         st.coalesced, st.invalidations, st.events_received, st.queued, api->cfg->queue_size, st.busy, st.workers,
         st.sse_clients, st.events_dropped);
    emit(&o,
         "# HELP mizan_cache_rejected_total Stored values refused because their mac did not verify.\n"
         "# TYPE mizan_cache_rejected_total counter\nmizan_cache_rejected_total %lld\n",
         st.rejected);
    if (st.redis) {
        emit(&o,
             "# HELP mizan_redis_up Redis connections of this instance that are up.\n"
             "# TYPE mizan_redis_up gauge\nmizan_redis_up %d\n"
             "# HELP mizan_redis_reconnects_total Redis reconnections.\n"
             "# TYPE mizan_redis_reconnects_total counter\nmizan_redis_reconnects_total %lld\n"
             "# HELP mizan_redis_replay_queued Invalidations waiting for Redis to come back.\n"
             "# TYPE mizan_redis_replay_queued gauge\nmizan_redis_replay_queued %zu\n"
             "# HELP mizan_redis_revisions_repaired_total Revision keys overwritten because they held no revision.\n"
             "# TYPE mizan_redis_revisions_repaired_total counter\nmizan_redis_revisions_repaired_total %lld\n",
             st.redis_up, st.redis_reconnects, st.redis_replay_queued, st.redis_repaired);
        emit(&o,
             "# HELP mizan_cache_fill_locks_total Fill locks (one computation per bundle across the fleet), by "
             "outcome: won (this instance computed), waited (another held it), served (waited, then served the "
             "holder's bundle), expired (waited, then took the lock after it lapsed and computed).\n"
             "# TYPE mizan_cache_fill_locks_total counter\n"
             "mizan_cache_fill_locks_total{outcome=\"won\"} %lld\n"
             "mizan_cache_fill_locks_total{outcome=\"waited\"} %lld\n"
             "mizan_cache_fill_locks_total{outcome=\"served\"} %lld\n"
             "mizan_cache_fill_locks_total{outcome=\"expired\"} %lld\n",
             st.lock_won, st.lock_waited, st.lock_served, st.lock_expired);
        if (st.redis_cluster)
            emit(&o,
                 "# HELP mizan_redis_cluster_redirects_total MOVED and ASK replies followed.\n"
                 "# TYPE mizan_redis_cluster_redirects_total counter\n"
                 "mizan_redis_cluster_redirects_total{kind=\"moved\"} %lld\n"
                 "mizan_redis_cluster_redirects_total{kind=\"ask\"} %lld\n"
                 "# HELP mizan_redis_cluster_slot_maps_total Cluster slot maps received.\n"
                 "# TYPE mizan_redis_cluster_slot_maps_total counter\nmizan_redis_cluster_slot_maps_total %lld\n",
                 st.redis_moved, st.redis_asked, st.redis_slot_maps);
    }
    if (st.upstream_text != NULL) {
        emit(&o, "%s", st.upstream_text);
        free(st.upstream_text);
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
