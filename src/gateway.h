/*
 * gateway.h - the running gateway: configuration, registry, worker pool and
 * I/O loops, and the exchange (one HTTP request in flight).
 *
 * DESIGN (threads): the main thread loads everything, starts the workers and
 * the I/O loops, then waits for SIGTERM/SIGINT. Each I/O loop owns one
 * event_base, one evhttp and one SO_REUSEPORT listener; it parses, routes,
 * checks and answers requests, and never runs a handler. Workers run
 * handlers and hand jobs back to the owning loop (loop.c). Everything in
 * mizan_gateway_t except `draining` and `loops[i]`'s completion queue is
 * immutable once the loops run.
 */
#ifndef MIZAN_GATEWAY_H
#define MIZAN_GATEWAY_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include <jansson.h>

#include "config.h"
#include "job.h"
#include "pool.h"
#include "registry.h"

struct event_base;
struct evhttp;
struct evhttp_request;
struct evhttp_bound_socket;
struct event;
typedef struct mizan_gateway mizan_gateway_t;

/** One I/O thread. */
typedef struct mizan_loop {
    mizan_gateway_t *gw;
    int index;
    pthread_t thread;
    struct event_base *base;
    struct evhttp *http;
    struct evhttp_bound_socket *bound; /**< NULL once closed for draining */
    int fd;                            /**< listening socket */

    pthread_mutex_t lock;   /**< guards done_* and msg_* only */
    mizan_job_t *done_head; /**< jobs handed back by workers */
    mizan_job_t *done_tail;
    struct mizan_msg *msg_head; /**< messages posted by other threads */
    struct mizan_msg *msg_tail;
    struct event *wake;     /**< activated when a queue goes non-empty */

    struct mizan_redis *redis;    /**< this loop's Redis commands (NULL: embedded) */
    struct mizan_redis *sub;      /**< the instance's subscriber (loop 0 only) */
    struct mizan_sse *sse;        /**< this loop's event-stream clients */
    struct mizan_conns *conns;    /**< request deadlines of this loop's connections */
    struct mizan_upstream_loop *upstream; /**< this loop's upstream connection pools (upstream_client.c) */

    /* Loop-thread only, except the atomics (read by the main thread). */
    struct mizan_exchange *live; /**< exchanges not yet answered */
    atomic_size_t nlive;         /**< length of live */
    atomic_size_t unsent;        /**< answered, reply not yet flushed */
    atomic_size_t outstanding;   /**< jobs submitted and not yet handed back */
    uint64_t rng[2];             /**< request-id generator state */
    time_t accept_warned;        /**< last accept-failure log line (rate limit) */
} mizan_loop_t;

/** The gateway. */
struct mizan_gateway {
    mizan_config_t cfg;
    mizan_registry_t reg;
    mizan_modinst_t *mods;
    size_t nmods;
    mizan_pool_t pool;
    mizan_loop_t *loops;
    int nloops;
    atomic_bool draining; /**< shutting down: /readyz 503, every answer closes its connection */
    atomic_bool closing;  /**< drain over (or its budget spent): refuse what still arrives */
    struct mizan_cache *cache; /**< bundles, revisions, events */
    struct mizan_upstreams *upstreams; /**< services and functions declared in the config (upstream.c) */
    time_t started;
};

/** One HTTP request in flight, from routing to the reply. Loop-thread only. */
typedef struct mizan_exchange {
    mizan_loop_t *loop;
    struct evhttp_request *req; /**< NULL once answered */
    char rid[132];              /**< X-Request-Id */
    const char *route;          /**< route name for logs */
    char target[136];           /**< function or context name for logs */
    const char *cache;          /**< X-Mizan-Cache value, or NULL */
    struct mizan_lookup *lookup; /**< cache state of a context request */
    bool external;              /**< waiting on Redis: must not be cut off by a shutdown abort */
    struct timespec t0;
    mizan_caller_t *caller;     /**< one reference */

    const mizan_function_t *fn; /**< call */
    const mizan_context_t *ctx; /**< context */
    json_t *params;             /**< context params (owned) */
    json_t *data, *errors;      /**< context results being gathered (owned) */
    json_t *targets;            /**< a mutation's invalidation targets (owned) */
    mizan_job_t **jobs;         /**< submitted jobs (slots) */
    size_t njobs, pending;
    /** Called on the loop when every job is back or timed out. */
    void (*done)(struct mizan_exchange *ex);

    struct mizan_exchange *prev, *next; /**< loop's live list */
} mizan_exchange_t;

/* ---- gateway.c ---- */

/** Loads config, modules and registry. -1 with err (start-up only). */
int mizan_gateway_init(mizan_gateway_t *gw, const char *config_path, const char *exe_dir, mizan_err_t *err);

/** Starts workers and loops, binds the listeners. */
int mizan_gateway_start(mizan_gateway_t *gw, mizan_err_t *err);

/** Drains (within the configured budget) and stops everything. Main thread. */
void mizan_gateway_stop(mizan_gateway_t *gw);

void mizan_gateway_deinit(mizan_gateway_t *gw);

/* ---- loop.c ---- */

int mizan_loop_start(mizan_loop_t *loop, mizan_gateway_t *gw, int index, int port, mizan_err_t *err);

/** Hands a finished job back to its loop. Worker threads. */
void mizan_loop_complete(mizan_job_t *job);

/**
 * Submits the exchange's jobs with their deadline timers; -1 when the queue
 * is full. A job whose function is at its max_concurrency is not submitted:
 * it gets UNAVAILABLE at once and ex->pending counts only the others (so it
 * may be 0: the caller then finishes the exchange itself).
 */
int mizan_exchange_submit(mizan_exchange_t *ex);

/** A message for a loop: fn(loop, arg) runs on the loop's thread. */
typedef struct mizan_msg {
    void (*fn)(mizan_loop_t *loop, void *arg);
    void *arg;
    struct mizan_msg *next;
} mizan_msg_t;

/** Runs fn(loop, arg) on loop's thread soon. Any thread. -1 on allocation failure. */
int mizan_loop_post(mizan_loop_t *loop, void (*fn)(mizan_loop_t *loop, void *arg), void *arg);

/** Closes the listener; new requests on open connections get 503. Any thread. */
void mizan_loop_begin_drain(mizan_loop_t *loop);

/** Exchanges still unanswered, jobs still out, replies still unflushed. */
bool mizan_loop_idle(mizan_loop_t *loop);

/** Answers every unanswered exchange with 503 (drain budget spent). */
void mizan_loop_abort(mizan_loop_t *loop);

/** Stops the loop thread, joins it and frees the loop. Main thread. */
void mizan_loop_join(mizan_loop_t *loop);

/** Writes a fresh request id (32 hex digits) into out. Loop thread. */
void mizan_loop_request_id(mizan_loop_t *loop, char *out, size_t len);

/** A new exchange for req, linked into the loop's live list. */
mizan_exchange_t *mizan_exchange_new(mizan_loop_t *loop, struct evhttp_request *req);

/** Hands the request over to a long-lived stream: the exchange is logged and freed, req returned. */
struct evhttp_request *mizan_exchange_detach(mizan_exchange_t *ex);

/** Logs and frees an answered exchange (reply.c calls it). */
void mizan_exchange_finish(mizan_exchange_t *ex, int status);

/* ---- reply.c: every response goes through these ---- */

/** Sends body (borrowed text) with status and the protocol's headers; ends the exchange. */
void mizan_reply_text(mizan_exchange_t *ex, int status, const char *body, size_t len);

/** Sends JSON (stolen) with status 200; ends the exchange. */
void mizan_reply_json(mizan_exchange_t *ex, json_t *body);

/**
 * Sends the protocol error envelope; message NULL picks a default; details
 * stolen (NULL renders null). INTERNAL_ERROR hides message (logged instead)
 * and puts the request id in details. Ends the exchange.
 */
void mizan_reply_error(mizan_exchange_t *ex, mizan_code_t code, const char *message, json_t *details);

/**
 * The error envelope's text (new, malloc'd; NULL when out of memory): the
 * one renderer behind mizan_reply_error() and the connection-level
 * refusals of conn.c. message NULL picks a default; details stolen. Any thread.
 */
char *mizan_reply_render_error(mizan_code_t code, const char *message, json_t *details);

/** 503 with Retry-After: shutting down, or overloaded (the work queue is full). */
void mizan_reply_unavailable(mizan_exchange_t *ex);

/** A 422 from a validation error list (stolen). */
void mizan_reply_invalid(mizan_exchange_t *ex, json_t *errors);

/** Adds a response header before a reply. */
void mizan_reply_header(mizan_exchange_t *ex, const char *name, const char *value);

/* ---- route.c, call.c, context.c ---- */

void mizan_route_request(struct evhttp_request *req, void *arg);
void mizan_call_handle(mizan_exchange_t *ex);
void mizan_context_handle(mizan_exchange_t *ex, const char *name);

/**
 * Drain budget spent: a mutation whose handler is still out is abandoned,
 * its targets invalidated, then answered 503 with details.invalidate.
 * Returns false (nothing done) for any other exchange. Loop thread.
 */
bool mizan_call_abort(mizan_exchange_t *ex);

/** The error object of a job's failure, as under a context's "errors" (new). */
json_t *mizan_job_error_json(const mizan_exchange_t *ex, const mizan_job_t *job);

#endif /* MIZAN_GATEWAY_H */
