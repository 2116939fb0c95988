/*
 * config.h - the gateway configuration: one JSON file, environment
 * overrides, documented defaults (docs/configuration.md mirrors the table
 * in config.c, which is the single source of the defaults).
 *
 * Loaded once at start-up on the main thread; immutable afterwards, so every
 * thread may read it without locking.
 */
#ifndef MIZAN_CONFIG_H
#define MIZAN_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "cors.h"
#include "error.h"
#include "token.h"

/** A module named in the config. */
typedef struct mizan_module_conf {
    char *name;     /**< module name (also the .so base name when no path) */
    char *path;     /**< resolved absolute path of the shared object */
    json_t *config; /**< the module's own config object (owned) */
} mizan_module_conf_t;

/** The whole configuration (see the table in config.c for defaults). */
typedef struct mizan_config {
    char *file;                /**< path of the config file as given */
    char *dir;                 /**< absolute directory of the config file */
    char *listen_host;         /**< numeric host to bind */
    int listen_port;           /**< port; 0 picks a free one (tests) */
    int io_threads;            /**< evhttp loops on SO_REUSEPORT listeners */
    int workers;               /**< worker threads */
    int queue_size;            /**< bounded job queue capacity */
    int function_timeout_ms;   /**< default per-function deadline */
    size_t max_body_bytes;     /**< request body limit (413 above) */
    size_t max_header_bytes;   /**< request header block limit */
    int idle_timeout_s;        /**< keep-alive idle and slow-client timeout */
    int drain_timeout_ms;      /**< graceful shutdown budget */
    int max_json_depth;        /**< nesting limit of request JSON */
    int backlog;               /**< listen(2) backlog */
    int sse_heartbeat_s;       /**< comment line interval on event streams */
    int sse_max_clients;       /**< event streams per instance */
    size_t sse_max_buffer_bytes; /**< unsent bytes before a stream is dropped */
    int sse_max_clients_per_address; /**< event streams per client address */
    size_t sse_max_input_bytes; /**< bytes a stream's client may send before it is closed */
    char *api_prefix;          /**< "/api/mizan" */
    int log_level;             /**< mizan_log_level_t */
    char *instance;            /**< instance id in logs and events */
    mizan_token_keys_t tokens; /**< token keys, leeway */
    bool token_secret_generated; /**< no secret configured: a random one */
    char *token_cookie;        /**< cookie carrying an MWT */
    unsigned char cache_secret[256]; /**< HMAC key of cache keys */
    size_t cache_secret_len;
    bool cache_secret_generated;
    char *redis_url;           /**< NULL or "": embedded cache */
    char *cache_prefix;        /**< key prefix, "mizan:" */
    int redis_timeout_ms;      /**< bound on every Redis round trip */
    int redis_failover_wait_ms; /**< Redis Cluster: how long a mutation waits for a slot's new master */
    size_t cache_max_bytes;    /**< embedded cache byte bound */
    bool cache_fill_lock;      /**< Redis: one computation per bundle across the fleet (a lock in Redis) */
    int cache_fill_lock_ms;    /**< the fill lock's TTL; 0: the context's longest function deadline + 500 ms */
    char *module_dir;          /**< where bare module names are found */
    mizan_module_conf_t *modules;
    size_t nmodules;
    json_t *upstreams;         /**< "upstreams" object as written (owned), or NULL */
    json_t *functions;         /**< "functions" array declared in the config (owned), or NULL */
    json_t *contexts;          /**< "contexts" array declared in the config (owned), or NULL */
    json_t *max_concurrency;   /**< "max_concurrency" overrides {"function": n} (owned), or NULL;
                                    checked against the registry by mizan_registry_limits() */
    json_t *nonblocking;       /**< "nonblocking" overrides {"function": true|false} (owned), or NULL;
                                    applied by mizan_registry_nonblocking() */
    mizan_cors_t cors;         /**< cross-origin policy (cors.c) */
    bool validate_output;      /**< check results against declared output schemas */
    size_t compress_min_bytes; /**< bodies longer than this are gzipped when accepted */
    int compress_level;        /**< zlib level 1..9; 0: never compress */
    char *schema_dir;          /**< "schemas.dir": local documents for $ref (absolute), or NULL */
    char *schema_base_uri;     /**< "schemas.base_uri": URI prefix naming them, or NULL: default */
    bool format_assertion;     /**< "schemas.format_assertion": "format" is asserted */
} mizan_config_t;

/**
 * Loads path, applies environment overrides and validates. On failure
 * returns -1 and err names the file and line:column (syntax) or the field,
 * and says how to fix it. exe_dir is the directory of the running mizand
 * (default module directory is exe_dir/modules).
 */
int mizan_config_load(mizan_config_t *cfg, const char *path, const char *exe_dir, mizan_err_t *err);

/** Releases everything mizan_config_load() allocated. */
void mizan_config_deinit(mizan_config_t *cfg);

#endif /* MIZAN_CONFIG_H */
