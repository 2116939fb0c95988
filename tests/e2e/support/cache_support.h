/*
 * cache_support.h - e2e helpers for the shared cache tests: cache keys
 * derived independently of the gateway (PROTOCOL.md section 6, HMAC by the
 * `openssl` command line), a Server-Sent Events client (section 7),
 * Prometheus sample lookup, redis-server crash / restart on its port, and
 * starting a gateway on a given Redis.
 *
 * Lifetime and threads follow harness.h: everything returned is owned by
 * the per-test arena; "asserting" functions run on the test's main thread.
 */
#ifndef MZ_CACHE_SUPPORT_H
#define MZ_CACHE_SUPPORT_H

#include <stdbool.h>
#include <stddef.h>

#include "harness.h"

/* ------------------------------------------------------------------------
 * Cache keys (PROTOCOL.md section 6), under MZ_CACHE_SECRET and the
 * default prefix "mizan:". `jcs` arguments are the canonical JSON bytes of
 * the params, written out by the test (e.g. "{\"post_id\":1}").
 * All asserting; results are arena strings.
 * ---------------------------------------------------------------------- */

/** Lowercase hex HMAC-SHA256 of len bytes of msg (NULs allowed) under key. */
char *mz_hmac_hex(const char *key, const void *msg, size_t len);

/** params_digest(C, P). */
char *mz_key_params_digest(const char *ctx, const char *jcs);

/**
 * perm_key(t) for the flags and the NULL-terminated perms (any order,
 * duplicates allowed; sorted bytewise and deduplicated here).
 */
char *mz_key_perm(bool staff, bool superuser, const char *const *perms);

/** bundle_key(C, P, S) with scope S ("public", "user:alice", "perms:<hex>"). */
char *mz_key_bundle(const char *ctx, const char *jcs, const char *scope);

/** The user scope (rev 2) "user:" sub ":" perm_key of those claims. */
char *mz_key_user_scope(const char *sub, bool staff, bool superuser, const char *const *perms);

/**
 * The value stored under bundle_key (rev 2): mac "\n" doc with doc
 * {"v":2,"rev":[r0,r1],"bundle":body}, mac = HMAC("mizan/v1/value\0"
 * bundle_key "\0" doc).
 */
char *mz_stored_value(const char *bundle_key, long long r0, long long r1, const char *body);

/** context_rev_key(C). */
char *mz_key_ctx_rev(const char *ctx);

/** scoped_rev_key(C, P). */
char *mz_key_scoped_rev(const char *ctx, const char *jcs);

/* ------------------------------------------------------------------------
 * Server-Sent Events client
 * ---------------------------------------------------------------------- */

/** One frame of an event stream (fields joined by "\n" when repeated). */
typedef struct mz_sse_frame {
    char *event;   /**< the `event:` field, or NULL */
    char *data;    /**< the `data:` lines, or NULL */
    char *comment; /**< the comment lines (text after ':'), or NULL */
    char *retry;   /**< the `retry:` field, or NULL */
    char *raw;     /**< the frame as received, without its blank line */
    double at_ms;  /**< mz_now_ms() when it was parsed */
} mz_sse_frame_t;

/** An open event stream; owned by the arena (closed at teardown). */
typedef struct mz_sse mz_sse_t;

/**
 * GET {api}/events/ with query (e.g. "contexts=post", or NULL) on
 * 127.0.0.1:port and reads the response head. Asserting: the status must
 * be 200 with Content-Type text/event-stream (the failure quotes what came).
 */
mz_sse_t *mz_sse_open(const mz_gw_t *gw, const char *query, const char *token);

/**
 * Reads the next frame within timeout_ms. 1 and *out; 0 on timeout; -1
 * when the stream ended or broke (reason in err). Never asserts.
 */
int mz_sse_next(mz_sse_t *s, int timeout_ms, mz_sse_frame_t **out, char *err, size_t errlen);

/**
 * Skips frames until one whose event is `event` and whose data is JSON
 * equal to data_json arrives, within timeout_ms; returns it. Asserting:
 * the failure lists every frame skipped meanwhile.
 */
mz_sse_frame_t *mz_sse_expect(mz_sse_t *s, const char *event, const char *data_json, int timeout_ms);

/**
 * Reads frames for window_ms and asserts that none is an event whose data
 * has "context" equal to ctx. Returns the number of frames seen.
 */
int mz_sse_expect_no_context(mz_sse_t *s, const char *ctx, int window_ms);

/** Closes the client side of the stream now (the struct stays valid). */
void mz_sse_close(mz_sse_t *s);

/* ------------------------------------------------------------------------
 * Metrics, waiting
 * ---------------------------------------------------------------------- */

/**
 * The value of the sample whose name-and-labels text is exactly `series`
 * (e.g. "mizan_function_runs_total{function=\"get_post\"}") in a GET
 * /metrics of gw. Asserting: the sample must be present.
 */
double mz_metric(const mz_gw_t *gw, const char *series);

/**
 * Polls GET path on gw every 50 ms until it answers status, for up to
 * timeout_ms; returns the last response. Asserting: fails with it on
 * timeout. *waited_ms (may be NULL) gets the time it took.
 */
mz_resp_t *mz_wait_status(const mz_gw_t *gw, const char *path, int status, int timeout_ms,
                          double *waited_ms);

/* ------------------------------------------------------------------------
 * redis-server outages
 * ---------------------------------------------------------------------- */

/** Kills redis-server with SIGKILL (a crash) and reaps it. Safe twice. */
void mz_redis_kill(mz_redis_t *r);

/**
 * Starts redis-server again on the same port and directory after it was
 * stopped or killed, and waits for PING. Asserting (fails when the port
 * cannot be bound again within 10 s).
 */
void mz_redis_restart(mz_redis_t *r);

/** A raw Redis connection subscribed to one channel; owned by the arena. */
typedef struct mz_redis_sub mz_redis_sub_t;

/** SUBSCRIBE channel on r and waits for the confirmation. Asserting. */
mz_redis_sub_t *mz_redis_subscribe(const mz_redis_t *r, const char *channel);

/**
 * The payload of the next message within timeout_ms (arena string), or
 * NULL on timeout. Asserting: fails when the connection breaks.
 */
char *mz_redis_sub_next(mz_redis_sub_t *sub, int timeout_ms);

/**
 * GETs a context: asserts 200, the standard headers, a JSON object body and
 * an X-Mizan-Cache header equal to cache (NULL: any value).
 */
mz_resp_t *mz_ctx_get(const mz_gw_t *gw, const char *path, const char *token, const char *cache);

/**
 * Calls a mutation: asserts 200 and an invalidate list exactly equal to
 * want (JSON text); returns the result (borrowed from the response).
 */
json_t *mz_mutate(const mz_gw_t *gw, const char *fn, const char *args, const char *token, const char *want);

/** data.get_post.title of a post bundle (asserted to be a string). */
const char *mz_bundle_title(const mz_resp_t *r);

/**
 * Starts a gateway in dir with the config cfg (modified: the Redis URL and
 * extra are merged into it), on Redis r when not NULL (cache.redis_url
 * pointing at it; then waits up to 10 s for /readyz 200), plus extra
 * config (JSON text merged on top; may be NULL). Asserting.
 */
mz_gw_t *mz_cache_gw_start(const char *dir, json_t *cfg, const mz_redis_t *r, const char *extra);

#endif /* MZ_CACHE_SUPPORT_H */
