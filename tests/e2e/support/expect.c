/*
 * expect.c - protocol assertions shared by the e2e tests: status codes,
 * the headers every response carries (PROTOCOL.md §1), the exact error
 * envelope (§3), call results and mutation invalidation lists (§2), and
 * VALIDATION_FAILED violation lists. Each failure message names the test's
 * file and line and shows the whole response.
 */
#include "harness.h"
#include "internal.h"

#include <criterion/criterion.h>

#include <string.h>
#include <strings.h>

void mz_expect_status_at(const char *file, int line, const mz_resp_t *r, int status)
{
    cr_assert(r != NULL, "%s:%d: no response", file, line);
    if (r->status != status)
        cr_assert_fail("%s:%d: expected HTTP %d, got:\n%s", file, line, status, mz_describe(r));
}

/* True when the media type of a Content-Type value is application/json. */
static bool is_json_media_type(const char *v)
{
    size_t n = strcspn(v, ";");
    while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t'))
        n--;
    return n == strlen("application/json") && strncasecmp(v, "application/json", n) == 0;
}

void mz_expect_std_headers_at(const char *file, int line, const mz_resp_t *r)
{
    cr_assert(r != NULL, "%s:%d: no response", file, line);
    const char *cc = mz_header(r, "Cache-Control");
    if (cc == NULL || strcasecmp(cc, "no-store") != 0 || mz_header_count(r, "Cache-Control") != 1)
        cr_assert_fail("%s:%d: expected exactly one Cache-Control: no-store, got:\n%s", file, line,
                       mz_describe(r));
    const char *ct = mz_header(r, "Content-Type");
    if (ct == NULL || !is_json_media_type(ct) || mz_header_count(r, "Content-Type") != 1)
        cr_assert_fail("%s:%d: expected Content-Type: application/json, got:\n%s", file, line,
                       mz_describe(r));
    const char *rid = mz_header(r, "X-Request-Id");
    if (!mz_request_id_sane(rid) || mz_header_count(r, "X-Request-Id") != 1)
        cr_assert_fail("%s:%d: expected one X-Request-Id of 1..128 [A-Za-z0-9._-], got:\n%s",
                       file, line, mz_describe(r));
}

json_t *mz_expect_error_at(const char *file, int line, const mz_resp_t *r, int status,
                           const char *code)
{
    mz_expect_status_at(file, line, r, status);
    mz_expect_std_headers_at(file, line, r);
    json_t *body = r->json;
    json_t *error = json_object_get(body, "error");
    if (!json_is_object(body) || json_object_size(body) != 1 || !json_is_object(error))
        cr_assert_fail("%s:%d: expected a body of exactly {\"error\": {...}}, got:\n%s", file,
                       line, mz_describe(r));
    json_t *jcode = json_object_get(error, "code");
    json_t *message = json_object_get(error, "message");
    json_t *details = json_object_get(error, "details");
    if (json_object_size(error) != 3 || !json_is_string(jcode) || !json_is_string(message) ||
        details == NULL)
        cr_assert_fail("%s:%d: expected \"error\" to have exactly code (string), message "
                       "(string) and details, got:\n%s",
                       file, line, mz_describe(r));
    if (strcmp(json_string_value(jcode), code) != 0)
        cr_assert_fail("%s:%d: expected error code %s, got:\n%s", file, line, code,
                       mz_describe(r));
    if (json_string_length(message) == 0)
        cr_assert_fail("%s:%d: expected a non-empty error message, got:\n%s", file, line,
                       mz_describe(r));
    return details;
}

json_t *mz_expect_result_at(const char *file, int line, const mz_resp_t *r)
{
    mz_expect_status_at(file, line, r, 200);
    mz_expect_std_headers_at(file, line, r);
    json_t *result = json_object_get(r->json, "result");
    if (!json_is_object(r->json) || json_object_size(r->json) != 1 || result == NULL)
        cr_assert_fail("%s:%d: expected a body of exactly {\"result\": ...} (a query has no "
                       "\"invalidate\"), got:\n%s",
                       file, line, mz_describe(r));
    return result;
}

json_t *mz_expect_mutation_at(const char *file, int line, const mz_resp_t *r)
{
    mz_expect_status_at(file, line, r, 200);
    mz_expect_std_headers_at(file, line, r);
    json_t *result = json_object_get(r->json, "result");
    json_t *inv = json_object_get(r->json, "invalidate");
    if (!json_is_object(r->json) || json_object_size(r->json) != 2 || result == NULL ||
        !json_is_array(inv))
        cr_assert_fail("%s:%d: expected a body of exactly {\"result\": ..., \"invalidate\": "
                       "[...]}, got:\n%s",
                       file, line, mz_describe(r));
    size_t i;
    json_t *t;
    json_array_foreach(inv, i, t) {
        json_t *params = json_object_get(t, "params");
        bool ok = json_is_object(t) && json_is_string(json_object_get(t, "context")) &&
                  json_object_size(t) == (params ? 2u : 1u) && (!params || json_is_object(params));
        if (!ok)
            cr_assert_fail("%s:%d: invalidate[%zu] is not {\"context\": str[, \"params\": "
                           "{...}]}:\n%s",
                           file, line, i, mz_describe(r));
    }
    return result;
}

void mz_expect_json_at(const char *file, int line, const json_t *actual, const char *expected)
{
    json_error_t e;
    json_t *want = json_loads(expected, JSON_DECODE_ANY, &e);
    cr_assert(want != NULL, "%s:%d: test bug: bad expected JSON %s (%s)", file, line, expected,
              e.text);
    mz_keep(want);
    if (actual == NULL || !json_equal((json_t *)actual, want))
        cr_assert_fail("%s:%d: JSON mismatch\n  expected: %s\n  actual:   %s", file, line,
                       mz_dump(want), mz_dump(actual));
}

void mz_expect_violation_at(const char *file, int line, const json_t *details,
                            const char *loc_json, const char *type)
{
    if (!json_is_array(details) || json_array_size(details) == 0)
        cr_assert_fail("%s:%d: expected a non-empty list of violations, got %s", file, line,
                       mz_dump(details));
    json_error_t e;
    json_t *loc = json_loads(loc_json, 0, &e);
    cr_assert(json_is_array(loc), "%s:%d: test bug: bad loc %s", file, line, loc_json);
    mz_keep(loc);
    bool found = false;
    size_t i;
    json_t *v;
    json_array_foreach((json_t *)details, i, v) {
        json_t *vloc = json_object_get(v, "loc");
        json_t *msg = json_object_get(v, "msg");
        json_t *vtype = json_object_get(v, "type");
        if (!json_is_object(v) || json_object_size(v) != 3 || !json_is_array(vloc) ||
            !json_is_string(msg) || json_string_length(msg) == 0 || !json_is_string(vtype))
            cr_assert_fail("%s:%d: violation %zu is not {loc: [...], msg: non-empty string, "
                           "type: string}: %s",
                           file, line, i, mz_dump(details));
        if (json_equal(vloc, loc) &&
            (type == NULL || strcmp(json_string_value(vtype), type) == 0))
            found = true;
    }
    if (!found)
        cr_assert_fail("%s:%d: no violation with loc %s%s%s in %s", file, line, loc_json,
                       type ? " and type " : "", type ? type : "", mz_dump(details));
}
