/*
 * http.h - the HTTP layer (src/http/): I/O loops, connections and their
 * deadlines, request framing, exchanges (one request in flight) and
 * replies. It knows the configuration and nothing above it: the handler
 * of every request, what to do at drain and at abort, and the per-loop
 * services the handlers use are handed in by the assembly (gateway.c).
 *
 * DESIGN (threads): each I/O loop owns one event_base, one evhttp and one
 * SO_REUSEPORT listener, and everything in its mizan_loop_t and its
 * exchanges is touched by its own thread only, except where a field says
 * otherwise. Other threads reach a loop through mizan_loop_post() (any
 * thread) and the main thread's begin_drain/abort/stop calls, which go
 * through libevent's thread-safe event_base_once/loopbreak.
 */
#ifndef MIZAN_HTTP_H
#define MIZAN_HTTP_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <jansson.h>

#include "config.h"

struct event_base;
struct evhttp;
struct evhttp_request;
struct evhttp_bound_socket;
struct event;
struct mizan_services;
typedef struct mizan_loop mizan_loop_t;
typedef struct mizan_exchange mizan_exchange_t;

/** What the assembly tells a loop to do; set before the loop runs, immutable after. */
typedef struct mizan_loop_hooks {
    /** Every request evhttp reads (arg: the loop). */
    void (*request)(struct evhttp_request *req, void *arg);
    /** The drain began: end long-lived work (event streams). Loop thread. */
    void (*drain)(mizan_loop_t *loop);
    /** The drain budget is spent: answer every exchange still open. Loop thread. */
    void (*abort)(mizan_loop_t *loop);
} mizan_loop_hooks_t;

/** A message for a loop: fn(arg) runs on the loop's thread. */
typedef struct mizan_msg {
    void (*fn)(void *arg);
    void *arg;
    struct mizan_msg *next;
} mizan_msg_t;

/** One I/O thread. */
struct mizan_loop {
    /* Set before the loop runs; immutable after. */
    int index;
    const mizan_config_t *cfg;       /**< the instance's */
    const atomic_bool *draining;     /**< the instance's: shutting down, every answer closes its connection */
    mizan_loop_hooks_t hooks;
    struct mizan_services *services; /**< what the handlers use on this loop (api/services.h), built by the assembly */
    pthread_t thread;
    struct event_base *base;
    struct evhttp *http;
    struct evhttp_bound_socket *bound; /**< NULL once closed for draining (loop thread) */
    int fd;                            /**< listening socket */

    pthread_mutex_t lock;       /**< guards msg_head and msg_tail only */
    mizan_msg_t *msg_head;      /**< messages posted by any thread */
    mizan_msg_t *msg_tail;
    struct event *wake;         /**< activated when the queue goes non-empty */

    struct mizan_conns *conns;  /**< request deadlines of this loop's connections (conn.c) */

    /* Loop-thread only, except the atomics (read by the main thread). */
    mizan_exchange_t *live;     /**< exchanges not yet answered (exchange.c) */
    atomic_size_t nlive;        /**< length of live */
    atomic_size_t unsent;       /**< answered, reply not yet flushed (reply.c) */
    uint64_t rng[2];            /**< request-id generator state (exchange.c) */
    long long date_sec;         /**< the second date holds (reply.c) */
    char date[32];              /**< that second as an HTTP Date value (reply.c) */
    time_t accept_warned;       /**< last accept-failure log line (rate limit) */
};

/**
 * One HTTP request in flight, from routing to the reply. Loop-thread only.
 * The HTTP part is http/'s; the handler's part is the api layer's, which
 * http/ never reads: it is released through `release` when the exchange
 * ends.
 */
struct mizan_exchange {
    mizan_loop_t *loop;
    struct evhttp_request *req; /**< NULL once answered */
    char rid[132];              /**< X-Request-Id */
    const char *route;          /**< route name for logs and metrics */
    char target[136];           /**< function or context name for logs */
    const char *cache;          /**< X-Mizan-Cache value, or NULL */
    bool external;              /**< waiting on Redis or another loop: a shutdown abort must not cut it off */
    struct timespec t0;
    /** Frees the handler's part; run once when the exchange ends (NULL: nothing to free). */
    void (*release)(mizan_exchange_t *ex);

    /* The handler's part (api/). */
    struct mizan_caller *caller;       /**< one reference; NULL until identified */
    const struct mizan_function *fn;   /**< call */
    const struct mizan_context *ctx;   /**< context */
    json_t *params;                    /**< context params (owned) */
    json_t *data, *errors;             /**< context results being gathered (owned) */
    json_t *targets;                   /**< a mutation's invalidation targets (owned) */
    struct mizan_req **jobs;           /**< submitted jobs (slots) */
    size_t njobs, pending;
    struct mizan_lookup *lookup;       /**< cache state of a context request */
    /** Called when every job is back or timed out. */
    void (*done)(mizan_exchange_t *ex);

    mizan_exchange_t *prev, *next;     /**< loop's live list */
};

#endif /* MIZAN_HTTP_H */
