/*
 * config.c - loading and validating the gateway configuration.
 *
 * The table `fields` below is the single place where every scalar setting
 * is named, typed, bounded and given its default; docs/configuration.md
 * documents the same table. Nested sections (token, cache, modules) are
 * read by their own functions. Environment variables override the file:
 * MIZAN_LISTEN, MIZAN_WORKERS, MIZAN_TOKEN_SECRET, MIZAN_CACHE_SECRET,
 * MIZAN_REDIS_URL (MIZAN_BLOG_DB belongs to the blog module).
 */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <openssl/rand.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"

#define MIN_SECRET_BYTES 32

typedef enum { F_INT, F_SIZE, F_STRING } field_type_t;

/* One scalar setting of the top-level object. */
typedef struct field {
    const char *name;  /* JSON member name */
    field_type_t type; /* how to read it */
    size_t offset;     /* where it lives in mizan_config_t */
    long long def;     /* default for numbers */
    const char *sdef;  /* default for strings */
    long long min, max; /* inclusive bounds for numbers */
} field_t;

#define OFF(m) offsetof(mizan_config_t, m)
static const field_t fields[] = {
    {"io_threads", F_INT, OFF(io_threads), 0, NULL, 0, 64},
    {"workers", F_INT, OFF(workers), 0, NULL, 0, 1024},
    {"queue_size", F_INT, OFF(queue_size), 1024, NULL, 1, 1 << 20},
    {"function_timeout_ms", F_INT, OFF(function_timeout_ms), 5000, NULL, 1, 3600000},
    {"max_body_bytes", F_SIZE, OFF(max_body_bytes), 1 << 20, NULL, 64, 1LL << 30},
    {"max_header_bytes", F_SIZE, OFF(max_header_bytes), 16384, NULL, 1024, 1 << 20},
    {"idle_timeout_s", F_INT, OFF(idle_timeout_s), 60, NULL, 1, 86400},
    {"drain_timeout_ms", F_INT, OFF(drain_timeout_ms), 10000, NULL, 0, 600000},
    {"max_json_depth", F_INT, OFF(max_json_depth), 64, NULL, 2, 1024},
    {"backlog", F_INT, OFF(backlog), 4096, NULL, 16, 65535},
    {"sse_heartbeat_s", F_INT, OFF(sse_heartbeat_s), 15, NULL, 1, 3600},
    {"sse_max_clients", F_INT, OFF(sse_max_clients), 10000, NULL, 0, 1000000},
    {"sse_max_buffer_bytes", F_SIZE, OFF(sse_max_buffer_bytes), 256 * 1024, NULL, 1024, 1LL << 30},
    {"compress_min_bytes", F_SIZE, OFF(compress_min_bytes), 1024, NULL, 0, 1LL << 30},
    {"compress_level", F_INT, OFF(compress_level), 1, NULL, 0, 9},
    {"sse_max_clients_per_address", F_INT, OFF(sse_max_clients_per_address), 32, NULL, 1, 1000000},
    {"sse_max_input_bytes", F_SIZE, OFF(sse_max_input_bytes), 4096, NULL, 0, 1 << 20},
    {"api_prefix", F_STRING, OFF(api_prefix), 0, "/api/mizan", 0, 0},
    {"instance", F_STRING, OFF(instance), 0, NULL, 0, 0},
    {"module_dir", F_STRING, OFF(module_dir), 0, NULL, 0, 0},
};
#undef OFF

/* Members of the top-level object that are not in `fields`. */
static const char *sections[] = {"listen", "log_level", "token", "cache", "modules",
                                 "upstreams", "functions", "contexts", "max_concurrency", "nonblocking", "cors", "validate_output",
                                 "schemas", NULL};

static char *dup_or_null(const char *s)
{
    return s != NULL ? strdup(s) : NULL;
}

static int in_list(const char *name, const char *const *list)
{
    for (; *list != NULL; list++)
        if (strcmp(*list, name) == 0)
            return 1;
    return 0;
}

/* Rejects members of obj not named in allowed (NULL-terminated). */
static int check_members(const char *file, const char *where, const json_t *obj,
                         const char *const *allowed, mizan_err_t *err)
{
    const char *key;
    json_t *value;
    json_object_foreach((json_t *)obj, key, value)
    {
        (void)value;
        if (!in_list(key, allowed))
            return mizan_err_set(err, "%s: unknown field \"%s%s\" (check the spelling; see docs/configuration.md)",
                                 file, where, key);
    }
    return 0;
}

static int parse_listen(mizan_config_t *cfg, const char *value, const char *origin, mizan_err_t *err)
{
    const char *colon = strrchr(value, ':');
    if (colon == NULL || colon == value)
        return mizan_err_set(err, "%s: \"listen\" must be host:port, e.g. 127.0.0.1:8080 (got \"%s\")", origin, value);
    char *end;
    errno = 0;
    long port = strtol(colon + 1, &end, 10);
    if (*end != '\0' || colon[1] == '\0' || errno != 0 || port < 0 || port > 65535)
        return mizan_err_set(err, "%s: \"listen\" port must be 0..65535 (got \"%s\")", origin, value);
    size_t hlen = (size_t)(colon - value);
    const char *host = value;
    if (hlen >= 2 && value[0] == '[' && value[hlen - 1] == ']') {
        host++;
        hlen -= 2;
    }
    free(cfg->listen_host);
    cfg->listen_host = strndup(host, hlen);
    cfg->listen_port = (int)port;
    return cfg->listen_host != NULL ? 0 : mizan_err_set(err, "out of memory");
}

/* "schemas": {"dir", "base_uri", "format_assertion"} (see docs/validation.md). */
static int read_schemas(mizan_config_t *cfg, const json_t *obj, mizan_err_t *err)
{
    static const char *const allowed[] = {"dir", "base_uri", "format_assertion", NULL};
    if (obj == NULL)
        return 0;
    if (!json_is_object(obj))
        return mizan_err_set(err, "%s: field \"schemas\" must be an object", cfg->file);
    if (check_members(cfg->file, "schemas.", obj, allowed, err) < 0)
        return -1;
    const json_t *dir = json_object_get(obj, "dir");
    const json_t *base = json_object_get(obj, "base_uri");
    const json_t *fa = json_object_get(obj, "format_assertion");
    if (fa != NULL && !json_is_boolean(fa))
        return mizan_err_set(err, "%s: field \"schemas.format_assertion\" must be true or false", cfg->file);
    cfg->format_assertion = json_is_true(fa);
    if (base != NULL) {
        const char *b = json_is_string(base) ? json_string_value(base) : "";
        size_t bl = strlen(b);
        if (bl == 0 || strchr(b, ':') == NULL || b[bl - 1] != '/' || strchr(b, '#') != NULL)
            return mizan_err_set(err, "%s: field \"schemas.base_uri\" must be an absolute URI ending in '/' "
                                      "(e.g. \"https://schemas.example.com/\")", cfg->file);
        cfg->schema_base_uri = strdup(b);
        if (cfg->schema_base_uri == NULL)
            return mizan_err_set(err, "out of memory");
    }
    if (dir != NULL) {
        if (!json_is_string(dir) || json_string_length(dir) == 0)
            return mizan_err_set(err, "%s: field \"schemas.dir\" must be a directory path", cfg->file);
        const char *d = json_string_value(dir);
        if (d[0] == '/')
            cfg->schema_dir = strdup(d);
        else if (asprintf(&cfg->schema_dir, "%s/%s", cfg->dir, d) < 0)
            cfg->schema_dir = NULL;
        if (cfg->schema_dir == NULL)
            return mizan_err_set(err, "out of memory");
        struct stat st;
        if (stat(cfg->schema_dir, &st) != 0 || !S_ISDIR(st.st_mode))
            return mizan_err_set(err, "%s: field \"schemas.dir\": %s is not a directory", cfg->file, cfg->schema_dir);
    }
    return 0;
}

static int read_fields(mizan_config_t *cfg, const json_t *root, mizan_err_t *err)
{
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
        const field_t *f = &fields[i];
        void *slot = (char *)cfg + f->offset;
        json_t *v = json_object_get(root, f->name);
        if (f->type == F_STRING) {
            const char *s = f->sdef;
            if (v != NULL && !json_is_null(v)) {
                if (!json_is_string(v))
                    return mizan_err_set(err, "%s: field \"%s\" must be a string", cfg->file, f->name);
                s = json_string_value(v);
            }
            *(char **)slot = dup_or_null(s);
            continue;
        }
        long long n = f->def;
        if (v != NULL) {
            if (!json_is_integer(v) || json_integer_value(v) < f->min || json_integer_value(v) > f->max)
                return mizan_err_set(err, "%s: field \"%s\" must be an integer in %lld..%lld", cfg->file,
                                     f->name, f->min, f->max);
            n = json_integer_value(v);
        }
        if (f->type == F_INT)
            *(int *)slot = (int)n;
        else
            *(size_t *)slot = (size_t)n;
    }
    return 0;
}

/* Stores a secret given as text; refuses short ones. */
static int set_secret(unsigned char *dst, size_t cap, size_t *len, const char *value, const char *what,
                      mizan_err_t *err)
{
    size_t n = strlen(value);
    if (n < MIN_SECRET_BYTES)
        return mizan_err_set(err, "%s is %zu bytes; secrets must be at least %d bytes (generate one with: openssl rand -hex 32)",
                             what, n, MIN_SECRET_BYTES);
    if (n > cap)
        return mizan_err_set(err, "%s is longer than %zu bytes", what, cap);
    memcpy(dst, value, n);
    *len = n;
    return 0;
}

static int random_secret(unsigned char *dst, size_t *len)
{
    if (RAND_bytes(dst, 32) != 1)
        return -1;
    *len = 32;
    return 0;
}

static int read_token(mizan_config_t *cfg, const json_t *tok, mizan_err_t *err)
{
    static const char *allowed[] = {"secret", "keys", "primary", "leeway_s", "cookie", NULL};
    mizan_token_keys_t *keys = &cfg->tokens;
    const char *file = cfg->file;
    char what[sizeof(((mizan_err_t *)0)->msg)];
    if (tok != NULL && !json_is_object(tok))
        return mizan_err_set(err, "%s: field \"token\" must be an object", file);
    if (tok != NULL && check_members(file, "token.", tok, allowed, err) < 0)
        return -1;
    const char *secret = getenv("MIZAN_TOKEN_SECRET");
    const char *secret_origin = "MIZAN_TOKEN_SECRET";
    if (secret == NULL || secret[0] == '\0') {
        json_t *s = json_object_get(tok, "secret");
        secret_origin = "field \"token.secret\"";
        secret = NULL;
        if (s != NULL && !json_is_null(s)) {
            if (!json_is_string(s))
                return mizan_err_set(err, "%s: field \"token.secret\" must be a string", file);
            secret = json_string_value(s);
        }
    }
    if (secret != NULL) {
        mizan_token_key_t *k = &keys->keys[keys->nkeys++];
        snprintf(what, sizeof(what), "%s: %s", file, secret_origin);
        if (set_secret(k->secret, sizeof(k->secret), &k->secret_len, secret, what, err) < 0)
            return -1;
    }
    json_t *list = json_object_get(tok, "keys");
    if (list != NULL && !json_is_array(list))
        return mizan_err_set(err, "%s: field \"token.keys\" must be an array of {\"kid\", \"secret\"}", file);
    size_t i;
    json_t *item;
    json_array_foreach(list, i, item)
    {
        json_t *kid = json_object_get(item, "kid"), *sec = json_object_get(item, "secret");
        if (!json_is_object(item) || !json_is_string(kid) || !json_is_string(sec) || json_object_size(item) != 2 ||
            json_string_length(kid) == 0 || json_string_length(kid) >= sizeof(keys->keys[0].kid))
            return mizan_err_set(err, "%s: field \"token.keys[%zu]\" must be {\"kid\": \"1..63 chars\", \"secret\": \"...\"}",
                                 file, i);
        if (keys->nkeys >= MIZAN_TOKEN_MAX_KEYS)
            return mizan_err_set(err, "%s: field \"token.keys\" holds too many keys (at most %d keys in all, token.secret included)",
                                 file, MIZAN_TOKEN_MAX_KEYS);
        for (size_t j = 0; j < keys->nkeys; j++)
            if (strcmp(keys->keys[j].kid, json_string_value(kid)) == 0)
                return mizan_err_set(err, "%s: field \"token.keys[%zu]\": duplicate kid \"%s\"", file, i,
                                     json_string_value(kid));
        mizan_token_key_t *k = &keys->keys[keys->nkeys++];
        snprintf(k->kid, sizeof(k->kid), "%s", json_string_value(kid));
        snprintf(what, sizeof(what), "%s: field \"token.keys[%zu].secret\"", file, i);
        if (set_secret(k->secret, sizeof(k->secret), &k->secret_len, json_string_value(sec), what, err) < 0)
            return -1;
    }
    if (keys->nkeys == 0) {
        /* No secret: tokens minted by this process only; fine for a demo. */
        if (random_secret(keys->keys[0].secret, &keys->keys[0].secret_len) < 0)
            return mizan_err_set(err, "cannot generate a random token secret");
        keys->nkeys = 1;
        cfg->token_secret_generated = true;
    }
    keys->primary = 0;
    json_t *primary = json_object_get(tok, "primary");
    if (primary != NULL) {
        size_t j;
        for (j = 0; j < keys->nkeys; j++)
            if (json_is_string(primary) && strcmp(keys->keys[j].kid, json_string_value(primary)) == 0)
                break;
        if (j == keys->nkeys)
            return mizan_err_set(err, "%s: field \"token.primary\" must name the kid of one of \"token.keys\"", file);
        keys->primary = j;
    }
    json_t *leeway = json_object_get(tok, "leeway_s");
    if (leeway != NULL && (!json_is_integer(leeway) || json_integer_value(leeway) < 0 ||
                           json_integer_value(leeway) > 3600))
        return mizan_err_set(err, "%s: field \"token.leeway_s\" must be an integer in 0..3600", file);
    keys->leeway_s = leeway != NULL ? (long)json_integer_value(leeway) : 0;
    json_t *cookie = json_object_get(tok, "cookie");
    if (cookie != NULL && (!json_is_string(cookie) || json_string_length(cookie) == 0 ||
                           strpbrk(json_string_value(cookie), "=; \t\r\n,") != NULL))
        return mizan_err_set(err, "%s: field \"token.cookie\" must be a cookie name", file);
    cfg->token_cookie = strdup(cookie != NULL ? json_string_value(cookie) : "mwt");
    return 0;
}

static int read_cache(mizan_config_t *cfg, const json_t *cache, mizan_err_t *err)
{
    static const char *allowed[] = {"secret", "redis_url", "prefix", "max_bytes", "timeout_ms", "failover_wait_ms",
                                    "fill_lock", "fill_lock_ms", NULL};
    const char *file = cfg->file;
    if (cache != NULL && !json_is_object(cache))
        return mizan_err_set(err, "%s: field \"cache\" must be an object", file);
    if (cache != NULL && check_members(file, "cache.", cache, allowed, err) < 0)
        return -1;
    const char *url = getenv("MIZAN_REDIS_URL");
    if (url == NULL) {
        json_t *u = json_object_get(cache, "redis_url");
        if (u != NULL && !json_is_null(u) && !json_is_string(u))
            return mizan_err_set(err, "%s: field \"cache.redis_url\" must be a string (redis://host:port/db)", file);
        url = json_string_value(u);
    }
    cfg->redis_url = (url != NULL && url[0] != '\0') ? strdup(url) : NULL;
    if (url != NULL && url[0] != '\0' && strncmp(url, "redis://", 8) != 0 && strncmp(url, "redis-cluster://", 16) != 0)
        return mizan_err_set(err, "%s: cache.redis_url (or MIZAN_REDIS_URL) must start with redis:// or redis-cluster://",
                             file);

    const char *secret = getenv("MIZAN_CACHE_SECRET");
    const char *origin = "MIZAN_CACHE_SECRET";
    if (secret == NULL || secret[0] == '\0') {
        json_t *s = json_object_get(cache, "secret");
        origin = "field \"cache.secret\"";
        if (s != NULL && !json_is_null(s) && !json_is_string(s))
            return mizan_err_set(err, "%s: field \"cache.secret\" must be a string", file);
        secret = json_string_value(s);
    }
    char what[sizeof(((mizan_err_t *)0)->msg)];
    snprintf(what, sizeof(what), "%s: %s", file, origin);
    if (secret != NULL) {
        if (set_secret(cfg->cache_secret, sizeof(cfg->cache_secret), &cfg->cache_secret_len, secret, what, err) < 0)
            return -1;
    } else if (cfg->redis_url != NULL) {
        /* Instances sharing Redis must derive the same keys. */
        return mizan_err_set(err, "%s: a shared Redis cache needs cache.secret (or MIZAN_CACHE_SECRET), the same on every instance",
                             file);
    } else {
        if (random_secret(cfg->cache_secret, &cfg->cache_secret_len) < 0)
            return mizan_err_set(err, "cannot generate a random cache secret");
        cfg->cache_secret_generated = true;
    }
    json_t *prefix = json_object_get(cache, "prefix");
    if (prefix != NULL && (!json_is_string(prefix) || json_string_length(prefix) > 63))
        return mizan_err_set(err, "%s: field \"cache.prefix\" must be a string of at most 63 bytes", file);
    cfg->cache_prefix = strdup(prefix != NULL ? json_string_value(prefix) : "mizan:");
    json_t *max = json_object_get(cache, "max_bytes");
    if (max != NULL && (!json_is_integer(max) || json_integer_value(max) < 65536))
        return mizan_err_set(err, "%s: field \"cache.max_bytes\" must be an integer >= 65536", file);
    cfg->cache_max_bytes = max != NULL ? (size_t)json_integer_value(max) : (size_t)64 << 20;
    json_t *timeout = json_object_get(cache, "timeout_ms");
    if (timeout != NULL && (!json_is_integer(timeout) || json_integer_value(timeout) < 10 ||
                            json_integer_value(timeout) > 60000))
        return mizan_err_set(err, "%s: field \"cache.timeout_ms\" must be an integer in 10..60000", file);
    cfg->redis_timeout_ms = timeout != NULL ? (int)json_integer_value(timeout) : 250;
    json_t *wait = json_object_get(cache, "failover_wait_ms");
    if (wait != NULL && (!json_is_integer(wait) || json_integer_value(wait) < 0 || json_integer_value(wait) > 60000))
        return mizan_err_set(err, "%s: field \"cache.failover_wait_ms\" must be an integer in 0..60000", file);
    cfg->redis_failover_wait_ms = wait != NULL ? (int)json_integer_value(wait) : 10000;
    json_t *lock = json_object_get(cache, "fill_lock");
    if (lock != NULL && !json_is_boolean(lock))
        return mizan_err_set(err, "%s: field \"cache.fill_lock\" must be true or false", file);
    cfg->cache_fill_lock = lock == NULL || json_is_true(lock);
    json_t *lock_ms = json_object_get(cache, "fill_lock_ms");
    if (lock_ms != NULL &&
        (!json_is_integer(lock_ms) || json_integer_value(lock_ms) < 0 || json_integer_value(lock_ms) > 600000))
        return mizan_err_set(err, "%s: field \"cache.fill_lock_ms\" must be an integer in 0..600000", file);
    cfg->cache_fill_lock_ms = lock_ms != NULL ? (int)json_integer_value(lock_ms) : 0;
    return 0;
}

/* Joins dir and a relative path (an absolute path is returned as is). */
static char *join_path(const char *dir, const char *path)
{
    char *out = NULL;
    if (path[0] == '/')
        return strdup(path);
    if (asprintf(&out, "%s/%s", dir, path) < 0)
        return NULL;
    return out;
}

/*
 * Module lookup: a "path" (or a name containing '/') is relative to the
 * config file's directory; a bare name is <module_dir>/<name>.so, where
 * module_dir defaults to <dir of mizand>/modules (the build tree) and then
 * the installed module directory.
 */
static char *resolve_module(const mizan_config_t *cfg, const char *name, const char *path, const char *exe_dir)
{
    if (path != NULL)
        return join_path(cfg->dir, path);
    char *out = NULL;
    if (cfg->module_dir != NULL) {
        char *dir = join_path(cfg->dir, cfg->module_dir);
        if (dir == NULL || asprintf(&out, "%s/%s.so", dir, name) < 0)
            out = NULL;
        free(dir);
        return out;
    }
    if (asprintf(&out, "%s/modules/%s.so", exe_dir, name) < 0)
        return NULL;
    if (access(out, R_OK) == 0)
        return out;
    free(out);
    if (asprintf(&out, "%s/%s.so", MIZAN_INSTALL_MODULE_DIR, name) < 0)
        return NULL;
    return out;
}

static int read_modules(mizan_config_t *cfg, const json_t *mods, const char *exe_dir, mizan_err_t *err)
{
    static const char *allowed[] = {"name", "path", "config", NULL};
    const char *file = cfg->file;
    if (mods == NULL)
        return 0;
    if (!json_is_array(mods))
        return mizan_err_set(err, "%s: field \"modules\" must be an array of {\"name\", \"path\"?, \"config\"?}", file);
    cfg->modules = calloc(json_array_size(mods) + 1, sizeof(*cfg->modules));
    if (cfg->modules == NULL)
        return mizan_err_set(err, "out of memory");
    size_t i;
    json_t *m;
    json_array_foreach(mods, i, m)
    {
        char where[32];
        snprintf(where, sizeof(where), "modules[%zu].", i);
        if (!json_is_object(m))
            return mizan_err_set(err, "%s: field \"modules[%zu]\" must be an object", file, i);
        if (check_members(file, where, m, allowed, err) < 0)
            return -1;
        json_t *name = json_object_get(m, "name"), *path = json_object_get(m, "path");
        json_t *mc = json_object_get(m, "config");
        if (!json_is_string(name) || json_string_length(name) == 0 || strchr(json_string_value(name), '/') != NULL)
            return mizan_err_set(err, "%s: field \"modules[%zu].name\" must be a module name like \"blog\"", file, i);
        if (path != NULL && !json_is_string(path))
            return mizan_err_set(err, "%s: field \"modules[%zu].path\" must be a string", file, i);
        if (mc != NULL && !json_is_object(mc))
            return mizan_err_set(err, "%s: field \"modules[%zu].config\" must be an object", file, i);
        for (size_t j = 0; j < cfg->nmodules; j++)
            if (strcmp(cfg->modules[j].name, json_string_value(name)) == 0)
                return mizan_err_set(err, "%s: module \"%s\" is listed twice", file, json_string_value(name));
        mizan_module_conf_t *mod = &cfg->modules[cfg->nmodules++];
        mod->name = strdup(json_string_value(name));
        mod->path = resolve_module(cfg, mod->name, json_string_value(path), exe_dir);
        mod->config = mc != NULL ? json_deep_copy(mc) : json_object();
        if (mod->name == NULL || mod->path == NULL || mod->config == NULL)
            return mizan_err_set(err, "out of memory");
    }
    return 0;
}

static int config_dir(mizan_config_t *cfg, const char *path)
{
    char *abs = realpath(path, NULL);
    if (abs == NULL)
        return -1;
    char *slash = strrchr(abs, '/');
    if (slash == abs)
        slash[1] = '\0';
    else
        *slash = '\0';
    cfg->dir = abs;
    return 0;
}

static int apply_env_int(int *slot, const char *var, long min, long max, mizan_err_t *err)
{
    const char *v = getenv(var);
    if (v == NULL || v[0] == '\0')
        return 0;
    char *end;
    errno = 0;
    long n = strtol(v, &end, 10);
    if (*end != '\0' || errno != 0 || n < min || n > max)
        return mizan_err_set(err, "%s must be an integer in %ld..%ld (got \"%s\")", var, min, max, v);
    *slot = (int)n;
    return 0;
}

int mizan_config_load(mizan_config_t *cfg, const char *path, const char *exe_dir, mizan_err_t *err)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->file = strdup(path);
    json_error_t jerr;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    int rc = -1;
    if (root == NULL) {
        if (jerr.line <= 0)
            mizan_err_set(err, "%s: cannot read the config file: %s", path, jerr.text);
        else
            mizan_err_set(err, "%s:%d:%d: invalid JSON: %s (fix the syntax at that position)", path, jerr.line,
                          jerr.column, jerr.text);
        return -1;
    }
    if (!json_is_object(root)) {
        mizan_err_set(err, "%s: the config must be a JSON object", path);
        goto done;
    }
    if (cfg->file == NULL || config_dir(cfg, path) < 0) {
        mizan_err_set(err, "%s: cannot resolve the config file's directory", path);
        goto done;
    }
    const char *key;
    json_t *value;
    json_object_foreach(root, key, value)
    {
        int known = in_list(key, sections);
        for (size_t i = 0; !known && i < sizeof(fields) / sizeof(fields[0]); i++)
            known = strcmp(fields[i].name, key) == 0;
        if (!known) {
            mizan_err_set(err, "%s: unknown field \"%s\" (check the spelling; see docs/configuration.md)", path, key);
            goto done;
        }
    }
    if (read_fields(cfg, root, err) < 0)
        goto done;

    json_t *listen = json_object_get(root, "listen");
    if (listen != NULL && !json_is_string(listen)) {
        mizan_err_set(err, "%s: field \"listen\" must be a string host:port", path);
        goto done;
    }
    if (parse_listen(cfg, listen != NULL ? json_string_value(listen) : "127.0.0.1:8080", path, err) < 0)
        goto done;
    const char *env_listen = getenv("MIZAN_LISTEN");
    if (env_listen != NULL && env_listen[0] != '\0' && parse_listen(cfg, env_listen, "MIZAN_LISTEN", err) < 0)
        goto done;

    json_t *level = json_object_get(root, "log_level");
    cfg->log_level = MIZAN_LOG_INFO;
    if (level != NULL) {
        int lv = json_is_string(level) ? mizan_log_level_parse(json_string_value(level)) : -1;
        if (lv < 0) {
            mizan_err_set(err, "%s: field \"log_level\" must be one of \"debug\", \"info\", \"warn\", \"error\"", path);
            goto done;
        }
        cfg->log_level = lv;
    }
    if (apply_env_int(&cfg->workers, "MIZAN_WORKERS", 1, 1024, err) < 0)
        goto done;
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    if (cores < 1)
        cores = 1;
    if (cfg->workers == 0)
        cfg->workers = (int)cores;
    if (cfg->io_threads == 0)
        cfg->io_threads = (int)cores;
    if (cfg->api_prefix[0] != '/' || cfg->api_prefix[strlen(cfg->api_prefix) - 1] == '/') {
        mizan_err_set(err, "%s: field \"api_prefix\" must start with '/' and not end with one (e.g. \"/api/mizan\")", path);
        goto done;
    }
    if (cfg->instance == NULL) {
        char host[64] = "mizan";
        gethostname(host, sizeof(host) - 1);
        host[sizeof(host) - 1] = '\0';
        if (asprintf(&cfg->instance, "%s-%ld", host, (long)getpid()) < 0) {
            cfg->instance = NULL;
            mizan_err_set(err, "out of memory");
            goto done;
        }
    }
    if (read_token(cfg, json_object_get(root, "token"), err) < 0 ||
        read_cache(cfg, json_object_get(root, "cache"), err) < 0 ||
        read_modules(cfg, json_object_get(root, "modules"), exe_dir, err) < 0 ||
        mizan_cors_parse(&cfg->cors, json_object_get(root, "cors"), path, err) < 0 ||
        read_schemas(cfg, json_object_get(root, "schemas"), err) < 0)
        goto done;
    json_t *vo = json_object_get(root, "validate_output");
    if (vo != NULL && !json_is_boolean(vo)) {
        mizan_err_set(err, "%s: field \"validate_output\" must be true or false", path);
        goto done;
    }
    cfg->validate_output = json_is_true(vo);
    /* Declared upstream functions and contexts are checked by upstream.c. */
    cfg->upstreams = json_deep_copy(json_object_get(root, "upstreams"));
    cfg->functions = json_deep_copy(json_object_get(root, "functions"));
    cfg->contexts = json_deep_copy(json_object_get(root, "contexts"));
    cfg->max_concurrency = json_deep_copy(json_object_get(root, "max_concurrency"));
    cfg->nonblocking = json_deep_copy(json_object_get(root, "nonblocking"));
    rc = 0;
done:
    json_decref(root);
    return rc;
}

void mizan_config_deinit(mizan_config_t *cfg)
{
    free(cfg->file);
    free(cfg->dir);
    free(cfg->listen_host);
    free(cfg->api_prefix);
    free(cfg->instance);
    free(cfg->token_cookie);
    free(cfg->redis_url);
    free(cfg->cache_prefix);
    free(cfg->module_dir);
    free(cfg->schema_dir);
    free(cfg->schema_base_uri);
    for (size_t i = 0; i < cfg->nmodules; i++) {
        free(cfg->modules[i].name);
        free(cfg->modules[i].path);
        json_decref(cfg->modules[i].config);
    }
    free(cfg->modules);
    json_decref(cfg->upstreams);
    json_decref(cfg->functions);
    json_decref(cfg->contexts);
    json_decref(cfg->max_concurrency);
    json_decref(cfg->nonblocking);
    mizan_cors_deinit(&cfg->cors);
    OPENSSL_cleanse(cfg->cache_secret, sizeof(cfg->cache_secret));
    OPENSSL_cleanse(&cfg->tokens, sizeof(cfg->tokens));
    memset(cfg, 0, sizeof(*cfg));
}
