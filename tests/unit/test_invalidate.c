/*
 * test_invalidate.c - the invalidation targets of a mutation
 * (src/invalidate.c, PROTOCOL.md section 5): exact auto-scoping (a context
 * is scoped to its params only when every param is required and the
 * mutation's arg has exactly one canonical value by the param's declared
 * types, else invalidated whole; the params listed are canonical), contexts
 * without params, and the targets a handler adds at run time (scoped the
 * same way, unknown contexts skipped, duplicates dropped). The canonical
 * readings themselves (src/params.c) are checked at the end.
 */
#include <criterion/criterion.h>

#include <string.h>

#include <jansson.h>

#include "invalidate.h"
#include "job.h"
#include "params.h"
#include "registry.h"

static mizan_registry_t reg;
static mizan_modinst_t mod;

static int h_dummy(mizan_req_t *req)
{
    (void)req;
    return 0;
}

#define FNS(...) ((const char *const[]){__VA_ARGS__, NULL})

static void add_ctx(const char *name, const char *params)
{
    mizan_context_def_t def = {.name = name, .params_schema = params, .functions = FNS("q"), .ttl = 60};
    cr_assert_eq(mizan_module_add_context((mizan_module_t *)&mod, &def), 0);
}

static void add_mutation(const char *name, const char *const *invalidates)
{
    mizan_function_def_t def = {.name = name, .kind = MIZAN_MUTATION, .invalidates = invalidates, .handler = h_dummy};
    cr_assert_eq(mizan_module_add_function((mizan_module_t *)&mod, &def), 0);
}

static void setup(void)
{
    mizan_registry_init(&reg, 5000);
    memset(&mod, 0, sizeof(mod));
    mod.name = "testmod";
    mod.reg = &reg;
    mizan_function_def_t q = {.name = "q", .kind = MIZAN_QUERY, .handler = h_dummy};
    cr_assert_eq(mizan_module_add_function((mizan_module_t *)&mod, &q), 0);
    add_ctx("post", "{\"type\": \"object\", \"additionalProperties\": false, \"required\": [\"post_id\"],"
                    " \"properties\": {\"post_id\": {\"type\": \"integer\", \"minimum\": 1}}}");
    add_ctx("feed", NULL);
    add_ctx("thread", "{\"type\": \"object\", \"additionalProperties\": false, \"required\": [\"page\", \"post_id\"],"
                      " \"properties\": {\"post_id\": {\"type\": \"integer\"}, \"page\": {\"type\": \"integer\"}}}");
    add_ctx("replies", "{\"type\": \"object\", \"additionalProperties\": false, \"required\": [\"parent\"],"
                       " \"properties\": {\"parent\": {\"type\": [\"integer\", \"null\"]}}}");
    add_ctx("tagged", "{\"type\": \"object\", \"additionalProperties\": false, \"required\": [\"tag\", \"drafts\"],"
                      " \"properties\": {\"tag\": {\"type\": \"string\", \"minLength\": 1},"
                      " \"drafts\": {\"type\": \"boolean\"}}}");
    /* The two cases of PROTOCOL.md section 5 rev 2: an optional param, and
     * a param the query string may read as an integer or a string. */
    add_ctx("article", "{\"type\": \"object\", \"additionalProperties\": false, \"required\": [\"id\"],"
                       " \"properties\": {\"id\": {\"type\": \"integer\"}, \"lang\": {\"type\": \"string\"}}}");
    add_ctx("item", "{\"type\": \"object\", \"additionalProperties\": false, \"required\": [\"key\"],"
                    " \"properties\": {\"key\": {\"type\": [\"integer\", \"string\"]}}}");
    add_ctx("paged", "{\"type\": \"object\", \"additionalProperties\": false,"
                     " \"properties\": {\"post_id\": {\"type\": \"integer\"},"
                     " \"page\": {\"type\": \"integer\", \"default\": 1}}}");
    add_mutation("update_post", FNS("post", "feed", "thread"));
    add_mutation("reply", FNS("replies", "tagged", "paged"));
    add_mutation("touch", NULL);
    add_mutation("edit_article", FNS("article"));
    add_mutation("put_item", FNS("item"));
    mizan_err_t err = {{0}};
    cr_assert_eq(mizan_registry_finish(&reg, &err), 0, "%s", err.msg);
}

static void teardown(void)
{
    mizan_registry_deinit(&reg);
}

TestSuite(invalidate, .init = setup, .fini = teardown);

static const mizan_function_t *fn(const char *name)
{
    const mizan_function_t *f = mizan_registry_function(&reg, name);
    cr_assert_not_null(f, "%s", name);
    return f;
}

/* Parses JSON test text (new reference). */
static json_t *J(const char *text)
{
    json_error_t jerr;
    json_t *v = json_loads(text, JSON_DECODE_ANY, &jerr);
    cr_assert_not_null(v, "test error: '%s': %s", text, jerr.text);
    return v;
}

/* Computes the targets of f for args and runtime (JSON texts; runtime may be
 * NULL) and asserts they equal expected, in order. */
static void expect_targets(const char *f, const char *args, const char *runtime, const char *expected)
{
    json_t *a = J(args);
    json_t *rt = runtime != NULL ? J(runtime) : NULL;
    json_t *before = json_deep_copy(a);
    json_t *got = mizan_invalidate_targets(fn(f), a, rt);
    cr_assert_not_null(got);
    json_t *want = J(expected);
    char *text = json_dumps(got, JSON_COMPACT | JSON_SORT_KEYS);
    cr_assert(json_equal(got, want), "%s(%s) + runtime %s:\n got  %s\n want %s", f, args,
              runtime != NULL ? runtime : "NULL", text, expected);
    free(text);
    cr_assert_eq(got->refcount, 1, "the list is a new reference");
    cr_assert(json_equal(a, before), "the args were modified");
    json_decref(got);
    json_decref(want);
    json_decref(before);
    json_decref(a);
    json_decref(rt);
}

/* ---- auto-scoping --------------------------------------------------------------------- */

Test(invalidate, all_params_present_and_valid_scope_the_target)
{
    expect_targets("update_post", "{\"post_id\": 5, \"title\": \"New\", \"body\": \"text\"}", NULL,
                   "[{\"context\": \"post\", \"params\": {\"post_id\": 5}},"
                   " {\"context\": \"feed\"}, {\"context\": \"thread\"}]");
}

Test(invalidate, every_param_of_a_multi_param_context)
{
    expect_targets("update_post", "{\"post_id\": 5, \"page\": 2, \"extra\": [1]}", NULL,
                   "[{\"context\": \"post\", \"params\": {\"post_id\": 5}}, {\"context\": \"feed\"},"
                   " {\"context\": \"thread\", \"params\": {\"page\": 2, \"post_id\": 5}}]");
}

Test(invalidate, a_missing_param_invalidates_the_whole_context)
{
    expect_targets("update_post", "{\"title\": \"New\"}", NULL,
                   "[{\"context\": \"post\"}, {\"context\": \"feed\"}, {\"context\": \"thread\"}]");
}

Test(invalidate, an_arg_of_the_wrong_type_invalidates_the_whole_context)
{
    expect_targets("update_post", "{\"post_id\": \"x\", \"page\": 1}", NULL,
                   "[{\"context\": \"post\"}, {\"context\": \"feed\"}, {\"context\": \"thread\"}]");
    expect_targets("update_post", "{\"post_id\": 5.5, \"page\": 1}", NULL,
                   "[{\"context\": \"post\"}, {\"context\": \"feed\"}, {\"context\": \"thread\"}]");
    expect_targets("update_post", "{\"post_id\": null, \"page\": 1}", NULL,
                   "[{\"context\": \"post\"}, {\"context\": \"feed\"}, {\"context\": \"thread\"}]");
    expect_targets("update_post", "{\"post_id\": {\"id\": 5}, \"page\": 1}", NULL,
                   "[{\"context\": \"post\"}, {\"context\": \"feed\"}, {\"context\": \"thread\"}]");
}

Test(invalidate, an_arg_breaking_a_constraint_invalidates_the_whole_context)
{
    /* post's post_id has minimum 1; thread's has none. */
    expect_targets("update_post", "{\"post_id\": 0, \"page\": 3}", NULL,
                   "[{\"context\": \"post\"}, {\"context\": \"feed\"},"
                   " {\"context\": \"thread\", \"params\": {\"page\": 3, \"post_id\": 0}}]");
}

Test(invalidate, nullable_boolean_and_string_params)
{
    expect_targets("reply", "{\"parent\": null, \"tag\": \"c\", \"drafts\": false, \"post_id\": 4}", NULL,
                   "[{\"context\": \"replies\", \"params\": {\"parent\": null}},"
                   " {\"context\": \"tagged\", \"params\": {\"drafts\": false, \"tag\": \"c\"}},"
                   " {\"context\": \"paged\"}]");
    expect_targets("reply", "{\"parent\": 12, \"tag\": \"\", \"drafts\": true}", NULL,
                   "[{\"context\": \"replies\", \"params\": {\"parent\": 12}}, {\"context\": \"tagged\"},"
                   " {\"context\": \"paged\"}]");
}

Test(invalidate, a_param_with_a_default_is_not_required_so_never_scoped)
{
    /* "paged" has optional params (page has a default): a bundle may be
     * keyed with or without them, so no single target reaches every one. */
    expect_targets("reply", "{\"post_id\": 4}", NULL,
                   "[{\"context\": \"replies\"}, {\"context\": \"tagged\"}, {\"context\": \"paged\"}]");
    expect_targets("reply", "{\"post_id\": 4, \"page\": 1}", NULL,
                   "[{\"context\": \"replies\"}, {\"context\": \"tagged\"}, {\"context\": \"paged\"}]");
}

/* ---- exact scoping (PROTOCOL.md section 5 rev 2) ------------------------------------------ */

Test(invalidate, an_optional_param_makes_the_target_the_whole_context)
{
    /* The bundle of ?id=1 is keyed {"id":1}; {"id":1,"lang":"en"} would miss it. */
    expect_targets("edit_article", "{\"id\": 1, \"lang\": \"en\"}", NULL, "[{\"context\": \"article\"}]");
    expect_targets("edit_article", "{\"id\": 1}", NULL, "[{\"context\": \"article\"}]");
}

Test(invalidate, a_value_read_two_ways_makes_the_target_the_whole_context)
{
    /* ?key=1 is the integer 1; the mutation's "1" could be that or the string. */
    expect_targets("put_item", "{\"key\": \"1\"}", NULL, "[{\"context\": \"item\"}]");
    expect_targets("put_item", "{\"key\": \"-7\"}", NULL, "[{\"context\": \"item\"}]");
    /* One reading only: scoped. */
    expect_targets("put_item", "{\"key\": 1}", NULL, "[{\"context\": \"item\", \"params\": {\"key\": 1}}]");
    expect_targets("put_item", "{\"key\": \"abc\"}", NULL,
                   "[{\"context\": \"item\", \"params\": {\"key\": \"abc\"}}]");
    expect_targets("put_item", "{\"key\": 3.0}", NULL, "[{\"context\": \"item\", \"params\": {\"key\": 3}}]");
    /* A string the query string keeps as a string (no integer reading). */
    expect_targets("put_item", "{\"key\": \"+1\"}", NULL,
                   "[{\"context\": \"item\", \"params\": {\"key\": \"+1\"}}]");
    /* A boolean is not declared: only its query-string text can be read. */
    expect_targets("put_item", "{\"key\": true}", NULL,
                   "[{\"context\": \"item\", \"params\": {\"key\": \"true\"}}]");
}

Test(invalidate, targets_carry_canonical_params_never_raw_args)
{
    json_t *a = J("{\"post_id\": 12.0}");
    json_t *got = mizan_invalidate_targets(fn("update_post"), a, NULL);
    json_t *v = json_object_get(json_object_get(json_array_get(got, 0), "params"), "post_id");
    cr_assert(json_is_integer(v), "12.0 must be listed as the integer 12");
    cr_assert_eq(json_integer_value(v), 12);
    char *text = json_dumps(json_array_get(got, 0), JSON_COMPACT);
    cr_assert_str_eq(text, "{\"context\":\"post\",\"params\":{\"post_id\":12}}");
    free(text);
    json_decref(got);
    json_decref(a);
    /* A string the query string would read as the integer: canonical too. */
    expect_targets("update_post", "{\"post_id\": \"12\", \"page\": 2.0}", NULL,
                   "[{\"context\": \"post\", \"params\": {\"post_id\": 12}}, {\"context\": \"feed\"},"
                   " {\"context\": \"thread\", \"params\": {\"page\": 2, \"post_id\": 12}}]");
    expect_targets("touch", "{}", "[{\"context\": \"post\", \"params\": {\"post_id\": 9.0}}]",
                   "[{\"context\": \"post\", \"params\": {\"post_id\": 9}}]");
}

/* Asserts mizan_params_canonical(types, v) is expected (JSON text) or NULL. */
static void expect_canonical(const char *types, const char *v, const char *expected)
{
    json_t *t = J(types);
    json_t *value = json_loads(v, JSON_DECODE_ANY, NULL);
    cr_assert_not_null(value, "test error: %s", v);
    json_t *got = mizan_params_canonical(t, value);
    if (expected == NULL) {
        char *text = got != NULL ? json_dumps(got, JSON_ENCODE_ANY) : NULL;
        cr_assert_null(got, "%s as %s: want no canonical value, got %s", v, types, text);
        free(text);
    } else {
        json_t *want = json_loads(expected, JSON_DECODE_ANY, NULL);
        cr_assert(got != NULL && json_equal(got, want) && json_typeof(got) == json_typeof(want),
                  "%s as %s: want %s", v, types, expected);
        json_decref(want);
    }
    json_decref(got);
    json_decref(value);
    json_decref(t);
}

Test(invalidate, canonical_values_follow_the_query_string_rules)
{
    expect_canonical("\"integer\"", "12", "12");
    expect_canonical("\"integer\"", "12.0", "12");
    expect_canonical("\"integer\"", "-0.0", "0");
    expect_canonical("\"integer\"", "12.5", NULL);
    expect_canonical("\"integer\"", "1e300", NULL);
    expect_canonical("\"integer\"", "\"12\"", "12");
    expect_canonical("\"integer\"", "\" 12\"", NULL);
    expect_canonical("\"integer\"", "null", NULL);
    expect_canonical("\"integer\"", "[1]", NULL);
    expect_canonical("[\"integer\", \"string\"]", "\"1\"", NULL);
    expect_canonical("[\"integer\", \"string\"]", "1", "1");
    expect_canonical("[\"integer\", \"string\"]", "\"x\"", "\"x\"");
    expect_canonical("\"string\"", "\"1\"", "\"1\"");
    expect_canonical("\"string\"", "5", "\"5\"");
    expect_canonical("\"string\"", "null", NULL);
    expect_canonical("[\"boolean\", \"string\"]", "\"true\"", NULL);
    expect_canonical("[\"boolean\", \"string\"]", "true", "true");
    expect_canonical("\"boolean\"", "\"false\"", "false");
    expect_canonical("[\"string\", \"null\"]", "null", "null");
    expect_canonical("[\"string\", \"null\"]", "\"\"", NULL);
    expect_canonical("[\"string\", \"null\"]", "\"null\"", NULL);
    expect_canonical("[\"integer\", \"null\"]", "\"\"", "null");
}

Test(invalidate, query_string_coercion)
{
    struct { const char *types, *s, *want; } cases[] = {
        {"\"integer\"", "5", "5"},           {"\"integer\"", "-5", "-5"},
        {"\"integer\"", "+5", "\"+5\""},     {"\"integer\"", "5x", "\"5x\""},
        {"\"boolean\"", "true", "true"},     {"\"boolean\"", "True", "\"True\""},
        {"[\"null\",\"string\"]", "", "null"}, {"\"string\"", "null", "\"null\""},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *t = J(cases[i].types);
        json_t *got = mizan_params_coerce(t, cases[i].s);
        json_t *want = json_loads(cases[i].want, JSON_DECODE_ANY, NULL);
        cr_assert(json_equal(got, want), "coerce(%s, \"%s\")", cases[i].types, cases[i].s);
        json_decref(want);
        json_decref(got);
        json_decref(t);
    }
}

Test(invalidate, a_context_without_params_is_never_scoped)
{
    expect_targets("update_post", "{}", NULL,
                   "[{\"context\": \"post\"}, {\"context\": \"feed\"}, {\"context\": \"thread\"}]");
    json_t *got = mizan_invalidate_targets(fn("update_post"), NULL, NULL);
    json_t *want = J("[{\"context\": \"post\"}, {\"context\": \"feed\"}, {\"context\": \"thread\"}]");
    cr_assert(json_equal(got, want));
    json_decref(got);
    json_decref(want);
}

Test(invalidate, scoped_params_are_copies)
{
    json_t *args = J("{\"post_id\": 5}");
    json_t *got = mizan_invalidate_targets(fn("update_post"), args, NULL);
    json_t *params = json_object_get(json_array_get(got, 0), "params");
    cr_assert_not_null(params);
    cr_assert_neq(json_object_get(params, "post_id"), json_object_get(args, "post_id"));
    json_integer_set(json_object_get(args, "post_id"), 6);
    cr_assert_eq(json_integer_value(json_object_get(params, "post_id")), 5);
    json_decref(got);
    json_decref(args);
}

Test(invalidate, no_invalidates_no_targets)
{
    expect_targets("touch", "{\"post_id\": 1}", NULL, "[]");
    expect_targets("touch", "{}", "[]", "[]");
}

/* ---- run-time targets ------------------------------------------------------------------- */

Test(invalidate, runtime_targets_follow_the_declared_ones)
{
    expect_targets("touch", "{}", "[{\"context\": \"post\", \"params\": {\"post_id\": 8}}, {\"context\": \"feed\"}]",
                   "[{\"context\": \"post\", \"params\": {\"post_id\": 8}}, {\"context\": \"feed\"}]");
    expect_targets("update_post", "{\"post_id\": 5}", "[{\"context\": \"post\", \"params\": {\"post_id\": 6}}]",
                   "[{\"context\": \"post\", \"params\": {\"post_id\": 5}}, {\"context\": \"feed\"},"
                   " {\"context\": \"thread\"}, {\"context\": \"post\", \"params\": {\"post_id\": 6}}]");
}

Test(invalidate, runtime_duplicates_of_auto_targets_are_dropped)
{
    expect_targets("update_post", "{\"post_id\": 5}",
                   "[{\"context\": \"post\", \"params\": {\"post_id\": 5}}, {\"context\": \"feed\"},"
                   " {\"context\": \"feed\", \"params\": {}}, {\"context\": \"thread\"}]",
                   "[{\"context\": \"post\", \"params\": {\"post_id\": 5}}, {\"context\": \"feed\"},"
                   " {\"context\": \"thread\"}]");
}

Test(invalidate, runtime_duplicates_among_themselves_are_dropped)
{
    expect_targets("touch", "{}",
                   "[{\"context\": \"post\", \"params\": {\"post_id\": 8}}, {\"context\": \"post\", \"params\": {\"post_id\": 8}},"
                   " {\"context\": \"feed\"}, {\"context\": \"feed\"}]",
                   "[{\"context\": \"post\", \"params\": {\"post_id\": 8}}, {\"context\": \"feed\"}]");
}

Test(invalidate, runtime_whole_context_is_distinct_from_a_scoped_one)
{
    expect_targets("update_post", "{\"post_id\": 5}", "[{\"context\": \"post\"}]",
                   "[{\"context\": \"post\", \"params\": {\"post_id\": 5}}, {\"context\": \"feed\"},"
                   " {\"context\": \"thread\"}, {\"context\": \"post\"}]");
}

Test(invalidate, runtime_unknown_context_is_skipped)
{
    expect_targets("touch", "{}", "[{\"context\": \"nope\"}, {\"context\": \"feed\"}, {\"context\": \"q\"}]",
                   "[{\"context\": \"feed\"}]");
}

Test(invalidate, runtime_params_are_scoped_like_args)
{
    /* Invalid or incomplete params name no single bundle: whole context. */
    expect_targets("touch", "{}",
                   "[{\"context\": \"post\", \"params\": {\"post_id\": \"x\"}},"
                   " {\"context\": \"thread\", \"params\": {\"post_id\": 1}},"
                   " {\"context\": \"post\", \"params\": {}}]",
                   "[{\"context\": \"post\"}, {\"context\": \"thread\"}]");
}

Test(invalidate, targets_added_by_a_handler)
{
    /* The same path as the gateway: a mutation's handler adds targets
     * through mizan_req_invalidate, then the list is built from its args. */
    const mizan_function_t *f = fn("update_post");
    json_t *args = J("{\"post_id\": 5}");
    mizan_job_t *job = mizan_job_new(f, json_incref(args), mizan_caller_anonymous());
    cr_assert_eq(mizan_req_invalidate(job, "post", J("{\"post_id\": 5}")), 0);
    cr_assert_eq(mizan_req_invalidate(job, "replies", J("{\"parent\": 3}")), 0);
    cr_assert_eq(mizan_req_invalidate(job, "feed", NULL), 0);
    json_t *got = mizan_invalidate_targets(f, job->args, job->targets);
    json_t *want = J("[{\"context\": \"post\", \"params\": {\"post_id\": 5}}, {\"context\": \"feed\"},"
                     " {\"context\": \"thread\"}, {\"context\": \"replies\", \"params\": {\"parent\": 3}}]");
    cr_assert(json_equal(got, want));
    json_decref(got);
    json_decref(want);
    mizan_job_free(job);
    json_decref(args);
}
