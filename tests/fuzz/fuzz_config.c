/*
 * fuzz_config.c - fuzz target for mizan_config_load() (config.c): the
 * input is written to a configuration file and loaded.
 *
 * The environment overrides (MIZAN_LISTEN, MIZAN_WORKERS,
 * MIZAN_TOKEN_SECRET, MIZAN_CACHE_SECRET, MIZAN_REDIS_URL) are unset once,
 * so only the file decides. The file lives in a private temporary
 * directory removed at exit. mizan_config_deinit() runs after every load,
 * failed or not, as mizand does, so a leak on any failure path shows up.
 *
 * Properties checked beyond "no memory error":
 *   - a refusal has a reason that names the file (or the variable);
 *   - an accepted configuration is usable: listen host set and port in
 *     0..65535, at least one I/O thread and worker, an api_prefix that
 *     starts and does not end with '/', 1..16 token keys of 32..256 bytes
 *     with the primary among them, a cookie name, a cache secret of at
 *     least 32 bytes, a prefix of at most 63 bytes, a redis_url that is
 *     NULL or redis://..., and every module with a name, a path and a
 *     config object;
 *   - deinit leaves the struct zeroed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "config.h"
#include "fuzz.h"

static char dir[64];
static char path[96];

static void cleanup(void)
{
    if (path[0] != '\0')
        unlink(path);
    if (dir[0] != '\0')
        rmdir(dir);
}

static bool setup(void)
{
    static bool done, ok;
    if (done)
        return ok;
    done = true;
    static const char *const vars[] = {"MIZAN_LISTEN", "MIZAN_WORKERS", "MIZAN_TOKEN_SECRET",
                                       "MIZAN_CACHE_SECRET", "MIZAN_REDIS_URL"};
    for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++)
        unsetenv(vars[i]);
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, sizeof(dir), "%s/mizan-fuzz-config-XXXXXX", tmp != NULL && strlen(tmp) < 32 ? tmp : "/tmp");
    if (mkdtemp(dir) == NULL) {
        dir[0] = '\0';
        fprintf(stderr, "fuzz_config: cannot create a temporary directory\n");
        return false;
    }
    snprintf(path, sizeof(path), "%s/mizan.json", dir);
    atexit(cleanup);
    ok = true;
    return ok;
}

static bool write_file(const uint8_t *data, size_t size)
{
    FILE *f = fopen(path, "wb");
    if (f == NULL)
        return false;
    bool ok = fwrite(data, 1, size, f) == size;
    return fclose(f) == 0 && ok;
}

static void check_accepted(const mizan_config_t *cfg)
{
    FUZZ_CHECK(cfg->file != NULL && strcmp(cfg->file, path) == 0, "the file is recorded as given");
    FUZZ_CHECK(cfg->dir != NULL && cfg->dir[0] == '/', "the directory is absolute");
    FUZZ_CHECK(cfg->listen_host != NULL, "a listen host");
    FUZZ_CHECK(cfg->listen_port >= 0 && cfg->listen_port <= 65535, "a port in range");
    FUZZ_CHECK(cfg->io_threads >= 1 && cfg->workers >= 1 && cfg->queue_size >= 1, "threads and a queue");
    FUZZ_CHECK(cfg->function_timeout_ms >= 1 && cfg->max_json_depth >= 2, "bounded settings in range");
    FUZZ_CHECK(cfg->api_prefix != NULL && cfg->api_prefix[0] == '/' &&
                   cfg->api_prefix[strlen(cfg->api_prefix) - 1] != '/',
               "api_prefix starts and does not end with '/'");
    FUZZ_CHECK(cfg->instance != NULL, "an instance id");
    const mizan_token_keys_t *k = &cfg->tokens;
    FUZZ_CHECK(k->nkeys >= 1 && k->nkeys <= MIZAN_TOKEN_MAX_KEYS, "1..16 token keys");
    FUZZ_CHECK(k->primary < k->nkeys, "the primary key is one of them");
    for (size_t i = 0; i < k->nkeys; i++)
        FUZZ_CHECK(k->keys[i].secret_len >= 32 && k->keys[i].secret_len <= sizeof(k->keys[i].secret),
                   "token secrets of 32..256 bytes");
    FUZZ_CHECK(k->leeway_s >= 0, "leeway not negative");
    FUZZ_CHECK(cfg->token_cookie != NULL && cfg->token_cookie[0] != '\0', "a cookie name");
    FUZZ_CHECK(cfg->cache_secret_len >= 32 && cfg->cache_secret_len <= sizeof(cfg->cache_secret),
               "a cache secret of 32..256 bytes");
    FUZZ_CHECK(cfg->cache_prefix != NULL && strlen(cfg->cache_prefix) <= 63, "a cache prefix of <= 63 bytes");
    FUZZ_CHECK(cfg->redis_url == NULL || strncmp(cfg->redis_url, "redis://", 8) == 0, "redis_url is redis://");
    FUZZ_CHECK(cfg->nmodules == 0 || cfg->modules != NULL, "modules when counted");
    for (size_t i = 0; i < cfg->nmodules; i++) {
        const mizan_module_conf_t *m = &cfg->modules[i];
        FUZZ_CHECK(m->name != NULL && m->name[0] != '\0' && strchr(m->name, '/') == NULL, "a module name");
        FUZZ_CHECK(m->path != NULL && m->path[0] == '/', "an absolute module path");
        FUZZ_CHECK(json_is_object(m->config), "a module config object");
    }
}

static bool all_zero(const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        if (b[i] != 0)
            return false;
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_init();
    if (!setup() || !write_file(data, size))
        return 0;
    mizan_config_t cfg;
    mizan_err_t err = {{0}};
    int rc = mizan_config_load(&cfg, path, "/nonexistent/mizan-fuzz", &err);
    if (rc == 0) {
        check_accepted(&cfg);
    } else {
        FUZZ_CHECK(rc == -1, "load returns 0 or -1");
        FUZZ_CHECK(err.msg[0] != '\0', "a refused configuration has a reason");
        FUZZ_CHECK(strstr(err.msg, path) != NULL || strstr(err.msg, "MIZAN_") != NULL ||
                       strstr(err.msg, "out of memory") != NULL || strstr(err.msg, "random") != NULL,
                   "a refusal names the file");
    }
    mizan_config_deinit(&cfg);
    FUZZ_CHECK(all_zero(&cfg, sizeof(cfg)), "deinit zeroes the configuration");
    return 0;
}
