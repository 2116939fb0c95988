/*
 * fuzz_jsonread.c - differential fuzz target for the fast JSON reader
 * (jsonread.c) against jansson's json_loadb(JSON_DECODE_ANY).
 *
 * Properties checked beyond "no memory error":
 *   - whatever the fast reader reads, jansson reads too, to an equal value
 *     of the same type that renders to the same text (same key order);
 *   - mizan_json_read() accepts exactly what jansson accepts.
 */
#include <string.h>

#include "fuzz.h"
#include "jsonread.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_init();
    const char *text = (const char *)data;
    json_error_t err;
    json_t *ref = json_loadb(text, size, JSON_DECODE_ANY, &err);
    json_t *fast = mizan_json_read_fast(text, size);
    if (fast != NULL) {
        FUZZ_CHECK(ref != NULL, "jansson reads what the fast reader reads");
        FUZZ_CHECK(json_equal(fast, ref), "an equal value");
        FUZZ_CHECK(json_typeof(fast) == json_typeof(ref), "the same type");
        char *a = json_dumps(fast, JSON_COMPACT | JSON_ENCODE_ANY);
        char *b = json_dumps(ref, JSON_COMPACT | JSON_ENCODE_ANY);
        FUZZ_CHECK(a != NULL && b != NULL && strcmp(a, b) == 0, "the same text, keys in the same order");
        free(a);
        free(b);
    }
    json_t *got = mizan_json_read(text, size);
    FUZZ_CHECK((got == NULL) == (ref == NULL), "mizan_json_read accepts exactly what jansson accepts");
    json_decref(got);
    json_decref(fast);
    json_decref(ref);
    return 0;
}
