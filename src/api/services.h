/*
 * services.h - the protocol layer (src/api/): the routes (route.c), calls
 * (call.c), contexts (context.c), event streams (events.c), the metrics
 * endpoint (metrics_page.c) and the schema document's client code
 * (codegen.c). A handler orchestrates the layers below it, in one
 * direction: decode and authenticate (check/), plan, cache lookup (store/),
 * execute (exec/), bundle, store, reply (http/).
 *
 * DESIGN (threads): handlers run on the I/O loop that owns the exchange;
 * what they use is reached through the loop's services, which the assembly
 * (gateway.c) built before the loop ran. mizan_api_t is immutable after
 * start-up except its atomics.
 */
#ifndef MIZAN_SERVICES_H
#define MIZAN_SERVICES_H

#include <stdatomic.h>
#include <stdbool.h>
#include <time.h>

#include "cache.h"
#include "config.h"
#include "exec.h"
#include "http.h"
#include "registry.h"

/** What every loop's handlers share. */
typedef struct mizan_api {
    const mizan_config_t *cfg;
    const mizan_registry_t *reg;
    mizan_pool_t *pool;             /**< for readiness (thread-safe) */
    const atomic_bool *draining;    /**< shutting down: /readyz 503, every answer closes its connection */
    const atomic_bool *closing;     /**< drain over: refuse what still arrives */
    time_t started;
} mizan_api_t;

/** One loop's services (loop->services). Loop thread only. */
typedef struct mizan_services {
    const mizan_api_t *api;
    mizan_exec_t exec;              /**< runs this loop's jobs */
    mizan_cache_loop_t cache;       /**< this loop's part of the cache */
    struct mizan_sse *sse;          /**< this loop's event streams (events.c) */
    struct mizan_plans *plans;      /**< context requests read recently, and their cache keys (context.c) */
} mizan_services_t;

/** The services of ex's loop. */
static inline mizan_services_t *mizan_api_services(const mizan_exchange_t *ex)
{
    return ex->loop->services;
}

#endif /* MIZAN_SERVICES_H */
