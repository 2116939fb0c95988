/*
 * http.c - a small HTTP/1.1 client over non-blocking loopback sockets for
 * the e2e tests: requests with any method, headers and body; responses
 * framed by Content-Length, chunked encoding or connection close; several
 * exchanges per connection; every wait bounded by poll(). Also the batch
 * runner that fires requests from many threads at once.
 *
 * Nothing here asserts except the documented asserting wrappers, so the
 * mz_try_* functions are safe on batch threads.
 */
#include "harness.h"
#include "internal.h"

#include <criterion/criterion.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

/* A response head or body larger than this is a gateway bug, not data. */
#define MAX_RESPONSE_BYTES (64u * 1024u * 1024u)

/* ========================================================================
 * Connections
 * ====================================================================== */

struct mz_conn *mz_conn_open_raw(int port, int timeout_ms, char *err, size_t errlen)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        return NULL;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        if (errno != EINPROGRESS) {
            snprintf(err, errlen, "connect 127.0.0.1:%d: %s", port, strerror(errno));
            close(fd);
            return NULL;
        }
        struct pollfd p = {fd, POLLOUT, 0};
        int n;
        do {
            n = poll(&p, 1, timeout_ms);
        } while (n < 0 && errno == EINTR);
        if (n == 0) {
            snprintf(err, errlen, "connect 127.0.0.1:%d: timed out after %d ms", port,
                     timeout_ms);
            close(fd);
            return NULL;
        }
        int soerr = 0;
        socklen_t sl = sizeof(soerr);
        if (n < 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0 || soerr != 0) {
            snprintf(err, errlen, "connect 127.0.0.1:%d: %s", port,
                     strerror(soerr ? soerr : errno));
            close(fd);
            return NULL;
        }
    }
    struct mz_conn *c = calloc(1, sizeof(*c));
    if (c == NULL)
        mz_oom(sizeof(*c));
    c->fd = fd;
    c->port = port;
    c->timeout_ms = timeout_ms;
    c->cap = 8192;
    c->buf = mz_xmalloc(c->cap);
    c->buf[0] = '\0';
    return c;
}

void mz_conn_free_raw(struct mz_conn *c)
{
    if (c == NULL)
        return;
    if (c->fd >= 0)
        close(c->fd);
    free(c->buf);
    free(c);
}

static void conn_cleanup(void *p)
{
    mz_conn_free_raw(p);
}

mz_conn_t *mz_try_connect(int port, int timeout_ms, char *err, size_t errlen)
{
    mz_conn_t *c = mz_conn_open_raw(port, timeout_ms > 0 ? timeout_ms : MZ_HTTP_TIMEOUT_MS, err,
                                    errlen);
    if (c != NULL) {
        c->timeout_ms = MZ_HTTP_TIMEOUT_MS;
        mz_own(c, conn_cleanup, MZ_PHASE_CONN);
    }
    return c;
}

mz_conn_t *mz_connect(int port)
{
    char err[256] = "";
    mz_conn_t *c = mz_try_connect(port, MZ_HTTP_TIMEOUT_MS, err, sizeof(err));
    cr_assert(c != NULL, "%s", err);
    return c;
}

void mz_conn_close(mz_conn_t *c)
{
    if (c != NULL && c->fd >= 0) {
        close(c->fd);
        c->fd = -1;
    }
}

long mz_conn_fill(struct mz_conn *c, double deadline, char *err, size_t errlen)
{
    if (c->fd < 0) {
        snprintf(err, errlen, "connection already closed");
        return -1;
    }
    if (c->cap - c->len < 4096) {
        c->cap = c->cap * 2 + 4096;
        c->buf = mz_xrealloc(c->buf, c->cap);
    }
    for (;;) {
        ssize_t n = recv(c->fd, c->buf + c->len, c->cap - c->len - 1, 0);
        if (n > 0) {
            c->len += (size_t)n;
            c->buf[c->len] = '\0';
            return (long)n;
        }
        if (n == 0) {
            c->peer_closed = true;
            return 0;
        }
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK) {
            snprintf(err, errlen, "recv: %s", strerror(errno));
            return -1;
        }
        int left = (int)(deadline - mz_now_ms());
        if (left <= 0) {
            /* Show the start of what did arrive, control bytes escaped. */
            char shown[161];
            size_t k = 0;
            for (size_t i = 0; i < c->len && k + 4 < sizeof(shown); i++) {
                unsigned char ch = (unsigned char)c->buf[i];
                if (ch >= 0x20 && ch < 0x7f) {
                    shown[k++] = (char)ch;
                } else if (ch == '\r' || ch == '\n') {
                    shown[k++] = '\\';
                    shown[k++] = ch == '\r' ? 'r' : 'n';
                } else {
                    shown[k++] = '?';
                }
            }
            shown[k] = '\0';
            snprintf(err, errlen, "no complete response within the timeout (%zu bytes so far: %s)",
                     c->len, shown);
            return -1;
        }
        struct pollfd p = {c->fd, POLLIN, 0};
        if (poll(&p, 1, left) < 0 && errno != EINTR) {
            snprintf(err, errlen, "poll: %s", strerror(errno));
            return -1;
        }
    }
}

void mz_conn_consume(struct mz_conn *c, size_t n)
{
    if (n >= c->len) {
        c->len = 0;
    } else {
        memmove(c->buf, c->buf + n, c->len - n);
        c->len -= n;
    }
    c->buf[c->len] = '\0';
}

/* Sends every byte before the deadline; 0 or -1 with a reason. */
static int send_all(mz_conn_t *c, const char *bytes, size_t len, double deadline, char *err,
                    size_t errlen)
{
    if (c->fd < 0) {
        snprintf(err, errlen, "connection already closed");
        return -1;
    }
    size_t off = 0;
    while (off < len) {
        ssize_t n = send(c->fd, bytes + off, len - off, MSG_NOSIGNAL);
        if (n > 0) {
            off += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            int left = (int)(deadline - mz_now_ms());
            if (left <= 0) {
                snprintf(err, errlen, "send: timed out after %zu of %zu bytes", off, len);
                return -1;
            }
            struct pollfd p = {c->fd, POLLOUT, 0};
            poll(&p, 1, left);
            continue;
        }
        snprintf(err, errlen, "send: %s (after %zu of %zu bytes)", strerror(errno), off, len);
        return -1;
    }
    return 0;
}

int mz_try_send_raw(mz_conn_t *c, const void *bytes, size_t len, char *err, size_t errlen)
{
    return send_all(c, bytes, len, mz_now_ms() + c->timeout_ms, err, errlen);
}

/* True when a caller header line names the header `name`. */
static bool has_header(const char *const *headers, const char *name)
{
    size_t n = strlen(name);
    for (const char *const *h = headers; h && *h; h++) {
        if (strncasecmp(*h, name, n) == 0 && (*h)[n] == ':')
            return true;
    }
    return false;
}

int mz_try_send(mz_conn_t *c, const mz_req_t *req, char *err, size_t errlen)
{
    char *text = NULL;
    size_t text_len = 0;
    FILE *f = open_memstream(&text, &text_len);
    if (f == NULL)
        mz_oom(0);
    size_t body_len = req->body ? (req->body_len ? req->body_len : strlen(req->body)) : 0;
    fprintf(f, "%s %s HTTP/1.1\r\n", req->method, req->path);
    if (!has_header(req->headers, "Host"))
        fprintf(f, "Host: 127.0.0.1:%d\r\n", c->port);
    if (req->token != NULL)
        fprintf(f, "Authorization: Bearer %s\r\n", req->token);
    for (const char *const *h = req->headers; h && *h; h++)
        fprintf(f, "%s\r\n", *h);
    if (req->body != NULL && !has_header(req->headers, "Content-Type"))
        fprintf(f, "Content-Type: application/json\r\n");
    bool wants_length = req->body != NULL || strcmp(req->method, "POST") == 0 ||
                        strcmp(req->method, "PUT") == 0 || strcmp(req->method, "PATCH") == 0;
    if (wants_length && !req->no_content_length && !has_header(req->headers, "Content-Length"))
        fprintf(f, "Content-Length: %zu\r\n", body_len);
    fputs("\r\n", f);
    if (body_len > 0)
        fwrite(req->body, 1, body_len, f);
    if (fclose(f) != 0)
        mz_oom(text_len);
    int rc = send_all(c, text, text_len, mz_now_ms() + c->timeout_ms, err, errlen);
    free(text);
    return rc;
}

/* ========================================================================
 * Responses
 * ====================================================================== */

static void resp_free(void *p)
{
    mz_resp_t *r = p;
    for (size_t i = 0; i < r->nheaders; i++) {
        free(r->headers[i].name);
        free(r->headers[i].value);
    }
    free(r->headers);
    free(r->reason);
    free(r->body);
    json_decref(r->json);
    free(r);
}

const char *mz_header(const mz_resp_t *r, const char *name)
{
    for (size_t i = 0; i < r->nheaders; i++) {
        if (strcasecmp(r->headers[i].name, name) == 0)
            return r->headers[i].value;
    }
    return NULL;
}

size_t mz_header_count(const mz_resp_t *r, const char *name)
{
    size_t n = 0;
    for (size_t i = 0; i < r->nheaders; i++) {
        if (strcasecmp(r->headers[i].name, name) == 0)
            n++;
    }
    return n;
}

/* True when a comma-separated header value holds token (case-insensitive). */
static bool value_has_token(const char *value, const char *token)
{
    size_t n = strlen(token);
    const char *p = value;
    while (p != NULL && *p != '\0') {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        if (strncasecmp(p, token, n) == 0 && (p[n] == '\0' || p[n] == ',' || p[n] == ' ' ||
                                               p[n] == ';'))
            return true;
        p = strchr(p, ',');
    }
    return false;
}

/* Parses the head (status line + headers, hdr_len bytes with the blank line). */
static int parse_head(const char *head, size_t hdr_len, mz_resp_t *r, char *err, size_t errlen)
{
    const char *end = head + hdr_len;
    const char *eol = memmem(head, hdr_len, "\r\n", 2);
    int minor = 0;
    int status = 0;
    int consumed = 0;
    if (eol == NULL || sscanf(head, "HTTP/1.%d %d%n", &minor, &status, &consumed) < 2 ||
        status < 100 || status > 999) {
        snprintf(err, errlen, "malformed status line: %.80s", head);
        return -1;
    }
    r->status = status;
    const char *reason = head + consumed;
    while (reason < eol && *reason == ' ')
        reason++;
    r->reason = mz_xstrndup(reason, (size_t)(eol - reason));

    size_t cap = 16;
    r->headers = mz_xmalloc(cap * sizeof(*r->headers));
    const char *line = eol + 2;
    while (line < end) {
        const char *le = memmem(line, (size_t)(end - line), "\r\n", 2);
        if (le == NULL || le == line)
            break;
        const char *colon = memchr(line, ':', (size_t)(le - line));
        if (colon == NULL) {
            snprintf(err, errlen, "malformed header line: %.*s", (int)(le - line), line);
            return -1;
        }
        const char *v = colon + 1;
        const char *ve = le;
        while (v < ve && (*v == ' ' || *v == '\t'))
            v++;
        while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
            ve--;
        if (r->nheaders == cap) {
            cap *= 2;
            r->headers = mz_xrealloc(r->headers, cap * sizeof(*r->headers));
        }
        r->headers[r->nheaders].name = mz_xstrndup(line, (size_t)(colon - line));
        r->headers[r->nheaders].value = mz_xstrndup(v, (size_t)(ve - v));
        r->nheaders++;
        line = le + 2;
    }
    return 0;
}

/* Makes sure c->buf holds at least `need` bytes; 0 or -1 with a reason. */
static int need_bytes(mz_conn_t *c, size_t need, double deadline, char *err, size_t errlen)
{
    while (c->len < need) {
        if (need > MAX_RESPONSE_BYTES) {
            snprintf(err, errlen, "response larger than %u bytes", MAX_RESPONSE_BYTES);
            return -1;
        }
        long n = mz_conn_fill(c, deadline, err, errlen);
        if (n < 0)
            return -1;
        if (n == 0) {
            snprintf(err, errlen, "connection closed mid-response (%zu of %zu bytes)", c->len,
                     need);
            return -1;
        }
    }
    return 0;
}

/* Offset just past the next CRLF at or after pos, reading as needed; 0 on failure. */
static size_t need_line(mz_conn_t *c, size_t pos, double deadline, char *err, size_t errlen)
{
    for (;;) {
        if (c->len > pos) {
            const char *p = memmem(c->buf + pos, c->len - pos, "\r\n", 2);
            if (p != NULL)
                return (size_t)(p - c->buf) + 2;
        }
        if (need_bytes(c, c->len + 1, deadline, err, errlen) != 0)
            return 0;
    }
}

/* n bytes of s (NULs included) plus a terminating NUL, in a new buffer. */
static char *bytes_dup(const char *s, size_t n)
{
    char *p = mz_xmalloc(n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

/* Decodes a chunked body starting at pos; sets *end past the trailers. */
static int read_chunked(mz_conn_t *c, size_t pos, mz_resp_t *r, size_t *end, double deadline,
                        char *err, size_t errlen)
{
    size_t cap = 4096;
    r->body = mz_xmalloc(cap);
    r->body_len = 0;
    for (;;) {
        size_t line_end = need_line(c, pos, deadline, err, errlen);
        if (line_end == 0)
            return -1;
        char *stop = NULL;
        unsigned long size = strtoul(c->buf + pos, &stop, 16);
        if (stop == c->buf + pos) {
            snprintf(err, errlen, "malformed chunk size line");
            return -1;
        }
        pos = line_end;
        if (size == 0) {
            /* Trailers, up to an empty line. */
            for (;;) {
                size_t te = need_line(c, pos, deadline, err, errlen);
                if (te == 0)
                    return -1;
                bool empty = te == pos + 2;
                pos = te;
                if (empty)
                    break;
            }
            *end = pos;
            r->body[r->body_len] = '\0';
            return 0;
        }
        if (size > MAX_RESPONSE_BYTES) {
            snprintf(err, errlen, "chunk of %lu bytes", size);
            return -1;
        }
        if (need_bytes(c, pos + size + 2, deadline, err, errlen) != 0)
            return -1;
        while (cap < r->body_len + size + 1) {
            cap *= 2;
            r->body = mz_xrealloc(r->body, cap);
        }
        memcpy(r->body + r->body_len, c->buf + pos, size);
        r->body_len += size;
        pos += size + 2;
    }
}

/* Reads and parses a response head at c->buf[0]; *hdr_len gets its size. */
static int recv_head(mz_conn_t *c, mz_resp_t *r, size_t *hdr_len_out, double deadline, char *err,
                     size_t errlen)
{
    size_t hdr_len = 0;
    for (;;) {
        const char *p = c->len ? memmem(c->buf, c->len, "\r\n\r\n", 4) : NULL;
        if (p != NULL) {
            hdr_len = (size_t)(p - c->buf) + 4;
            break;
        }
        if (c->len > 1024 * 1024) {
            snprintf(err, errlen, "response head over 1 MiB");
            return -1;
        }
        long n = mz_conn_fill(c, deadline, err, errlen);
        if (n < 0)
            return -1;
        if (n == 0) {
            snprintf(err, errlen,
                     c->len ? "connection closed in the middle of the response head"
                            : "connection closed without a response");
            return -1;
        }
    }
    if (parse_head(c->buf, hdr_len, r, err, errlen) != 0)
        return -1;
    *hdr_len_out = hdr_len;
    return 0;
}

/* Reads one response (any status, 1xx included) starting at c->buf[0]. */
static int recv_one(mz_conn_t *c, mz_resp_t *r, double deadline, char *err, size_t errlen)
{
    size_t hdr_len = 0;
    if (recv_head(c, r, &hdr_len, deadline, err, errlen) != 0)
        return -1;

    const char *te = mz_header(r, "Transfer-Encoding");
    const char *cl = mz_header(r, "Content-Length");
    size_t end = hdr_len;
    if ((r->status >= 100 && r->status < 200) || r->status == 204 || r->status == 304) {
        r->body = mz_xstrdup("");
    } else if (te != NULL && value_has_token(te, "chunked")) {
        if (read_chunked(c, hdr_len, r, &end, deadline, err, errlen) != 0)
            return -1;
    } else if (cl != NULL) {
        char *stop = NULL;
        unsigned long long n = strtoull(cl, &stop, 10);
        if (stop == cl || *stop != '\0' || n > MAX_RESPONSE_BYTES) {
            snprintf(err, errlen, "bad Content-Length: %s", cl);
            return -1;
        }
        if (need_bytes(c, hdr_len + (size_t)n, deadline, err, errlen) != 0)
            return -1;
        r->body = bytes_dup(c->buf + hdr_len, (size_t)n); /* binary-safe: gzip bodies hold NULs */
        r->body_len = (size_t)n;
        end = hdr_len + (size_t)n;
    } else {
        /* Delimited by the connection's end. */
        for (;;) {
            long n = mz_conn_fill(c, deadline, err, errlen);
            if (n < 0)
                return -1;
            if (n == 0)
                break;
        }
        r->body_len = c->len - hdr_len;
        r->body = bytes_dup(c->buf + hdr_len, r->body_len);
        end = c->len;
    }
    mz_conn_consume(c, end);
    const char *conn_hdr = mz_header(r, "Connection");
    if (conn_hdr != NULL && value_has_token(conn_hdr, "close"))
        c->peer_closed = true;
    return 0;
}

/* Releases a partially parsed response's parts (not the struct). */
static void resp_reset(mz_resp_t *r)
{
    for (size_t i = 0; i < r->nheaders; i++) {
        free(r->headers[i].name);
        free(r->headers[i].value);
    }
    free(r->headers);
    free(r->reason);
    free(r->body);
    memset(r, 0, sizeof(*r));
}

int mz_try_recv(mz_conn_t *c, mz_resp_t **out, char *err, size_t errlen)
{
    double start = mz_now_ms();
    double deadline = start + c->timeout_ms;
    mz_resp_t *r = calloc(1, sizeof(*r));
    if (r == NULL)
        mz_oom(sizeof(*r));
    for (;;) {
        if (recv_one(c, r, deadline, err, errlen) != 0) {
            resp_reset(r);
            free(r);
            return -1;
        }
        if (r->status >= 200)
            break;
        resp_reset(r); /* 1xx interim response: the real one follows */
    }
    if (r->body_len > 0)
        r->json = json_loadb(r->body, r->body_len, JSON_DECODE_ANY, NULL);
    r->elapsed_ms = mz_now_ms() - start;
    *out = mz_own(r, resp_free, MZ_PHASE_MEM);
    return 0;
}

int mz_try_recv_head(mz_conn_t *c, mz_resp_t **out, char *err, size_t errlen)
{
    double start = mz_now_ms();
    double deadline = start + c->timeout_ms;
    mz_resp_t *r = calloc(1, sizeof(*r));
    if (r == NULL)
        mz_oom(sizeof(*r));
    for (;;) {
        size_t hdr_len = 0;
        if (recv_head(c, r, &hdr_len, deadline, err, errlen) != 0) {
            resp_reset(r);
            free(r);
            return -1;
        }
        mz_conn_consume(c, hdr_len);
        if (r->status >= 200)
            break;
        resp_reset(r);
    }
    r->body = mz_xstrdup("");
    r->elapsed_ms = mz_now_ms() - start;
    *out = mz_own(r, resp_free, MZ_PHASE_MEM);
    return 0;
}

int mz_try_request(mz_conn_t *c, const mz_req_t *req, mz_resp_t **out, char *err, size_t errlen)
{
    double start = mz_now_ms();
    if (mz_try_send(c, req, err, errlen) != 0) {
        /* The server may have answered and closed early (e.g. 413): read it. */
        char ignored[256];
        if (mz_try_recv(c, out, ignored, sizeof(ignored)) != 0)
            return -1;
    } else if (mz_try_recv(c, out, err, errlen) != 0) {
        return -1;
    }
    (*out)->elapsed_ms = mz_now_ms() - start;
    return 0;
}

int mz_wait_closed(mz_conn_t *c, int timeout_ms)
{
    if (c->fd < 0)
        return -1;
    double deadline = mz_now_ms() + timeout_ms;
    char scratch[4096];
    for (;;) {
        ssize_t n = recv(c->fd, scratch, sizeof(scratch), 0);
        if (n == 0) {
            c->peer_closed = true;
            return 1;
        }
        if (n > 0)
            continue;
        if (errno == EINTR)
            continue;
        if (errno == ECONNRESET || errno == EPIPE) {
            c->peer_closed = true;
            return 1;
        }
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return -1;
        int left = (int)(deadline - mz_now_ms());
        if (left <= 0)
            return 0;
        struct pollfd p = {c->fd, POLLIN, 0};
        poll(&p, 1, left);
    }
}

/* ========================================================================
 * Asserting helpers
 * ====================================================================== */

mz_resp_t *mz_request(mz_conn_t *c, const mz_req_t *req)
{
    char err[256] = "";
    mz_resp_t *r = NULL;
    int rc = mz_try_request(c, req, &r, err, sizeof(err));
    cr_assert(rc == 0, "%s %s on 127.0.0.1:%d: %s", req->method, req->path, c->port, err);
    return r;
}

mz_resp_t *mz_http(const mz_gw_t *gw, const mz_req_t *req)
{
    char err[256] = "";
    mz_conn_t *c = mz_try_connect(gw->port, MZ_HTTP_TIMEOUT_MS, err, sizeof(err));
    cr_assert(c != NULL, "%s\n--- gateway log tail ---\n%s", err, mz_gw_log_tail(gw, 3000));
    mz_resp_t *r = NULL;
    int rc = mz_try_request(c, req, &r, err, sizeof(err));
    mz_conn_close(c);
    cr_assert(rc == 0, "%s %s: %s\n--- gateway log tail ---\n%s", req->method, req->path, err,
              mz_gw_log_tail(gw, 3000));
    return r;
}

char *mz_call_body(const char *fn, const char *args_json)
{
    json_t *name = json_string(fn);
    char *quoted = name ? json_dumps(name, JSON_ENCODE_ANY) : NULL;
    json_decref(name);
    if (quoted == NULL)
        mz_oom(strlen(fn));
    char *body = args_json ? mz_fmt("{\"function\":%s,\"args\":%s}", quoted, args_json)
                           : mz_fmt("{\"function\":%s}", quoted);
    free(quoted);
    return body;
}

mz_req_t mz_call_req(const char *fn, const char *args_json, const char *token)
{
    char *body = mz_call_body(fn, args_json);
    return (mz_req_t){.method = "POST",
                      .path = "/api/mizan/call/",
                      .body = body,
                      .body_len = strlen(body),
                      .token = token};
}

mz_resp_t *mz_call(const mz_gw_t *gw, const char *fn, const char *args_json, const char *token)
{
    mz_req_t req = mz_call_req(fn, args_json, token);
    return mz_http(gw, &req);
}

mz_resp_t *mz_call_on(mz_conn_t *c, const char *fn, const char *args_json, const char *token)
{
    mz_req_t req = mz_call_req(fn, args_json, token);
    return mz_request(c, &req);
}

mz_resp_t *mz_get(const mz_gw_t *gw, const char *path, const char *token)
{
    mz_req_t req = {.method = "GET", .path = path, .token = token};
    return mz_http(gw, &req);
}

mz_resp_t *mz_post(const mz_gw_t *gw, const char *path, const char *body, const char *token)
{
    mz_req_t req = {.method = "POST", .path = path, .body = body, .token = token};
    return mz_http(gw, &req);
}

char *mz_describe(const mz_resp_t *r)
{
    if (r == NULL)
        return mz_strdup("(no response)");
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (f == NULL)
        mz_oom(0);
    fprintf(f, "HTTP %d %s\n", r->status, r->reason ? r->reason : "");
    for (size_t i = 0; i < r->nheaders; i++)
        fprintf(f, "  %s: %s\n", r->headers[i].name, r->headers[i].value);
    if (r->body_len > 4000)
        fprintf(f, "  body (%zu bytes): %.4000s...\n", r->body_len, r->body);
    else
        fprintf(f, "  body: %s\n", r->body ? r->body : "");
    if (fclose(f) != 0)
        mz_oom(len);
    return mz_own(text, free, MZ_PHASE_MEM);
}

bool mz_request_id_sane(const char *id)
{
    if (id == NULL)
        return false;
    size_t n = strlen(id);
    if (n < 1 || n > 128)
        return false;
    for (size_t i = 0; i < n; i++) {
        char ch = id[i];
        bool ok = (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
                  ch == '.' || ch == '_' || ch == '-';
        if (!ok)
            return false;
    }
    return true;
}

/* ========================================================================
 * Batches
 * ====================================================================== */

/* One thread's slot. */
typedef struct slot {
    struct mz_batch *b; /* the batch it belongs to */
    size_t i;           /* index into reqs/results */
} slot_t;

struct mz_batch {
    int port;               /* where to connect */
    int timeout_ms;         /* bound on each exchange */
    size_t n;               /* number of requests/threads */
    const mz_req_t *reqs;   /* borrowed until join */
    mz_result_t *results;   /* n results (arena) */
    slot_t *slots;          /* n thread arguments (arena) */
    pthread_t *threads;     /* n threads (arena) */
    size_t created;         /* threads actually created */
    bool joined;            /* mz_batch_join() done */
    pthread_mutex_t lock;   /* guards go, sent */
    pthread_cond_t cond;    /* signalled on go and on every send */
    bool go;                /* release the threads */
    size_t sent;            /* requests fully written */
};

static void *batch_thread(void *arg)
{
    slot_t *s = arg;
    struct mz_batch *b = s->b;
    mz_result_t *res = &b->results[s->i];
    pthread_mutex_lock(&b->lock);
    while (!b->go)
        pthread_cond_wait(&b->cond, &b->lock);
    pthread_mutex_unlock(&b->lock);

    res->start_ms = mz_now_ms();
    struct mz_conn *c = mz_conn_open_raw(b->port, b->timeout_ms, res->err, sizeof(res->err));
    if (c != NULL) {
        c->timeout_ms = b->timeout_ms;
        if (mz_try_send(c, &b->reqs[s->i], res->err, sizeof(res->err)) == 0) {
            pthread_mutex_lock(&b->lock);
            b->sent++;
            pthread_cond_broadcast(&b->cond);
            pthread_mutex_unlock(&b->lock);
        }
        /* Read even after a failed send: the server may have answered. */
        mz_resp_t *r = NULL;
        char err[256] = "";
        if (mz_try_recv(c, &r, err, sizeof(err)) == 0) {
            res->resp = r;
            res->err[0] = '\0';
        } else if (res->err[0] == '\0') {
            snprintf(res->err, sizeof(res->err), "%s", err);
        }
        mz_conn_free_raw(c);
    }
    res->end_ms = mz_now_ms();
    if (res->resp != NULL)
        res->resp->elapsed_ms = res->end_ms - res->start_ms;
    return NULL;
}

static void batch_join_all(struct mz_batch *b)
{
    if (b->joined)
        return;
    pthread_mutex_lock(&b->lock);
    b->go = true;
    pthread_cond_broadcast(&b->cond);
    pthread_mutex_unlock(&b->lock);
    for (size_t i = 0; i < b->created; i++)
        pthread_join(b->threads[i], NULL);
    b->joined = true;
    pthread_cond_destroy(&b->cond);
    pthread_mutex_destroy(&b->lock);
}

static void batch_cleanup(void *p)
{
    batch_join_all(p);
}

mz_batch_t *mz_batch_start(int port, size_t n, const mz_req_t *reqs, int timeout_ms)
{
    struct mz_batch *b = mz_alloc(sizeof(*b));
    b->port = port;
    b->timeout_ms = timeout_ms > 0 ? timeout_ms : MZ_HTTP_TIMEOUT_MS;
    b->n = n;
    b->reqs = reqs;
    b->results = mz_alloc(n * sizeof(*b->results));
    b->slots = mz_alloc(n * sizeof(*b->slots));
    b->threads = mz_alloc(n * sizeof(*b->threads));
    pthread_mutex_init(&b->lock, NULL);
    pthread_cond_init(&b->cond, NULL);
    mz_own(b, batch_cleanup, MZ_PHASE_CONN);

    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 512 * 1024);
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        b->slots[i] = (slot_t){b, i};
        rc = pthread_create(&b->threads[i], &attr, batch_thread, &b->slots[i]);
        if (rc != 0)
            break;
        b->created++;
    }
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        batch_join_all(b);
        cr_assert_fail("pthread_create failed after %zu of %zu threads: %s", b->created, n,
                       strerror(rc));
    }
    pthread_mutex_lock(&b->lock);
    b->go = true;
    pthread_cond_broadcast(&b->cond);
    pthread_mutex_unlock(&b->lock);
    return b;
}

bool mz_batch_wait_sent(mz_batch_t *b, size_t count, int timeout_ms)
{
    double deadline = mz_now_ms() + timeout_ms;
    pthread_mutex_lock(&b->lock);
    while (b->sent < count) {
        double left = deadline - mz_now_ms();
        if (left <= 0)
            break;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        long long ns = (long long)ts.tv_nsec + (long long)(left < 50 ? left : 50) * 1000000LL;
        ts.tv_sec += (time_t)(ns / 1000000000LL);
        ts.tv_nsec = (long)(ns % 1000000000LL);
        pthread_cond_timedwait(&b->cond, &b->lock, &ts);
    }
    bool ok = b->sent >= count;
    pthread_mutex_unlock(&b->lock);
    return ok;
}

mz_result_t *mz_batch_join(mz_batch_t *b)
{
    batch_join_all(b);
    return b->results;
}

mz_result_t *mz_parallel(int port, size_t n, const mz_req_t *reqs, int timeout_ms)
{
    return mz_batch_join(mz_batch_start(port, n, reqs, timeout_ms));
}
