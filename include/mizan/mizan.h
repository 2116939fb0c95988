/*
 * mizan.h - the API a Mizan function module is written against.
 *
 * A module is a shared object named in the gateway's configuration. At
 * start-up the gateway dlopen()s it and calls its exported entry point
 *
 *     int mizan_module_init(mizan_module_t *m);
 *
 * which registers functions and contexts through mizan_module_add_*() and
 * returns 0 (or -1 after mizan_module_fail(), which aborts start-up with the
 * module's message). Everything registered is copied; the definitions may
 * live on the stack.
 *
 * Handlers run on the gateway's worker threads, several at once, so module
 * state must be thread-safe (the blog example keeps one SQLite connection
 * per worker thread). A handler receives a mizan_req_t: its arguments
 * (already validated against the declared input schema, defaults filled
 * in), the caller's identity, and the means to answer: a result, a protocol
 * error, and, for mutations, extra invalidation targets.
 *
 * Ownership follows jansson's vocabulary: "borrowed" references stay owned
 * by the gateway and are valid until the handler returns; "steals" means the
 * gateway takes the caller's reference, even on failure.
 */
#ifndef MIZAN_MIZAN_H
#define MIZAN_MIZAN_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#ifdef __cplusplus
extern "C" {
#endif

/**
 * ABI version a module is built against; checked when it is loaded (see
 * MIZAN_MODULE_ABI). Version 2 added mizan_function_def_t.max_concurrency,
 * output_schema and nonblocking, and mizan_context_def_t.stale_s.
 */
#define MIZAN_ABI_VERSION 2

/** Name of the symbol that records the ABI a module was built for. */
#define MIZAN_MODULE_ABI_SYMBOL "mizan_module_abi_version"

/**
 * Put once in a module's source, at file scope: exports the ABI version the
 * module was compiled against, so the gateway can refuse a module built for
 * an ABI it does not implement (or read an older module's definitions by
 * that older layout). A module without it is taken as ABI version 1.
 */
#define MIZAN_MODULE_ABI \
    __attribute__((visibility("default"))) const int mizan_module_abi_version = MIZAN_ABI_VERSION

/** Name of the symbol every module exports. */
#define MIZAN_MODULE_INIT_SYMBOL "mizan_module_init"

/** Marks the entry point exported when a module hides its other symbols. */
#define MIZAN_EXPORT __attribute__((visibility("default")))

/** Protocol error codes (PROTOCOL.md section 3). */
typedef enum mizan_code {
    MIZAN_OK = 0,
    MIZAN_BAD_REQUEST,        /**< 400 */
    MIZAN_UNAUTHORIZED,       /**< 401 */
    MIZAN_FORBIDDEN,          /**< 403 */
    MIZAN_NOT_FOUND,          /**< 404 */
    MIZAN_METHOD_NOT_ALLOWED, /**< 405 */
    MIZAN_PAYLOAD_TOO_LARGE,  /**< 413 */
    MIZAN_VALIDATION_FAILED,  /**< 422 */
    MIZAN_INTERNAL_ERROR,     /**< 500 */
    MIZAN_NOT_IMPLEMENTED,    /**< 501 */
    MIZAN_UNAVAILABLE,        /**< 503 */
    MIZAN_TIMEOUT,            /**< 504 */
} mizan_code_t;

/** The protocol name of a code ("VALIDATION_FAILED"); static storage. */
const char *mizan_code_name(mizan_code_t code);

/** The HTTP status of a code (422 for MIZAN_VALIDATION_FAILED). */
int mizan_code_status(mizan_code_t code);

/** Function kinds. Only mutations carry an `invalidate` list. */
typedef enum mizan_kind {
    MIZAN_QUERY = 0,
    MIZAN_MUTATION = 1,
} mizan_kind_t;

/** Context cache scopes (PROTOCOL.md section 5). */
typedef enum mizan_scope {
    MIZAN_SCOPE_PUBLIC = 0, /**< one bundle for everyone */
    MIZAN_SCOPE_USER = 1,   /**< one bundle per token `sub`; anonymous: 401 */
    MIZAN_SCOPE_PERMS = 2,  /**< one bundle per (staff, superuser, perms) */
} mizan_scope_t;

/**
 * The caller, as proven by a verified token. All pointers are borrowed and
 * valid for the duration of the handler (or the auth predicate) only.
 */
typedef struct mizan_identity {
    const char *sub;          /**< token subject; NULL for an anonymous caller */
    bool staff;               /**< `staff` claim */
    bool superuser;           /**< `superuser` claim */
    const char *const *perms; /**< `perms` claim, nperms strings */
    size_t nperms;            /**< number of entries in perms */
} mizan_identity_t;

/** True when the identity's perms contain perm. Thread-safe, pure. */
bool mizan_identity_has_perm(const mizan_identity_t *id, const char *perm);

/** One invocation of a function; owned by the gateway. */
typedef struct mizan_req mizan_req_t;

/**
 * A function handler. Called on a worker thread. Returns 0 after
 * mizan_req_result() (0 without a result answers JSON null), or -1 after
 * mizan_req_error() (-1 without an error answers INTERNAL_ERROR).
 */
typedef int (*mizan_handler_fn)(mizan_req_t *req);

/**
 * A native auth predicate: returns true when the caller may run the
 * function. Called on an I/O thread before any work is queued, so it must
 * be fast and must not block. module_data is the module's state.
 */
typedef bool (*mizan_auth_fn)(const mizan_identity_t *id, void *module_data);

/** Arguments of this invocation (borrowed, read-only, always an object). */
const json_t *mizan_req_args(const mizan_req_t *req);

/** The caller (borrowed; sub is NULL when anonymous). */
const mizan_identity_t *mizan_req_identity(const mizan_req_t *req);

/** The module's state set with mizan_module_set_data() (may be NULL). */
void *mizan_req_module_data(const mizan_req_t *req);

/** The function's registered name (static for the process lifetime). */
const char *mizan_req_function(const mizan_req_t *req);

/**
 * True once the request's deadline passed or the gateway is shutting down:
 * the answer will be discarded, so a long handler should stop early.
 */
bool mizan_req_cancelled(const mizan_req_t *req);

/**
 * Sleeps up to ms milliseconds, waking early when the request is cancelled.
 * Returns 0 after the full sleep, -1 when cancelled.
 */
int mizan_req_sleep(const mizan_req_t *req, long ms);

/** Sets the result. Steals result (a NULL result is stored as JSON null). */
void mizan_req_result(mizan_req_t *req, json_t *result);

/**
 * Raises a protocol error. message is copied (NULL: the code's default);
 * details is stolen (may be NULL). Returns -1 so a handler can
 * `return mizan_req_error(...)`. INTERNAL_ERROR messages are never shown to
 * clients (they get a generic one), only logged.
 */
int mizan_req_error(mizan_req_t *req, mizan_code_t code, const char *message, json_t *details);

/**
 * Adds an invalidation target at run time (mutations only; ignored on
 * queries). context must be a registered context; params (stolen, may be
 * NULL for the whole context) are the context's params, scoped by the same
 * rules as declared targets. The targets reach the gateway when the handler
 * returns (also when it then fails), never if it passes its deadline:
 * declare what must always be invalidated. Returns 0, or -1 when the
 * context is unknown or the params are not an object.
 */
int mizan_req_invalidate(mizan_req_t *req, const char *context, json_t *params);

/** A function definition, copied by mizan_module_add_function(). */
typedef struct mizan_function_def {
    const char *name;           /**< [A-Za-z_][A-Za-z0-9_.]* */
    mizan_kind_t kind;          /**< query or mutation */
    const char *input_schema;   /**< JSON Schema text; NULL: {"type":"object"} */
    const char *auth;           /**< JSON text: false, true, "staff",
                                     "superuser", {"perm": "..."}; NULL: false */
    mizan_auth_fn auth_fn;      /**< native predicate; when set, `auth` must be NULL */
    const char *const *invalidates; /**< NULL-terminated context names (mutations) */
    mizan_handler_fn handler;   /**< NULL: declared, answers NOT_IMPLEMENTED */
    int timeout_ms;             /**< deadline; 0: the configured default */
    const char *description;    /**< shown in the schema endpoint; may be NULL */
    int max_concurrency;        /**< (ABI 2) runs at once per instance; past it a call is 503
                                     UNAVAILABLE at once (in a context: that function's error);
                                     0: unlimited. The config's "max_concurrency" may override it */
    const char *output_schema;  /**< (ABI 2) JSON Schema text of the result (same keyword
                                     subset as input schemas); NULL: undeclared.
                                     Published by the schema endpoint for client
                                     code generation; results are checked against
                                     it when the gateway runs with validate_output */
    bool nonblocking;           /**< (ABI 2) the handler never blocks (no I/O, no lock held
                                     long, no mizan_req_sleep) and finishes in microseconds:
                                     it then runs inline on the I/O loop that received the
                                     request instead of on a worker, saving two thread
                                     hand-offs. Deadlines, max_concurrency and validate_output
                                     apply as on a worker; a handler that does block stalls
                                     every connection of its loop meanwhile. false: a worker.
                                     The config's "nonblocking" may override it */
} mizan_function_def_t;

/** A context definition, copied by mizan_module_add_context(). */
typedef struct mizan_context_def {
    const char *name;              /**< same rules as function names */
    const char *params_schema;     /**< object schema text; NULL: no params */
    const char *const *functions;  /**< NULL-terminated function names */
    int ttl;                       /**< cache TTL in seconds; 0: never cached */
    mizan_scope_t scope;           /**< cache scope */
    const char *description;       /**< may be NULL */
    int stale_s;                   /**< (ABI 2) seconds past the TTL a bundle is still served (STALE) while one
                                        recomputation runs in the background; 0: never served stale */
} mizan_context_def_t;

/** A module being loaded; valid only inside mizan_module_init(). */
typedef struct mizan_module mizan_module_t;

/** The module's entry point type. */
typedef int (*mizan_module_init_fn)(mizan_module_t *m);

/** ABI version the gateway implements; a module may refuse a mismatch. */
int mizan_module_abi(const mizan_module_t *m);

/**
 * The module's own `config` object from the gateway configuration
 * (borrowed; an empty object when absent). Environment overrides that a
 * module documents (e.g. MIZAN_BLOG_DB) are the module's to read.
 */
const json_t *mizan_module_config(const mizan_module_t *m);

/** Directory of the configuration file, for resolving relative paths. */
const char *mizan_module_config_dir(const mizan_module_t *m);

/** Number of worker threads the gateway will run (for sizing pools). */
int mizan_module_workers(const mizan_module_t *m);

/**
 * Sets the module state passed to handlers and predicates; free_fn (may be
 * NULL) runs at shutdown after every worker has stopped.
 */
void mizan_module_set_data(mizan_module_t *m, void *data, void (*free_fn)(void *data));

/** Registers a function. Returns 0, or -1 with the reason recorded. */
int mizan_module_add_function(mizan_module_t *m, const mizan_function_def_t *def);

/** Registers a context. Returns 0, or -1 with the reason recorded. */
int mizan_module_add_context(mizan_module_t *m, const mizan_context_def_t *def);

/**
 * Records why the module cannot start (printf-style); the entry point then
 * returns -1 and the gateway exits naming the module and this message.
 * Returns -1.
 */
int mizan_module_fail(mizan_module_t *m, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/** Log levels for mizan_log(). */
typedef enum mizan_log_level {
    MIZAN_LOG_DEBUG = 0,
    MIZAN_LOG_INFO = 1,
    MIZAN_LOG_WARN = 2,
    MIZAN_LOG_ERROR = 3,
} mizan_log_level_t;

/**
 * Writes one structured log line (JSON) to the gateway's log; thread-safe.
 * Never pass tokens or secrets.
 */
void mizan_log(mizan_log_level_t level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#ifdef __cplusplus
}
#endif

#endif /* MIZAN_MIZAN_H */
