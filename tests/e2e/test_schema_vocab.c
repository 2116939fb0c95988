/*
 * test_schema_vocab.c - end-to-end tests of JSON Schema as people write
 * it (docs/validation.md): a config-declared upstream function whose input
 * schema is a Pydantic-generated model ($defs, $ref, Optional as anyOf
 * with null, an enum, a nested list of models), context params declared as
 * anyOf[integer, null] and through $ref, coerced from the query string,
 * a local schema directory for $ref, format assertion, and the start-up
 * refusal of remote references.
 */
#include <criterion/criterion.h>

#include <stdio.h>
#include <string.h>

#include "harness.h"
#include "upstream_support.h"

TestSuite(schema_vocab, .init = mz_setup, .fini = mz_teardown, .timeout = 120);

/* What Pydantic v2 writes for:
 *   class Status(str, Enum): draft, paid, shipped
 *   class Address(BaseModel): street: str; city: str;
 *                             zip: Optional[constr(pattern=r"^[0-9]{5}$")] = None
 *   class Item(BaseModel): sku: constr(min_length=1); qty: conint(gt=0); tags: list[str] = []
 *   class Order(BaseModel, extra="forbid"): customer: constr(max_length=40);
 *       status: Status = Status.draft; shipping: Optional[Address] = None;
 *       items: conlist(Item, min_length=1); note: Optional[str] = None */
static const char *const ORDER_SCHEMA =
    "{\"$defs\": {"
    "  \"Address\": {\"properties\": {"
    "      \"street\": {\"title\": \"Street\", \"type\": \"string\"},"
    "      \"city\": {\"title\": \"City\", \"type\": \"string\"},"
    "      \"zip\": {\"anyOf\": [{\"pattern\": \"^[0-9]{5}$\", \"type\": \"string\"}, {\"type\": \"null\"}],"
    "               \"default\": null, \"title\": \"Zip\"}},"
    "    \"required\": [\"street\", \"city\"], \"title\": \"Address\", \"type\": \"object\"},"
    "  \"Item\": {\"properties\": {"
    "      \"sku\": {\"minLength\": 1, \"title\": \"Sku\", \"type\": \"string\"},"
    "      \"qty\": {\"exclusiveMinimum\": 0, \"title\": \"Qty\", \"type\": \"integer\"},"
    "      \"tags\": {\"default\": [], \"items\": {\"type\": \"string\"}, \"title\": \"Tags\", \"type\": \"array\"}},"
    "    \"required\": [\"sku\", \"qty\"], \"title\": \"Item\", \"type\": \"object\"},"
    "  \"Status\": {\"enum\": [\"draft\", \"paid\", \"shipped\"], \"title\": \"Status\", \"type\": \"string\"}},"
    " \"additionalProperties\": false,"
    " \"properties\": {"
    "  \"customer\": {\"maxLength\": 40, \"title\": \"Customer\", \"type\": \"string\"},"
    "  \"status\": {\"$ref\": \"#/$defs/Status\", \"default\": \"draft\"},"
    "  \"shipping\": {\"anyOf\": [{\"$ref\": \"#/$defs/Address\"}, {\"type\": \"null\"}], \"default\": null},"
    "  \"items\": {\"items\": {\"$ref\": \"#/$defs/Item\"}, \"minItems\": 1, \"title\": \"Items\", \"type\": \"array\"},"
    "  \"note\": {\"anyOf\": [{\"type\": \"string\"}, {\"type\": \"null\"}], \"default\": null, \"title\": \"Note\"}},"
    " \"required\": [\"customer\", \"items\"], \"title\": \"Order\", \"type\": \"object\"}";

static mz_gw_t *start_with(const mz_upstream_t *u, const char *extra)
{
    json_t *cfg = mz_json("{\"upstreams\": {\"api\": {\"url\": \"%s\"}},"
                          " \"functions\": [{\"name\": \"create_order\", \"input_schema\": %s,"
                          "   \"upstream\": {\"service\": \"api\", \"method\": \"POST\", \"path\": \"/_test/echo/orders\"}},"
                          "  {\"name\": \"page_of\", \"input_schema\": {\"type\": \"object\", \"properties\": {"
                          "     \"x\": {\"anyOf\": [{\"type\": \"integer\"}, {\"type\": \"null\"}]}, \"y\": {\"type\": \"integer\"}}},"
                          "   \"upstream\": {\"service\": \"api\", \"path\": \"/_test/echo/page\", \"identity\": false}}],"
                          " \"contexts\": [{\"name\": \"page\", \"ttl\": 0, \"functions\": [\"page_of\"],"
                          "   \"params_schema\": {\"type\": \"object\", \"additionalProperties\": false,"
                          "     \"$defs\": {\"PageNo\": {\"type\": \"integer\", \"minimum\": 1}},"
                          "     \"properties\": {\"x\": {\"anyOf\": [{\"type\": \"integer\"}, {\"type\": \"null\"}]},"
                          "                    \"y\": {\"$ref\": \"#/$defs/PageNo\"}}}}]}",
                          u->url, ORDER_SCHEMA);
    if (extra != NULL)
        mz_json_merge(cfg, mz_json("%s", extra));
    return mz_gw_start(cfg);
}

Test(schema_vocab, pydantic_model_validates_and_fills_defaults)
{
    mz_upstream_t *u = mz_upstream_start();
    mz_gw_t *gw = start_with(u, NULL);

    /* Valid: the defaults of the model and of the nested Item ($ref inside
     * items) are filled in before the upstream sees the body. */
    mz_resp_t *r = mz_call(gw, "create_order", "{\"customer\": \"ada\", \"items\": [{\"sku\": \"A1\", \"qty\": 2}],"
                                               " \"shipping\": {\"street\": \"1 Main St\", \"city\": \"Oslo\"}}",
                           NULL);
    json_t *result = mz_expect_result(r);
    mz_expect_json(json_object_get(result, "body"),
                   "{\"customer\": \"ada\", \"status\": \"draft\", \"note\": null,"
                   " \"shipping\": {\"street\": \"1 Main St\", \"city\": \"Oslo\", \"zip\": null},"
                   " \"items\": [{\"sku\": \"A1\", \"qty\": 2, \"tags\": []}]}");

    /* Invalid in six places: every violation is listed, as Pydantic would,
     * the Optional[Address] one from its closest branch (the model). */
    r = mz_call(gw, "create_order",
                "{\"customer\": 5, \"status\": \"lost\", \"shipping\": {\"street\": \"x\"},"
                " \"items\": [{\"sku\": \"\", \"qty\": 0}], \"extra\": 1}",
                NULL);
    json_t *details = mz_expect_error(r, 422, "VALIDATION_FAILED");
    cr_assert_eq(json_array_size(details), 6, "six violations expected: %s", mz_dump(details));
    mz_expect_violation(details, "[\"args\", \"customer\"]", "type");
    mz_expect_violation(details, "[\"args\", \"status\"]", "enum");
    mz_expect_violation(details, "[\"args\", \"shipping\", \"city\"]", "anyOf");
    mz_expect_violation(details, "[\"args\", \"items\", 0, \"sku\"]", "minLength");
    mz_expect_violation(details, "[\"args\", \"items\", 0, \"qty\"]", "exclusiveMinimum");
    mz_expect_violation(details, "[\"args\", \"extra\"]", "additionalProperties");
    cr_assert(strstr(mz_dump(details), "\"field required\"") != NULL, "%s", mz_dump(details));

    /* An Optional[str] that is neither: the closest branch, typed anyOf. */
    r = mz_call(gw, "create_order", "{\"customer\": \"ada\", \"items\": [{\"sku\": \"A\", \"qty\": 1}], \"note\": 3}",
                NULL);
    details = mz_expect_error(r, 422, "VALIDATION_FAILED");
    cr_assert_eq(json_array_size(details), 1, "%s", mz_dump(details));
    mz_expect_violation(details, "[\"args\", \"note\"]", "anyOf");
    cr_assert(strstr(mz_dump(details), "expected string, got integer") != NULL, "%s", mz_dump(details));

    /* The published schema is the one declared. */
    r = mz_get(gw, "/api/mizan/schema/", NULL);
    mz_expect_status(r, 200);
    cr_assert(strstr(r->body, "#/$defs/Address") != NULL, "the schema endpoint must publish the model");
}

Test(schema_vocab, anyof_and_ref_params_are_coerced)
{
    mz_upstream_t *u = mz_upstream_start();
    mz_gw_t *gw = start_with(u, NULL);

    mz_resp_t *r = mz_get(gw, "/api/mizan/ctx/page/?x=", NULL);
    mz_expect_status(r, 200);
    mz_expect_json(json_object_get(r->json, "params"), "{\"x\": null}");

    r = mz_get(gw, "/api/mizan/ctx/page/?x=5&y=3", NULL);
    mz_expect_status(r, 200);
    mz_expect_json(json_object_get(r->json, "params"), "{\"x\": 5, \"y\": 3}");
    /* The function got integers, sent as query text. */
    mz_expect_json(json_object_get(json_object_get(json_object_get(r->json, "data"), "page_of"), "args"),
                   "{\"x\": [\"5\"], \"y\": [\"3\"]}");

    r = mz_get(gw, "/api/mizan/ctx/page/?x=five", NULL);
    json_t *details = mz_expect_error(r, 422, "VALIDATION_FAILED");
    mz_expect_violation(details, "[\"params\", \"x\"]", "anyOf");

    r = mz_get(gw, "/api/mizan/ctx/page/?y=0", NULL);
    details = mz_expect_error(r, 422, "VALIDATION_FAILED");
    mz_expect_violation(details, "[\"params\", \"y\"]", "minimum");
}

Test(schema_vocab, local_schema_directory_and_format_assertion)
{
    mz_upstream_t *u = mz_upstream_start();
    char *dir = mz_tmpdir();
    mz_write_file(dir, "common.json",
                  "{\"$defs\": {\"Email\": {\"type\": \"string\", \"format\": \"email\"},"
                  " \"When\": {\"type\": \"string\", \"format\": \"date-time\"}}}");
    json_t *cfg = mz_json("{\"schemas\": {\"dir\": \"%s\", \"format_assertion\": true},"
                          " \"upstreams\": {\"api\": {\"url\": \"%s\"}},"
                          " \"functions\": [{\"name\": \"signup\", \"input_schema\": {\"type\": \"object\","
                          "   \"properties\": {\"email\": {\"$ref\": \"common.json#/$defs/Email\"},"
                          "                  \"at\": {\"$ref\": \"common.json#/$defs/When\"}}, \"required\": [\"email\"]},"
                          "   \"upstream\": {\"service\": \"api\", \"method\": \"POST\", \"path\": \"/_test/echo/signup\"}}]}",
                          dir, u->url);
    mz_gw_t *gw = mz_gw_start(cfg);
    mz_resp_t *r = mz_call(gw, "signup", "{\"email\": \"ada@example.com\", \"at\": \"2026-12-04T10:00:00Z\"}", NULL);
    mz_expect_result(r);
    r = mz_call(gw, "signup", "{\"email\": \"ada@\", \"at\": \"2026-02-30T10:00:00Z\"}", NULL);
    json_t *details = mz_expect_error(r, 422, "VALIDATION_FAILED");
    cr_assert_eq(json_array_size(details), 2, "%s", mz_dump(details));
    mz_expect_violation(details, "[\"args\", \"email\"]", "format");
    mz_expect_violation(details, "[\"args\", \"at\"]", "format");
}

Test(schema_vocab, format_is_an_annotation_by_default)
{
    mz_upstream_t *u = mz_upstream_start();
    json_t *cfg = mz_json("{\"upstreams\": {\"api\": {\"url\": \"%s\"}},"
                          " \"functions\": [{\"name\": \"signup\", \"input_schema\": {\"type\": \"object\","
                          "   \"properties\": {\"email\": {\"type\": \"string\", \"format\": \"email\"}}},"
                          "   \"upstream\": {\"service\": \"api\", \"method\": \"POST\", \"path\": \"/_test/echo/signup\"}}]}",
                          u->url);
    mz_gw_t *gw = mz_gw_start(cfg);
    mz_expect_result(mz_call(gw, "signup", "{\"email\": \"not an address\"}", NULL));
}

Test(schema_vocab, remote_refs_and_cycles_refused_at_start)
{
    const char *cases[][2] = {
        {"{\"type\": \"object\", \"properties\": {\"a\": {\"$ref\": \"https://schemas.example.com/a.json\"}}}",
         "remote reference \"https://schemas.example.com/a.json\" refused"},
        {"{\"type\": \"object\", \"$defs\": {\"A\": {\"$ref\": \"#/$defs/B\"}, \"B\": {\"allOf\": [{\"$ref\": \"#/$defs/A\"}]}},"
         " \"properties\": {\"a\": {\"$ref\": \"#/$defs/A\"}}}",
         "$ref cycle"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *dir = mz_tmpdir();
        json_t *cfg = mz_config_defaults(dir);
        mz_json_merge(cfg, mz_json("{\"upstreams\": {\"api\": {\"url\": \"http://127.0.0.1:9\"}},"
                                   " \"functions\": [{\"name\": \"f\", \"input_schema\": %s,"
                                   "   \"upstream\": {\"service\": \"api\", \"path\": \"/x\"}}]}",
                                   cases[i][0]));
        char *path = mz_write_config(dir, "mizan.json", cfg);
        json_decref(cfg);
        const char *argv[] = {mz_env("MIZAN_TEST_BIN"), "--config", path, "--check-config", NULL};
        mz_run_t *run = mz_run(argv, dir, NULL, 20000);
        cr_assert_neq(run->status, 0, "case %zu: the config must be refused", i);
        cr_assert(strstr(run->err, cases[i][1]) != NULL || strstr(run->out, cases[i][1]) != NULL,
                  "case %zu: want \"%s\" in:\n%s%s", i, cases[i][1], run->out, run->err);
    }
}
