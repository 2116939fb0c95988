/*
 * jcs.c - canonical JSON (RFC 8785) as PROTOCOL.md section 6 uses it.
 *
 * The output feeds HMACs that name cache entries, so it must be byte-exact
 * and the same on every gateway: no whitespace, members sorted, minimal
 * string escaping, ECMAScript number text. Two deliberate choices:
 *
 *  - Member order. RFC 8785 sorts names by their UTF-16 code units, not by
 *    their UTF-8 bytes. The two orders agree except when one name has a
 *    supplementary character (U+10000 and up, a surrogate pair in UTF-16,
 *    0xD800-0xDFFF) where the other has a character in U+E000-U+FFFF: bytes
 *    (and code points) put the supplementary character last, UTF-16 puts it
 *    first. We implement the UTF-16 order, so the text matches any RFC 8785
 *    library; for the ASCII names params actually have it makes no
 *    difference.
 *
 *  - Integers. RFC 8785 treats every number as an IEEE double, so it would
 *    print 2^63 as 9223372036854776000. Params are 64-bit integers and the
 *    protocol says "integers in decimal", so a json integer is printed with
 *    all its digits. Below 2^53 in magnitude the two agree.
 *
 * Everything here is reentrant: no state outside the call.
 */
#include "jcs.h"

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A growable output buffer; data is NUL-terminated whenever len > 0. */
struct buf {
    char *data; /* malloc'd bytes, or NULL before the first append */
    size_t len; /* bytes used, without the NUL */
    size_t cap; /* bytes allocated */
};

/* One member of an object being sorted: borrowed pointers into the object. */
struct member {
    const char *key; /* member name, not necessarily NUL-free */
    size_t key_len;  /* its length in bytes */
    json_t *value;   /* borrowed */
};

static int emit(const json_t *v, int depth, struct buf *b, mizan_err_t *err);

/* ------------------------------------------------------------------------ */
/* Output buffer                                                            */
/* ------------------------------------------------------------------------ */

static int buf_append(struct buf *b, const char *p, size_t n, mizan_err_t *err)
{
    if (n == 0)
        return 0;
    if (n > SIZE_MAX - b->len - 1)
        return mizan_err_set(err, "canonical JSON: output too large");
    size_t need = b->len + n + 1;
    if (need > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < need)
            cap = cap > SIZE_MAX / 2 ? need : cap * 2;
        char *data = realloc(b->data, cap);
        if (data == NULL)
            return mizan_err_set(err, "canonical JSON: out of memory");
        b->data = data;
        b->cap = cap;
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

static int buf_puts(struct buf *b, const char *s, mizan_err_t *err)
{
    return buf_append(b, s, strlen(s), err);
}

/* ------------------------------------------------------------------------ */
/* UTF-8                                                                    */
/* ------------------------------------------------------------------------ */

/*
 * Decodes the code point starting at s[*i] (of n bytes) and advances *i.
 * Returns the code point, or -1 when the bytes are not well-formed UTF-8
 * (overlong forms, surrogates and values past U+10FFFF included).
 */
static long utf8_next(const unsigned char *s, size_t n, size_t *i)
{
    unsigned char c = s[*i];
    if (c < 0x80) {
        *i += 1;
        return c;
    }
    size_t len;
    long cp, min;
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2, cp = c & 0x1F, min = 0x80;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3, cp = c & 0x0F, min = 0x800;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4, cp = c & 0x07, min = 0x10000;
    } else {
        return -1;
    }
    if (n - *i < len)
        return -1;
    for (size_t k = 1; k < len; k++) {
        unsigned char cc = s[*i + k];
        if ((cc & 0xC0) != 0x80)
            return -1;
        cp = (cp << 6) | (cc & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return -1;
    *i += len;
    return cp;
}

static bool utf8_valid(const char *s, size_t n)
{
    size_t i = 0;
    while (i < n)
        if (utf8_next((const unsigned char *)s, n, &i) < 0)
            return false;
    return true;
}

/*
 * The UTF-16 code units of cp packed so that comparing two packed values
 * compares the unit sequences: high unit in the top half, low surrogate (or
 * 0 for a single unit) in the bottom half. Two different code points always
 * differ in their first unit unless both are supplementary, and a BMP code
 * point is never a lead surrogate, so the packing is exact.
 */
static uint32_t utf16_units(long cp)
{
    if (cp < 0x10000)
        return (uint32_t)cp << 16;
    uint32_t v = (uint32_t)(cp - 0x10000);
    return ((0xD800u + (v >> 10)) << 16) | (0xDC00u + (v & 0x3FF));
}

/* qsort comparator: RFC 8785 member order (UTF-16 code units). Names are
 * validated before sorting, so decoding cannot fail here. */
static int member_cmp(const void *pa, const void *pb)
{
    const struct member *a = pa, *b = pb;
    const unsigned char *sa = (const unsigned char *)a->key;
    const unsigned char *sb = (const unsigned char *)b->key;
    size_t i = 0, j = 0;
    while (i < a->key_len && j < b->key_len) {
        long ca = utf8_next(sa, a->key_len, &i);
        long cb = utf8_next(sb, b->key_len, &j);
        if (ca != cb) {
            uint32_t ua = utf16_units(ca), ub = utf16_units(cb);
            return ua < ub ? -1 : 1;
        }
    }
    if (i < a->key_len)
        return 1;
    if (j < b->key_len)
        return -1;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Strings                                                                  */
/* ------------------------------------------------------------------------ */

static int emit_string(const char *s, size_t n, struct buf *b, mizan_err_t *err)
{
    static const char hex[] = "0123456789abcdef";
    if (!utf8_valid(s, n))
        return mizan_err_set(err, "canonical JSON: string is not valid UTF-8");
    if (buf_append(b, "\"", 1, err) < 0)
        return -1;
    size_t run = 0; /* start of the pending run of bytes copied as they are */
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc[7];
        size_t esc_len = 2;
        esc[0] = '\\';
        switch (c) {
        case '"': esc[1] = '"'; break;
        case '\\': esc[1] = '\\'; break;
        case '\b': esc[1] = 'b'; break;
        case '\t': esc[1] = 't'; break;
        case '\n': esc[1] = 'n'; break;
        case '\f': esc[1] = 'f'; break;
        case '\r': esc[1] = 'r'; break;
        default:
            if (c >= 0x20)
                continue;
            memcpy(esc + 1, "u00", 3);
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 0xF];
            esc_len = 6;
            break;
        }
        if (buf_append(b, s + run, i - run, err) < 0 || buf_append(b, esc, esc_len, err) < 0)
            return -1;
        run = i + 1;
    }
    if (buf_append(b, s + run, n - run, err) < 0)
        return -1;
    return buf_append(b, "\"", 1, err);
}

/* ------------------------------------------------------------------------ */
/* Numbers                                                                  */
/* ------------------------------------------------------------------------ */

/*
 * Shortest decimal digits of a finite positive d: on return digits holds k
 * significant digits (no trailing zeros) and *n is the exponent such that
 * d reads back from 0.<digits> x 10^n. Returns k.
 *
 * For each precision p from 1 up, printf's correctly rounded p-digit value
 * is the p-digit decimal nearest to d. If any p-digit decimal reads back as
 * d, then either that nearest one does or, when the rounding interval is
 * lopsided (d a power of two), its neighbour on the far side does; so
 * trying the nearest and its two neighbours finds the shortest digits, and
 * among them the nearest, which is what ECMAScript asks for.
 */
static int shortest_digits(double d, char digits[24], int *n)
{
    char text[48];
    for (int p = 1; p <= 17; p++) {
        snprintf(text, sizeof(text), "%.*e", p - 1, d);
        /* text is "D[.DDD]e[+-]XX": collect the p digits and the exponent. */
        uint64_t m = 0;
        const char *c = text;
        for (; *c != 'e'; c++)
            if (*c >= '0' && *c <= '9') /* skips the point, whatever the locale */
                m = m * 10 + (uint64_t)(*c - '0');
        int x = atoi(c + 1) - (p - 1); /* d ~ m x 10^x */

        uint64_t low = 1; /* 10^(p-1), the smallest p-digit mantissa */
        for (int k = 1; k < p; k++)
            low *= 10;
        uint64_t chosen = 0;
        int chosen_x = x;
        if (p == 17 || strtod(text, NULL) == d) {
            /* 17 significant digits always read back. */
            chosen = m;
        } else {
            /* Upper neighbour: m + 1 (10^p when m is all nines, still a
             * p-digit value once its trailing zero goes). */
            snprintf(text, sizeof(text), "%llue%d", (unsigned long long)(m + 1), x);
            if (strtod(text, NULL) == d) {
                chosen = m + 1;
            } else {
                /* Lower neighbour: below 10^(p-1) the grid is ten times
                 * finer, so the neighbour of 1000 is 9999 one place down. */
                uint64_t lm = m - 1;
                int lx = x;
                if (m == low) {
                    lm = m * 10 - 1;
                    lx = x - 1;
                }
                snprintf(text, sizeof(text), "%llue%d", (unsigned long long)lm, lx);
                if (strtod(text, NULL) == d) {
                    chosen = lm;
                    chosen_x = lx;
                }
            }
        }
        if (chosen == 0)
            continue;
        while (chosen % 10 == 0) {
            chosen /= 10;
            chosen_x++;
        }
        int k = snprintf(digits, 24, "%llu", (unsigned long long)chosen);
        *n = k + chosen_x;
        return k;
    }
    /* Not reached: p == 17 always chooses. */
    digits[0] = '0';
    digits[1] = '\0';
    *n = 1;
    return 1;
}

int mizan_jcs_number(double d, char *out, size_t outlen)
{
    char text[40];
    size_t len = 0;
    if (!isfinite(d))
        return -1;
    if (d == 0) {
        /* -0 prints as "0" too. */
        text[len++] = '0';
    } else {
        if (d < 0) {
            text[len++] = '-';
            d = -d;
        }
        char digits[24];
        int n;
        int k = shortest_digits(d, digits, &n);
        if (k <= n && n <= 21) {
            /* Integral: the digits and n - k zeros. */
            memcpy(text + len, digits, (size_t)k);
            len += (size_t)k;
            for (int z = 0; z < n - k; z++)
                text[len++] = '0';
        } else if (0 < n && n <= 21) {
            /* Point inside the digits. */
            memcpy(text + len, digits, (size_t)n);
            len += (size_t)n;
            text[len++] = '.';
            memcpy(text + len, digits + n, (size_t)(k - n));
            len += (size_t)(k - n);
        } else if (-6 < n && n <= 0) {
            /* Small: "0." then -n zeros then the digits. */
            text[len++] = '0';
            text[len++] = '.';
            for (int z = 0; z < -n; z++)
                text[len++] = '0';
            memcpy(text + len, digits, (size_t)k);
            len += (size_t)k;
        } else {
            /* Exponent form: d[.ddd]e+x / e-x. */
            text[len++] = digits[0];
            if (k > 1) {
                text[len++] = '.';
                memcpy(text + len, digits + 1, (size_t)(k - 1));
                len += (size_t)(k - 1);
            }
            int e = n - 1;
            len += (size_t)snprintf(text + len, sizeof(text) - len, "e%c%d", e < 0 ? '-' : '+',
                                    e < 0 ? -e : e);
        }
    }
    if (len + 1 > outlen)
        return -1;
    memcpy(out, text, len);
    out[len] = '\0';
    return (int)len;
}

/* ------------------------------------------------------------------------ */
/* Values                                                                   */
/* ------------------------------------------------------------------------ */

static int emit_object(const json_t *v, int depth, struct buf *b, mizan_err_t *err)
{
    int rc = -1;
    struct member *m = NULL;
    size_t count = json_object_size(v);

    if (count > 0) {
        m = malloc(count * sizeof(*m));
        if (m == NULL) {
            mizan_err_set(err, "canonical JSON: out of memory");
            goto done;
        }
    }
    /* jansson's iterator API wants a non-const object; it does not modify it. */
    json_t *obj = (json_t *)v;
    size_t i = 0;
    for (void *it = json_object_iter(obj); it != NULL && i < count;
         it = json_object_iter_next(obj, it)) {
        m[i].key = json_object_iter_key(it);
        m[i].key_len = json_object_iter_key_len(it);
        m[i].value = json_object_iter_value(it);
        if (!utf8_valid(m[i].key, m[i].key_len)) {
            mizan_err_set(err, "canonical JSON: member name is not valid UTF-8");
            goto done;
        }
        i++;
    }
    count = i;
    if (count > 1)
        qsort(m, count, sizeof(*m), member_cmp);

    if (buf_append(b, "{", 1, err) < 0)
        goto done;
    for (i = 0; i < count; i++) {
        if (i > 0 && buf_append(b, ",", 1, err) < 0)
            goto done;
        if (emit_string(m[i].key, m[i].key_len, b, err) < 0 || buf_append(b, ":", 1, err) < 0 ||
            emit(m[i].value, depth + 1, b, err) < 0)
            goto done;
    }
    if (buf_append(b, "}", 1, err) < 0)
        goto done;
    rc = 0;
done:
    free(m);
    return rc;
}

static int emit_array(const json_t *v, int depth, struct buf *b, mizan_err_t *err)
{
    if (buf_append(b, "[", 1, err) < 0)
        return -1;
    size_t n = json_array_size(v);
    for (size_t i = 0; i < n; i++) {
        if (i > 0 && buf_append(b, ",", 1, err) < 0)
            return -1;
        if (emit(json_array_get(v, i), depth + 1, b, err) < 0)
            return -1;
    }
    return buf_append(b, "]", 1, err);
}

/* Appends the canonical text of v (borrowed), found at nesting depth. */
static int emit(const json_t *v, int depth, struct buf *b, mizan_err_t *err)
{
    char num[40];
    if (v == NULL)
        return mizan_err_set(err, "canonical JSON: missing value");
    if (depth > MIZAN_JCS_MAX_DEPTH)
        return mizan_err_set(err, "canonical JSON: nested deeper than %d", MIZAN_JCS_MAX_DEPTH);
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return emit_object(v, depth, b, err);
    case JSON_ARRAY:
        return emit_array(v, depth, b, err);
    case JSON_STRING:
        return emit_string(json_string_value(v), json_string_length(v), b, err);
    case JSON_INTEGER:
        snprintf(num, sizeof(num), "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        return buf_puts(b, num, err);
    case JSON_REAL:
        if (mizan_jcs_number(json_real_value(v), num, sizeof(num)) < 0)
            return mizan_err_set(err, "canonical JSON: number is not finite");
        return buf_puts(b, num, err);
    case JSON_TRUE:
        return buf_puts(b, "true", err);
    case JSON_FALSE:
        return buf_puts(b, "false", err);
    case JSON_NULL:
        return buf_puts(b, "null", err);
    }
    return mizan_err_set(err, "canonical JSON: unknown value type");
}

char *mizan_jcs_dump(const json_t *v, size_t *len, mizan_err_t *err)
{
    struct buf b = {NULL, 0, 0};
    if (emit(v, 1, &b, err) < 0) {
        free(b.data);
        return NULL;
    }
    /* Every value has at least one byte of text, so data is allocated. */
    if (len != NULL)
        *len = b.len;
    return b.data;
}
