/*
 * sse.c - reading a Server-Sent Events stream (PROTOCOL.md §7) in the e2e
 * tests: the response head is parsed like any other, then the body -
 * chunked or close-delimited - is decoded as it arrives and cut into
 * frames at blank lines.
 */
#include "harness.h"
#include "internal.h"

#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct mz_stream {
    mz_conn_t *conn;     /* the connection (arena-owned) */
    bool chunked;        /* body in chunked transfer coding */
    bool ended;          /* the body ended (last chunk or EOF) */
    size_t chunk_left;   /* bytes left in the current chunk (+2 for its CRLF) */
    char *text;          /* decoded body not yet cut into frames */
    size_t len;          /* bytes in text */
    size_t cap;          /* capacity of text */
};

static void stream_free(void *p)
{
    struct mz_stream *s = p;
    free(s->text);
    free(s);
}

static void append(struct mz_stream *s, const char *bytes, size_t n)
{
    if (s->len + n + 1 > s->cap) {
        s->cap = (s->len + n + 1) * 2;
        s->text = mz_xrealloc(s->text, s->cap);
    }
    memcpy(s->text + s->len, bytes, n);
    s->len += n;
    s->text[s->len] = '\0';
}

/*
 * Moves what can be decoded from the connection buffer into s->text.
 * Returns 0, or -1 on a framing error.
 */
static int decode(struct mz_stream *s, char *err, size_t errlen)
{
    mz_conn_t *c = s->conn;
    if (!s->chunked) {
        append(s, c->buf, c->len);
        mz_conn_consume(c, c->len);
        return 0;
    }
    for (;;) {
        if (s->ended)
            return 0;
        if (s->chunk_left > 0) {
            if (c->len == 0)
                return 0;
            size_t data_left = s->chunk_left > 2 ? s->chunk_left - 2 : 0;
            size_t take = c->len < data_left ? c->len : data_left;
            append(s, c->buf, take);
            mz_conn_consume(c, take);
            s->chunk_left -= take;
            if (s->chunk_left > 0 && s->chunk_left <= 2) {
                /* the chunk's trailing CRLF */
                size_t crlf = c->len < s->chunk_left ? c->len : s->chunk_left;
                mz_conn_consume(c, crlf);
                s->chunk_left -= crlf;
            }
            continue;
        }
        const char *eol = c->len ? memmem(c->buf, c->len, "\r\n", 2) : NULL;
        if (eol == NULL)
            return 0;
        char *stop = NULL;
        unsigned long size = strtoul(c->buf, &stop, 16);
        if (stop == c->buf) {
            snprintf(err, errlen, "malformed chunk size in the event stream");
            return -1;
        }
        mz_conn_consume(c, (size_t)(eol - c->buf) + 2);
        if (size == 0) {
            s->ended = true;
            return 0;
        }
        s->chunk_left = (size_t)size + 2;
    }
}

mz_stream_t *mz_stream_open(const mz_gw_t *gw, const char *path, const char *const *headers,
                            const char *token, mz_resp_t **head)
{
    mz_conn_t *c = mz_connect(gw->port);
    mz_req_t req = {.method = "GET", .path = path, .headers = headers, .token = token};
    char err[256] = "";
    cr_assert(mz_try_send(c, &req, err, sizeof(err)) == 0, "GET %s: %s", path, err);
    mz_resp_t *r = NULL;
    cr_assert(mz_try_recv_head(c, &r, err, sizeof(err)) == 0,
              "GET %s: %s\n--- gateway log tail ---\n%s", path, err, mz_gw_log_tail(gw, 3000));
    struct mz_stream *s = calloc(1, sizeof(*s));
    if (s == NULL)
        mz_oom(sizeof(*s));
    mz_own(s, stream_free, MZ_PHASE_MEM);
    s->conn = c;
    const char *te = mz_header(r, "Transfer-Encoding");
    s->chunked = te != NULL && strcasestr(te, "chunked") != NULL;
    *head = r;
    return s;
}

/* Offset just past the first blank line in text (LF or CRLF lines), or 0. */
static size_t frame_end(const char *text, size_t len)
{
    for (size_t i = 0; i + 1 < len; i++) {
        if (text[i] != '\n')
            continue;
        if (text[i + 1] == '\n')
            return i + 2;
        if (text[i + 1] == '\r' && i + 2 < len && text[i + 2] == '\n')
            return i + 3;
    }
    return 0;
}

char *mz_stream_next_frame(mz_stream_t *s, int timeout_ms)
{
    double deadline = mz_now_ms() + timeout_ms;
    char err[256];
    for (;;) {
        if (decode(s, err, sizeof(err)) != 0)
            return NULL;
        size_t end = frame_end(s->text ? s->text : "", s->len);
        if (end > 0) {
            char *frame = mz_own(mz_xstrndup(s->text, end), free, MZ_PHASE_MEM);
            memmove(s->text, s->text + end, s->len - end);
            s->len -= end;
            s->text[s->len] = '\0';
            return frame;
        }
        if (s->ended)
            return NULL;
        if (mz_now_ms() >= deadline)
            return NULL;
        long n = mz_conn_fill(s->conn, deadline, err, sizeof(err));
        if (n <= 0)
            return NULL; /* EOF, error or timeout */
    }
}

/* Value of field `name` in an SSE frame (data lines joined by \n), arena string or NULL. */
static char *frame_field(const char *frame, const char *name)
{
    char *out = NULL;
    size_t nlen = strlen(name);
    const char *line = frame;
    while (*line != '\0') {
        size_t len = strcspn(line, "\r\n");
        if (len > nlen && strncmp(line, name, nlen) == 0 && line[nlen] == ':') {
            const char *v = line + nlen + 1;
            if (*v == ' ')
                v++;
            size_t vlen = len - (size_t)(v - line);
            out = out ? mz_fmt("%s\n%.*s", out, (int)vlen, v) : mz_fmt("%.*s", (int)vlen, v);
        }
        line += len;
        while (*line == '\r' || *line == '\n')
            line++;
    }
    return out;
}

json_t *mz_stream_next_event(mz_stream_t *s, const char *event, int timeout_ms)
{
    double deadline = mz_now_ms() + timeout_ms;
    for (;;) {
        int left = (int)(deadline - mz_now_ms());
        if (left <= 0)
            return NULL;
        char *frame = mz_stream_next_frame(s, left);
        if (frame == NULL)
            return NULL;
        char *type = frame_field(frame, "event");
        char *data = frame_field(frame, "data");
        if (data == NULL)
            continue; /* a comment (heartbeat) or a retry hint */
        if (strcmp(type ? type : "message", event) != 0)
            continue;
        json_t *v = json_loads(data, JSON_DECODE_ANY, NULL);
        if (v == NULL)
            return mz_keep(json_pack("{s:s}", "unparsable_data", data));
        return mz_keep(v);
    }
}

bool mz_stream_closed(mz_stream_t *s, int timeout_ms)
{
    return s->ended || mz_wait_closed(s->conn, timeout_ms) == 1;
}

void mz_stream_close(mz_stream_t *s)
{
    mz_conn_close(s->conn);
    s->ended = true;
}
