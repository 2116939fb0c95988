/*
 * schema_format.c - `format` assertions for the input validator (see
 * schema_format.h). Every checker reads the bytes it is given and nothing
 * else; none allocates except `regex`, which compiles the pattern once.
 */
#include "schema_format.h"

#define PCRE2_CODE_UNIT_WIDTH 8

#include <pcre2.h>
#include <stdint.h>
#include <string.h>

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static bool is_alpha(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool is_hex(char c)
{
    return is_digit(c) || ((c | 0x20) >= 'a' && (c | 0x20) <= 'f');
}

/* n ASCII digits at s as a number, or -1. */
static int digits(const char *s, size_t n)
{
    int v = 0;
    for (size_t i = 0; i < n; i++) {
        if (!is_digit(s[i]))
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

static bool leap_year(int y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

/* full-date: YYYY-MM-DD. */
static bool check_date(const char *s, size_t len)
{
    if (len != 10 || s[4] != '-' || s[7] != '-')
        return false;
    int y = digits(s, 4), m = digits(s + 5, 2), d = digits(s + 8, 2);
    if (y < 0 || m < 1 || m > 12 || d < 1)
        return false;
    static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int max = mdays[m - 1] + (m == 2 && leap_year(y) ? 1 : 0);
    return d <= max;
}

/* full-time: HH:MM:SS[.frac](Z|+HH:MM|-HH:MM); a leap second only where
 * the time is 23:59:60 in UTC. */
static bool check_time(const char *s, size_t len)
{
    if (len < 9 || s[2] != ':' || s[5] != ':')
        return false;
    int h = digits(s, 2), mi = digits(s + 3, 2), se = digits(s + 6, 2);
    if (h < 0 || mi < 0 || se < 0 || h > 23 || mi > 59 || se > 60)
        return false;
    size_t p = 8;
    if (p < len && s[p] == '.') {
        p++;
        size_t start = p;
        while (p < len && is_digit(s[p]))
            p++;
        if (p == start)
            return false;
    }
    if (p >= len)
        return false;
    int off = 0; /* minutes east of UTC */
    if ((s[p] == 'Z' || s[p] == 'z') && p + 1 == len) {
        off = 0;
    } else if ((s[p] == '+' || s[p] == '-') && len - p == 6 && s[p + 3] == ':') {
        int oh = digits(s + p + 1, 2), om = digits(s + p + 4, 2);
        if (oh < 0 || om < 0 || oh > 23 || om > 59)
            return false;
        off = (oh * 60 + om) * (s[p] == '+' ? 1 : -1);
    } else {
        return false;
    }
    if (se == 60) {
        int utc = ((h * 60 + mi - off) % 1440 + 1440) % 1440;
        if (utc != 23 * 60 + 59)
            return false;
    }
    return true;
}

static bool check_date_time(const char *s, size_t len)
{
    if (len < 11 || (s[10] != 'T' && s[10] != 't'))
        return false;
    return check_date(s, 10) && check_time(s + 11, len - 11);
}

/* Dotted quad, each part 0-255 without leading zeros. */
static bool check_ipv4(const char *s, size_t len)
{
    size_t p = 0;
    for (int part = 0; part < 4; part++) {
        if (part > 0) {
            if (p >= len || s[p] != '.')
                return false;
            p++;
        }
        size_t start = p;
        int v = 0;
        while (p < len && is_digit(s[p]) && p - start < 4)
            v = v * 10 + (s[p++] - '0');
        size_t n = p - start;
        if (n == 0 || n > 3 || v > 255 || (n > 1 && s[start] == '0'))
            return false;
    }
    return p == len;
}

static bool check_ipv6(const char *s, size_t len)
{
    int groups = 0;
    bool compressed = false;
    size_t p = 0;
    if (len >= 2 && s[0] == ':' && s[1] == ':') {
        compressed = true;
        p = 2;
        if (p == len)
            return true;
    } else if (len > 0 && s[0] == ':') {
        return false;
    }
    while (p < len) {
        size_t start = p;
        while (p < len && is_hex(s[p]))
            p++;
        size_t n = p - start;
        if (p < len && s[p] == '.') {
            /* An embedded IPv4 address ends the text and counts as two groups. */
            if (!check_ipv4(s + start, len - start))
                return false;
            groups += 2;
            p = len;
            break;
        }
        if (n == 0 || n > 4)
            return false;
        groups++;
        if (p == len)
            break;
        if (s[p] != ':')
            return false;
        p++;
        if (p < len && s[p] == ':') {
            if (compressed)
                return false;
            compressed = true;
            p++;
            if (p == len)
                break;
        } else if (p == len) {
            return false; /* a single trailing ':' */
        }
    }
    return compressed ? groups < 8 : groups == 8;
}

/* RFC 1123 host name: dot-separated labels of letters, digits and inner
 * hyphens, 1-63 bytes each, 253 in all. */
static bool check_hostname(const char *s, size_t len)
{
    if (len == 0 || len > 253)
        return false;
    size_t label = 0;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (c == '.') {
            if (label == 0 || s[i - 1] == '-')
                return false;
            label = 0;
            continue;
        }
        if (!is_alpha(c) && !is_digit(c) && c != '-')
            return false;
        if (c == '-' && label == 0)
            return false;
        if (++label > 63)
            return false;
    }
    return label > 0 && s[len - 1] != '-';
}

static bool atext(char c)
{
    return is_alpha(c) || is_digit(c) || (c != '\0' && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL) ||
           (unsigned char)c >= 0x80;
}

/* A host name whose labels may also hold UTF-8 (U-labels), for idn-email. */
static bool check_idn_host(const char *s, size_t len)
{
    if (len == 0 || len > 253 || s[0] == '.' || s[len - 1] == '.' || s[0] == '-')
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x80 && !is_alpha((char)c) && !is_digit((char)c) && c != '-' && c != '.')
            return false;
        if (c == '.' && s[i + 1] == '.')
            return false;
    }
    return true;
}

static bool check_email_as(const char *s, size_t len, bool idn);

static bool check_email(const char *s, size_t len)
{
    return check_email_as(s, len, false);
}

static bool check_email_as(const char *s, size_t len, bool idn)
{
    size_t at = len;
    size_t p = 0;
    if (len > 0 && s[0] == '"') {
        /* quoted-string local part */
        p = 1;
        while (p < len && s[p] != '"') {
            if (s[p] == '\\')
                p++;
            else if ((unsigned char)s[p] < 0x20)
                return false;
            p++;
        }
        if (p >= len || p + 1 >= len || s[p + 1] != '@')
            return false;
        at = p + 1;
    } else {
        for (p = 0; p < len && s[p] != '@'; p++) {
            if (s[p] == '.') {
                if (p == 0 || s[p - 1] == '.')
                    return false;
            } else if (!atext(s[p])) {
                return false;
            }
        }
        if (p == 0 || p >= len || s[p - 1] == '.')
            return false;
        at = p;
    }
    const char *d = s + at + 1;
    size_t dl = len - at - 1;
    if (dl >= 2 && d[0] == '[' && d[dl - 1] == ']') {
        if (dl > 7 && strncmp(d + 1, "IPv6:", 5) == 0)
            return check_ipv6(d + 6, dl - 7);
        return check_ipv4(d + 1, dl - 2);
    }
    return idn ? check_idn_host(d, dl) : check_hostname(d, dl);
}

static bool check_uuid(const char *s, size_t len)
{
    if (len != 36)
        return false;
    for (size_t i = 0; i < 36; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i] != '-')
                return false;
        } else if (!is_hex(s[i])) {
            return false;
        }
    }
    return true;
}

/* Characters allowed in a URI besides percent-escapes (RFC 3986
 * unreserved, gen-delims and sub-delims); iri also allows non-ASCII. */
static bool uri_char(char c, bool iri)
{
    if (is_alpha(c) || is_digit(c))
        return true;
    if ((unsigned char)c >= 0x80)
        return iri;
    return c != '\0' && strchr("-._~:/?#[]@!$&'()*+,;=", c) != NULL;
}

/* The authority of a URI (after "//"): [userinfo@]host[:port]. */
static bool check_authority(const char *s, size_t len, bool iri)
{
    const char *at = memchr(s, '@', len);
    size_t hs = 0;
    if (at != NULL) {
        for (const char *p = s; p < at; p++)
            if (*p == '[' || *p == ']' || *p == '/' || *p == '?' || *p == '#')
                return false;
        hs = (size_t)(at - s) + 1;
    }
    const char *h = s + hs;
    size_t hl = len - hs;
    size_t port = hl;
    if (hl > 0 && h[0] == '[') {
        const char *close = memchr(h, ']', hl);
        if (close == NULL)
            return false;
        size_t il = (size_t)(close - h) - 1;
        bool future = il > 3 && (h[1] == 'v' || h[1] == 'V') && is_hex(h[2]);
        if (future) {
            /* IPvFuture: "v" 1*HEXDIG "." 1*( unreserved / sub-delims / ":" ) */
            size_t k = 2;
            while (k <= il && is_hex(h[k]))
                k++;
            if (k > il || h[k] != '.' || k + 1 > il)
                return false;
            for (k++; k <= il; k++)
                if (!is_alpha(h[k]) && !is_digit(h[k]) && strchr("-._~!$&'()*+,;=:", h[k]) == NULL)
                    return false;
        } else if (!check_ipv6(h + 1, il)) {
            return false;
        }
        port = (size_t)(close - h) + 1;
        if (port < hl && h[port] != ':')
            return false;
    } else {
        for (size_t i = 0; i < hl; i++) {
            if (h[i] == ':') {
                port = i;
                break;
            }
            if (h[i] == '[' || h[i] == ']' || h[i] == '@')
                return false;
            if (!uri_char(h[i], iri))
                return false;
        }
    }
    for (size_t i = port + 1; i < hl; i++)
        if (!is_digit(h[i]))
            return false;
    return true;
}

/* A URI (absolute when relative_ok is false) or a relative reference. */
static bool check_uri(const char *s, size_t len, bool relative_ok, bool iri)
{
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '%') {
            if (i + 2 >= len || !is_hex(s[i + 1]) || !is_hex(s[i + 2]))
                return false;
            i += 2;
        } else if (!uri_char(s[i], iri)) {
            return false;
        }
    }
    size_t p = 0;
    if (len > 0 && is_alpha(s[0])) {
        size_t i = 1;
        while (i < len && (is_alpha(s[i]) || is_digit(s[i]) || s[i] == '+' || s[i] == '-' || s[i] == '.'))
            i++;
        if (i < len && s[i] == ':')
            p = i + 1;
    }
    if (p == 0) {
        if (!relative_ok)
            return false;
        /* a relative reference's first segment has no ':' */
        size_t seg = strcspn(s, "/?#");
        if (seg > len)
            seg = len;
        if (memchr(s, ':', seg) != NULL)
            return false;
    }
    if (len - p >= 2 && s[p] == '/' && s[p + 1] == '/') {
        size_t a = p + 2, e = a;
        while (e < len && s[e] != '/' && s[e] != '?' && s[e] != '#')
            e++;
        if (!check_authority(s + a, e - a, iri))
            return false;
        p = e;
    }
    /* '[' and ']' only belong in the authority. */
    size_t q = p;
    while (q < len && s[q] != '#')
        q++;
    for (size_t i = p; i < q; i++)
        if (s[i] == '[' || s[i] == ']')
            return false;
    for (size_t i = q + 1; i < len; i++)
        if (s[i] == '#' || s[i] == '[' || s[i] == ']')
            return false;
    return true;
}

static bool check_json_pointer(const char *s, size_t len)
{
    if (len > 0 && s[0] != '/')
        return false;
    for (size_t i = 0; i < len; i++)
        if (s[i] == '~' && (i + 1 >= len || (s[i + 1] != '0' && s[i + 1] != '1')))
            return false;
    return true;
}

static bool check_relative_json_pointer(const char *s, size_t len)
{
    size_t i = 0;
    while (i < len && is_digit(s[i]))
        i++;
    if (i == 0 || (i > 1 && s[0] == '0'))
        return false;
    if (i == len)
        return true;
    if (s[i] == '#' && i + 1 == len)
        return true;
    return check_json_pointer(s + i, len - i);
}

/* RFC 3339 appendix A duration: P(date[T time] | T time | nW), each part
 * digits and a designator, date as Y[M[D]] | M[D] | D, time as H[M[S]] |
 * M[S] | S. */
static bool check_duration(const char *s, size_t len)
{
    if (len < 3 || s[0] != 'P')
        return false;
    size_t p = 1;
    /* One component: digits, then its designator. */
    char units[8];
    size_t nunits = 0;
    bool in_time = false, time_seen = false;
    while (p < len) {
        if (s[p] == 'T') {
            if (in_time)
                return false;
            in_time = time_seen = true;
            p++;
            units[nunits++] = 'T';
            if (p == len)
                return false;
            continue;
        }
        size_t start = p;
        while (p < len && is_digit(s[p]))
            p++;
        if (p == start || p == len || nunits >= sizeof(units))
            return false;
        char u = s[p++];
        if (in_time ? strchr("HMS", u) == NULL : strchr("YMDW", u) == NULL)
            return false;
        units[nunits++] = in_time ? (char)(u | 0x20) : u; /* time units lower case: m is minutes */
    }
    (void)time_seen;
    /* The sequence must be one of the grammar's. */
    char seq[9];
    memcpy(seq, units, nunits);
    seq[nunits] = '\0';
    static const char *const dates[] = {"", "Y", "YM", "YMD", "M", "MD", "D"};
    static const char *const times[] = {"h", "hm", "hms", "m", "ms", "s"};
    if (strcmp(seq, "W") == 0)
        return true;
    char *t = strchr(seq, 'T');
    if (t != NULL)
        *t++ = '\0';
    bool date_ok = false, time_ok = t == NULL;
    for (size_t i = 0; i < sizeof(dates) / sizeof(dates[0]); i++)
        date_ok = date_ok || strcmp(seq, dates[i]) == 0;
    for (size_t i = 0; t != NULL && i < sizeof(times) / sizeof(times[0]); i++)
        time_ok = time_ok || strcmp(t, times[i]) == 0;
    return date_ok && time_ok && !(seq[0] == '\0' && t == NULL);
}

/* RFC 6570 URI Template: literals, and expressions {[op]varspec,...}. */
static bool check_uri_template(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '{') {
            size_t p = i + 1;
            if (p < len && strchr("+#./;?&=,!@|", s[p]) != NULL && s[p] != '\0')
                p++;
            for (;;) {
                /* varname: varchar *(["."] varchar) */
                size_t start = p;
                bool dot = false;
                while (p < len) {
                    if (is_alpha(s[p]) || is_digit(s[p]) || s[p] == '_') {
                        dot = false;
                        p++;
                    } else if (s[p] == '%' && p + 2 < len && is_hex(s[p + 1]) && is_hex(s[p + 2])) {
                        dot = false;
                        p += 3;
                    } else if (s[p] == '.' && p > start && !dot) {
                        dot = true;
                        p++;
                    } else {
                        break;
                    }
                }
                if (p == start || dot || p >= len)
                    return false;
                if (s[p] == ':') {
                    size_t d = ++p;
                    while (p < len && is_digit(s[p]))
                        p++;
                    if (p == d || p - d > 4 || s[d] == '0')
                        return false;
                } else if (s[p] == '*') {
                    p++;
                }
                if (p >= len)
                    return false;
                if (s[p] == ',') {
                    p++;
                    continue;
                }
                if (s[p] != '}')
                    return false;
                break;
            }
            i = p;
        } else if (c == '%') {
            if (i + 2 >= len || !is_hex(s[i + 1]) || !is_hex(s[i + 2]))
                return false;
            i += 2;
        } else if (c <= 0x20 || c == 0x7f || strchr("\"<>\\^`|}", (char)c) != NULL) {
            return false;
        }
    }
    return true;
}

/* An ECMA-262 regular expression: what PCRE2 compiles in the validator's
 * flavour, less the syntax ECMA-262 lacks (Python's (?P...), comment
 * groups, global inline flags, the \a escape, the \A \Z \z \G anchors). */
static bool check_regex(const char *s, size_t len)
{
    for (size_t i = 0; i + 1 < len; i++) {
        if (s[i] == '\\') {
            char e = s[i + 1];
            if (e == 'a' || e == 'A' || e == 'Z' || e == 'z' || e == 'G')
                return false;
            i++;
            continue;
        }
        if (s[i] == '(' && s[i + 1] == '?' && i + 2 < len) {
            if (s[i + 2] == 'P' || s[i + 2] == '#')
                return false;
            size_t k = i + 2;
            while (k < len && (is_alpha(s[k]) || s[k] == '-'))
                k++;
            if (k > i + 2 && k < len && s[k] == ')')
                return false;
        }
    }
    int errcode;
    PCRE2_SIZE erroffset;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)s, len,
                                   PCRE2_UTF | PCRE2_ALT_BSUX | PCRE2_NEVER_BACKSLASH_C | PCRE2_ALLOW_EMPTY_CLASS,
                                   &errcode, &erroffset, NULL);
    if (re == NULL)
        return false;
    pcre2_code_free(re);
    return true;
}

bool mizan_schema_format_check(const char *format, const char *str, size_t len)
{
    if (strcmp(format, "date-time") == 0)
        return check_date_time(str, len);
    if (strcmp(format, "date") == 0)
        return check_date(str, len);
    if (strcmp(format, "time") == 0)
        return check_time(str, len);
    if (strcmp(format, "email") == 0)
        return check_email(str, len);
    if (strcmp(format, "idn-email") == 0)
        return check_email_as(str, len, true);
    if (strcmp(format, "ipv4") == 0)
        return check_ipv4(str, len);
    if (strcmp(format, "ipv6") == 0)
        return check_ipv6(str, len);
    if (strcmp(format, "hostname") == 0)
        return check_hostname(str, len);
    if (strcmp(format, "uri") == 0)
        return check_uri(str, len, false, false);
    if (strcmp(format, "uri-reference") == 0)
        return check_uri(str, len, true, false);
    if (strcmp(format, "iri") == 0)
        return check_uri(str, len, false, true);
    if (strcmp(format, "iri-reference") == 0)
        return check_uri(str, len, true, true);
    if (strcmp(format, "uuid") == 0)
        return check_uuid(str, len);
    if (strcmp(format, "json-pointer") == 0)
        return check_json_pointer(str, len);
    if (strcmp(format, "relative-json-pointer") == 0)
        return check_relative_json_pointer(str, len);
    if (strcmp(format, "regex") == 0)
        return check_regex(str, len);
    if (strcmp(format, "duration") == 0)
        return check_duration(str, len);
    if (strcmp(format, "uri-template") == 0)
        return check_uri_template(str, len);
    return true;
}
