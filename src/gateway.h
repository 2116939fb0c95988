/*
 * gateway.h - the assembly: the running gateway, built from the layers
 * below (src/README.md). It loads the configuration, modules and registry,
 * builds the instance-wide services (worker pool, cache, event bus,
 * upstreams) and, per I/O loop, the loop's services (executor, its part of
 * the cache, its event streams), hands them to the loop with the hooks
 * the loop runs (route, drain, abort), and tears it all down in order.
 *
 * DESIGN (threads): the main thread builds everything, starts the workers
 * and the I/O loops, then waits for SIGTERM/SIGINT and drains. Everything
 * in mizan_gateway_t except `draining`, `closing` and what the loops own
 * is immutable once the loops run.
 */
#ifndef MIZAN_GATEWAY_H
#define MIZAN_GATEWAY_H

#include <stdatomic.h>
#include <stdbool.h>
#include <time.h>

#include "services.h"
#include "bus.h"
#include "cache.h"
#include "config.h"
#include "loop.h"
#include "pool.h"
#include "registry.h"
#include "upstream.h"

typedef struct mizan_gateway {
    mizan_config_t cfg;
    mizan_registry_t reg;
    mizan_modinst_t *mods;
    size_t nmods;
    mizan_pool_t pool;
    mizan_loop_t *loops;          /**< io_threads loops */
    mizan_services_t *services;   /**< one per loop, in the same order */
    int nloops;
    atomic_bool draining; /**< shutting down: /readyz 503, every answer closes its connection */
    atomic_bool closing;  /**< drain over (or its budget spent): refuse what still arrives */
    mizan_api_t api;              /**< what every loop's handlers share */
    mizan_bus_t bus;              /**< invalidation events: the cache publishes, the streams deliver */
    mizan_cache_t *cache;         /**< bundles, revisions, events */
    mizan_upstreams_t *upstreams; /**< services and functions declared in the config (upstream.c) */
    time_t started;
} mizan_gateway_t;

/** Loads config, modules and registry. -1 with err (start-up only). */
int mizan_gateway_init(mizan_gateway_t *gw, const char *config_path, const char *exe_dir, mizan_err_t *err);

/** Builds the services, starts workers and loops, binds the listeners. */
int mizan_gateway_start(mizan_gateway_t *gw, mizan_err_t *err);

/** Drains (within the configured budget) and stops everything. Main thread. */
void mizan_gateway_stop(mizan_gateway_t *gw);

void mizan_gateway_deinit(mizan_gateway_t *gw);

#endif /* MIZAN_GATEWAY_H */
