/*
 * jsonread.c - a fast JSON reader into jansson values (see jsonread.h): a
 * recursive descent over the text that declines, rather than refuses,
 * whatever it does not handle, so that jansson has the last word.
 */
#include "jsonread.h"

#include "text.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Deeper documents are left to jansson (which allows 2048 levels). */
#define DEPTH_MAX 64

typedef struct reader {
    const char *p;
    const char *end;
} reader_t;

static void skip_ws(reader_t *r)
{
    while (r->p < r->end && (*r->p == ' ' || *r->p == '\n' || *r->p == '\r' || *r->p == '\t'))
        r->p++;
}

/*
 * Reads the string at r->p (its opening quote). *s and *n receive its
 * decoded bytes: a pointer into the text when it holds no escape, else a
 * new buffer also stored in *owned (to free). -1 to decline.
 */
static int read_string(reader_t *r, const char **s, size_t *n, char **owned)
{
    const char *q = r->p + 1;
    *owned = NULL;
    while (q < r->end) {
        unsigned char c = (unsigned char)*q;
        if (c == '"') {
            *s = r->p + 1;
            *n = (size_t)(q - (r->p + 1));
            r->p = q + 1;
            return 0;
        }
        if (c == '\\')
            break;
        if (c < 0x20 || c >= 0x80)
            return -1;
        q++;
    }
    if (q >= r->end)
        return -1;
    /* Escapes: decode into a buffer no longer than the rest of the text. */
    size_t plain = (size_t)(q - (r->p + 1));
    char *out = malloc((size_t)(r->end - r->p));
    if (out == NULL)
        return -1;
    memcpy(out, r->p + 1, plain);
    size_t o = plain;
    while (q < r->end) {
        unsigned char c = (unsigned char)*q;
        if (c == '"') {
            *s = out;
            *n = o;
            *owned = out;
            r->p = q + 1;
            return 0;
        }
        if (c < 0x20 || c >= 0x80)
            break;
        if (c != '\\') {
            out[o++] = (char)c;
            q++;
            continue;
        }
        if (q + 1 >= r->end)
            break;
        char e = q[1];
        q += 2;
        switch (e) {
        case '"':
        case '\\':
        case '/':
            out[o++] = e;
            continue;
        case 'b':
            out[o++] = '\b';
            continue;
        case 'f':
            out[o++] = '\f';
            continue;
        case 'n':
            out[o++] = '\n';
            continue;
        case 'r':
            out[o++] = '\r';
            continue;
        case 't':
            out[o++] = '\t';
            continue;
        case 'u':
            break;
        default:
            goto decline;
        }
        if (r->end - q < 4)
            break;
        int cp = 0;
        for (int i = 0; i < 4; i++) {
            int h = mizan_hex_digit((unsigned char)q[i]);
            if (h < 0)
                goto decline;
            cp = cp * 16 + h;
        }
        q += 4;
        /* NUL and surrogates (pairs or not) are jansson's to judge. */
        if (cp == 0 || (cp >= 0xD800 && cp <= 0xDFFF))
            break;
        /* Six text bytes became at most three: the buffer is large enough. */
        if (cp < 0x80) {
            out[o++] = (char)cp;
        } else if (cp < 0x800) {
            out[o++] = (char)(0xC0 | (cp >> 6));
            out[o++] = (char)(0x80 | (cp & 0x3F));
        } else {
            out[o++] = (char)(0xE0 | (cp >> 12));
            out[o++] = (char)(0x80 | ((cp >> 6) & 0x3F));
            out[o++] = (char)(0x80 | (cp & 0x3F));
        }
    }
decline:
    free(out);
    return -1;
}

static json_t *read_number(reader_t *r)
{
    const char *s = r->p, *q = s;
    if (q < r->end && *q == '-')
        q++;
    const char *digits = q;
    if (q < r->end && *q == '0') {
        q++;
    } else {
        while (q < r->end && *q >= '0' && *q <= '9')
            q++;
    }
    size_t ndig = (size_t)(q - digits);
    if (ndig == 0)
        return NULL;
    bool real = false;
    if (q < r->end && *q == '.') {
        real = true;
        q++;
        const char *f = q;
        while (q < r->end && *q >= '0' && *q <= '9')
            q++;
        if (q == f)
            return NULL;
    }
    if (q < r->end && (*q == 'e' || *q == 'E')) {
        real = true;
        q++;
        if (q < r->end && (*q == '+' || *q == '-'))
            q++;
        const char *x = q;
        while (q < r->end && *q >= '0' && *q <= '9')
            q++;
        if (q == x)
            return NULL;
    }
    /* A digit right after "0" (a leading zero) is not JSON: jansson says so. */
    if (q < r->end && *q >= '0' && *q <= '9')
        return NULL;
    if (!real) {
        if (ndig > 18)
            return NULL;
        long long v = 0;
        for (const char *d = digits; d < q; d++)
            v = v * 10 + (*d - '0');
        r->p = q;
        return json_integer(s[0] == '-' ? -v : v);
    }
    char buf[64];
    size_t n = (size_t)(q - s);
    if (n >= sizeof(buf))
        return NULL;
    memcpy(buf, s, n);
    buf[n] = '\0';
    errno = 0;
    char *end = NULL;
    double d = strtod(buf, &end);
    if (errno != 0 || end != buf + n)
        return NULL;
    r->p = q;
    return json_real(d);
}

static bool literal(reader_t *r, const char *word, size_t n)
{
    if ((size_t)(r->end - r->p) < n || memcmp(r->p, word, n) != 0)
        return false;
    r->p += n;
    return true;
}

static json_t *read_value(reader_t *r, int depth);

static json_t *read_object(reader_t *r, int depth)
{
    json_t *obj = json_object();
    if (obj == NULL)
        return NULL;
    r->p++;
    skip_ws(r);
    if (r->p < r->end && *r->p == '}') {
        r->p++;
        return obj;
    }
    for (;;) {
        if (r->p >= r->end || *r->p != '"')
            goto decline;
        const char *key;
        size_t klen;
        char *owned;
        if (read_string(r, &key, &klen, &owned) < 0)
            goto decline;
        skip_ws(r);
        json_t *v = NULL;
        if (r->p < r->end && *r->p == ':') {
            r->p++;
            v = read_value(r, depth + 1);
        }
        int rc = v != NULL ? json_object_setn_new_nocheck(obj, key, klen, v) : -1;
        free(owned);
        if (rc < 0)
            goto decline;
        skip_ws(r);
        if (r->p >= r->end)
            goto decline;
        if (*r->p == '}') {
            r->p++;
            return obj;
        }
        if (*r->p != ',')
            goto decline;
        r->p++;
        skip_ws(r);
    }
decline:
    json_decref(obj);
    return NULL;
}

static json_t *read_array(reader_t *r, int depth)
{
    json_t *arr = json_array();
    if (arr == NULL)
        return NULL;
    r->p++;
    skip_ws(r);
    if (r->p < r->end && *r->p == ']') {
        r->p++;
        return arr;
    }
    for (;;) {
        json_t *v = read_value(r, depth + 1);
        if (v == NULL || json_array_append_new(arr, v) < 0)
            goto decline;
        skip_ws(r);
        if (r->p >= r->end)
            goto decline;
        if (*r->p == ']') {
            r->p++;
            return arr;
        }
        if (*r->p != ',')
            goto decline;
        r->p++;
    }
decline:
    json_decref(arr);
    return NULL;
}

static json_t *read_value(reader_t *r, int depth)
{
    if (depth > DEPTH_MAX)
        return NULL;
    skip_ws(r);
    if (r->p >= r->end)
        return NULL;
    switch (*r->p) {
    case '{':
        return read_object(r, depth);
    case '[':
        return read_array(r, depth);
    case '"': {
        const char *s;
        size_t n;
        char *owned;
        if (read_string(r, &s, &n, &owned) < 0)
            return NULL;
        json_t *v = json_stringn_nocheck(s, n);
        free(owned);
        return v;
    }
    case 't':
        return literal(r, "true", 4) ? json_true() : NULL;
    case 'f':
        return literal(r, "false", 5) ? json_false() : NULL;
    case 'n':
        return literal(r, "null", 4) ? json_null() : NULL;
    default:
        return read_number(r);
    }
}

json_t *mizan_json_read_fast(const char *text, size_t len)
{
    reader_t r = {text, text + len};
    json_t *v = read_value(&r, 0);
    if (v == NULL)
        return NULL;
    skip_ws(&r);
    if (r.p != r.end) {
        json_decref(v);
        return NULL;
    }
    return v;
}

json_t *mizan_json_read(const char *text, size_t len)
{
    json_t *v = mizan_json_read_fast(text, len);
    if (v != NULL)
        return v;
    json_error_t err;
    return json_loadb(text, len, JSON_DECODE_ANY, &err);
}
