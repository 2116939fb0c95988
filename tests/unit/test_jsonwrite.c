/*
 * test_jsonwrite.c - the fast JSON writer (jsonwrite.c) and the answer
 * renderer built on it (jsontext.c): the same bytes as jansson's
 * json_dumpb() for every kind of value, declines where jansson decides,
 * and a buffer too short reported as such.
 */
#include <criterion/criterion.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "jsontext.h"
#include "jsonwrite.h"

#define FLAGS (JSON_COMPACT | JSON_PRESERVE_ORDER)

/* v (stolen) is written exactly as jansson writes it. */
static void expect_same(json_t *v, size_t flags)
{
    char mine[4096], theirs[4096];
    size_t len = 0;
    cr_assert_eq(mizan_json_write(v, flags, mine, sizeof(mine), &len), MIZAN_JSONW_OK);
    size_t n = json_dumpb(v, theirs, sizeof(theirs), flags);
    cr_assert(n > 0 && n == len && memcmp(mine, theirs, n) == 0, "wrote %.*s, jansson %.*s", (int)len, mine, (int)n,
              theirs);
    size_t short_len;
    cr_assert_eq(mizan_json_write(v, flags, mine, len - 1, &short_len), MIZAN_JSONW_NOROOM);
    size_t rlen;
    char *owned;
    const char *text = mizan_jsontext_render(v, flags, &rlen, &owned);
    cr_assert(text != NULL && rlen == n && memcmp(text, theirs, n) == 0);
    free(owned);
    json_decref(v);
}

Test(jsonwrite, the_same_bytes_as_jansson)
{
    expect_same(json_pack("{s:b, s:s, s:s, s:[i,i,i], s:{}, s:[], s:n}", "ok", 1, "server", "ceiling", "uri", "/a", "n", 0,
                          -7, 123456789, "empty", "list", "nothing"),
                 FLAGS);
    expect_same(json_pack("[I, I]", (json_int_t)INT64_MIN, (json_int_t)INT64_MAX), FLAGS);
    expect_same(json_pack("[f, f, f, f, f]", 0.1, 1e22, -1.5e-7, 100.0, 3.0), FLAGS);
    expect_same(json_pack("{s:s}", "esc", "q\" b\\ s/ \b\f\n\r\t \x01\x1f\x7f caf\xc3\xa9 \xe2\x80\xa8 \xf0\x9f\x98\x80"),
                 FLAGS);
    json_t *nul = json_array();
    json_array_append_new(nul, json_stringn("a\0b", 3));
    expect_same(nul, FLAGS);
    json_t *keys = json_object();
    json_object_set_new(keys, "z", json_integer(1));
    json_object_set_new(keys, "a", json_integer(2));
    json_object_set_new(keys, "k\"\n", json_integer(3));
    json_object_set_new(keys, "z", json_integer(4)); /* replaced in place */
    expect_same(keys, FLAGS);
    expect_same(json_string("top"), FLAGS | JSON_ENCODE_ANY);
    expect_same(json_integer(-12), JSON_COMPACT | JSON_ENCODE_ANY);
}

Test(jsonwrite, declines_what_jansson_decides)
{
    char buf[256];
    size_t len;
    json_t *s = json_string("scalar");
    cr_assert_eq(mizan_json_write(s, FLAGS, buf, sizeof(buf), &len), MIZAN_JSONW_DECLINED, "a scalar needs ENCODE_ANY");
    cr_assert_eq(mizan_json_write(s, FLAGS | JSON_SORT_KEYS, buf, sizeof(buf), &len), MIZAN_JSONW_DECLINED);
    cr_assert_eq(mizan_json_write(s, JSON_INDENT(2) | JSON_ENCODE_ANY, buf, sizeof(buf), &len), MIZAN_JSONW_DECLINED);
    json_decref(s);
    /* Without JSON_COMPACT jansson writes ", " and ": ": not the writer's form. */
    json_t *o = json_pack("{s:i, s:[i, i]}", "a", 1, "b", 2, 3);
    cr_assert_eq(mizan_json_write(o, JSON_PRESERVE_ORDER, buf, sizeof(buf), &len), MIZAN_JSONW_DECLINED);
    json_decref(o);
    /* Invalid UTF-8 (an overlong '/', a surrogate, past U+10FFFF): jansson refuses, so the renderer does. */
    const char *bad[] = {"\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\xe2\x82", "\x80"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        json_t *a = json_array();
        json_array_append_new(a, json_stringn_nocheck(bad[i], strlen(bad[i])));
        cr_assert_eq(mizan_json_write(a, FLAGS, buf, sizeof(buf), &len), MIZAN_JSONW_DECLINED, "case %zu", i);
        char *owned;
        cr_assert_null(mizan_jsontext_render(a, FLAGS, &len, &owned), "case %zu", i);
        json_decref(a);
    }
    /* Deeper than the writer goes: jansson writes it. */
    json_t *deep = json_array(), *cur = deep;
    for (int i = 0; i < 100; i++) {
        json_t *next = json_array();
        json_array_append_new(cur, next);
        cur = next;
    }
    cr_assert_eq(mizan_json_write(deep, FLAGS, buf, sizeof(buf), &len), MIZAN_JSONW_DECLINED);
    char *owned;
    const char *text = mizan_jsontext_render(deep, FLAGS, &len, &owned);
    cr_assert(text != NULL && len == 202);
    json_decref(deep);
}

Test(jsonwrite, long_texts_leave_the_scratch_buffer)
{
    json_t *a = json_array();
    for (int i = 0; i < 5000; i++)
        json_array_append_new(a, json_string("0123456789"));
    size_t len;
    char *owned;
    const char *text = mizan_jsontext_render(a, FLAGS, &len, &owned);
    char *ref = json_dumps(a, FLAGS);
    cr_assert(text != NULL && owned != NULL && len == strlen(ref) && memcmp(text, ref, len) == 0);
    free(owned);
    free(ref);
    json_decref(a);
}
