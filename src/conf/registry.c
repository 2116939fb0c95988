/*
 * registry.c - building, checking and looking up functions and contexts.
 *
 * Registration (module.c, at start-up) only copies definitions;
 * mizan_registry_finish() does all the checking, so definitions may refer
 * to names registered later or by another module.
 */
#include "registry.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

void mizan_registry_init(mizan_registry_t *reg, int default_timeout_ms)
{
    memset(reg, 0, sizeof(*reg));
    reg->default_timeout_ms = default_timeout_ms;
    reg->pending_errors = json_array();
}

static void free_strv(char **v, size_t n)
{
    if (v == NULL)
        return;
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

static void function_free(mizan_function_t *f)
{
    free(f->name);
    json_decref(f->schema_src);
    mizan_schema_free(f->schema);
    json_decref(f->output_src);
    mizan_schema_free(f->output);
    free_strv(f->arg_names, f->nargs);
    mizan_auth_deinit(&f->auth);
    free_strv(f->invalidates, f->ninvalidates);
    free(f->inv);
    free(f->description);
    free(f->running);
    free(f);
}

static void context_free(mizan_context_t *c)
{
    free(c->name);
    json_decref(c->params_src);
    mizan_schema_free(c->params);
    free_strv(c->param_names, c->nparams);
    free(c->param_types);
    free_strv(c->fn_names, c->nfns);
    free(c->fns);
    free(c->description);
    free(c);
}

void mizan_registry_deinit(mizan_registry_t *reg)
{
    for (size_t i = 0; i < reg->nfns; i++)
        function_free(reg->fns[i]);
    for (size_t i = 0; i < reg->nctxs; i++)
        context_free(reg->ctxs[i]);
    free(reg->fns);
    free(reg->ctxs);
    json_decref(reg->pending_errors);
    free(reg->schema_json);
    memset(reg, 0, sizeof(*reg));
}

bool mizan_registry_valid_name(const char *name)
{
    if (name == NULL || !((name[0] >= 'A' && name[0] <= 'Z') || (name[0] >= 'a' && name[0] <= 'z') || name[0] == '_'))
        return false;
    for (const char *p = name + 1; *p; p++)
        if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_' ||
              *p == '.'))
            return false;
    return strlen(name) <= 128;
}

/* ---- registration (called through the module API) --------------------- */

/* Records a registration problem, reported by mizan_registry_finish. */
static int pending(mizan_registry_t *reg, const char *module, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int pending(mizan_registry_t *reg, const char *module, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    json_array_append_new(reg->pending_errors, json_sprintf("module \"%s\": %s", module, msg));
    return -1;
}

/* Parses JSON text of a definition member; NULL text gives dflt (new ref). */
static json_t *parse_def_json(const char *text, const char *dflt, mizan_err_t *err)
{
    json_error_t jerr;
    json_t *v = json_loads(text != NULL ? text : dflt, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &jerr);
    if (v == NULL)
        mizan_err_set(err, "invalid JSON at %d:%d: %s", jerr.line, jerr.column, jerr.text);
    return v;
}

static char **copy_strv(const char *const *src, size_t *n)
{
    size_t count = 0;
    while (src != NULL && src[count] != NULL)
        count++;
    char **out = calloc(count + 1, sizeof(*out));
    if (out == NULL)
        return NULL;
    for (size_t i = 0; i < count; i++)
        if ((out[i] = strdup(src[i])) == NULL) {
            free_strv(out, i);
            return NULL;
        }
    *n = count;
    return out;
}

static int grow(void **arr, size_t *cap, size_t n)
{
    if (n < *cap)
        return 0;
    size_t ncap = *cap ? *cap * 2 : 16;
    void *p = realloc(*arr, ncap * sizeof(void *));
    if (p == NULL)
        return -1;
    *arr = p;
    *cap = ncap;
    return 0;
}

int mizan_module_add_function(mizan_module_t *m, const mizan_function_def_t *def)
{
    mizan_modinst_t *mod = (mizan_modinst_t *)m;
    mizan_registry_t *reg = mod->reg;
    mizan_err_t err = {{0}};
    const char *name = def != NULL && def->name != NULL ? def->name : "(null)";
    if (def == NULL || !mizan_registry_valid_name(def->name))
        return pending(reg, mod->name, "function name \"%s\" is invalid (allowed: [A-Za-z_][A-Za-z0-9_.]*)", name);
    if (def->kind != MIZAN_QUERY && def->kind != MIZAN_MUTATION)
        return pending(reg, mod->name, "function \"%s\": kind must be MIZAN_QUERY or MIZAN_MUTATION", name);
    if (def->auth != NULL && def->auth_fn != NULL)
        return pending(reg, mod->name, "function \"%s\": set either auth or auth_fn, not both", name);
    if (def->timeout_ms < 0)
        return pending(reg, mod->name, "function \"%s\": timeout_ms must be >= 0", name);
    /* A module built for ABI 1 has no max_concurrency: its definition ends before it. */
    int max_concurrency = mod->abi == 0 || mod->abi >= 2 ? def->max_concurrency : 0;
    if (max_concurrency < 0)
        return pending(reg, mod->name, "function \"%s\": max_concurrency must be >= 0 (0: unlimited)", name);
    mizan_function_t *f = calloc(1, sizeof(*f));
    if (f == NULL || grow((void **)&reg->fns, &reg->capfns, reg->nfns) < 0) {
        free(f);
        return pending(reg, mod->name, "out of memory");
    }
    f->name = strdup(def->name);
    f->kind = def->kind;
    f->handler = def->handler;
    f->timeout_ms = def->timeout_ms > 0 ? def->timeout_ms : reg->default_timeout_ms;
    f->max_concurrency = max_concurrency;
    /* So does nonblocking: an ABI 1 function runs on a worker. */
    f->nonblocking = (mod->abi == 0 || mod->abi >= 2) && def->nonblocking;
    f->running = calloc(1, sizeof(*f->running));
    f->description = def->description != NULL ? strdup(def->description) : NULL;
    f->module = mod;
    f->invalidates = copy_strv(def->invalidates, &f->ninvalidates);
    reg->fns[reg->nfns++] = f; /* owned by the registry from here on */
    if (f->name == NULL || f->invalidates == NULL || f->running == NULL)
        return pending(reg, mod->name, "out of memory");
    if ((f->schema_src = parse_def_json(def->input_schema, "{\"type\":\"object\"}", &err)) == NULL)
        return pending(reg, mod->name, "function \"%s\": input_schema: %s", name, err.msg);
    /* Like max_concurrency, output_schema lies past the end of an ABI 1 definition. */
    const char *output_schema = mod->abi == 0 || mod->abi >= 2 ? def->output_schema : NULL;
    if (output_schema != NULL && (f->output_src = parse_def_json(output_schema, NULL, &err)) == NULL)
        return pending(reg, mod->name, "function \"%s\": output_schema: %s", name, err.msg);
    if (def->auth_fn != NULL) {
        f->auth.kind = MIZAN_AUTH_NATIVE;
        f->auth.fn = def->auth_fn;
    } else {
        json_t *spec = parse_def_json(def->auth, "false", &err);
        int rc = spec != NULL ? mizan_auth_parse(spec, &f->auth, &err) : -1;
        json_decref(spec);
        if (rc < 0)
            return pending(reg, mod->name, "function \"%s\": auth: %s", name, err.msg);
    }
    return 0;
}

int mizan_module_add_context(mizan_module_t *m, const mizan_context_def_t *def)
{
    mizan_modinst_t *mod = (mizan_modinst_t *)m;
    mizan_registry_t *reg = mod->reg;
    mizan_err_t err = {{0}};
    const char *name = def != NULL && def->name != NULL ? def->name : "(null)";
    if (def == NULL || !mizan_registry_valid_name(def->name))
        return pending(reg, mod->name, "context name \"%s\" is invalid (allowed: [A-Za-z_][A-Za-z0-9_.]*)", name);
    if (def->ttl < 0)
        return pending(reg, mod->name, "context \"%s\": ttl must be >= 0 seconds", name);
    int stale_s = mod->abi == 0 || mod->abi >= 2 ? def->stale_s : 0;
    if (stale_s < 0 || stale_s > 31536000)
        return pending(reg, mod->name, "context \"%s\": stale_s must be 0..31536000 seconds", name);
    if (def->scope != MIZAN_SCOPE_PUBLIC && def->scope != MIZAN_SCOPE_USER && def->scope != MIZAN_SCOPE_PERMS)
        return pending(reg, mod->name, "context \"%s\": scope must be public, user or perms", name);
    mizan_context_t *c = calloc(1, sizeof(*c));
    if (c == NULL || grow((void **)&reg->ctxs, &reg->capctxs, reg->nctxs) < 0) {
        free(c);
        return pending(reg, mod->name, "out of memory");
    }
    c->name = strdup(def->name);
    c->ttl = def->ttl;
    c->stale_s = def->ttl > 0 ? stale_s : 0;
    c->scope = def->scope;
    c->description = def->description != NULL ? strdup(def->description) : NULL;
    c->module = mod;
    c->fn_names = copy_strv(def->functions, &c->nfns);
    reg->ctxs[reg->nctxs++] = c;
    if (c->name == NULL || c->fn_names == NULL)
        return pending(reg, mod->name, "out of memory");
    if ((c->params_src = parse_def_json(def->params_schema, "{\"type\":\"object\",\"additionalProperties\":false}",
                                        &err)) == NULL)
        return pending(reg, mod->name, "context \"%s\": params_schema: %s", name, err.msg);
    return 0;
}

/* ---- finishing --------------------------------------------------------- */

static int cmp_fn(const void *a, const void *b)
{
    return strcmp((*(mizan_function_t *const *)a)->name, (*(mizan_function_t *const *)b)->name);
}

static int cmp_ctx(const void *a, const void *b)
{
    return strcmp((*(mizan_context_t *const *)a)->name, (*(mizan_context_t *const *)b)->name);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Collects the declared property names of an object schema, sorted. */
static int property_names(const json_t *schema, char ***names, size_t *n)
{
    json_t *props = json_is_object(schema) ? json_object_get(schema, "properties") : NULL;
    size_t count = json_is_object(props) ? json_object_size(props) : 0;
    char **out = calloc(count + 1, sizeof(*out));
    if (out == NULL)
        return -1;
    size_t i = 0;
    const char *key;
    json_t *value;
    if (count > 0)
        json_object_foreach(props, key, value)
        {
            (void)value;
            if ((out[i] = strdup(key)) == NULL) {
                free_strv(out, i);
                return -1;
            }
            i++;
        }
    qsort(out, count, sizeof(*out), cmp_str);
    *names = out;
    *n = count;
    return 0;
}

/* Whether an object schema lets properties beyond the declared ones in. */
static bool allows_extra(const json_t *schema)
{
    if (json_is_true(schema))
        return true;
    json_t *ap = json_object_get(schema, "additionalProperties");
    return ap == NULL || !json_is_false(ap);
}

static bool param_type_allowed(const char *t)
{
    return strcmp(t, "string") == 0 || strcmp(t, "integer") == 0 || strcmp(t, "boolean") == 0 ||
           strcmp(t, "null") == 0;
}

static int finish_function(mizan_registry_t *reg, mizan_function_t *f, mizan_err_t *err)
{
    mizan_err_t serr = {{0}};
    if (!json_is_object(f->schema_src) && !json_is_boolean(f->schema_src))
        return mizan_err_set(err, "function \"%s\": input schema must be a JSON object", f->name);
    json_t *type = json_object_get(f->schema_src, "type");
    if (type != NULL && !(json_is_string(type) && strcmp(json_string_value(type), "object") == 0))
        return mizan_err_set(err, "function \"%s\": input schema must describe an object (\"type\": \"object\")",
                             f->name);
    if ((f->schema = mizan_schema_compile(f->schema_src, &serr)) == NULL)
        return mizan_err_set(err, "function \"%s\": input schema: %s", f->name, serr.msg);
    if (property_names(f->schema_src, &f->arg_names, &f->nargs) < 0)
        return mizan_err_set(err, "out of memory");
    if (f->output_src != NULL && (f->output = mizan_schema_compile(f->output_src, &serr)) == NULL)
        return mizan_err_set(err, "function \"%s\": output schema: %s", f->name, serr.msg);
    f->check_output = f->output != NULL && reg->validate_output;
    f->open_args = allows_extra(f->schema_src);
    if (f->auth.kind == MIZAN_AUTH_NATIVE)
        f->auth.fn_data = f->module->data;
    if (f->kind == MIZAN_QUERY && f->ninvalidates > 0)
        return mizan_err_set(err, "function \"%s\": only mutations invalidate contexts (it is a query)", f->name);
    f->inv = calloc(f->ninvalidates + 1, sizeof(*f->inv));
    if (f->inv == NULL)
        return mizan_err_set(err, "out of memory");
    for (size_t i = 0; i < f->ninvalidates; i++) {
        f->inv[i] = mizan_registry_context(reg, f->invalidates[i]);
        if (f->inv[i] == NULL)
            return mizan_err_set(err, "function \"%s\" invalidates unknown context \"%s\"", f->name,
                                 f->invalidates[i]);
        for (size_t j = 0; j < i; j++)
            if (f->inv[j] == f->inv[i])
                return mizan_err_set(err, "function \"%s\" lists context \"%s\" twice in invalidates", f->name,
                                     f->invalidates[i]);
    }
    return 0;
}

/* How narrow a scope is: public < perms < user. */
static int scope_rank(mizan_scope_t s)
{
    return s == MIZAN_SCOPE_USER ? 2 : s == MIZAN_SCOPE_PERMS ? 1 : 0;
}

/*
 * The broadest scope a context holding f may have (PROTOCOL section 4, scope
 * by construction): what f can see of its caller decides how widely one
 * caller's bundle may be shared. *why says what f sees.
 */
static mizan_scope_t scope_needed(const mizan_function_t *f, const char **why)
{
    if (f->forwards_identity) {
        *why = "forwards the caller's identity to its upstream";
        return MIZAN_SCOPE_USER;
    }
    switch (f->auth.kind) {
    case MIZAN_AUTH_TOKEN:
        *why = "requires a token (auth true), so its answer may depend on who calls";
        return MIZAN_SCOPE_USER;
    case MIZAN_AUTH_NATIVE:
        *why = "has a native auth predicate, so its answer may depend on who calls";
        return MIZAN_SCOPE_USER;
    case MIZAN_AUTH_STAFF:
    case MIZAN_AUTH_SUPERUSER:
    case MIZAN_AUTH_PERM:
        *why = "requires staff, superuser or a permission";
        return MIZAN_SCOPE_PERMS;
    case MIZAN_AUTH_NONE:
    default:
        *why = "";
        return MIZAN_SCOPE_PUBLIC;
    }
}

static const char *scope_name(mizan_scope_t s);

static int finish_context(mizan_registry_t *reg, mizan_context_t *c, mizan_err_t *err)
{
    mizan_err_t serr = {{0}};
    json_t *src = c->params_src;
    if (!json_is_object(src))
        return mizan_err_set(err, "context \"%s\": params schema must be a JSON object", c->name);
    json_t *type = json_object_get(src, "type");
    if (type != NULL && !(json_is_string(type) && strcmp(json_string_value(type), "object") == 0))
        return mizan_err_set(err, "context \"%s\": params schema must describe an object", c->name);
    if (allows_extra(src))
        return mizan_err_set(err,
                             "context \"%s\": params schema must set \"additionalProperties\": false (an undeclared "
                             "param must never mint a new cache entry)",
                             c->name);
    if ((c->params = mizan_schema_compile(src, &serr)) == NULL)
        return mizan_err_set(err, "context \"%s\": params schema: %s", c->name, serr.msg);
    if (property_names(src, &c->param_names, &c->nparams) < 0)
        return mizan_err_set(err, "out of memory");
    c->param_types = calloc(c->nparams + 1, sizeof(*c->param_types));
    if (c->param_types == NULL)
        return mizan_err_set(err, "out of memory");
    json_t *props = json_object_get(src, "properties");
    for (size_t i = 0; i < c->nparams; i++) {
        json_t *t = json_object_get(json_object_get(props, c->param_names[i]), "type");
        /* Without a "type" (a $ref, an anyOf of scalar schemas): the types
         * the compiled schema lets through, in coercion order. */
        if (t == NULL)
            t = (json_t *)mizan_schema_property_types(c->params, c->param_names[i]);
        bool ok = json_is_string(t) && param_type_allowed(json_string_value(t));
        if (json_is_array(t) && json_array_size(t) > 0) {
            ok = true;
            size_t k;
            json_t *item;
            json_array_foreach(t, k, item) ok = ok && json_is_string(item) && param_type_allowed(json_string_value(item));
        }
        if (!ok)
            return mizan_err_set(err,
                                 "context \"%s\": param \"%s\" must declare \"type\" as string, integer, boolean or "
                                 "null (or an array of those)",
                                 c->name, c->param_names[i]);
        c->param_types[i] = t;
    }
    if (c->nfns == 0)
        return mizan_err_set(err, "context \"%s\" has no functions", c->name);
    c->fns = calloc(c->nfns + 1, sizeof(*c->fns));
    if (c->fns == NULL)
        return mizan_err_set(err, "out of memory");
    for (size_t i = 0; i < c->nfns; i++) {
        c->fns[i] = mizan_registry_function(reg, c->fn_names[i]);
        if (c->fns[i] == NULL)
            return mizan_err_set(err, "context \"%s\" names unknown function \"%s\"", c->name, c->fn_names[i]);
        if (c->fns[i]->kind != MIZAN_QUERY)
            return mizan_err_set(err, "context \"%s\": function \"%s\" is a mutation; contexts hold queries only",
                                 c->name, c->fn_names[i]);
        for (size_t j = 0; j < i; j++)
            if (c->fns[j] == c->fns[i])
                return mizan_err_set(err, "context \"%s\" lists function \"%s\" twice", c->name, c->fn_names[i]);
        const char *why = "";
        mizan_scope_t need = scope_needed(c->fns[i], &why);
        if (scope_rank(c->scope) < scope_rank(need))
            return mizan_err_set(err,
                                 "context \"%s\" is %s-scoped but its function \"%s\" %s: one caller's bundle "
                                 "would be served to callers who could not compute it; set the context's scope to "
                                 "%s",
                                 c->name, scope_name(c->scope), c->fn_names[i], why,
                                 need == MIZAN_SCOPE_USER ? "\"user\"" : "\"perms\" or \"user\"");
    }
    return 0;
}

int mizan_registry_finish(mizan_registry_t *reg, mizan_err_t *err)
{
    if (json_array_size(reg->pending_errors) > 0)
        return mizan_err_set(err, "%s", json_string_value(json_array_get(reg->pending_errors, 0)));
    if (reg->nfns > 1)
        qsort(reg->fns, reg->nfns, sizeof(*reg->fns), cmp_fn);
    if (reg->nctxs > 1)
        qsort(reg->ctxs, reg->nctxs, sizeof(*reg->ctxs), cmp_ctx);
    for (size_t i = 1; i < reg->nfns; i++)
        if (strcmp(reg->fns[i - 1]->name, reg->fns[i]->name) == 0)
            return mizan_err_set(err, "function \"%s\" is registered twice (modules \"%s\" and \"%s\")",
                                 reg->fns[i]->name, reg->fns[i - 1]->module->name, reg->fns[i]->module->name);
    for (size_t i = 1; i < reg->nctxs; i++)
        if (strcmp(reg->ctxs[i - 1]->name, reg->ctxs[i]->name) == 0)
            return mizan_err_set(err, "context \"%s\" is registered twice (modules \"%s\" and \"%s\")",
                                 reg->ctxs[i]->name, reg->ctxs[i - 1]->module->name, reg->ctxs[i]->module->name);
    for (size_t i = 0; i < reg->nctxs; i++)
        if (finish_context(reg, reg->ctxs[i], err) < 0)
            return -1;
    for (size_t i = 0; i < reg->nfns; i++)
        if (finish_function(reg, reg->fns[i], err) < 0)
            return -1;
    json_t *doc = mizan_registry_to_json(reg);
    reg->schema_json = doc != NULL ? json_dumps(doc, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(doc);
    if (reg->schema_json == NULL)
        return mizan_err_set(err, "out of memory");
    return 0;
}

bool mizan_function_acquire(const mizan_function_t *fn)
{
    if (fn->max_concurrency <= 0 || fn->running == NULL)
        return true;
    if (atomic_fetch_add_explicit(fn->running, 1, memory_order_relaxed) < fn->max_concurrency)
        return true;
    atomic_fetch_sub_explicit(fn->running, 1, memory_order_relaxed);
    return false;
}

void mizan_function_release(const mizan_function_t *fn)
{
    if (fn->max_concurrency > 0 && fn->running != NULL)
        atomic_fetch_sub_explicit(fn->running, 1, memory_order_relaxed);
}

int mizan_registry_limits(mizan_registry_t *reg, const json_t *limits, const char *file, mizan_err_t *err)
{
    if (limits == NULL)
        return 0;
    if (!json_is_object(limits))
        return mizan_err_set(err, "%s: field \"max_concurrency\" must be an object {\"function name\": runs at once}",
                             file);
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)limits, key, v)
    {
        mizan_function_t *f = (mizan_function_t *)mizan_registry_function(reg, key);
        if (f == NULL)
            return mizan_err_set(err, "%s: field \"max_concurrency.%s\": no function \"%s\" is registered", file,
                                 key, key);
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > 1000000)
            return mizan_err_set(err,
                                 "%s: field \"max_concurrency.%s\" must be an integer from 0 (unlimited) to 1000000",
                                 file, key);
        f->max_concurrency = (int)json_integer_value(v);
    }
    return 0;
}

int mizan_registry_nonblocking(mizan_registry_t *reg, const json_t *table, const char *file, mizan_err_t *err)
{
    if (table == NULL)
        return 0;
    if (!json_is_object(table))
        return mizan_err_set(err, "%s: field \"nonblocking\" must be an object {\"function name\": true or false}",
                             file);
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)table, key, v)
    {
        mizan_function_t *f = (mizan_function_t *)mizan_registry_function(reg, key);
        if (f == NULL)
            return mizan_err_set(err, "%s: field \"nonblocking.%s\": no function \"%s\" is registered", file, key,
                                 key);
        if (!json_is_boolean(v))
            return mizan_err_set(err, "%s: field \"nonblocking.%s\" must be true or false", file, key);
        if (f->upstream != NULL)
            return mizan_err_set(err,
                                 "%s: field \"nonblocking.%s\": \"%s\" is an upstream function, which already runs on "
                                 "the I/O loop; remove it from \"nonblocking\"",
                                 file, key, key);
        f->nonblocking = json_is_true(v);
    }
    return 0;
}

const mizan_function_t *mizan_registry_function(const mizan_registry_t *reg, const char *name)
{
    for (size_t lo = 0, hi = reg->nfns; lo < hi;) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(name, reg->fns[mid]->name);
        if (c == 0)
            return reg->fns[mid];
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

const mizan_context_t *mizan_registry_context(const mizan_registry_t *reg, const char *name)
{
    for (size_t lo = 0, hi = reg->nctxs; lo < hi;) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(name, reg->ctxs[mid]->name);
        if (c == 0)
            return reg->ctxs[mid];
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

static const char *scope_name(mizan_scope_t s)
{
    return s == MIZAN_SCOPE_USER ? "user" : s == MIZAN_SCOPE_PERMS ? "perms" : "public";
}

json_t *mizan_registry_to_json(const mizan_registry_t *reg)
{
    json_t *fns = json_object(), *ctxs = json_object();
    for (size_t i = 0; i < reg->nfns; i++) {
        const mizan_function_t *f = reg->fns[i];
        json_t *contexts = json_array(), *inv = json_array();
        for (size_t j = 0; j < reg->nctxs; j++)
            for (size_t k = 0; k < reg->ctxs[j]->nfns; k++)
                if (strcmp(reg->ctxs[j]->fn_names[k], f->name) == 0)
                    json_array_append_new(contexts, json_string(reg->ctxs[j]->name));
        for (size_t j = 0; j < f->ninvalidates; j++)
            json_array_append_new(inv, json_string(f->invalidates[j]));
        json_t *o = json_pack("{s:s, s:O, s:o, s:o, s:b, s:i}", "kind",
                              f->kind == MIZAN_MUTATION ? "mutation" : "query", "input_schema", f->schema_src,
                              "auth", mizan_auth_to_json(&f->auth), "contexts", contexts, "implemented",
                              f->handler != NULL, "timeout_ms", f->timeout_ms);
        if (o != NULL && f->kind == MIZAN_MUTATION)
            json_object_set(o, "invalidates", inv);
        json_decref(inv);
        if (o != NULL && f->description != NULL)
            json_object_set_new(o, "description", json_string(f->description));
        if (o != NULL)
            json_object_set(o, "output_schema", f->output_src != NULL ? f->output_src : json_null());
        json_object_set_new(fns, f->name, o);
    }
    for (size_t i = 0; i < reg->nctxs; i++) {
        const mizan_context_t *c = reg->ctxs[i];
        json_t *names = json_array();
        for (size_t k = 0; k < c->nfns; k++)
            json_array_append_new(names, json_string(c->fn_names[k]));
        json_t *o = json_pack("{s:O, s:o, s:i, s:s}", "params_schema", c->params_src, "functions", names, "ttl",
                              c->ttl, "scope", scope_name(c->scope));
        if (o != NULL && c->description != NULL)
            json_object_set_new(o, "description", json_string(c->description));
        json_object_set_new(ctxs, c->name, o);
    }
    return json_pack("{s:i, s:i, s:o, s:o}", "version", MIZAN_SCHEMA_DOC_VERSION, "protocol", 1, "functions", fns,
                     "contexts", ctxs);
}

mizan_code_t mizan_registry_may_read(const mizan_context_t *c, const mizan_identity_t *id)
{
    if (c->scope == MIZAN_SCOPE_USER && id->sub == NULL)
        return MIZAN_UNAUTHORIZED;
    mizan_code_t worst = MIZAN_OK;
    for (size_t i = 0; i < c->nfns && worst != MIZAN_UNAUTHORIZED; i++) {
        mizan_code_t a = mizan_auth_check(&c->fns[i]->auth, id);
        if (a != MIZAN_OK)
            worst = a;
    }
    return worst;
}
