/*
 * jsonwrite.c - compact JSON text from jansson values, as jansson writes
 * it (see jsonwrite.h).
 */
#include "jsonwrite.h"

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

/* Deeper values are left to jansson. */
#define DEPTH_MAX 64

typedef struct writer {
    char *p;
    char *end;
    size_t flags;
    int rc; /* MIZAN_JSONW_OK until something fails */
} writer_t;

static void put(writer_t *w, const char *s, size_t n)
{
    if (w->rc != MIZAN_JSONW_OK)
        return;
    if ((size_t)(w->end - w->p) < n) {
        w->rc = MIZAN_JSONW_NOROOM;
        return;
    }
    memcpy(w->p, s, n);
    w->p += n;
}

static void put_char(writer_t *w, char c)
{
    if (w->rc != MIZAN_JSONW_OK)
        return;
    if (w->p >= w->end) {
        w->rc = MIZAN_JSONW_NOROOM;
        return;
    }
    *w->p++ = c;
}

/* Length of the valid UTF-8 sequence at s (n bytes available), or 0 (jansson's rules: no
 * overlong forms, no surrogates, nothing above U+10FFFF). */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    size_t k;
    uint32_t cp;
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF) {
        k = 2;
        cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
        k = 3;
        cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        k = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if (n < k)
        return 0;
    for (size_t i = 1; i < k; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if ((k == 3 && cp < 0x800) || (k == 4 && cp < 0x10000) || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return k;
}

static void put_string(writer_t *w, const char *str, size_t len)
{
    static const char hex[] = "0123456789ABCDEF";
    const unsigned char *s = (const unsigned char *)str, *end = s + len;
    put_char(w, '"');
    while (s < end && w->rc == MIZAN_JSONW_OK) {
        const unsigned char *run = s;
        while (s < end && *s >= 0x20 && *s < 0x80 && *s != '"' && *s != '\\')
            s++;
        put(w, (const char *)run, (size_t)(s - run));
        if (s >= end)
            break;
        unsigned char c = *s;
        if (c >= 0x80) {
            size_t k = utf8_len(s, (size_t)(end - s));
            if (k == 0) {
                w->rc = MIZAN_JSONW_DECLINED; /* jansson refuses it: let it say so */
                return;
            }
            put(w, (const char *)s, k);
            s += k;
            continue;
        }
        char esc[6] = {'\\', 0, 0, 0, 0, 0};
        size_t n = 2;
        switch (c) {
        case '"':
            esc[1] = '"';
            break;
        case '\\':
            esc[1] = '\\';
            break;
        case '\b':
            esc[1] = 'b';
            break;
        case '\f':
            esc[1] = 'f';
            break;
        case '\n':
            esc[1] = 'n';
            break;
        case '\r':
            esc[1] = 'r';
            break;
        case '\t':
            esc[1] = 't';
            break;
        default:
            esc[1] = 'u';
            esc[2] = '0';
            esc[3] = '0';
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 15];
            n = 6;
            break;
        }
        put(w, esc, n);
        s++;
    }
    put_char(w, '"');
}

static void put_integer(writer_t *w, json_int_t v)
{
    char buf[24], *e = buf + sizeof(buf), *q = e;
    unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    do {
        *--q = (char)('0' + u % 10);
        u /= 10;
    } while (u != 0);
    if (v < 0)
        *--q = '-';
    put(w, q, (size_t)(e - q));
}

static void put_value(writer_t *w, const json_t *v, int depth)
{
    if (w->rc != MIZAN_JSONW_OK)
        return;
    if (depth > DEPTH_MAX) {
        w->rc = MIZAN_JSONW_DECLINED;
        return;
    }
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        put_char(w, '{');
        bool first = true;
        const char *key;
        size_t klen;
        json_t *item;
        json_object_keylen_foreach((json_t *)v, key, klen, item)
        {
            if (!first)
                put_char(w, ',');
            first = false;
            put_string(w, key, klen);
            put_char(w, ':');
            put_value(w, item, depth + 1);
            if (w->rc != MIZAN_JSONW_OK)
                return;
        }
        put_char(w, '}');
        return;
    }
    case JSON_ARRAY: {
        put_char(w, '[');
        size_t n = json_array_size(v);
        for (size_t i = 0; i < n && w->rc == MIZAN_JSONW_OK; i++) {
            if (i > 0)
                put_char(w, ',');
            put_value(w, json_array_get(v, i), depth + 1);
        }
        put_char(w, ']');
        return;
    }
    case JSON_STRING:
        put_string(w, json_string_value(v), json_string_length(v));
        return;
    case JSON_INTEGER:
        put_integer(w, json_integer_value(v));
        return;
    case JSON_REAL: {
        /* Real formatting is jansson's own (shortest round trip or %.17g, by build). */
        char buf[64];
        size_t n = json_dumpb(v, buf, sizeof(buf), JSON_COMPACT | JSON_ENCODE_ANY);
        if (n == 0 || n > sizeof(buf)) {
            w->rc = MIZAN_JSONW_DECLINED;
            return;
        }
        put(w, buf, n);
        return;
    }
    case JSON_TRUE:
        put(w, "true", 4);
        return;
    case JSON_FALSE:
        put(w, "false", 5);
        return;
    case JSON_NULL:
        put(w, "null", 4);
        return;
    default:
        w->rc = MIZAN_JSONW_DECLINED;
        return;
    }
}

mizan_json_write_rc_t mizan_json_write(const json_t *v, size_t flags, char *buf, size_t cap, size_t *len)
{
    *len = 0;
    /* Only the compact form: without JSON_COMPACT jansson puts a space after "," and ":". */
    if (v == NULL || !(flags & JSON_COMPACT) ||
        (flags & ~(size_t)(JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY)) != 0)
        return MIZAN_JSONW_DECLINED;
    if (!(flags & JSON_ENCODE_ANY) && !json_is_object(v) && !json_is_array(v))
        return MIZAN_JSONW_DECLINED;
    writer_t w = {buf, buf + cap, flags, MIZAN_JSONW_OK};
    put_value(&w, v, 0);
    if (w.rc == MIZAN_JSONW_OK)
        *len = (size_t)(w.p - buf);
    return (mizan_json_write_rc_t)w.rc;
}
