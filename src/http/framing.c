/*
 * framing.c - request head and chunked body checks (see framing.h).
 *
 * The rules are deliberately narrower than RFC 9112 allows a server to be:
 * whatever passes here is read the same way by evhttp, so the gateway and
 * its HTTP library can never disagree on where a request ends.
 */
#include "framing.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

/* RFC 9110 token characters (method and header names). */
static bool tchar(unsigned char c)
{
    if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))
        return true;
    switch (c) {
    case '!': case '#': case '$': case '%': case '&': case '\'': case '*': case '+':
    case '-': case '.': case '^': case '_': case '`': case '|': case '~':
        return true;
    default:
        return false;
    }
}

/* A byte that never belongs in a head line: a control character other than TAB, or DEL. */
static bool bad_byte(unsigned char c)
{
    return (c < 0x20 && c != '\t') || c == 0x7f;
}

static void refuse(mizan_head_t *out, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void refuse(mizan_head_t *out, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(out->reason, sizeof(out->reason), fmt, ap);
    va_end(ap);
    out->status = status;
}

/* True when the n bytes at s equal the C string lit, ignoring ASCII case. */
static bool same(const char *s, size_t n, const char *lit)
{
    return strlen(lit) == n && strncasecmp(s, lit, n) == 0;
}

static bool sane_rid(const char *v, size_t n)
{
    if (n == 0 || n > 128)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = v[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
              c == '-'))
            return false;
    }
    return true;
}

/* Checks the request line [s, s + n); sets *http10 and *body_method. 0 or -1 (refused). */
static int request_line(const char *s, size_t n, mizan_head_t *out, bool *http10, bool *body_method)
{
    const char *sp1 = memchr(s, ' ', n);
    const char *sp2 = sp1 != NULL ? memchr(sp1 + 1, ' ', n - (size_t)(sp1 + 1 - s)) : NULL;
    if (sp1 == NULL || sp2 == NULL || sp1 == s || sp2 == sp1 + 1) {
        refuse(out, 400, "malformed request line");
        return -1;
    }
    size_t mlen = (size_t)(sp1 - s), tlen = (size_t)(sp2 - sp1 - 1), vlen = n - (size_t)(sp2 + 1 - s);
    for (size_t i = 0; i < mlen; i++)
        if (!tchar((unsigned char)s[i])) {
            refuse(out, 400, "malformed request line");
            return -1;
        }
    for (size_t i = 0; i < tlen; i++) {
        unsigned char c = (unsigned char)sp1[1 + i];
        if (c <= 0x20 || c >= 0x7f) {
            refuse(out, 400, "malformed request line");
            return -1;
        }
    }
    if (vlen == 8 && memcmp(sp2 + 1, "HTTP/1.1", 8) == 0) {
        *http10 = false;
    } else if (vlen == 8 && memcmp(sp2 + 1, "HTTP/1.0", 8) == 0) {
        *http10 = true;
    } else {
        refuse(out, 400, "malformed request line (the version must be HTTP/1.0 or HTTP/1.1)");
        return -1;
    }
    *body_method = (mlen == 4 && memcmp(s, "POST", 4) == 0) || (mlen == 3 && memcmp(s, "PUT", 3) == 0) ||
                   (mlen == 5 && memcmp(s, "PATCH", 5) == 0);
    return 0;
}

void mizan_framing_check_head(const char *head, size_t len, uint64_t max_body, mizan_head_t *out)
{
    out->status = 0;
    out->reason[0] = out->rid[0] = out->origin[0] = '\0';
    out->body = MIZAN_BODY_NONE;
    out->length = 0;
    bool http10 = false, body_method = false, first = true;
    int ncl = 0, nte = 0;
    uint64_t cl = 0;
    bool cl_huge = false, keep_alive_hint = false, expect_bad = false;
    const char *p = head, *end = head + len;
    while (p < end) {
        const char *lf = memchr(p, '\n', (size_t)(end - p));
        const char *eol = lf != NULL ? lf : end;
        size_t n = (size_t)(eol - p);
        if (n > 0 && p[n - 1] == '\r')
            n--;
        for (size_t i = 0; i < n; i++) {
            unsigned char c = (unsigned char)p[i];
            if (bad_byte(c)) {
                refuse(out, 400, c == '\r' ? "malformed request head (a CR not followed by LF)"
                                            : "malformed request head (a control character)");
                return;
            }
        }
        if (first) {
            if (request_line(p, n, out, &http10, &body_method) < 0)
                return;
            first = false;
        } else if (n == 0) {
            break; /* the empty line that ends the head */
        } else if (p[0] == ' ' || p[0] == '\t') {
            refuse(out, 400, "folded header lines are not accepted");
            return;
        } else {
            const char *colon = memchr(p, ':', n);
            if (colon == NULL || colon == p) {
                refuse(out, 400, "malformed header line");
                return;
            }
            size_t nlen = (size_t)(colon - p);
            for (size_t i = 0; i < nlen; i++)
                if (!tchar((unsigned char)p[i])) {
                    refuse(out, 400, p[i] == ' ' || p[i] == '\t' ? "a header name contains whitespace"
                                                                 : "malformed header name");
                    return;
                }
            const char *v = colon + 1, *vend = p + n;
            while (v < vend && (*v == ' ' || *v == '\t'))
                v++;
            while (vend > v && (vend[-1] == ' ' || vend[-1] == '\t'))
                vend--;
            size_t vn = (size_t)(vend - v);
            if (same(p, nlen, "Content-Length")) {
                if (++ncl > 1) {
                    refuse(out, 400, "more than one Content-Length header");
                    return;
                }
                if (vn == 0) {
                    refuse(out, 400, "Content-Length must be plain decimal digits");
                    return;
                }
                for (size_t i = 0; i < vn; i++) {
                    if (v[i] < '0' || v[i] > '9') {
                        refuse(out, 400, "Content-Length must be plain decimal digits");
                        return;
                    }
                    if (cl > (UINT64_MAX - 9) / 10)
                        cl_huge = true;
                    else
                        cl = cl * 10 + (uint64_t)(v[i] - '0');
                }
            } else if (same(p, nlen, "Transfer-Encoding")) {
                if (++nte > 1 || !same(v, vn, "chunked")) {
                    refuse(out, 400, "only one Transfer-Encoding, \"chunked\", is accepted");
                    return;
                }
            } else if (same(p, nlen, "Connection")) {
                keep_alive_hint = !same(v, vn, "close");
            } else if (same(p, nlen, "Expect")) {
                expect_bad = !same(v, vn, "100-continue");
            } else if (same(p, nlen, "Origin") && out->origin[0] == '\0' && vn < sizeof(out->origin)) {
                memcpy(out->origin, v, vn);
                out->origin[vn] = '\0';
            } else if (same(p, nlen, "X-Request-Id") && out->rid[0] == '\0' && sane_rid(v, vn)) {
                memcpy(out->rid, v, vn);
                out->rid[vn] = '\0';
            }
        }
        if (lf == NULL)
            break;
        p = lf + 1;
    }
    if (first) {
        refuse(out, 400, "malformed request line");
        return;
    }
    if (nte > 0 && ncl > 0) {
        refuse(out, 400, "Transfer-Encoding together with Content-Length");
        return;
    }
    if (nte > 0 && http10) {
        refuse(out, 400, "Transfer-Encoding in an HTTP/1.0 request");
        return;
    }
    if (expect_bad && !http10) {
        refuse(out, 400, "only \"Expect: 100-continue\" is understood");
        return;
    }
    if (!body_method) {
        if (nte > 0 || cl_huge || cl > 0) {
            refuse(out, 400, "this method does not take a request body");
            return;
        }
        out->body = MIZAN_BODY_NONE;
        return;
    }
    if (nte > 0) {
        out->body = MIZAN_BODY_CHUNKED;
        return;
    }
    if (ncl == 0) {
        /* evhttp reads no body then, but refuses a keep-alive request without
         * a length: say so in the envelope rather than in its HTML. */
        if (keep_alive_hint) {
            refuse(out, 400, "a request body needs a Content-Length");
            return;
        }
        out->body = MIZAN_BODY_NONE;
        return;
    }
    if (cl_huge || cl > max_body) {
        refuse(out, 413, "request body is over the %llu byte limit", (unsigned long long)max_body);
        return;
    }
    out->body = cl > 0 ? MIZAN_BODY_LENGTH : MIZAN_BODY_NONE;
    out->length = cl;
}

/* ---- chunked bodies ---------------------------------------------------- */

enum {
    C_SIZE = 0, /* hex digits of a size line */
    C_SIZE_WS,  /* blanks after the digits */
    C_SIZE_LF,  /* a CR was seen: LF must follow */
    C_DATA,     /* chunk bytes */
    C_DATA_CR,  /* CRLF (or LF) after the chunk bytes */
    C_DATA_LF,
    C_LAST_CR,  /* the empty line after the last chunk */
    C_LAST_LF,
};

static long chunk_fail(int *status, char *reason, size_t reason_len, int st, const char *why)
{
    *status = st;
    snprintf(reason, reason_len, "%s", why);
    return -1;
}

long mizan_framing_chunked(mizan_chunked_t *st, const char *p, size_t n, uint64_t max_body, bool *done,
                           int *status, char *reason, size_t reason_len)
{
    *done = false;
    static const char bad[] = "malformed chunked body (no chunk extensions or trailers are accepted)";
    size_t i = 0;
    while (i < n) {
        char c = p[i];
        switch (st->state) {
        case C_SIZE: {
            int d = (c >= '0' && c <= '9') ? c - '0' : (c >= 'a' && c <= 'f') ? c - 'a' + 10
                                                     : (c >= 'A' && c <= 'F') ? c - 'A' + 10 : -1;
            if (d >= 0) {
                if (++st->digits > 15)
                    return chunk_fail(status, reason, reason_len, 413, "request body is over the limit");
                st->left = st->left * 16 + (uint64_t)d;
                i++;
                continue;
            }
            if (st->digits == 0)
                return chunk_fail(status, reason, reason_len, 400, bad);
            st->state = C_SIZE_WS;
            continue; /* look at c again */
        }
        case C_SIZE_WS:
            if (c == ' ' || c == '\t') {
                i++;
                continue;
            }
            if (c == '\r') {
                st->state = C_SIZE_LF;
                i++;
                continue;
            }
            if (c != '\n')
                return chunk_fail(status, reason, reason_len, 400, bad);
            st->state = C_SIZE_LF; /* a bare LF ends the line too: look at it again */
            continue;
        case C_SIZE_LF:
            if (p[i] != '\n')
                return chunk_fail(status, reason, reason_len, 400, bad);
            i++;
            st->digits = 0;
            if (st->left > max_body || st->total + st->left > max_body)
                return chunk_fail(status, reason, reason_len, 413, "request body is over the limit");
            st->total += st->left;
            st->state = st->left == 0 ? C_LAST_CR : C_DATA;
            continue;
        case C_DATA: {
            size_t take = n - i;
            if (take > st->left)
                take = (size_t)st->left;
            st->left -= take;
            i += take;
            if (st->left == 0)
                st->state = C_DATA_CR;
            continue;
        }
        case C_DATA_CR:
        case C_LAST_CR:
            if (c == '\r') {
                st->state = st->state == C_DATA_CR ? C_DATA_LF : C_LAST_LF;
                i++;
                continue;
            }
            st->state = st->state == C_DATA_CR ? C_DATA_LF : C_LAST_LF;
            continue; /* a bare LF is accepted, as evhttp does */
        case C_DATA_LF:
            if (c != '\n')
                return chunk_fail(status, reason, reason_len, 400, bad);
            i++;
            st->state = C_SIZE;
            continue;
        case C_LAST_LF:
            if (c != '\n')
                return chunk_fail(status, reason, reason_len, 400, bad);
            i++;
            *done = true;
            return (long)i;
        default:
            return chunk_fail(status, reason, reason_len, 400, bad);
        }
    }
    return (long)i;
}
