/*
 * schema.c - the input validator: compiles JSON Schema (draft-07 and
 * 2020-12) into a graph of immutable nodes, one per schema position, and
 * validates instances against it within a work budget, reporting every
 * violation as a protocol error entry and filling in defaults when the
 * instance is valid.
 *
 * Layout of this file: numbers (decimal form, comparison), JSON Schema
 * equality and the canonical encoding (uniqueItems), small hash tables,
 * URIs, the compiled graph, the compiler (walk, keywords, $ref resolution,
 * cycle check, param types), PCRE2 matching, the validator (violation
 * records, annotations for unevaluated*, checks, applicators), the default
 * filler, and the public entry points.
 *
 * The compiled graph points into the source JSON (property names, enum and
 * const values, defaults, bounds) and into the documents read from the
 * schema directory, instead of copying them; the schema holds references
 * to all of them and nobody modifies them after compilation, so the
 * pointers stay valid and reading them from many threads is safe.
 */
#include "schema.h"

#include "text.h"
#include "schema_format.h"

#define PCRE2_CODE_UNIT_WIDTH 8

#include <limits.h>
#include <math.h>
#include <pcre2.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

/*
 * Regex limits. A legitimate input pattern on a request-sized string stays
 * far below them; a catastrophically backtracking one hits them within a
 * few milliseconds instead of pinning a worker.
 */
#define MATCH_LIMIT 1000000u        /* backtracking steps (time) */
#define DEPTH_LIMIT 100000u         /* nested backtracking frames */
#define HEAP_LIMIT_KIB 8192u        /* interpreter frame memory, in KiB */
#define JIT_STACK_MAX (8u << 20)    /* JIT stack per thread, in bytes */

/*
 * Work units charged to the request's validation budget
 * (MIZAN_SCHEMA_BUDGET): roughly nanoseconds of work on one core. A pattern
 * match is charged its PCRE2 match limit (see pattern_test), a uniqueItems
 * check the bytes of its items' encodings and its comparisons.
 */
#define COST_NODE 10      /* one (sub)schema applied to one value */
#define COST_REPORT 400   /* one violation entry built */
#define COST_COMPARE 20   /* one enum/const or sorted-encoding comparison */

/* Longest rendering of an enum/const value kept in a message. */
#define VALUE_MSG_MAX 200

/* Instance type bits (a value can have two: an integer is also a number). */
enum {
    T_NULL = 1u << 0,
    T_BOOLEAN = 1u << 1,
    T_OBJECT = 1u << 2,
    T_ARRAY = 1u << 3,
    T_NUMBER = 1u << 4,
    T_STRING = 1u << 5,
    T_INTEGER = 1u << 6,
};

/* Names of the type bits, in bit order. */
static const char *const type_names[] = {
    "null", "boolean", "object", "array", "number", "string", "integer",
};

#define NTYPES (sizeof(type_names) / sizeof(type_names[0]))

/* ---------------------------------------------------------------- numbers */

/* A non-negative decimal mant * 10^exp (the sign never matters here). */
typedef struct decimal {
    uint64_t mant; /* significant digits, trailing zeros stripped */
    int exp;       /* power of ten */
} decimal_t;

/*
 * Prints d with the fewest significant digits (up to 17) that read back as
 * the same double, in the given printf conversion ('e' or 'g'). Returns the
 * precision used. Relies on the C locale (the gateway never changes
 * LC_NUMERIC), like jansson itself.
 */
static int print_shortest(double d, char conv, char *buf, size_t size)
{
    /* 15 significant digits recover any decimal of 15 digits or fewer
     * (DBL_DIG), which covers what people write; 17 always round-trips. */
    for (int digits = 15; digits <= 17; digits++) {
        int prec = conv == 'e' ? digits - 1 : digits;
        if (conv == 'e')
            snprintf(buf, size, "%.*e", prec, d);
        else
            snprintf(buf, size, "%.*g", prec, d);
        if (digits == 17 || strtod(buf, NULL) == d)
            return digits;
    }
    return 17; /* not reached */
}

static void decimal_strip(decimal_t *dec)
{
    if (dec->mant == 0) {
        dec->exp = 0;
        return;
    }
    while (dec->mant % 10 == 0) {
        dec->mant /= 10;
        dec->exp++;
    }
}

/* The decimal form of a JSON number (borrowed): exact for integers, the
 * shortest round-tripping form for reals. */
static decimal_t number_decimal(const json_t *num)
{
    decimal_t dec = {0, 0};
    if (json_is_integer(num)) {
        json_int_t i = json_integer_value(num);
        dec.mant = i < 0 ? (uint64_t)0 - (uint64_t)i : (uint64_t)i;
    } else {
        double d = fabs(json_real_value(num));
        if (d == 0)
            return dec;
        char buf[48];
        int digits = print_shortest(d, 'e', buf, sizeof(buf));
        /* buf is "D.DDDDe[+-]XX": collect the digits, then the exponent. */
        const char *p = buf;
        for (; *p != '\0' && *p != 'e'; p++)
            if (*p >= '0' && *p <= '9')
                dec.mant = dec.mant * 10 + (uint64_t)(*p - '0');
        int e = *p == 'e' ? atoi(p + 1) : 0;
        dec.exp = e - (digits - 1);
    }
    decimal_strip(&dec);
    return dec;
}

/* (a + b) mod m for a, b < m, without overflow. */
static uint64_t add_mod(uint64_t a, uint64_t b, uint64_t m)
{
    return a >= m - b ? a - (m - b) : a + b;
}

/* Is x an integer multiple of d (d->mant > 0)? Exact decimal arithmetic. */
static bool decimal_multiple(decimal_t x, decimal_t d)
{
    if (x.mant == 0)
        return true;
    if (x.exp >= d.exp) {
        /* d.mant must divide x.mant * 10^(x.exp - d.exp). */
        uint64_t r = x.mant % d.mant;
        for (int k = x.exp - d.exp; k > 0 && r != 0; k--) {
            uint64_t r10 = 0;
            for (int t = 0; t < 10; t++)
                r10 = add_mod(r10, r, d.mant);
            r = r10;
        }
        return r == 0;
    }
    /* d.mant * 10^(d.exp - x.exp) must divide x.mant. */
    uint64_t b = d.mant;
    for (int k = d.exp - x.exp; k > 0; k--) {
        if (b > x.mant / 10)
            return false;
        b *= 10;
    }
    return x.mant % b == 0;
}

/* d without its fraction, toward zero (libm's trunc, kept local so the
 * core needs no -lm for it). Doubles of magnitude 2^52 or more, and
 * non-finite ones, have no fraction. */
static double whole_part(double d)
{
    if (!(fabs(d) < 4503599627370496.0))
        return d;
    return (double)(long long)d;
}

/* Sign of i - d, exactly (d finite). */
static int cmp_int_real(json_int_t i, double d)
{
    if (d >= 9223372036854775808.0)
        return -1;
    if (d < -9223372036854775808.0)
        return 1;
    double t = whole_part(d);
    long long ti = (long long)t;
    if (i != ti)
        return i < ti ? -1 : 1;
    double frac = d - t;
    return frac > 0 ? -1 : frac < 0 ? 1 : 0;
}

/* Sign of a - b for two JSON numbers (borrowed), exactly. */
static int number_cmp(const json_t *a, const json_t *b)
{
    if (json_is_integer(a) && json_is_integer(b)) {
        json_int_t x = json_integer_value(a), y = json_integer_value(b);
        return x < y ? -1 : x > y ? 1 : 0;
    }
    if (json_is_integer(a))
        return cmp_int_real(json_integer_value(a), json_real_value(b));
    if (json_is_integer(b))
        return -cmp_int_real(json_integer_value(b), json_real_value(a));
    double x = json_real_value(a), y = json_real_value(b);
    return x < y ? -1 : x > y ? 1 : 0;
}

/* Renders a JSON number (borrowed) for a message: "3", "1.1", "0.0001". */
static void number_text(const json_t *num, char *buf, size_t size)
{
    if (json_is_integer(num))
        snprintf(buf, size, "%" JSON_INTEGER_FORMAT, json_integer_value(num));
    else
        print_shortest(json_real_value(num), 'g', buf, size);
}

/* True for a real with no fractional part (1.0), which draft-07 calls an
 * integer. */
static bool real_is_integral(double d)
{
    return isfinite(d) && whole_part(d) == d;
}

/* Type bits of an instance value (borrowed). */
static unsigned type_bits(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_NULL:
        return T_NULL;
    case JSON_TRUE:
    case JSON_FALSE:
        return T_BOOLEAN;
    case JSON_OBJECT:
        return T_OBJECT;
    case JSON_ARRAY:
        return T_ARRAY;
    case JSON_STRING:
        return T_STRING;
    case JSON_INTEGER:
        return T_INTEGER | T_NUMBER;
    case JSON_REAL:
        return T_NUMBER | (real_is_integral(json_real_value(v)) ? T_INTEGER : 0u);
    }
    return 0;
}

/* The name a message uses for an instance's type (borrowed value). */
static const char *type_name_of(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_NULL:
        return "null";
    case JSON_TRUE:
    case JSON_FALSE:
        return "boolean";
    case JSON_OBJECT:
        return "object";
    case JSON_ARRAY:
        return "array";
    case JSON_STRING:
        return "string";
    case JSON_INTEGER:
        return "integer";
    case JSON_REAL:
        return "number";
    }
    return "value";
}

/* ------------------------------------------------------- equality, hashing */

/*
 * JSON Schema equality of two values (both borrowed): numbers by value
 * (1 == 1.0), strings by bytes, arrays element-wise, objects as unordered
 * maps. Recursion is bounded by the shallower value, and instances are
 * bounded by the request parser.
 */
static bool values_equal(const json_t *a, const json_t *b)
{
    if (json_is_number(a) && json_is_number(b))
        return number_cmp(a, b) == 0;
    if (json_typeof(a) != json_typeof(b))
        return false;
    switch (json_typeof(a)) {
    case JSON_STRING: {
        size_t la = json_string_length(a);
        return la == json_string_length(b) &&
               memcmp(json_string_value(a), json_string_value(b), la) == 0;
    }
    case JSON_ARRAY: {
        size_t n = json_array_size(a);
        if (n != json_array_size(b))
            return false;
        for (size_t i = 0; i < n; i++)
            if (!values_equal(json_array_get(a, i), json_array_get(b, i)))
                return false;
        return true;
    }
    case JSON_OBJECT: {
        if (json_object_size(a) != json_object_size(b))
            return false;
        const char *key;
        size_t klen;
        json_t *va;
        json_object_keylen_foreach((json_t *)a, key, klen, va) {
            const json_t *vb = json_object_getn(b, key, klen);
            if (vb == NULL || !values_equal(va, vb))
                return false;
        }
        return true;
    }
    default:
        return true; /* null, true, false: same type is same value */
    }
}

/*
 * Canonical encoding, for uniqueItems. Two values are equal (values_equal)
 * exactly when their encodings are the same bytes, so an array's items are
 * unique exactly when their sorted encodings have no two equal neighbours:
 * O(n log n) comparisons whatever the items are, with no hash an attacker
 * could aim collisions at. The encoding is prefix-free (every string and
 * container carries its length), numbers of equal value encode alike (an
 * integral real in the int64 range as that integer; any other real, which
 * equals no integer, by its bits with -0.0 folded into 0), and object
 * members are written in the bytewise order of their names.
 */
typedef struct canon {
    unsigned char *buf; /* the encodings, back to back (owned) */
    size_t len;         /* bytes used */
    size_t cap;         /* bytes allocated */
    size_t units;       /* work done, for the validation budget */
} canon_t;

static int canon_put(canon_t *c, const void *p, size_t n)
{
    if (c->cap - c->len < n) {
        size_t cap = c->cap != 0 ? c->cap : 256;
        while (cap - c->len < n)
            cap *= 2;
        unsigned char *nb = realloc(c->buf, cap);
        if (nb == NULL)
            return -1;
        c->buf = nb;
        c->cap = cap;
    }
    memcpy(c->buf + c->len, p, n);
    c->len += n;
    c->units += n;
    return 0;
}

static int canon_tag(canon_t *c, char tag, uint64_t x)
{
    unsigned char b[9];
    b[0] = (unsigned char)tag;
    for (int i = 0; i < 8; i++)
        b[1 + i] = (unsigned char)(x >> (56 - 8 * i)); /* big-endian: sorts like memcmp */
    return canon_put(c, b, sizeof(b));
}

/* One object member, for sorting names bytewise. */
typedef struct member {
    const char *key; /* borrowed from the object */
    size_t len;      /* key length */
    const json_t *value;
} member_t;

static int member_cmp(const void *a, const void *b)
{
    const member_t *x = a, *y = b;
    size_t n = x->len < y->len ? x->len : y->len;
    int r = memcmp(x->key, y->key, n);
    return r != 0 ? r : x->len < y->len ? -1 : x->len > y->len ? 1 : 0;
}

/* Appends the encoding of v (borrowed). Recursion is bounded by the
 * request parser's depth limit. Returns 0, or -1 when out of memory. */
static int canon_value(canon_t *c, const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_NULL:
        return canon_tag(c, 'n', 0);
    case JSON_TRUE:
        return canon_tag(c, 't', 0);
    case JSON_FALSE:
        return canon_tag(c, 'f', 0);
    case JSON_INTEGER:
        return canon_tag(c, 'i', (uint64_t)json_integer_value(v));
    case JSON_REAL: {
        double d = json_real_value(v);
        if (real_is_integral(d) && d >= -9223372036854775808.0 && d < 9223372036854775808.0)
            return canon_tag(c, 'i', (uint64_t)(long long)d);
        uint64_t bits;
        memcpy(&bits, &d, sizeof(bits));
        return canon_tag(c, 'r', bits);
    }
    case JSON_STRING:
        if (canon_tag(c, 's', json_string_length(v)) < 0)
            return -1;
        return canon_put(c, json_string_value(v), json_string_length(v));
    case JSON_ARRAY: {
        size_t n = json_array_size(v);
        if (canon_tag(c, 'a', n) < 0)
            return -1;
        for (size_t i = 0; i < n; i++)
            if (canon_value(c, json_array_get(v, i)) < 0)
                return -1;
        return 0;
    }
    case JSON_OBJECT: {
        size_t n = json_object_size(v);
        if (canon_tag(c, 'o', n) < 0)
            return -1;
        if (n == 0)
            return 0;
        member_t *m = malloc(n * sizeof(*m));
        if (m == NULL)
            return -1;
        size_t k = 0;
        const char *key;
        size_t klen;
        json_t *member;
        json_object_keylen_foreach((json_t *)v, key, klen, member) {
            m[k].key = key;
            m[k].len = klen;
            m[k].value = member;
            k++;
        }
        qsort(m, n, sizeof(*m), member_cmp);
        c->units += n * 8;
        int rc = 0;
        for (size_t i = 0; i < n && rc == 0; i++) {
            rc = canon_tag(c, 'k', m[i].len);
            if (rc == 0)
                rc = canon_put(c, m[i].key, m[i].len);
            if (rc == 0)
                rc = canon_value(c, m[i].value);
        }
        free(m);
        return rc;
    }
    }
    return 0;
}

/* ------------------------------------------------------------ small tables */

/* One open-addressing map from keys to pointers, serving two key kinds:
 * pointer keys compared by address (the schema positions already compiled)
 * and string keys compared by content, stored as owned copies (URIs). The
 * kind is fixed per map by the wrapper that uses it; a zeroed map is empty.
 * Never shrinks; freed with the compiler. */
typedef enum { MAP_PTR, MAP_STR } map_kind_t;

typedef struct map {
    const void **keys; /* NULL: free slot; MAP_STR keys are owned char * */
    void **vals;
    size_t cap;        /* a power of two, or 0 */
    size_t count;
} map_t;

static size_t map_slot(map_kind_t kind, const void *k, size_t cap)
{
    uint64_t h;
    if (kind == MAP_PTR) {
        h = (uint64_t)(uintptr_t)k;
        h ^= h >> 33;
        h *= 0xff51afd7ed558ccdULL;
        h ^= h >> 33;
    } else {
        h = 0xcbf29ce484222325ULL;
        for (const char *s = k; *s != '\0'; s++) {
            h ^= (unsigned char)*s;
            h *= 0x100000001b3ULL;
        }
        h ^= h >> 29;
    }
    return (size_t)h & (cap - 1);
}

static bool map_same(map_kind_t kind, const void *a, const void *b)
{
    return kind == MAP_PTR ? a == b : strcmp(a, b) == 0;
}

/* The slot holding k, or the free slot where k would go. m->cap > 0. */
static size_t map_find(const map_t *m, map_kind_t kind, const void *k)
{
    size_t i = map_slot(kind, k, m->cap);
    while (m->keys[i] != NULL && !map_same(kind, m->keys[i], k))
        i = (i + 1) & (m->cap - 1);
    return i;
}

static void *map_get(const map_t *m, map_kind_t kind, const void *k)
{
    if (m->cap == 0)
        return NULL;
    size_t i = map_find(m, kind, k);
    return m->keys[i] != NULL ? m->vals[i] : NULL;
}

/* Makes room for one more key (load kept at or below one half), starting
 * at first_cap slots. Returns 0, or -1 when out of memory. */
static int map_reserve(map_t *m, map_kind_t kind, size_t first_cap)
{
    if ((m->count + 1) * 2 <= m->cap)
        return 0;
    size_t cap = m->cap != 0 ? m->cap * 2 : first_cap;
    const void **keys = calloc(cap, sizeof(*keys));
    void **vals = calloc(cap, sizeof(*vals));
    if (keys == NULL || vals == NULL) {
        free(keys);
        free(vals);
        return -1;
    }
    for (size_t i = 0; i < m->cap; i++) {
        if (m->keys[i] == NULL)
            continue;
        size_t j = map_slot(kind, m->keys[i], cap);
        while (keys[j] != NULL)
            j = (j + 1) & (cap - 1);
        keys[j] = m->keys[i];
        vals[j] = m->vals[i];
    }
    free(m->keys);
    free(m->vals);
    m->keys = keys;
    m->vals = vals;
    m->cap = cap;
    return 0;
}

static void map_free(map_t *m, map_kind_t kind)
{
    if (kind == MAP_STR)
        for (size_t i = 0; i < m->cap; i++)
            free((void *)m->keys[i]);
    free(m->keys);
    free(m->vals);
}

/* Pointer-keyed use: json_t position -> compiled node. */
typedef map_t ptrmap_t;

static void *ptrmap_get(const ptrmap_t *m, const void *k)
{
    return map_get(m, MAP_PTR, k);
}

/* Sets k -> v, replacing any earlier value. Returns 0, or -1 when out of
 * memory. */
static int ptrmap_put(ptrmap_t *m, const void *k, void *v)
{
    if (map_reserve(m, MAP_PTR, 64) < 0)
        return -1;
    size_t i = map_find(m, MAP_PTR, k);
    if (m->keys[i] == NULL)
        m->count++;
    m->keys[i] = k;
    m->vals[i] = v;
    return 0;
}

static void ptrmap_free(ptrmap_t *m)
{
    map_free(m, MAP_PTR);
}

/* String-keyed use: URIs (owned copies) -> compiled node. */
typedef map_t strmap_t;

static void *strmap_get(const strmap_t *m, const char *k)
{
    return map_get(m, MAP_STR, k);
}

/* Adds k -> v unless k is there already (the first definition wins).
 * Returns 0, or -1 when out of memory. */
static int strmap_add(strmap_t *m, const char *k, void *v)
{
    if (m->cap != 0 && m->keys[map_find(m, MAP_STR, k)] != NULL)
        return 0;
    if (map_reserve(m, MAP_STR, 16) < 0)
        return -1;
    char *copy = strdup(k);
    if (copy == NULL)
        return -1;
    size_t i = map_find(m, MAP_STR, k);
    m->keys[i] = copy;
    m->vals[i] = v;
    m->count++;
    return 0;
}

static void strmap_free(strmap_t *m)
{
    map_free(m, MAP_STR);
}

/* ------------------------------------------------------------------- URIs */

/* Length of the scheme of uri ("http" of "http://x"), 0 when it has none. */
static size_t uri_scheme_len(const char *uri)
{
    size_t i = 0;
    if (!((uri[0] >= 'a' && uri[0] <= 'z') || (uri[0] >= 'A' && uri[0] <= 'Z')))
        return 0;
    while (uri[i] != '\0' && (((uri[i] | 0x20) >= 'a' && (uri[i] | 0x20) <= 'z') ||
                              (uri[i] >= '0' && uri[i] <= '9') || uri[i] == '+' || uri[i] == '-' ||
                              uri[i] == '.'))
        i++;
    return uri[i] == ':' ? i : 0;
}

/* Removes "." and ".." segments from path, in place (RFC 3986 5.2.4).
 * The output is never longer than what is left to read, so one pass
 * can write behind the read position. */
static void remove_dots(char *path)
{
    size_t abs = path[0] == '/' ? 1 : 0;
    const char *in = path + abs;
    char *o = path + abs;
    for (;;) {
        const char *end = strchr(in, '/');
        size_t len = end != NULL ? (size_t)(end - in) : strlen(in);
        if (len == 1 && in[0] == '.') {
            /* dropped */
        } else if (len == 2 && in[0] == '.' && in[1] == '.') {
            if (o > path + abs) {
                o--;
                while (o > path + abs && o[-1] != '/')
                    o--;
            }
        } else {
            memmove(o, in, len);
            o += len;
            if (end != NULL)
                *o++ = '/';
        }
        if (end == NULL)
            break;
        in = end + 1;
    }
    *o = '\0';
}

/* A new string: ref resolved against the absolute URI base (RFC 3986
 * section 5.2), or NULL when out of memory. */
static char *uri_resolve(const char *base, const char *ref)
{
    size_t blen = strlen(base), rlen = strlen(ref);
    char *out = malloc(blen + rlen + 4);
    if (out == NULL)
        return NULL;
    if (uri_scheme_len(ref) > 0) {
        memcpy(out, ref, rlen + 1);
        return out;
    }
    /* base = scheme ":" ["//" authority] path ["?" query] ["#" fragment] */
    size_t sl = uri_scheme_len(base);
    size_t auth_end = sl + 1;
    if (strncmp(base + sl + 1, "//", 2) == 0) {
        auth_end = sl + 3;
        while (base[auth_end] != '\0' && base[auth_end] != '/' && base[auth_end] != '?' && base[auth_end] != '#')
            auth_end++;
    }
    size_t path_end = auth_end;
    while (base[path_end] != '\0' && base[path_end] != '?' && base[path_end] != '#')
        path_end++;
    size_t frag = path_end;
    while (base[frag] != '\0' && base[frag] != '#')
        frag++;
    if (ref[0] == '\0' || ref[0] == '#') {
        memcpy(out, base, frag);
        memcpy(out + frag, ref, rlen + 1);
        return out;
    }
    if (ref[0] == '/' && ref[1] == '/') {
        memcpy(out, base, sl + 1);
        memcpy(out + sl + 1, ref, rlen + 1);
        return out;
    }
    if (ref[0] == '?') {
        memcpy(out, base, path_end);
        memcpy(out + path_end, ref, rlen + 1);
        return out;
    }
    size_t rpath = strcspn(ref, "?#");
    size_t pos;
    if (ref[0] == '/') {
        memcpy(out, base, auth_end);
        pos = auth_end;
    } else {
        size_t dir = path_end;
        while (dir > auth_end && base[dir - 1] != '/')
            dir--;
        memcpy(out, base, auth_end);
        pos = auth_end;
        if (dir == auth_end && auth_end > sl + 1)
            out[pos++] = '/';
        memcpy(out + pos, base + auth_end, dir - auth_end);
        pos += dir - auth_end;
    }
    memcpy(out + pos, ref, rpath);
    out[pos + rpath] = '\0';
    remove_dots(out + auth_end);
    pos = strlen(out);
    memcpy(out + pos, ref + rpath, rlen - rpath + 1);
    return out;
}

/* Decodes %XX escapes of s in place (a fragment). */
static void percent_decode(char *s)
{
    char *o = s;
    for (const char *p = s; *p != '\0'; p++) {
        int hi, lo;
        if (p[0] == '%' && (hi = mizan_hex_digit((unsigned char)p[1])) >= 0 &&
            (lo = mizan_hex_digit((unsigned char)p[2])) >= 0) {
            *o++ = (char)(hi * 16 + lo);
            p += 2;
        } else {
            *o++ = *p;
        }
    }
    *o = '\0';
}

/* ---------------------------------------------------------- compiled graph */

/* Dialects, picked by "$schema" (draft-07 when absent). */
enum {
    D7 = MIZAN_SCHEMA_DRAFT7,
    D2020 = MIZAN_SCHEMA_DRAFT2020_12,
};

typedef struct node node_t;

/* One entry of "properties". */
typedef struct prop {
    const char *name; /* the key (borrowed from the source object) */
    size_t len;       /* its length in bytes (keys may contain NUL) */
    node_t *schema;   /* its subschema */
} prop_t;

/* One entry of "patternProperties". */
typedef struct pprop {
    pcre2_code *re;   /* compiled pattern (owned) */
    const char *src;  /* its text (borrowed) */
    node_t *schema;   /* its subschema */
} pprop_t;

/* One name of "required" or of a dependency list. */
typedef struct req_name {
    const char *name; /* borrowed from the source string */
    size_t len;       /* length in bytes */
} req_name_t;

/* One entry of "dependencies", "dependentRequired" or "dependentSchemas":
 * when the object has `name`, it also needs the names in req, or must
 * match schema. */
typedef struct dep {
    const char *name;  /* the trigger property (borrowed) */
    size_t len;
    req_name_t *req;   /* required names (owned array), or NULL */
    size_t nreq;
    node_t *schema;    /* schema applied to the whole object, or NULL */
} dep_t;

/* A list of subschemas (allOf, anyOf, oneOf, prefixItems). */
typedef struct nlist {
    node_t **v;        /* owned array of borrowed nodes */
    size_t n;
} nlist_t;

/*
 * One compiled (sub)schema: a node of a graph ($ref edges may point
 * anywhere, cycles included). Every node is owned by the compiled schema's
 * node list, not by its parent. Pointers to json_t are borrowed from the
 * sources, which the compiled schema keeps alive. Absent counts are -1.
 */
struct node {
    const json_t *js;             /* the source of this schema */
    size_t index;                 /* its position in the schema's node list */
    char *where;                  /* its location, for compile errors */
    int dialect;                  /* D7 or D2020 */
    size_t resource;              /* index of its schema resource */
    bool is_bool;                 /* a boolean schema */
    bool bool_value;              /* ... and its value */
    bool ref_only;                /* draft-07 "$ref" with siblings: they are ignored */
    bool tracks;                  /* unevaluatedItems/Properties here: collect annotations */
    bool may_fill;                /* a "default" of a property is reachable from here */
    unsigned types;               /* T_* bits of "type"; 0: no "type" */
    unsigned char type_order[8];  /* the type names' indices, as written */
    size_t ntypes;                /* entries in type_order */
    /* objects */
    prop_t *props;                /* "properties" in source order */
    size_t nprops;
    const prop_t **sorted;        /* props sorted by name, for lookups */
    pprop_t *pprops;              /* "patternProperties" */
    size_t npprops;
    node_t *additional;           /* "additionalProperties"; NULL: anything */
    node_t *property_names;       /* "propertyNames", or NULL */
    req_name_t *required;         /* "required", in source order */
    size_t nrequired;
    dep_t *deps;                  /* dependencies of all three kinds */
    size_t ndeps;
    const char *deps_kw;          /* "dependencies" or "dependentRequired" */
    node_t *unevaluated_props;    /* "unevaluatedProperties", or NULL */
    long long min_props;
    long long max_props;
    /* arrays */
    nlist_t prefix;               /* "prefixItems", or draft-07 "items" array */
    node_t *items;                /* items after the prefix ("items" or "additionalItems") */
    const char *items_kw;         /* which of the two, for messages */
    node_t *contains;             /* "contains", or NULL */
    long long min_contains;       /* "minContains" (1 when absent) */
    long long max_contains;       /* "maxContains" */
    node_t *unevaluated_items;    /* "unevaluatedItems", or NULL */
    long long min_items;
    long long max_items;
    bool unique_items;            /* "uniqueItems": true */
    /* in-place applicators */
    node_t *ref;                  /* "$ref" target (resolved after the walk) */
    char *ref_uri;                /* its absolute URI until resolved (owned) */
    node_t *dynref;               /* "$dynamicRef" static target */
    char *dynref_uri;             /* its absolute URI until resolved (owned) */
    const char *dynref_anchor;    /* the anchor name when the target is a
                                     $dynamicAnchor of that name: resolved in
                                     the dynamic scope (borrowed), else NULL */
    const char *dyn_anchor;       /* this node's "$dynamicAnchor" (borrowed) */
    nlist_t all_of;
    nlist_t any_of;
    nlist_t one_of;
    node_t *not_;
    node_t *if_;
    node_t *then_;
    node_t *else_;
    /* scalars */
    const json_t *enum_values;    /* "enum" array, or NULL */
    char *enum_msg;               /* "must be one of [...]" */
    const json_t *const_value;    /* "const" value, or NULL */
    char *const_msg;              /* "must be equal to ..." */
    const json_t *minimum;        /* bounds (numbers), or NULL */
    const json_t *maximum;
    const json_t *exclusive_minimum;
    const json_t *exclusive_maximum;
    const json_t *multiple_of;    /* "multipleOf" (> 0), or NULL */
    decimal_t multiple_dec;       /* its decimal form */
    long long min_length;         /* code points */
    long long max_length;
    pcre2_code *pattern;          /* compiled "pattern" (JIT when available) */
    const char *pattern_src;      /* its source text (borrowed) */
    const char *format;           /* "format" when asserted, else NULL */
    bool content_base64;          /* draft-07 "contentEncoding": "base64" */
    bool content_json;            /* draft-07 "contentMediaType": "application/json" */
    const json_t *dflt;           /* "default", or NULL */
};

/* A schema resource: a document or a subschema with its own "$id". */
typedef struct resource {
    char *uri;                    /* absolute, without fragment (owned) */
    node_t *root;                 /* its root schema */
} resource_t;

/* A "$dynamicAnchor": where a $dynamicRef may land in the dynamic scope. */
typedef struct dyn_anchor {
    size_t resource;              /* the resource that declares it */
    const char *name;             /* the anchor name (borrowed) */
    const node_t *node;           /* the schema carrying it */
} dyn_anchor_t;

struct mizan_schema {
    json_t *source;               /* our reference to the source JSON */
    json_t *loaded;               /* array of documents read from the schema directory (owned) */
    node_t *root;                 /* the compiled root schema */
    node_t **nodes;               /* every node (owned) */
    size_t nnodes;
    resource_t *resources;        /* every resource (owned) */
    size_t nresources;
    dyn_anchor_t *anchors;        /* every $dynamicAnchor (owned) */
    size_t nanchors;
    bool tracks;                  /* some node has unevaluatedItems/Properties */
    json_t *param_types;          /* {name: [types]} of the root's properties (owned) */
};

static void nlist_free(nlist_t *l)
{
    free(l->v);
}

static void node_free(node_t *n)
{
    if (n == NULL)
        return;
    free(n->where);
    free(n->props);
    free(n->sorted);
    for (size_t i = 0; i < n->npprops; i++)
        pcre2_code_free(n->pprops[i].re);
    free(n->pprops);
    free(n->required);
    for (size_t i = 0; i < n->ndeps; i++)
        free(n->deps[i].req);
    free(n->deps);
    nlist_free(&n->prefix);
    free(n->ref_uri);
    free(n->dynref_uri);
    nlist_free(&n->all_of);
    nlist_free(&n->any_of);
    nlist_free(&n->one_of);
    free(n->enum_msg);
    free(n->const_msg);
    pcre2_code_free(n->pattern);
    free(n);
}

/* ---------------------------------------------------------------- compiler */

/* Process-wide defaults of mizan_schema_compile() (set at start-up). */
static mizan_schema_opts_t default_opts = {0};
static char *default_dir;
static char *default_base;

#define DEFAULT_BASE_URI "mizan:/schemas/"

/* Compiler state. */
typedef struct compiler {
    mizan_err_t *err;             /* where failures are described */
    const mizan_schema_opts_t *opts;
    mizan_schema_t *s;            /* the schema being built */
    const char *base_uri;         /* URI prefix of the schema directory */
    ptrmap_t pos;                 /* json_t* -> node_t*: compiled positions */
    strmap_t uris;                /* absolute URI (with anchor fragment) -> node_t* */
    char path[400];               /* JSON pointer of the current position */
    size_t pathlen;               /* strlen(path) */
    char doc[160];                /* the document being walked, for messages */
    size_t depth;                 /* nesting of the walk */
} compiler_t;

/* Appends "/" + the escaped segment to the path; returns the previous
 * length for path_pop. Truncates (with "...") rather than fail. */
static size_t path_push(compiler_t *c, const char *seg, size_t len)
{
    size_t old = c->pathlen;
    size_t cap = sizeof(c->path) - 4; /* room for "..." and NUL */
    size_t p = c->pathlen;
    if (p < cap)
        c->path[p++] = '/';
    for (size_t i = 0; i < len && p < cap; i++) {
        char ch = seg[i];
        if (ch == '~' || ch == '/') {
            if (p + 2 > cap) {
                p = cap;
                break;
            }
            c->path[p++] = '~';
            c->path[p++] = ch == '~' ? '0' : '1';
        } else if (ch != '\0') {
            c->path[p++] = ch;
        }
    }
    if (p >= cap) {
        memcpy(c->path + cap, "...", 4);
        c->pathlen = cap + 3;
    } else {
        c->path[p] = '\0';
        c->pathlen = p;
    }
    return old;
}

static size_t path_push_index(compiler_t *c, size_t i)
{
    char buf[32];
    int n = snprintf(buf, sizeof(buf), "%zu", i);
    return path_push(c, buf, (size_t)n);
}

static void path_pop(compiler_t *c, size_t old)
{
    c->pathlen = old;
    c->path[old] = '\0';
}

/* Records "[doc ]path: reason" (just the reason at the root). Returns -1. */
static int fail(compiler_t *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int fail(compiler_t *c, const char *fmt, ...)
{
    char reason[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof(reason), fmt, ap);
    va_end(ap);
    if (c->pathlen == 0 && c->doc[0] == '\0')
        return mizan_err_set(c->err, "schema: %s", reason);
    return mizan_err_set(c->err, "%s%s%s: %s", c->doc, c->doc[0] != '\0' ? "#" : "", c->path, reason);
}

static int oom(compiler_t *c)
{
    return mizan_err_set(c->err, "out of memory");
}

/* Reads a non-negative integer keyword value (borrowed; 2 and 2.0 both
 * count, as draft-07 integers). Huge values saturate at LLONG_MAX. */
static int get_count(compiler_t *c, const json_t *v, long long *out)
{
    if (json_is_integer(v) && json_integer_value(v) >= 0) {
        *out = json_integer_value(v);
        return 0;
    }
    if (json_is_real(v) && real_is_integral(json_real_value(v)) && json_real_value(v) >= 0) {
        double d = json_real_value(v);
        *out = d >= 9223372036854775807.0 ? LLONG_MAX : (long long)d;
        return 0;
    }
    return fail(c, "must be a non-negative integer");
}

/* Builds "<prefix><value rendered as JSON>" (value borrowed), shortened to
 * VALUE_MSG_MAX bytes of JSON at a UTF-8 boundary. Returns a new string or
 * NULL (out of memory). */
static char *value_msg(const char *prefix, const json_t *value)
{
    char *dump = json_dumps(value, JSON_ENCODE_ANY | JSON_REAL_PRECISION(15));
    if (dump == NULL)
        return NULL;
    size_t len = strlen(dump);
    const char *ellipsis = "";
    if (len > VALUE_MSG_MAX) {
        len = VALUE_MSG_MAX;
        while (len > 0 && ((unsigned char)dump[len] & 0xC0) == 0x80)
            len--;
        ellipsis = "...";
    }
    size_t size = strlen(prefix) + len + strlen(ellipsis) + 1;
    char *msg = malloc(size);
    if (msg != NULL)
        snprintf(msg, size, "%s%.*s%s", prefix, (int)len, dump, ellipsis);
    free(dump);
    return msg;
}

static int compile_type(compiler_t *c, node_t *n, const json_t *v)
{
    const char *msg = "must be a type name or a non-empty array of distinct type names";
    if (json_is_string(v)) {
        for (size_t t = 0; t < NTYPES; t++)
            if (strcmp(json_string_value(v), type_names[t]) == 0) {
                n->types = 1u << t;
                n->type_order[n->ntypes++] = (unsigned char)t;
                return 0;
            }
        return fail(c, "unknown type \"%s\"", json_string_value(v));
    }
    if (!json_is_array(v) || json_array_size(v) == 0)
        return fail(c, "%s", msg);
    for (size_t i = 0; i < json_array_size(v); i++) {
        const json_t *e = json_array_get(v, i);
        if (!json_is_string(e))
            return fail(c, "%s", msg);
        size_t t = 0;
        while (t < NTYPES && strcmp(json_string_value(e), type_names[t]) != 0)
            t++;
        if (t == NTYPES)
            return fail(c, "unknown type \"%s\"", json_string_value(e));
        if (n->types & (1u << t))
            return fail(c, "%s", msg);
        n->types |= 1u << t;
        n->type_order[n->ntypes++] = (unsigned char)t;
    }
    return 0;
}

static int prop_cmp(const void *a, const void *b)
{
    const prop_t *x = *(const prop_t *const *)a, *y = *(const prop_t *const *)b;
    size_t n = x->len < y->len ? x->len : y->len;
    int r = memcmp(x->name, y->name, n);
    if (r != 0)
        return r;
    return x->len < y->len ? -1 : x->len > y->len ? 1 : 0;
}

/* ECMA-262 white space and line terminators, beyond PCRE2's ASCII \s. */
#define ECMA_WS "\\s\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000\\ufeff"

/* Long Unicode property names ECMA-262 accepts, and PCRE2's short ones. */
static const char *const property_names[][2] = {
    {"Letter", "L"}, {"Lowercase_Letter", "Ll"}, {"Uppercase_Letter", "Lu"}, {"Titlecase_Letter", "Lt"},
    {"Modifier_Letter", "Lm"}, {"Other_Letter", "Lo"}, {"Mark", "M"}, {"Number", "N"},
    {"Decimal_Number", "Nd"}, {"digit", "Nd"}, {"Letter_Number", "Nl"}, {"Other_Number", "No"},
    {"Punctuation", "P"}, {"Symbol", "S"}, {"Separator", "Z"}, {"Space_Separator", "Zs"},
    {"Other", "C"}, {"Control", "Cc"},
};

/*
 * Rewrites an ECMA-262 pattern for PCRE2 where the two differ in ways the
 * JSON Schema suite checks: \s and \S cover Unicode white space (\d and
 * \w stay ASCII, as in ECMA-262), and \p{...} accepts long property names.
 * Returns a new string (len in *outlen), or NULL when out of memory.
 */
static char *ecma_pattern(const char *src, size_t len, size_t *outlen)
{
    size_t cap = len * 2 + 64, o = 0;
    char *out = malloc(cap);
    if (out == NULL)
        return NULL;
    bool in_class = false;
    for (size_t i = 0; i < len; i++) {
        char add[160];
        size_t alen = 0;
        char ch = src[i];
        if (ch == '\\' && i + 1 < len) {
            char x = src[i + 1];
            i++;
            if (x == 's') {
                alen = (size_t)snprintf(add, sizeof(add), in_class ? "%s" : "[%s]", ECMA_WS);
            } else if (x == 'S' && !in_class) {
                alen = (size_t)snprintf(add, sizeof(add), "[^%s]", ECMA_WS);
            } else if ((x == 'p' || x == 'P') && i + 1 < len && src[i + 1] == '{') {
                const char *close = memchr(src + i + 2, '}', len - i - 2);
                size_t nlen = close != NULL ? (size_t)(close - (src + i + 2)) : 0;
                const char *mapped = NULL;
                for (size_t k = 0; close != NULL && k < sizeof(property_names) / sizeof(property_names[0]); k++)
                    if (strlen(property_names[k][0]) == nlen && memcmp(property_names[k][0], src + i + 2, nlen) == 0)
                        mapped = property_names[k][1];
                if (mapped != NULL) {
                    alen = (size_t)snprintf(add, sizeof(add), "\\%c{%s}", x, mapped);
                    i += nlen + 2;
                } else {
                    add[0] = '\\';
                    add[1] = x;
                    alen = 2;
                }
            } else {
                add[0] = '\\';
                add[1] = x;
                alen = 2;
            }
        } else {
            if (ch == '[' && !in_class)
                in_class = true;
            else if (ch == ']' && in_class)
                in_class = false;
            add[0] = ch;
            alen = 1;
        }
        if (o + alen + 1 > cap) {
            cap = (o + alen + 1) * 2;
            char *n = realloc(out, cap);
            if (n == NULL) {
                free(out);
                return NULL;
            }
            out = n;
        }
        memcpy(out + o, add, alen);
        o += alen;
    }
    out[o] = '\0';
    *outlen = o;
    return out;
}

/* Compiles a regular expression (ECMA-262 flavour: `$` only at the very
 * end, \uXXXX escapes, Unicode \s, no \C). NULL with the reason in c->err. */
static pcre2_code *compile_regex(compiler_t *c, const json_t *v)
{
    if (!json_is_string(v)) {
        fail(c, "must be a string (a regular expression)");
        return NULL;
    }
    size_t plen = 0;
    char *pat = ecma_pattern(json_string_value(v), json_string_length(v), &plen);
    if (pat == NULL) {
        oom(c);
        return NULL;
    }
    /* ECMA-262: [] matches nothing and [^] any character. */
    uint32_t options =
        PCRE2_UTF | PCRE2_DOLLAR_ENDONLY | PCRE2_ALT_BSUX | PCRE2_NEVER_BACKSLASH_C | PCRE2_ALLOW_EMPTY_CLASS;
    int errcode = 0;
    PCRE2_SIZE erroffset = 0;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pat, plen, options, &errcode, &erroffset, NULL);
    free(pat);
    if (re == NULL) {
        if (errcode == PCRE2_ERROR_NOMEMORY) {
            oom(c);
            return NULL;
        }
        PCRE2_UCHAR reason[160];
        if (pcre2_get_error_message(errcode, reason, sizeof(reason)) < 0)
            snprintf((char *)reason, sizeof(reason), "error %d", errcode);
        fail(c, "invalid regular expression: %s at offset %zu", (const char *)reason, (size_t)erroffset);
        return NULL;
    }
    /* JIT is an optimisation: when unavailable the interpreter runs. */
    (void)pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);
    return re;
}

static int compile_required_list(compiler_t *c, const json_t *v, req_name_t **out, size_t *nout)
{
    const char *msg = "must be an array of distinct property names";
    if (!json_is_array(v))
        return fail(c, "%s", msg);
    size_t count = json_array_size(v);
    *out = NULL;
    *nout = 0;
    if (count == 0)
        return 0;
    req_name_t *r = calloc(count, sizeof(*r));
    if (r == NULL)
        return oom(c);
    *out = r;
    member_t *m = calloc(count, sizeof(*m));
    if (m == NULL)
        return oom(c);
    for (size_t i = 0; i < count; i++) {
        const json_t *e = json_array_get(v, i);
        if (!json_is_string(e)) {
            free(m);
            return fail(c, "%s", msg);
        }
        r[i].name = m[i].key = json_string_value(e);
        r[i].len = m[i].len = json_string_length(e);
        (*nout)++;
    }
    /* Distinct: no two equal neighbours once sorted. */
    qsort(m, count, sizeof(*m), member_cmp);
    for (size_t i = 1; i < count; i++)
        if (member_cmp(&m[i - 1], &m[i]) == 0) {
            free(m);
            return fail(c, "%s", msg);
        }
    free(m);
    return 0;
}

static int walk(compiler_t *c, const json_t *js, const char *base, int dialect, size_t resource, node_t **out);

/* Compiles an array of subschemas (allOf, anyOf, oneOf, prefixItems). */
static int walk_list(compiler_t *c, const json_t *v, const char *base, int dialect, size_t resource,
                     nlist_t *out)
{
    if (!json_is_array(v) || json_array_size(v) == 0)
        return fail(c, "must be a non-empty array of schemas");
    out->v = calloc(json_array_size(v), sizeof(*out->v));
    if (out->v == NULL)
        return oom(c);
    for (size_t i = 0; i < json_array_size(v); i++) {
        size_t mark = path_push_index(c, i);
        int rc = walk(c, json_array_get(v, i), base, dialect, resource, &out->v[i]);
        path_pop(c, mark);
        if (rc < 0)
            return -1;
        out->n++;
    }
    return 0;
}

/* Compiles an object of subschemas whose only use is to be referred to
 * ("definitions", "$defs"). */
static int walk_defs(compiler_t *c, const json_t *v, const char *base, int dialect, size_t resource)
{
    if (!json_is_object(v))
        return fail(c, "must be an object of schemas");
    const char *key;
    size_t klen;
    json_t *sub;
    json_object_keylen_foreach((json_t *)v, key, klen, sub) {
        size_t mark = path_push(c, key, klen);
        node_t *ignored;
        int rc = walk(c, sub, base, dialect, resource, &ignored);
        path_pop(c, mark);
        if (rc < 0)
            return -1;
    }
    return 0;
}

static int compile_properties(compiler_t *c, node_t *n, const json_t *v, const char *base, size_t resource)
{
    if (!json_is_object(v))
        return fail(c, "must be an object of schemas");
    size_t count = json_object_size(v);
    if (count == 0)
        return 0;
    n->props = calloc(count, sizeof(*n->props));
    n->sorted = calloc(count, sizeof(*n->sorted));
    if (n->props == NULL || n->sorted == NULL)
        return oom(c);
    const char *key;
    size_t klen;
    json_t *sub;
    json_object_keylen_foreach((json_t *)v, key, klen, sub) {
        prop_t *p = &n->props[n->nprops];
        p->name = key;
        p->len = klen;
        size_t mark = path_push(c, key, klen);
        int rc = walk(c, sub, base, n->dialect, resource, &p->schema);
        path_pop(c, mark);
        if (rc < 0)
            return -1;
        n->sorted[n->nprops] = p;
        n->nprops++;
    }
    qsort(n->sorted, n->nprops, sizeof(*n->sorted), prop_cmp);
    return 0;
}

static int compile_pattern_properties(compiler_t *c, node_t *n, const json_t *v, const char *base,
                                      size_t resource)
{
    if (!json_is_object(v))
        return fail(c, "must be an object of schemas");
    size_t count = json_object_size(v);
    if (count == 0)
        return 0;
    n->pprops = calloc(count, sizeof(*n->pprops));
    if (n->pprops == NULL)
        return oom(c);
    const char *key;
    size_t klen;
    json_t *sub;
    json_object_keylen_foreach((json_t *)v, key, klen, sub) {
        pprop_t *p = &n->pprops[n->npprops];
        size_t mark = path_push(c, key, klen);
        json_t *text = json_stringn(key, klen);
        p->re = text != NULL ? compile_regex(c, text) : NULL;
        json_decref(text);
        if (p->re == NULL) {
            path_pop(c, mark);
            return -1;
        }
        p->src = key;
        n->npprops++;
        int rc = walk(c, sub, base, n->dialect, resource, &p->schema);
        path_pop(c, mark);
        if (rc < 0)
            return -1;
    }
    return 0;
}

/* "dependencies" (draft-07: arrays or schemas), "dependentRequired" (arrays)
 * or "dependentSchemas" (schemas). */
static int compile_deps(compiler_t *c, node_t *n, const json_t *v, const char *base, size_t resource,
                        bool arrays, bool schemas)
{
    if (!json_is_object(v))
        return fail(c, "must be an object");
    size_t count = json_object_size(v);
    if (count == 0)
        return 0;
    dep_t *d = realloc(n->deps, (n->ndeps + count) * sizeof(*d));
    if (d == NULL)
        return oom(c);
    n->deps = d;
    const char *key;
    size_t klen;
    json_t *sub;
    json_object_keylen_foreach((json_t *)v, key, klen, sub) {
        dep_t *e = &n->deps[n->ndeps];
        memset(e, 0, sizeof(*e));
        e->name = key;
        e->len = klen;
        n->ndeps++;
        size_t mark = path_push(c, key, klen);
        int rc;
        if (json_is_array(sub) && arrays)
            rc = compile_required_list(c, sub, &e->req, &e->nreq);
        else if (schemas)
            rc = walk(c, sub, base, n->dialect, resource, &e->schema);
        else
            rc = fail(c, "must be an array of property names");
        path_pop(c, mark);
        if (rc < 0)
            return -1;
    }
    return 0;
}

/* Keywords that are annotations only, accepted in both dialects. */
static const char *const annotation_keywords[] = {
    "title", "description", "$comment", "examples", "readOnly", "writeOnly", "deprecated",
    "contentMediaType", "contentEncoding", "contentSchema", "discriminator", "example",
    "externalDocs", "xml", "$vocabulary",
};

static bool is_annotation(const char *key)
{
    if (strncmp(key, "x-", 2) == 0)
        return true;
    for (size_t i = 0; i < sizeof(annotation_keywords) / sizeof(annotation_keywords[0]); i++)
        if (strcmp(key, annotation_keywords[i]) == 0)
            return true;
    return false;
}

/* Keywords of one dialect that the other does not have. */
static const char *const only_d7[] = {"additionalItems"};
static const char *const only_d2020[] = {
    "prefixItems", "minContains", "maxContains", "dependentRequired", "dependentSchemas",
    "unevaluatedItems", "unevaluatedProperties", "$anchor", "$dynamicAnchor", "$dynamicRef",
};

static bool listed(const char *key, const char *const *list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(key, list[i]) == 0)
            return true;
    return false;
}

/* Adds uri -> n; an identical URI defined twice keeps the first. */
static int register_uri(compiler_t *c, const char *uri, node_t *n)
{
    return strmap_add(&c->uris, uri, n) < 0 ? oom(c) : 0;
}

static int new_resource(compiler_t *c, const char *uri, node_t *root, size_t *index)
{
    resource_t *r = realloc(c->s->resources, (c->s->nresources + 1) * sizeof(*r));
    if (r == NULL)
        return oom(c);
    c->s->resources = r;
    r[c->s->nresources].uri = strdup(uri);
    r[c->s->nresources].root = root;
    if (r[c->s->nresources].uri == NULL)
        return oom(c);
    *index = c->s->nresources++;
    return root != NULL ? register_uri(c, uri, root) : 0;
}

/* The dialect named by a "$schema" value, or -1. */
static int dialect_of(const char *uri)
{
    if (strcmp(uri, "http://json-schema.org/draft-07/schema#") == 0 ||
        strcmp(uri, "http://json-schema.org/draft-07/schema") == 0)
        return D7;
    if (strcmp(uri, "https://json-schema.org/draft/2020-12/schema") == 0 ||
        strcmp(uri, "https://json-schema.org/draft/2020-12/schema#") == 0)
        return D2020;
    return -1;
}

/* Strips "#..." off uri in place (an empty fragment names the resource). */
static void strip_fragment(char *uri)
{
    char *h = strchr(uri, '#');
    if (h != NULL)
        *h = '\0';
}

static int compile_keyword(compiler_t *c, node_t *n, const char *key, const json_t *v, const char *base);

/*
 * Compiles the schema js (borrowed) found at c->path, whose base URI is
 * base and dialect dialect, inside resource `resource`: one node per schema
 * position, so compiling is linear in the schema's size. A position
 * already compiled is returned as is. On failure c->err says why.
 */
static int walk(compiler_t *c, const json_t *js, const char *base, int dialect, size_t resource, node_t **out)
{
    *out = ptrmap_get(&c->pos, js);
    if (*out != NULL)
        return 0;
    if (c->depth > MIZAN_SCHEMA_MAX_DEPTH)
        return fail(c, "schema nested deeper than %d levels", MIZAN_SCHEMA_MAX_DEPTH);
    if (!json_is_object(js) && !json_is_boolean(js))
        return fail(c, "a schema must be an object or a boolean");
    node_t *n = calloc(1, sizeof(*n));
    if (n == NULL)
        return oom(c);
    node_t **nodes = realloc(c->s->nodes, (c->s->nnodes + 1) * sizeof(*nodes));
    if (nodes == NULL) {
        free(n);
        return oom(c);
    }
    c->s->nodes = nodes;
    n->index = c->s->nnodes;
    c->s->nodes[c->s->nnodes++] = n;
    if (ptrmap_put(&c->pos, js, n) < 0)
        return oom(c);
    *out = n;
    n->js = js;
    n->dialect = dialect;
    n->resource = resource;
    n->min_length = n->max_length = n->min_items = n->max_items = -1;
    n->min_props = n->max_props = n->max_contains = -1;
    n->min_contains = 1;
    size_t wlen = strlen(c->doc) + c->pathlen + 2;
    n->where = malloc(wlen);
    if (n->where == NULL)
        return oom(c);
    snprintf(n->where, wlen, "%s%s%s", c->doc, c->doc[0] != '\0' ? "#" : "", c->path);
    if (json_is_boolean(js)) {
        n->is_bool = true;
        n->bool_value = json_is_true(js);
        return 0;
    }
    int rc = -1;
    char *own_base = NULL;
    c->depth++;
    const json_t *schema_kw = json_object_get(js, "$schema");
    if (schema_kw != NULL) {
        size_t mark = path_push(c, "$schema", 7);
        int d = json_is_string(schema_kw) ? dialect_of(json_string_value(schema_kw)) : -1;
        if (!json_is_string(schema_kw)) {
            fail(c, "must be a string");
            path_pop(c, mark);
            goto done;
        }
        if (d < 0) {
            fail(c, "unsupported dialect %s (draft-07 \"http://json-schema.org/draft-07/schema#\" and 2020-12 "
                    "\"https://json-schema.org/draft/2020-12/schema\" are)",
                 json_string_value(schema_kw));
            path_pop(c, mark);
            goto done;
        }
        path_pop(c, mark);
        n->dialect = dialect = d;
    }
    bool has_ref = json_object_get(js, "$ref") != NULL;
    n->ref_only = dialect == D7 && has_ref;
    const json_t *id = json_object_get(js, "$id");
    if (id != NULL && !(dialect == D7 && has_ref)) {
        size_t mark = path_push(c, "$id", 3);
        if (!json_is_string(id)) {
            fail(c, "must be a string (a URI reference)");
            path_pop(c, mark);
            goto done;
        }
        const char *ids = json_string_value(id);
        if (ids[0] == '#' && dialect == D7) {
            /* A plain-name fragment: an anchor in the current resource. */
            char *uri = uri_resolve(base, ids);
            rc = uri != NULL ? register_uri(c, uri, n) : oom(c);
            free(uri);
            path_pop(c, mark);
            if (rc < 0)
                goto done;
            rc = -1;
        } else {
            own_base = uri_resolve(base, ids);
            path_pop(c, mark);
            if (own_base == NULL) {
                oom(c);
                goto done;
            }
            if (dialect == D2020 && strchr(own_base, '#') != NULL && strchr(own_base, '#')[1] != '\0') {
                fail(c, "$id must not have a fragment in 2020-12 (use $anchor)");
                goto done;
            }
            strip_fragment(own_base);
            base = own_base;
            if (new_resource(c, base, n, &resource) < 0)
                goto done;
            n->resource = resource;
        }
    }
    const char *key;
    json_t *value;
    json_object_foreach((json_t *)js, key, value) {
        if (strcmp(key, "$schema") == 0 || strcmp(key, "$id") == 0)
            continue;
        size_t mark = path_push(c, key, strlen(key));
        int krc = compile_keyword(c, n, key, value, base);
        path_pop(c, mark);
        if (krc < 0)
            goto done;
    }
    if (n->unevaluated_items != NULL || n->unevaluated_props != NULL) {
        n->tracks = true;
        c->s->tracks = true;
    }
    rc = 0;
done:
    c->depth--;
    free(own_base);
    return rc;
}

static int compile_keyword(compiler_t *c, node_t *n, const char *key, const json_t *v, const char *base)
{
    int d = n->dialect;
    size_t r = n->resource;
    if (listed(key, only_d7, sizeof(only_d7) / sizeof(only_d7[0])) && d != D7)
        goto unknown;
    if (listed(key, only_d2020, sizeof(only_d2020) / sizeof(only_d2020[0])) && d != D2020)
        goto unknown;
    if (strcmp(key, "$ref") == 0 || strcmp(key, "$dynamicRef") == 0) {
        if (!json_is_string(v))
            return fail(c, "must be a string (a URI reference)");
        char *uri = uri_resolve(base, json_string_value(v));
        if (uri == NULL)
            return oom(c);
        if (key[1] == 'r')
            n->ref_uri = uri;
        else
            n->dynref_uri = uri;
        return 0;
    }
    if (strcmp(key, "$anchor") == 0 || strcmp(key, "$dynamicAnchor") == 0) {
        const char *a = json_is_string(v) ? json_string_value(v) : "";
        bool ok = (a[0] >= 'A' && a[0] <= 'Z') || (a[0] >= 'a' && a[0] <= 'z') || a[0] == '_';
        for (const char *p = a; ok && *p != '\0'; p++)
            ok = (*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_' ||
                 *p == '-' || *p == '.';
        if (!ok)
            return fail(c, "must be a plain name ([A-Za-z_][A-Za-z0-9_.-]*)");
        size_t len = strlen(base) + strlen(a) + 2;
        char *uri = malloc(len);
        if (uri == NULL)
            return oom(c);
        snprintf(uri, len, "%s#%s", base, a);
        int rc = register_uri(c, uri, n);
        free(uri);
        if (key[1] == 'd')
            n->dyn_anchor = a;
        return rc;
    }
    if (strcmp(key, "definitions") == 0 || strcmp(key, "$defs") == 0)
        return walk_defs(c, v, base, d, r);
    if (strcmp(key, "default") == 0) {
        /* Kept beside a draft-07 "$ref" too: filling defaults is the
         * gateway's, not a validation keyword, and Pydantic writes
         * {"$ref": ..., "default": ...} without a "$schema". */
        n->dflt = v;
        return 0;
    }
    if (n->ref_only) {
        /* draft-07: "$ref" overrides its siblings; they are still walked so
         * that JSON pointers into them resolve, but never applied. Their
         * content is not checked either (the keyword is ignored). */
        return 0;
    }
    if (strcmp(key, "type") == 0)
        return compile_type(c, n, v);
    if (strcmp(key, "properties") == 0)
        return compile_properties(c, n, v, base, r);
    if (strcmp(key, "patternProperties") == 0)
        return compile_pattern_properties(c, n, v, base, r);
    if (strcmp(key, "additionalProperties") == 0)
        return walk(c, v, base, d, r, &n->additional);
    if (strcmp(key, "propertyNames") == 0)
        return walk(c, v, base, d, r, &n->property_names);
    if (strcmp(key, "unevaluatedProperties") == 0)
        return walk(c, v, base, d, r, &n->unevaluated_props);
    if (strcmp(key, "unevaluatedItems") == 0)
        return walk(c, v, base, d, r, &n->unevaluated_items);
    if (strcmp(key, "required") == 0)
        return compile_required_list(c, v, &n->required, &n->nrequired);
    if (strcmp(key, "dependencies") == 0) {
        n->deps_kw = "dependencies";
        return compile_deps(c, n, v, base, r, true, true);
    }
    if (strcmp(key, "dependentRequired") == 0) {
        n->deps_kw = "dependentRequired";
        return compile_deps(c, n, v, base, r, true, false);
    }
    if (strcmp(key, "dependentSchemas") == 0)
        return compile_deps(c, n, v, base, r, false, true);
    if (strcmp(key, "items") == 0) {
        if (json_is_array(v)) {
            if (d != D7)
                return fail(c, "must be a schema (2020-12 uses prefixItems for tuples)");
            if (json_array_size(v) == 0) {
                n->prefix.v = NULL;
                return 0;
            }
            return walk_list(c, v, base, d, r, &n->prefix);
        }
        n->items_kw = "items";
        return walk(c, v, base, d, r, &n->items);
    }
    if (strcmp(key, "additionalItems") == 0) {
        node_t *sub;
        if (walk(c, v, base, d, r, &sub) < 0)
            return -1;
        if (json_is_array(json_object_get(n->js, "items"))) {
            n->items = sub;
            n->items_kw = "additionalItems";
        }
        return 0;
    }
    if (strcmp(key, "prefixItems") == 0)
        return walk_list(c, v, base, d, r, &n->prefix);
    if (strcmp(key, "contains") == 0)
        return walk(c, v, base, d, r, &n->contains);
    if (strcmp(key, "minContains") == 0)
        return get_count(c, v, &n->min_contains);
    if (strcmp(key, "maxContains") == 0)
        return get_count(c, v, &n->max_contains);
    if (strcmp(key, "allOf") == 0)
        return walk_list(c, v, base, d, r, &n->all_of);
    if (strcmp(key, "anyOf") == 0)
        return walk_list(c, v, base, d, r, &n->any_of);
    if (strcmp(key, "oneOf") == 0)
        return walk_list(c, v, base, d, r, &n->one_of);
    if (strcmp(key, "not") == 0)
        return walk(c, v, base, d, r, &n->not_);
    if (strcmp(key, "if") == 0)
        return walk(c, v, base, d, r, &n->if_);
    if (strcmp(key, "then") == 0)
        return walk(c, v, base, d, r, &n->then_);
    if (strcmp(key, "else") == 0)
        return walk(c, v, base, d, r, &n->else_);
    if (strcmp(key, "enum") == 0) {
        if (!json_is_array(v))
            return fail(c, "must be an array");
        n->enum_values = v;
        n->enum_msg = value_msg("must be one of ", v);
        return n->enum_msg == NULL ? oom(c) : 0;
    }
    if (strcmp(key, "const") == 0) {
        n->const_value = v;
        n->const_msg = value_msg("must be equal to ", v);
        return n->const_msg == NULL ? oom(c) : 0;
    }
    if (strcmp(key, "minimum") == 0 || strcmp(key, "maximum") == 0 || strcmp(key, "exclusiveMinimum") == 0 ||
        strcmp(key, "exclusiveMaximum") == 0) {
        if (!json_is_number(v))
            return fail(c, "must be a number");
        if (strcmp(key, "minimum") == 0)
            n->minimum = v;
        else if (strcmp(key, "maximum") == 0)
            n->maximum = v;
        else if (strcmp(key, "exclusiveMinimum") == 0)
            n->exclusive_minimum = v;
        else
            n->exclusive_maximum = v;
        return 0;
    }
    if (strcmp(key, "multipleOf") == 0) {
        if (!json_is_number(v) || json_number_value(v) <= 0)
            return fail(c, "must be a number greater than 0");
        n->multiple_of = v;
        n->multiple_dec = number_decimal(v);
        return 0;
    }
    if (strcmp(key, "minLength") == 0)
        return get_count(c, v, &n->min_length);
    if (strcmp(key, "maxLength") == 0)
        return get_count(c, v, &n->max_length);
    if (strcmp(key, "minItems") == 0)
        return get_count(c, v, &n->min_items);
    if (strcmp(key, "maxItems") == 0)
        return get_count(c, v, &n->max_items);
    if (strcmp(key, "minProperties") == 0)
        return get_count(c, v, &n->min_props);
    if (strcmp(key, "maxProperties") == 0)
        return get_count(c, v, &n->max_props);
    if (strcmp(key, "pattern") == 0) {
        n->pattern = compile_regex(c, v);
        n->pattern_src = json_is_string(v) ? json_string_value(v) : NULL;
        return n->pattern == NULL ? -1 : 0;
    }
    if (strcmp(key, "uniqueItems") == 0) {
        if (!json_is_boolean(v))
            return fail(c, "must be a boolean");
        n->unique_items = json_is_true(v);
        return 0;
    }
    if (strcmp(key, "format") == 0) {
        if (!json_is_string(v))
            return fail(c, "must be a string");
        if (c->opts->format_assertion)
            n->format = json_string_value(v);
        return 0;
    }
    if (d == D7 && strcmp(key, "contentEncoding") == 0 && json_is_string(v)) {
        /* draft-07 asserts the content keywords it knows; 2020-12 only
         * annotates. */
        n->content_base64 = strcmp(json_string_value(v), "base64") == 0;
        return 0;
    }
    if (d == D7 && strcmp(key, "contentMediaType") == 0 && json_is_string(v)) {
        n->content_json = strcmp(json_string_value(v), "application/json") == 0;
        return 0;
    }
    if (strcmp(key, "title") == 0 || strcmp(key, "description") == 0 || strcmp(key, "$comment") == 0)
        return json_is_string(v) ? 0 : fail(c, "must be a string");
    if (is_annotation(key))
        return 0;
unknown:
    if (c->opts->ignore_unknown)
        return 0;
    if (listed(key, only_d7, sizeof(only_d7) / sizeof(only_d7[0])))
        return fail(c, "a draft-07 keyword; this schema is 2020-12 (see its $schema)");
    if (listed(key, only_d2020, sizeof(only_d2020) / sizeof(only_d2020[0])))
        return fail(c, "a 2020-12 keyword; this schema is draft-07 (add \"$schema\": "
                       "\"https://json-schema.org/draft/2020-12/schema\" to use it)");
    return fail(c, "unknown keyword");
}

/* ------------------------------------------------------- resolving $refs */

/* Reads the document at uri (which starts with the schema directory's base
 * URI) and compiles it. NULL with c->err set on failure. */
static node_t *load_document(compiler_t *c, const char *uri, int dialect)
{
    const char *dir = c->opts->dir;
    const char *rest = uri + strlen(c->base_uri);
    if (rest[0] == '\0' || strstr(rest, "..") != NULL || strchr(rest, '\\') != NULL || strchr(rest, '?') != NULL) {
        fail(c, "$ref to \"%s\": not a file name under the schema directory", uri);
        return NULL;
    }
    size_t plen = strlen(dir) + strlen(rest) + 2;
    char *path = malloc(plen);
    if (path == NULL) {
        oom(c);
        return NULL;
    }
    snprintf(path, plen, "%s/%s", dir, rest);
    json_error_t jerr;
    json_t *doc = json_load_file(path, JSON_DECODE_ANY, &jerr);
    if (doc == NULL) {
        fail(c, "$ref to \"%s\": cannot read %s: %s", uri, path, jerr.text);
        free(path);
        return NULL;
    }
    free(path);
    if (json_array_append_new(c->s->loaded, doc) < 0) {
        oom(c);
        return NULL;
    }
    char saved_doc[sizeof(c->doc)];
    char saved_path[sizeof(c->path)];
    size_t saved_len = c->pathlen, saved_depth = c->depth;
    memcpy(saved_doc, c->doc, sizeof(saved_doc));
    memcpy(saved_path, c->path, sizeof(saved_path));
    snprintf(c->doc, sizeof(c->doc), "%s", uri);
    c->path[0] = '\0';
    c->pathlen = 0;
    c->depth = 0;
    size_t res = 0;
    node_t *root = NULL;
    int rc = new_resource(c, uri, NULL, &res);
    if (rc == 0)
        rc = walk(c, doc, uri, dialect, res, &root);
    if (rc == 0) {
        c->s->resources[res].root = root;
        rc = register_uri(c, uri, root);
    }
    if (rc < 0)
        return NULL; /* c->err names the document */
    memcpy(c->doc, saved_doc, sizeof(saved_doc));
    memcpy(c->path, saved_path, sizeof(saved_path));
    c->pathlen = saved_len;
    c->depth = saved_depth;
    return root;
}

/* Follows the JSON pointer ptr (percent-decoded, without '#') from the
 * resource root `root`, tracking "$id"s on the way for the base URI, and
 * returns the node there (compiling it when no schema keyword leads to
 * it). NULL with c->err set on failure. */
static node_t *follow_pointer(compiler_t *c, const node_t *from, node_t *root, const char *ptr)
{
    const json_t *cur = root->js;
    int dialect = root->dialect;
    char *base = strdup(c->s->resources[root->resource].uri);
    if (base == NULL) {
        oom(c);
        return NULL;
    }
    const char *p = ptr;
    node_t *found = NULL;
    while (*p == '/') {
        p++;
        size_t len = strcspn(p, "/");
        char tok[256];
        size_t t = 0;
        for (size_t i = 0; i < len && t + 1 < sizeof(tok); i++) {
            if (p[i] == '~' && i + 1 < len && (p[i + 1] == '0' || p[i + 1] == '1')) {
                tok[t++] = p[i + 1] == '0' ? '~' : '/';
                i++;
            } else {
                tok[t++] = p[i];
            }
        }
        tok[t] = '\0';
        p += len;
        if (json_is_object(cur)) {
            cur = json_object_get(cur, tok);
        } else if (json_is_array(cur)) {
            char *end;
            unsigned long k = strtoul(tok, &end, 10);
            cur = tok[0] >= '0' && tok[0] <= '9' && *end == '\0' ? json_array_get(cur, k) : NULL;
        } else {
            cur = NULL;
        }
        if (cur == NULL)
            break;
        const json_t *id = json_object_get(cur, "$id");
        const json_t *sch = json_object_get(cur, "$schema");
        if (json_is_string(sch) && dialect_of(json_string_value(sch)) >= 0)
            dialect = dialect_of(json_string_value(sch));
        if (json_is_string(id) && json_string_value(id)[0] != '#' &&
            !(dialect == D7 && json_object_get(cur, "$ref") != NULL)) {
            char *nb = uri_resolve(base, json_string_value(id));
            if (nb == NULL) {
                free(base);
                oom(c);
                return NULL;
            }
            strip_fragment(nb);
            free(base);
            base = nb;
        }
    }
    if (cur == NULL) {
        mizan_err_set(c->err, "%s/$ref: no schema at JSON pointer \"%s\"", from->where, ptr);
    } else if ((found = ptrmap_get(&c->pos, cur)) == NULL) {
        size_t saved_len = c->pathlen;
        char saved_path[sizeof(c->path)];
        memcpy(saved_path, c->path, sizeof(saved_path));
        snprintf(c->path, sizeof(c->path), "%s", ptr);
        c->pathlen = strlen(c->path);
        if (walk(c, cur, base, dialect, root->resource, &found) < 0)
            found = NULL;
        memcpy(c->path, saved_path, sizeof(saved_path));
        c->pathlen = saved_len;
    }
    free(base);
    return found;
}

/* The node an absolute URI names, loading a document of the schema
 * directory when needed. NULL with c->err set. */
static node_t *resolve_uri(compiler_t *c, const node_t *from, const char *kw, const char *uri)
{
    char *doc = strdup(uri);
    if (doc == NULL) {
        oom(c);
        return NULL;
    }
    size_t dl = strlen(doc);
    if (dl > 0 && doc[dl - 1] == '#')
        doc[dl - 1] = '\0';
    node_t *t = strmap_get(&c->uris, doc);
    if (t != NULL) {
        free(doc);
        return t;
    }
    char *frag = strchr(doc, '#');
    if (frag != NULL)
        *frag++ = '\0';
    else
        frag = doc + strlen(doc);
    node_t *root = strmap_get(&c->uris, doc);
    if (root == NULL) {
        bool local = c->opts->dir != NULL && strncmp(doc, c->base_uri, strlen(c->base_uri)) == 0;
        if (!local) {
            if (strncmp(doc, c->base_uri, strlen(c->base_uri)) == 0)
                mizan_err_set(c->err, "%s/%s: \"%s\" names a file of the schema directory, but none is configured",
                              from->where, kw, uri);
            else
                mizan_err_set(c->err,
                              "%s/%s: remote reference \"%s\" refused: schemas are never fetched over the network; "
                              "put the document in the configured schema directory",
                              from->where, kw, uri);
            free(doc);
            return NULL;
        }
        root = load_document(c, doc, from->dialect);
        if (root == NULL) {
            free(doc);
            return NULL;
        }
    }
    if (frag[0] == '\0') {
        free(doc);
        return root;
    }
    /* An anchor of a document loaded just now. */
    if (frag[0] != '/' && (t = strmap_get(&c->uris, uri)) != NULL) {
        free(doc);
        return t;
    }
    percent_decode(frag);
    if (frag[0] == '/') {
        t = follow_pointer(c, from, root, frag);
    } else {
        mizan_err_set(c->err, "%s/%s: no $anchor or $id names \"%s\"", from->where, kw, uri);
        t = NULL;
    }
    free(doc);
    return t;
}

/* Resolves every $ref and $dynamicRef (also those of documents loaded on
 * the way, which append nodes). */
static int resolve_refs(compiler_t *c)
{
    for (size_t i = 0; i < c->s->nnodes; i++) {
        node_t *n = c->s->nodes[i];
        if (n->ref_uri != NULL) {
            n->ref = resolve_uri(c, n, "$ref", n->ref_uri);
            if (n->ref == NULL)
                return -1;
            free(n->ref_uri);
            n->ref_uri = NULL;
        }
        if (n->dynref_uri != NULL) {
            n->dynref = resolve_uri(c, n, "$dynamicRef", n->dynref_uri);
            if (n->dynref == NULL)
                return -1;
            const char *frag = strchr(n->dynref_uri, '#');
            if (frag != NULL && frag[1] != '/' && n->dynref->dyn_anchor != NULL &&
                strcmp(frag + 1, n->dynref->dyn_anchor) == 0)
                n->dynref_anchor = n->dynref->dyn_anchor;
            free(n->dynref_uri);
            n->dynref_uri = NULL;
        }
    }
    return 0;
}

/* The schemas a node applies to the very value it is applied to. */
typedef struct inplace_iter {
    const node_t *n;
    size_t k;
} inplace_iter_t;

static node_t *inplace_next(inplace_iter_t *it)
{
    const node_t *n = it->n;
    for (;;) {
        size_t k = it->k++;
        if (k == 0) {
            if (n->ref != NULL)
                return n->ref;
            continue;
        }
        if (n->ref_only)
            return NULL;
        if (k == 1) {
            if (n->dynref != NULL)
                return n->dynref;
            continue;
        }
        k -= 2;
        if (k < n->all_of.n)
            return n->all_of.v[k];
        k -= n->all_of.n;
        if (k < n->any_of.n)
            return n->any_of.v[k];
        k -= n->any_of.n;
        if (k < n->one_of.n)
            return n->one_of.v[k];
        k -= n->one_of.n;
        if (k < n->ndeps) {
            if (n->deps[k].schema != NULL)
                return n->deps[k].schema;
            continue;
        }
        k -= n->ndeps;
        node_t *last[] = {n->not_, n->if_, n->then_, n->else_};
        if (k < 4) {
            if (last[k] != NULL)
                return last[k];
            continue;
        }
        return NULL;
    }
}

/* Depth-first search for a cycle of in-place schemas ($ref chains that
 * come back without looking into the value): validating through one would
 * never end, so such a schema is refused at load. color: 0 new, 1 on the
 * current path, 2 done. */
static int find_cycle(compiler_t *c, node_t *n, unsigned char *color, size_t depth)
{
    if (color[n->index] == 2)
        return 0;
    if (color[n->index] == 1)
        return mizan_err_set(c->err, "%s: $ref cycle: this schema refers back to itself without looking into "
                                     "the value, so validating through it would never end",
                             n->where);
    if (depth > 10000)
        return mizan_err_set(c->err, "%s: chain of $ref/allOf/anyOf/oneOf longer than 10000 schemas", n->where);
    color[n->index] = 1;
    inplace_iter_t it = {n, 0};
    node_t *next;
    while ((next = inplace_next(&it)) != NULL)
        if (find_cycle(c, next, color, depth + 1) < 0)
            return -1;
    color[n->index] = 2;
    return 0;
}

/* Type bits a value valid against n can have (scalar coercion of context
 * params); depth bounds the walk (cycles were refused before). */
static unsigned possible_types(const node_t *n, int depth)
{
    const unsigned all = (1u << NTYPES) - 1;
    if (n == NULL || depth > 32)
        return all;
    if (n->is_bool)
        return n->bool_value ? all : 0;
    unsigned bits = n->types != 0 ? n->types : all;
    if (bits & T_NUMBER)
        bits |= T_INTEGER;
    if (n->ref != NULL)
        bits &= possible_types(n->ref, depth + 1);
    if (n->ref_only)
        return bits;
    if (n->dynref != NULL)
        bits &= possible_types(n->dynref, depth + 1);
    for (size_t i = 0; i < n->all_of.n; i++)
        bits &= possible_types(n->all_of.v[i], depth + 1);
    const nlist_t *alts[] = {&n->any_of, &n->one_of};
    for (size_t a = 0; a < 2; a++) {
        if (alts[a]->n == 0)
            continue;
        unsigned u = 0;
        for (size_t i = 0; i < alts[a]->n; i++)
            u |= possible_types(alts[a]->v[i], depth + 1);
        bits &= u;
    }
    const json_t *values = n->enum_values;
    if (n->const_value != NULL || values != NULL) {
        unsigned u = 0;
        if (n->const_value != NULL)
            u |= type_bits(n->const_value);
        for (size_t i = 0; values != NULL && i < json_array_size(values); i++)
            u |= type_bits(json_array_get(values, i));
        bits &= u;
    }
    return bits;
}

/* {name: [type names]} for the root's properties, in coercion order. */
static int build_param_types(mizan_schema_t *s)
{
    s->param_types = json_object();
    if (s->param_types == NULL)
        return -1;
    const node_t *root = s->root;
    if (root->ref_only && root->ref != NULL)
        root = root->ref;
    static const unsigned order[] = {T_INTEGER, T_NUMBER, T_BOOLEAN, T_NULL, T_STRING, T_OBJECT, T_ARRAY};
    static const char *const names[] = {"integer", "number", "boolean", "null", "string", "object", "array"};
    for (size_t i = 0; i < root->nprops; i++) {
        unsigned bits = possible_types(root->props[i].schema, 0);
        /* "number" covers integers; only list it when non-integers may come. */
        if ((bits & T_NUMBER) && root->props[i].schema->types != 0 &&
            !(root->props[i].schema->types & T_NUMBER))
            bits &= ~(unsigned)T_NUMBER;
        json_t *arr = json_array();
        if (arr == NULL)
            return -1;
        for (size_t k = 0; k < sizeof(order) / sizeof(order[0]); k++)
            if ((bits & order[k]) && json_array_append_new(arr, json_string(names[k])) < 0) {
                json_decref(arr);
                return -1;
            }
        if (json_object_setn_new(s->param_types, root->props[i].name, root->props[i].len, arr) < 0)
            return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------ PCRE2 */

/*
 * Per-thread PCRE2 scratch, created on the thread's first match and freed
 * by the key's destructor when the thread exits:
 *   - a match data block with one ovector pair (a yes/no test needs no
 *     captures); PCRE2 (10.41+) also keeps the interpreter's backtracking
 *     frames in it, so later matches on the thread reuse that memory;
 *   - a JIT stack, handed to PCRE2 by jit_stack_for_thread() (the match
 *     context's JIT callback), so JIT matching of long strings is not held
 *     to the default 32 KiB machine-stack block. Its address space is
 *     reserved up front but pages are only touched as the stack grows.
 */
typedef struct thread_scratch {
    pcre2_match_data *md;       /* this thread's match data */
    pcre2_jit_stack *jit;       /* this thread's JIT stack; NULL: PCRE2's default */
    pcre2_match_context *mctx;  /* depth/heap limits; the match limit is set
                                   before every match from the request budget */
} thread_scratch_t;

static pcre2_jit_stack *jit_stack_for_thread(void *unused);

static pthread_once_t scratch_key_once = PTHREAD_ONCE_INIT;
static pthread_key_t scratch_key;
static bool scratch_key_ok;

static void scratch_destroy(void *p)
{
    thread_scratch_t *ts = p;
    pcre2_match_data_free(ts->md);
    pcre2_jit_stack_free(ts->jit);
    pcre2_match_context_free(ts->mctx);
    free(ts);
}

static void scratch_key_create(void)
{
    scratch_key_ok = pthread_key_create(&scratch_key, scratch_destroy) == 0;
}

/* This thread's scratch (created on first use), or NULL when out of
 * memory. */
static thread_scratch_t *thread_scratch(void)
{
    pthread_once(&scratch_key_once, scratch_key_create);
    if (!scratch_key_ok)
        return NULL;
    thread_scratch_t *ts = pthread_getspecific(scratch_key);
    if (ts != NULL)
        return ts;
    ts = calloc(1, sizeof(*ts));
    if (ts == NULL)
        return NULL;
    ts->md = pcre2_match_data_create(1, NULL);
    /* Without a JIT stack PCRE2 falls back to its small default. */
    ts->jit = pcre2_jit_stack_create(32 * 1024, JIT_STACK_MAX, NULL);
    ts->mctx = pcre2_match_context_create(NULL);
    if (ts->md == NULL || ts->mctx == NULL || pthread_setspecific(scratch_key, ts) != 0) {
        scratch_destroy(ts);
        return NULL;
    }
    pcre2_set_depth_limit(ts->mctx, DEPTH_LIMIT);
    pcre2_set_heap_limit(ts->mctx, HEAP_LIMIT_KIB);
    pcre2_jit_stack_assign(ts->mctx, jit_stack_for_thread, NULL);
    return ts;
}

/* The match context's JIT stack callback: the calling thread's stack. Only
 * called inside pattern_test(), after thread_scratch() succeeded. */
static pcre2_jit_stack *jit_stack_for_thread(void *unused)
{
    (void)unused;
    thread_scratch_t *ts = scratch_key_ok ? pthread_getspecific(scratch_key) : NULL;
    return ts != NULL ? ts->jit : NULL;
}

/* Outcomes of pattern_test. */
enum {
    MATCH_OOM = -1,
    MATCH_NO = 0,
    MATCH_YES = 1,
    MATCH_TOO_COSTLY = 2,
    MATCH_ERROR = 3,
    MATCH_BUDGET = 4,
};

/*
 * Searches the pattern anywhere in str (len bytes, valid UTF-8), spending
 * at most *budget work units (decremented by what was charged).
 *
 * PCRE2 cannot say how many steps a match took, only stop one at a limit,
 * so the limit escalates: a first try with a small limit (enough for any
 * ordinary pattern on that string) and, when it is hit, tries with eight
 * times the limit, up to MATCH_LIMIT per value and to what is left of the
 * budget. Every try is charged its whole limit, so the charge is at most
 * about nine times the work done, and the work done never exceeds the
 * charge. MATCH_BUDGET: the request's budget ran out first.
 */
static int pattern_test(pcre2_code *re, const char *str, size_t len, int64_t *budget)
{
    thread_scratch_t *ts = thread_scratch();
    if (ts == NULL)
        return MATCH_OOM;
    uint64_t limit = 256 + 4 * (uint64_t)len;
    *budget -= (int64_t)(len / 4);
    for (;;) {
        if (*budget <= 0)
            return MATCH_BUDGET;
        if (limit > MATCH_LIMIT)
            limit = MATCH_LIMIT;
        if (limit > (uint64_t)*budget)
            limit = (uint64_t)*budget;
        *budget -= (int64_t)limit;
        pcre2_set_match_limit(ts->mctx, (uint32_t)limit);
        int rc = pcre2_match(re, (PCRE2_SPTR)str, len, 0, 0, ts->md, ts->mctx);
        if (rc == PCRE2_ERROR_JIT_STACKLIMIT)
            rc = pcre2_match(re, (PCRE2_SPTR)str, len, 0, PCRE2_NO_JIT, ts->md, ts->mctx);
        if (rc >= 0)
            return MATCH_YES; /* 0: matched, ovector too small for the groups */
        switch (rc) {
        case PCRE2_ERROR_NOMATCH:
            return MATCH_NO;
        case PCRE2_ERROR_MATCHLIMIT:
            if (*budget <= 0)
                return MATCH_BUDGET;
            if (limit >= MATCH_LIMIT)
                return MATCH_TOO_COSTLY;
            limit *= 8;
            continue;
        case PCRE2_ERROR_DEPTHLIMIT:
        case PCRE2_ERROR_HEAPLIMIT:
        case PCRE2_ERROR_JIT_STACKLIMIT:
            return MATCH_TOO_COSTLY;
        case PCRE2_ERROR_NOMEMORY:
            return MATCH_OOM;
        default:
            return MATCH_ERROR;
        }
    }
}

/* -------------------------------------------------------------- validator */
/* -------------------------------------------------------------- validator */

/* One step of the current location: a key, or an index when key is NULL. */
typedef struct seg {
    const char *key; /* borrowed from the instance or schema; NULL: index */
    size_t len;      /* key length */
    size_t index;    /* array index */
} seg_t;

/* One violation found, kept until validation ends (a branch of anyOf may
 * still discard it). Its location and message live in the pools. */
typedef struct rec {
    size_t seg_off;   /* first segment in vctx.segs */
    size_t nseg;      /* number of segments */
    size_t msg_off;   /* message in vctx.msgs (NUL-terminated) */
    const char *type; /* the keyword (static or borrowed from the schema) */
} rec_t;

/* Deepest location kept (instance nesting is bounded by the request
 * parser; deeper is refused as too costly). */
#define LOC_MAX 160
/* Deepest nesting of schema applications in one validation. */
#define EVAL_DEPTH_MAX 400

/* Validation state, on the caller's stack. */
typedef struct vctx {
    const mizan_schema_t *s; /* the schema */
    const char *loc_root;    /* first loc element, or NULL */
    rec_t *recs;             /* violations kept, in order */
    size_t nrecs, caprecs;
    seg_t *segs;             /* pool of location segments */
    size_t nsegs, capsegs;
    char *msgs;              /* pool of messages */
    size_t nmsgs, capmsgs;
    size_t nfail;            /* violations found (kept or, when quiet, only counted) */
    int quiet;               /* > 0: only count violations (a branch being tried) */
    size_t quiet_mark;       /* nfail when the outermost quiet try began */
    bool oom;                /* an allocation failed */
    bool too_costly;         /* a pattern hit its limits in this call */
    int64_t budget;          /* work units left (see MIZAN_SCHEMA_BUDGET) */
    bool exhausted;          /* validation stopped: the budget ran out, or ... */
    bool costly_stop;        /* ... a pattern was too costly while a branch was tried */
    size_t eval_depth;       /* nesting of validate_node calls */
    size_t depth;            /* entries used in loc */
    seg_t loc[LOC_MAX];
    size_t scope[EVAL_DEPTH_MAX + 1]; /* dynamic scope: resources entered, outermost first */
    size_t nscope;
} vctx_t;

/* True when the current try can stop: out of budget or memory, or a quiet
 * try that already failed. */
static bool halted(const vctx_t *v)
{
    return v->exhausted || v->oom || (v->quiet > 0 && v->nfail > v->quiet_mark);
}

static void loc_push_key(vctx_t *v, const char *key, size_t len)
{
    if (v->depth < LOC_MAX) {
        v->loc[v->depth].key = key;
        v->loc[v->depth].len = len;
    }
    v->depth++;
}

static void loc_push_index(vctx_t *v, size_t index)
{
    if (v->depth < LOC_MAX) {
        v->loc[v->depth].key = NULL;
        v->loc[v->depth].index = index;
    }
    v->depth++;
}

static void loc_pop(vctx_t *v)
{
    v->depth--;
}

static bool grow(void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return true;
    size_t ncap = *cap != 0 ? *cap : 16;
    while (ncap < need)
        ncap *= 2;
    void *np = realloc(*p, ncap * elem);
    if (np == NULL)
        return false;
    *p = np;
    *cap = ncap;
    return true;
}

/* Records one violation at the current location. */
static void report(vctx_t *v, const char *type, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void report(vctx_t *v, const char *type, const char *fmt, ...)
{
    v->nfail++;
    if (v->quiet > 0)
        return;
    v->budget -= COST_REPORT;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    int len = vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (len < 0)
        len = 0;
    if ((size_t)len >= sizeof(msg))
        len = (int)sizeof(msg) - 1;
    size_t nseg = v->depth < LOC_MAX ? v->depth : LOC_MAX;
    if (!grow((void **)&v->recs, &v->caprecs, v->nrecs + 1, sizeof(*v->recs)) ||
        !grow((void **)&v->segs, &v->capsegs, v->nsegs + nseg, sizeof(*v->segs)) ||
        !grow((void **)&v->msgs, &v->capmsgs, v->nmsgs + (size_t)len + 1, 1)) {
        v->oom = true;
        return;
    }
    rec_t *r = &v->recs[v->nrecs++];
    r->seg_off = v->nsegs;
    r->nseg = nseg;
    r->msg_off = v->nmsgs;
    r->type = type;
    if (nseg > 0)
        memcpy(v->segs + v->nsegs, v->loc, nseg * sizeof(*v->segs));
    v->nsegs += nseg;
    memcpy(v->msgs + v->nmsgs, msg, (size_t)len);
    v->msgs[v->nmsgs + (size_t)len] = '\0';
    v->nmsgs += (size_t)len + 1;
}

/* A point to come back to: what was found so far. */
typedef struct mark {
    size_t nrecs;
    size_t nfail;
} mark_t;

static mark_t mark_now(const vctx_t *v)
{
    return (mark_t){v->nrecs, v->nfail};
}

/* Forgets what was found since m. */
static void mark_reset(vctx_t *v, mark_t m)
{
    v->nrecs = m.nrecs;
    v->nfail = m.nfail;
}

static bool failed_since(const vctx_t *v, mark_t m)
{
    return v->nfail > m.nfail;
}

static void quiet_begin(vctx_t *v, int *saved_mark_set, size_t *saved_mark)
{
    *saved_mark_set = v->quiet;
    *saved_mark = v->quiet_mark;
    if (v->quiet == 0)
        v->quiet_mark = v->nfail;
    v->quiet++;
}

static void quiet_end(vctx_t *v, size_t saved_mark)
{
    v->quiet--;
    v->quiet_mark = saved_mark;
}

/* ------------------------------------------------------------ annotations */

/*
 * Which properties or items of one object or array the schemas applied to
 * it so far have evaluated, for unevaluatedProperties/unevaluatedItems.
 * Object members are numbered by their position in the sorted list of the
 * object's keys (built on first use), items by their index.
 */
typedef struct eval {
    const json_t *inst;  /* the object or array (borrowed) */
    bool all;            /* everything evaluated */
    unsigned char *bits; /* one bit per member/item (owned), or NULL: none yet */
    size_t n;            /* members/items */
    member_t *keys;      /* objects: members sorted by name (owned), or NULL */
} eval_t;

static void eval_init(eval_t *e, const json_t *inst)
{
    memset(e, 0, sizeof(*e));
    e->inst = inst;
    e->n = json_is_object(inst) ? json_object_size(inst) : json_is_array(inst) ? json_array_size(inst) : 0;
}

static void eval_deinit(eval_t *e)
{
    free(e->bits);
    free(e->keys);
}

static bool eval_ready(vctx_t *v, eval_t *e)
{
    if (e->bits != NULL || e->n == 0)
        return true;
    e->bits = calloc((e->n + 7) / 8, 1);
    if (e->bits == NULL) {
        v->oom = true;
        return false;
    }
    if (json_is_object(e->inst)) {
        e->keys = malloc(e->n * sizeof(*e->keys));
        if (e->keys == NULL) {
            v->oom = true;
            return false;
        }
        size_t k = 0;
        const char *key;
        size_t klen;
        json_t *member;
        json_object_keylen_foreach((json_t *)e->inst, key, klen, member) {
            e->keys[k].key = key;
            e->keys[k].len = klen;
            e->keys[k].value = member;
            k++;
        }
        qsort(e->keys, e->n, sizeof(*e->keys), member_cmp);
        v->budget -= (int64_t)(e->n * 8);
    }
    return true;
}

static size_t eval_key_index(const eval_t *e, const char *key, size_t len)
{
    member_t probe = {key, len, NULL};
    const member_t *m = bsearch(&probe, e->keys, e->n, sizeof(*e->keys), member_cmp);
    return m != NULL ? (size_t)(m - e->keys) : e->n;
}

static void eval_mark(vctx_t *v, eval_t *e, size_t i)
{
    if (e == NULL || e->all || i >= e->n || !eval_ready(v, e))
        return;
    e->bits[i / 8] |= (unsigned char)(1u << (i % 8));
}

static void eval_mark_key(vctx_t *v, eval_t *e, const char *key, size_t len)
{
    if (e == NULL || e->all || !eval_ready(v, e))
        return;
    eval_mark(v, e, eval_key_index(e, key, len));
}

static bool eval_has(const eval_t *e, size_t i)
{
    return e->all || (e->bits != NULL && (e->bits[i / 8] & (1u << (i % 8))));
}

/* Adds what src found to dst (same instance). */
static void eval_merge(vctx_t *v, eval_t *dst, const eval_t *src)
{
    if (dst == NULL || dst->all)
        return;
    if (src->all) {
        dst->all = true;
        return;
    }
    if (src->bits == NULL || !eval_ready(v, dst))
        return;
    for (size_t i = 0; i < (dst->n + 7) / 8; i++)
        dst->bits[i] |= src->bits[i];
}

/* ---------------------------------------------------------------- checks */

static int validate_node(vctx_t *v, const node_t *n, const json_t *inst, eval_t *ev);

/* "expected string or null, got integer", naming the types as written. */
static void report_type(vctx_t *v, const node_t *n, const json_t *inst)
{
    char expected[128];
    size_t pos = 0;
    expected[0] = '\0';
    for (size_t i = 0; i < n->ntypes; i++) {
        const char *sep = i == 0 ? "" : i + 1 == n->ntypes ? " or " : ", ";
        int w = snprintf(expected + pos, sizeof(expected) - pos, "%s%s", sep, type_names[n->type_order[i]]);
        if (w > 0 && (size_t)w < sizeof(expected) - pos)
            pos += (size_t)w;
    }
    report(v, "type", "expected %s, got %s", expected, type_name_of(inst));
}

static const char *plural(long long n, const char *one, const char *many)
{
    return n == 1 ? one : many;
}

static void check_number(vctx_t *v, const node_t *n, const json_t *inst)
{
    char num[48];
    if (n->minimum != NULL && number_cmp(inst, n->minimum) < 0) {
        number_text(n->minimum, num, sizeof(num));
        report(v, "minimum", "must be >= %s", num);
    }
    if (n->maximum != NULL && number_cmp(inst, n->maximum) > 0) {
        number_text(n->maximum, num, sizeof(num));
        report(v, "maximum", "must be <= %s", num);
    }
    if (n->exclusive_minimum != NULL && number_cmp(inst, n->exclusive_minimum) <= 0) {
        number_text(n->exclusive_minimum, num, sizeof(num));
        report(v, "exclusiveMinimum", "must be > %s", num);
    }
    if (n->exclusive_maximum != NULL && number_cmp(inst, n->exclusive_maximum) >= 0) {
        number_text(n->exclusive_maximum, num, sizeof(num));
        report(v, "exclusiveMaximum", "must be < %s", num);
    }
    if (n->multiple_of != NULL && !decimal_multiple(number_decimal(inst), n->multiple_dec)) {
        number_text(n->multiple_of, num, sizeof(num));
        report(v, "multipleOf", "must be a multiple of %s", num);
    }
}

/* Length of a UTF-8 string in code points: the bytes that do not continue
 * a sequence. */
static long long code_points(const char *s, size_t len)
{
    long long count = 0;
    for (size_t i = 0; i < len; i++)
        if (((unsigned char)s[i] & 0xC0) != 0x80)
            count++;
    return count;
}

/* Runs pattern re on str, charging the budget; 1 match, 0 no match, -1
 * the value or the request was too costly (reported). */
static int regex_test(vctx_t *v, pcre2_code *re, const char *str, size_t len, const char *type)
{
    /* After one value was too costly the instance is invalid anyway; not
     * evaluating further patterns keeps one request from spending the
     * per-value limit once per string it contains. */
    if (v->too_costly)
        return 1;
    switch (pattern_test(re, str, len, &v->budget)) {
    case MATCH_OOM:
        v->oom = true;
        return -1;
    case MATCH_YES:
        return 1;
    case MATCH_NO:
        return 0;
    case MATCH_BUDGET:
        v->exhausted = true;
        return -1;
    case MATCH_TOO_COSTLY:
        v->too_costly = true;
        report(v, type, "pattern too costly to evaluate on this value");
        if (v->quiet > 0) {
            /* A branch being tried (anyOf, not, if...) cannot be decided,
             * and its verdict would decide others: stop, and refuse the
             * whole value (see mizan_schema_validate). */
            v->exhausted = true;
            v->costly_stop = true;
        }
        return -1;
    default:
        report(v, type, "pattern could not be evaluated on this value");
        return -1;
    }
}

/* Decodes base64 text (padded, RFC 4648 alphabet) into out (len * 3 / 4
 * bytes at least); returns the decoded length, or -1 when not base64. */
static long base64_decode(const char *s, size_t len, unsigned char *out)
{
    if (len % 4 != 0)
        return -1;
    size_t o = 0;
    for (size_t i = 0; i < len; i += 4) {
        unsigned val = 0;
        int pad = 0;
        for (size_t k = 0; k < 4; k++) {
            char ch = s[i + k];
            int d;
            if (ch >= 'A' && ch <= 'Z')
                d = ch - 'A';
            else if (ch >= 'a' && ch <= 'z')
                d = ch - 'a' + 26;
            else if (ch >= '0' && ch <= '9')
                d = ch - '0' + 52;
            else if (ch == '+')
                d = 62;
            else if (ch == '/')
                d = 63;
            else if (ch == '=' && i + 4 == len && k >= 2)
                d = 0, pad++;
            else
                return -1;
            if (pad > 0 && ch != '=')
                return -1;
            val = val << 6 | (unsigned)d;
        }
        out[o++] = (unsigned char)(val >> 16);
        if (pad < 2)
            out[o++] = (unsigned char)(val >> 8);
        if (pad < 1)
            out[o++] = (unsigned char)val;
    }
    return (long)o;
}

/* draft-07 contentEncoding / contentMediaType assertions. */
static void check_content(vctx_t *v, const node_t *n, const char *str, size_t len)
{
    v->budget -= (int64_t)len;
    unsigned char *decoded = NULL;
    const char *text = str;
    size_t tlen = len;
    if (n->content_base64) {
        decoded = malloc(len / 4 * 3 + 1);
        if (decoded == NULL) {
            v->oom = true;
            return;
        }
        long dl = base64_decode(str, len, decoded);
        if (dl < 0) {
            free(decoded);
            report(v, "contentEncoding", "must be base64-encoded");
            return;
        }
        text = (const char *)decoded;
        tlen = (size_t)dl;
    }
    if (n->content_json) {
        json_error_t jerr;
        json_t *doc = json_loadb(text, tlen, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
        if (doc == NULL)
            report(v, "contentMediaType", "must be a JSON document");
        json_decref(doc);
    }
    free(decoded);
}

static void check_string(vctx_t *v, const node_t *n, const json_t *inst)
{
    const char *str = json_string_value(inst);
    size_t len = json_string_length(inst);
    if (n->min_length >= 0 || n->max_length >= 0) {
        v->budget -= (int64_t)(len / 16);
        long long cps = code_points(str, len);
        if (n->min_length >= 0 && cps < n->min_length)
            report(v, "minLength", "at least %lld %s", n->min_length,
                   plural(n->min_length, "character", "characters"));
        if (n->max_length >= 0 && cps > n->max_length)
            report(v, "maxLength", "at most %lld %s", n->max_length,
                   plural(n->max_length, "character", "characters"));
    }
    if (n->pattern != NULL && regex_test(v, n->pattern, str, len, "pattern") == 0)
        report(v, "pattern", "must match pattern %s", n->pattern_src);
    if (n->content_base64 || n->content_json)
        check_content(v, n, str, len);
    if (n->format != NULL) {
        v->budget -= (int64_t)(len + 64);
        if (!mizan_schema_format_check(n->format, str, len))
            report(v, "format", "must be a valid %s", n->format);
    }
}

/* One item of the sorted uniqueness check. */
typedef struct keyed {
    size_t off;   /* its encoding: canon.buf + off ... */
    size_t len;   /* ... len bytes */
    size_t index; /* its position in the array */
} keyed_t;

/* The encodings' order, for qsort (ties by position, so equal items end up
 * in array order); the buffer is passed through a thread-local pointer
 * because qsort has no context argument. */
static _Thread_local const unsigned char *keyed_base;

static int keyed_cmp(const void *a, const void *b)
{
    const keyed_t *x = a, *y = b;
    size_t n = x->len < y->len ? x->len : y->len;
    int r = memcmp(keyed_base + x->off, keyed_base + y->off, n);
    if (r != 0)
        return r;
    if (x->len != y->len)
        return x->len < y->len ? -1 : 1;
    return x->index < y->index ? -1 : x->index > y->index ? 1 : 0;
}

static bool keyed_same(const unsigned char *base, const keyed_t *x, const keyed_t *y)
{
    return x->len == y->len && memcmp(base + x->off, base + y->off, x->len) == 0;
}

/*
 * Finds the first duplicate of arr (borrowed): the smallest j with an equal
 * earlier item i (the smallest such i). Every item is encoded canonically
 * once and the encodings are sorted, so the cost is O(size + n log n)
 * comparisons for any input (charged to *budget). Returns 1 with *pi, *pj
 * set, 0 when all items are distinct, -1 when out of memory.
 */
static int find_duplicate(const json_t *arr, size_t *pi, size_t *pj, int64_t *budget)
{
    size_t n = json_array_size(arr);
    if (n < 2)
        return 0;
    canon_t c = {0};
    keyed_t *k = malloc(n * sizeof(*k));
    int rc = -1;
    if (k == NULL)
        goto done;
    for (size_t i = 0; i < n; i++) {
        k[i].off = c.len;
        k[i].index = i;
        if (canon_value(&c, json_array_get(arr, i)) < 0)
            goto done;
        k[i].len = c.len - k[i].off;
    }
    size_t log2n = 1;
    while (((size_t)1 << log2n) < n)
        log2n++;
    *budget -= (int64_t)(c.units / 2 + n * log2n * COST_COMPARE);
    keyed_base = c.buf;
    qsort(k, n, sizeof(*k), keyed_cmp);
    keyed_base = NULL;
    /* In each run of equal encodings indices ascend: its first two items
     * are that run's earliest duplicate pair; keep the earliest second. */
    bool found = false;
    for (size_t r = 0; r + 1 < n; r++) {
        if (!keyed_same(c.buf, &k[r], &k[r + 1]))
            continue;
        if (!found || k[r + 1].index < *pj) {
            *pi = k[r].index;
            *pj = k[r + 1].index;
            found = true;
        }
        while (r + 1 < n && keyed_same(c.buf, &k[r], &k[r + 1]))
            r++;
    }
    rc = found ? 1 : 0;
done:
    free(k);
    free(c.buf);
    return rc;
}

static void check_array(vctx_t *v, const node_t *n, const json_t *inst, eval_t *ev)
{
    size_t size = json_array_size(inst);
    if (n->min_items >= 0 && (unsigned long long)size < (unsigned long long)n->min_items)
        report(v, "minItems", "at least %lld %s", n->min_items, plural(n->min_items, "item", "items"));
    if (n->max_items >= 0 && (unsigned long long)size > (unsigned long long)n->max_items)
        report(v, "maxItems", "at most %lld %s", n->max_items, plural(n->max_items, "item", "items"));
    if (n->unique_items && !halted(v)) {
        size_t i = 0, j = 0;
        int dup = find_duplicate(inst, &i, &j, &v->budget);
        if (dup < 0)
            v->oom = true;
        else if (dup > 0)
            report(v, "uniqueItems", "items must be unique (%zu and %zu are equal)", i, j);
    }
    size_t k = 0;
    for (; k < size && k < n->prefix.n && !halted(v); k++) {
        loc_push_index(v, k);
        validate_node(v, n->prefix.v[k], json_array_get(inst, k), NULL);
        loc_pop(v);
        eval_mark(v, ev, k);
    }
    if (n->items != NULL) {
        for (; k < size && !halted(v); k++) {
            loc_push_index(v, k);
            validate_node(v, n->items, json_array_get(inst, k), NULL);
            loc_pop(v);
        }
        if (ev != NULL)
            ev->all = true;
    }
    if (n->contains != NULL && !halted(v)) {
        long long matches = 0;
        int qs;
        size_t qm;
        for (size_t i = 0; i < size && !halted(v); i++) {
            mark_t m = mark_now(v);
            quiet_begin(v, &qs, &qm);
            validate_node(v, n->contains, json_array_get(inst, i), NULL);
            quiet_end(v, qm);
            bool ok = !failed_since(v, m);
            mark_reset(v, m);
            if (ok) {
                matches++;
                eval_mark(v, ev, i);
            }
        }
        if (!halted(v)) {
            if (matches < n->min_contains)
                report(v, n->min_contains == 1 ? "contains" : "minContains",
                       "must contain at least %lld %s matching the contains schema", n->min_contains,
                       plural(n->min_contains, "item", "items"));
            if (n->max_contains >= 0 && matches > n->max_contains)
                report(v, "maxContains", "must contain at most %lld %s matching the contains schema",
                       n->max_contains, plural(n->max_contains, "item", "items"));
        }
    }
}

/* Is key one of the node's "properties"? */
static bool declared(const node_t *n, const char *key, size_t len)
{
    prop_t probe = {.name = key, .len = len, .schema = NULL};
    const prop_t *pp = &probe;
    return n->nprops > 0 && bsearch(&pp, n->sorted, n->nprops, sizeof(*n->sorted), prop_cmp) != NULL;
}

/* Does key match one of the node's "patternProperties"? Validates the value
 * against each matching one when value is not NULL. */
static bool pattern_props(vctx_t *v, const node_t *n, const char *key, size_t klen, const json_t *value)
{
    bool any = false;
    for (size_t i = 0; i < n->npprops && !halted(v); i++) {
        int m = regex_test(v, n->pprops[i].re, key, klen, "patternProperties");
        if (m <= 0)
            continue;
        any = true;
        if (value != NULL)
            validate_node(v, n->pprops[i].schema, value, NULL);
    }
    return any;
}

static void check_object(vctx_t *v, const node_t *n, const json_t *inst, eval_t *ev)
{
    size_t size = json_object_size(inst);
    if (n->min_props >= 0 && (unsigned long long)size < (unsigned long long)n->min_props)
        report(v, "minProperties", "at least %lld %s", n->min_props, plural(n->min_props, "property", "properties"));
    if (n->max_props >= 0 && (unsigned long long)size > (unsigned long long)n->max_props)
        report(v, "maxProperties", "at most %lld %s", n->max_props, plural(n->max_props, "property", "properties"));
    for (size_t i = 0; i < n->nrequired && !halted(v); i++) {
        const req_name_t *r = &n->required[i];
        if (json_object_getn(inst, r->name, r->len) != NULL)
            continue;
        loc_push_key(v, r->name, r->len);
        report(v, "missing", "field required");
        loc_pop(v);
    }
    for (size_t i = 0; i < n->ndeps && !halted(v); i++) {
        const dep_t *d = &n->deps[i];
        if (json_object_getn(inst, d->name, d->len) == NULL)
            continue;
        for (size_t k = 0; k < d->nreq; k++) {
            if (json_object_getn(inst, d->req[k].name, d->req[k].len) != NULL)
                continue;
            loc_push_key(v, d->req[k].name, d->req[k].len);
            report(v, n->deps_kw != NULL ? n->deps_kw : "dependentRequired", "field required when %.*s is present",
                   (int)(d->len > 100 ? 100 : d->len), d->name);
            loc_pop(v);
        }
        if (d->schema != NULL)
            validate_node(v, d->schema, inst, ev);
    }
    v->budget -= (int64_t)(n->nprops * COST_COMPARE);
    for (size_t i = 0; i < n->nprops && !halted(v); i++) {
        const prop_t *p = &n->props[i];
        const json_t *value = json_object_getn(inst, p->name, p->len);
        if (value == NULL)
            continue;
        loc_push_key(v, p->name, p->len);
        validate_node(v, p->schema, value, NULL);
        loc_pop(v);
        eval_mark_key(v, ev, p->name, p->len);
    }
    bool need_walk = n->npprops > 0 || n->property_names != NULL ||
                     (n->additional != NULL && !(n->additional->is_bool && n->additional->bool_value));
    if (need_walk) {
        const char *key;
        size_t klen;
        json_t *value;
        json_object_keylen_foreach((json_t *)inst, key, klen, value) {
            if (halted(v))
                break;
            v->budget -= COST_COMPARE;
            loc_push_key(v, key, klen);
            if (n->property_names != NULL) {
                json_t *name = json_stringn(key, klen);
                if (name == NULL) {
                    v->oom = true;
                } else {
                    mark_t m = mark_now(v);
                    validate_node(v, n->property_names, name, NULL);
                    for (size_t r = m.nrecs; r < v->nrecs; r++)
                        v->recs[r].type = "propertyNames";
                    json_decref(name);
                }
            }
            bool matched = n->npprops > 0 && pattern_props(v, n, key, klen, value);
            if (matched)
                eval_mark_key(v, ev, key, klen);
            if (!matched && n->additional != NULL && !declared(n, key, klen)) {
                if (n->additional->is_bool && !n->additional->bool_value)
                    report(v, "additionalProperties", "unexpected property");
                else
                    validate_node(v, n->additional, value, NULL);
            }
            loc_pop(v);
        }
    }
    if (n->additional != NULL && ev != NULL)
        ev->all = true;
}

/* anyOf / oneOf: tries every branch quietly; when none (anyOf) or not
 * exactly one (oneOf) matches, reports the branch that came closest (the
 * fewest violations), its entries typed with the keyword. */
static void check_alternatives(vctx_t *v, const nlist_t *alts, const char *kw, bool one, const json_t *inst,
                               eval_t *ev)
{
    size_t matched = 0, first = 0, second = 0;
    eval_t tmp;
    for (size_t i = 0; i < alts->n && !v->exhausted && !v->oom; i++) {
        if (!one && matched > 0 && ev == NULL)
            break; /* anyOf: one match decides, unless annotations are collected */
        mark_t m = mark_now(v);
        int qs;
        size_t qm;
        eval_init(&tmp, inst);
        quiet_begin(v, &qs, &qm);
        validate_node(v, alts->v[i], inst, ev != NULL ? &tmp : NULL);
        quiet_end(v, qm);
        bool ok = !failed_since(v, m);
        mark_reset(v, m);
        if (ok) {
            if (matched == 0)
                first = i;
            else if (matched == 1)
                second = i;
            matched++;
            eval_merge(v, ev, &tmp);
        }
        eval_deinit(&tmp);
    }
    if (v->exhausted || v->oom)
        return;
    if (one && matched > 1) {
        report(v, kw, "must match exactly one oneOf branch, matched %zu (%zu and %zu)", matched, first, second);
        return;
    }
    if (matched > 0)
        return;
    if (v->quiet > 0) {
        report(v, kw, "matches no branch");
        return;
    }
    /* The closest branch: its entries stay, the others' are dropped. A
     * branch for another type of value is farther than any branch for
     * this type, whatever their counts. */
    mark_t start = mark_now(v);
    size_t best_count = SIZE_MAX;
    unsigned bits = type_bits(inst);
    for (size_t i = 0; i < alts->n && !v->exhausted && !v->oom; i++) {
        mark_t m = mark_now(v);
        validate_node(v, alts->v[i], inst, NULL);
        size_t count = v->nrecs - m.nrecs;
        if (!(possible_types(alts->v[i], 0) & bits))
            count += (size_t)1 << 30;
        if (count < best_count) {
            size_t kept = v->nrecs - m.nrecs;
            memmove(v->recs + start.nrecs, v->recs + m.nrecs, kept * sizeof(*v->recs));
            v->nrecs = start.nrecs + kept;
            best_count = count;
        } else {
            v->nrecs = m.nrecs;
        }
    }
    v->nfail = start.nfail + (v->nrecs - start.nrecs);
    if (v->nrecs == start.nrecs)
        report(v, kw, "matches no %s branch", kw);
    for (size_t r = start.nrecs; r < v->nrecs; r++)
        v->recs[r].type = kw;
}

/* The target of a $dynamicRef: the outermost resource in the dynamic scope
 * with a $dynamicAnchor of that name, else the static target. */
static const node_t *dynamic_target(const vctx_t *v, const node_t *n)
{
    if (n->dynref_anchor == NULL)
        return n->dynref;
    const mizan_schema_t *s = v->s;
    for (size_t i = 0; i < v->nscope; i++) {
        const char *uri = s->resources[v->scope[i]].uri;
        /* Anchors are few; a linear scan of the nodes of that resource
         * would cost more than this lookup in the anchor table. */
        for (size_t k = 0; k < s->nanchors; k++)
            if (s->anchors[k].resource == v->scope[i] && strcmp(s->anchors[k].name, n->dynref_anchor) == 0)
                return s->anchors[k].node;
        (void)uri;
    }
    return n->dynref;
}

/* Validates inst (borrowed) against n at the current location, recording
 * every violation; marks what it evaluated in ev (may be NULL: nobody
 * asks). Returns 0; failures of memory or budget are flagged in v. */
static int validate_node(vctx_t *v, const node_t *n, const json_t *inst, eval_t *ev)
{
    if (halted(v))
        return 0;
    if ((v->budget -= COST_NODE) <= 0 || v->eval_depth >= EVAL_DEPTH_MAX || v->depth >= LOC_MAX) {
        v->exhausted = true;
        return 0;
    }
    if (n->is_bool) {
        if (!n->bool_value)
            report(v, "false", "value not allowed");
        return 0;
    }
    v->eval_depth++;
    bool pushed = false;
    if (v->nscope == 0 || v->scope[v->nscope - 1] != n->resource) {
        v->scope[v->nscope++] = n->resource;
        pushed = true;
    }
    /* Annotations of this schema's keywords: collected here when it has
     * unevaluated* itself, else straight into the caller's. */
    bool container = json_is_object(inst) || json_is_array(inst);
    eval_t own;
    eval_t *e = ev;
    if (n->tracks && container) {
        eval_init(&own, inst);
        e = &own;
    } else if (!container) {
        e = NULL;
    }
    if (n->ref != NULL)
        validate_node(v, n->ref, inst, e);
    if (n->ref_only)
        goto done;
    if (n->types != 0 && !(n->types & type_bits(inst))) {
        report_type(v, n, inst);
        goto done;
    }
    if (n->dynref != NULL)
        validate_node(v, dynamic_target(v, n), inst, e);
    if (n->const_value != NULL && !values_equal(inst, n->const_value))
        report(v, "const", "%s", n->const_msg);
    if (n->enum_values != NULL) {
        v->budget -= (int64_t)json_array_size(n->enum_values) * COST_COMPARE;
        bool found = false;
        for (size_t i = 0; i < json_array_size(n->enum_values) && !found; i++)
            found = values_equal(inst, json_array_get(n->enum_values, i));
        if (!found)
            report(v, "enum", "%s", n->enum_msg);
    }
    switch (json_typeof(inst)) {
    case JSON_INTEGER:
    case JSON_REAL:
        check_number(v, n, inst);
        break;
    case JSON_STRING:
        check_string(v, n, inst);
        break;
    case JSON_ARRAY:
        check_array(v, n, inst, e);
        break;
    case JSON_OBJECT:
        check_object(v, n, inst, e);
        break;
    default:
        break;
    }
    for (size_t i = 0; i < n->all_of.n && !halted(v); i++)
        validate_node(v, n->all_of.v[i], inst, e);
    if (n->any_of.n > 0 && !halted(v))
        check_alternatives(v, &n->any_of, "anyOf", false, inst, e);
    if (n->one_of.n > 0 && !halted(v))
        check_alternatives(v, &n->one_of, "oneOf", true, inst, e);
    if (n->not_ != NULL && !halted(v)) {
        mark_t m = mark_now(v);
        int qs;
        size_t qm;
        quiet_begin(v, &qs, &qm);
        validate_node(v, n->not_, inst, NULL);
        quiet_end(v, qm);
        bool ok = !failed_since(v, m);
        mark_reset(v, m);
        if (ok && !v->exhausted && !v->oom)
            report(v, "not", "must not match the schema in not");
    }
    if (n->if_ != NULL && !halted(v)) {
        mark_t m = mark_now(v);
        int qs;
        size_t qm;
        eval_t tmp;
        eval_init(&tmp, inst);
        quiet_begin(v, &qs, &qm);
        validate_node(v, n->if_, inst, e != NULL ? &tmp : NULL);
        quiet_end(v, qm);
        bool ok = !failed_since(v, m);
        mark_reset(v, m);
        if (ok)
            eval_merge(v, e, &tmp);
        eval_deinit(&tmp);
        const node_t *branch = ok ? n->then_ : n->else_;
        if (branch != NULL && !v->exhausted && !v->oom)
            validate_node(v, branch, inst, e);
    }
    if (n->tracks && container && !halted(v)) {
        if (json_is_object(inst) && n->unevaluated_props != NULL) {
            const node_t *u = n->unevaluated_props;
            if (eval_ready(v, e)) {
                for (size_t i = 0; i < e->n && !halted(v); i++) {
                    if (eval_has(e, i))
                        continue;
                    loc_push_key(v, e->keys[i].key, e->keys[i].len);
                    if (u->is_bool && !u->bool_value)
                        report(v, "unevaluatedProperties", "unexpected property");
                    else
                        validate_node(v, u, e->keys[i].value, NULL);
                    loc_pop(v);
                }
            }
            e->all = true;
        }
        if (json_is_array(inst) && n->unevaluated_items != NULL) {
            const node_t *u = n->unevaluated_items;
            for (size_t i = 0; i < e->n && !halted(v); i++) {
                if (eval_has(e, i))
                    continue;
                loc_push_index(v, i);
                if (u->is_bool && !u->bool_value)
                    report(v, "unevaluatedItems", "unexpected item");
                else
                    validate_node(v, u, json_array_get(inst, i), NULL);
                loc_pop(v);
            }
            e->all = true;
        }
    }
done:
    if (e == &own) {
        eval_merge(v, ev, &own);
        eval_deinit(&own);
    }
    if (pushed)
        v->nscope--;
    v->eval_depth--;
    return 0;
}

/* ---------------------------------------------------------------- defaults */

/*
 * Fills the defaults of n's missing properties into inst (borrowed,
 * modified), then descends into the values that were already there,
 * through $ref and allOf too. Only called on a valid instance; charged to
 * the same budget as validation.
 */
static void fill_defaults(vctx_t *v, const node_t *n, json_t *inst, size_t depth)
{
    if (v->exhausted || v->oom || n->is_bool || !n->may_fill)
        return;
    if ((v->budget -= COST_NODE) <= 0 || depth > EVAL_DEPTH_MAX) {
        v->exhausted = true;
        return;
    }
    if (n->ref != NULL)
        fill_defaults(v, n->ref, inst, depth + 1);
    if (n->ref_only)
        return;
    if (n->dynref != NULL)
        fill_defaults(v, n->dynref, inst, depth + 1);
    for (size_t i = 0; i < n->all_of.n; i++)
        fill_defaults(v, n->all_of.v[i], inst, depth + 1);
    /* anyOf / oneOf (Optional[Model] is anyOf [model, null]): the defaults
     * of the first branch the value matches. */
    const nlist_t *alts[] = {&n->any_of, &n->one_of};
    for (size_t a = 0; a < 2; a++) {
        for (size_t i = 0; i < alts[a]->n && !v->exhausted && !v->oom; i++) {
            mark_t m = mark_now(v);
            int qs;
            size_t qm;
            quiet_begin(v, &qs, &qm);
            validate_node(v, alts[a]->v[i], inst, NULL);
            quiet_end(v, qm);
            bool ok = !failed_since(v, m);
            mark_reset(v, m);
            if (ok) {
                fill_defaults(v, alts[a]->v[i], inst, depth + 1);
                break;
            }
        }
    }
    if (json_is_array(inst)) {
        for (size_t k = 0; k < json_array_size(inst); k++) {
            const node_t *sub = k < n->prefix.n ? n->prefix.v[k] : n->items;
            if (sub != NULL)
                fill_defaults(v, sub, json_array_get(inst, k), depth + 1);
        }
        return;
    }
    if (!json_is_object(inst))
        return;
    /* Additional members first, so freshly filled ones are not visited. */
    if (n->additional != NULL && !n->additional->is_bool) {
        const char *key;
        size_t klen;
        json_t *value;
        json_object_keylen_foreach(inst, key, klen, value) {
            if (!declared(n, key, klen))
                fill_defaults(v, n->additional, value, depth + 1);
        }
    }
    for (size_t i = 0; i < n->nprops; i++) {
        const prop_t *p = &n->props[i];
        json_t *value = json_object_getn(inst, p->name, p->len);
        if (value != NULL) {
            fill_defaults(v, p->schema, value, depth + 1);
        } else if (!p->schema->is_bool && p->schema->dflt != NULL) {
            json_t *copy = json_deep_copy(p->schema->dflt);
            if (copy == NULL || json_object_setn_new(inst, p->name, p->len, copy) < 0)
                v->oom = true; /* setn_new consumed copy */
        }
    }
}

/* ------------------------------------------------------------------ public */

void mizan_schema_set_defaults(const mizan_schema_opts_t *opts)
{
    free(default_dir);
    free(default_base);
    default_dir = opts != NULL && opts->dir != NULL ? strdup(opts->dir) : NULL;
    default_base = opts != NULL && opts->base_uri != NULL ? strdup(opts->base_uri) : NULL;
    if (opts != NULL)
        default_opts = *opts;
    else
        memset(&default_opts, 0, sizeof(default_opts));
    default_opts.dir = default_dir;
    default_opts.base_uri = default_base;
}

mizan_schema_t *mizan_schema_compile(const json_t *schema, mizan_err_t *err)
{
    return mizan_schema_compile_opts(schema, &default_opts, err);
}

/* Calls fn(child, parent, ctx) for every subschema of n that filling
 * defaults descends into. */
static void fill_edges(node_t *n, void (*fn)(node_t *, node_t *, void *), void *ctx)
{
    node_t *single[] = {n->ref, n->dynref, n->items, n->additional};
    for (size_t k = 0; k < 4; k++)
        if (single[k] != NULL)
            fn(single[k], n, ctx);
    for (size_t k = 0; k < n->nprops; k++)
        fn(n->props[k].schema, n, ctx);
    const nlist_t *lists[] = {&n->prefix, &n->all_of, &n->any_of, &n->one_of};
    for (size_t l = 0; l < 4; l++)
        for (size_t k = 0; k < lists[l]->n; k++)
            fn(lists[l]->v[k], n, ctx);
}

/* Reverse edges bucketed by child: parents of node i are
 * parent[start[i] .. start[i + 1]). */
typedef struct redges {
    size_t *start;
    node_t **parent;
    size_t *fill;
} redges_t;

static void count_edge(node_t *child, node_t *parent, void *ctx)
{
    (void)parent;
    ((redges_t *)ctx)->start[child->index + 1]++;
}

static void put_edge(node_t *child, node_t *parent, void *ctx)
{
    redges_t *r = ctx;
    r->parent[r->start[child->index] + r->fill[child->index]++] = parent;
}

/* Marks the nodes from which a property default is reachable, so that
 * filling defaults skips the rest: a breadth-first walk back along the
 * edges from the nodes holding a default (linear in the graph's size). */
static int mark_may_fill(mizan_schema_t *s)
{
    size_t n = s->nnodes;
    redges_t r = {calloc(n + 2, sizeof(size_t)), NULL, calloc(n + 1, sizeof(size_t))};
    node_t **queue = calloc(n + 1, sizeof(*queue));
    int rc = -1;
    if (r.start == NULL || r.fill == NULL || queue == NULL)
        goto done;
    for (size_t i = 0; i < n; i++)
        fill_edges(s->nodes[i], count_edge, &r);
    for (size_t i = 0; i < n; i++)
        r.start[i + 1] += r.start[i];
    r.parent = calloc(r.start[n] + 1, sizeof(*r.parent));
    if (r.parent == NULL)
        goto done;
    for (size_t i = 0; i < n; i++)
        fill_edges(s->nodes[i], put_edge, &r);
    size_t head = 0, tail = 0;
    for (size_t i = 0; i < n; i++) {
        node_t *x = s->nodes[i];
        for (size_t k = 0; k < x->nprops && !x->may_fill; k++)
            x->may_fill = !x->props[k].schema->is_bool && x->props[k].schema->dflt != NULL;
        if (x->may_fill)
            queue[tail++] = x;
    }
    while (head < tail) {
        node_t *x = queue[head++];
        for (size_t e = r.start[x->index]; e < r.start[x->index + 1]; e++) {
            node_t *p = r.parent[e];
            if (!p->may_fill) {
                p->may_fill = true;
                queue[tail++] = p;
            }
        }
    }
    rc = 0;
done:
    free(r.start);
    free(r.fill);
    free(r.parent);
    free(queue);
    return rc;
}

/* Collects the $dynamicAnchor table of s. */
static int collect_anchors(mizan_schema_t *s)
{
    for (size_t i = 0; i < s->nnodes; i++) {
        node_t *n = s->nodes[i];
        if (n->dyn_anchor == NULL)
            continue;
        dyn_anchor_t *a = realloc(s->anchors, (s->nanchors + 1) * sizeof(*a));
        if (a == NULL)
            return -1;
        s->anchors = a;
        a[s->nanchors].resource = n->resource;
        a[s->nanchors].name = n->dyn_anchor;
        a[s->nanchors].node = n;
        s->nanchors++;
    }
    return 0;
}

mizan_schema_t *mizan_schema_compile_opts(const json_t *schema, const mizan_schema_opts_t *opts,
                                          mizan_err_t *err)
{
    static const mizan_schema_opts_t none = {0};
    mizan_schema_t *s = NULL;
    unsigned char *color = NULL;
    compiler_t c = {.err = err, .opts = opts != NULL ? opts : &none};
    c.base_uri = c.opts->base_uri != NULL ? c.opts->base_uri : DEFAULT_BASE_URI;
    bool ok = false;
    if (schema == NULL) {
        mizan_err_set(err, "schema: missing");
        goto done;
    }
    s = calloc(1, sizeof(*s));
    if (s == NULL || (s->loaded = json_array()) == NULL) {
        oom(&c);
        goto done;
    }
    c.s = s;
    int dialect = c.opts->dialect == MIZAN_SCHEMA_DRAFT2020_12 ? D2020 : D7;
    size_t res = 0;
    if (new_resource(&c, c.base_uri, NULL, &res) < 0 || walk(&c, schema, c.base_uri, dialect, res, &s->root) < 0)
        goto done;
    s->resources[res].root = s->root;
    if (register_uri(&c, c.base_uri, s->root) < 0 || resolve_refs(&c) < 0)
        goto done;
    color = calloc(s->nnodes + 1, 1);
    if (color == NULL) {
        oom(&c);
        goto done;
    }
    for (size_t i = 0; i < s->nnodes; i++)
        if (find_cycle(&c, s->nodes[i], color, 0) < 0)
            goto done;
    if (mark_may_fill(s) < 0 || collect_anchors(s) < 0 || build_param_types(s) < 0) {
        oom(&c);
        goto done;
    }
    /* The graph points into schema; keep it alive (it is never modified). */
    s->source = json_incref((json_t *)schema);
    ok = true;
done:
    free(color);
    ptrmap_free(&c.pos);
    strmap_free(&c.uris);
    if (!ok) {
        mizan_schema_free(s);
        return NULL;
    }
    return s;
}

void mizan_schema_free(mizan_schema_t *s)
{
    if (s == NULL)
        return;
    for (size_t i = 0; i < s->nnodes; i++)
        node_free(s->nodes[i]);
    free(s->nodes);
    for (size_t i = 0; i < s->nresources; i++)
        free(s->resources[i].uri);
    free(s->resources);
    free(s->anchors);
    json_decref(s->param_types);
    json_decref(s->loaded);
    json_decref(s->source);
    free(s);
}

const json_t *mizan_schema_source(const mizan_schema_t *s)
{
    return s != NULL ? s->source : NULL;
}

const json_t *mizan_schema_property_types(const mizan_schema_t *s, const char *name)
{
    return s != NULL && name != NULL ? json_object_get(s->param_types, name) : NULL;
}

/* Appends the records of v to errors as protocol entries. */
static int emit(const vctx_t *v, json_t *errors)
{
    for (size_t i = 0; i < v->nrecs; i++) {
        const rec_t *r = &v->recs[i];
        json_t *loc = json_array();
        if (loc == NULL)
            return -1;
        if (v->loc_root != NULL && json_array_append_new(loc, json_string(v->loc_root)) < 0) {
            json_decref(loc);
            return -1;
        }
        for (size_t k = 0; k < r->nseg; k++) {
            const seg_t *sg = &v->segs[r->seg_off + k];
            json_t *e = sg->key != NULL ? json_stringn(sg->key, sg->len) : json_integer((json_int_t)sg->index);
            if (json_array_append_new(loc, e) < 0) {
                json_decref(loc);
                return -1;
            }
        }
        json_t *entry = json_pack("{s:o, s:s, s:s}", "loc", loc, "msg", v->msgs + r->msg_off, "type", r->type);
        if (entry == NULL || json_array_append_new(errors, entry) < 0)
            return -1;
    }
    return 0;
}

/*
 * Each thread keeps one validation state for its calls (a state is some
 * 7 KB, mostly the location and scope stacks, which are written before
 * they are read: only the fields before them need clearing). A nested call
 * on the same thread, which nothing makes today, would get its own.
 */
static _Thread_local vctx_t thread_vctx;
static _Thread_local bool thread_vctx_busy;

int mizan_schema_validate(const mizan_schema_t *s, json_t *instance, const char *loc_root, json_t *errors)
{
    if (s == NULL || instance == NULL || !json_is_array(errors))
        return -1;
    bool own = thread_vctx_busy;
    vctx_t *v = own ? malloc(sizeof(*v)) : &thread_vctx;
    if (v == NULL)
        return -1;
    thread_vctx_busy = true;
    memset(v, 0, offsetof(vctx_t, loc));
    v->nscope = 0;
    v->s = s;
    v->loc_root = loc_root;
    v->budget = MIZAN_SCHEMA_BUDGET;
    int rc = -1;
    validate_node(v, s->root, instance, NULL);
    if (v->oom)
        goto done;
    if (!v->exhausted && v->nfail == 0) {
        fill_defaults(v, s->root, instance, 0);
        if (v->oom)
            goto done;
    }
    if (v->exhausted) {
        /* Refused as a whole: what was found so far stays listed, and one
         * entry at the root says why the rest was not looked at. */
        v->depth = 0;
        if (v->costly_stop)
            report(v, "pattern", "pattern too costly to evaluate on this value");
        else
            report(v, "budget", "validation too costly: this input needs more work to validate than one request "
                                "may spend");
        if (v->oom)
            goto done;
    }
    if (emit(v, errors) < 0)
        goto done;
    rc = (int)v->nrecs;
done:
    free(v->recs);
    free(v->segs);
    free(v->msgs);
    if (own)
        free(v);
    else
        thread_vctx_busy = false;
    return rc;
}
