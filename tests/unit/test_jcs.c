/*
 * test_jcs.c - canonical JSON (src/jcs.c): member order (UTF-16 code
 * units), string escapes, integers, ECMAScript number text, the protocol's
 * search vector byte for byte, and the depth limit.
 */
#include <criterion/criterion.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "jcs.h"

/* Canonical text of v (stolen) or NULL; the text must match its length. */
static char *dump_steal(json_t *v, size_t *len)
{
    mizan_err_t err = {""};
    size_t n = 0;
    cr_assert_not_null(v, "test value could not be built");
    char *s = mizan_jcs_dump(v, &n, &err);
    json_decref(v);
    if (s != NULL)
        cr_assert_eq(strlen(s), n, "length %zu but strlen %zu", n, strlen(s));
    if (len != NULL)
        *len = n;
    return s;
}

/* Asserts that the canonical text of v (stolen) is exactly expect (n bytes). */
static void expect_bytes(json_t *v, const char *expect, size_t n)
{
    size_t len = 0;
    char *s = dump_steal(v, &len);
    cr_assert_not_null(s, "canonicalization failed");
    cr_assert_eq(len, n, "length %zu, expected %zu: [%s]", len, n, s);
    cr_assert(memcmp(s, expect, n) == 0, "got [%s], expected [%s]", s, expect);
    free(s);
}

static void expect_text(json_t *v, const char *expect)
{
    expect_bytes(v, expect, strlen(expect));
}

/* Asserts that text parses and canonicalizes to expect. */
static void expect_parsed(const char *text, const char *expect)
{
    json_error_t jerr;
    json_t *v = json_loads(text, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
    cr_assert_not_null(v, "test JSON does not parse: %s", jerr.text);
    expect_text(v, expect);
}

static void expect_number(uint64_t bits, const char *expect)
{
    double d;
    char out[40];
    memcpy(&d, &bits, sizeof(d));
    int n = mizan_jcs_number(d, out, sizeof(out));
    cr_assert_eq(n, (int)strlen(expect), "0x%016llx: got [%s], expected [%s]",
                 (unsigned long long)bits, n < 0 ? "(error)" : out, expect);
    cr_assert_str_eq(out, expect, "0x%016llx", (unsigned long long)bits);
    /* The same through a json real. */
    expect_text(json_real(d), expect);
}

Test(jcs, scalars)
{
    expect_text(json_true(), "true");
    expect_text(json_false(), "false");
    expect_text(json_null(), "null");
    expect_text(json_integer(0), "0");
    expect_text(json_integer(42), "42");
    expect_text(json_integer(-7), "-7");
    expect_text(json_string(""), "\"\"");
    expect_text(json_object(), "{}");
    expect_text(json_array(), "[]");
}

Test(jcs, integer_extremes_are_exact)
{
    expect_text(json_integer(INT64_MAX), "9223372036854775807");
    expect_text(json_integer(INT64_MIN), "-9223372036854775808");
    expect_text(json_integer((json_int_t)1 << 53), "9007199254740992");
    expect_text(json_integer(((json_int_t)1 << 53) + 1), "9007199254740993");
    expect_text(json_integer(-1), "-1");
}

Test(jcs, members_sorted_and_no_whitespace)
{
    expect_parsed("{ \"b\" : 1 , \"a\" : [ 3 , 2 , 1 ] , \"c\" : { \"z\" : null , \"y\" : true } }",
                  "{\"a\":[3,2,1],\"b\":1,\"c\":{\"y\":true,\"z\":null}}");
    /* Bytewise on ASCII: upper case before lower case, shorter prefix first. */
    expect_parsed("{\"ab\":1,\"a\":2,\"B\":3,\"_\":4,\"A\":5,\"1\":6}",
                  "{\"1\":6,\"A\":5,\"B\":3,\"_\":4,\"a\":2,\"ab\":1}");
}

Test(jcs, arrays_keep_order)
{
    expect_parsed("[3, \"b\", \"a\", [2, 1], {\"y\": 1, \"x\": 2}, false, null]",
                  "[3,\"b\",\"a\",[2,1],{\"x\":2,\"y\":1},false,null]");
}

Test(jcs, nested)
{
    expect_parsed("{\"outer\":{\"list\":[{\"k2\":\"v\",\"k1\":[[],{}]}],\"a\":-0}}",
                  "{\"outer\":{\"a\":0,\"list\":[{\"k1\":[[],{}],\"k2\":\"v\"}]}}");
}

/* The ordering example of RFC 8785 section 3.2.3. */
Test(jcs, rfc8785_sort_example)
{
    expect_parsed("{\"\\u20ac\":\"Euro Sign\",\"\\r\":\"Carriage Return\","
                  "\"\\ufb33\":\"Hebrew Letter Dalet With Dagesh\",\"1\":\"One\","
                  "\"\\ud83d\\ude00\":\"Emoji: Grinning Face\",\"\\u0080\":\"Control\","
                  "\"\\u00f6\":\"Latin Small Letter O With Diaeresis\"}",
                  "{\"\\r\":\"Carriage Return\",\"1\":\"One\",\"\xc2\x80\":\"Control\","
                  "\"\xc3\xb6\":\"Latin Small Letter O With Diaeresis\","
                  "\"\xe2\x82\xac\":\"Euro Sign\",\"\xf0\x9f\x98\x80\":\"Emoji: Grinning Face\","
                  "\"\xef\xac\xb3\":\"Hebrew Letter Dalet With Dagesh\"}");
}

/*
 * U+1F600 (UTF-16 D83D DE00) sorts before U+FFFD and U+E000 in UTF-16 order
 * although its UTF-8 bytes (F0 ...) are greater than theirs (EF ..., EE ...).
 */
Test(jcs, utf16_order_differs_from_bytes)
{
    json_t *o = json_object();
    json_object_set_new(o, "\xef\xbf\xbd", json_integer(1)); /* U+FFFD */
    json_object_set_new(o, "\xf0\x9f\x98\x80", json_integer(2)); /* U+1F600 */
    json_object_set_new(o, "\xee\x80\x80", json_integer(3)); /* U+E000 */
    json_object_set_new(o, "\xed\x9f\xbf", json_integer(4)); /* U+D7FF */
    expect_text(o, "{\"\xed\x9f\xbf\":4,\"\xf0\x9f\x98\x80\":2,\"\xee\x80\x80\":3,"
                   "\"\xef\xbf\xbd\":1}");

    /* Two supplementary characters with the same lead surrogate: the trail
     * surrogate decides (U+1F600 < U+1F601), then the longer name goes last. */
    o = json_object();
    json_object_set_new(o, "\xf0\x9f\x98\x81", json_integer(1));
    json_object_set_new(o, "\xf0\x9f\x98\x80x", json_integer(2));
    json_object_set_new(o, "\xf0\x9f\x98\x80", json_integer(3));
    expect_text(o, "{\"\xf0\x9f\x98\x80\":3,\"\xf0\x9f\x98\x80x\":2,\"\xf0\x9f\x98\x81\":1}");
}

Test(jcs, every_control_character_escaped)
{
    static const char *const expect[0x20] = {
        "\\u0000", "\\u0001", "\\u0002", "\\u0003", "\\u0004", "\\u0005", "\\u0006", "\\u0007",
        "\\b",     "\\t",     "\\n",     "\\u000b", "\\f",     "\\r",     "\\u000e", "\\u000f",
        "\\u0010", "\\u0011", "\\u0012", "\\u0013", "\\u0014", "\\u0015", "\\u0016", "\\u0017",
        "\\u0018", "\\u0019", "\\u001a", "\\u001b", "\\u001c", "\\u001d", "\\u001e", "\\u001f",
    };
    for (int c = 0; c < 0x20; c++) {
        char in[3] = {'a', (char)c, 'z'};
        char want[16];
        snprintf(want, sizeof(want), "\"a%sz\"", expect[c]);
        expect_text(json_stringn(in, sizeof(in)), want);
    }
}

Test(jcs, only_quote_backslash_and_controls_escaped)
{
    expect_text(json_string("say \"hi\" \\ back"), "\"say \\\"hi\\\" \\\\ back\"");
    /* Slash, DEL and non-ASCII stay raw. */
    expect_text(json_string("a/b\x7f"), "\"a/b\x7f\"");
    expect_text(json_string("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \xef\xbf\xbf"),
                "\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \xef\xbf\xbf\"");
    /* Escaped input comes out raw. */
    expect_parsed("\"\\u00e9\\/\\u007f\\ud83d\\ude00\"", "\"\xc3\xa9/\x7f\xf0\x9f\x98\x80\"");
    /* Member names are escaped the same way. */
    expect_parsed("{\"a\\nb\\\"\":1}", "{\"a\\nb\\\"\":1}");
}

/* PROTOCOL.md section 6, the search vector: the exact bytes hashed. */
Test(jcs, protocol_search_vector)
{
    json_t *p = json_pack("{s:s, s:n}", "q", "caf\xc3\xa9 \"x\"\n\x01", "lang");
    static const char expect[] = "{\"lang\":null,\"q\":\"caf\xc3\xa9 \\\"x\\\"\\n\\u0001\"}";
    expect_bytes(p, expect, sizeof(expect) - 1);
    /* The same params given as the JSON a client would send. */
    expect_parsed("{\"q\": \"caf\\u00e9 \\\"x\\\"\\n\\u0001\", \"lang\": null}", expect);
}

Test(jcs, nul_in_strings_and_names)
{
    json_t *o = json_object();
    json_object_setn_new(o, "k\0b", 3, json_stringn("v\0w", 3));
    json_object_setn_new(o, "k", 1, json_integer(1));
    static const char expect[] = "{\"k\":1,\"k\\u0000b\":\"v\\u0000w\"}";
    expect_bytes(o, expect, sizeof(expect) - 1);
}

Test(jcs, invalid_utf8_refused)
{
    mizan_err_t err = {""};
    json_t *s = json_stringn_nocheck("\xc3\x28", 2);
    cr_assert_null(mizan_jcs_dump(s, NULL, &err));
    cr_assert(strstr(err.msg, "UTF-8") != NULL, "err: %s", err.msg);
    json_decref(s);

    /* Encoded surrogate (ED A0 80) and overlong slash (C0 AF). */
    s = json_stringn_nocheck("\xed\xa0\x80", 3);
    cr_assert_null(mizan_jcs_dump(s, NULL, &err));
    json_decref(s);
    s = json_stringn_nocheck("\xc0\xaf", 2);
    cr_assert_null(mizan_jcs_dump(s, NULL, &err));
    json_decref(s);

    json_t *o = json_object();
    json_object_setn_new_nocheck(o, "\xff", 1, json_true());
    err.msg[0] = '\0';
    cr_assert_null(mizan_jcs_dump(o, NULL, &err));
    cr_assert(strstr(err.msg, "UTF-8") != NULL, "err: %s", err.msg);
    json_decref(o);
}

/* RFC 8785 appendix B, plus a power of two whose shortest digits are not
 * printf's correctly rounded ones (the rounding interval is lopsided). */
Test(jcs, numbers_as_ecmascript)
{
    expect_number(0x0000000000000000ull, "0");
    expect_number(0x8000000000000000ull, "0");
    expect_number(0x0000000000000001ull, "5e-324");
    expect_number(0x8000000000000001ull, "-5e-324");
    expect_number(0x7fefffffffffffffull, "1.7976931348623157e+308");
    expect_number(0xffefffffffffffffull, "-1.7976931348623157e+308");
    expect_number(0x4340000000000000ull, "9007199254740992");
    expect_number(0xc340000000000000ull, "-9007199254740992");
    expect_number(0x4430000000000000ull, "295147905179352830000");
    expect_number(0x44b52d02c7e14af5ull, "9.999999999999997e+22");
    expect_number(0x44b52d02c7e14af6ull, "1e+23");
    expect_number(0x44b52d02c7e14af7ull, "1.0000000000000001e+23");
    expect_number(0x444b1ae4d6e2ef4eull, "999999999999999700000");
    expect_number(0x444b1ae4d6e2ef4full, "999999999999999900000");
    expect_number(0x444b1ae4d6e2ef50ull, "1e+21");
    expect_number(0x3eb0c6f7a0b5ed8cull, "9.999999999999997e-7");
    expect_number(0x3eb0c6f7a0b5ed8dull, "0.000001");
    expect_number(0x41b3de4355555553ull, "333333333.3333332");
    expect_number(0x41b3de4355555554ull, "333333333.33333325");
    expect_number(0x41b3de4355555555ull, "333333333.3333333");
    expect_number(0x41b3de4355555556ull, "333333333.3333334");
    expect_number(0x41b3de4355555557ull, "333333333.33333343");
    expect_number(0xbecbf647612f3696ull, "-0.0000033333333333333333");
    expect_number(0x43143ff3c1cb0959ull, "1424953923781206.2");
    expect_number(0x0060000000000000ull, "7.120236347223045e-307");
}

Test(jcs, simple_reals)
{
    expect_text(json_real(1.0), "1");
    expect_text(json_real(-2.5), "-2.5");
    expect_text(json_real(0.1), "0.1");
    expect_text(json_real(1e21), "1e+21");
    expect_text(json_real(1e20), "100000000000000000000");
    expect_text(json_real(1e-6), "0.000001");
    expect_text(json_real(1e-7), "1e-7");
    expect_text(json_real(123e-20), "1.23e-18");
    expect_text(json_real(0.1 + 0.2), "0.30000000000000004");
}

Test(jcs, non_finite_refused)
{
    char out[40];
    cr_assert_eq(mizan_jcs_number(__builtin_nan(""), out, sizeof(out)), -1);
    cr_assert_eq(mizan_jcs_number(__builtin_inf(), out, sizeof(out)), -1);
    cr_assert_eq(mizan_jcs_number(-__builtin_inf(), out, sizeof(out)), -1);
    /* A short buffer is refused, not overrun. */
    cr_assert_eq(mizan_jcs_number(0.5, out, 3), -1);
    cr_assert_eq(mizan_jcs_number(0.5, out, 4), 3);
    cr_assert_str_eq(out, "0.5");
}

/* Builds depth levels of nested arrays around one integer: depth 1 is the
 * bare integer. */
static json_t *nest(int depth)
{
    json_t *v = json_integer(7);
    for (int i = 1; i < depth; i++) {
        json_t *a = json_array();
        cr_assert_not_null(a);
        json_array_append_new(a, v);
        v = a;
    }
    return v;
}

Test(jcs, depth_limit)
{
    mizan_err_t err = {""};
    size_t len = 0;
    char *s = dump_steal(nest(MIZAN_JCS_MAX_DEPTH), &len);
    cr_assert_not_null(s, "depth %d must be accepted", MIZAN_JCS_MAX_DEPTH);
    cr_assert_eq(len, 2 * (MIZAN_JCS_MAX_DEPTH - 1) + 1);
    free(s);

    json_t *deep = nest(MIZAN_JCS_MAX_DEPTH + 1);
    cr_assert_null(mizan_jcs_dump(deep, NULL, &err));
    cr_assert(strstr(err.msg, "deeper") != NULL, "err: %s", err.msg);
    json_decref(deep);

    /* Objects count the same way. */
    json_t *o = nest(MIZAN_JCS_MAX_DEPTH);
    json_t *top = json_pack("{s:o}", "k", o);
    cr_assert_null(mizan_jcs_dump(top, NULL, &err));
    json_decref(top);
}

Test(jcs, null_value_refused)
{
    mizan_err_t err = {""};
    cr_assert_null(mizan_jcs_dump(NULL, NULL, &err));
    cr_assert_neq(err.msg[0], '\0');
}

Test(jcs, does_not_modify_input)
{
    json_t *v = json_pack("{s:i, s:i, s:[i, i]}", "b", 1, "a", 2, "c", 3, 4);
    char *before = json_dumps(v, JSON_PRESERVE_ORDER | JSON_COMPACT);
    mizan_err_t err = {""};
    char *s = mizan_jcs_dump(v, NULL, &err);
    cr_assert_not_null(s);
    cr_assert_str_eq(s, "{\"a\":2,\"b\":1,\"c\":[3,4]}");
    char *after = json_dumps(v, JSON_PRESERVE_ORDER | JSON_COMPACT);
    cr_assert_str_eq(before, after);
    free(s);
    free(before);
    free(after);
    json_decref(v);
}
