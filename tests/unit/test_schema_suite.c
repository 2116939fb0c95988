/*
 * test_schema_suite.c - runs the official JSON Schema Test Suite (draft7,
 * top-level files) against the validator, as PROTOCOL.md section 4 demands:
 *
 *   - a group whose schema compiles must give every test's expected
 *     valid/invalid verdict;
 *   - a group whose schema is refused must use a keyword outside the
 *     supported subset (found by walking the schema's keyword positions
 *     only: "properties" names and enum/const/default values are data),
 *     and the refusal must name such a keyword (not some other reason);
 *   - a group using only supported keywords must compile.
 *
 * The suite comes from the Debian package json-schema-test-suite
 * (/usr/share/json-schema-test-suite/tests/draft7); MIZAN_SCHEMA_SUITE_DIR
 * overrides the directory. A missing suite is a failure, never a skip.
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

#define SUITE_DIR "/usr/share/json-schema-test-suite/tests/draft7"

/* Keywords the gateway's subset supports. */
static const char *const supported[] = {
    "type", "properties", "required", "additionalProperties", "items", "enum",
    "const", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
    "multipleOf", "minLength", "maxLength", "pattern", "minItems", "maxItems",
    "uniqueItems", "minProperties", "maxProperties", "default", "title",
    "description", "$schema", "$comment",
};

static bool is_supported(const char *key)
{
    for (size_t i = 0; i < sizeof(supported) / sizeof(supported[0]); i++)
        if (strcmp(key, supported[i]) == 0)
            return true;
    return false;
}

/*
 * True when schema (borrowed) uses a keyword outside the subset, or the
 * array form of items, anywhere in a schema position. Only properties'
 * values, additionalProperties and items are subschemas in the subset;
 * every other supported keyword's value is data.
 */
static bool uses_unsupported(const json_t *schema)
{
    if (!json_is_object(schema))
        return false;
    const char *key;
    json_t *value;
    json_object_foreach((json_t *)schema, key, value) {
        if (!is_supported(key))
            return true;
        if (strcmp(key, "properties") == 0 && json_is_object(value)) {
            const char *name;
            json_t *sub;
            json_object_foreach(value, name, sub) {
                if (uses_unsupported(sub))
                    return true;
            }
        } else if (strcmp(key, "additionalProperties") == 0) {
            if (uses_unsupported(value))
                return true;
        } else if (strcmp(key, "items") == 0) {
            if (json_is_array(value) || uses_unsupported(value))
                return true;
        }
    }
    return false;
}

/* Running totals. */
typedef struct counts {
    int groups_passed;  /* compiled, every verdict right */
    int groups_refused; /* refused, and rightly so */
    int groups_failed;  /* anything else */
    int tests_run;      /* tests validated */
    int tests_failed;   /* wrong verdicts */
} counts_t;

static int name_cmp(const void *a, const void *b)
{
    return strcmp(a, b);
}

/* Runs one group (borrowed) of file. */
static void run_group(const char *file, const json_t *group, counts_t *c)
{
    const char *desc = json_string_value(json_object_get(group, "description"));
    const json_t *schema = json_object_get(group, "schema");
    const json_t *tests = json_object_get(group, "tests");
    if (desc == NULL)
        desc = "?";
    if (schema == NULL || !json_is_array(tests)) {
        printf("FAIL %s / %s: malformed group\n", file, desc);
        c->groups_failed++;
        return;
    }
    bool unsupported = uses_unsupported(schema);
    mizan_err_t err = {.msg = ""};
    mizan_schema_t *s = mizan_schema_compile(schema, &err);
    if (s == NULL) {
        /* Refused, and for the right reason: an unsupported keyword (or the
         * array form of items), not a bad value or an internal failure. */
        bool keyword_reason = strstr(err.msg, ": unsupported keyword") != NULL ||
                              strstr(err.msg, ": unknown keyword") != NULL ||
                              strstr(err.msg, "/items: an array of schemas") != NULL;
        if (unsupported && keyword_reason) {
            c->groups_refused++;
        } else if (unsupported) {
            printf("FAIL %s / %s: refused for another reason: %s\n", file, desc, err.msg);
            c->groups_failed++;
        } else {
            printf("FAIL %s / %s: supported keywords only, but refused: %s\n", file, desc, err.msg);
            c->groups_failed++;
        }
        return;
    }
    bool ok = true;
    if (unsupported) {
        printf("FAIL %s / %s: uses an unsupported keyword, but compiled\n", file, desc);
        ok = false;
    }
    size_t i;
    const json_t *t;
    json_array_foreach(tests, i, t) {
        const char *tdesc = json_string_value(json_object_get(t, "description"));
        const json_t *data = json_object_get(t, "data");
        const json_t *valid = json_object_get(t, "valid");
        json_t *copy = json_deep_copy(data);
        json_t *errors = json_array();
        cr_assert(copy != NULL && errors != NULL && json_is_boolean(valid), "%s / %s: bad test", file, desc);
        int rc = mizan_schema_validate(s, copy, "args", errors);
        c->tests_run++;
        bool right = rc >= 0 && (rc == 0) == json_is_true(valid) && (size_t)rc == json_array_size(errors);
        if (!right) {
            char *dump = json_dumps(errors, JSON_COMPACT);
            printf("FAIL %s / %s / %s: expected %s, rc %d, errors %s\n", file, desc,
                   tdesc != NULL ? tdesc : "?", json_is_true(valid) ? "valid" : "invalid", rc,
                   dump != NULL ? dump : "?");
            free(dump);
            c->tests_failed++;
            ok = false;
        }
        json_decref(errors);
        json_decref(copy);
    }
    mizan_schema_free(s);
    if (ok)
        c->groups_passed++;
    else
        c->groups_failed++;
}

Test(schema_suite, draft7)
{
    const char *dir = getenv("MIZAN_SCHEMA_SUITE_DIR");
    if (dir == NULL || dir[0] == '\0')
        dir = SUITE_DIR;
    DIR *d = opendir(dir);
    cr_assert(d != NULL,
              "JSON Schema Test Suite not found at %s: install the Debian package "
              "json-schema-test-suite (apt-get install json-schema-test-suite)",
              dir);

    /* Top-level *.json files, sorted for a stable report. */
    static char names[256][256];
    size_t nnames = 0;
    struct dirent *ent;
    while ((ent = readdir(d)) != NULL) {
        size_t len = strlen(ent->d_name);
        if (len < 6 || strcmp(ent->d_name + len - 5, ".json") != 0)
            continue;
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s", dir, ent->d_name);
        struct stat st;
        if (stat(path, &st) != 0 || !S_ISREG(st.st_mode))
            continue;
        cr_assert(nnames < sizeof(names) / sizeof(names[0]), "too many suite files");
        cr_assert(len < sizeof(names[0]), "file name too long: %s", ent->d_name);
        memcpy(names[nnames], ent->d_name, len + 1);
        nnames++;
    }
    closedir(d);
    cr_assert(nnames > 0, "no draft7 test files in %s: reinstall json-schema-test-suite", dir);
    qsort(names, nnames, sizeof(names[0]), name_cmp);

    counts_t c = {0, 0, 0, 0, 0};
    for (size_t f = 0; f < nnames; f++) {
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s", dir, names[f]);
        json_error_t jerr;
        json_t *groups = json_load_file(path, 0, &jerr);
        cr_assert(json_is_array(groups), "%s: %s", path, jerr.text);
        size_t g;
        json_t *group;
        json_array_foreach(groups, g, group)
            run_group(names[f], group, &c);
        json_decref(groups);
    }

    printf("draft7 suite: %d groups passed, %d groups refused (unsupported keywords), "
           "%d groups failed, %d tests run, %d tests failed\n",
           c.groups_passed, c.groups_refused, c.groups_failed, c.tests_run, c.tests_failed);
    fflush(stdout);
    cr_log_info("draft7 suite: %d passed, %d refused, %d failed, %d tests run", c.groups_passed,
                c.groups_refused, c.groups_failed, c.tests_run);

    cr_expect_gt(c.groups_passed, 0, "no group compiled: the runner checked nothing");
    cr_expect_gt(c.tests_run, 0, "no test ran");
    cr_expect_eq(c.groups_failed, 0, "%d draft7 groups failed (see the FAIL lines above)", c.groups_failed);
    cr_expect_eq(c.tests_failed, 0, "%d draft7 tests gave the wrong verdict", c.tests_failed);
}
