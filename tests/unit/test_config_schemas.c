/*
 * test_config_schemas.c - the config's "schemas" section (src/config.c,
 * docs/configuration.md): the local schema directory for $ref (relative
 * to the config file), its base URI, and format assertion; bad values
 * are refused with the field's name.
 */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "config.h"

static char dir[64];

static void setup(void)
{
    snprintf(dir, sizeof(dir), "/tmp/mizan-cfg-schemas-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    char sub[128];
    snprintf(sub, sizeof(sub), "%s/schemas", dir);
    cr_assert_eq(mkdir(sub, 0700), 0);
    unsetenv("MIZAN_LISTEN");
}

static void teardown(void)
{
    char path[128];
    snprintf(path, sizeof(path), "%s/mizan.json", dir);
    unlink(path);
    snprintf(path, sizeof(path), "%s/schemas", dir);
    rmdir(path);
    rmdir(dir);
}

TestSuite(config_schemas, .init = setup, .fini = teardown);

/* Loads a config whose "schemas" member is the given JSON text. */
static int load(const char *schemas, mizan_config_t *cfg, mizan_err_t *err)
{
    char path[128];
    snprintf(path, sizeof(path), "%s/mizan.json", dir);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fprintf(f, "{\"schemas\": %s}", schemas);
    fclose(f);
    memset(cfg, 0, sizeof(*cfg));
    return mizan_config_load(cfg, path, dir, err);
}

Test(config_schemas, defaults)
{
    mizan_config_t cfg;
    mizan_err_t err = {.msg = ""};
    cr_assert_eq(load("{}", &cfg, &err), 0, "%s", err.msg);
    cr_assert_null(cfg.schema_dir);
    cr_assert_null(cfg.schema_base_uri);
    cr_assert(!cfg.format_assertion);
    mizan_config_deinit(&cfg);
}

Test(config_schemas, relative_dir_and_options)
{
    mizan_config_t cfg;
    mizan_err_t err = {.msg = ""};
    cr_assert_eq(load("{\"dir\": \"schemas\", \"base_uri\": \"https://schemas.example.com/\", \"format_assertion\": true}",
                      &cfg, &err),
                 0, "%s", err.msg);
    char want[128];
    snprintf(want, sizeof(want), "%s/schemas", dir);
    cr_assert_str_eq(cfg.schema_dir, want);
    cr_assert_str_eq(cfg.schema_base_uri, "https://schemas.example.com/");
    cr_assert(cfg.format_assertion);
    mizan_config_deinit(&cfg);
}

Test(config_schemas, bad_values_refused)
{
    const char *cases[][2] = {
        {"[]", "\"schemas\" must be an object"},
        {"{\"format_assertion\": 1}", "schemas.format_assertion"},
        {"{\"base_uri\": \"relative/\"}", "schemas.base_uri"},
        {"{\"base_uri\": \"https://x.example\"}", "schemas.base_uri"},
        {"{\"dir\": \"missing\"}", "is not a directory"},
        {"{\"dir\": 5}", "schemas.dir"},
        {"{\"dirs\": \"schemas\"}", "unknown field \"schemas.dirs\""},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        mizan_config_t cfg;
        mizan_err_t err = {.msg = ""};
        int rc = load(cases[i][0], &cfg, &err);
        mizan_config_deinit(&cfg);
        cr_assert_eq(rc, -1, "%s must be refused", cases[i][0]);
        cr_assert(strstr(err.msg, cases[i][1]) != NULL, "%s: got \"%s\", want \"%s\"", cases[i][0], err.msg,
                  cases[i][1]);
    }
}
