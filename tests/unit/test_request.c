/*
 * test_request.c - decoding what a client sends (src/request.c): the JSON
 * body (empty, nesting limit checked by the pre-scan, strings that hide
 * brackets, UTF-8, duplicate keys, the int64 range) and the query string
 * (percent-decoding, '+', UTF-8, refusals of malformed escapes, NUL bytes,
 * repeated and empty names).
 */
#include <criterion/criterion.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "request.h"

/* ---- JSON bodies ------------------------------------------------------- */

/* Parses text (its strlen) and asserts success; returns the value (new). */
static json_t *body_ok(const char *text, int max_depth)
{
    mizan_err_t err = {{0}};
    json_t *v = mizan_request_parse_json(text, strlen(text), max_depth, &err);
    cr_assert_not_null(v, "'%s' (depth %d) refused: %s", text, max_depth, err.msg);
    return v;
}

/* Parses len bytes and asserts refusal with exactly the message want. */
static void body_refused_n(const char *text, size_t len, int max_depth, const char *want)
{
    mizan_err_t err = {{0}};
    json_t *v = mizan_request_parse_json(text, len, max_depth, &err);
    if (v != NULL) {
        json_decref(v);
        cr_assert_fail("'%.*s' (depth %d) accepted", (int)len, text, max_depth);
    }
    cr_assert(strcmp(err.msg, want) == 0, "'%.*s': message '%s', expected '%s'", (int)len, text, err.msg, want);
}

static void body_refused(const char *text, int max_depth, const char *want)
{
    body_refused_n(text, strlen(text), max_depth, want);
}

/* Asserts that text parses and equals the JSON expected. */
static void body_equals(const char *text, const char *expected)
{
    json_t *v = body_ok(text, 64);
    json_t *want = json_loads(expected, JSON_DECODE_ANY, NULL);
    cr_assert_not_null(want, "test error: '%s' is not JSON", expected);
    cr_assert(json_equal(v, want), "'%s' parsed to something other than '%s'", text, expected);
    json_decref(v);
    json_decref(want);
}

Test(request_json, empty_body_is_refused)
{
    body_refused("", 64, "request body is empty; expected a JSON object");
    /* A zero length wins even when the buffer holds bytes. */
    body_refused_n("{}", 0, 64, "request body is empty; expected a JSON object");
}

Test(request_json, valid_documents)
{
    body_equals("{}", "{}");
    body_equals("{\"post_id\": 5, \"title\": \"Hello\"}", "{\"post_id\": 5, \"title\": \"Hello\"}");
    body_equals(" \n\t{\"a\": [1, 2.5, true, false, null, \"s\"]} \r\n",
                "{\"a\": [1, 2.5, true, false, null, \"s\"]}");
    body_equals("{\"caf\\u00e9\": \"\xe2\x82\xac\"}", "{\"caf\xc3\xa9\": \"\xe2\x82\xac\"}");
    /* Any value parses; the body's shape is the caller's check. */
    body_equals("5", "5");
    body_equals("[]", "[]");
    body_equals("\"x\"", "\"x\"");
}

Test(request_json, int64_range)
{
    json_t *v = body_ok("{\"a\": 9223372036854775807, \"b\": -9223372036854775808}", 64);
    cr_assert_eq(json_integer_value(json_object_get(v, "a")), INT64_MAX);
    cr_assert_eq(json_integer_value(json_object_get(v, "b")), INT64_MIN);
    json_decref(v);
    body_refused("{\"a\": 9223372036854775808}", 64, "integer outside the 64-bit range at line 1, column 25");
    body_refused("{\"a\": -9223372036854775809}", 64, "integer outside the 64-bit range at line 1, column 26");
}

Test(request_json, depth_exactly_at_and_over_the_limit)
{
    json_decref(body_ok("[[[]]]", 3));
    body_refused("[[[[]]]]", 3, "JSON nested deeper than 3 levels");
    json_decref(body_ok("{\"a\": {\"b\": [1]}}", 3));
    body_refused("{\"a\": {\"b\": [{}]}}", 3, "JSON nested deeper than 3 levels");
    json_decref(body_ok("{}", 1));
    body_refused("[{}]", 1, "JSON nested deeper than 1 levels");
    /* Siblings do not add up: depth is nesting, not a count. */
    json_decref(body_ok("[[], [], {}, [[]]]", 3));
    /* A scalar has depth 0. */
    json_decref(body_ok("1", 1));
}

Test(request_json, depth_limit_at_the_default_64)
{
    char deep[200];
    for (int n = 64; n <= 65; n++) {
        size_t k = 0;
        for (int i = 0; i < n; i++)
            deep[k++] = '[';
        for (int i = 0; i < n; i++)
            deep[k++] = ']';
        deep[k] = '\0';
        mizan_err_t err = {{0}};
        json_t *v = mizan_request_parse_json(deep, k, 64, &err);
        if (n == 64) {
            cr_assert_not_null(v, "64 levels refused: %s", err.msg);
            json_decref(v);
        } else {
            cr_assert_null(v, "65 levels accepted");
            cr_assert_str_eq(err.msg, "JSON nested deeper than 64 levels");
        }
    }
}

Test(request_json, depth_prescan_is_linear_and_refuses_before_parsing)
{
    /* A million '[' would make a recursive parser overflow the stack; the
     * pre-scan refuses it first. */
    size_t n = 1000000;
    char *buf = malloc(n);
    cr_assert_not_null(buf);
    memset(buf, '[', n);
    mizan_err_t err = {{0}};
    json_t *v = mizan_request_parse_json(buf, n, 64, &err);
    free(buf);
    cr_assert_null(v);
    cr_assert_str_eq(err.msg, "JSON nested deeper than 64 levels");
}

Test(request_json, brackets_inside_strings_do_not_count)
{
    json_decref(body_ok("[\"[[[[[{{{{{\"]", 1));
    json_decref(body_ok("{\"[[[[\": \"]]]]}}}}\"}", 1));
    /* An escaped quote does not end the string. */
    json_decref(body_ok("[\"\\\"[[[[[\"]", 1));
    json_decref(body_ok("{\"k\\\"[[[\": \"\\\"{{{{\\\"\"}", 1));
    /* An escaped backslash does: what follows it is outside the string. */
    json_decref(body_ok("[\"\\\\\", [[]]]", 3));
    body_refused("[\"\\\\\", [[]]]", 2, "JSON nested deeper than 2 levels");
    /* Brackets after a string are counted again. */
    body_refused("[\"x\", [\"y\", [\"z\"]]]", 2, "JSON nested deeper than 2 levels");
}

Test(request_json, invalid_utf8)
{
    /* A lone continuation byte, a truncated sequence, an overlong form. */
    static const char *bad[] = {"{\"a\": \"\xff\"}", "{\"a\": \"\xc3\"}", "{\"\xc0\xaf\": 1}"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        mizan_err_t err = {{0}};
        json_t *v = mizan_request_parse_json(bad[i], strlen(bad[i]), 64, &err);
        cr_assert_null(v, "invalid UTF-8 #%zu accepted", i);
        cr_assert(strncmp(err.msg, "invalid UTF-8 at line 1, column ", 32) == 0,
                  "invalid UTF-8 #%zu: message '%s' does not say invalid UTF-8", i, err.msg);
    }
}

Test(request_json, duplicate_keys)
{
    body_refused("{\"a\": 1, \"a\": 2}", 64, "duplicate object key at line 1, column 12");
    body_refused("{\"x\": {\"b\": 1, \"b\": 1}}", 64, "duplicate object key at line 1, column 18");
}

Test(request_json, malformed)
{
    body_refused("[1,]", 64, "malformed JSON at line 1, column 4");
    body_refused("{\"a\": 1", 64, "malformed JSON at line 1, column 7");
    body_refused("{} {}", 64, "malformed JSON at line 1, column 4");
    body_refused("{\n\"a\": tru}", 64, "malformed JSON at line 2, column 8");
    body_refused("   ", 64, "malformed JSON at line 1, column 3");
    /* A NUL byte in a member name cannot be represented. */
    body_refused("{\"a\\u0000b\": 1}", 64, "malformed JSON at line 1, column 11");
}

Test(request_json, nul_in_string_values_is_kept)
{
    json_t *v = body_ok("{\"a\": \"x\\u0000y\"}", 64);
    json_t *a = json_object_get(v, "a");
    cr_assert_eq(json_string_length(a), 3);
    cr_assert_eq(memcmp(json_string_value(a), "x\0y", 3), 0);
    json_decref(v);
}

Test(request_json, length_bounds_the_input)
{
    /* Bytes past len are not read: "{}" followed by garbage. */
    const char text[] = "{}garbage";
    mizan_err_t err = {{0}};
    json_t *v = mizan_request_parse_json(text, 2, 64, &err);
    cr_assert_not_null(v, "%s", err.msg);
    cr_assert(json_is_object(v));
    json_decref(v);
}

/* ---- query strings ------------------------------------------------------ */

/* Parses query and asserts it equals the JSON object expected. */
static void query_equals(const char *query, const char *expected)
{
    mizan_err_t err = {{0}};
    json_t *v = mizan_request_parse_query(query, &err);
    cr_assert_not_null(v, "'%s' refused: %s", query != NULL ? query : "(null)", err.msg);
    json_t *want = json_loads(expected, 0, NULL);
    cr_assert_not_null(want, "test error: '%s' is not JSON", expected);
    char *got = json_dumps(v, JSON_SORT_KEYS | JSON_COMPACT);
    cr_assert(json_equal(v, want), "'%s' decoded to %s, expected %s", query != NULL ? query : "(null)", got,
              expected);
    free(got);
    json_decref(v);
    json_decref(want);
}

static void query_refused(const char *query, const char *want)
{
    mizan_err_t err = {{0}};
    json_t *v = mizan_request_parse_query(query, &err);
    if (v != NULL) {
        char *got = json_dumps(v, JSON_COMPACT);
        json_decref(v);
        cr_assert_fail("'%s' accepted as %s", query, got);
    }
    cr_assert(strcmp(err.msg, want) == 0, "'%s': message '%s', expected '%s'", query, err.msg, want);
}

#define MALFORMED "malformed query string (bad percent-encoding, invalid UTF-8 or an empty name)"

Test(request_query, empty_and_null)
{
    query_equals(NULL, "{}");
    query_equals("", "{}");
    query_equals("&", "{}");
    query_equals("&&&", "{}");
}

Test(request_query, plain_pairs)
{
    query_equals("post_id=5", "{\"post_id\": \"5\"}");
    query_equals("a=1&b=two&c=3", "{\"a\": \"1\", \"b\": \"two\", \"c\": \"3\"}");
    /* Only the first '=' splits name from value. */
    query_equals("a=b=c", "{\"a\": \"b=c\"}");
}

Test(request_query, plus_is_space)
{
    query_equals("q=hello+world", "{\"q\": \"hello world\"}");
    query_equals("a+b=+", "{\"a b\": \" \"}");
    /* An encoded plus stays a plus. */
    query_equals("q=a%2Bb", "{\"q\": \"a+b\"}");
}

Test(request_query, percent_escapes)
{
    query_equals("q=%41%62%2a%2A", "{\"q\": \"Ab**\"}");
    query_equals("q=%25", "{\"q\": \"%\"}");
    query_equals("q=%26%3D", "{\"q\": \"&=\"}");
    /* Multi-byte UTF-8 in names and values. */
    query_equals("caf%C3%A9=%E2%82%AC", "{\"caf\xc3\xa9\": \"\xe2\x82\xac\"}");
    query_equals("e=%F0%9F%98%80", "{\"e\": \"\xf0\x9f\x98\x80\"}");
    /* Raw UTF-8 passes through. */
    query_equals("q=caf\xc3\xa9", "{\"q\": \"caf\xc3\xa9\"}");
}

Test(request_query, malformed_percent_escapes)
{
    query_refused("q=%", MALFORMED);
    query_refused("q=%4", MALFORMED);
    query_refused("q=%zz", MALFORMED);
    query_refused("q=%4g", MALFORMED);
    query_refused("q=%g4", MALFORMED);
    query_refused("%=1", MALFORMED);
    query_refused("a%2=1", MALFORMED);
    /* A truncated escape before the next pair is not completed by it. */
    query_refused("q=%4&1=x", MALFORMED);
}

Test(request_query, nul_is_refused)
{
    query_refused("q=%00", MALFORMED);
    query_refused("%00=1", MALFORMED);
    query_refused("a%00b=1", MALFORMED);
    query_refused("q=x%00", MALFORMED);
}

Test(request_query, invalid_utf8)
{
    query_refused("q=%FF", MALFORMED);
    query_refused("q=%C3", MALFORMED);
    query_refused("q=%C0%AF", MALFORMED);
    query_refused("q=\xff", MALFORMED);
    query_refused("%FF=1", "malformed query string (invalid UTF-8 in a name)");
    query_refused("\xc3=1", "malformed query string (invalid UTF-8 in a name)");
}

Test(request_query, repeated_names)
{
    query_refused("a=1&a=2", "query parameter \"a\" is repeated");
    query_refused("a=1&a=1", "query parameter \"a\" is repeated");
    query_refused("a&a", "query parameter \"a\" is repeated");
    /* Names are compared after decoding. */
    query_refused("a=1&%61=2", "query parameter \"a\" is repeated");
    query_refused("a+b=1&a%20b=2", "query parameter \"a b\" is repeated");
    /* Names differing in case are different. */
    query_equals("a=1&A=2", "{\"a\": \"1\", \"A\": \"2\"}");
}

Test(request_query, repeated_long_name_is_cut_in_the_message)
{
    char q[300];
    char name[101];
    memset(name, 'n', 100);
    name[100] = '\0';
    snprintf(q, sizeof(q), "%s=1&%s=2", name, name);
    char want[200];
    snprintf(want, sizeof(want), "query parameter \"%.64s\" is repeated", name);
    query_refused(q, want);
}

Test(request_query, empty_names_are_refused)
{
    query_refused("=1", MALFORMED);
    query_refused("=", MALFORMED);
    query_refused("a=1&=2", MALFORMED);
}

Test(request_query, empty_values)
{
    query_equals("a=", "{\"a\": \"\"}");
    query_equals("a", "{\"a\": \"\"}");
    query_equals("a&b=", "{\"a\": \"\", \"b\": \"\"}");
}

Test(request_query, empty_pairs_are_skipped)
{
    query_equals("a=1&&b=2", "{\"a\": \"1\", \"b\": \"2\"}");
    query_equals("&a=1&", "{\"a\": \"1\"}");
    query_equals("&&a&&", "{\"a\": \"\"}");
}

Test(request_query, values_are_strings)
{
    mizan_err_t err = {{0}};
    json_t *v = mizan_request_parse_query("n=5&t=true&z=null", &err);
    cr_assert_not_null(v, "%s", err.msg);
    cr_assert(json_is_string(json_object_get(v, "n")));
    cr_assert(json_is_string(json_object_get(v, "t")));
    cr_assert(json_is_string(json_object_get(v, "z")));
    cr_assert_str_eq(json_string_value(json_object_get(v, "z")), "null");
    json_decref(v);
}

/* ---- names (PROTOCOL section 4 grammar) --------------------------------- */

Test(request_name, grammar_and_whole_name)
{
    const char *ok[] = {"ping", "_x", "blog.add_post", "a1.b2_c3", "P", NULL};
    for (size_t i = 0; ok[i] != NULL; i++)
        cr_assert(mizan_request_name_valid(ok[i], strlen(ok[i])), "%s refused", ok[i]);
    const char *bad[] = {"", "1ping", ".ping", "pi-ng", "ping ", " ping", "ping\n", "p\xc3\xa9", NULL};
    for (size_t i = 0; bad[i] != NULL; i++)
        cr_assert(!mizan_request_name_valid(bad[i], strlen(bad[i])), "'%s' accepted", bad[i]);
    /* An embedded NUL: the whole length is checked, not the C string. */
    cr_assert(!mizan_request_name_valid("ping\0junk", 9));
    cr_assert(mizan_request_name_valid("ping\0junk", 4));
    cr_assert(!mizan_request_name_valid(NULL, 0));
}
