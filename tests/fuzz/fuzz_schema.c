/*
 * fuzz_schema.c - fuzz target for the schema compiler and validator
 * (schema.c), in two modes chosen by the input's first byte:
 *
 *   'I' + JSON  the rest is a request body (parsed as the gateway parses
 *               bodies, depth 64), validated as `args` against fixed
 *               schemas: the blog example's input schemas (BLOG_EXAMPLE.md),
 *               one that uses every keyword of the PROTOCOL subset, and
 *               Pydantic-, OpenAPI-, 2020-12- and draft-07-style schemas
 *               using $ref, anyOf/oneOf/allOf, if/then/else, tuples,
 *               dependencies and unevaluatedProperties;
 *   other + JSON  the rest is a schema (parsed as the registry parses
 *               declared schemas); when it compiles, a fixed set of
 *               instances of every shape, two of them nested deeper than
 *               any schema may be, is validated against it.
 *
 * Properties checked on every validation, beyond "no memory error":
 *   - a compile failure has a reason; a compiled schema's source is the
 *     value it was compiled from;
 *   - validate never fails (-1 means out of memory or bad arguments, which
 *     cannot happen here) and returns the number of entries it appended;
 *   - every entry is {"loc": [...], "msg": "...", "type": "..."} with a
 *     non-empty msg and type, loc starting with the given root and holding
 *     only names and indexes;
 *   - determinism: validating a fresh copy again, with no loc root, gives
 *     the same entries (loc without its root) and, when valid, the same
 *     instance after defaults were filled in;
 *   - in instance mode, multipleOf agrees with an independent decision
 *     (check_multiples()).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "fuzz.h"
#include "request.h"
#include "schema.h"

/* The blog example's input schemas (examples/blog/blog.c) and a schema
 * exercising every keyword of the supported subset. */
static const char *const FIXED_SCHEMAS[] = {
    "{\"type\": \"object\", \"additionalProperties\": false}",
    "{\"type\": \"object\", \"properties\": {\"post_id\": {\"type\": \"integer\", \"minimum\": 1}},"
    " \"required\": [\"post_id\"], \"additionalProperties\": false}",
    "{\"type\": \"object\", \"properties\": {\"a\": {\"type\": \"integer\"}, \"b\": {\"type\": \"integer\"}},"
    " \"required\": [\"a\", \"b\"], \"additionalProperties\": false}",
    "{\"type\": \"object\", \"properties\": {\"value\": {\"description\": \"any JSON value\"}},"
    " \"required\": [\"value\"], \"additionalProperties\": false}",
    "{\"type\": \"object\", \"properties\": {\"ms\": {\"type\": \"integer\", \"minimum\": 0, \"maximum\": 10000}},"
    " \"required\": [\"ms\"], \"additionalProperties\": false}",
    "{\"type\": \"object\", \"properties\": {\"limit\": {\"type\": \"integer\", \"minimum\": 1, \"maximum\": 100,"
    " \"default\": 20}}, \"additionalProperties\": false}",
    "{\"type\": \"object\", \"properties\": {"
    " \"title\": {\"type\": \"string\", \"minLength\": 1, \"maxLength\": 200},"
    " \"body\": {\"type\": \"string\"},"
    " \"published\": {\"type\": \"boolean\", \"default\": true}},"
    " \"required\": [\"title\", \"body\"], \"additionalProperties\": false}",
    "{\"type\": \"object\", \"properties\": {"
    " \"post_id\": {\"type\": \"integer\", \"minimum\": 1},"
    " \"title\": {\"type\": \"string\", \"minLength\": 1, \"maxLength\": 200},"
    " \"body\": {\"type\": \"string\"}},"
    " \"required\": [\"post_id\"], \"additionalProperties\": false}",
    "{\"type\": \"object\", \"properties\": {"
    " \"post_id\": {\"type\": \"integer\", \"minimum\": 1},"
    " \"text\": {\"type\": \"string\", \"minLength\": 1, \"maxLength\": 2000}},"
    " \"required\": [\"post_id\", \"text\"], \"additionalProperties\": false}",
    "{\"$schema\": \"http://json-schema.org/draft-07/schema#\", \"$comment\": \"every keyword\","
    " \"title\": \"kitchen sink\", \"description\": \"fuzzing\", \"type\": \"object\","
    " \"properties\": {"
    "  \"title\": {\"type\": \"string\", \"minLength\": 1, \"maxLength\": 20, \"pattern\": \"^[a-z\\\\u00e9 ]*$\"},"
    "  \"slug\": {\"type\": \"string\", \"pattern\": \"(a+)+$\"},"
    "  \"tags\": {\"type\": \"array\", \"items\": {\"type\": \"string\", \"enum\": [\"a\", \"b\", \"c\", 1]},"
    "            \"uniqueItems\": true, \"maxItems\": 40},"
    "  \"set\": {\"type\": \"array\", \"uniqueItems\": true, \"minItems\": 1},"
    "  \"price\": {\"type\": \"number\", \"multipleOf\": 0.01, \"exclusiveMinimum\": 0, \"maximum\": 1e9},"
    "  \"count\": {\"type\": \"integer\", \"minimum\": -5, \"exclusiveMaximum\": 100, \"multipleOf\": 3,"
    "            \"default\": 3},"
    "  \"kind\": {\"const\": {\"a\": [1, 2.0, {\"b\": null}]}},"
    "  \"meta\": {\"type\": \"object\", \"additionalProperties\": {\"type\": [\"string\", \"null\", \"boolean\"]},"
    "           \"minProperties\": 1, \"maxProperties\": 4},"
    "  \"matrix\": {\"type\": \"array\", \"items\": {\"type\": \"array\", \"items\": {\"type\": \"number\"}}},"
    "  \"nested\": {\"type\": \"object\", \"properties\": {\"x\": {\"type\": \"object\","
    "             \"properties\": {\"y\": {\"default\": [1, 2]}}}}, \"default\": {}},"
    "  \"any\": true, \"never\": false,"
    "  \"choice\": {\"enum\": [null, true, 0, \"x\", [1], {\"k\": 1.5}]}},"
    " \"required\": [\"title\"], \"additionalProperties\": {\"type\": \"integer\"}}",
    /* Written in the style of Pydantic's output: $defs, $ref with a
     * default beside it, Optional[...] as anyOf with null, an enum, a
     * nested list of models, a recursive model, format. */
    "{\"$defs\": {\"Address\": {\"properties\": {\"street\": {\"title\": \"Street\", \"type\": \"string\""
    "}, \"city\": {\"title\": \"City\", \"type\": \"string\"}, \"zip\": {\"anyOf\": [{\"pattern\": \"^[0-"
    "9]{5}$\", \"type\": \"string\"}, {\"type\": \"null\"}], \"default\": null, \"title\": \"Zip\"}}, \"r"
    "equired\": [\"street\", \"city\"], \"title\": \"Address\", \"type\": \"object\"}, \"Item\": {\"prope"
    "rties\": {\"sku\": {\"minLength\": 1, \"title\": \"Sku\", \"type\": \"string\"}, \"qty\": {\"exclusi"
    "veMinimum\": 0, \"title\": \"Qty\", \"type\": \"integer\"}, \"tags\": {\"default\": [], \"items\": {"
    "\"type\": \"string\"}, \"title\": \"Tags\", \"type\": \"array\", \"uniqueItems\": true}}, \"required"
    "\": [\"sku\", \"qty\"], \"title\": \"Item\", \"type\": \"object\"}, \"Status\": {\"enum\": [\"draft\""
    ", \"paid\", \"shipped\"], \"title\": \"Status\", \"type\": \"string\"}, \"Node\": {\"properties\": {"
    "\"value\": {\"type\": \"integer\"}, \"children\": {\"items\": {\"$ref\": \"#/$defs/Node\"}, \"type\""
    ": \"array\", \"default\": []}}, \"required\": [\"value\"], \"title\": \"Node\", \"type\": \"object\""
    "}}, \"additionalProperties\": false, \"properties\": {\"customer\": {\"maxLength\": 40, \"title\": \""
    "Customer\", \"type\": \"string\"}, \"email\": {\"format\": \"email\", \"title\": \"Email\", \"type\""
    ": \"string\"}, \"status\": {\"$ref\": \"#/$defs/Status\", \"default\": \"draft\"}, \"shipping\": {\""
    "anyOf\": [{\"$ref\": \"#/$defs/Address\"}, {\"type\": \"null\"}], \"default\": null}, \"items\": {\""
    "items\": {\"$ref\": \"#/$defs/Item\"}, \"minItems\": 1, \"title\": \"Items\", \"type\": \"array\"}, "
    "\"tree\": {\"anyOf\": [{\"$ref\": \"#/$defs/Node\"}, {\"type\": \"null\"}], \"default\": null}, \"cr"
    "eated\": {\"format\": \"date-time\", \"title\": \"Created\", \"type\": \"string\"}, \"note\": {\"any"
    "Of\": [{\"type\": \"string\"}, {\"type\": \"null\"}], \"default\": null, \"title\": \"Note\"}}, \"re"
    "quired\": [\"customer\", \"items\"], \"title\": \"Order\", \"type\": \"object\"}",
    /* OpenAPI style: oneOf of allOf-extended models with a discriminator,
     * patternProperties for x- extensions, propertyNames, format. */
    "{\"oneOf\": [{\"$ref\": \"#/$defs/Cat\"}, {\"$ref\": \"#/$defs/Dog\"}], \"discriminator\": {\"proper"
    "tyName\": \"petType\", \"mapping\": {\"cat\": \"#/$defs/Cat\", \"dog\": \"#/$defs/Dog\"}}, \"$defs\""
    ": {\"Pet\": {\"type\": \"object\", \"required\": [\"petType\", \"name\"], \"properties\": {\"petType"
    "\": {\"type\": \"string\"}, \"name\": {\"type\": \"string\", \"minLength\": 1}, \"id\": {\"type\": \""
    "string\", \"format\": \"uuid\"}}}, \"Cat\": {\"allOf\": [{\"$ref\": \"#/$defs/Pet\"}, {\"type\": \"o"
    "bject\", \"properties\": {\"petType\": {\"const\": \"cat\"}, \"indoor\": {\"type\": \"boolean\"}}}]}"
    ", \"Dog\": {\"allOf\": [{\"$ref\": \"#/$defs/Pet\"}, {\"type\": \"object\", \"properties\": {\"petTy"
    "pe\": {\"const\": \"dog\"}, \"packSize\": {\"type\": \"integer\", \"minimum\": 0}}, \"patternPropert"
    "ies\": {\"^x-\": {\"type\": \"string\"}}, \"propertyNames\": {\"maxLength\": 20}}]}}}",
    /* 2020-12: if/then/else, prefixItems, contains, dependent*, and
     * unevaluatedProperties over all of them. */
    "{\"$schema\": \"https://json-schema.org/draft/2020-12/schema\", \"type\": \"object\", \"properties\""
    ": {\"kind\": {\"type\": \"string\"}}, \"if\": {\"properties\": {\"kind\": {\"const\": \"point\"}}}, "
    "\"then\": {\"properties\": {\"x\": {\"type\": \"number\"}, \"y\": {\"type\": \"number\"}}, \"require"
    "d\": [\"x\", \"y\"]}, \"else\": {\"properties\": {\"coords\": {\"type\": \"array\", \"prefixItems\":"
    " [{\"type\": \"number\"}, {\"type\": \"number\"}], \"items\": false, \"minContains\": 1, \"contains\""
    ": {\"type\": \"number\"}}}}, \"dependentRequired\": {\"x\": [\"y\"]}, \"dependentSchemas\": {\"label"
    "\": {\"properties\": {\"label\": {\"type\": \"string\"}}}}, \"unevaluatedProperties\": false}",
    /* draft-07: tuple items with additionalItems, not, dependencies. */
    "{\"$schema\": \"http://json-schema.org/draft-07/schema#\", \"definitions\": {\"pos\": {\"type\": \"i"
    "nteger\", \"minimum\": 0}}, \"type\": \"object\", \"properties\": {\"pair\": {\"type\": \"array\", \""
    "items\": [{\"$ref\": \"#/definitions/pos\"}, {\"type\": \"string\"}], \"additionalItems\": false}, \""
    "not_null\": {\"not\": {\"type\": \"null\"}}, \"deps\": {\"type\": \"object\", \"dependencies\": {\"a"
    "\": [\"b\"], \"c\": {\"required\": [\"d\"]}}}}}",
};
#define NFIXED_SCHEMAS (sizeof(FIXED_SCHEMAS) / sizeof(FIXED_SCHEMAS[0]))
/* The index of the kitchen-sink schema, which check_multiples() knows
 * (found in setup()). */
static size_t kitchen_sink;

/* Instances of every shape, for schemas taken from the input. */
static const char *const FIXED_INSTANCES[] = {
    "null",
    "true",
    "0",
    "-7",
    "9223372036854775807",
    "2.5",
    "1e300",
    "\"\"",
    "\"h\\u00e9llo w\\u00f6rld \\ud83d\\ude00\"",
    "\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaab\"",
    "[]",
    "[1, 1.0, \"1\", [1], {\"a\": 1}, null]",
    ("[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28,"
     " 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 1.0]"),
    "{}",
    "{\"a\": 1, \"b\": \"x\", \"c\": [true, false], \"d\": {\"e\": null}}",
    "{\"title\": \"hello\", \"body\": \"text\", \"post_id\": 3, \"limit\": 20, \"value\": [1, {\"x\": 2}]}",
    "{\"x\": {\"x\": {\"x\": {\"x\": {\"x\": {\"x\": {\"x\": {\"x\": {\"x\": {\"x\": [[[[[0]]]]]}}}}}}}}}}",
};
#define NFIXED_INSTANCES (sizeof(FIXED_INSTANCES) / sizeof(FIXED_INSTANCES[0]))

static mizan_schema_t *fixed_schemas[NFIXED_SCHEMAS];
static json_t *fixed_instances[NFIXED_INSTANCES];

/* Deeper than any schema may nest: {"x": {"x": ... {}}} and [[...[]]]; built in setup(). */
#define DEEP 70
static json_t *deep_instances[2];

/* A chain of DEEP objects (member "x", with "y": 1 beside it) or arrays (new reference). */
static json_t *deep_chain(bool objects)
{
    json_t *v = objects ? json_object() : json_array();
    for (int i = 0; v != NULL && i < DEEP; i++) {
        json_t *outer = objects ? json_pack("{s:o, s:i}", "x", v, "y", i) : json_pack("[o, i]", v, i);
        v = outer;
    }
    return v;
}

/* Compiles the fixed schemas and parses the fixed instances once. */
static void setup(void)
{
    static bool done;
    if (done)
        return;
    done = true;
    for (size_t i = 0; i < NFIXED_SCHEMAS; i++) {
        json_error_t jerr;
        mizan_err_t err = {{0}};
        json_t *src = json_loads(FIXED_SCHEMAS[i], JSON_REJECT_DUPLICATES, &jerr);
        FUZZ_CHECK(src != NULL, "a fixed schema is valid JSON");
        fixed_schemas[i] = mizan_schema_compile(src, &err);
        if (fixed_schemas[i] == NULL)
            fprintf(stderr, "fixed schema %zu: %s\n", i, err.msg);
        FUZZ_CHECK(fixed_schemas[i] != NULL, "a fixed schema compiles");
        if (strstr(FIXED_SCHEMAS[i], "kitchen sink") != NULL)
            kitchen_sink = i;
        json_decref(src);
    }
    for (size_t i = 0; i < NFIXED_INSTANCES; i++) {
        json_error_t jerr;
        fixed_instances[i] = json_loads(FIXED_INSTANCES[i], JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &jerr);
        FUZZ_CHECK(fixed_instances[i] != NULL, "a fixed instance is valid JSON");
    }
    deep_instances[0] = deep_chain(true);
    deep_instances[1] = deep_chain(false);
    FUZZ_CHECK(deep_instances[0] != NULL && deep_instances[1] != NULL, "deep instances are built");
}

/* Checks one error entry (borrowed); root is the expected first loc element or NULL. */
static void check_entry(const json_t *e, const char *root)
{
    FUZZ_CHECK(json_is_object(e) && json_object_size(e) == 3, "an entry has exactly loc, msg and type");
    const json_t *loc = json_object_get(e, "loc");
    const json_t *msg = json_object_get(e, "msg");
    const json_t *type = json_object_get(e, "type");
    FUZZ_CHECK(json_is_array(loc), "loc is an array");
    FUZZ_CHECK(json_is_string(msg) && json_string_length(msg) > 0, "msg is a non-empty string");
    FUZZ_CHECK(json_is_string(type) && json_string_length(type) > 0, "type is a non-empty string");
    size_t i;
    json_t *step;
    json_array_foreach(loc, i, step)
        FUZZ_CHECK(json_is_string(step) || (json_is_integer(step) && json_integer_value(step) >= 0),
                   "loc holds names and indexes");
    if (root != NULL) {
        const json_t *first = json_array_get(loc, 0);
        FUZZ_CHECK(json_is_string(first) && strcmp(json_string_value(first), root) == 0,
                   "loc starts with the given root");
    }
}

/* True when loc (borrowed) is root followed by exactly the elements of rest. */
static bool loc_is_rooted(const json_t *loc, const char *root, const json_t *rest)
{
    if (json_array_size(loc) != json_array_size(rest) + 1)
        return false;
    if (!json_is_string(json_array_get(loc, 0)) || strcmp(json_string_value(json_array_get(loc, 0)), root) != 0)
        return false;
    for (size_t i = 0; i < json_array_size(rest); i++)
        if (!json_equal(json_array_get(loc, i + 1), json_array_get(rest, i)))
            return false;
    return true;
}

/* Validates copies of instance (borrowed) against s twice and checks every property. */
static void validate_checked(const mizan_schema_t *s, const json_t *instance)
{
    json_t *a = json_deep_copy(instance), *b = json_deep_copy(instance);
    json_t *ea = json_array(), *eb = json_array();
    if (a == NULL || b == NULL || ea == NULL || eb == NULL)
        goto done;
    int ra = mizan_schema_validate(s, a, "args", ea);
    FUZZ_CHECK(ra >= 0, "validate does not fail");
    FUZZ_CHECK((size_t)ra == json_array_size(ea), "validate returns the number of entries appended");
    int rb = mizan_schema_validate(s, b, NULL, eb);
    FUZZ_CHECK(rb == ra, "validation is deterministic (count)");
    for (size_t i = 0; i < (size_t)ra; i++) {
        const json_t *x = json_array_get(ea, i), *y = json_array_get(eb, i);
        check_entry(x, "args");
        check_entry(y, NULL);
        FUZZ_CHECK(json_equal(json_object_get(x, "msg"), json_object_get(y, "msg")) &&
                       json_equal(json_object_get(x, "type"), json_object_get(y, "type")),
                   "validation is deterministic (entries)");
        FUZZ_CHECK(loc_is_rooted(json_object_get(x, "loc"), "args", json_object_get(y, "loc")),
                   "loc starts with the root, then the same path as without one");
    }
    if (ra == 0)
        FUZZ_CHECK(json_equal(a, b), "defaults are filled in the same way every time");
    else
        FUZZ_CHECK(json_equal(a, instance), "an invalid instance is left unchanged");
done:
    json_decref(a);
    json_decref(b);
    json_decref(ea);
    json_decref(eb);
}

/* True when errors (borrowed) holds an entry of type at loc ["args", key]. */
static bool reported(const json_t *errors, const char *key, const char *type)
{
    size_t i;
    json_t *e;
    json_array_foreach(errors, i, e)
    {
        const json_t *loc = json_object_get(e, "loc");
        const char *t = json_string_value(json_object_get(e, "type"));
        const char *k = json_string_value(json_array_get(loc, 1));
        if (json_array_size(loc) == 2 && t != NULL && k != NULL && strcmp(t, type) == 0 && strcmp(k, key) == 0)
            return true;
    }
    return false;
}

/*
 * multipleOf against an independent decision, on the kitchen-sink schema:
 * "price" (multipleOf 0.01) is a multiple exactly when the nearest double
 * to a whole number of hundredths is the value itself, which is what "the
 * shortest decimal form has at most two decimals" means; "count"
 * (integer, multipleOf 3) by integer arithmetic. Only magnitudes where the
 * reference is exact are checked.
 */
static void check_multiples(const mizan_schema_t *s, const json_t *instance)
{
    const json_t *price = json_object_get(instance, "price");
    const json_t *count = json_object_get(instance, "count");
    if (!json_is_object(instance) || (!json_is_number(price) && !json_is_number(count)))
        return;
    json_t *copy = json_deep_copy(instance), *errors = json_array();
    if (copy == NULL || errors == NULL)
        goto done;
    if (mizan_schema_validate(s, copy, "args", errors) < 0)
        goto done;
    if (json_is_number(price) && fabs(json_number_value(price)) < 1e12) {
        double x = json_number_value(price);
        bool multiple = json_is_integer(price) || nearbyint(x * 100.0) / 100.0 == x;
        FUZZ_CHECK(reported(errors, "price", "multipleOf") == !multiple, "multipleOf 0.01 decided on the decimal form");
    }
    if (json_is_integer(count)) {
        bool multiple = json_integer_value(count) % 3 == 0;
        FUZZ_CHECK(reported(errors, "count", "multipleOf") == !multiple, "integer multipleOf by integer arithmetic");
    } else if (json_is_real(count) && fabs(json_real_value(count)) < 9007199254740992.0) {
        double x = json_real_value(count);
        bool whole = x == trunc(x);
        FUZZ_CHECK(reported(errors, "count", "type") == !whole, "a real with no fraction is an integer");
        if (whole)
            FUZZ_CHECK(reported(errors, "count", "multipleOf") == (fmod(x, 3.0) != 0),
                       "a whole real is a multiple of 3 by its value");
    }
done:
    json_decref(copy);
    json_decref(errors);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_init();
    setup();
    if (size == 0)
        return 0;
    const char *text = (const char *)data + 1;
    size_t len = size - 1;

    if (data[0] == 'I') {
        mizan_err_t err = {{0}};
        json_t *instance = mizan_request_parse_json(text, len, 64, &err);
        if (instance == NULL)
            return 0;
        for (size_t i = 0; i < NFIXED_SCHEMAS; i++)
            validate_checked(fixed_schemas[i], instance);
        check_multiples(fixed_schemas[kitchen_sink], instance);
        json_decref(instance);
        return 0;
    }

    json_error_t jerr;
    json_t *src = json_loadb(text, len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &jerr);
    if (src == NULL)
        return 0;
    mizan_err_t err = {{0}};
    mizan_schema_t *s = mizan_schema_compile(src, &err);
    if (s == NULL) {
        FUZZ_CHECK(err.msg[0] != '\0', "a refused schema has a reason");
    } else {
        FUZZ_CHECK(mizan_schema_source(s) == src, "the compiled schema keeps its source");
        for (size_t i = 0; i < NFIXED_INSTANCES; i++)
            validate_checked(s, fixed_instances[i]);
        for (size_t i = 0; i < 2; i++)
            validate_checked(s, deep_instances[i]);
        mizan_schema_free(s);
    }
    json_decref(src);
    return 0;
}
