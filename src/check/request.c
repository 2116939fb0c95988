/*
 * request.c - body and query-string decoding (see request.h).
 */
#include "request.h"

#include "text.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* Depth of [ and { nesting outside strings; stops early past max. */
static bool depth_within(const char *buf, size_t len, int max_depth)
{
    int depth = 0;
    bool in_string = false;
    for (size_t i = 0; i < len; i++) {
        char c = buf[i];
        if (in_string) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_string = false;
        } else if (c == '"') {
            in_string = true;
        } else if (c == '[' || c == '{') {
            if (++depth > max_depth)
                return false;
        } else if (c == ']' || c == '}') {
            depth--;
        }
    }
    return true;
}

json_t *mizan_request_parse_json(const char *buf, size_t len, int max_depth, mizan_err_t *err)
{
    if (len == 0) {
        mizan_err_set(err, "request body is empty; expected a JSON object");
        return NULL;
    }
    if (!depth_within(buf, len, max_depth)) {
        mizan_err_set(err, "JSON nested deeper than %d levels", max_depth);
        return NULL;
    }
    json_error_t jerr;
    json_t *v = json_loadb(buf, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
    if (v == NULL) {
        const char *why = "malformed JSON";
        switch (json_error_code(&jerr)) {
        case json_error_numeric_overflow: why = "integer outside the 64-bit range"; break;
        case json_error_invalid_utf8: why = "invalid UTF-8"; break;
        case json_error_duplicate_key: why = "duplicate object key"; break;
        default: break;
        }
        mizan_err_set(err, "%s at line %d, column %d", why, jerr.line, jerr.column);
    }
    return v;
}

bool mizan_request_name_valid(const char *s, size_t len)
{
    if (s == NULL || len == 0)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        bool alpha = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_';
        if (!alpha && (i == 0 || !((c >= '0' && c <= '9') || c == '.')))
            return false;
    }
    return true;
}

/* Decodes src[0..n) into a new NUL-terminated string; NULL when malformed
 * (a bad or truncated %-escape, or an encoded NUL). */
static char *decode_component(const char *src, size_t n, size_t *outlen)
{
    char *out = malloc(n + 1);
    if (out == NULL)
        return NULL;
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
        char c = src[i];
        if (c == '+') {
            out[j++] = ' ';
        } else if (c == '%') {
            int hi = i + 1 < n ? mizan_hex_digit((unsigned char)src[i + 1]) : -1;
            int lo = i + 2 < n ? mizan_hex_digit((unsigned char)src[i + 2]) : -1;
            if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
                free(out);
                return NULL;
            }
            out[j++] = (char)(hi * 16 + lo);
            i += 2;
        } else {
            out[j++] = c;
        }
    }
    out[j] = '\0';
    *outlen = j;
    return out;
}

/* Adds one name=value pair (raw, still encoded) to obj. */
static int add_pair(json_t *obj, const char *pair, size_t n, mizan_err_t *err)
{
    const char *eq = memchr(pair, '=', n);
    size_t name_raw = eq != NULL ? (size_t)(eq - pair) : n;
    size_t klen = 0, vlen = 0;
    int rc = -1;
    char *key = decode_component(pair, name_raw, &klen);
    char *val = decode_component(eq != NULL ? eq + 1 : pair + n, eq != NULL ? n - name_raw - 1 : 0, &vlen);
    json_t *s = val != NULL ? json_stringn(val, vlen) : NULL;
    if (key == NULL || s == NULL || klen == 0 || strlen(key) != klen) {
        mizan_err_set(err, "malformed query string (bad percent-encoding, invalid UTF-8 or an empty name)");
        goto done;
    }
    if (json_object_get(obj, key) != NULL) {
        mizan_err_set(err, "query parameter \"%.64s\" is repeated", key);
        goto done;
    }
    if (json_object_set(obj, key, s) < 0) {
        mizan_err_set(err, "malformed query string (invalid UTF-8 in a name)");
        goto done;
    }
    rc = 0;
done:
    json_decref(s);
    free(key);
    free(val);
    return rc;
}

json_t *mizan_request_parse_query(const char *query, mizan_err_t *err)
{
    json_t *obj = json_object();
    if (obj == NULL || query == NULL)
        return obj;
    const char *p = query;
    for (;;) {
        const char *amp = strchr(p, '&');
        size_t n = amp != NULL ? (size_t)(amp - p) : strlen(p);
        if (n > 0 && add_pair(obj, p, n, err) < 0) {
            json_decref(obj);
            return NULL;
        }
        if (amp == NULL)
            return obj;
        p = amp + 1;
    }
}
