/*
 * fuzz_jcs.c - fuzz target for mizan_jcs_dump() (jcs.c), the canonical
 * JSON under every cache key.
 *
 * The input is parsed as JSON (any value, embedded NULs allowed, duplicate
 * names refused, as the request parsers do). Properties checked beyond "no
 * memory error":
 *   - the dump succeeds exactly when the value nests no deeper than
 *     MIZAN_JCS_MAX_DEPTH (jansson only produces valid UTF-8 and finite
 *     numbers, the other reasons to fail);
 *   - determinism: two dumps of the same value are byte for byte equal;
 *   - the text holds no raw control character (they are escaped) and its
 *     reported length is its string length;
 *   - fixed point: parsing the canonical text and dumping again gives the
 *     same bytes, and the value read back equals the original with numbers
 *     compared by value (1.0 is written "1" and reads back as an integer);
 *   - object members come out sorted by their UTF-16 code units (checked
 *     with an independent comparison here);
 *   - every real's text (mizan_jcs_number), and that of the input's first
 *     8 bytes taken as a double, is ECMAScript's: see check_number().
 * A canonical text that jansson cannot read back because it holds an
 * integer-looking number past int64 (a large real such as 1e19 is written
 * "10000000000000000000", as ECMAScript prints it) skips the read-back
 * checks: that is a limit of the reader, not a canonicalization error.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "fuzz.h"
#include "jcs.h"

#define PARSE_FLAGS (JSON_DECODE_ANY | JSON_ALLOW_NUL | JSON_REJECT_DUPLICATES)

/* jcs.c's depth: a scalar or an empty container is depth 1, children one deeper. */
static int jcs_depth(const json_t *v)
{
    int deepest = 0;
    if (json_is_object(v)) {
        const char *key;
        json_t *child;
        json_object_foreach((json_t *)v, key, child)
        {
            (void)key;
            int d = jcs_depth(child);
            if (d > deepest)
                deepest = d;
        }
    } else if (json_is_array(v)) {
        size_t i;
        json_t *child;
        json_array_foreach(v, i, child)
        {
            int d = jcs_depth(child);
            if (d > deepest)
                deepest = d;
        }
    }
    return deepest + 1;
}

/* Equality with numbers compared by value, whatever their jansson type. */
static bool same_value(const json_t *a, const json_t *b)
{
    if (json_is_number(a) && json_is_number(b)) {
        if (json_is_integer(a) && json_is_integer(b))
            return json_integer_value(a) == json_integer_value(b);
        return json_number_value(a) == json_number_value(b);
    }
    if (json_typeof(a) != json_typeof(b))
        return false;
    if (json_is_array(a)) {
        if (json_array_size(a) != json_array_size(b))
            return false;
        for (size_t i = 0; i < json_array_size(a); i++)
            if (!same_value(json_array_get(a, i), json_array_get(b, i)))
                return false;
        return true;
    }
    if (json_is_object(a)) {
        if (json_object_size(a) != json_object_size(b))
            return false;
        const char *key;
        size_t klen;
        json_t *child;
        json_object_keylen_foreach((json_t *)a, key, klen, child)
        {
            json_t *other = json_object_getn(b, key, klen);
            if (other == NULL || !same_value(child, other))
                return false;
        }
        return true;
    }
    return json_equal(a, b);
}

/* Next UTF-16 code unit of s[0..n) at *i (UTF-8 known valid); *pending holds a low surrogate. */
static unsigned next_unit(const unsigned char *s, size_t n, size_t *i, unsigned *pending)
{
    if (*pending != 0) {
        unsigned u = *pending;
        *pending = 0;
        return u;
    }
    unsigned c = s[*i];
    unsigned cp;
    size_t len;
    if (c < 0x80)
        cp = c, len = 1;
    else if (c < 0xE0)
        cp = c & 0x1F, len = 2;
    else if (c < 0xF0)
        cp = c & 0x0F, len = 3;
    else
        cp = c & 0x07, len = 4;
    for (size_t k = 1; k < len && *i + k < n; k++)
        cp = (cp << 6) | (s[*i + k] & 0x3F);
    *i += len;
    if (cp >= 0x10000) {
        cp -= 0x10000;
        *pending = 0xDC00 + (cp & 0x3FF);
        return 0xD800 + (cp >> 10);
    }
    return cp;
}

/* Compares two member names by UTF-16 code units, as RFC 8785 sorts them. */
static int utf16_cmp(const char *a, size_t alen, const char *b, size_t blen)
{
    size_t i = 0, j = 0;
    unsigned pa = 0, pb = 0;
    while ((i < alen || pa != 0) && (j < blen || pb != 0)) {
        unsigned ua = next_unit((const unsigned char *)a, alen, &i, &pa);
        unsigned ub = next_unit((const unsigned char *)b, blen, &j, &pb);
        if (ua != ub)
            return ua < ub ? -1 : 1;
    }
    bool a_left = i < alen || pa != 0, b_left = j < blen || pb != 0;
    return a_left == b_left ? 0 : a_left ? 1 : -1;
}

/* Checks that the members of every object in v (read back, insertion order) are sorted. */
static void check_sorted(const json_t *v)
{
    if (json_is_array(v)) {
        size_t i;
        json_t *child;
        json_array_foreach(v, i, child)
            check_sorted(child);
        return;
    }
    if (!json_is_object(v))
        return;
    const char *key, *prev = NULL;
    size_t klen, prevlen = 0;
    json_t *child;
    json_object_keylen_foreach((json_t *)v, key, klen, child)
    {
        if (prev != NULL)
            FUZZ_CHECK(utf16_cmp(prev, prevlen, key, klen) < 0, "object members are sorted by UTF-16 code units");
        prev = key;
        prevlen = klen;
        check_sorted(child);
    }
}

/* The digits of a number's text up to any exponent, without leading and trailing zeros. */
static void significant_digits(const char *text, char *out, size_t outlen)
{
    size_t n = 0;
    for (const char *p = text; *p != '\0' && *p != 'e' && n + 1 < outlen; p++)
        if (*p >= '0' && *p <= '9' && (n > 0 || *p != '0'))
            out[n++] = *p;
    while (n > 0 && out[n - 1] == '0')
        n--;
    out[n] = '\0';
}

/*
 * True when some decimal of p significant digits reads back as d; *closest
 * is set when the correctly rounded one does. The candidates are that
 * correctly rounded decimal and its neighbours one unit in the last digit
 * away: next to a power of two the rounding interval of d is lopsided, and
 * the nearest p-digit decimal can miss it while a neighbour does not.
 */
static bool p_digits_suffice(double d, int p, bool *closest)
{
    char text[48];
    snprintf(text, sizeof(text), "%.*e", p - 1, fabs(d));
    char *e = strchr(text, 'e');
    long exp10 = strtol(e + 1, NULL, 10);
    unsigned long long m = 0;
    for (const char *c = text; c < e; c++)
        if (*c >= '0' && *c <= '9')
            m = m * 10 + (unsigned long long)(*c - '0');
    *closest = strtod(text, NULL) == fabs(d);
    if (*closest)
        return true;
    for (int delta = -1; delta <= 1; delta += 2) {
        unsigned long long cand = m + (unsigned long long)(long long)delta;
        snprintf(text, sizeof(text), "%llue%ld", cand, exp10 - (p - 1));
        if (cand > 0 && strtod(text, NULL) == fabs(d))
            return true;
    }
    return false;
}

/*
 * mizan_jcs_number() against an independent derivation of ECMAScript's
 * Number::toString: NaN and infinities refused; otherwise the text reads
 * back as exactly d with the fewest significant digits that can (every
 * precision tried in turn), and those are the correctly rounded digits
 * whenever the correctly rounded decimal reads back; exponent form exactly
 * when |d| >= 1e21 or |d| < 1e-6; -0 is "0"; a buffer one byte short is
 * refused.
 */
static void check_number(double d)
{
    char out[32], shorter[32];
    int n = mizan_jcs_number(d, out, sizeof(out));
    if (isnan(d) || isinf(d)) {
        FUZZ_CHECK(n == -1, "NaN and infinities have no canonical text");
        return;
    }
    FUZZ_CHECK(n > 0 && (size_t)n == strlen(out), "the returned length is the text's length");
    FUZZ_CHECK(mizan_jcs_number(d, shorter, (size_t)n) == -1, "a buffer without room for the NUL is refused");
    FUZZ_CHECK(mizan_jcs_number(d, shorter, (size_t)n + 1) == n && strcmp(shorter, out) == 0,
               "a buffer of exactly the right size is enough");
    char *end;
    double back = strtod(out, &end);
    FUZZ_CHECK(*end == '\0' && back == d, "the text reads back as the same number");
    if (d == 0) {
        FUZZ_CHECK(strcmp(out, "0") == 0, "zero (and minus zero) is \"0\"");
        return;
    }
    int p = 1;
    bool closest = false;
    while (p < 17 && !p_digits_suffice(d, p, &closest))
        p++;
    if (p == 17)
        p_digits_suffice(d, p, &closest);
    char got[40];
    significant_digits(out, got, sizeof(got));
    FUZZ_CHECK(strlen(got) == (size_t)p, "the fewest significant digits that read back");
    if (closest) {
        char probe[48], want[40];
        snprintf(probe, sizeof(probe), "%.*e", p - 1, d);
        significant_digits(probe, want, sizeof(want));
        FUZZ_CHECK(strcmp(want, got) == 0, "the correctly rounded digits when they read back");
    }
    double a = fabs(d);
    FUZZ_CHECK((strchr(out, 'e') != NULL) == (a >= 1e21 || a < 1e-6),
               "exponent form exactly outside [1e-6, 1e21)");
}

/* Checks the text of every real in v (borrowed), at most *budget of them. */
static void check_reals(const json_t *v, int *budget)
{
    if (*budget <= 0)
        return;
    if (json_is_real(v)) {
        (*budget)--;
        check_number(json_real_value(v));
    } else if (json_is_array(v)) {
        size_t i;
        json_t *child;
        json_array_foreach(v, i, child)
            check_reals(child, budget);
    } else if (json_is_object(v)) {
        const char *key;
        json_t *child;
        json_object_foreach((json_t *)v, key, child)
            check_reals(child, budget);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_init();
    /* The first 8 bytes as a double's bits: every NaN, infinity, subnormal. */
    if (size >= sizeof(double)) {
        double raw;
        memcpy(&raw, data, sizeof(raw));
        check_number(raw);
    }
    json_error_t jerr;
    json_t *v = json_loadb((const char *)data, size, PARSE_FLAGS, &jerr);
    json_t *back = NULL;
    char *one = NULL, *two = NULL, *three = NULL;
    if (v == NULL)
        return 0;
    int budget = 64;
    check_reals(v, &budget);

    mizan_err_t err = {{0}};
    size_t len1 = 0, len2 = 0, len3 = 0;
    one = mizan_jcs_dump(v, &len1, &err);
    bool shallow = jcs_depth(v) <= MIZAN_JCS_MAX_DEPTH;
    if (one == NULL) {
        FUZZ_CHECK(!shallow, "only values nested too deep fail to canonicalize");
        FUZZ_CHECK(err.msg[0] != '\0', "a failure has a reason");
        goto done;
    }
    FUZZ_CHECK(shallow, "values nested too deep are refused");
    FUZZ_CHECK(strlen(one) == len1, "the reported length is the text's length (no raw NUL)");
    for (size_t i = 0; i < len1; i++)
        FUZZ_CHECK((unsigned char)one[i] >= 0x20, "control characters are escaped");

    mizan_err_t err2 = {{0}};
    two = mizan_jcs_dump(v, &len2, &err2);
    FUZZ_CHECK(two != NULL && len2 == len1 && memcmp(one, two, len1) == 0, "two dumps are identical");

    back = json_loadb(one, len1, PARSE_FLAGS, &jerr);
    if (back == NULL) {
        FUZZ_CHECK(strstr(jerr.text, "too big") != NULL, "the canonical text is valid JSON");
        goto done;
    }
    FUZZ_CHECK(same_value(v, back), "the canonical text reads back as the same value");
    check_sorted(back);
    mizan_err_t err3 = {{0}};
    three = mizan_jcs_dump(back, &len3, &err3);
    FUZZ_CHECK(three != NULL && len3 == len1 && memcmp(one, three, len1) == 0,
               "dump(parse(dump(v))) == dump(v)");

done:
    free(one);
    free(two);
    free(three);
    json_decref(back);
    json_decref(v);
    return 0;
}
