/*
 * upstream_parse.c - reads upstream HTTP/1.x answers in place (see
 * upstream_parse.h): a small state machine over the caller's receive
 * buffer, with the body copied into one buffer reused from answer to answer.
 */
#include "upstream_parse.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "text.h"

enum {
    S_HEAD = 0,   /* waiting for the whole status line and headers */
    S_BODY,       /* left bytes of a Content-Length body */
    S_CHUNK_SIZE, /* a chunk-size line */
    S_CHUNK_DATA, /* left bytes of a chunk */
    S_CHUNK_END,  /* the CRLF after a chunk's data */
    S_TRAILER,    /* trailer lines until an empty one */
    S_CLOSE,      /* a body that ends with the connection */
    S_DONE,
};

/* Longest chunk-size line (size, extensions) accepted. */
#define CHUNK_LINE_MAX 4096

void mizan_upstream_parse_begin(mizan_upstream_parse_t *p)
{
    p->status = 0;
    p->minor = 0;
    p->body_len = 0;
    p->doubt = NULL;
    p->violation = false;
    p->error = NULL;
    p->state = S_HEAD;
    p->left = 0;
    p->scanned = 0;
    p->trailer = 0;
}

void mizan_upstream_parse_deinit(mizan_upstream_parse_t *p)
{
    if (p == NULL)
        return;
    free(p->body);
    p->body = NULL;
    p->body_len = p->body_cap = 0;
}

static mizan_upstream_parse_rc_t bad(mizan_upstream_parse_t *p, const char *why)
{
    p->error = why;
    return MIZAN_UPARSE_BAD;
}

/* Room for n more body bytes and a NUL; -1 when out of memory. */
static int reserve(mizan_upstream_parse_t *p, size_t n)
{
    return mizan_text_reserve(&p->body, &p->body_cap, p->body_len + n + 1, 256);
}

/* Appends n body bytes; BAD past max_body. */
static mizan_upstream_parse_rc_t append(mizan_upstream_parse_t *p, const char *s, size_t n)
{
    if (n > p->max_body - p->body_len)
        return bad(p, "an answer over max_response_bytes");
    if (reserve(p, n) < 0)
        return bad(p, "out of memory");
    memcpy(p->body + p->body_len, s, n);
    p->body_len += n;
    return MIZAN_UPARSE_MORE;
}

static mizan_upstream_parse_rc_t done(mizan_upstream_parse_t *p)
{
    if (reserve(p, 0) < 0)
        return bad(p, "out of memory");
    p->body[p->body_len] = '\0';
    p->state = S_DONE;
    return MIZAN_UPARSE_DONE;
}

/* RFC 9110 token characters. */
static bool is_tchar(unsigned char c)
{
    static const unsigned long long lo = 0x03ff6cfa00000000ULL; /* 0x00..0x3f: ! # $ % & ' * + - . 0-9 */
    static const unsigned long long hi = 0x57ffffffc7fffffeULL; /* 0x40..0x7f: A-Z ^ _ ` a-z | ~ */
    return c < 64 ? (lo >> c) & 1 : c < 128 ? (hi >> (c - 64)) & 1 : false;
}

/* True when the comma-separated list v[0..n) holds token t (case-insensitively). */
static bool lists_token(const char *v, size_t n, const char *t)
{
    size_t tn = strlen(t);
    size_t i = 0;
    while (i < n) {
        while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
            i++;
        size_t s = i;
        while (i < n && v[i] != ',')
            i++;
        size_t e = i;
        while (e > s && (v[e - 1] == ' ' || v[e - 1] == '\t'))
            e--;
        if (e - s == tn && strncasecmp(v + s, t, tn) == 0)
            return true;
    }
    return false;
}

/* True when the last member of the comma-separated list v[0..n) is t. */
static bool last_token(const char *v, size_t n, const char *t)
{
    size_t e = n;
    while (e > 0 && (v[e - 1] == ' ' || v[e - 1] == '\t'))
        e--;
    size_t s = e;
    while (s > 0 && v[s - 1] != ',')
        s--;
    while (s < e && (v[s] == ' ' || v[s] == '\t'))
        s++;
    size_t tn = strlen(t);
    return e - s == tn && strncasecmp(v + s, t, tn) == 0;
}

/* Reads the complete head h[0..n) (ending with its empty line). */
static mizan_upstream_parse_rc_t read_head(mizan_upstream_parse_t *p, const char *h, size_t n)
{
    const char *nl = memchr(h, '\n', n);
    size_t ll = (size_t)(nl - h);
    if (ll > 0 && h[ll - 1] == '\r')
        ll--;
    /* HTTP/1.x SP 3DIGIT [SP reason] */
    if (ll < 12 || memcmp(h, "HTTP/1.", 7) != 0 || h[7] < '0' || h[7] > '9' || h[8] != ' ' || h[9] < '1' ||
        h[9] > '5' || h[10] < '0' || h[10] > '9' || h[11] < '0' || h[11] > '9' || (ll > 12 && h[12] != ' '))
        return bad(p, "a malformed status line");
    p->minor = h[7] - '0';
    p->status = (h[9] - '0') * 100 + (h[10] - '0') * 10 + (h[11] - '0');

    int ncl = 0, nte = 0;
    bool chunked = false, close = false, framing_prev = false;
    unsigned long long cl = 0;
    const char *line = nl + 1, *end = h + n;
    while (line < end) {
        const char *e = memchr(line, '\n', (size_t)(end - line));
        size_t len = (size_t)(e - line);
        const char *next = e + 1;
        if (len > 0 && line[len - 1] == '\r')
            len--;
        if (len == 0)
            break; /* the empty line that ends the head */
        if (line[0] == ' ' || line[0] == '\t') {
            /* An obsolete folded continuation: harmless on any header but the framing ones. */
            if (framing_prev)
                return bad(p, "a folded framing header");
            line = next;
            continue;
        }
        size_t k = 0;
        while (k < len && is_tchar((unsigned char)line[k]))
            k++;
        if (k == 0 || k >= len || line[k] != ':')
            return bad(p, "a malformed header line");
        const char *v = line + k + 1;
        size_t vn = len - k - 1;
        while (vn > 0 && (*v == ' ' || *v == '\t')) {
            v++;
            vn--;
        }
        while (vn > 0 && (v[vn - 1] == ' ' || v[vn - 1] == '\t'))
            vn--;
        framing_prev = false;
        if (k == 14 && strncasecmp(line, "Content-Length", 14) == 0) {
            framing_prev = true;
            unsigned long long x = 0;
            if (vn == 0 || vn > 18)
                return bad(p, "an invalid Content-Length");
            for (size_t i = 0; i < vn; i++) {
                if (v[i] < '0' || v[i] > '9')
                    return bad(p, "an invalid Content-Length");
                x = x * 10 + (unsigned long long)(v[i] - '0');
            }
            if (ncl > 0 && x != cl)
                return bad(p, "conflicting Content-Length values");
            cl = x;
            ncl++;
        } else if (k == 17 && strncasecmp(line, "Transfer-Encoding", 17) == 0) {
            framing_prev = true;
            nte++;
            chunked = last_token(v, vn, "chunked");
        } else if (k == 10 && strncasecmp(line, "Connection", 10) == 0) {
            close = close || lists_token(v, vn, "close");
        }
        line = next;
    }

    int st = p->status;
    bool no_body = (st >= 100 && st < 200) || st == 204 || st == 304;
    if (ncl > 1 || nte > 1 || (ncl > 0 && nte > 0)) {
        p->doubt = "an answer with duplicate or conflicting Content-Length/Transfer-Encoding";
        p->violation = true;
    } else if (no_body && (nte > 0 || cl != 0)) {
        p->doubt = "a body announced on a 1xx, 204 or 304 answer";
        p->violation = true;
    } else if (close) {
        p->doubt = "the service asked to close it";
    } else if (p->minor != 1) {
        p->doubt = "an answer other than HTTP/1.1";
    }
    if (no_body)
        return done(p);
    if (nte > 0) {
        if (chunked) {
            p->state = S_CHUNK_SIZE;
            return MIZAN_UPARSE_MORE;
        }
    } else if (ncl > 0) {
        if (cl > p->max_body)
            return bad(p, "an answer over max_response_bytes");
        if (reserve(p, (size_t)cl) < 0)
            return bad(p, "out of memory");
        if (cl == 0)
            return done(p);
        p->left = cl;
        p->state = S_BODY;
        return MIZAN_UPARSE_MORE;
    }
    /* No usable framing: the body ends with the connection. */
    if (p->doubt == NULL)
        p->doubt = "an answer whose body ends with the connection";
    p->state = S_CLOSE;
    return MIZAN_UPARSE_MORE;
}

/* Finds the end of the head from p->scanned on; its length (through the empty line), or 0. */
static size_t head_end(mizan_upstream_parse_t *p, const char *buf, size_t len)
{
    size_t pos = p->scanned;
    for (;;) {
        const char *nl = pos < len ? memchr(buf + pos, '\n', len - pos) : NULL;
        if (nl == NULL) {
            p->scanned = pos;
            return 0;
        }
        size_t ll = (size_t)(nl - (buf + pos));
        if (pos > 0 && (ll == 0 || (ll == 1 && buf[pos] == '\r')))
            return (size_t)(nl - buf) + 1;
        pos = (size_t)(nl - buf) + 1;
    }
}

/* Reads one chunk-size line line[0..n) (without its LF). */
static mizan_upstream_parse_rc_t chunk_size(mizan_upstream_parse_t *p, const char *line, size_t n)
{
    if (n > 0 && line[n - 1] == '\r')
        n--;
    size_t i = 0;
    unsigned long long size = 0;
    while (i < n && i < 16) {
        char c = line[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0)
            break;
        size = size * 16 + (unsigned long long)d;
        i++;
    }
    if (i == 0 || i >= 16)
        return bad(p, "an invalid chunk size");
    while (i < n && (line[i] == ' ' || line[i] == '\t'))
        i++;
    if (i < n && line[i] != ';')
        return bad(p, "an invalid chunk size");
    for (; i < n; i++)
        if ((unsigned char)line[i] < 0x20 && line[i] != '\t')
            return bad(p, "a control character in a chunk extension");
    if (size == 0) {
        p->state = S_TRAILER;
        return MIZAN_UPARSE_MORE;
    }
    if (size > p->max_body - p->body_len)
        return bad(p, "an answer over max_response_bytes");
    p->left = size;
    p->state = S_CHUNK_DATA;
    return MIZAN_UPARSE_MORE;
}

mizan_upstream_parse_rc_t mizan_upstream_parse_feed(mizan_upstream_parse_t *p, const char *buf, size_t len,
                                                    size_t *used)
{
    size_t at = 0;
    mizan_upstream_parse_rc_t rc = MIZAN_UPARSE_MORE;
    *used = 0;
    while (rc == MIZAN_UPARSE_MORE) {
        const char *s = buf + at;
        size_t avail = len - at;
        switch (p->state) {
        case S_HEAD: {
            size_t n = head_end(p, buf, len);
            if (n == 0) {
                if (len > p->max_head)
                    rc = bad(p, "an answer head over the size limit");
                goto out;
            }
            if (n > p->max_head) {
                rc = bad(p, "an answer head over the size limit");
                goto out;
            }
            rc = read_head(p, buf, n);
            at = n;
            break;
        }
        case S_BODY: {
            size_t n = avail < p->left ? avail : (size_t)p->left;
            if (n == 0)
                goto out;
            memcpy(p->body + p->body_len, s, n); /* reserved when the head was read */
            p->body_len += n;
            p->left -= n;
            at += n;
            if (p->left == 0)
                rc = done(p);
            break;
        }
        case S_CHUNK_SIZE: {
            const char *nl = memchr(s, '\n', avail < CHUNK_LINE_MAX ? avail : CHUNK_LINE_MAX);
            if (nl == NULL) {
                if (avail >= CHUNK_LINE_MAX)
                    rc = bad(p, "a chunk-size line over 4 KiB");
                goto out;
            }
            rc = chunk_size(p, s, (size_t)(nl - s));
            at += (size_t)(nl - s) + 1;
            break;
        }
        case S_CHUNK_DATA: {
            size_t n = avail < p->left ? avail : (size_t)p->left;
            if (n == 0)
                goto out;
            rc = append(p, s, n);
            p->left -= n;
            at += n;
            if (p->left == 0)
                p->state = S_CHUNK_END;
            break;
        }
        case S_CHUNK_END:
            if (avail == 0)
                goto out;
            if (s[0] == '\n') {
                at += 1;
            } else if (s[0] == '\r' && avail == 1) {
                goto out;
            } else if (s[0] == '\r' && s[1] == '\n') {
                at += 2;
            } else {
                rc = bad(p, "a chunk not followed by CRLF");
                break;
            }
            p->state = S_CHUNK_SIZE;
            break;
        case S_TRAILER: {
            const char *nl = memchr(s, '\n', avail);
            if (nl == NULL) {
                /* Counted with its line end, as a whole line is below; a lone
                 * CR may still be the empty line that ends the trailers. */
                bool may_end = avail == 0 || (avail == 1 && s[0] == '\r');
                if (!may_end && p->trailer + avail + 1 > p->max_head)
                    rc = bad(p, "trailers over the size limit");
                goto out;
            }
            size_t ll = (size_t)(nl - s);
            at += ll + 1;
            if (ll == 0 || (ll == 1 && s[0] == '\r')) {
                rc = done(p);
                break;
            }
            p->trailer += ll + 1;
            if (p->trailer > p->max_head)
                rc = bad(p, "trailers over the size limit");
            break;
        }
        case S_CLOSE:
            if (avail == 0)
                goto out;
            rc = append(p, s, avail);
            at += avail;
            break;
        default:
            goto out; /* S_DONE: nothing more belongs to this answer */
        }
    }
out:
    *used = at;
    if (rc == MIZAN_UPARSE_MORE && p->state == S_DONE)
        rc = MIZAN_UPARSE_DONE;
    return rc;
}

mizan_upstream_parse_rc_t mizan_upstream_parse_eof(mizan_upstream_parse_t *p)
{
    if (p->state == S_DONE)
        return MIZAN_UPARSE_DONE;
    if (p->state == S_CLOSE)
        return done(p);
    return bad(p, "the connection closed before the answer ended");
}
