/*
 * gateway.c - start-up and graceful shutdown of the whole gateway.
 *
 * Start: config -> modules -> registry -> workers -> loops (listeners bound
 * in order, so a configured port 0 resolves once and every loop shares it).
 * Stop: refuse new work, close the listeners, let what is in flight finish
 * within drain_timeout_ms, answer the rest 503, then join workers and loops.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <time.h>
#include <unistd.h>

#include "gateway.h"

#include "events.h"
#include "exec.h"
#include "context.h"
#include "route.h"
#include "log.h"
#include "metrics.h"

int mizan_gateway_init(mizan_gateway_t *gw, const char *config_path, const char *exe_dir, mizan_err_t *err)
{
    memset(gw, 0, sizeof(*gw));
    atomic_init(&gw->draining, false);
    atomic_init(&gw->closing, false);
    if (mizan_config_load(&gw->cfg, config_path, exe_dir, err) < 0)
        return -1;
    mizan_log_setup((mizan_log_level_t)gw->cfg.log_level, gw->cfg.instance);
    /* Every schema compiled from here on (modules, config) uses these. */
    mizan_schema_opts_t sopts = {.dir = gw->cfg.schema_dir, .base_uri = gw->cfg.schema_base_uri,
                                 .format_assertion = gw->cfg.format_assertion};
    mizan_schema_set_defaults(&sopts);
    mizan_registry_init(&gw->reg, gw->cfg.function_timeout_ms);
    gw->reg.validate_output = gw->cfg.validate_output;
    if (mizan_modules_load(&gw->reg, &gw->cfg, &gw->mods, &gw->nmods, err) < 0)
        return -1;
    if (mizan_upstream_register(&gw->cfg, &gw->reg, &gw->upstreams, err) < 0)
        return -1;
    if (mizan_registry_finish(&gw->reg, err) < 0)
        return -1;
    if (mizan_registry_limits(&gw->reg, gw->cfg.max_concurrency, gw->cfg.file, err) < 0)
        return -1;
    if (mizan_registry_nonblocking(&gw->reg, gw->cfg.nonblocking, gw->cfg.file, err) < 0)
        return -1;
    return 0;
}

/* The cache is created at start, not init: --check-config needs no Redis. */
static int start_cache(mizan_gateway_t *gw, mizan_err_t *err)
{
    /* Events recorded by the cache go to the streams of every loop. */
    mizan_bus_attach(&gw->bus, mizan_events_publish, NULL);
    gw->cache = mizan_cache_new(&gw->cfg, &gw->reg, &gw->bus, err);
    return gw->cache != NULL ? 0 : -1;
}

/* The cache's completions for a waiter on another loop run on that loop. */
static int post_to_loop(void *target, void (*fn)(void *arg), void *arg)
{
    return mizan_loop_post(target, fn, arg);
}

/* Builds loop i with its services, and starts it on port. */
static int start_loop(mizan_gateway_t *gw, int i, int port, mizan_err_t *err)
{
    mizan_loop_t *loop = &gw->loops[i];
    mizan_services_t *svc = &gw->services[i];
    svc->api = &gw->api;
    loop->cfg = &gw->cfg;
    loop->draining = &gw->draining;
    loop->services = svc;
    loop->hooks.request = mizan_route_request;
    loop->hooks.drain = mizan_route_drain;
    loop->hooks.abort = mizan_route_abort;
    if (mizan_loop_init(loop, i, err) < 0)
        return -1;
    if (mizan_exec_init(&svc->exec, loop->base, &gw->pool, gw->upstreams, err) < 0 ||
        mizan_events_loop_init(loop, err) < 0 ||
        mizan_cache_loop_init(&svc->cache, gw->cache, loop->base, i, post_to_loop, loop, err) < 0)
        return -1;
    return mizan_loop_start(loop, port, err);
}

/* Lets the process hold as many connections as the hard limit allows. */
static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < 4096)
        mizan_log(MIZAN_LOG_WARN, "open file limit is %llu; raise it (LimitNOFILE, ulimit -n) to serve many connections",
                  (unsigned long long)rl.rlim_cur);
}

static int bound_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
        return -1;
    if (ss.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

int mizan_gateway_start(mizan_gateway_t *gw, mizan_err_t *err)
{
    const mizan_config_t *cfg = &gw->cfg;
    gw->started = time(NULL);
    raise_fd_limit();
    if (cfg->token_secret_generated)
        mizan_log(MIZAN_LOG_WARN, "no token secret configured: using a random one; tokens will not survive a restart "
                                  "(set token.secret or MIZAN_TOKEN_SECRET)");
    gw->api.cfg = &gw->cfg;
    gw->api.reg = &gw->reg;
    gw->api.pool = &gw->pool;
    gw->api.draining = &gw->draining;
    gw->api.closing = &gw->closing;
    gw->api.started = gw->started;
    if (start_cache(gw, err) < 0 || mizan_metrics_init(&gw->reg, err) < 0)
        return -1;
    if (mizan_pool_start(&gw->pool, cfg->workers, (size_t)cfg->queue_size, mizan_exec_complete, err) < 0)
        return -1;
    /* What /metrics reads from the services. */
    mizan_metrics_add_reader(mizan_cache_read_stats, gw->cache);
    mizan_metrics_add_reader(mizan_pool_read_stats, &gw->pool);
    mizan_metrics_add_reader(mizan_events_read_stats, NULL);
    mizan_metrics_add_reader(mizan_upstream_read_stats, gw->upstreams);
    gw->loops = calloc((size_t)cfg->io_threads, sizeof(*gw->loops));
    gw->services = calloc((size_t)cfg->io_threads, sizeof(*gw->services));
    if (gw->loops == NULL || gw->services == NULL)
        return mizan_err_set(err, "out of memory");
    int port = cfg->listen_port;
    for (int i = 0; i < cfg->io_threads; i++) {
        gw->nloops = i + 1;
        if (start_loop(gw, i, port, err) < 0)
            return -1;
        if (i == 0 && (port = bound_port(gw->loops[0].fd)) < 0)
            return mizan_err_set(err, "cannot read the bound port: %s", strerror(errno));
    }
    char addr[160];
    snprintf(addr, sizeof(addr), strchr(cfg->listen_host, ':') ? "[%s]:%d" : "%s:%d", cfg->listen_host, port);
    json_t *f = json_pack("{s:s, s:i, s:i, s:i, s:s}", "addr", addr, "io_threads", cfg->io_threads, "workers",
                          cfg->workers, "functions", (int)gw->reg.nfns, "cache",
                          cfg->redis_url != NULL ? "redis" : "embedded");
    mizan_log_fields(MIZAN_LOG_INFO, "listening", f);
    json_decref(f);
    return 0;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

static bool all_idle(mizan_gateway_t *gw)
{
    for (int i = 0; i < gw->nloops; i++)
        if (!mizan_loop_idle(&gw->loops[i]) || !mizan_exec_idle(&gw->services[i].exec))
            return false;
    return true;
}

void mizan_gateway_stop(mizan_gateway_t *gw)
{
    atomic_store(&gw->draining, true);
    for (int i = 0; i < gw->nloops; i++)
        if (gw->loops[i].thread)
            mizan_loop_begin_drain(&gw->loops[i]);
    long deadline = now_ms() + gw->cfg.drain_timeout_ms;
    while (!all_idle(gw) && now_ms() < deadline)
        sleep_ms(5);
    atomic_store(&gw->closing, true);
    bool clean = all_idle(gw);
    if (!clean) {
        mizan_log(MIZAN_LOG_WARN, "drain budget of %d ms spent; answering what is left with 503",
                  gw->cfg.drain_timeout_ms);
        for (int i = 0; i < gw->nloops; i++)
            if (gw->loops[i].thread)
                mizan_loop_abort(&gw->loops[i]);
    }
    /* Late handlers see mizan_req_cancelled() and stop early. */
    mizan_job_cancel_all();
    mizan_pool_stop(&gw->pool);
    /* What is left waits on Redis (answered within its timeout) or on
     * replies being flushed. */
    deadline = now_ms() + 1000 + (gw->cfg.redis_url != NULL ? gw->cfg.redis_timeout_ms : 0);
    while (!all_idle(gw) && now_ms() < deadline)
        sleep_ms(5);
    for (int i = 0; i < gw->nloops; i++) {
        /* The loop thread stops first; then its services let go (what is
         * still out comes back and is answered or freed), then the loop. */
        mizan_loop_t *loop = &gw->loops[i];
        mizan_services_t *svc = &gw->services[i];
        mizan_loop_stop(loop);
        mizan_context_loop_deinit(svc);
        mizan_cache_loop_deinit(&svc->cache);
        mizan_exec_deinit(&svc->exec);
        if (loop->base != NULL)
            mizan_events_loop_deinit(loop);
        mizan_loop_deinit(loop);
    }
    mizan_log(MIZAN_LOG_INFO, "stopped%s", clean ? "" : " (some requests were cut off by the drain budget)");
}

void mizan_gateway_deinit(mizan_gateway_t *gw)
{
    free(gw->loops);
    free(gw->services);
    mizan_pool_deinit(&gw->pool);
    mizan_cache_free(gw->cache);
    mizan_metrics_deinit(&gw->reg);
    mizan_registry_deinit(&gw->reg);
    mizan_upstream_deinit(gw->upstreams);
    mizan_modules_unload(gw->mods, gw->nmods);
    mizan_config_deinit(&gw->cfg);
}
