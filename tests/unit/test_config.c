/*
 * test_config.c - loading the gateway configuration (src/config.c): the
 * default of every field (docs/configuration.md), every field's bounds,
 * each environment override, the token key set used for rotation, the
 * cache section (Redis needs a shared secret), module path resolution and
 * the messages that name the file, the position or the field at fault.
 *
 * Every test writes its config into a fresh mkdtemp directory and runs with
 * the MIZAN_* overrides unset (restored afterwards).
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "config.h"
#include "log.h"

/* 32 and 40 byte secrets (the minimum is 32 bytes). */
#define SECRET32 "0123456789abcdef0123456789abcdef"
#define SECRET40 "token-secret-0123456789abcdef-0123456789"
#define SECRET_B "cache-secret-0123456789abcdef-0123456789"
#define SECRET_C "third-secret-0123456789abcdef-0123456789"

static const char *env_vars[] = {"MIZAN_LISTEN", "MIZAN_WORKERS", "MIZAN_TOKEN_SECRET", "MIZAN_CACHE_SECRET",
                                 "MIZAN_REDIS_URL", NULL};
static char *saved_env[8];

/* snprintf that fails the test instead of truncating; returns the length. */
static int fmt(char *out, size_t cap, const char *format, ...) __attribute__((format(printf, 3, 4)));
static int fmt(char *out, size_t cap, const char *format, ...)
{
    va_list ap;
    va_start(ap, format);
    int n = vsnprintf(out, cap, format, ap);
    va_end(ap);
    cr_assert(n >= 0 && (size_t)n < cap, "test buffer too small for '%s'", format);
    return n;
}

static char tmpdir[PATH_MAX];  /* the test's directory as created */
static char realdir[PATH_MAX]; /* the same, resolved (what cfg.dir holds) */
static char cfgpath[PATH_MAX]; /* tmpdir/mizan.json */
static char exedir[PATH_MAX];  /* tmpdir/bin, the pretend mizand directory */

static void setup(void)
{
    for (size_t i = 0; env_vars[i] != NULL; i++) {
        const char *v = getenv(env_vars[i]);
        saved_env[i] = v != NULL ? strdup(v) : NULL;
        unsetenv(env_vars[i]);
    }
    fmt(tmpdir, sizeof(tmpdir), "/tmp/mizan-test-config-XXXXXX");
    cr_assert_not_null(mkdtemp(tmpdir), "mkdtemp: %s", strerror(errno));
    cr_assert_not_null(realpath(tmpdir, realdir));
    fmt(cfgpath, sizeof(cfgpath), "%s/mizan.json", tmpdir);
    fmt(exedir, sizeof(exedir), "%s/bin", tmpdir);
    cr_assert_eq(mkdir(exedir, 0700), 0);
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void teardown(void)
{
    nftw(tmpdir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    for (size_t i = 0; env_vars[i] != NULL; i++) {
        if (saved_env[i] != NULL)
            setenv(env_vars[i], saved_env[i], 1);
        else
            unsetenv(env_vars[i]);
        free(saved_env[i]);
        saved_env[i] = NULL;
    }
}

TestSuite(config, .init = setup, .fini = teardown);

/* Writes text to path (absolute). */
static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f, "cannot write %s: %s", path, strerror(errno));
    fputs(text, f);
    cr_assert_eq(fclose(f), 0);
}

/* Writes text as the config and loads it; cfg must be deinit'd after. */
static int load(const char *text, mizan_config_t *cfg, mizan_err_t *err)
{
    write_text(cfgpath, text);
    return mizan_config_load(cfg, cfgpath, exedir, err);
}

/* Loads text and asserts success. */
static void load_ok(const char *text, mizan_config_t *cfg)
{
    mizan_err_t err = {{0}};
    int rc = load(text, cfg, &err);
    cr_assert_eq(rc, 0, "config %s refused: %s", text, err.msg);
}

/* Loads text, asserts refusal with exactly "<config path><suffix>". */
static void refused(const char *text, const char *suffix)
{
    mizan_config_t cfg;
    mizan_err_t err = {{0}};
    int rc = load(text, &cfg, &err);
    mizan_config_deinit(&cfg);
    cr_assert_eq(rc, -1, "config %s accepted", text);
    char want[1024];
    fmt(want, sizeof(want), "%s%s", cfgpath, suffix);
    cr_assert(strcmp(err.msg, want) == 0, "config %s:\n got  '%s'\n want '%s'", text, err.msg, want);
}

/* Loads text, asserts refusal with exactly the message want. */
static void refused_exactly(const char *text, const char *want)
{
    mizan_config_t cfg;
    mizan_err_t err = {{0}};
    int rc = load(text, &cfg, &err);
    mizan_config_deinit(&cfg);
    cr_assert_eq(rc, -1, "config %s accepted", text);
    cr_assert(strcmp(err.msg, want) == 0, "config %s:\n got  '%s'\n want '%s'", text, err.msg, want);
}

/* Loads text, asserts refusal with a message containing every needle. */
static void refused_mentioning(const char *text, const char *needle1, const char *needle2)
{
    mizan_config_t cfg;
    mizan_err_t err = {{0}};
    int rc = load(text, &cfg, &err);
    mizan_config_deinit(&cfg);
    cr_assert_eq(rc, -1, "config %s accepted", text);
    cr_assert_not_null(strstr(err.msg, needle1), "config %s: '%s' does not mention '%s'", text, err.msg, needle1);
    if (needle2 != NULL)
        cr_assert_not_null(strstr(err.msg, needle2), "config %s: '%s' does not mention '%s'", text, err.msg,
                           needle2);
}

static bool all_zero(const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != 0)
            return false;
    return true;
}

/* ---- defaults ------------------------------------------------------------ */

Test(config, defaults_of_every_field)
{
    mizan_config_t cfg;
    load_ok("{}", &cfg);
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    if (cores < 1)
        cores = 1;
    cr_assert_str_eq(cfg.file, cfgpath);
    cr_assert_str_eq(cfg.dir, realdir);
    cr_assert_str_eq(cfg.listen_host, "127.0.0.1");
    cr_assert_eq(cfg.listen_port, 8080);
    cr_assert_eq(cfg.io_threads, (int)cores);
    cr_assert_eq(cfg.workers, (int)cores);
    cr_assert_eq(cfg.queue_size, 1024);
    cr_assert_eq(cfg.function_timeout_ms, 5000);
    cr_assert_eq(cfg.max_body_bytes, (size_t)1048576);
    cr_assert_eq(cfg.max_header_bytes, (size_t)16384);
    cr_assert_eq(cfg.idle_timeout_s, 60);
    cr_assert_eq(cfg.drain_timeout_ms, 10000);
    cr_assert_eq(cfg.max_json_depth, 64);
    cr_assert_eq(cfg.backlog, 4096);
    cr_assert_eq(cfg.sse_heartbeat_s, 15);
    cr_assert_eq(cfg.sse_max_clients, 10000);
    cr_assert_eq(cfg.sse_max_buffer_bytes, (size_t)262144);
    cr_assert_str_eq(cfg.api_prefix, "/api/mizan");
    cr_assert_eq(cfg.log_level, MIZAN_LOG_INFO);

    char host[64] = "mizan";
    gethostname(host, sizeof(host) - 1);
    host[sizeof(host) - 1] = '\0';
    char instance[128];
    fmt(instance, sizeof(instance), "%s-%ld", host, (long)getpid());
    cr_assert_str_eq(cfg.instance, instance);

    /* No token key configured: one random 32-byte key without kid. */
    cr_assert_eq(cfg.tokens.nkeys, 1);
    cr_assert_eq(cfg.tokens.primary, 0);
    cr_assert_eq(cfg.tokens.leeway_s, 0);
    cr_assert_str_eq(cfg.tokens.keys[0].kid, "");
    cr_assert_eq(cfg.tokens.keys[0].secret_len, 32);
    cr_assert(!all_zero(cfg.tokens.keys[0].secret, 32));
    cr_assert(cfg.token_secret_generated);
    cr_assert_str_eq(cfg.token_cookie, "mwt");

    /* Embedded cache with a random 32-byte secret. */
    cr_assert_eq(cfg.cache_secret_len, 32);
    cr_assert(!all_zero(cfg.cache_secret, 32));
    cr_assert(cfg.cache_secret_generated);
    cr_assert(memcmp(cfg.cache_secret, cfg.tokens.keys[0].secret, 32) != 0, "token and cache secrets are equal");
    cr_assert_null(cfg.redis_url);
    cr_assert_str_eq(cfg.cache_prefix, "mizan:");
    cr_assert_eq(cfg.redis_timeout_ms, 250);
    cr_assert_eq(cfg.cache_max_bytes, (size_t)67108864);

    cr_assert_null(cfg.module_dir);
    cr_assert_eq(cfg.nmodules, 0);
    mizan_config_deinit(&cfg);
    cr_assert_null(cfg.file);
    cr_assert_eq(cfg.tokens.nkeys, 0);
}

Test(config, generated_secrets_differ_per_load)
{
    mizan_config_t a, b;
    load_ok("{}", &a);
    load_ok("{}", &b);
    cr_assert(memcmp(a.tokens.keys[0].secret, b.tokens.keys[0].secret, 32) != 0);
    cr_assert(memcmp(a.cache_secret, b.cache_secret, 32) != 0);
    mizan_config_deinit(&a);
    mizan_config_deinit(&b);
}

Test(config, explicit_values_are_read)
{
    mizan_config_t cfg;
    load_ok("{\"listen\": \"0.0.0.0:9001\", \"io_threads\": 3, \"workers\": 16, \"queue_size\": 7,"
            " \"function_timeout_ms\": 250, \"max_body_bytes\": 4096, \"max_header_bytes\": 2048,"
            " \"idle_timeout_s\": 5, \"drain_timeout_ms\": 0, \"max_json_depth\": 8, \"backlog\": 128,"
            " \"sse_heartbeat_s\": 2, \"sse_max_clients\": 0, \"sse_max_buffer_bytes\": 1024,"
            " \"api_prefix\": \"/rpc\", \"log_level\": \"debug\", \"instance\": \"node-a\","
            " \"module_dir\": \"mods\"}",
            &cfg);
    cr_assert_str_eq(cfg.listen_host, "0.0.0.0");
    cr_assert_eq(cfg.listen_port, 9001);
    cr_assert_eq(cfg.io_threads, 3);
    cr_assert_eq(cfg.workers, 16);
    cr_assert_eq(cfg.queue_size, 7);
    cr_assert_eq(cfg.function_timeout_ms, 250);
    cr_assert_eq(cfg.max_body_bytes, (size_t)4096);
    cr_assert_eq(cfg.max_header_bytes, (size_t)2048);
    cr_assert_eq(cfg.idle_timeout_s, 5);
    cr_assert_eq(cfg.drain_timeout_ms, 0);
    cr_assert_eq(cfg.max_json_depth, 8);
    cr_assert_eq(cfg.backlog, 128);
    cr_assert_eq(cfg.sse_heartbeat_s, 2);
    cr_assert_eq(cfg.sse_max_clients, 0);
    cr_assert_eq(cfg.sse_max_buffer_bytes, (size_t)1024);
    cr_assert_str_eq(cfg.api_prefix, "/rpc");
    cr_assert_eq(cfg.log_level, MIZAN_LOG_DEBUG);
    cr_assert_str_eq(cfg.instance, "node-a");
    cr_assert_str_eq(cfg.module_dir, "mods");
    mizan_config_deinit(&cfg);
}

Test(config, null_string_fields_take_their_default)
{
    mizan_config_t cfg;
    load_ok("{\"api_prefix\": null, \"module_dir\": null}", &cfg);
    cr_assert_str_eq(cfg.api_prefix, "/api/mizan");
    cr_assert_null(cfg.module_dir);
    mizan_config_deinit(&cfg);
}

/* ---- integer bounds ------------------------------------------------------ */

/* Every integer field: name, type (size_t or int), offset, inclusive bounds. */
static const struct {
    const char *name;
    bool is_size;
    size_t offset;
    long long min, max;
} bounded[] = {
    {"io_threads", false, offsetof(mizan_config_t, io_threads), 0, 64},
    {"workers", false, offsetof(mizan_config_t, workers), 0, 1024},
    {"queue_size", false, offsetof(mizan_config_t, queue_size), 1, 1 << 20},
    {"function_timeout_ms", false, offsetof(mizan_config_t, function_timeout_ms), 1, 3600000},
    {"max_body_bytes", true, offsetof(mizan_config_t, max_body_bytes), 64, 1LL << 30},
    {"max_header_bytes", true, offsetof(mizan_config_t, max_header_bytes), 1024, 1 << 20},
    {"idle_timeout_s", false, offsetof(mizan_config_t, idle_timeout_s), 1, 86400},
    {"drain_timeout_ms", false, offsetof(mizan_config_t, drain_timeout_ms), 0, 600000},
    {"max_json_depth", false, offsetof(mizan_config_t, max_json_depth), 2, 1024},
    {"backlog", false, offsetof(mizan_config_t, backlog), 16, 65535},
    {"sse_heartbeat_s", false, offsetof(mizan_config_t, sse_heartbeat_s), 1, 3600},
    {"sse_max_clients", false, offsetof(mizan_config_t, sse_max_clients), 0, 1000000},
    {"sse_max_buffer_bytes", true, offsetof(mizan_config_t, sse_max_buffer_bytes), 1024, 1LL << 30},
};

static long long read_slot(const mizan_config_t *cfg, size_t i)
{
    const char *slot = (const char *)cfg + bounded[i].offset;
    return bounded[i].is_size ? (long long)*(const size_t *)slot : (long long)*(const int *)slot;
}

Test(config, integer_bounds_are_inclusive)
{
    for (size_t i = 0; i < sizeof(bounded) / sizeof(bounded[0]); i++) {
        long long edges[2] = {bounded[i].min, bounded[i].max};
        for (int e = 0; e < 2; e++) {
            /* 0 for io_threads and workers means "core count". */
            if (edges[e] == 0 && (strcmp(bounded[i].name, "io_threads") == 0 || strcmp(bounded[i].name, "workers") == 0))
                continue;
            char text[128];
            fmt(text, sizeof(text), "{\"%s\": %lld}", bounded[i].name, edges[e]);
            mizan_config_t cfg;
            load_ok(text, &cfg);
            cr_assert_eq(read_slot(&cfg, i), edges[e], "%s", text);
            mizan_config_deinit(&cfg);
        }
    }
}

Test(config, integers_out_of_range_are_refused)
{
    for (size_t i = 0; i < sizeof(bounded) / sizeof(bounded[0]); i++) {
        char suffix[160];
        fmt(suffix, sizeof(suffix), ": field \"%s\" must be an integer in %lld..%lld", bounded[i].name,
                 bounded[i].min, bounded[i].max);
        const long long bad[] = {bounded[i].min - 1, bounded[i].max + 1};
        for (int k = 0; k < 2; k++) {
            char text[128];
            fmt(text, sizeof(text), "{\"%s\": %lld}", bounded[i].name, bad[k]);
            refused(text, suffix);
        }
        /* Wrong types get the same message. */
        const char *wrong[] = {"\"10\"", "10.5", "true", "[]", "{}"};
        for (size_t k = 0; k < sizeof(wrong) / sizeof(wrong[0]); k++) {
            char text[128];
            fmt(text, sizeof(text), "{\"%s\": %s}", bounded[i].name, wrong[k]);
            refused(text, suffix);
        }
    }
}

Test(config, huge_integers_are_refused_not_wrapped)
{
    refused("{\"workers\": 4294967297}", ": field \"workers\" must be an integer in 0..1024");
    refused("{\"max_body_bytes\": -1}", ": field \"max_body_bytes\" must be an integer in 64..1073741824");
}

Test(config, string_fields_must_be_strings)
{
    refused("{\"api_prefix\": 5}", ": field \"api_prefix\" must be a string");
    refused("{\"instance\": true}", ": field \"instance\" must be a string");
    refused("{\"module_dir\": []}", ": field \"module_dir\" must be a string");
}

Test(config, api_prefix_shape)
{
    const char *msg = ": field \"api_prefix\" must start with '/' and not end with one (e.g. \"/api/mizan\")";
    refused("{\"api_prefix\": \"api\"}", msg);
    refused("{\"api_prefix\": \"/api/\"}", msg);
    refused("{\"api_prefix\": \"/\"}", msg);
    refused("{\"api_prefix\": \"\"}", msg);
    mizan_config_t cfg;
    load_ok("{\"api_prefix\": \"/a/b\"}", &cfg);
    cr_assert_str_eq(cfg.api_prefix, "/a/b");
    mizan_config_deinit(&cfg);
}

Test(config, log_levels)
{
    static const struct {
        const char *name;
        int level;
    } levels[] = {{"debug", MIZAN_LOG_DEBUG}, {"info", MIZAN_LOG_INFO}, {"warn", MIZAN_LOG_WARN}, {"error", MIZAN_LOG_ERROR}};
    for (size_t i = 0; i < 4; i++) {
        char text[64];
        fmt(text, sizeof(text), "{\"log_level\": \"%s\"}", levels[i].name);
        mizan_config_t cfg;
        load_ok(text, &cfg);
        cr_assert_eq(cfg.log_level, levels[i].level, "%s", text);
        mizan_config_deinit(&cfg);
    }
    const char *msg = ": field \"log_level\" must be one of \"debug\", \"info\", \"warn\", \"error\"";
    refused("{\"log_level\": \"verbose\"}", msg);
    refused("{\"log_level\": \"INFO\"}", msg);
    refused("{\"log_level\": 1}", msg);
}

/* ---- file-level errors ---------------------------------------------------- */

Test(config, syntax_error_names_line_and_column)
{
    refused("{\n  \"workers\": 4,\n  oops\n}",
            ":3:6: invalid JSON: string or '}' expected near 'oops' (fix the syntax at that position)");
    refused("{\"workers\": 4,}", ":1:15: invalid JSON: string or '}' expected near '}' (fix the syntax at that position)");
}

Test(config, duplicate_member_is_a_syntax_error)
{
    refused_mentioning("{\"workers\": 4,\n \"workers\": 5}", ":2:10: invalid JSON: duplicate object key", NULL);
}

Test(config, missing_file)
{
    char want[1024];
    fmt(want, sizeof(want), "%s: cannot read the config file: unable to open %s: No such file or directory",
             cfgpath, cfgpath);
    mizan_config_t cfg;
    mizan_err_t err = {{0}};
    cr_assert_eq(mizan_config_load(&cfg, cfgpath, exedir, &err), -1);
    mizan_config_deinit(&cfg);
    cr_assert_str_eq(err.msg, want);
}

Test(config, root_must_be_an_object)
{
    refused("[]", ": the config must be a JSON object");
    refused("[{\"workers\": 4}]", ": the config must be a JSON object");
}

Test(config, unknown_fields_are_named)
{
    const char *hint = " (check the spelling; see docs/configuration.md)";
    char want[256];
    fmt(want, sizeof(want), ": unknown field \"worker\"%s", hint);
    refused("{\"worker\": 4}", want);
    fmt(want, sizeof(want), ": unknown field \"token.secrt\"%s", hint);
    refused("{\"token\": {\"secrt\": \"" SECRET32 "\"}}", want);
    fmt(want, sizeof(want), ": unknown field \"cache.redis\"%s", hint);
    refused("{\"cache\": {\"redis\": \"redis://h:1/0\"}}", want);
    fmt(want, sizeof(want), ": unknown field \"modules[1].pth\"%s", hint);
    refused("{\"modules\": [{\"name\": \"a\"}, {\"name\": \"b\", \"pth\": \"b.so\"}]}", want);
}

/* ---- listen ------------------------------------------------------------- */

Test(config, listen_forms)
{
    static const struct {
        const char *value, *host;
        int port;
    } ok[] = {
        {"127.0.0.1:8080", "127.0.0.1", 8080}, {"0.0.0.0:0", "0.0.0.0", 0},
        {"[::1]:9000", "::1", 9000},           {"[::]:65535", "::", 65535},
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        char text[128];
        fmt(text, sizeof(text), "{\"listen\": \"%s\"}", ok[i].value);
        mizan_config_t cfg;
        load_ok(text, &cfg);
        cr_assert_str_eq(cfg.listen_host, ok[i].host, "%s", text);
        cr_assert_eq(cfg.listen_port, ok[i].port, "%s", text);
        mizan_config_deinit(&cfg);
    }
}

Test(config, listen_errors)
{
    refused("{\"listen\": \"8080\"}",
            ": \"listen\" must be host:port, e.g. 127.0.0.1:8080 (got \"8080\")");
    refused("{\"listen\": \":8080\"}",
            ": \"listen\" must be host:port, e.g. 127.0.0.1:8080 (got \":8080\")");
    refused("{\"listen\": \"\"}", ": \"listen\" must be host:port, e.g. 127.0.0.1:8080 (got \"\")");
    refused("{\"listen\": \"127.0.0.1:\"}", ": \"listen\" port must be 0..65535 (got \"127.0.0.1:\")");
    refused("{\"listen\": \"127.0.0.1:65536\"}", ": \"listen\" port must be 0..65535 (got \"127.0.0.1:65536\")");
    refused("{\"listen\": \"127.0.0.1:-1\"}", ": \"listen\" port must be 0..65535 (got \"127.0.0.1:-1\")");
    refused("{\"listen\": \"127.0.0.1:80x\"}", ": \"listen\" port must be 0..65535 (got \"127.0.0.1:80x\")");
    refused("{\"listen\": \"127.0.0.1:99999999999999999999\"}",
            ": \"listen\" port must be 0..65535 (got \"127.0.0.1:99999999999999999999\")");
    refused("{\"listen\": \"[::1]\"}", ": \"listen\" port must be 0..65535 (got \"[::1]\")");
    refused("{\"listen\": 8080}", ": field \"listen\" must be a string host:port");
}

Test(config, env_listen_overrides_the_file)
{
    setenv("MIZAN_LISTEN", "[::1]:9090", 1);
    mizan_config_t cfg;
    load_ok("{\"listen\": \"127.0.0.1:7000\"}", &cfg);
    cr_assert_str_eq(cfg.listen_host, "::1");
    cr_assert_eq(cfg.listen_port, 9090);
    mizan_config_deinit(&cfg);

    setenv("MIZAN_LISTEN", "10.0.0.1:0", 1);
    load_ok("{}", &cfg);
    cr_assert_str_eq(cfg.listen_host, "10.0.0.1");
    cr_assert_eq(cfg.listen_port, 0);
    mizan_config_deinit(&cfg);
}

Test(config, env_listen_empty_is_ignored)
{
    setenv("MIZAN_LISTEN", "", 1);
    mizan_config_t cfg;
    load_ok("{\"listen\": \"127.0.0.1:7000\"}", &cfg);
    cr_assert_eq(cfg.listen_port, 7000);
    mizan_config_deinit(&cfg);
}

Test(config, env_listen_errors_name_the_variable)
{
    setenv("MIZAN_LISTEN", "nowhere", 1);
    refused_exactly("{}", "MIZAN_LISTEN: \"listen\" must be host:port, e.g. 127.0.0.1:8080 (got \"nowhere\")");
    setenv("MIZAN_LISTEN", "[::1]:70000", 1);
    refused_exactly("{}", "MIZAN_LISTEN: \"listen\" port must be 0..65535 (got \"[::1]:70000\")");
}

/* ---- MIZAN_WORKERS ---------------------------------------------------------- */

Test(config, env_workers_overrides_the_file)
{
    setenv("MIZAN_WORKERS", "7", 1);
    mizan_config_t cfg;
    load_ok("{\"workers\": 3}", &cfg);
    cr_assert_eq(cfg.workers, 7);
    mizan_config_deinit(&cfg);
    setenv("MIZAN_WORKERS", "1024", 1);
    load_ok("{}", &cfg);
    cr_assert_eq(cfg.workers, 1024);
    mizan_config_deinit(&cfg);
    setenv("MIZAN_WORKERS", "", 1);
    load_ok("{\"workers\": 3}", &cfg);
    cr_assert_eq(cfg.workers, 3);
    mizan_config_deinit(&cfg);
}

Test(config, env_workers_bad_values)
{
    const char *bad[] = {"0", "1025", "abc", "4x", "-3", "99999999999999999999"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        setenv("MIZAN_WORKERS", bad[i], 1);
        char want[128];
        fmt(want, sizeof(want), "MIZAN_WORKERS must be an integer in 1..1024 (got \"%s\")", bad[i]);
        refused_exactly("{}", want);
    }
}

/* ---- token keys ------------------------------------------------------------ */

#define SHORT_MSG "; secrets must be at least 32 bytes (generate one with: openssl rand -hex 32)"

Test(config, token_secret_from_the_file)
{
    mizan_config_t cfg;
    load_ok("{\"token\": {\"secret\": \"" SECRET40 "\", \"leeway_s\": 30, \"cookie\": \"session\"}}", &cfg);
    cr_assert_eq(cfg.tokens.nkeys, 1);
    cr_assert_eq(cfg.tokens.primary, 0);
    cr_assert_str_eq(cfg.tokens.keys[0].kid, "");
    cr_assert_eq(cfg.tokens.keys[0].secret_len, strlen(SECRET40));
    cr_assert_eq(memcmp(cfg.tokens.keys[0].secret, SECRET40, strlen(SECRET40)), 0);
    cr_assert(!cfg.token_secret_generated);
    cr_assert_eq(cfg.tokens.leeway_s, 30);
    cr_assert_str_eq(cfg.token_cookie, "session");
    mizan_config_deinit(&cfg);
}

Test(config, token_secret_of_exactly_32_bytes)
{
    mizan_config_t cfg;
    load_ok("{\"token\": {\"secret\": \"" SECRET32 "\"}}", &cfg);
    cr_assert_eq(cfg.tokens.keys[0].secret_len, 32);
    mizan_config_deinit(&cfg);
}

Test(config, env_token_secret_overrides_the_file)
{
    setenv("MIZAN_TOKEN_SECRET", SECRET32, 1);
    mizan_config_t cfg;
    load_ok("{\"token\": {\"secret\": \"" SECRET40 "\"}}", &cfg);
    cr_assert_eq(cfg.tokens.nkeys, 1);
    cr_assert_eq(cfg.tokens.keys[0].secret_len, 32);
    cr_assert_eq(memcmp(cfg.tokens.keys[0].secret, SECRET32, 32), 0);
    cr_assert(!cfg.token_secret_generated);
    mizan_config_deinit(&cfg);

    /* Empty counts as unset: the file's secret is used. */
    setenv("MIZAN_TOKEN_SECRET", "", 1);
    load_ok("{\"token\": {\"secret\": \"" SECRET40 "\"}}", &cfg);
    cr_assert_eq(cfg.tokens.keys[0].secret_len, strlen(SECRET40));
    mizan_config_deinit(&cfg);
}

Test(config, short_token_secrets_are_refused)
{
    setenv("MIZAN_TOKEN_SECRET", "0123456789abcdef0123456789abcde", 1); /* 31 bytes */
    refused("{}", ": MIZAN_TOKEN_SECRET is 31 bytes" SHORT_MSG);
    unsetenv("MIZAN_TOKEN_SECRET");
    refused("{\"token\": {\"secret\": \"short\"}}", ": field \"token.secret\" is 5 bytes" SHORT_MSG);
    refused("{\"token\": {\"secret\": 5}}", ": field \"token.secret\" must be a string");
}

Test(config, overlong_token_secret_is_refused)
{
    char secret[258];
    memset(secret, 'k', 257);
    secret[257] = '\0';
    setenv("MIZAN_TOKEN_SECRET", secret, 1);
    refused("{}", ": MIZAN_TOKEN_SECRET is longer than 256 bytes");
    secret[256] = '\0';
    setenv("MIZAN_TOKEN_SECRET", secret, 1);
    mizan_config_t cfg;
    load_ok("{}", &cfg);
    cr_assert_eq(cfg.tokens.keys[0].secret_len, 256);
    mizan_config_deinit(&cfg);
}

Test(config, short_secret_message_names_the_field_under_a_long_path)
{
    /* A config deep in a directory tree still gets a message that names the
     * offending field (the message buffer holds 512 bytes). */
    char dir[PATH_MAX];
    fmt(dir, sizeof(dir), "%s/a-rather-long-directory-name-for-deployment-configs", tmpdir);
    cr_assert_eq(mkdir(dir, 0700), 0);
    size_t n = strlen(dir);
    fmt(dir + n, sizeof(dir) - n, "/production-environment-settings-eu-west");
    cr_assert_eq(mkdir(dir, 0700), 0);
    char path[PATH_MAX];
    fmt(path, sizeof(path), "%s/mizan.json", dir);
    write_text(path, "{\"token\": {\"secret\": \"short\"}}");
    mizan_config_t cfg;
    mizan_err_t err = {{0}};
    int rc = mizan_config_load(&cfg, path, exedir, &err);
    mizan_config_deinit(&cfg);
    cr_assert_eq(rc, -1);
    cr_assert_not_null(strstr(err.msg, "field \"token.secret\" is 5 bytes"), "message '%s' lost the field name",
                       err.msg);
    cr_assert_not_null(strstr(err.msg, "at least 32 bytes"), "%s", err.msg);
}

Test(config, token_key_rotation)
{
    mizan_config_t cfg;
    load_ok("{\"token\": {\"secret\": \"" SECRET40 "\", \"keys\": [{\"kid\": \"2026-10\", \"secret\": \"" SECRET_B
            "\"}, {\"kid\": \"2026-11\", \"secret\": \"" SECRET_C "\"}], \"primary\": \"2026-11\"}}",
            &cfg);
    cr_assert_eq(cfg.tokens.nkeys, 3);
    cr_assert_str_eq(cfg.tokens.keys[0].kid, "");
    cr_assert_str_eq(cfg.tokens.keys[1].kid, "2026-10");
    cr_assert_str_eq(cfg.tokens.keys[2].kid, "2026-11");
    cr_assert_eq(memcmp(cfg.tokens.keys[1].secret, SECRET_B, strlen(SECRET_B)), 0);
    cr_assert_eq(cfg.tokens.keys[2].secret_len, strlen(SECRET_C));
    cr_assert_eq(memcmp(cfg.tokens.keys[2].secret, SECRET_C, strlen(SECRET_C)), 0);
    cr_assert_eq(cfg.tokens.primary, 2);
    cr_assert(!cfg.token_secret_generated);
    mizan_config_deinit(&cfg);
}

Test(config, token_keys_without_secret)
{
    mizan_config_t cfg;
    load_ok("{\"token\": {\"keys\": [{\"kid\": \"a\", \"secret\": \"" SECRET_B "\"}, {\"kid\": \"b\", \"secret\": \""
            SECRET_C "\"}]}}",
            &cfg);
    cr_assert_eq(cfg.tokens.nkeys, 2);
    cr_assert_str_eq(cfg.tokens.keys[0].kid, "a");
    cr_assert_eq(cfg.tokens.primary, 0);
    cr_assert(!cfg.token_secret_generated);
    mizan_config_deinit(&cfg);

    load_ok("{\"token\": {\"keys\": [{\"kid\": \"a\", \"secret\": \"" SECRET_B "\"}, {\"kid\": \"b\", \"secret\": \""
            SECRET_C "\"}], \"primary\": \"b\"}}",
            &cfg);
    cr_assert_eq(cfg.tokens.primary, 1);
    mizan_config_deinit(&cfg);
}

Test(config, env_secret_comes_first_in_the_key_set)
{
    setenv("MIZAN_TOKEN_SECRET", SECRET32, 1);
    mizan_config_t cfg;
    load_ok("{\"token\": {\"keys\": [{\"kid\": \"a\", \"secret\": \"" SECRET_B "\"}]}}", &cfg);
    cr_assert_eq(cfg.tokens.nkeys, 2);
    cr_assert_str_eq(cfg.tokens.keys[0].kid, "");
    cr_assert_eq(memcmp(cfg.tokens.keys[0].secret, SECRET32, 32), 0);
    cr_assert_str_eq(cfg.tokens.keys[1].kid, "a");
    cr_assert_eq(cfg.tokens.primary, 0);
    mizan_config_deinit(&cfg);
}

Test(config, token_key_errors)
{
    refused("{\"token\": {\"keys\": [{\"kid\": \"a\", \"secret\": \"" SECRET_B "\"}, {\"kid\": \"a\", \"secret\": \""
            SECRET_C "\"}]}}",
            ": field \"token.keys[1]\": duplicate kid \"a\"");
    refused("{\"token\": {\"keys\": [{\"kid\": \"a\", \"secret\": \"" SECRET_B "\"}], \"primary\": \"z\"}}",
            ": field \"token.primary\" must name the kid of one of \"token.keys\"");
    refused("{\"token\": {\"keys\": [{\"kid\": \"a\", \"secret\": \"" SECRET_B "\"}], \"primary\": 1}}",
            ": field \"token.primary\" must name the kid of one of \"token.keys\"");
    refused("{\"token\": {\"keys\": [{\"kid\": \"a\", \"secret\": \"short\"}]}}",
            ": field \"token.keys[0].secret\" is 5 bytes" SHORT_MSG);
    refused("{\"token\": {\"keys\": {\"kid\": \"a\"}}}",
            ": field \"token.keys\" must be an array of {\"kid\", \"secret\"}");
    const char *shape = ": field \"token.keys[0]\" must be {\"kid\": \"1..63 chars\", \"secret\": \"...\"}";
    refused("{\"token\": {\"keys\": [{\"kid\": \"a\"}]}}", shape);
    refused("{\"token\": {\"keys\": [{\"secret\": \"" SECRET_B "\"}]}}", shape);
    refused("{\"token\": {\"keys\": [{\"kid\": \"\", \"secret\": \"" SECRET_B "\"}]}}", shape);
    refused("{\"token\": {\"keys\": [{\"kid\": 1, \"secret\": \"" SECRET_B "\"}]}}", shape);
    refused("{\"token\": {\"keys\": [{\"kid\": \"a\", \"secret\": \"" SECRET_B "\", \"alg\": \"HS256\"}]}}", shape);
    refused("{\"token\": {\"keys\": [\"a\"]}}", shape);
    /* A kid of 63 bytes fits, 64 does not. */
    char text[512];
    char kid[65];
    memset(kid, 'k', 64);
    kid[64] = '\0';
    fmt(text, sizeof(text), "{\"token\": {\"keys\": [{\"kid\": \"%s\", \"secret\": \"" SECRET_B "\"}]}}", kid);
    refused(text, shape);
    kid[63] = '\0';
    fmt(text, sizeof(text), "{\"token\": {\"keys\": [{\"kid\": \"%s\", \"secret\": \"" SECRET_B "\"}]}}", kid);
    mizan_config_t cfg;
    load_ok(text, &cfg);
    cr_assert_str_eq(cfg.tokens.keys[0].kid, kid);
    mizan_config_deinit(&cfg);
}

/* A token section with n keys (kids k0..), with or without the secret. */
static void keys_text(char *out, size_t cap, int n, bool with_secret)
{
    size_t len = (size_t)fmt(out, cap, "{\"token\": {%s\"keys\": [",
                                  with_secret ? "\"secret\": \"" SECRET40 "\", " : "");
    for (int i = 0; i < n; i++)
        len += (size_t)fmt(out + len, cap - len, "%s{\"kid\": \"k%d\", \"secret\": \"" SECRET_B "\"}",
                                i > 0 ? ", " : "", i);
    fmt(out + len, cap - len, "]}}");
}

Test(config, token_key_count_limit)
{
    static char text[8192];
    mizan_config_t cfg;
    keys_text(text, sizeof(text), MIZAN_TOKEN_MAX_KEYS, false);
    load_ok(text, &cfg);
    cr_assert_eq(cfg.tokens.nkeys, MIZAN_TOKEN_MAX_KEYS);
    mizan_config_deinit(&cfg);
    keys_text(text, sizeof(text), MIZAN_TOKEN_MAX_KEYS - 1, true);
    load_ok(text, &cfg);
    cr_assert_eq(cfg.tokens.nkeys, MIZAN_TOKEN_MAX_KEYS);
    mizan_config_deinit(&cfg);
    keys_text(text, sizeof(text), MIZAN_TOKEN_MAX_KEYS, true);
    refused_mentioning(text, "field \"token.keys\" holds too many keys", NULL);
    keys_text(text, sizeof(text), MIZAN_TOKEN_MAX_KEYS + 1, false);
    refused_mentioning(text, "field \"token.keys\" holds too many keys", NULL);
}

Test(config, token_leeway_and_cookie)
{
    mizan_config_t cfg;
    load_ok("{\"token\": {\"leeway_s\": 3600}}", &cfg);
    cr_assert_eq(cfg.tokens.leeway_s, 3600);
    mizan_config_deinit(&cfg);
    const char *leeway = ": field \"token.leeway_s\" must be an integer in 0..3600";
    refused("{\"token\": {\"leeway_s\": 3601}}", leeway);
    refused("{\"token\": {\"leeway_s\": -1}}", leeway);
    refused("{\"token\": {\"leeway_s\": \"5\"}}", leeway);
    const char *cookie = ": field \"token.cookie\" must be a cookie name";
    refused("{\"token\": {\"cookie\": \"\"}}", cookie);
    refused("{\"token\": {\"cookie\": \"a=b\"}}", cookie);
    refused("{\"token\": {\"cookie\": \"a b\"}}", cookie);
    refused("{\"token\": {\"cookie\": \"a;b\"}}", cookie);
    refused("{\"token\": {\"cookie\": \"a,b\"}}", cookie);
    refused("{\"token\": {\"cookie\": 5}}", cookie);
    refused("{\"token\": 5}", ": field \"token\" must be an object");
}

/* ---- cache ------------------------------------------------------------------ */

Test(config, cache_fields)
{
    mizan_config_t cfg;
    load_ok("{\"cache\": {\"secret\": \"" SECRET_B "\", \"prefix\": \"app1:\", \"max_bytes\": 65536,"
            " \"timeout_ms\": 10}}",
            &cfg);
    cr_assert_eq(cfg.cache_secret_len, strlen(SECRET_B));
    cr_assert_eq(memcmp(cfg.cache_secret, SECRET_B, strlen(SECRET_B)), 0);
    cr_assert(!cfg.cache_secret_generated);
    cr_assert_str_eq(cfg.cache_prefix, "app1:");
    cr_assert_eq(cfg.cache_max_bytes, (size_t)65536);
    cr_assert_eq(cfg.redis_timeout_ms, 10);
    cr_assert_null(cfg.redis_url);
    mizan_config_deinit(&cfg);
    load_ok("{\"cache\": {\"timeout_ms\": 60000}}", &cfg);
    cr_assert_eq(cfg.redis_timeout_ms, 60000);
    cr_assert_eq(cfg.redis_failover_wait_ms, 10000);
    mizan_config_deinit(&cfg);
}

Test(config, cluster_url_and_failover_wait)
{
    mizan_config_t cfg;
    load_ok("{\"cache\": {\"secret\": \"" SECRET_B "\", \"redis_url\": \"redis-cluster://h1:7000,h2:7001\","
            " \"failover_wait_ms\": 0}}",
            &cfg);
    cr_assert_str_eq(cfg.redis_url, "redis-cluster://h1:7000,h2:7001");
    cr_assert_eq(cfg.redis_failover_wait_ms, 0);
    mizan_config_deinit(&cfg);
    refused("{\"cache\": {\"failover_wait_ms\": 60001}}",
            ": field \"cache.failover_wait_ms\" must be an integer in 0..60000");
    refused("{\"cache\": {\"failover_wait_ms\": \"5s\"}}",
            ": field \"cache.failover_wait_ms\" must be an integer in 0..60000");
}

Test(config, fill_lock)
{
    mizan_config_t cfg;
    load_ok("{}", &cfg);
    cr_assert(cfg.cache_fill_lock, "the fill lock is on by default");
    cr_assert_eq(cfg.cache_fill_lock_ms, 0);
    mizan_config_deinit(&cfg);
    load_ok("{\"cache\": {\"fill_lock\": false, \"fill_lock_ms\": 1500}}", &cfg);
    cr_assert(!cfg.cache_fill_lock);
    cr_assert_eq(cfg.cache_fill_lock_ms, 1500);
    mizan_config_deinit(&cfg);
    refused("{\"cache\": {\"fill_lock\": \"yes\"}}", ": field \"cache.fill_lock\" must be true or false");
    refused("{\"cache\": {\"fill_lock_ms\": -1}}", ": field \"cache.fill_lock_ms\" must be an integer in 0..600000");
    refused("{\"cache\": {\"fill_lock_ms\": 600001}}",
            ": field \"cache.fill_lock_ms\" must be an integer in 0..600000");
}

Test(config, cache_field_errors)
{
    char prefix[80];
    memset(prefix, 'p', 64);
    prefix[64] = '\0';
    char text[256];
    fmt(text, sizeof(text), "{\"cache\": {\"prefix\": \"%s\"}}", prefix);
    refused(text, ": field \"cache.prefix\" must be a string of at most 63 bytes");
    prefix[63] = '\0';
    fmt(text, sizeof(text), "{\"cache\": {\"prefix\": \"%s\"}}", prefix);
    mizan_config_t cfg;
    load_ok(text, &cfg);
    cr_assert_str_eq(cfg.cache_prefix, prefix);
    mizan_config_deinit(&cfg);
    refused("{\"cache\": {\"prefix\": 1}}", ": field \"cache.prefix\" must be a string of at most 63 bytes");
    refused("{\"cache\": {\"max_bytes\": 65535}}", ": field \"cache.max_bytes\" must be an integer >= 65536");
    refused("{\"cache\": {\"max_bytes\": \"1\"}}", ": field \"cache.max_bytes\" must be an integer >= 65536");
    refused("{\"cache\": {\"timeout_ms\": 9}}", ": field \"cache.timeout_ms\" must be an integer in 10..60000");
    refused("{\"cache\": {\"timeout_ms\": 60001}}", ": field \"cache.timeout_ms\" must be an integer in 10..60000");
    refused("{\"cache\": {\"secret\": \"short\"}}", ": field \"cache.secret\" is 5 bytes" SHORT_MSG);
    refused("{\"cache\": {\"secret\": []}}", ": field \"cache.secret\" must be a string");
    refused("{\"cache\": []}", ": field \"cache\" must be an object");
}

Test(config, env_cache_secret)
{
    setenv("MIZAN_CACHE_SECRET", SECRET32, 1);
    mizan_config_t cfg;
    load_ok("{\"cache\": {\"secret\": \"" SECRET_B "\"}}", &cfg);
    cr_assert_eq(cfg.cache_secret_len, 32);
    cr_assert_eq(memcmp(cfg.cache_secret, SECRET32, 32), 0);
    cr_assert(!cfg.cache_secret_generated);
    mizan_config_deinit(&cfg);

    setenv("MIZAN_CACHE_SECRET", "too-short", 1);
    refused("{}", ": MIZAN_CACHE_SECRET is 9 bytes" SHORT_MSG);
}

Test(config, redis_url_from_the_file)
{
    mizan_config_t cfg;
    load_ok("{\"cache\": {\"redis_url\": \"redis://127.0.0.1:6379/0\", \"secret\": \"" SECRET_B "\"}}", &cfg);
    cr_assert_str_eq(cfg.redis_url, "redis://127.0.0.1:6379/0");
    mizan_config_deinit(&cfg);
    /* Empty or null: the embedded cache, no secret needed. */
    load_ok("{\"cache\": {\"redis_url\": \"\"}}", &cfg);
    cr_assert_null(cfg.redis_url);
    cr_assert(cfg.cache_secret_generated);
    mizan_config_deinit(&cfg);
    load_ok("{\"cache\": {\"redis_url\": null}}", &cfg);
    cr_assert_null(cfg.redis_url);
    mizan_config_deinit(&cfg);
}

Test(config, env_redis_url)
{
    setenv("MIZAN_REDIS_URL", "redis://10.0.0.5:6380/2", 1);
    setenv("MIZAN_CACHE_SECRET", SECRET32, 1);
    mizan_config_t cfg;
    load_ok("{\"cache\": {\"redis_url\": \"redis://127.0.0.1:6379/0\"}}", &cfg);
    cr_assert_str_eq(cfg.redis_url, "redis://10.0.0.5:6380/2");
    mizan_config_deinit(&cfg);
}

Test(config, env_redis_url_empty_means_embedded)
{
    setenv("MIZAN_REDIS_URL", "", 1);
    mizan_config_t cfg;
    /* Wins over the file, and no shared secret is needed. */
    load_ok("{\"cache\": {\"redis_url\": \"redis://127.0.0.1:6379/0\"}}", &cfg);
    cr_assert_null(cfg.redis_url);
    cr_assert(cfg.cache_secret_generated);
    mizan_config_deinit(&cfg);
}

Test(config, redis_needs_a_cache_secret)
{
    const char *msg = ": a shared Redis cache needs cache.secret (or MIZAN_CACHE_SECRET), the same on every instance";
    refused("{\"cache\": {\"redis_url\": \"redis://127.0.0.1:6379/0\"}}", msg);
    setenv("MIZAN_REDIS_URL", "redis://127.0.0.1:6379/0", 1);
    refused("{}", msg);
}

Test(config, non_redis_urls_are_refused)
{
    const char *msg = ": cache.redis_url (or MIZAN_REDIS_URL) must start with redis:// or redis-cluster://";
    refused("{\"cache\": {\"redis_url\": \"http://127.0.0.1:6379\", \"secret\": \"" SECRET_B "\"}}", msg);
    refused("{\"cache\": {\"redis_url\": \"127.0.0.1:6379\", \"secret\": \"" SECRET_B "\"}}", msg);
    refused("{\"cache\": {\"redis_url\": 6379}}",
            ": field \"cache.redis_url\" must be a string (redis://host:port/db)");
    setenv("MIZAN_REDIS_URL", "rediss://127.0.0.1:6379/0", 1);
    setenv("MIZAN_CACHE_SECRET", SECRET32, 1);
    refused("{}", msg);
}

/* ---- modules -------------------------------------------------------------------- */

Test(config, module_bare_name_with_relative_module_dir)
{
    mizan_config_t cfg;
    load_ok("{\"module_dir\": \"mods\", \"modules\": [{\"name\": \"blog\", \"config\": {\"db\": \"x.db\"}},"
            " {\"name\": \"shop\"}]}",
            &cfg);
    cr_assert_eq(cfg.nmodules, 2);
    char want[PATH_MAX + 32];
    fmt(want, sizeof(want), "%s/mods/blog.so", realdir);
    cr_assert_str_eq(cfg.modules[0].name, "blog");
    cr_assert_str_eq(cfg.modules[0].path, want);
    json_t *expected = json_pack("{s:s}", "db", "x.db");
    cr_assert(json_equal(cfg.modules[0].config, expected));
    json_decref(expected);
    fmt(want, sizeof(want), "%s/mods/shop.so", realdir);
    cr_assert_str_eq(cfg.modules[1].path, want);
    cr_assert(json_is_object(cfg.modules[1].config));
    cr_assert_eq(json_object_size(cfg.modules[1].config), 0);
    mizan_config_deinit(&cfg);
}

Test(config, module_dir_absolute)
{
    mizan_config_t cfg;
    load_ok("{\"module_dir\": \"/opt/mizan/mods\", \"modules\": [{\"name\": \"blog\"}]}", &cfg);
    cr_assert_str_eq(cfg.modules[0].path, "/opt/mizan/mods/blog.so");
    mizan_config_deinit(&cfg);
}

Test(config, module_path_is_relative_to_the_config_dir)
{
    /* The config is loaded through a relative path from another directory:
     * module paths still resolve against the config file's directory. */
    char sub[PATH_MAX];
    fmt(sub, sizeof(sub), "%s/conf", tmpdir);
    cr_assert_eq(mkdir(sub, 0700), 0);
    char path[PATH_MAX + 16];
    fmt(path, sizeof(path), "%s/mizan.json", sub);
    write_text(path, "{\"module_dir\": \"ignored\", \"modules\": [{\"name\": \"a\", \"path\": \"lib/a.so\"},"
                     " {\"name\": \"b\", \"path\": \"/abs/b.so\"}]}");
    cr_assert_eq(chdir(tmpdir), 0);
    mizan_config_t cfg;
    mizan_err_t err = {{0}};
    cr_assert_eq(mizan_config_load(&cfg, "conf/mizan.json", exedir, &err), 0, "%s", err.msg);
    char want[PATH_MAX + 32];
    cr_assert_str_eq(cfg.file, "conf/mizan.json");
    fmt(want, sizeof(want), "%s/conf", realdir);
    cr_assert_str_eq(cfg.dir, want);
    fmt(want, sizeof(want), "%s/conf/lib/a.so", realdir);
    cr_assert_str_eq(cfg.modules[0].path, want);
    cr_assert_str_eq(cfg.modules[1].path, "/abs/b.so");
    mizan_config_deinit(&cfg);
}

Test(config, module_default_dirs)
{
    /* Without module_dir: <exe dir>/modules/<name>.so when it exists... */
    char mods[PATH_MAX + 16];
    fmt(mods, sizeof(mods), "%s/modules", exedir);
    cr_assert_eq(mkdir(mods, 0700), 0);
    char so[PATH_MAX + 32];
    fmt(so, sizeof(so), "%s/blog.so", mods);
    write_text(so, "not really a shared object");
    mizan_config_t cfg;
    load_ok("{\"modules\": [{\"name\": \"blog\"}, {\"name\": \"other\"}]}", &cfg);
    cr_assert_str_eq(cfg.modules[0].path, so);
    /* ...else the installed module directory. */
#ifdef MIZAN_INSTALL_MODULE_DIR
    cr_assert_str_eq(cfg.modules[1].path, MIZAN_INSTALL_MODULE_DIR "/other.so");
#else
    cr_assert(strstr(cfg.modules[1].path, "/other.so") != NULL);
#endif
    mizan_config_deinit(&cfg);
}

Test(config, module_config_is_a_copy)
{
    mizan_config_t cfg;
    load_ok("{\"modules\": [{\"name\": \"m\", \"path\": \"m.so\", \"config\": {\"list\": [1, {\"k\": \"v\"}]}}]}",
            &cfg);
    json_t *want = json_loads("{\"list\": [1, {\"k\": \"v\"}]}", 0, NULL);
    cr_assert(json_equal(cfg.modules[0].config, want));
    cr_assert_eq(cfg.modules[0].config->refcount, 1);
    json_decref(want);
    mizan_config_deinit(&cfg);
}

Test(config, module_errors)
{
    refused("{\"modules\": {\"name\": \"blog\"}}",
            ": field \"modules\" must be an array of {\"name\", \"path\"?, \"config\"?}");
    refused("{\"modules\": [\"blog\"]}", ": field \"modules[0]\" must be an object");
    const char *name_msg = ": field \"modules[0].name\" must be a module name like \"blog\"";
    refused("{\"modules\": [{}]}", name_msg);
    refused("{\"modules\": [{\"name\": \"\"}]}", name_msg);
    refused("{\"modules\": [{\"name\": \"a/b\"}]}", name_msg);
    refused("{\"modules\": [{\"name\": 3}]}", name_msg);
    refused("{\"modules\": [{\"name\": \"a\", \"path\": 3}]}", ": field \"modules[0].path\" must be a string");
    refused("{\"modules\": [{\"name\": \"a\", \"config\": []}]}", ": field \"modules[0].config\" must be an object");
    refused("{\"modules\": [{\"name\": \"a\"}, {\"name\": \"a\", \"path\": \"x.so\"}]}",
            ": module \"a\" is listed twice");
}
