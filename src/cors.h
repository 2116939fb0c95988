/*
 * cors.h - cross-origin browsers (PROTOCOL.md section 8): which origins may
 * call the gateway, the OPTIONS preflight of every route, and the
 * Access-Control-* headers on every answer to an allowed origin.
 *
 * The policy is read once from the config's `cors` object and is immutable
 * afterwards, so every I/O loop reads it without locking. Without a `cors`
 * object no origin is allowed (same-origin only) and every preflight is 403.
 */
#ifndef MIZAN_CORS_H
#define MIZAN_CORS_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "error.h"

struct evhttp_request;

/** The configured cross-origin policy (part of mizan_config_t). */
typedef struct mizan_cors {
    char **origins;   /**< allowed origins, "scheme://host[:port]", lowercase; owned */
    size_t norigins;  /**< entries in origins */
    bool any;         /**< "*" was listed: every origin is allowed (and echoed) */
    bool credentials; /**< Access-Control-Allow-Credentials: true (cookie mode) */
    int max_age_s;    /**< Access-Control-Max-Age of preflights */
} mizan_cors_t;

/**
 * Reads the `cors` object (borrowed; NULL: nothing allowed) of config file
 * `file` into c. -1 with err naming the field and the fix. Start-up only.
 */
int mizan_cors_parse(mizan_cors_t *c, const json_t *obj, const char *file, mizan_err_t *err);

/** Releases what mizan_cors_parse() allocated. */
void mizan_cors_deinit(mizan_cors_t *c);

/** True when origin (NUL-terminated, may be NULL) is allowed. Pure, any thread. */
bool mizan_cors_allowed(const mizan_cors_t *c, const char *origin);

/**
 * Adds to req's output headers what every answer carries for the request's
 * Origin: Access-Control-Allow-Origin (the origin itself, never "*"),
 * Access-Control-Allow-Credentials when configured,
 * Access-Control-Expose-Headers and Vary: Origin for an allowed origin;
 * only Vary: Origin for another origin when any origin is configured. Loop
 * thread of req, before the reply starts.
 */
void mizan_cors_headers(const mizan_cors_t *c, struct evhttp_request *req);

/**
 * The same headers as mizan_cors_headers() for a request whose Origin is
 * origin (may be NULL), as "Name: value\r\n" lines into out (len bytes,
 * NUL-terminated; "" when none), for answers written without evhttp (the
 * connection-level refusals of conn.c). Pure, any thread.
 */
void mizan_cors_header_lines(const mizan_cors_t *c, const char *origin, char *out, size_t len);

/**
 * Prepares the answer to an OPTIONS request on a route serving `methods`
 * (e.g. "GET"): adds `Allow`, and for an allowed Origin the
 * Access-Control-Allow-Methods, -Allow-Headers and -Max-Age headers, to
 * req's output headers. Returns 0 when the answer is 204 (an allowed
 * origin, or a plain OPTIONS without Origin), -1 when the origin is not
 * allowed (the caller answers 403 FORBIDDEN in the envelope). Loop thread.
 */
int mizan_cors_preflight(const mizan_cors_t *c, struct evhttp_request *req, const char *methods);

#endif /* MIZAN_CORS_H */
