/*
 * upstream.h - upstream functions: functions declared in the config (not
 * compiled) and served by calling an existing HTTP service, so that contexts
 * can bundle calls to several services concurrently, cached and invalidated
 * exactly like native functions (docs/upstream.md).
 *
 * Two halves:
 *   upstream.c         start-up: reads and checks the config's "upstreams",
 *                      "functions" and "contexts", registers them into the
 *                      registry through an internal module named "config",
 *                      and the RFC 6901 JSON Pointers that pick a result.
 *   upstream_client.c  run time: an asynchronous HTTP/1.1 client on every I/O
 *                      loop (nonblocking sockets on the loop's event base),
 *                      keep-alive connection pools, retries, timeouts, the
 *                      circuit breakers and the mapping of upstream answers
 *                      onto protocol errors.
 *   upstream_parse.c   the reader of upstream answers (status, headers,
 *                      Content-Length, chunked and close-delimited bodies).
 *
 * DESIGN (threads): an upstream function never reaches the worker pool. The
 * loop's executor (exec.c) starts the HTTP request on the loop's own event
 * base with mizan_upstream_start(); the answer arrives as a read event
 * on that same loop, fills the job exactly like a handler would
 * (result, or code + message + details) and hands it back through the
 * completion callback the executor gave, so no thread ever blocks on the
 * network.
 * Everything per loop (connection pools, wait queues, in-flight calls) is
 * touched by that loop's thread only. What loops share is the immutable
 * configuration below plus, per upstream, the circuit breaker and the
 * counters: relaxed atomics, so every loop of an instance sees one breaker
 * per upstream (it opens for the whole instance, not for one loop).
 */
#ifndef MIZAN_UPSTREAM_H
#define MIZAN_UPSTREAM_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "config.h"
#include "error.h"
#include "job.h"
#include "metrics.h"
#include "registry.h"

struct event_base;
typedef struct mizan_upstream_loop mizan_upstream_loop_t;

/** Default names of the identity headers sent to upstreams. */
#define MIZAN_UPSTREAM_SUB_HEADER "X-Mizan-Sub"
#define MIZAN_UPSTREAM_STAFF_HEADER "X-Mizan-Staff"
#define MIZAN_UPSTREAM_SUPERUSER_HEADER "X-Mizan-Superuser"
#define MIZAN_UPSTREAM_PERMS_HEADER "X-Mizan-Perms"

/** One header sent with every request of an upstream or of a function. */
typedef struct mizan_upstream_header {
    char *name;  /**< validated token characters */
    char *value; /**< no control characters */
} mizan_upstream_header_t;

/**
 * One configured HTTP service ("upstreams" member). Immutable after start-up
 * except the atomics, which every loop updates.
 */
typedef struct mizan_upstream {
    char *name;               /**< the key under "upstreams" */
    size_t index;             /**< position in mizan_upstreams_t.ups (pool index on every loop) */
    char *address;            /**< numeric IP address resolved at start-up */
    int port;                 /**< TCP port */
    char *host_header;        /**< Host header value (host[:port] as written in the URL) */
    char *base_path;          /**< path prefix of every request ("" or "/v1", no trailing '/') */
    int timeout_ms;           /**< default deadline of its functions */
    int connect_timeout_ms;   /**< bound on establishing one connection */
    int idle_timeout_ms;      /**< a pooled connection idle this long is closed */
    int pool_size;            /**< connections per I/O loop */
    int queue_size;           /**< requests waiting for a connection, per I/O loop */
    int retries;              /**< extra attempts of a query after a connection failure */
    int retry_backoff_ms;     /**< delay before the first retry (doubles each time) */
    size_t max_response_bytes; /**< larger answers are refused */
    mizan_upstream_header_t *headers; /**< sent with every request */
    size_t nheaders;
    char *sub_header;         /**< identity headers (NULL: not sent) */
    char *staff_header;
    char *superuser_header;
    char *perms_header;
    bool forward_token;       /**< send the caller's own token as Authorization: Bearer */
    int breaker_failures;     /**< consecutive failed calls that open the breaker (0: never) */
    int breaker_cooldown_ms;  /**< how long it stays open before a half-open probe */

    /* Circuit breaker, shared by every loop (relaxed atomics). */
    atomic_int failures;      /**< consecutive failed calls */
    atomic_llong open_until;  /**< 0: closed; else CLOCK_MONOTONIC ms until which it is open */
    atomic_bool probing;      /**< a half-open probe is in flight */

    /* Counters for /metrics (relaxed atomics). */
    atomic_llong n_ok;        /**< calls answered 2xx */
    atomic_llong n_client;    /**< calls answered 4xx (the service is fine) */
    atomic_llong n_server;    /**< calls answered 5xx or 429 */
    atomic_llong n_timeout;   /**< calls past their deadline */
    atomic_llong n_connect;   /**< calls failed on connection errors (after retries) */
    atomic_llong n_invalid;   /**< calls with an unreadable answer */
    atomic_llong n_rejected;  /**< calls refused at once: breaker open, pool and queue full */
    atomic_llong n_retries;   /**< retries made */
    atomic_llong n_opened;    /**< times the breaker opened */
    atomic_llong n_connections; /**< TCP connections opened */
    atomic_llong n_dropped;   /**< pooled connections closed because an answer's framing was in doubt */
} mizan_upstream_t;

/** A piece of a path template: literal text or an argument's value. */
typedef struct mizan_upstream_seg {
    char *text;  /**< literal (already URI-safe) or the argument name */
    bool is_arg; /**< text names an argument */
} mizan_upstream_seg_t;

/** Where an argument not named in the path goes. */
typedef enum mizan_upstream_place {
    MIZAN_UPSTREAM_NOWHERE = 0, /**< not sent */
    MIZAN_UPSTREAM_QUERY,       /**< query string */
    MIZAN_UPSTREAM_BODY,        /**< member of the JSON body */
} mizan_upstream_place_t;

/** A parsed RFC 6901 JSON Pointer; immutable. */
typedef struct mizan_json_pointer {
    char **tokens;  /**< unescaped reference tokens (may hold NUL bytes) */
    size_t *lens;   /**< byte length of each token */
    size_t ntokens; /**< 0: the whole document */
} mizan_json_pointer_t;

/** How one function calls its upstream (mizan_function_t.upstream). Immutable. */
typedef struct mizan_upstream_fn {
    mizan_upstream_t *up;        /**< the service */
    const char *method_name;     /**< "GET", "POST", "PUT", "PATCH" or "DELETE" (static) */
    int method;                  /**< enum evhttp_cmd_type */
    mizan_upstream_seg_t *segs;  /**< the path template after base_path */
    size_t nsegs;
    char **query;                /**< args sent in the query string (explicit list) */
    size_t nquery;
    char **body;                 /**< args sent in the JSON body (explicit list) */
    size_t nbody;
    mizan_upstream_place_t rest; /**< where args in no list and not in the path go */
    bool has_body;               /**< the request carries a JSON body (possibly {}) */
    mizan_upstream_header_t *headers; /**< extra headers of this function */
    size_t nheaders;
    bool no_identity;            /**< "identity": false: this function sends no identity headers nor token */
    mizan_json_pointer_t result; /**< what part of the answer becomes the result */
    char *result_text;           /**< the pointer as written, for logs */
    char *head;                  /**< " HTTP/1.1\r\n" + Host, Accept and the configured headers, printed
                                      once at start-up; the client adds the per-call ones */
    size_t head_len;
} mizan_upstream_fn_t;

/** Everything the config declared; hangs off the gateway. */
typedef struct mizan_upstreams {
    mizan_upstream_t **ups;    /**< services, in config order */
    size_t nups;
    mizan_upstream_fn_t **fns; /**< one per declared function */
    size_t nfns;
    mizan_modinst_t mod;       /**< the internal "config" module the declarations belong to */
} mizan_upstreams_t;

/* ---- upstream.c: start-up ------------------------------------------ */

/**
 * Checks the config's "upstreams", "functions" and "contexts" (borrowed
 * from cfg) and registers the declared functions and contexts into
 * reg; *out receives what was built (NULL when nothing is declared), each function with its upstream spec (fn->upstream). Call after
 * the modules loaded and before mizan_registry_finish() (which then checks
 * schemas, auth and names across modules, so config contexts may list
 * native functions). Host names in URLs are resolved here, once. Main
 * thread, start-up only. -1 with err naming the file and the field.
 */
int mizan_upstream_register(const mizan_config_t *cfg, mizan_registry_t *reg, mizan_upstreams_t **out,
                            mizan_err_t *err);

/** Frees what mizan_upstream_register() built (after every loop joined). NULL-safe. */
void mizan_upstream_deinit(mizan_upstreams_t *ups);

/**
 * Parses an RFC 6901 pointer ("" is the whole document, "/a~1b/0" the
 * member "a/b", then index 0). -1 with err when malformed (no leading '/',
 * or '~' not followed by 0 or 1).
 */
int mizan_json_pointer_parse(const char *text, size_t len, mizan_json_pointer_t *out, mizan_err_t *err);

/** Frees a parsed pointer's tokens. NULL-safe; idempotent. */
void mizan_json_pointer_deinit(mizan_json_pointer_t *p);

/**
 * The value doc (borrowed) holds at p: a borrowed reference, or NULL when
 * there is none (missing member, index out of range, "-", leading zeros,
 * or a scalar on the way). Pure; any thread.
 */
json_t *mizan_json_pointer_get(const mizan_json_pointer_t *p, const json_t *doc);

/* ---- upstream_client.c: run time -------------------------------------- */

/**
 * Creates a loop's client state: one empty connection pool per upstream of
 * ups; connections open lazily on base. complete(job) hands a finished job
 * back (the executor's). *out is NULL when no upstream is configured. Main
 * thread, before the loop thread starts. -1 with err on allocation failure.
 */
int mizan_upstream_loop_new(struct event_base *base, const mizan_upstreams_t *ups,
                            void (*complete)(mizan_job_t *job), mizan_upstream_loop_t **out, mizan_err_t *err);

/**
 * Ends a loop's client state after its thread stopped: cancels the
 * requests still in flight, hands their jobs back with UNAVAILABLE (the
 * executor drains its completions afterwards), and closes every
 * connection. Main thread. NULL-safe.
 */
void mizan_upstream_loop_free(mizan_upstream_loop_t *ul);

/**
 * Starts job (fn->upstream != NULL) on loop: builds the request from the
 * job's args and caller, consults the breaker, takes a pooled connection or
 * waits for one, and sends it. Never fails: whatever happens, the job comes
 * back exactly once through the loop's completion callback with its result
 * or error filled in, and never from within this call's own stack frame.
 * Loop thread (the caller's token, when the upstream forwards it, is the
 * one its caller presented).
 */
void mizan_upstream_start(mizan_upstream_loop_t *ul, mizan_job_t *job);

/**
 * The upstream series for /metrics in Prometheus text format (new malloc'd
 * string; "" when no upstream is configured), or NULL when out of memory.
 * Any thread.
 */
char *mizan_upstream_metrics(const mizan_upstreams_t *ups);

/** A stats reader (metrics.h): the upstream series as text; arg is the mizan_upstreams_t (NULL ok). */
void mizan_upstream_read_stats(void *arg, mizan_stats_t *out);

#endif /* MIZAN_UPSTREAM_H */
