/*
 * test_schema_vocab.c - unit tests of the validator beyond PROTOCOL.md's
 * keyword subset: reports of anyOf/oneOf, the budget under hostile
 * nesting, param types through $ref/anyOf, unevaluatedProperties, the
 * local schema directory, and one compiled graph shared by threads.
 */
#include <criterion/criterion.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "params.h"
#include "schema.h"
#include "schema_format.h"

static json_t *parse(const char *text)
{
    json_error_t jerr;
    json_t *v = json_loads(text, JSON_DECODE_ANY, &jerr);
    cr_assert_not_null(v, "bad JSON in test: %s: %s", text, jerr.text);
    return v;
}

static mizan_schema_t *compile_ok(const char *text)
{
    json_t *js = parse(text);
    mizan_err_t err = {.msg = ""};
    mizan_schema_t *s = mizan_schema_compile(js, &err);
    json_decref(js);
    cr_assert_not_null(s, "schema %s refused: %s", text, err.msg);
    return s;
}

/* Validates and returns the errors as compact JSON text (static buffer). */
static const char *errors_of(const char *schema, const char *instance, int *count)
{
    static char out[4096];
    mizan_schema_t *s = compile_ok(schema);
    json_t *inst = parse(instance);
    json_t *errors = json_array();
    *count = mizan_schema_validate(s, inst, "args", errors);
    char *dump = json_dumps(errors, JSON_COMPACT);
    snprintf(out, sizeof(out), "%s", dump);
    free(dump);
    json_decref(errors);
    json_decref(inst);
    mizan_schema_free(s);
    return out;
}

Test(schema_vocab, any_of_reports_the_closest_branch)
{
    int n = 0;
    const char *e = errors_of("{\"anyOf\": [{\"type\": \"object\", \"required\": [\"a\", \"b\", \"c\"]},"
                              " {\"type\": \"object\", \"required\": [\"a\"], \"properties\": {\"a\": {\"type\": \"string\"}}}]}",
                              "{\"a\": 1}", &n);
    cr_assert_eq(n, 1, "%s", e);
    cr_assert_str_eq(e, "[{\"loc\":[\"args\",\"a\"],\"msg\":\"expected string, got integer\",\"type\":\"anyOf\"}]");
    e = errors_of("{\"oneOf\": [{\"type\": \"integer\"}, {\"minimum\": 0}]}", "3", &n);
    cr_assert_eq(n, 1, "%s", e);
    cr_assert(strstr(e, "matched 2 (0 and 1)") != NULL && strstr(e, "\"type\":\"oneOf\"") != NULL, "%s", e);
    e = errors_of("{\"oneOf\": [{\"type\": \"integer\"}, {\"type\": \"string\", \"minLength\": 9}]}", "\"ab\"", &n);
    cr_assert_str_eq(e, "[{\"loc\":[\"args\"],\"msg\":\"at least 9 characters\",\"type\":\"oneOf\"}]");
}

Test(schema_vocab, unevaluated_properties)
{
    const char *schema = "{\"$schema\": \"https://json-schema.org/draft/2020-12/schema\","
                         " \"allOf\": [{\"properties\": {\"a\": true}}],"
                         " \"if\": {\"properties\": {\"k\": {\"const\": 1}}, \"required\": [\"k\"]},"
                         " \"then\": {\"properties\": {\"b\": true}},"
                         " \"properties\": {\"k\": true}, \"unevaluatedProperties\": false}";
    int n = 0;
    const char *e = errors_of(schema, "{\"a\": 1, \"k\": 1, \"b\": 2}", &n);
    cr_assert_eq(n, 0, "%s", e);
    e = errors_of(schema, "{\"a\": 1, \"k\": 2, \"b\": 2}", &n);
    cr_assert_str_eq(e, "[{\"loc\":[\"args\",\"b\"],\"msg\":\"unexpected property\",\"type\":\"unevaluatedProperties\"}]");
}

Test(schema_vocab, hostile_nesting_is_cut_off_by_the_budget)
{
    /* 40 levels of anyOf with two branches each that all fail: 2^40
     * evaluations without a budget. */
    char schema[16384];
    size_t p = (size_t)snprintf(schema, sizeof(schema), "{\"$defs\": {");
    for (int i = 0; i < 40; i++)
        p += (size_t)snprintf(schema + p, sizeof(schema) - p,
                              "\"a%d\": {\"anyOf\": [{\"$ref\": \"#/$defs/a%d\"}, {\"$ref\": \"#/$defs/a%d\"}]},", i,
                              i + 1, i + 1);
    snprintf(schema + p, sizeof(schema) - p, "\"a40\": {\"type\": \"string\"}}, \"$ref\": \"#/$defs/a0\"}");
    int n = 0;
    const char *e = errors_of(schema, "5", &n);
    cr_assert_geq(n, 1);
    cr_assert(strstr(e, "\"type\":\"budget\"") != NULL, "%s", e);
}

Test(schema_vocab, property_types_follow_ref_and_any_of)
{
    mizan_schema_t *s = compile_ok("{\"type\": \"object\", \"$defs\": {\"P\": {\"type\": \"integer\", \"minimum\": 1}},"
                                   " \"properties\": {\"x\": {\"anyOf\": [{\"type\": \"integer\"}, {\"type\": \"null\"}]},"
                                   "  \"y\": {\"$ref\": \"#/$defs/P\"}, \"z\": {\"enum\": [\"a\", \"b\"]},"
                                   "  \"w\": {\"type\": [\"string\", \"integer\"]}, \"any\": {}}}");
    const struct {
        const char *name;
        const char *types;
    } want[] = {
        {"x", "[\"integer\",\"null\"]"},
        {"y", "[\"integer\"]"},
        {"z", "[\"string\"]"},
        {"w", "[\"integer\",\"string\"]"},
        {"any", "[\"integer\",\"number\",\"boolean\",\"null\",\"string\",\"object\",\"array\"]"},
    };
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        char *dump = json_dumps(mizan_schema_property_types(s, want[i].name), JSON_COMPACT);
        cr_assert_str_eq(dump, want[i].types, "%s", want[i].name);
        free(dump);
    }
    cr_assert_null(mizan_schema_property_types(s, "nope"));
    mizan_schema_free(s);
}

Test(schema_vocab, local_directory_refs)
{
    char dir[] = "/tmp/mizan-schema-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char path[256];
    snprintf(path, sizeof(path), "%s/common.json", dir);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs("{\"$defs\": {\"Id\": {\"type\": \"integer\", \"minimum\": 1}}}", f);
    fclose(f);
    mizan_schema_opts_t opts = {.dir = dir};
    json_t *js = parse("{\"properties\": {\"id\": {\"$ref\": \"common.json#/$defs/Id\"}}}");
    mizan_err_t err = {.msg = ""};
    mizan_schema_t *s = mizan_schema_compile_opts(js, &opts, &err);
    cr_assert_not_null(s, "%s", err.msg);
    json_t *inst = parse("{\"id\": 0}"), *errors = json_array();
    cr_assert_eq(mizan_schema_validate(s, inst, "args", errors), 1);
    json_decref(inst);
    json_decref(errors);
    mizan_schema_free(s);
    /* Without a directory the same schema is refused, with the reason. */
    s = mizan_schema_compile(js, &err);
    cr_assert_null(s);
    cr_assert(strstr(err.msg, "none is configured") != NULL, "%s", err.msg);
    /* A name that climbs out of the directory is refused. */
    json_t *up = parse("{\"$ref\": \"../etc/passwd\"}");
    s = mizan_schema_compile_opts(up, &opts, &err);
    cr_assert_null(s);
    json_decref(up);
    json_decref(js);
    remove(path);
    rmdir(dir);
}

/* Many threads validate against one compiled graph at once. */
typedef struct arg {
    const mizan_schema_t *s;
    int bad;
} arg_t;

static void *worker(void *p)
{
    arg_t *a = p;
    for (int i = 0; i < 200; i++) {
        json_t *inst = json_pack("{s:i, s:[{s:s}], s:n}", "n", i, "items", "sku", i % 2 ? "AB" : "", "opt");
        json_t *errors = json_array();
        int rc = mizan_schema_validate(a->s, inst, "args", errors);
        if (rc != (i % 2 ? 0 : 1))
            a->bad++;
        json_decref(errors);
        json_decref(inst);
    }
    return NULL;
}

Test(schema_vocab, shared_across_threads)
{
    mizan_schema_t *s = compile_ok("{\"$defs\": {\"Item\": {\"type\": \"object\", \"properties\": {"
                                   "  \"sku\": {\"type\": \"string\", \"pattern\": \"^[A-Z]+$\"}}}},"
                                   " \"type\": \"object\", \"properties\": {\"n\": {\"type\": \"integer\"},"
                                   "  \"items\": {\"type\": \"array\", \"items\": {\"$ref\": \"#/$defs/Item\"}},"
                                   "  \"opt\": {\"anyOf\": [{\"type\": \"string\"}, {\"type\": \"null\"}]}}}");
    pthread_t t[4];
    arg_t a[4];
    for (int i = 0; i < 4; i++) {
        a[i] = (arg_t){s, 0};
        cr_assert_eq(pthread_create(&t[i], NULL, worker, &a[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        cr_assert_eq(a[i].bad, 0);
    }
    mizan_schema_free(s);
}

/* Auto-scoping reads a mutation's argument by the same types the query
 * string is coerced with, also when they come through anyOf or $ref. */
Test(schema_vocab, canonical_params_through_any_of)
{
    mizan_schema_t *s = compile_ok("{\"type\": \"object\", \"additionalProperties\": false,"
                                   " \"$defs\": {\"P\": {\"type\": \"integer\", \"minimum\": 1}},"
                                   " \"properties\": {\"x\": {\"anyOf\": [{\"type\": \"integer\"}, {\"type\": \"null\"}]},"
                                   "  \"y\": {\"$ref\": \"#/$defs/P\"}}}");
    const json_t *tx = mizan_schema_property_types(s, "x");
    const json_t *ty = mizan_schema_property_types(s, "y");
    json_t *q = mizan_params_coerce(tx, "5");
    cr_assert(json_is_integer(q) && json_integer_value(q) == 5);
    json_decref(q);
    q = mizan_params_coerce(tx, "");
    cr_assert(json_is_null(q));
    json_decref(q);
    json_t *arg = json_real(5.0);
    json_t *c = mizan_params_canonical(tx, arg);
    cr_assert(json_is_integer(c) && json_integer_value(c) == 5, "12.0-style reals name the integer");
    json_decref(c);
    json_decref(arg);
    arg = json_string("7");
    c = mizan_params_canonical(ty, arg);
    cr_assert(json_is_integer(c) && json_integer_value(c) == 7);
    json_decref(c);
    json_decref(arg);
    mizan_schema_free(s);
}

/* A pattern too costly inside a branch being tried never turns into a
 * verdict: the value is refused. */
Test(schema_vocab, costly_pattern_in_a_branch_refuses)
{
    char schema[] = "{\"not\": {\"pattern\": \"(a+)+$\"}}";
    char inst[64];
    inst[0] = '"';
    memset(inst + 1, 'a', 40);
    memcpy(inst + 41, "b\"", 3);
    int n = 0;
    const char *e = errors_of(schema, inst, &n);
    cr_assert_eq(n, 1, "%s", e);
    cr_assert(strstr(e, "too costly") != NULL, "%s", e);
    e = errors_of("{\"anyOf\": [{\"pattern\": \"(a+)+$\"}, {\"type\": \"string\"}]}", inst, &n);
    cr_assert_eq(n, 1, "%s", e);
    cr_assert(strstr(e, "too costly") != NULL, "%s", e);
}

/* format "regex" is ECMA-262: the anchors and escapes only PCRE2 knows are refused. */
Test(schema_format, regex_refuses_what_ecma_262_lacks)
{
    static const char *bad[] = {"^a\\Z", "\\Aabc", "abc\\z", "\\Gx", "\\a", "(?P<n>x)", "(?#note)x"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        cr_assert(!mizan_schema_format_check("regex", bad[i], strlen(bad[i])), "%s was accepted", bad[i]);
    static const char *good[] = {"^a$", "\\bword\\b", "[\\s\\S]*", "\\d{2,3}", "(?<n>x)\\k<n>", "\\u00e9"};
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        cr_assert(mizan_schema_format_check("regex", good[i], strlen(good[i])), "%s was refused", good[i]);
}
