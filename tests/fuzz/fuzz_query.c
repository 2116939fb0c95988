/*
 * fuzz_query.c - fuzz target for mizan_request_parse_query() (request.c),
 * the decoder of every context's and event stream's query string.
 *
 * The input, cut at its first NUL (a query string is a C string), is the
 * raw query. Properties checked beyond "no memory error":
 *   - a refusal always carries a reason;
 *   - an accepted query is an object of string values whose names are
 *     non-empty and hold no NUL, and whose values hold no NUL (an encoded
 *     NUL is refused);
 *   - it has no more members than the query has '&'-separated pieces;
 *   - round trip: percent-encoding every member again (every byte outside
 *     the unreserved set as %XX) and decoding that gives an equal object.
 */
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "fuzz.h"
#include "request.h"

static bool unreserved(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_' || c == '~';
}

/* Appends the percent-encoding of s[0..n) at *p. */
static void encode_into(char **p, const char *s, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (unreserved(c)) {
            *(*p)++ = (char)c;
        } else {
            *(*p)++ = '%';
            *(*p)++ = hex[c >> 4];
            *(*p)++ = hex[c & 15];
        }
    }
}

/* The query string of obj (borrowed) as a new string; NULL on OOM. */
static char *encode_query(const json_t *obj)
{
    size_t need = 1;
    const char *key;
    json_t *value;
    json_object_foreach((json_t *)obj, key, value)
        need += 3 * strlen(key) + 3 * json_string_length(value) + 2;
    char *out = malloc(need);
    if (out == NULL)
        return NULL;
    char *p = out;
    json_object_foreach((json_t *)obj, key, value)
    {
        if (p != out)
            *p++ = '&';
        encode_into(&p, key, strlen(key));
        *p++ = '=';
        encode_into(&p, json_string_value(value), json_string_length(value));
    }
    *p = '\0';
    return out;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_init();
    char *query = malloc(size + 1);
    if (query == NULL)
        return 0;
    memcpy(query, data, size);
    query[size] = '\0';

    mizan_err_t err = {{0}};
    json_t *obj = mizan_request_parse_query(query, &err);
    json_t *again = NULL;
    char *encoded = NULL;
    if (obj == NULL) {
        FUZZ_CHECK(err.msg[0] != '\0', "a refused query string has a reason");
        goto done;
    }
    FUZZ_CHECK(json_is_object(obj), "an accepted query string decodes to an object");

    size_t pieces = 1;
    for (const char *p = query; *p != '\0'; p++)
        pieces += *p == '&';
    FUZZ_CHECK(json_object_size(obj) <= pieces, "no more members than '&'-separated pieces");

    const char *key;
    json_t *value;
    json_object_foreach(obj, key, value)
    {
        FUZZ_CHECK(key[0] != '\0', "member names are not empty");
        FUZZ_CHECK(json_is_string(value), "member values are strings");
        FUZZ_CHECK(strlen(json_string_value(value)) == json_string_length(value), "values hold no NUL byte");
    }

    encoded = encode_query(obj);
    if (encoded == NULL)
        goto done;
    mizan_err_t err2 = {{0}};
    again = mizan_request_parse_query(encoded, &err2);
    FUZZ_CHECK(again != NULL, "a re-encoded accepted query is accepted");
    FUZZ_CHECK(json_equal(obj, again), "decoding the re-encoded query gives the same members");

done:
    json_decref(again);
    json_decref(obj);
    free(encoded);
    free(query);
    return 0;
}
