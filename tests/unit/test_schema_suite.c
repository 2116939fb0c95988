/*
 * test_schema_suite.c - runs the official JSON Schema Test Suite against
 * the validator, for each dialect the gateway supports: tests/draft7 and
 * tests/draft2020-12, their optional/ groups included, and
 * optional/format/ with format assertion on.
 *
 * Every group's schema must compile and give every test's expected
 * valid/invalid verdict, with as many error entries as the validator says
 * it found. A group may only be refused for a reason the gateway gives on
 * purpose: a reference over the network (the suite points at the real
 * metaschemas) or a dialect it does not implement (the cross-draft groups);
 * any other refusal is a failure. The remote-reference groups run with the
 * suite's remotes/ directory mapped to http://localhost:1234/ as the local
 * schema directory.
 *
 * Formats: the groups of optional/format/ for date-time, date, time,
 * email, ipv4, ipv6, uri, uuid and regex must pass; the other formats are
 * run and reported, but do not fail the test.
 *
 * Where the suite is: MIZAN_SCHEMA_SUITE_DIR (the suite's root), else
 * ../shared/json-schema-test-suite beside the source tree
 * (MIZAN_TEST_SOURCE_DIR), else Debian's json-schema-test-suite package
 * for draft7 only. None of them is a failure, never a skip.
 */
#include <criterion/criterion.h>
#include <criterion/logging.h>

#include <dirent.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "schema.h"

#define DEBIAN_SUITE "/usr/share/json-schema-test-suite"

/* Formats whose optional/format groups must pass. */
static const char *const required_formats[] = {
    "date-time", "date", "time", "email", "ipv4", "ipv6", "uri", "uuid", "regex",
};

/* Running totals of one dialect. */
typedef struct counts {
    int passed;         /* compiled, every verdict right */
    int failed;         /* a wrong verdict or an unexpected refusal */
    int refused;        /* refused on purpose (network ref, other dialect) */
    int extra_passed;   /* groups of formats that are not required */
    int extra_failed;
    int tests_run;
} counts_t;

/* Where the suite's root directory is, and whether only draft7 exists. */
static const char *suite_root(bool *debian)
{
    static char buf[4096];
    *debian = false;
    const char *env = getenv("MIZAN_SCHEMA_SUITE_DIR");
    if (env != NULL && env[0] != '\0')
        return env;
    const char *src = getenv("MIZAN_TEST_SOURCE_DIR");
    struct stat st;
    if (src != NULL) {
        snprintf(buf, sizeof(buf), "%s/../shared/json-schema-test-suite", src);
        char probe[4200];
        snprintf(probe, sizeof(probe), "%s/tests/draft2020-12", buf);
        if (stat(probe, &st) == 0 && S_ISDIR(st.st_mode))
            return buf;
    }
    if (stat(DEBIAN_SUITE "/tests/draft7", &st) == 0 && S_ISDIR(st.st_mode)) {
        *debian = true;
        return DEBIAN_SUITE;
    }
    return NULL;
}

static int name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Appends every *.json file under dir/rel (recursively) to *names. */
static void list_files(const char *dir, const char *rel, char ***names, size_t *n)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", dir, rel);
    DIR *d = opendir(path);
    cr_assert(d != NULL, "cannot open %s", path);
    struct dirent *ent;
    while ((ent = readdir(d)) != NULL) {
        if (ent->d_name[0] == '.')
            continue;
        char sub[4096];
        snprintf(sub, sizeof(sub), "%s%s%s", rel, rel[0] != '\0' ? "/" : "", ent->d_name);
        char full[8300];
        snprintf(full, sizeof(full), "%s/%s", dir, sub);
        struct stat st;
        if (stat(full, &st) != 0)
            continue;
        if (S_ISDIR(st.st_mode)) {
            list_files(dir, sub, names, n);
        } else if (strlen(sub) > 5 && strcmp(sub + strlen(sub) - 5, ".json") == 0) {
            *names = realloc(*names, (*n + 1) * sizeof(**names));
            cr_assert(*names != NULL);
            (*names)[(*n)++] = strdup(sub);
        }
    }
    closedir(d);
}

/* Runs one group (borrowed) of file; extra: its result does not count. */
static void run_group(const char *file, const json_t *group, const mizan_schema_opts_t *opts, bool extra,
                      counts_t *c)
{
    const char *desc = json_string_value(json_object_get(group, "description"));
    const json_t *schema = json_object_get(group, "schema");
    const json_t *tests = json_object_get(group, "tests");
    if (desc == NULL)
        desc = "?";
    cr_assert(schema != NULL && json_is_array(tests), "%s / %s: malformed group", file, desc);
    mizan_err_t err = {.msg = ""};
    mizan_schema_t *s = mizan_schema_compile_opts(schema, opts, &err);
    if (s == NULL) {
        bool on_purpose = strstr(err.msg, "remote reference") != NULL || strstr(err.msg, "unsupported dialect") != NULL;
        if (on_purpose && !extra) {
            printf("refused %s / %s: %s\n", file, desc, err.msg);
            c->refused++;
        } else {
            printf("FAIL%s %s / %s: refused: %s\n", extra ? " (not required)" : "", file, desc, err.msg);
            if (extra)
                c->extra_failed++;
            else
                c->failed++;
        }
        return;
    }
    bool ok = true;
    size_t i;
    const json_t *t;
    json_array_foreach(tests, i, t) {
        const char *tdesc = json_string_value(json_object_get(t, "description"));
        const json_t *valid = json_object_get(t, "valid");
        json_t *copy = json_deep_copy(json_object_get(t, "data"));
        json_t *errors = json_array();
        cr_assert(copy != NULL && errors != NULL && json_is_boolean(valid), "%s / %s: bad test", file, desc);
        int rc = mizan_schema_validate(s, copy, "args", errors);
        c->tests_run++;
        bool right = rc >= 0 && (rc == 0) == json_is_true(valid) && (size_t)rc == json_array_size(errors);
        if (!right) {
            char *dump = json_dumps(errors, JSON_COMPACT);
            printf("FAIL%s %s / %s / %s: expected %s, rc %d, errors %.300s\n", extra ? " (not required)" : "",
                   file, desc, tdesc != NULL ? tdesc : "?", json_is_true(valid) ? "valid" : "invalid", rc,
                   dump != NULL ? dump : "?");
            free(dump);
            ok = false;
        }
        json_decref(errors);
        json_decref(copy);
    }
    mizan_schema_free(s);
    if (extra)
        ok ? c->extra_passed++ : c->extra_failed++;
    else
        ok ? c->passed++ : c->failed++;
}

/* Runs tests/<dialect> of the suite at root; returns the counts. */
static counts_t run_dialect(const char *root, const char *dialect, int default_dialect)
{
    char dir[4096], remotes[4096];
    snprintf(dir, sizeof(dir), "%s/tests/%s", root, dialect);
    snprintf(remotes, sizeof(remotes), "%s/remotes", root);
    char **names = NULL;
    size_t n = 0;
    list_files(dir, "", &names, &n);
    cr_assert(n > 0, "no test files in %s", dir);
    qsort(names, n, sizeof(*names), name_cmp);

    counts_t c = {0};
    for (size_t f = 0; f < n; f++) {
        bool format_file = strncmp(names[f], "optional/format/", 16) == 0;
        bool extra = false;
        if (format_file) {
            extra = true;
            for (size_t k = 0; k < sizeof(required_formats) / sizeof(required_formats[0]); k++) {
                size_t len = strlen(required_formats[k]);
                if (strncmp(names[f] + 16, required_formats[k], len) == 0 && strcmp(names[f] + 16 + len, ".json") == 0)
                    extra = false;
            }
        }
        mizan_schema_opts_t opts = {
            .dir = remotes,
            .base_uri = "http://localhost:1234/",
            /* Older suites (Debian's) keep a "format": "regex" group in
             * optional/ecmascript-regex.json; newer ones moved it to
             * optional/format/ and have no "format" left in that file. */
            .format_assertion = format_file || strcmp(names[f], "optional/ecmascript-regex.json") == 0,
            .ignore_unknown = true,
            .dialect = default_dialect,
        };
        char path[8300];
        snprintf(path, sizeof(path), "%s/%s", dir, names[f]);
        json_error_t jerr;
        json_t *groups = json_load_file(path, JSON_ALLOW_NUL, &jerr);
        if (groups == NULL && strstr(jerr.text, "too big integer") != NULL) {
            /* optional/bignum: jansson holds integers in 64 bits, so the
             * file is read with every integer as a double (as the gateway's
             * request parser would have to). */
            groups = json_load_file(path, JSON_ALLOW_NUL | JSON_DECODE_INT_AS_REAL, &jerr);
        }
        cr_assert(json_is_array(groups), "%s: %s", path, jerr.text);
        size_t g;
        json_t *group;
        json_array_foreach(groups, g, group)
            run_group(names[f], group, &opts, extra, &c);
        json_decref(groups);
        free(names[f]);
    }
    free(names);
    printf("%s: %d groups passed, %d failed, %d refused (network refs, other dialects); %d tests run; "
           "formats not required: %d groups passed, %d failed\n",
           dialect, c.passed, c.failed, c.refused, c.tests_run, c.extra_passed, c.extra_failed);
    fflush(stdout);
    cr_log_info("%s: %d passed, %d failed, %d refused", dialect, c.passed, c.failed, c.refused);
    return c;
}

Test(schema_suite, draft7)
{
    bool debian = false;
    const char *root = suite_root(&debian);
    cr_assert(root != NULL,
              "JSON Schema Test Suite not found: expected ../shared/json-schema-test-suite beside the source tree "
              "(or MIZAN_SCHEMA_SUITE_DIR), or the Debian package json-schema-test-suite for draft7");
    counts_t c = run_dialect(root, "draft7", MIZAN_SCHEMA_DRAFT7);
    cr_expect_gt(c.passed, 0, "no group passed: the runner checked nothing");
    cr_expect_eq(c.failed, 0, "%d draft7 groups failed (see the FAIL lines above)", c.failed);
}

Test(schema_suite, draft2020_12)
{
    bool debian = false;
    const char *root = suite_root(&debian);
    cr_assert(root != NULL && !debian,
              "the 2020-12 tests need the shared JSON Schema Test Suite (../shared/json-schema-test-suite beside "
              "the source tree, or MIZAN_SCHEMA_SUITE_DIR); Debian's package stops at draft7");
    counts_t c = run_dialect(root, "draft2020-12", MIZAN_SCHEMA_DRAFT2020_12);
    cr_expect_gt(c.passed, 0, "no group passed: the runner checked nothing");
    cr_expect_eq(c.failed, 0, "%d 2020-12 groups failed (see the FAIL lines above)", c.failed);
}
