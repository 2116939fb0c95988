/*
 * registry.h - the functions and contexts the gateway serves.
 *
 * Modules register definitions while they load (module.c); then
 * mizan_registry_finish() compiles every schema, resolves the names that
 * definitions refer to and refuses an inconsistent registry. From then on
 * the registry is immutable and shared by every thread without locking.
 */
#ifndef MIZAN_REGISTRY_H
#define MIZAN_REGISTRY_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "auth.h"
#include "error.h"
#include "mizan/mizan.h"
#include "schema.h"

struct mizan_context;
struct mizan_modinst;

/** A loaded module. */
typedef struct mizan_modinst {
    char *name;                 /**< from the config */
    char *path;                 /**< shared object */
    void *handle;               /**< dlopen handle */
    json_t *config;             /**< borrowed from the config */
    const char *config_dir;     /**< borrowed from the config */
    int workers;                /**< worker count, for module sizing */
    void *data;                 /**< mizan_module_set_data() */
    void (*free_fn)(void *);    /**< releases data at shutdown */
    char error[512];            /**< mizan_module_fail() message */
    int abi;                    /**< ABI version the module was built for (0: the gateway's own) */
    struct mizan_registry *reg; /**< where definitions go */
} mizan_modinst_t;

/** A registered function. */
typedef struct mizan_function {
    char *name;
    mizan_kind_t kind;
    json_t *schema_src;           /**< input schema as declared */
    mizan_schema_t *schema;       /**< compiled */
    json_t *output_src;           /**< output schema as declared, or NULL */
    mizan_schema_t *output;       /**< compiled output schema, or NULL */
    bool check_output;            /**< validate results against output (validate_output) */
    char **arg_names;             /**< declared properties, for context args */
    size_t nargs;
    bool open_args;               /**< schema allows additional properties */
    mizan_auth_t auth;            /**< requirement */
    char **invalidates;           /**< context names (mutations) */
    size_t ninvalidates;
    const struct mizan_context **inv; /**< resolved invalidates */
    mizan_handler_fn handler;     /**< NULL: NOT_IMPLEMENTED */
    int timeout_ms;               /**< resolved deadline */
    char *description;
    mizan_modinst_t *module;
    struct mizan_fn_metrics *metrics; /**< counters (metrics.c), mutable atomics */
    struct mizan_upstream_fn *upstream; /**< set for a function served by an HTTP upstream (upstream.c) */
    int max_concurrency;          /**< runs at once per instance; 0: unlimited */
    bool nonblocking;             /**< runs inline on the I/O loop, never on a worker (its module's
                                       declaration, or the config's "nonblocking") */
    atomic_int *running;          /**< runs in flight now (mutable, shared by every loop) */
    bool forwards_identity;       /**< sends the caller's identity on (an upstream's identity headers or
                                       token): its answer may differ per caller (set by upstream.c) */
} mizan_function_t;

/** A registered context. */
typedef struct mizan_context {
    char *name;
    json_t *params_src;           /**< params schema as declared */
    mizan_schema_t *params;       /**< compiled */
    char **param_names;           /**< declared params, sorted */
    json_t **param_types;         /**< borrowed "type" value of each param */
    size_t nparams;
    char **fn_names;              /**< as declared */
    const mizan_function_t **fns; /**< resolved */
    size_t nfns;
    int ttl;
    int stale_s;                  /**< served STALE this long past ttl while recomputed; 0: never */
    mizan_scope_t scope;
    char *description;
    mizan_modinst_t *module;
    struct mizan_ctx_metrics *metrics; /**< counters (metrics.c), mutable atomics */
} mizan_context_t;

typedef struct mizan_registry {
    mizan_function_t **fns;   /**< sorted by name after finish */
    size_t nfns, capfns;
    mizan_context_t **ctxs;   /**< sorted by name after finish */
    size_t nctxs, capctxs;
    int default_timeout_ms;
    json_t *pending_errors;   /**< registration errors reported at finish */
    char *schema_json;        /**< the schema endpoint's body, built once */
    bool validate_output;     /**< check results against declared output schemas */
} mizan_registry_t;

/** Version of the shape of the schema document (docs/schema-document.md). */
#define MIZAN_SCHEMA_DOC_VERSION 1

void mizan_registry_init(mizan_registry_t *reg, int default_timeout_ms);
void mizan_registry_deinit(mizan_registry_t *reg);

/** Compiles, resolves and checks everything; -1 with the first problem in err. */
int mizan_registry_finish(mizan_registry_t *reg, mizan_err_t *err);

/**
 * Applies the config's "nonblocking" table {"function name": true|false}
 * (borrowed; NULL: nothing to do) over the modules' declarations. An
 * upstream function already runs on the I/O loop and may not be listed.
 * -1 with err naming file and the field. Start-up only.
 */
int mizan_registry_nonblocking(mizan_registry_t *reg, const json_t *table, const char *file, mizan_err_t *err);

const mizan_function_t *mizan_registry_function(const mizan_registry_t *reg, const char *name);
const mizan_context_t *mizan_registry_context(const mizan_registry_t *reg, const char *name);

/**
 * Whether id may read context c (GET /ctx/{name}/ and event streams alike):
 * MIZAN_OK; UNAUTHORIZED when c is per user and id is anonymous, or when a
 * function of c wants a token; else FORBIDDEN when a function of c refuses
 * id. Pure; any thread.
 */
mizan_code_t mizan_registry_may_read(const mizan_context_t *c, const mizan_identity_t *id);

/**
 * The registry as JSON for the schema endpoint, --check-config and code
 * generation (new reference): the document of docs/schema-document.md.
 */
json_t *mizan_registry_to_json(const mizan_registry_t *reg);

/** True when name matches [A-Za-z_][A-Za-z0-9_.]*. */
bool mizan_registry_valid_name(const char *name);

/**
 * Loads every module of the config into reg (dlopen + init). -1 with err
 * naming the module and its message.
 */
struct mizan_config;
int mizan_modules_load(mizan_registry_t *reg, const struct mizan_config *cfg, mizan_modinst_t **mods,
                       size_t *nmods, mizan_err_t *err);

/**
 * Takes one run slot of fn (limit: fn->max_concurrency). Returns true when
 * the run may start (release it with mizan_function_release() once it
 * ended), false when fn is at its limit. Any thread; lock-free.
 */
bool mizan_function_acquire(const mizan_function_t *fn);

/** Gives back a slot taken by mizan_function_acquire(). Any thread. */
void mizan_function_release(const mizan_function_t *fn);

/**
 * Applies the config's "max_concurrency" overrides ({"function": n}, n >= 0,
 * borrowed; NULL: none) to the finished registry. -1 with err naming file
 * and the field when a name is unknown or a value out of range.
 */
int mizan_registry_limits(mizan_registry_t *reg, const json_t *limits, const char *file, mizan_err_t *err);

/** Runs each module's free_fn (after the workers stopped) and frees mods. */
void mizan_modules_unload(mizan_modinst_t *mods, size_t nmods);

#endif /* MIZAN_REGISTRY_H */
