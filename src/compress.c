/*
 * compress.c - gzip of large response bodies (see compress.h).
 *
 * The whole body is in memory when reply.c answers, so it is deflated in
 * one call straight into the reply's evbuffer (space reserved with
 * deflateBound, no intermediate copy). Compression is a CPU-for-bytes
 * trade decided per answer by size: small bodies, where gzip's header and
 * the CPU would cost more than they save, are never touched.
 */
#include "compress.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>
#include <event2/http.h>
#include <zlib.h>

/*
 * Parses a q-value ("0", "0.5", "1.000"; RFC 9110 section 12.4.2) from
 * s[0..n) into thousandths. Returns -1 when it is not one.
 */
static int parse_q(const char *s, size_t n)
{
    if (n == 0 || (s[0] != '0' && s[0] != '1'))
        return -1;
    int q = (s[0] - '0') * 1000;
    if (n == 1)
        return q;
    if (s[1] != '.' || n > 5)
        return -1;
    int scale = 100;
    for (size_t i = 2; i < n; i++, scale /= 10) {
        if (!isdigit((unsigned char)s[i]))
            return -1;
        q += (s[i] - '0') * scale;
    }
    return q <= 1000 ? q : -1;
}

/*
 * One list member "coding *( OWS ; OWS param )" of s[0..n): its coding
 * (trimmed) in [*cs, *cs + *cn) and its q in thousandths (1000 without
 * one). Returns false when a q parameter is malformed.
 */
static bool parse_member(const char *s, size_t n, const char **cs, size_t *cn, int *q)
{
    while (n > 0 && (*s == ' ' || *s == '\t')) {
        s++;
        n--;
    }
    const char *semi = memchr(s, ';', n);
    size_t clen = semi != NULL ? (size_t)(semi - s) : n;
    while (clen > 0 && (s[clen - 1] == ' ' || s[clen - 1] == '\t'))
        clen--;
    *cs = s;
    *cn = clen;
    *q = 1000;
    while (semi != NULL) {
        const char *p = semi + 1, *end = s + n;
        semi = memchr(p, ';', (size_t)(end - p));
        const char *pend = semi != NULL ? semi : end;
        while (p < pend && (*p == ' ' || *p == '\t'))
            p++;
        while (pend > p && (pend[-1] == ' ' || pend[-1] == '\t'))
            pend--;
        if (pend - p >= 2 && (p[0] == 'q' || p[0] == 'Q') && p[1] == '=') {
            *q = parse_q(p + 2, (size_t)(pend - p - 2));
            if (*q < 0)
                return false;
        }
    }
    return true;
}

static bool coding_is(const char *s, size_t n, const char *name)
{
    return n == strlen(name) && strncasecmp(s, name, n) == 0;
}

bool mizan_compress_accepts_gzip(const char *ae)
{
    if (ae == NULL)
        return false;
    int gzip_q = -1, star_q = -1; /* -1: not mentioned */
    for (const char *p = ae; *p != '\0';) {
        const char *comma = strchr(p, ',');
        size_t n = comma != NULL ? (size_t)(comma - p) : strlen(p);
        const char *cs;
        size_t cn;
        int q;
        if (parse_member(p, n, &cs, &cn, &q)) {
            if ((coding_is(cs, cn, "gzip") || coding_is(cs, cn, "x-gzip")) && q > gzip_q)
                gzip_q = q;
            else if (coding_is(cs, cn, "*") && q > star_q)
                star_q = q;
        }
        if (comma == NULL)
            break;
        p = comma + 1;
    }
    if (gzip_q >= 0)
        return gzip_q > 0;
    return star_q > 0;
}

int mizan_compress_gzip(const char *body, size_t len, int level, struct evbuffer *out)
{
    z_stream zs;
    memset(&zs, 0, sizeof(zs));
    /* 15 + 16: a 32 KiB window with the gzip header and trailer. */
    if (deflateInit2(&zs, level, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        return -1;
    int rc = -1;
    uLong bound = deflateBound(&zs, (uLong)len);
    struct evbuffer_iovec vec;
    if (evbuffer_reserve_space(out, (ev_ssize_t)bound, &vec, 1) < 1 || vec.iov_len < bound)
        goto done;
    zs.next_in = (Bytef *)body;
    zs.avail_in = (uInt)len;
    zs.next_out = vec.iov_base;
    zs.avail_out = (uInt)vec.iov_len;
    if (deflate(&zs, Z_FINISH) == Z_STREAM_END) {
        vec.iov_len = zs.total_out;
        rc = evbuffer_commit_space(out, &vec, 1) == 0 ? 0 : -1;
    }
done:
    deflateEnd(&zs);
    return rc;
}

bool mizan_compress_body(struct evhttp_request *req, size_t min_bytes, int level, const char *body, size_t len,
                         struct evbuffer *out)
{
    /* zlib counts in uInt: a body beyond it (gigabytes) goes out as is. */
    if (level < 1 || level > 9 || len <= min_bytes || len > 0x7fffffffu)
        return false;
    struct evkeyvalq *oh = evhttp_request_get_output_headers(req);
    evhttp_add_header(oh, "Vary", "Accept-Encoding");
    if (evhttp_request_get_command(req) == EVHTTP_REQ_HEAD || evhttp_find_header(oh, "Content-Encoding") != NULL ||
        !mizan_compress_accepts_gzip(evhttp_find_header(evhttp_request_get_input_headers(req), "Accept-Encoding")))
        return false;
    struct evbuffer *gz = evbuffer_new();
    /* It must shrink to be worth a decoder's time. */
    bool ok = gz != NULL && mizan_compress_gzip(body, len, level, gz) == 0 && evbuffer_get_length(gz) < len &&
              evbuffer_add_buffer(out, gz) == 0;
    if (gz != NULL)
        evbuffer_free(gz);
    if (!ok)
        return false;
    evhttp_add_header(oh, "Content-Encoding", "gzip");
    return true;
}
