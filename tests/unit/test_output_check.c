/*
 * test_output_check.c - checking results against declared output schemas
 * (src/job.c mizan_job_check_output, src/registry.c): a native handler's
 * result that strays from its schema becomes INTERNAL_ERROR when the
 * registry validates outputs, a matching one passes untouched (defaults
 * are not filled into results), errors stay errors, and nothing is checked
 * with validation off. The registry part registers real definitions
 * through the module API and reads the schema document.
 */
#include <criterion/criterion.h>

#include <string.h>

#include <jansson.h>

#include "job.h"
#include "registry.h"

static const char *result_text;

/* Answers the JSON text in result_text. */
static int h_answer(mizan_req_t *req)
{
    mizan_req_result(req, json_loads(result_text, JSON_DECODE_ANY, NULL));
    return 0;
}

static int h_fail(mizan_req_t *req)
{
    return mizan_req_error(req, MIZAN_NOT_FOUND, "no such thing", NULL);
}

/* A function outside any registry with an output schema (JSON text). */
static mizan_function_t make_fn(const char *schema, bool check, mizan_handler_fn handler)
{
    mizan_function_t fn;
    memset(&fn, 0, sizeof(fn));
    fn.name = "typed";
    fn.handler = handler;
    fn.timeout_ms = 5000;
    json_t *src = json_loads(schema, JSON_DECODE_ANY, NULL);
    cr_assert_not_null(src);
    mizan_err_t err = {{0}};
    fn.output = mizan_schema_compile(src, &err);
    cr_assert_not_null(fn.output, "%s", err.msg);
    json_decref(src);
    fn.check_output = check;
    return fn;
}

static mizan_job_t *run(const mizan_function_t *fn, const char *answer)
{
    result_text = answer;
    mizan_job_t *job = mizan_job_new(fn, json_object(), mizan_caller_anonymous());
    cr_assert_not_null(job);
    mizan_job_run(job);
    return job;
}

#define POST "{\"type\": \"object\", \"properties\": {\"id\": {\"type\": \"integer\"}, " \
             "\"tags\": {\"type\": \"array\", \"items\": {\"type\": \"string\"}, \"default\": []}}, " \
             "\"required\": [\"id\"], \"additionalProperties\": false}"

Test(output_check, matching_result_passes_untouched)
{
    mizan_function_t fn = make_fn(POST, true, h_answer);
    mizan_job_t *job = run(&fn, "{\"id\": 7}");
    cr_assert_eq(job->code, MIZAN_OK);
    char *text = json_dumps(job->result, JSON_COMPACT);
    cr_assert_str_eq(text, "{\"id\":7}", "defaults must not be filled into a result");
    free(text);
    mizan_job_free(job);
    mizan_schema_free(fn.output);
}

Test(output_check, mismatch_is_internal_error)
{
    mizan_function_t fn = make_fn(POST, true, h_answer);
    const char *bad[] = {"{\"id\": \"7\"}", "{\"id\": 7, \"extra\": 1}", "{}", "[1]", "null",
                         "{\"id\": 7, \"tags\": [1]}"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        mizan_job_t *job = run(&fn, bad[i]);
        cr_assert_eq(job->code, MIZAN_INTERNAL_ERROR, "result %s should be refused", bad[i]);
        cr_assert_null(job->result, "the stray result must be dropped (%s)", bad[i]);
        cr_assert(job->message != NULL && strstr(job->message, "output schema") != NULL);
        mizan_job_free(job);
    }
    mizan_schema_free(fn.output);
}

Test(output_check, false_schema_refuses_every_result)
{
    mizan_function_t fn = make_fn("false", true, h_answer);
    mizan_job_t *job = run(&fn, "\"anything\"");
    cr_assert_eq(job->code, MIZAN_INTERNAL_ERROR);
    mizan_job_free(job);
    mizan_schema_free(fn.output);
}

Test(output_check, errors_are_not_checked)
{
    mizan_function_t fn = make_fn(POST, true, h_fail);
    mizan_job_t *job = run(&fn, NULL);
    cr_assert_eq(job->code, MIZAN_NOT_FOUND, "a handler's own error stands");
    mizan_job_free(job);
    mizan_schema_free(fn.output);
}

Test(output_check, off_means_unchecked)
{
    mizan_function_t fn = make_fn(POST, false, h_answer);
    mizan_job_t *job = run(&fn, "{\"id\": \"seven\"}");
    cr_assert_eq(job->code, MIZAN_OK);
    mizan_job_free(job);
    mizan_schema_free(fn.output);
}

/* ---- registry: output_schema of a definition ------------------------------------ */

static mizan_registry_t reg;
static mizan_modinst_t mod;

static void setup(bool validate)
{
    mizan_registry_init(&reg, 1000);
    reg.validate_output = validate;
    memset(&mod, 0, sizeof(mod));
    mod.name = "t";
    mod.reg = &reg;
}

Test(output_check, registry_compiles_and_publishes)
{
    setup(true);
    mizan_function_def_t typed = {.name = "typed", .kind = MIZAN_QUERY, .handler = h_answer, .output_schema = POST};
    mizan_function_def_t plain = {.name = "plain.fn", .kind = MIZAN_QUERY, .handler = h_answer};
    cr_assert_eq(mizan_module_add_function((mizan_module_t *)&mod, &typed), 0);
    cr_assert_eq(mizan_module_add_function((mizan_module_t *)&mod, &plain), 0);
    mizan_err_t err = {{0}};
    cr_assert_eq(mizan_registry_finish(&reg, &err), 0, "%s", err.msg);
    const mizan_function_t *f = mizan_registry_function(&reg, "typed");
    cr_assert(f->output != NULL && f->check_output);
    cr_assert(!mizan_registry_function(&reg, "plain.fn")->check_output);
    json_t *doc = json_loads(reg.schema_json, 0, NULL);
    cr_assert_eq(json_integer_value(json_object_get(doc, "version")), MIZAN_SCHEMA_DOC_VERSION);
    json_t *fns = json_object_get(doc, "functions");
    json_t *expect = json_loads(POST, 0, NULL);
    cr_assert(json_equal(json_object_get(json_object_get(fns, "typed"), "output_schema"), expect));
    cr_assert(json_is_null(json_object_get(json_object_get(fns, "plain.fn"), "output_schema")));
    json_decref(expect);
    json_decref(doc);
    mizan_registry_deinit(&reg);
}

Test(output_check, registry_refuses_bad_output_schemas)
{
    const char *bad[][2] = {{"{\"type\": \"objcet\"}", "output schema"},
                            {"{\"anyOf\": []}", "anyOf"},
                            {"{not json", "output_schema: invalid JSON"}};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        setup(false);
        mizan_function_def_t d = {.name = "f", .kind = MIZAN_QUERY, .handler = h_answer, .output_schema = bad[i][0]};
        mizan_module_add_function((mizan_module_t *)&mod, &d);
        mizan_err_t err = {{0}};
        cr_assert_eq(mizan_registry_finish(&reg, &err), -1, "%s accepted", bad[i][0]);
        cr_assert(strstr(err.msg, bad[i][1]) != NULL, "%s: %s", bad[i][0], err.msg);
        mizan_registry_deinit(&reg);
    }
}

Test(output_check, abi_1_definitions_have_no_output_schema)
{
    /* A module built for ABI 1 ends its definition before output_schema: whatever lies there is not read. */
    setup(true);
    mod.abi = 1;
    mizan_function_def_t d = {.name = "old", .kind = MIZAN_QUERY, .handler = h_answer, .output_schema = "{not json"};
    cr_assert_eq(mizan_module_add_function((mizan_module_t *)&mod, &d), 0);
    mizan_err_t err = {{0}};
    cr_assert_eq(mizan_registry_finish(&reg, &err), 0, "%s", err.msg);
    const mizan_function_t *f = mizan_registry_function(&reg, "old");
    cr_assert(f->output_src == NULL && f->output == NULL && !f->check_output);
    mizan_registry_deinit(&reg);
}
