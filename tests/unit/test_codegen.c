/*
 * test_codegen.c - the TypeScript generator (src/codegen.c): the JSON
 * Schema to TypeScript type mapping (required and optional members, enum,
 * integer and number, arrays, nested objects, additionalProperties, const,
 * union types, boolean schemas), names with dots and underscores, name
 * collisions, determinism (member order of the input does not matter), and
 * the refusal of documents without a supported version.
 */
#include <criterion/criterion.h>

#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "codegen.h"

/* The type text for schema (JSON text) at indent 0; compared, then freed. */
static void expect_type(const char *schema, const char *want)
{
    json_error_t jerr;
    json_t *s = json_loads(schema, JSON_DECODE_ANY, &jerr);
    cr_assert_not_null(s, "test error: %s in %s", jerr.text, schema);
    char *got = mizan_codegen_ts_type(s, 0);
    cr_assert_not_null(got);
    cr_assert_str_eq(got, want, "schema %s\n--- got ---\n%s\n--- want ---\n%s", schema, got, want);
    free(got);
    json_decref(s);
}

Test(codegen, scalars_integer_and_number)
{
    expect_type("{\"type\": \"string\"}", "string");
    expect_type("{\"type\": \"integer\"}", "number");
    expect_type("{\"type\": \"number\", \"minimum\": 0}", "number");
    expect_type("{\"type\": \"boolean\"}", "boolean");
    expect_type("{\"type\": \"null\"}", "null");
}

Test(codegen, boolean_and_empty_schemas)
{
    expect_type("true", "unknown");
    expect_type("{}", "unknown");
    expect_type("{\"description\": \"anything\"}", "unknown");
    expect_type("false", "never");
}

Test(codegen, union_types)
{
    expect_type("{\"type\": [\"string\", \"null\"]}", "string | null");
    /* integer and number are one TypeScript type. */
    expect_type("{\"type\": [\"integer\", \"number\", \"boolean\"]}", "number | boolean");
    expect_type("{\"type\": [\"array\", \"null\"], \"items\": {\"type\": \"integer\"}}", "number[] | null");
}

Test(codegen, enum_and_const)
{
    expect_type("{\"type\": \"string\", \"enum\": [\"draft\", \"published\"]}", "\"draft\" | \"published\"");
    expect_type("{\"enum\": [1, 2.5, \"two\", null, true, 1]}", "1 | 2.5 | \"two\" | null | true");
    expect_type("{\"enum\": []}", "never");
    expect_type("{\"const\": \"pong\"}", "\"pong\"");
    expect_type("{\"type\": \"string\", \"const\": \"say \\\"hi\\\"\"}", "\"say \\\"hi\\\"\"");
    expect_type("{\"const\": {\"b\": [1, \"x\"], \"a\": null}}", "{ a: null; b: [1, \"x\"]; }");
    expect_type("{\"const\": {}}", "Record<string, never>");
}

Test(codegen, arrays)
{
    expect_type("{\"type\": \"array\", \"items\": {\"type\": \"string\"}}", "string[]");
    expect_type("{\"type\": \"array\"}", "unknown[]");
    expect_type("{\"type\": \"array\", \"items\": {\"type\": [\"string\", \"integer\"]}}", "(string | number)[]");
    expect_type("{\"type\": \"array\", \"items\": {\"type\": \"array\", \"items\": {\"enum\": [\"a\", \"b\"]}}}",
                "(\"a\" | \"b\")[][]");
    /* A | inside a string literal is no union. */
    expect_type("{\"type\": \"array\", \"items\": {\"const\": \"a|b\"}}", "\"a|b\"[]");
}

Test(codegen, objects_required_and_optional)
{
    expect_type("{\"type\": \"object\", \"properties\": {\"b\": {\"type\": \"string\"}, \"a\": {\"type\": \"integer\"}},"
                " \"required\": [\"b\"], \"additionalProperties\": false}",
                "{\n"
                "  /** @integer */\n"
                "  a?: number;\n"
                "  b: string;\n"
                "}");
    /* Required names without a schema are members of type unknown. */
    expect_type("{\"type\": \"object\", \"required\": [\"z\", \"y\"]}", "{\n  y: unknown;\n  z: unknown;\n}");
}

Test(codegen, empty_objects)
{
    expect_type("{\"type\": \"object\", \"additionalProperties\": false}", "Record<string, never>");
    expect_type("{\"type\": \"object\"}", "Record<string, unknown>");
    expect_type("{\"type\": \"object\", \"additionalProperties\": true}", "Record<string, unknown>");
    expect_type("{\"type\": \"object\", \"additionalProperties\": {\"type\": \"integer\"}}", "Record<string, number>");
}

Test(codegen, additional_properties_index_signature)
{
    /* The index signature admits every member's type (TypeScript requires it). */
    expect_type("{\"type\": \"object\", \"properties\": {\"id\": {\"type\": \"integer\"}, \"n\": {\"type\": \"string\"}},"
                " \"required\": [\"id\"], \"additionalProperties\": {\"type\": \"boolean\"}}",
                "{\n"
                "  /** @integer */\n"
                "  id: number;\n"
                "  n?: string;\n"
                "  [key: string]: boolean | number | string | undefined;\n"
                "}");
    expect_type("{\"type\": \"object\", \"properties\": {\"id\": {\"type\": \"integer\"}}, \"required\": [\"id\"],"
                " \"additionalProperties\": true}",
                "{\n  /** @integer */\n  id: number;\n  [key: string]: unknown;\n}");
}

Test(codegen, nested_objects_and_quoted_names)
{
    expect_type("{\"type\": \"object\", \"properties\": {"
                "  \"user.name\": {\"type\": \"string\", \"description\": \"who */ wrote it\\nhere\"},"
                "  \"meta\": {\"type\": \"object\", \"properties\": {\"tags\": {\"type\": \"array\","
                "    \"items\": {\"type\": \"string\"}, \"maxItems\": 3}}, \"required\": [\"tags\"],"
                "    \"additionalProperties\": false}},"
                " \"required\": [\"meta\"], \"additionalProperties\": false}",
                "{\n"
                "  meta: {\n"
                "    /** @maxItems 3 */\n"
                "    tags: string[];\n"
                "  };\n"
                "  /** who *\\/ wrote it here */\n"
                "  \"user.name\"?: string;\n"
                "}");
}

Test(codegen, untyped_schemas_infer_from_keywords)
{
    expect_type("{\"properties\": {\"a\": {\"type\": \"null\"}}, \"required\": [\"a\"], \"additionalProperties\": false}",
                "{\n  a: null;\n}");
    expect_type("{\"items\": {\"type\": \"boolean\"}}", "boolean[]");
}

/* ---- whole files ---------------------------------------------------------- */

static char *generate(const char *doc_text, mizan_err_t *err)
{
    json_error_t jerr;
    json_t *doc = json_loads(doc_text, 0, &jerr);
    cr_assert_not_null(doc, "test error: %s", jerr.text);
    char *ts = mizan_codegen_ts(doc, "./client.js", err);
    json_decref(doc);
    return ts;
}

#define DOC_A                                                                                                       \
    "{\"version\": 1, \"protocol\": 1,"                                                                             \
    " \"functions\": {"                                                                                             \
    "  \"b.get_x\": {\"kind\": \"query\", \"input_schema\": {\"type\": \"object\", \"properties\": {\"id\": "       \
    "{\"type\": \"integer\"}}, \"required\": [\"id\"]}, \"output_schema\": {\"type\": \"string\"}, \"auth\": false}," \
    "  \"a_b\": {\"kind\": \"mutation\", \"input_schema\": {\"type\": \"object\"}, \"output_schema\": null,"       \
    "   \"auth\": true, \"invalidates\": [\"x\"]},"                                                               \
    "  \"a.b\": {\"kind\": \"query\", \"input_schema\": {\"type\": \"object\"}, \"auth\": false}},"              \
    " \"contexts\": {\"x\": {\"params_schema\": {\"type\": \"object\", \"properties\": {\"id\": {\"type\": "      \
    "\"integer\"}}, \"required\": [\"id\"], \"additionalProperties\": false}, \"functions\": [\"b.get_x\"],"        \
    " \"ttl\": 5, \"scope\": \"public\"}}}"

/* The same document with every object's members in another order. */
#define DOC_B                                                                                                       \
    "{\"contexts\": {\"x\": {\"scope\": \"public\", \"ttl\": 5, \"functions\": [\"b.get_x\"], \"params_schema\": "    \
    "{\"additionalProperties\": false, \"required\": [\"id\"], \"properties\": {\"id\": {\"type\": \"integer\"}}, " \
    "\"type\": \"object\"}}},"                                                                                     \
    " \"functions\": {"                                                                                             \
    "  \"a.b\": {\"auth\": false, \"input_schema\": {\"type\": \"object\"}, \"kind\": \"query\"},"              \
    "  \"a_b\": {\"invalidates\": [\"x\"], \"auth\": true, \"output_schema\": null, \"input_schema\": {\"type\": " \
    "\"object\"}, \"kind\": \"mutation\"},"                                                                       \
    "  \"b.get_x\": {\"auth\": false, \"output_schema\": {\"type\": \"string\"}, \"input_schema\": {\"required\": " \
    "[\"id\"], \"properties\": {\"id\": {\"type\": \"integer\"}}, \"type\": \"object\"}, \"kind\": \"query\"}},"   \
    " \"protocol\": 1, \"version\": 1}"

Test(codegen, names_with_dots_collisions_and_determinism)
{
    mizan_err_t err = {{0}};
    char *a = generate(DOC_A, &err);
    cr_assert_not_null(a, "%s", err.msg);
    char *b = generate(DOC_B, &err);
    cr_assert_not_null(b, "%s", err.msg);
    cr_assert_str_eq(a, b, "member order of the document changed the output");
    const char *needles[] = {
        "import { createClient, type ClientOptions, type MizanClient } from \"./client.js\";",
        "export type FunctionName = \"a.b\" | \"a_b\" | \"b.get_x\";",
        "export type ContextName = \"x\";",
        /* "a.b" and "a_b" both PascalCase to AB: the second sorted one becomes AB2. */
        "export type ABArgs = Record<string, unknown>;",
        "export type AB2Args = Record<string, unknown>;",
        "export type ABResult = unknown;",
        "export type AB2Result = unknown;",
        "export interface BGetXArgs {\n  /** @integer */\n  id: number;\n}",
        "export type BGetXResult = string;",
        "  \"a.b\": { kind: \"query\"; args: ABArgs; result: ABResult };",
        "  a_b: { kind: \"mutation\"; args: AB2Args; result: AB2Result };",
        "  \"b.get_x\": { kind: \"query\"; args: BGetXArgs; result: BGetXResult };",
        "export interface XParams {\n  /** @integer */\n  id: number;\n}",
        "export interface XData {\n  \"b.get_x\": BGetXResult;\n}",
        "  x: { params: XParams; data: XData };",
        "/** a_b (mutation, auth true, invalidates x) */",
        "    \"a.b\"(args?: ABArgs): Promise<ABResult>;",
        "    \"b.get_x\"(args: BGetXArgs): Promise<BGetXResult>;",
        "    \"b.get_x\": (...a) => client.call(\"b.get_x\", ...a),",
        "export function createTypedClient(options: ClientOptions): TypedClient {",
        "export type Client = MizanClient<Functions, Contexts>;",
    };
    for (size_t i = 0; i < sizeof(needles) / sizeof(needles[0]); i++)
        cr_assert(strstr(a, needles[i]) != NULL, "generated file lacks:\n%s\n--- file ---\n%s", needles[i], a);
    cr_assert(strncmp(a, "// Generated by mizand codegen from the registry (schema document version 1). Do not edit.\n",
                      90) == 0,
              "%s", a);
    free(a);
    free(b);
}

Test(codegen, empty_registry)
{
    mizan_err_t err = {{0}};
    char *ts = generate("{\"version\": 1, \"functions\": {}, \"contexts\": {}}", &err);
    cr_assert_not_null(ts, "%s", err.msg);
    cr_assert(strstr(ts, "export type FunctionName = never;") != NULL, "%s", ts);
    cr_assert(strstr(ts, "export type ContextName = never;") != NULL, "%s", ts);
    free(ts);
}

Test(codegen, refuses_unknown_documents)
{
    const char *bad[][2] = {
        {"{\"protocol\": 1, \"functions\": {}, \"contexts\": {}}", "no \"version\""},
        {"{\"version\": 2, \"functions\": {}, \"contexts\": {}}", "version 2 is not supported"},
        {"{\"version\": \"1\", \"functions\": {}, \"contexts\": {}}", "is not supported"},
        {"{\"version\": 1, \"functions\": []}", "\"functions\" and \"contexts\" objects"},
        {"{\"version\": 1, \"functions\": {\"f\": {\"kind\": \"other\", \"input_schema\": {}}}, \"contexts\": {}}",
         "function \"f\""},
        {"{\"version\": 1, \"functions\": {}, \"contexts\": {\"c\": {}}}", "context \"c\""},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        mizan_err_t err = {{0}};
        char *ts = generate(bad[i][0], &err);
        cr_assert_null(ts, "accepted %s", bad[i][0]);
        cr_assert(strstr(err.msg, bad[i][1]) != NULL, "%s: %s", bad[i][0], err.msg);
    }
}
