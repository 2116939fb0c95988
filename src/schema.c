/*
 * schema.c - the input validator: compiles the JSON Schema subset of
 * PROTOCOL.md section 4 into a tree of immutable nodes, and validates
 * instances against it, reporting every violation as a protocol error entry
 * and filling in defaults when the instance is valid.
 *
 * Layout of this file: numbers (decimal form, comparison), JSON Schema
 * equality and hashing, the compiler, PCRE2 matching, the validator, the
 * default filler, and the public entry points.
 *
 * The compiled tree points into the source JSON (property names, enum and
 * const values, defaults, bounds) instead of copying it; the schema holds a
 * reference to the source and nobody modifies it after compilation, so the
 * pointers stay valid and reading them from many threads is safe.
 */
#include "schema.h"

#define PCRE2_CODE_UNIT_WIDTH 8

#include <limits.h>
#include <math.h>
#include <pcre2.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
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

/* ---------------------------------------------------------- compiled tree */

typedef struct node node_t;

/* One entry of "properties". */
typedef struct prop {
    const char *name; /* the key (borrowed from the source object) */
    size_t len;       /* its length in bytes (keys may contain NUL) */
    node_t *schema;   /* its subschema (owned) */
} prop_t;

/* One entry of "required". */
typedef struct req_name {
    const char *name; /* borrowed from the source string */
    size_t len;       /* length in bytes */
} req_name_t;

/* One compiled (sub)schema. Pointers to json_t are borrowed from the
 * source; everything else is owned. Absent counts are -1. */
struct node {
    bool is_bool;                 /* a boolean schema */
    bool bool_value;              /* ... and its value */
    unsigned types;               /* T_* bits of "type"; 0: no "type" */
    unsigned char type_order[8];  /* the type names' indices, as written */
    size_t ntypes;                /* entries in type_order */
    prop_t *props;                /* "properties" in source order */
    size_t nprops;                /* number of props */
    const prop_t **sorted;        /* props sorted by name, for lookups */
    req_name_t *required;         /* "required", in source order */
    size_t nrequired;             /* number of required names */
    node_t *additional;           /* "additionalProperties"; NULL: anything */
    node_t *items;                /* "items"; NULL: anything */
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
    long long min_items;
    long long max_items;
    long long min_props;
    long long max_props;
    bool unique_items;            /* "uniqueItems": true */
    pcre2_code *pattern;          /* compiled "pattern" (JIT when available) */
    const char *pattern_src;      /* its source text (borrowed) */
    const json_t *dflt;           /* "default", or NULL */
};

struct mizan_schema {
    json_t *source;              /* our reference to the source JSON */
    node_t *root;                /* the compiled root schema */
};

static void node_free(node_t *n)
{
    if (n == NULL)
        return;
    for (size_t i = 0; i < n->nprops; i++)
        node_free(n->props[i].schema);
    free(n->props);
    free(n->sorted);
    free(n->required);
    node_free(n->additional);
    node_free(n->items);
    free(n->enum_msg);
    free(n->const_msg);
    pcre2_code_free(n->pattern);
    free(n);
}

/* ---------------------------------------------------------------- compiler */

/* Keywords of the subset. */
typedef enum kw {
    KW_TYPE,
    KW_PROPERTIES,
    KW_REQUIRED,
    KW_ADDITIONAL_PROPERTIES,
    KW_ITEMS,
    KW_ENUM,
    KW_CONST,
    KW_MINIMUM,
    KW_MAXIMUM,
    KW_EXCLUSIVE_MINIMUM,
    KW_EXCLUSIVE_MAXIMUM,
    KW_MULTIPLE_OF,
    KW_MIN_LENGTH,
    KW_MAX_LENGTH,
    KW_PATTERN,
    KW_MIN_ITEMS,
    KW_MAX_ITEMS,
    KW_UNIQUE_ITEMS,
    KW_MIN_PROPERTIES,
    KW_MAX_PROPERTIES,
    KW_DEFAULT,
    KW_ANNOTATION, /* title, description, $schema, $comment: strings, ignored */
} kw_t;

static const struct {
    const char *name;
    kw_t kw;
} keywords[] = {
    {"type", KW_TYPE},
    {"properties", KW_PROPERTIES},
    {"required", KW_REQUIRED},
    {"additionalProperties", KW_ADDITIONAL_PROPERTIES},
    {"items", KW_ITEMS},
    {"enum", KW_ENUM},
    {"const", KW_CONST},
    {"minimum", KW_MINIMUM},
    {"maximum", KW_MAXIMUM},
    {"exclusiveMinimum", KW_EXCLUSIVE_MINIMUM},
    {"exclusiveMaximum", KW_EXCLUSIVE_MAXIMUM},
    {"multipleOf", KW_MULTIPLE_OF},
    {"minLength", KW_MIN_LENGTH},
    {"maxLength", KW_MAX_LENGTH},
    {"pattern", KW_PATTERN},
    {"minItems", KW_MIN_ITEMS},
    {"maxItems", KW_MAX_ITEMS},
    {"uniqueItems", KW_UNIQUE_ITEMS},
    {"minProperties", KW_MIN_PROPERTIES},
    {"maxProperties", KW_MAX_PROPERTIES},
    {"default", KW_DEFAULT},
    {"title", KW_ANNOTATION},
    {"description", KW_ANNOTATION},
    {"$schema", KW_ANNOTATION},
    {"$comment", KW_ANNOTATION},
};

/* Standard JSON Schema keywords outside the subset: refused with a message
 * that says so, rather than "unknown" (which suggests a typo). */
static const char *const unsupported_keywords[] = {
    "$id", "$ref", "definitions", "$defs", "allOf", "anyOf", "oneOf", "not", "if",
    "then", "else", "format", "dependencies", "dependentRequired", "dependentSchemas",
    "patternProperties", "propertyNames", "contains", "additionalItems", "prefixItems",
    "readOnly", "writeOnly", "examples", "contentMediaType", "contentEncoding",
    "unevaluatedProperties", "unevaluatedItems", "minContains", "maxContains",
    "$anchor", "$recursiveRef", "$dynamicRef", "id",
};

/* Compiler state: where we are in the schema, for error messages. */
typedef struct compiler {
    mizan_err_t *err; /* where failures are described */
    char path[400];   /* JSON pointer of the current position */
    size_t pathlen;   /* strlen(path) */
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

static void path_pop(compiler_t *c, size_t old)
{
    c->pathlen = old;
    c->path[old] = '\0';
}

/* Records "path: reason" (just the reason at the root). Returns -1. */
static int fail(compiler_t *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int fail(compiler_t *c, const char *fmt, ...)
{
    char reason[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof(reason), fmt, ap);
    va_end(ap);
    if (c->pathlen == 0)
        return mizan_err_set(c->err, "schema: %s", reason);
    return mizan_err_set(c->err, "%s: %s", c->path, reason);
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

static int compile_node(compiler_t *c, const json_t *js, int depth, node_t **out);

/* Compiles the subschema js (borrowed), one nesting level below depth. */
static int compile_child(compiler_t *c, const json_t *js, int depth, node_t **out)
{
    return compile_node(c, js, depth + 1, out);
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

static int compile_properties(compiler_t *c, node_t *n, const json_t *v, int depth)
{
    if (!json_is_object(v))
        return fail(c, "must be an object of schemas");
    size_t count = json_object_size(v);
    if (count == 0)
        return 0;
    n->props = calloc(count, sizeof(*n->props));
    n->sorted = calloc(count, sizeof(*n->sorted));
    if (n->props == NULL || n->sorted == NULL)
        return mizan_err_set(c->err, "out of memory");
    const char *key;
    size_t klen;
    json_t *sub;
    json_object_keylen_foreach((json_t *)v, key, klen, sub) {
        prop_t *p = &n->props[n->nprops];
        p->name = key;
        p->len = klen;
        size_t mark = path_push(c, key, klen);
        int rc = compile_child(c, sub, depth, &p->schema);
        path_pop(c, mark);
        if (rc < 0)
            return -1;
        n->sorted[n->nprops] = p;
        n->nprops++;
    }
    qsort(n->sorted, n->nprops, sizeof(*n->sorted), prop_cmp);
    return 0;
}

static int compile_required(compiler_t *c, node_t *n, const json_t *v)
{
    const char *msg = "must be an array of distinct property names";
    if (!json_is_array(v))
        return fail(c, "%s", msg);
    size_t count = json_array_size(v);
    if (count == 0)
        return 0;
    n->required = calloc(count, sizeof(*n->required));
    if (n->required == NULL)
        return mizan_err_set(c->err, "out of memory");
    for (size_t i = 0; i < count; i++) {
        const json_t *e = json_array_get(v, i);
        if (!json_is_string(e))
            return fail(c, "%s", msg);
        for (size_t j = 0; j < i; j++)
            if (values_equal(e, json_array_get(v, j)))
                return fail(c, "%s", msg);
        n->required[i].name = json_string_value(e);
        n->required[i].len = json_string_length(e);
        n->nrequired++;
    }
    return 0;
}

static int compile_pattern(compiler_t *c, node_t *n, const json_t *v)
{
    if (!json_is_string(v))
        return fail(c, "must be a string (a regular expression)");
    /* ECMA-262 flavour: `$` only at the very end, \uXXXX escapes, and no \C
     * (which could split a UTF-8 character). */
    uint32_t options = PCRE2_UTF | PCRE2_DOLLAR_ENDONLY | PCRE2_ALT_BSUX | PCRE2_NEVER_BACKSLASH_C;
    int errcode = 0;
    PCRE2_SIZE erroffset = 0;
    n->pattern = pcre2_compile((PCRE2_SPTR)json_string_value(v), json_string_length(v), options,
                               &errcode, &erroffset, NULL);
    if (n->pattern == NULL) {
        if (errcode == PCRE2_ERROR_NOMEMORY)
            return mizan_err_set(c->err, "out of memory");
        PCRE2_UCHAR reason[160];
        if (pcre2_get_error_message(errcode, reason, sizeof(reason)) < 0)
            snprintf((char *)reason, sizeof(reason), "error %d", errcode);
        return fail(c, "invalid regular expression: %s at offset %zu", (const char *)reason,
                    (size_t)erroffset);
    }
    /* JIT is an optimisation: when unavailable the interpreter runs. */
    (void)pcre2_jit_compile(n->pattern, PCRE2_JIT_COMPLETE);
    n->pattern_src = json_string_value(v);
    return 0;
}

static int compile_keyword(compiler_t *c, node_t *n, kw_t kw, const json_t *v, int depth)
{
    switch (kw) {
    case KW_TYPE:
        return compile_type(c, n, v);
    case KW_PROPERTIES:
        return compile_properties(c, n, v, depth);
    case KW_REQUIRED:
        return compile_required(c, n, v);
    case KW_ADDITIONAL_PROPERTIES:
        return compile_child(c, v, depth, &n->additional);
    case KW_ITEMS:
        if (json_is_array(v))
            return fail(c, "an array of schemas (tuple validation) is not supported; use one schema");
        return compile_child(c, v, depth, &n->items);
    case KW_ENUM:
        if (!json_is_array(v))
            return fail(c, "must be an array");
        n->enum_values = v;
        n->enum_msg = value_msg("must be one of ", v);
        return n->enum_msg == NULL ? mizan_err_set(c->err, "out of memory") : 0;
    case KW_CONST:
        n->const_value = v;
        n->const_msg = value_msg("must be equal to ", v);
        return n->const_msg == NULL ? mizan_err_set(c->err, "out of memory") : 0;
    case KW_MINIMUM:
    case KW_MAXIMUM:
    case KW_EXCLUSIVE_MINIMUM:
    case KW_EXCLUSIVE_MAXIMUM:
        if (!json_is_number(v))
            return fail(c, "must be a number");
        if (kw == KW_MINIMUM)
            n->minimum = v;
        else if (kw == KW_MAXIMUM)
            n->maximum = v;
        else if (kw == KW_EXCLUSIVE_MINIMUM)
            n->exclusive_minimum = v;
        else
            n->exclusive_maximum = v;
        return 0;
    case KW_MULTIPLE_OF:
        if (!json_is_number(v) || json_number_value(v) <= 0)
            return fail(c, "must be a number greater than 0");
        n->multiple_of = v;
        n->multiple_dec = number_decimal(v);
        return 0;
    case KW_MIN_LENGTH:
        return get_count(c, v, &n->min_length);
    case KW_MAX_LENGTH:
        return get_count(c, v, &n->max_length);
    case KW_MIN_ITEMS:
        return get_count(c, v, &n->min_items);
    case KW_MAX_ITEMS:
        return get_count(c, v, &n->max_items);
    case KW_MIN_PROPERTIES:
        return get_count(c, v, &n->min_props);
    case KW_MAX_PROPERTIES:
        return get_count(c, v, &n->max_props);
    case KW_PATTERN:
        return compile_pattern(c, n, v);
    case KW_UNIQUE_ITEMS:
        if (!json_is_boolean(v))
            return fail(c, "must be a boolean");
        n->unique_items = json_is_true(v);
        return 0;
    case KW_DEFAULT:
        n->dflt = v;
        return 0;
    case KW_ANNOTATION:
        return json_is_string(v) ? 0 : fail(c, "must be a string");
    }
    return fail(c, "unknown keyword");
}

/* Compiles one (sub)schema js (borrowed) at the given nesting depth into a
 * new node in *out. On failure *out stays NULL and c->err says why. */
static int compile_node(compiler_t *c, const json_t *js, int depth, node_t **out)
{
    int rc = -1;
    *out = NULL;
    if (depth > MIZAN_SCHEMA_MAX_DEPTH)
        return fail(c, "schema nested deeper than %d levels", MIZAN_SCHEMA_MAX_DEPTH);
    if (!json_is_object(js) && !json_is_boolean(js))
        return fail(c, "a schema must be an object or a boolean");
    node_t *n = calloc(1, sizeof(*n));
    if (n == NULL)
        return mizan_err_set(c->err, "out of memory");
    n->min_length = n->max_length = n->min_items = n->max_items = -1;
    n->min_props = n->max_props = -1;
    if (json_is_boolean(js)) {
        n->is_bool = true;
        n->bool_value = json_is_true(js);
        rc = 0;
        goto done;
    }
    const char *key;
    size_t klen;
    json_t *value;
    json_object_keylen_foreach((json_t *)js, key, klen, value) {
        size_t mark = path_push(c, key, klen);
        size_t k = 0;
        while (k < sizeof(keywords) / sizeof(keywords[0]) &&
               !(strlen(keywords[k].name) == klen && memcmp(keywords[k].name, key, klen) == 0))
            k++;
        int krc;
        if (k < sizeof(keywords) / sizeof(keywords[0])) {
            krc = compile_keyword(c, n, keywords[k].kw, value, depth);
        } else {
            bool known = false;
            for (size_t u = 0; u < sizeof(unsupported_keywords) / sizeof(unsupported_keywords[0]); u++)
                if (strlen(unsupported_keywords[u]) == klen &&
                    memcmp(unsupported_keywords[u], key, klen) == 0)
                    known = true;
            krc = fail(c, known ? "unsupported keyword" : "unknown keyword");
        }
        path_pop(c, mark);
        if (krc < 0)
            goto done;
    }
    rc = 0;
done:
    if (rc < 0)
        node_free(n);
    else
        *out = n;
    return rc;
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
static int pattern_test(const node_t *n, const char *str, size_t len, int64_t *budget)
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
        int rc = pcre2_match(n->pattern, (PCRE2_SPTR)str, len, 0, 0, ts->md, ts->mctx);
        if (rc == PCRE2_ERROR_JIT_STACKLIMIT)
            rc = pcre2_match(n->pattern, (PCRE2_SPTR)str, len, 0, PCRE2_NO_JIT, ts->md, ts->mctx);
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

/* One step of the current location: a key, or an index when key is NULL. */
typedef struct seg {
    const char *key; /* borrowed from the instance or schema; NULL: index */
    size_t len;      /* key length */
    size_t index;    /* array index */
} seg_t;

/* Validation state, on the caller's stack. */
typedef struct vctx {
    const mizan_schema_t *s; /* the schema */
    const char *loc_root;    /* first loc element, or NULL */
    json_t *errors;          /* where violations go (borrowed) */
    int count;               /* violations appended so far */
    bool too_costly;         /* a pattern hit its limits in this call */
    int64_t budget;          /* work units left (see MIZAN_SCHEMA_BUDGET) */
    bool exhausted;          /* the budget ran out: validation stopped */
    size_t depth;            /* entries used in loc */
    /* Instance recursion follows schema nesting (at most
     * MIZAN_SCHEMA_MAX_DEPTH), plus one segment for a reported key. */
    seg_t loc[MIZAN_SCHEMA_MAX_DEPTH + 2];
} vctx_t;

static void loc_push_key(vctx_t *v, const char *key, size_t len)
{
    v->loc[v->depth].key = key;
    v->loc[v->depth].len = len;
    v->depth++;
}

static void loc_push_index(vctx_t *v, size_t index)
{
    v->loc[v->depth].key = NULL;
    v->loc[v->depth].index = index;
    v->depth++;
}

static void loc_pop(vctx_t *v)
{
    v->depth--;
}

/* Appends one error entry at the current location. Returns 0, or -1 when
 * out of memory. */
static int report(vctx_t *v, const char *type, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int report(vctx_t *v, const char *type, const char *fmt, ...)
{
    v->budget -= COST_REPORT;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);

    int rc = -1;
    json_t *entry = json_object();
    json_t *loc = json_array();
    if (entry == NULL || loc == NULL)
        goto done;
    if (v->loc_root != NULL && json_array_append_new(loc, json_string(v->loc_root)) < 0)
        goto done;
    for (size_t i = 0; i < v->depth; i++) {
        const seg_t *sg = &v->loc[i];
        json_t *e = sg->key != NULL ? json_stringn(sg->key, sg->len) : json_integer((json_int_t)sg->index);
        if (json_array_append_new(loc, e) < 0)
            goto done;
    }
    if (json_object_set_new(entry, "loc", loc) < 0) {
        loc = NULL; /* stolen even on failure */
        goto done;
    }
    loc = NULL;
    if (json_object_set_new(entry, "msg", json_string(msg)) < 0 ||
        json_object_set_new(entry, "type", json_string(type)) < 0)
        goto done;
    if (json_array_append_new(v->errors, entry) < 0) {
        entry = NULL;
        goto done;
    }
    entry = NULL;
    v->count++;
    rc = 0;
done:
    json_decref(loc);
    json_decref(entry);
    return rc;
}

static int validate_node(vctx_t *v, const node_t *n, const json_t *inst);

/* "expected string or null, got integer", naming the types as written. */
static int report_type(vctx_t *v, const node_t *n, const json_t *inst)
{
    char expected[128];
    size_t pos = 0;
    expected[0] = '\0';
    for (size_t i = 0; i < n->ntypes; i++) {
        const char *sep = i == 0 ? "" : i + 1 == n->ntypes ? " or " : ", ";
        int w = snprintf(expected + pos, sizeof(expected) - pos, "%s%s", sep,
                         type_names[n->type_order[i]]);
        if (w > 0 && (size_t)w < sizeof(expected) - pos)
            pos += (size_t)w;
    }
    return report(v, "type", "expected %s, got %s", expected, type_name_of(inst));
}

static const char *plural(long long n, const char *one, const char *many)
{
    return n == 1 ? one : many;
}

static int check_number(vctx_t *v, const node_t *n, const json_t *inst)
{
    char num[48];
    if (n->minimum != NULL && number_cmp(inst, n->minimum) < 0) {
        number_text(n->minimum, num, sizeof(num));
        if (report(v, "minimum", "must be >= %s", num) < 0)
            return -1;
    }
    if (n->maximum != NULL && number_cmp(inst, n->maximum) > 0) {
        number_text(n->maximum, num, sizeof(num));
        if (report(v, "maximum", "must be <= %s", num) < 0)
            return -1;
    }
    if (n->exclusive_minimum != NULL && number_cmp(inst, n->exclusive_minimum) <= 0) {
        number_text(n->exclusive_minimum, num, sizeof(num));
        if (report(v, "exclusiveMinimum", "must be > %s", num) < 0)
            return -1;
    }
    if (n->exclusive_maximum != NULL && number_cmp(inst, n->exclusive_maximum) >= 0) {
        number_text(n->exclusive_maximum, num, sizeof(num));
        if (report(v, "exclusiveMaximum", "must be < %s", num) < 0)
            return -1;
    }
    if (n->multiple_of != NULL && !decimal_multiple(number_decimal(inst), n->multiple_dec)) {
        number_text(n->multiple_of, num, sizeof(num));
        if (report(v, "multipleOf", "must be a multiple of %s", num) < 0)
            return -1;
    }
    return 0;
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

static int check_string(vctx_t *v, const node_t *n, const json_t *inst)
{
    const char *str = json_string_value(inst);
    size_t len = json_string_length(inst);
    if (n->min_length >= 0 || n->max_length >= 0) {
        long long cps = code_points(str, len);
        if (n->min_length >= 0 && cps < n->min_length &&
            report(v, "minLength", "at least %lld %s", n->min_length,
                   plural(n->min_length, "character", "characters")) < 0)
            return -1;
        if (n->max_length >= 0 && cps > n->max_length &&
            report(v, "maxLength", "at most %lld %s", n->max_length,
                   plural(n->max_length, "character", "characters")) < 0)
            return -1;
    }
    /* After one value was too costly the instance is invalid anyway; not
     * evaluating further patterns keeps one request from spending the
     * match limit once per string it contains. */
    if (n->pattern != NULL && !v->too_costly) {
        switch (pattern_test(n, str, len, &v->budget)) {
        case MATCH_OOM:
            return -1;
        case MATCH_YES:
            break;
        case MATCH_NO:
            if (report(v, "pattern", "must match pattern %s", n->pattern_src) < 0)
                return -1;
            break;
        case MATCH_BUDGET:
            v->exhausted = true;
            break;
        case MATCH_TOO_COSTLY:
            v->too_costly = true;
            if (report(v, "pattern", "pattern too costly to evaluate on this value") < 0)
                return -1;
            break;
        default:
            if (report(v, "pattern", "pattern could not be evaluated on this value") < 0)
                return -1;
            break;
        }
    }
    return 0;
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

static int check_array(vctx_t *v, const node_t *n, const json_t *inst)
{
    size_t size = json_array_size(inst);
    if (n->min_items >= 0 && (unsigned long long)size < (unsigned long long)n->min_items &&
        report(v, "minItems", "at least %lld %s", n->min_items, plural(n->min_items, "item", "items")) < 0)
        return -1;
    if (n->max_items >= 0 && (unsigned long long)size > (unsigned long long)n->max_items &&
        report(v, "maxItems", "at most %lld %s", n->max_items, plural(n->max_items, "item", "items")) < 0)
        return -1;
    if (n->unique_items) {
        size_t i = 0, j = 0;
        int dup = find_duplicate(inst, &i, &j, &v->budget);
        if (dup < 0)
            return -1;
        if (dup > 0 && report(v, "uniqueItems", "items must be unique (%zu and %zu are equal)", i, j) < 0)
            return -1;
    }
    if (n->items != NULL) {
        for (size_t k = 0; k < size; k++) {
            loc_push_index(v, k);
            int rc = validate_node(v, n->items, json_array_get(inst, k));
            loc_pop(v);
            if (rc < 0)
                return -1;
        }
    }
    return 0;
}

/* Is key one of the node's "properties"? */
static bool declared(const node_t *n, const char *key, size_t len)
{
    prop_t probe = {.name = key, .len = len, .schema = NULL};
    const prop_t *pp = &probe;
    return n->nprops > 0 && bsearch(&pp, n->sorted, n->nprops, sizeof(*n->sorted), prop_cmp) != NULL;
}

static int check_object(vctx_t *v, const node_t *n, const json_t *inst)
{
    size_t size = json_object_size(inst);
    if (n->min_props >= 0 && (unsigned long long)size < (unsigned long long)n->min_props &&
        report(v, "minProperties", "at least %lld %s", n->min_props,
               plural(n->min_props, "property", "properties")) < 0)
        return -1;
    if (n->max_props >= 0 && (unsigned long long)size > (unsigned long long)n->max_props &&
        report(v, "maxProperties", "at most %lld %s", n->max_props,
               plural(n->max_props, "property", "properties")) < 0)
        return -1;
    for (size_t i = 0; i < n->nrequired; i++) {
        const req_name_t *r = &n->required[i];
        if (json_object_getn(inst, r->name, r->len) != NULL)
            continue;
        loc_push_key(v, r->name, r->len);
        int rc = report(v, "missing", "field required");
        loc_pop(v);
        if (rc < 0)
            return -1;
    }
    for (size_t i = 0; i < n->nprops; i++) {
        const prop_t *p = &n->props[i];
        const json_t *value = json_object_getn(inst, p->name, p->len);
        if (value == NULL)
            continue;
        loc_push_key(v, p->name, p->len);
        int rc = validate_node(v, p->schema, value);
        loc_pop(v);
        if (rc < 0)
            return -1;
    }
    if (n->additional != NULL && !(n->additional->is_bool && n->additional->bool_value)) {
        const char *key;
        size_t klen;
        json_t *value;
        json_object_keylen_foreach((json_t *)inst, key, klen, value) {
            if (declared(n, key, klen))
                continue;
            loc_push_key(v, key, klen);
            int rc = n->additional->is_bool ? report(v, "additionalProperties", "unexpected property")
                                            : validate_node(v, n->additional, value);
            loc_pop(v);
            if (rc < 0)
                return -1;
        }
    }
    return 0;
}

/* Validates inst (borrowed) against n at the current location, appending
 * every violation. Returns 0, or -1 when out of memory. */
static int validate_node(vctx_t *v, const node_t *n, const json_t *inst)
{
    if (v->exhausted || (v->budget -= COST_NODE) <= 0) {
        v->exhausted = true;
        return 0;
    }
    if (n->is_bool)
        return n->bool_value ? 0 : report(v, "false", "value not allowed");
    if (n->types != 0 && !(n->types & type_bits(inst)))
        return report_type(v, n, inst);
    if (n->const_value != NULL && !values_equal(inst, n->const_value) &&
        report(v, "const", "%s", n->const_msg) < 0)
        return -1;
    if (n->enum_values != NULL) {
        v->budget -= (int64_t)json_array_size(n->enum_values) * COST_COMPARE;
        bool found = false;
        for (size_t i = 0; i < json_array_size(n->enum_values) && !found; i++)
            found = values_equal(inst, json_array_get(n->enum_values, i));
        if (!found && report(v, "enum", "%s", n->enum_msg) < 0)
            return -1;
    }
    switch (json_typeof(inst)) {
    case JSON_INTEGER:
    case JSON_REAL:
        return check_number(v, n, inst);
    case JSON_STRING:
        return check_string(v, n, inst);
    case JSON_ARRAY:
        return check_array(v, n, inst);
    case JSON_OBJECT:
        return check_object(v, n, inst);
    default:
        return 0;
    }
}

/* ---------------------------------------------------------------- defaults */

/*
 * Fills the defaults of n's missing properties into inst (borrowed,
 * modified), then descends into the values that were already there. Only
 * called on a valid instance. Returns 0, or -1 when out of memory.
 */
static int fill_defaults(const node_t *n, json_t *inst)
{
    if (n->is_bool)
        return 0;
    if (json_is_array(inst) && n->items != NULL) {
        for (size_t k = 0; k < json_array_size(inst); k++)
            if (fill_defaults(n->items, json_array_get(inst, k)) < 0)
                return -1;
        return 0;
    }
    if (!json_is_object(inst))
        return 0;
    /* Additional members first, so freshly filled ones are not visited. */
    if (n->additional != NULL && !n->additional->is_bool) {
        const char *key;
        size_t klen;
        json_t *value;
        json_object_keylen_foreach(inst, key, klen, value) {
            if (!declared(n, key, klen) && fill_defaults(n->additional, value) < 0)
                return -1;
        }
    }
    for (size_t i = 0; i < n->nprops; i++) {
        const prop_t *p = &n->props[i];
        json_t *value = json_object_getn(inst, p->name, p->len);
        if (value != NULL) {
            if (fill_defaults(p->schema, value) < 0)
                return -1;
        } else if (p->schema->dflt != NULL) {
            json_t *copy = json_deep_copy(p->schema->dflt);
            if (copy == NULL || json_object_setn_new(inst, p->name, p->len, copy) < 0)
                return -1; /* setn_new consumed copy */
        }
    }
    return 0;
}

/* ------------------------------------------------------------------ public */

mizan_schema_t *mizan_schema_compile(const json_t *schema, mizan_err_t *err)
{
    mizan_schema_t *s = NULL;
    compiler_t c = {.err = err, .path = "", .pathlen = 0};
    if (schema == NULL) {
        mizan_err_set(err, "schema: missing");
        goto done;
    }
    s = calloc(1, sizeof(*s));
    if (s == NULL) {
        mizan_err_set(err, "out of memory");
        goto done;
    }
    if (compile_node(&c, schema, 0, &s->root) < 0)
        goto done;
    /* The tree points into schema; keep it alive (it is never modified). */
    s->source = json_incref((json_t *)schema);
    return s;
done:
    mizan_schema_free(s);
    return NULL;
}

void mizan_schema_free(mizan_schema_t *s)
{
    if (s == NULL)
        return;
    node_free(s->root);
    json_decref(s->source);
    free(s);
}

const json_t *mizan_schema_source(const mizan_schema_t *s)
{
    return s != NULL ? s->source : NULL;
}

int mizan_schema_validate(const mizan_schema_t *s, json_t *instance, const char *loc_root,
                          json_t *errors)
{
    if (s == NULL || instance == NULL || !json_is_array(errors))
        return -1;
    vctx_t v = {.s = s, .loc_root = loc_root, .errors = errors, .count = 0, .depth = 0,
                .budget = MIZAN_SCHEMA_BUDGET};
    if (validate_node(&v, s->root, instance) < 0)
        return -1;
    if (v.exhausted) {
        /* Refused as a whole: what was found so far stays listed, and one
         * entry at the root says why the rest was not looked at. */
        v.depth = 0;
        if (report(&v, "budget", "validation too costly: this input needs more work to validate than one "
                                 "request may spend") < 0)
            return -1;
        return v.count;
    }
    if (v.count == 0 && fill_defaults(s->root, instance) < 0)
        return -1;
    return v.count;
}
