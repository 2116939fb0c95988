/*
 * params.c - query-string coercion of context params and the canonical
 * value of a mutation's argument (see params.h).
 */
#include "params.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool type_listed(const json_t *types, const char *t)
{
    if (json_is_string(types))
        return strcmp(json_string_value(types), t) == 0;
    size_t i;
    json_t *v;
    json_array_foreach(types, i, v)
    {
        if (json_is_string(v) && strcmp(json_string_value(v), t) == 0)
            return true;
    }
    return false;
}

json_t *mizan_params_coerce(const json_t *types, const char *s)
{
    if (type_listed(types, "integer")) {
        char *end;
        errno = 0;
        long long n = strtoll(s, &end, 10);
        if (s[0] != '\0' && *end == '\0' && errno == 0 && s[0] != '+' && s[0] != ' ' && s[0] != '\t')
            return json_integer(n);
    }
    if (type_listed(types, "boolean")) {
        if (strcmp(s, "true") == 0)
            return json_true();
        if (strcmp(s, "false") == 0)
            return json_false();
    }
    if (type_listed(types, "null") && (s[0] == '\0' || strcmp(s, "null") == 0))
        return json_null();
    return json_string(s);
}

/* The declared type name that v is an instance of, or NULL. */
static const char *type_of(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_INTEGER: return "integer";
    case JSON_STRING: return "string";
    case JSON_TRUE:
    case JSON_FALSE: return "boolean";
    case JSON_NULL: return "null";
    default: return NULL;
    }
}

json_t *mizan_params_canonical(const json_t *types, const json_t *v)
{
    json_t *as_is = NULL, *as_text = NULL, *out = NULL;
    char buf[32];
    const char *text = NULL;

    if (types == NULL || v == NULL)
        return NULL;
    if (json_is_real(v)) {
        /* Integer-valued and within int64: the integer it equals. 2^63 is
         * exactly representable as a double, so the bounds are exact. */
        double d = json_real_value(v);
        if (!isfinite(d) || d != floor(d) || d < -9223372036854775808.0 || d >= 9223372036854775808.0)
            return NULL;
        as_is = json_integer((json_int_t)d);
    } else if (type_of(v) != NULL) {
        as_is = json_deep_copy(v);
    } else {
        return NULL; /* arrays and objects name no bundle */
    }
    if (as_is == NULL)
        return NULL;

    /* The query-string text of the value, coerced like a query string. */
    switch (json_typeof(as_is)) {
    case JSON_INTEGER:
        snprintf(buf, sizeof(buf), "%lld", (long long)json_integer_value(as_is));
        text = buf;
        break;
    case JSON_STRING: text = json_string_value(as_is); break;
    case JSON_TRUE: text = "true"; break;
    case JSON_FALSE: text = "false"; break;
    default: text = NULL; break; /* null is only ever itself */
    }
    as_text = text != NULL ? mizan_params_coerce(types, text) : NULL;

    bool fits_as_is = type_listed(types, type_of(as_is));
    bool fits_as_text = as_text != NULL && type_listed(types, type_of(as_text));
    if (fits_as_is && fits_as_text) {
        if (json_equal(as_is, as_text))
            out = json_incref(as_is);
        /* else: two readings, two bundles: no single canonical value */
    } else if (fits_as_is) {
        out = json_incref(as_is);
    } else if (fits_as_text) {
        out = json_incref(as_text);
    }
    json_decref(as_is);
    json_decref(as_text);
    return out;
}
