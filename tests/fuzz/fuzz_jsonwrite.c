/*
 * fuzz_jsonwrite.c - differential fuzz target for the fast JSON writer
 * (jsonwrite.c) against jansson's json_dumpb().
 *
 * The input is read by jansson (NUL bytes in strings allowed) into a value,
 * and also taken whole as the bytes of one string (any bytes, valid UTF-8
 * or not). Properties checked beyond "no memory error":
 *   - when the writer writes, jansson writes the same bytes, with and
 *     without JSON_ENCODE_ANY;
 *   - when jansson cannot write a value, the writer does not either;
 *   - a buffer one byte too short is reported as too short, never
 *     overrun (ASan) and never answered with a shorter text.
 */
#include <string.h>

#include "fuzz.h"
#include "jsonwrite.h"

#define CAP 65536

static char mine[CAP], theirs[CAP];

static void compare(const json_t *v, size_t flags)
{
    size_t len = 0;
    mizan_json_write_rc_t rc = mizan_json_write(v, flags, mine, sizeof(mine), &len);
    size_t n = json_dumpb(v, theirs, sizeof(theirs), flags);
    if (rc == MIZAN_JSONW_OK) {
        FUZZ_CHECK(n > 0, "jansson writes what the writer writes");
        FUZZ_CHECK(n == len && memcmp(mine, theirs, len) == 0, "the same bytes as jansson");
        if (len > 0) {
            size_t short_len = 0;
            char *tight = malloc(len - 1 + 1);
            mizan_json_write_rc_t r2 = mizan_json_write(v, flags, tight, len - 1, &short_len);
            FUZZ_CHECK(r2 == MIZAN_JSONW_NOROOM, "a buffer one byte short is too short");
            free(tight);
        }
    } else if (n == 0) {
        FUZZ_CHECK(rc == MIZAN_JSONW_DECLINED, "what jansson cannot write, the writer declines");
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_init();
    json_error_t err;
    json_t *v = json_loadb((const char *)data, size, JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);
    if (v != NULL) {
        compare(v, JSON_COMPACT | JSON_PRESERVE_ORDER);
        compare(v, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY);
        compare(v, JSON_COMPACT);
        json_decref(v);
    }
    json_t *arr = json_array();
    json_array_append_new(arr, json_stringn_nocheck((const char *)data, size));
    compare(arr, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_t *obj = json_object();
    json_object_setn_new_nocheck(obj, (const char *)data, size, json_true());
    compare(obj, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(obj);
    json_decref(arr);
    return 0;
}
