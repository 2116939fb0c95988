/*
 * test_schema.c - unit tests of the input validator (src/schema.c): each
 * keyword valid and invalid with the exact error entries, every violation
 * reported, locations with keys and indices, defaults, compile-time refusal
 * of unknown keywords and bad keyword values, bounded regex matching,
 * JSON Schema equality, and concurrent validation on one compiled schema.
 */
#include <criterion/criterion.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "schema.h"

/* Parses JSON text (new reference); fails the test on a syntax error. */
static json_t *parse(const char *text)
{
    json_error_t jerr;
    json_t *v = json_loads(text, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
    cr_assert(v != NULL, "bad JSON in test: %s: %s", text, jerr.text);
    return v;
}

/* Compiles schema text; the caller's reference is dropped at once, so the
 * compiled form must keep its own. Returns a new compiled schema. */
static mizan_schema_t *compile_ok(const char *text)
{
    json_t *js = parse(text);
    mizan_err_t err = {.msg = ""};
    mizan_schema_t *s = mizan_schema_compile(js, &err);
    json_decref(js);
    cr_assert(s != NULL, "schema %s refused: %s", text, err.msg);
    return s;
}

/* Asserts that schema text is refused with exactly the message want. */
static void compile_fails(const char *text, const char *want)
{
    json_t *js = parse(text);
    mizan_err_t err = {.msg = ""};
    mizan_schema_t *s = mizan_schema_compile(js, &err);
    json_decref(js);
    if (s != NULL) {
        mizan_schema_free(s);
        cr_assert_fail("schema %s compiled, expected refusal \"%s\"", text, want);
    }
    cr_assert_str_eq(err.msg, want, "schema %s", text);
}

/* Like compile_fails(), when the message only has to contain want. */
static void compile_fails_with(const char *text, const char *want)
{
    json_t *js = parse(text);
    mizan_err_t err = {.msg = ""};
    mizan_schema_t *s = mizan_schema_compile(js, &err);
    json_decref(js);
    if (s != NULL) {
        mizan_schema_free(s);
        cr_assert_fail("schema %s compiled, expected refusal \"%s\"", text, want);
    }
    cr_assert(strstr(err.msg, want) != NULL, "schema %s: got \"%s\", want \"%s\"", text, err.msg, want);
}

/*
 * Validates instance text against schema text with loc root "args" and
 * checks the full error list against want (JSON text of the expected
 * array). When want_after is not NULL, also checks the instance after
 * validation (defaults filled in).
 */
static void check_full(const char *schema, const char *instance, const char *loc_root, const char *want,
                       const char *want_after)
{
    mizan_schema_t *s = compile_ok(schema);
    json_t *inst = parse(instance);
    json_t *errors = json_array();
    json_t *expected = parse(want);
    int rc = mizan_schema_validate(s, inst, loc_root, errors);
    char *got = json_dumps(errors, JSON_COMPACT);
    cr_assert_eq(rc, (int)json_array_size(expected), "schema %s, instance %s: rc %d, errors %s", schema,
                 instance, rc, got);
    cr_assert(json_equal(errors, expected), "schema %s, instance %s:\n got  %s\n want %s", schema, instance,
              got, want);
    free(got);
    if (want_after != NULL) {
        json_t *after = parse(want_after);
        char *dump = json_dumps(inst, JSON_COMPACT);
        cr_assert(json_equal(inst, after), "after validation got %s, want %s", dump, want_after);
        free(dump);
        json_decref(after);
    }
    json_decref(expected);
    json_decref(errors);
    json_decref(inst);
    mizan_schema_free(s);
}

static void check(const char *schema, const char *instance, const char *want)
{
    check_full(schema, instance, "args", want, NULL);
}

static void valid(const char *schema, const char *instance)
{
    check(schema, instance, "[]");
}

/* Returns 1 when instance text is invalid against schema text, else 0. */
static int invalid(const char *schema, const char *instance)
{
    mizan_schema_t *s = compile_ok(schema);
    json_t *inst = parse(instance);
    json_t *errors = json_array();
    int rc = mizan_schema_validate(s, inst, "args", errors);
    cr_assert_geq(rc, 0);
    cr_assert_eq((size_t)rc, json_array_size(errors));
    json_decref(errors);
    json_decref(inst);
    mizan_schema_free(s);
    return rc > 0;
}

/* ------------------------------------------------------------------ type */

Test(schema, type_each_name)
{
    valid("{\"type\": \"string\"}", "\"x\"");
    valid("{\"type\": \"integer\"}", "3");
    valid("{\"type\": \"number\"}", "3");
    valid("{\"type\": \"number\"}", "3.5");
    valid("{\"type\": \"boolean\"}", "false");
    valid("{\"type\": \"null\"}", "null");
    valid("{\"type\": \"object\"}", "{}");
    valid("{\"type\": \"array\"}", "[]");
    check("{\"type\": \"string\"}", "5",
          "[{\"loc\": [\"args\"], \"msg\": \"expected string, got integer\", \"type\": \"type\"}]");
    check("{\"type\": \"integer\"}", "1.5",
          "[{\"loc\": [\"args\"], \"msg\": \"expected integer, got number\", \"type\": \"type\"}]");
    check("{\"type\": \"boolean\"}", "\"true\"",
          "[{\"loc\": [\"args\"], \"msg\": \"expected boolean, got string\", \"type\": \"type\"}]");
    check("{\"type\": \"null\"}", "false",
          "[{\"loc\": [\"args\"], \"msg\": \"expected null, got boolean\", \"type\": \"type\"}]");
    check("{\"type\": \"object\"}", "[]",
          "[{\"loc\": [\"args\"], \"msg\": \"expected object, got array\", \"type\": \"type\"}]");
    check("{\"type\": \"array\"}", "{}",
          "[{\"loc\": [\"args\"], \"msg\": \"expected array, got object\", \"type\": \"type\"}]");
    check("{\"type\": \"number\"}", "null",
          "[{\"loc\": [\"args\"], \"msg\": \"expected number, got null\", \"type\": \"type\"}]");
}

Test(schema, type_array_names_listed_as_written)
{
    valid("{\"type\": [\"string\", \"null\"]}", "null");
    valid("{\"type\": [\"string\", \"null\"]}", "\"a\"");
    check("{\"type\": [\"string\", \"null\"]}", "1",
          "[{\"loc\": [\"args\"], \"msg\": \"expected string or null, got integer\", \"type\": \"type\"}]");
    check("{\"type\": [\"integer\", \"string\", \"null\"]}", "true",
          "[{\"loc\": [\"args\"], \"msg\": \"expected integer, string or null, got boolean\", \"type\": "
          "\"type\"}]");
}

Test(schema, integer_includes_zero_fraction_reals)
{
    valid("{\"type\": \"integer\"}", "1.0");
    valid("{\"type\": \"integer\"}", "-0.0");
    valid("{\"type\": \"integer\"}", "1e3");
    cr_assert(invalid("{\"type\": \"integer\"}", "1.0000001"));
    valid("{\"type\": [\"integer\"]}", "2.0");
}

Test(schema, type_failure_hides_the_other_keywords)
{
    /* A wrong type is one mistake: minLength is not reported on top. */
    check("{\"type\": \"string\", \"minLength\": 3, \"enum\": [\"abc\"]}", "5",
          "[{\"loc\": [\"args\"], \"msg\": \"expected string, got integer\", \"type\": \"type\"}]");
}

/* ------------------------------------------------ objects and locations */

static const char *const post_schema =
    "{\"type\": \"object\", \"properties\": {"
    "  \"post_id\": {\"type\": \"integer\", \"minimum\": 1},"
    "  \"title\": {\"type\": \"string\", \"maxLength\": 200},"
    "  \"tags\": {\"type\": \"array\", \"items\": {\"type\": \"string\", \"maxLength\": 3}},"
    "  \"meta\": {\"type\": \"object\", \"properties\": {\"lang\": {\"enum\": [\"en\", \"fr\"]}},"
    "            \"required\": [\"lang\"]}},"
    " \"required\": [\"post_id\", \"title\"], \"additionalProperties\": false}";

Test(schema, every_violation_reported_in_order)
{
    check(post_schema, "{\"title\": 5, \"extra\": 1, \"other\": true}",
          "[{\"loc\": [\"args\", \"post_id\"], \"msg\": \"field required\", \"type\": \"missing\"},"
          " {\"loc\": [\"args\", \"title\"], \"msg\": \"expected string, got integer\", \"type\": \"type\"},"
          " {\"loc\": [\"args\", \"extra\"], \"msg\": \"unexpected property\", \"type\": "
          "\"additionalProperties\"},"
          " {\"loc\": [\"args\", \"other\"], \"msg\": \"unexpected property\", \"type\": "
          "\"additionalProperties\"}]");
}

Test(schema, nested_locations_with_indices)
{
    check(post_schema,
          "{\"post_id\": 0, \"title\": \"t\", \"tags\": [\"ab\", 5, \"abcd\"], \"meta\": {\"lang\": \"de\"}}",
          "[{\"loc\": [\"args\", \"post_id\"], \"msg\": \"must be >= 1\", \"type\": \"minimum\"},"
          " {\"loc\": [\"args\", \"tags\", 1], \"msg\": \"expected string, got integer\", \"type\": \"type\"},"
          " {\"loc\": [\"args\", \"tags\", 2], \"msg\": \"at most 3 characters\", \"type\": \"maxLength\"},"
          " {\"loc\": [\"args\", \"meta\", \"lang\"], \"msg\": \"must be one of [\\\"en\\\", \\\"fr\\\"]\","
          "  \"type\": \"enum\"}]");
    check(post_schema, "{\"post_id\": 1, \"title\": \"t\", \"meta\": {}}",
          "[{\"loc\": [\"args\", \"meta\", \"lang\"], \"msg\": \"field required\", \"type\": \"missing\"}]");
    valid(post_schema, "{\"post_id\": 1, \"title\": \"t\", \"tags\": [], \"meta\": {\"lang\": \"en\"}}");
}

Test(schema, loc_root_params_and_none)
{
    check_full("{\"required\": [\"a\"]}", "{}", "params",
               "[{\"loc\": [\"params\", \"a\"], \"msg\": \"field required\", \"type\": \"missing\"}]", NULL);
    check_full("{\"items\": {\"type\": \"string\"}}", "[\"a\", 1]", NULL,
               "[{\"loc\": [1], \"msg\": \"expected string, got integer\", \"type\": \"type\"}]", NULL);
}

Test(schema, errors_are_appended)
{
    mizan_schema_t *s = compile_ok("{\"type\": \"string\"}");
    json_t *errors = parse("[\"earlier\"]");
    json_t *inst = json_integer(1);
    cr_assert_eq(mizan_schema_validate(s, inst, "args", errors), 1);
    cr_assert_eq(json_array_size(errors), 2);
    cr_assert_str_eq(json_string_value(json_array_get(errors, 0)), "earlier");
    json_decref(inst);
    json_decref(errors);
    mizan_schema_free(s);
}

Test(schema, properties_and_required)
{
    valid("{\"properties\": {\"a\": {\"type\": \"integer\"}}}", "{}");
    valid("{\"properties\": {\"a\": {\"type\": \"integer\"}}}", "[1]");
    valid("{\"required\": [\"a\"]}", "\"not an object\"");
    check("{\"required\": [\"a\", \"b\"]}", "{\"b\": null}",
          "[{\"loc\": [\"args\", \"a\"], \"msg\": \"field required\", \"type\": \"missing\"}]");
    /* A property named like a keyword is just a name. */
    valid("{\"properties\": {\"$ref\": {\"type\": \"string\"}, \"type\": {\"type\": \"integer\"}}}",
          "{\"$ref\": \"x\", \"type\": 1}");
    check("{\"properties\": {\"$ref\": {\"type\": \"string\"}}}", "{\"$ref\": 2}",
          "[{\"loc\": [\"args\", \"$ref\"], \"msg\": \"expected string, got integer\", \"type\": \"type\"}]");
}

Test(schema, additional_properties_schema)
{
    const char *schema = "{\"properties\": {\"a\": {}}, \"additionalProperties\": {\"type\": \"boolean\"}}";
    valid(schema, "{\"a\": 1, \"b\": true}");
    check(schema, "{\"a\": 1, \"b\": 2, \"c\": false}",
          "[{\"loc\": [\"args\", \"b\"], \"msg\": \"expected boolean, got integer\", \"type\": \"type\"}]");
    valid("{\"additionalProperties\": true}", "{\"x\": 1}");
    valid("{\"additionalProperties\": false}", "{}");
}

Test(schema, min_max_properties)
{
    check("{\"minProperties\": 2}", "{\"a\": 1}",
          "[{\"loc\": [\"args\"], \"msg\": \"at least 2 properties\", \"type\": \"minProperties\"}]");
    check("{\"minProperties\": 1}", "{}",
          "[{\"loc\": [\"args\"], \"msg\": \"at least 1 property\", \"type\": \"minProperties\"}]");
    check("{\"maxProperties\": 1}", "{\"a\": 1, \"b\": 2}",
          "[{\"loc\": [\"args\"], \"msg\": \"at most 1 property\", \"type\": \"maxProperties\"}]");
    valid("{\"minProperties\": 1, \"maxProperties\": 2}", "{\"a\": 1, \"b\": 2}");
    valid("{\"maxProperties\": 0}", "[1, 2]");
}

/* ----------------------------------------------------------- boolean schemas */

Test(schema, boolean_schemas)
{
    valid("true", "{\"anything\": [1]}");
    check("false", "1", "[{\"loc\": [\"args\"], \"msg\": \"value not allowed\", \"type\": \"false\"}]");
    check("{\"properties\": {\"a\": false, \"b\": true}}", "{\"a\": 1, \"b\": 2}",
          "[{\"loc\": [\"args\", \"a\"], \"msg\": \"value not allowed\", \"type\": \"false\"}]");
    check("{\"items\": false}", "[1, 2]",
          "[{\"loc\": [\"args\", 0], \"msg\": \"value not allowed\", \"type\": \"false\"},"
          " {\"loc\": [\"args\", 1], \"msg\": \"value not allowed\", \"type\": \"false\"}]");
    valid("{\"items\": false}", "[]");
}

/* -------------------------------------------------------------- numbers */

Test(schema, bounds)
{
    valid("{\"minimum\": 1, \"maximum\": 10}", "1");
    valid("{\"minimum\": 1, \"maximum\": 10}", "10.0");
    check("{\"minimum\": 1}", "0.5",
          "[{\"loc\": [\"args\"], \"msg\": \"must be >= 1\", \"type\": \"minimum\"}]");
    check("{\"maximum\": 1.1}", "2",
          "[{\"loc\": [\"args\"], \"msg\": \"must be <= 1.1\", \"type\": \"maximum\"}]");
    check("{\"exclusiveMinimum\": 0}", "0",
          "[{\"loc\": [\"args\"], \"msg\": \"must be > 0\", \"type\": \"exclusiveMinimum\"}]");
    check("{\"exclusiveMaximum\": 1.5}", "1.5",
          "[{\"loc\": [\"args\"], \"msg\": \"must be < 1.5\", \"type\": \"exclusiveMaximum\"}]");
    valid("{\"exclusiveMinimum\": 0, \"exclusiveMaximum\": 1.5}", "1.4999");
    valid("{\"minimum\": 5}", "\"not a number\"");
    /* Both bounds violated at once: both reported. */
    check("{\"minimum\": 5, \"exclusiveMinimum\": 6}", "4",
          "[{\"loc\": [\"args\"], \"msg\": \"must be >= 5\", \"type\": \"minimum\"},"
          " {\"loc\": [\"args\"], \"msg\": \"must be > 6\", \"type\": \"exclusiveMinimum\"}]");
}

Test(schema, bounds_compare_exactly_beyond_double_precision)
{
    /* 2^53 + 1 is not representable as a double, yet it is > 2^53. */
    cr_assert(invalid("{\"maximum\": 9007199254740992.0}", "9007199254740993"));
    valid("{\"maximum\": 9007199254740992.0}", "9007199254740992");
    valid("{\"minimum\": -9223372036854775808}", "-9223372036854775808");
    cr_assert(invalid("{\"maximum\": 9223372036854775807}", "1e19"));
    valid("{\"minimum\": -1e300}", "-9223372036854775808");
}

Test(schema, multiple_of)
{
    valid("{\"multipleOf\": 2}", "10");
    check("{\"multipleOf\": 2}", "7",
          "[{\"loc\": [\"args\"], \"msg\": \"must be a multiple of 2\", \"type\": \"multipleOf\"}]");
    valid("{\"multipleOf\": 1.5}", "4.5");
    valid("{\"multipleOf\": 1.5}", "0");
    cr_assert(invalid("{\"multipleOf\": 1.5}", "35"));
    valid("{\"multipleOf\": 0.0001}", "0.0075");
    check("{\"multipleOf\": 0.0001}", "0.00751",
          "[{\"loc\": [\"args\"], \"msg\": \"must be a multiple of 0.0001\", \"type\": \"multipleOf\"}]");
    valid("{\"multipleOf\": 0.1}", "0.3");
    valid("{\"multipleOf\": 0.01}", "-19.99");
    valid("{\"multipleOf\": 0.5}", "4");
    valid("{\"multipleOf\": 100}", "1e5");
    cr_assert(invalid("{\"multipleOf\": 3}", "1e308"));
    /* Integers stay exact: 2^53 + 1 is odd and a multiple of 3. */
    cr_assert(invalid("{\"multipleOf\": 2}", "9007199254740993"));
    valid("{\"multipleOf\": 3}", "9007199254740993");
    valid("{\"multipleOf\": 2}", "-9223372036854775808");
    valid("{\"multipleOf\": 2.0}", "6");
    valid("{\"multipleOf\": 7}", "\"x\"");
}

/* -------------------------------------------------------------- strings */

Test(schema, lengths_count_code_points)
{
    /* "héllo": 5 code points in 6 bytes. */
    valid("{\"maxLength\": 5}", "\"h\\u00e9llo\"");
    check("{\"maxLength\": 4}", "\"h\\u00e9llo\"",
          "[{\"loc\": [\"args\"], \"msg\": \"at most 4 characters\", \"type\": \"maxLength\"}]");
    /* Three CJK characters, 9 bytes. */
    valid("{\"minLength\": 3, \"maxLength\": 3}", "\"\\u65e5\\u672c\\u8a9e\"");
    check("{\"minLength\": 4}", "\"\\u65e5\\u672c\\u8a9e\"",
          "[{\"loc\": [\"args\"], \"msg\": \"at least 4 characters\", \"type\": \"minLength\"}]");
    /* One emoji outside the BMP: 4 bytes, one code point. */
    valid("{\"maxLength\": 1}", "\"\\ud83d\\ude00\"");
    check("{\"minLength\": 1}", "\"\"",
          "[{\"loc\": [\"args\"], \"msg\": \"at least 1 character\", \"type\": \"minLength\"}]");
    check("{\"maxLength\": 1}", "\"ab\"",
          "[{\"loc\": [\"args\"], \"msg\": \"at most 1 character\", \"type\": \"maxLength\"}]");
    valid("{\"minLength\": 2.0}", "\"ab\"");
    valid("{\"minLength\": 5}", "12");
}

Test(schema, pattern)
{
    valid("{\"pattern\": \"^a*$\"}", "\"aaa\"");
    check("{\"pattern\": \"^a*$\"}", "\"abc\"",
          "[{\"loc\": [\"args\"], \"msg\": \"must match pattern ^a*$\", \"type\": \"pattern\"}]");
    valid("{\"pattern\": \"a+\"}", "\"xxaayy\"");
    valid("{\"pattern\": \"^[a-z]+$\"}", "true");
    /* ECMA-262: `$` does not match before a final newline. */
    cr_assert(invalid("{\"pattern\": \"^abc$\"}", "\"abc\\n\""));
    /* ECMA-262 \\u escapes, matched as characters in UTF mode. */
    valid("{\"pattern\": \"^\\\\u00e9.$\"}", "\"\\u00e9\\u65e5\"");
    cr_assert(invalid("{\"pattern\": \"^.$\"}", "\"ab\""));
    valid("{\"pattern\": \"^.$\"}", "\"\\u65e5\"");
    /* Case sensitive. */
    cr_assert(invalid("{\"pattern\": \"^abc\"}", "\"ABC\""));
}

Test(schema, hostile_pattern_is_bounded)
{
    char instance[80];
    memset(instance, 0, sizeof(instance));
    instance[0] = '"';
    memset(instance + 1, 'a', 40);
    memcpy(instance + 41, "b\"", 2);
    check("{\"pattern\": \"(a+)+$\"}", instance,
          "[{\"loc\": [\"args\"], \"msg\": \"pattern too costly to evaluate on this value\", "
          "\"type\": \"pattern\"}]");
    /* Also inside an object, alongside other violations. */
    char obj[160];
    snprintf(obj, sizeof(obj), "{\"s\": %s, \"n\": \"x\"}", instance);
    check("{\"properties\": {\"s\": {\"pattern\": \"^(a|aa)+$\"}, \"n\": {\"type\": \"integer\"}}}", obj,
          "[{\"loc\": [\"args\", \"s\"], \"msg\": \"pattern too costly to evaluate on this value\", "
          "\"type\": \"pattern\"},"
          " {\"loc\": [\"args\", \"n\"], \"msg\": \"expected integer, got string\", \"type\": \"type\"}]");
    /* After one costly value the rest of the call skips pattern matching:
     * one error, not one per hostile string (other keywords still run). */
    char arr[200];
    snprintf(arr, sizeof(arr), "[\"ok\", %s, %s, 5]", instance, instance);
    check("{\"items\": {\"type\": \"string\", \"pattern\": \"^(a|aa)+$|ok\"}}", arr,
          "[{\"loc\": [\"args\", 1], \"msg\": \"pattern too costly to evaluate on this value\", "
          "\"type\": \"pattern\"},"
          " {\"loc\": [\"args\", 3], \"msg\": \"expected string, got integer\", \"type\": \"type\"}]");
    /* A benign pattern on a long string is not "too costly". */
    size_t big = 100000;
    char *text = malloc(big + 3);
    cr_assert(text != NULL);
    text[0] = '"';
    memset(text + 1, 'a', big);
    memcpy(text + 1 + big, "\"", 2);
    valid("{\"pattern\": \"^[a-z]+$\"}", text);
    valid("{\"pattern\": \"^(a)+$\"}", text);
    free(text);
}

/* --------------------------------------------------------------- arrays */

Test(schema, items_and_counts)
{
    valid("{\"items\": {\"type\": \"integer\"}}", "[1, 2.0, 3]");
    check("{\"minItems\": 2}", "[1]",
          "[{\"loc\": [\"args\"], \"msg\": \"at least 2 items\", \"type\": \"minItems\"}]");
    check("{\"minItems\": 1}", "[]",
          "[{\"loc\": [\"args\"], \"msg\": \"at least 1 item\", \"type\": \"minItems\"}]");
    check("{\"maxItems\": 2}", "[1, 2, 3]",
          "[{\"loc\": [\"args\"], \"msg\": \"at most 2 items\", \"type\": \"maxItems\"}]");
    valid("{\"maxItems\": 2}", "\"abc\"");
    check("{\"items\": {\"items\": {\"type\": \"null\"}}}", "[[null], [null, 1]]",
          "[{\"loc\": [\"args\", 1, 1], \"msg\": \"expected null, got integer\", \"type\": \"type\"}]");
}

Test(schema, unique_items_uses_json_schema_equality)
{
    valid("{\"uniqueItems\": true}", "[1, 2, \"1\", true, null, [1], {\"a\": 1}]");
    valid("{\"uniqueItems\": true}", "[0, false]");
    valid("{\"uniqueItems\": true}", "[1, true]");
    valid("{\"uniqueItems\": false}", "[1, 1]");
    check("{\"uniqueItems\": true}", "[1, 2, 1.0]",
          "[{\"loc\": [\"args\"], \"msg\": \"items must be unique (0 and 2 are equal)\", \"type\": "
          "\"uniqueItems\"}]");
    check("{\"uniqueItems\": true}", "[{\"a\": 1, \"b\": [1, {\"c\": 2}]}, {\"b\": [1.0, {\"c\": 2}], \"a\": 1}]",
          "[{\"loc\": [\"args\"], \"msg\": \"items must be unique (0 and 1 are equal)\", \"type\": "
          "\"uniqueItems\"}]");
    valid("{\"uniqueItems\": true}", "[{\"a\": 1, \"b\": 2}, {\"a\": 1, \"b\": 3}, {\"a\": 1}]");
    valid("{\"uniqueItems\": true}", "[[1, 2], [2, 1]]");
}

Test(schema, unique_items_long_arrays)
{
    /* Beyond the pairwise limit the hashed path runs; same answers. */
    char text[4096];
    size_t pos = 0;
    pos += (size_t)snprintf(text + pos, sizeof(text) - pos, "[");
    for (int i = 0; i < 200; i++)
        pos += (size_t)snprintf(text + pos, sizeof(text) - pos, "%s{\"k\": %d}", i ? ", " : "", i);
    snprintf(text + pos, sizeof(text) - pos, "]");
    valid("{\"uniqueItems\": true}", text);

    pos = 0;
    pos += (size_t)snprintf(text + pos, sizeof(text) - pos, "[");
    for (int i = 0; i < 200; i++) {
        /* item 150 repeats item 40 (as a real); item 170 repeats item 5. */
        if (i == 150)
            pos += (size_t)snprintf(text + pos, sizeof(text) - pos, ", 40.0");
        else if (i == 170)
            pos += (size_t)snprintf(text + pos, sizeof(text) - pos, ", 5");
        else
            pos += (size_t)snprintf(text + pos, sizeof(text) - pos, "%s%d", i ? ", " : "", i);
    }
    snprintf(text + pos, sizeof(text) - pos, "]");
    check("{\"uniqueItems\": true}", text,
          "[{\"loc\": [\"args\"], \"msg\": \"items must be unique (40 and 150 are equal)\", \"type\": "
          "\"uniqueItems\"}]");
}

/* ----------------------------------------------------------- enum, const */

Test(schema, enum_and_const_equality)
{
    valid("{\"enum\": [1, 2, 3]}", "1.0");
    valid("{\"enum\": [1.0]}", "1");
    check("{\"enum\": [1, \"x\", null]}", "4",
          "[{\"loc\": [\"args\"], \"msg\": \"must be one of [1, \\\"x\\\", null]\", \"type\": \"enum\"}]");
    cr_assert(invalid("{\"enum\": [false]}", "0"));
    cr_assert(invalid("{\"enum\": [[1, 2]]}", "[2, 1]"));
    valid("{\"enum\": [{\"a\": 1, \"b\": 2}]}", "{\"b\": 2, \"a\": 1.0}");
    cr_assert(invalid("{\"enum\": [{\"a\": 1}]}", "{\"a\": 1, \"b\": 2}"));
    cr_assert(invalid("{\"enum\": []}", "1"));
    valid("{\"const\": 1}", "1.0");
    valid("{\"const\": 1.0}", "1");
    check("{\"const\": 2}", "3",
          "[{\"loc\": [\"args\"], \"msg\": \"must be equal to 2\", \"type\": \"const\"}]");
    valid("{\"const\": {\"foo\": \"bar\", \"baz\": [1]}}", "{\"baz\": [1.0], \"foo\": \"bar\"}");
    cr_assert(invalid("{\"const\": {\"foo\": \"bar\"}}", "{\"foo\": \"bar\", \"x\": null}"));
    valid("{\"const\": null}", "null");
    cr_assert(invalid("{\"const\": null}", "false"));
    cr_assert(invalid("{\"const\": \"a\"}", "\"a\\u0000\""));
}

/* ------------------------------------------------------------- defaults */

Test(schema, defaults_filled_when_valid)
{
    const char *schema =
        "{\"type\": \"object\", \"properties\": {"
        "  \"page\": {\"type\": \"integer\", \"default\": 1},"
        "  \"filter\": {\"type\": \"object\", \"default\": {\"tags\": []},"
        "             \"properties\": {\"limit\": {\"default\": 20}, \"q\": {\"type\": \"string\"}}},"
        "  \"rows\": {\"type\": \"array\", \"items\": {\"properties\": {\"on\": {\"default\": true}}}},"
        "  \"given\": {\"default\": \"unused\"}}}";
    /* Missing: filled as is, and a filled default is not descended into. */
    check_full(schema, "{\"given\": 0}", "args", "[]",
               "{\"given\": 0, \"page\": 1, \"filter\": {\"tags\": []}}");
    /* Present nested objects (and array items) get their own defaults. */
    check_full(schema, "{\"filter\": {\"q\": \"x\"}, \"rows\": [{}, {\"on\": false}, 3]}", "args", "[]",
               "{\"filter\": {\"q\": \"x\", \"limit\": 20}, \"rows\": [{\"on\": true}, {\"on\": false}, 3],"
               " \"page\": 1, \"given\": \"unused\"}");
    /* Invalid: nothing filled at all. */
    check_full(schema, "{\"filter\": {\"q\": 1}}", "args",
               "[{\"loc\": [\"args\", \"filter\", \"q\"], \"msg\": \"expected string, got integer\", \"type\": "
               "\"type\"}]",
               "{\"filter\": {\"q\": 1}}");
}

Test(schema, defaults_are_deep_copies)
{
    mizan_schema_t *s = compile_ok("{\"properties\": {\"tags\": {\"default\": [\"a\"]}}}");
    json_t *first = json_object();
    json_t *errors = json_array();
    cr_assert_eq(mizan_schema_validate(s, first, "args", errors), 0);
    json_t *tags = json_object_get(first, "tags");
    cr_assert(json_is_array(tags));
    json_array_append_new(tags, json_string("mutated"));
    json_t *second = json_object();
    cr_assert_eq(mizan_schema_validate(s, second, "args", errors), 0);
    json_t *want = parse("{\"tags\": [\"a\"]}");
    cr_assert(json_equal(second, want), "a filled default shares storage with the schema");
    const json_t *src = mizan_schema_source(s);
    const json_t *src_default =
        json_object_get(json_object_get(json_object_get(src, "properties"), "tags"), "default");
    cr_assert(json_equal(src_default, json_object_get(want, "tags")), "the schema's default was modified");
    json_decref(want);
    json_decref(second);
    json_decref(first);
    json_decref(errors);
    mizan_schema_free(s);
}

Test(schema, additional_properties_objects_get_defaults)
{
    check_full("{\"additionalProperties\": {\"properties\": {\"n\": {\"default\": 0}}}}", "{\"x\": {}, \"y\": 5}",
               "args", "[]", "{\"x\": {\"n\": 0}, \"y\": 5}");
}

/* ---------------------------------------------------- compile refusals */

Test(schema, unknown_and_unsupported_keywords_refused)
{
    compile_fails("{\"properties\": {\"title\": {\"type\": \"string\", \"minLenght\": 3}}}",
                  "/properties/title/minLenght: unknown keyword");
    compile_fails_with("{\"$ref\": \"#/definitions/a\"}", "/$ref: no schema at JSON pointer \"/definitions/a\"");
    compile_fails_with("{\"properties\": {\"a\": {\"$ref\": \"https://example.com/a.json\"}}}",
                  "/properties/a/$ref: remote reference \"https://example.com/a.json\" refused");
    compile_fails_with("{\"$ref\": \"#\"}", ": $ref cycle");
    compile_fails_with("{\"$defs\": {\"a\": {\"allOf\": [{\"$ref\": \"#/$defs/b\"}]}, \"b\": {\"$ref\": \"#/$defs/a\"}},"
                  " \"$ref\": \"#/$defs/a\"}",
                  "$ref cycle");
    compile_fails_with("{\"prefixItems\": [true]}", "/prefixItems: a 2020-12 keyword; this schema is draft-07");
    compile_fails_with("{\"$schema\": \"https://json-schema.org/draft/2020-12/schema\", \"additionalItems\": {}}",
                  "/additionalItems: a draft-07 keyword; this schema is 2020-12");
    compile_fails_with("{\"$schema\": \"http://json-schema.org/draft-04/schema#\"}", "/$schema: unsupported dialect");
    compile_fails_with("{\"$schema\": \"https://json-schema.org/draft/2020-12/schema\", \"items\": [true]}",
                  "/items: must be a schema (2020-12 uses prefixItems for tuples)");
    compile_fails_with("{\"items\": {\"oneOf\": []}}", "/items/oneOf: must be a non-empty array of schemas");
    /* JSON pointer escaping of names with '/' and '~'. */
    compile_fails("{\"properties\": {\"a/b~c\": {\"bogus\": 1}}}", "/properties/a~1b~0c/bogus: unknown keyword");
}

Test(schema, bad_keyword_values_refused)
{
    compile_fails("5", "schema: a schema must be an object or a boolean");
    compile_fails("{\"properties\": {\"a\": 5}}", "/properties/a: a schema must be an object or a boolean");
    compile_fails("{\"items\": null}", "/items: a schema must be an object or a boolean");
    compile_fails("{\"properties\": []}", "/properties: must be an object of schemas");
    compile_fails("{\"type\": \"int\"}", "/type: unknown type \"int\"");
    compile_fails("{\"type\": []}", "/type: must be a type name or a non-empty array of distinct type names");
    compile_fails("{\"type\": [\"string\", \"string\"]}",
                  "/type: must be a type name or a non-empty array of distinct type names");
    compile_fails("{\"type\": 3}", "/type: must be a type name or a non-empty array of distinct type names");
    compile_fails("{\"required\": \"a\"}", "/required: must be an array of distinct property names");
    compile_fails("{\"required\": [1]}", "/required: must be an array of distinct property names");
    compile_fails("{\"required\": [\"a\", \"a\"]}", "/required: must be an array of distinct property names");
    compile_fails("{\"minLength\": -1}", "/minLength: must be a non-negative integer");
    compile_fails("{\"maxLength\": \"3\"}", "/maxLength: must be a non-negative integer");
    compile_fails("{\"minItems\": 1.5}", "/minItems: must be a non-negative integer");
    compile_fails("{\"maxItems\": true}", "/maxItems: must be a non-negative integer");
    compile_fails("{\"minProperties\": null}", "/minProperties: must be a non-negative integer");
    compile_fails("{\"maxProperties\": -2.0}", "/maxProperties: must be a non-negative integer");
    compile_fails("{\"minimum\": \"1\"}", "/minimum: must be a number");
    compile_fails("{\"maximum\": null}", "/maximum: must be a number");
    compile_fails("{\"exclusiveMinimum\": true}", "/exclusiveMinimum: must be a number");
    compile_fails("{\"exclusiveMaximum\": false}", "/exclusiveMaximum: must be a number");
    compile_fails("{\"multipleOf\": 0}", "/multipleOf: must be a number greater than 0");
    compile_fails("{\"multipleOf\": -1.5}", "/multipleOf: must be a number greater than 0");
    compile_fails("{\"enum\": {\"a\": 1}}", "/enum: must be an array");
    compile_fails("{\"uniqueItems\": 1}", "/uniqueItems: must be a boolean");
    compile_fails("{\"pattern\": 5}", "/pattern: must be a string (a regular expression)");
    compile_fails("{\"properties\": {\"s\": {\"pattern\": \"(ab\"}}}",
                  "/properties/s/pattern: invalid regular expression: missing closing parenthesis at offset 3");
    compile_fails("{\"title\": 5}", "/title: must be a string");
    compile_fails("{\"description\": []}", "/description: must be a string");
    compile_fails("{\"$comment\": 1}", "/$comment: must be a string");
    compile_fails("{\"$schema\": {}}", "/$schema: must be a string");
}

Test(schema, annotations_accepted)
{
    valid("{\"$schema\": \"http://json-schema.org/draft-07/schema#\", \"$comment\": \"c\", \"title\": \"T\","
          " \"description\": \"D\", \"default\": 3}",
          "\"anything\"");
}

Test(schema, nesting_depth_bounded)
{
    /* {"items": {"items": ... {} ...}} with n levels below the root. */
    char text[1024];
    for (int levels = 64; levels <= 65; levels++) {
        size_t pos = 0;
        for (int i = 0; i < levels; i++)
            pos += (size_t)snprintf(text + pos, sizeof(text) - pos, "{\"items\": ");
        pos += (size_t)snprintf(text + pos, sizeof(text) - pos, "{\"type\": \"integer\"}");
        for (int i = 0; i < levels; i++)
            pos += (size_t)snprintf(text + pos, sizeof(text) - pos, "}");
        json_t *js = parse(text);
        mizan_err_t err = {.msg = ""};
        mizan_schema_t *s = mizan_schema_compile(js, &err);
        if (levels == 64) {
            cr_assert(s != NULL, "64 levels refused: %s", err.msg);
            /* The deepest location still reports, with all 64 indices. */
            json_t *inst = json_string("x");
            for (int i = 0; i < levels; i++) {
                json_t *arr = json_array();
                json_array_append_new(arr, inst);
                inst = arr;
            }
            json_t *errors = json_array();
            cr_assert_eq(mizan_schema_validate(s, inst, "args", errors), 1);
            json_t *loc = json_object_get(json_array_get(errors, 0), "loc");
            cr_assert_eq(json_array_size(loc), 65);
            json_decref(errors);
            json_decref(inst);
        } else {
            cr_assert(s == NULL);
            cr_assert(strstr(err.msg, "schema nested deeper than 64 levels") != NULL, "%s", err.msg);
        }
        mizan_schema_free(s);
        json_decref(js);
    }
}

Test(schema, source_is_kept)
{
    json_t *js = parse("{\"type\": \"string\"}");
    mizan_err_t err = {.msg = ""};
    mizan_schema_t *s = mizan_schema_compile(js, &err);
    cr_assert(s != NULL);
    cr_assert_eq(mizan_schema_source(s), js);
    json_decref(js);
    cr_assert(json_is_object(mizan_schema_source(s)));
    mizan_schema_free(s);
    mizan_schema_free(NULL);
}

/* --------------------------------------------------------------- threads */

typedef struct worker_arg {
    const mizan_schema_t *s; /* shared compiled schema */
    int bad;                 /* wrong answers seen */
} worker_arg_t;

static void *worker(void *p)
{
    worker_arg_t *a = p;
    for (int i = 0; i < 300; i++) {
        bool good = i % 2 == 0;
        json_t *inst = good ? parse("{\"code\": \"AB-12\"}") : parse("{\"code\": \"ab-12\", \"x\": 1}");
        json_t *errors = json_array();
        int rc = mizan_schema_validate(a->s, inst, "args", errors);
        if (rc != (good ? 0 : 2) || (good && !json_is_integer(json_object_get(inst, "n"))))
            a->bad++;
        json_decref(errors);
        json_decref(inst);
    }
    return NULL;
}

Test(schema, concurrent_validation)
{
    mizan_schema_t *s = compile_ok("{\"properties\": {\"code\": {\"pattern\": \"^[A-Z]{2}-[0-9]+$\"},"
                                   " \"n\": {\"default\": 7}}, \"additionalProperties\": false}");
    pthread_t threads[8];
    worker_arg_t args[8];
    for (int i = 0; i < 8; i++) {
        args[i].s = s;
        args[i].bad = 0;
        cr_assert_eq(pthread_create(&threads[i], NULL, worker, &args[i]), 0);
    }
    for (int i = 0; i < 8; i++) {
        pthread_join(threads[i], NULL);
        cr_expect_eq(args[i].bad, 0, "thread %d saw %d wrong answers", i, args[i].bad);
    }
    mizan_schema_free(s);
}
