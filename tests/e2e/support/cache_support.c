/*
 * cache_support.c - helpers of the shared cache e2e tests (see
 * cache_support.h): cache keys computed with the `openssl dgst` command
 * line (so the tests share no code with the gateway's key derivation), an
 * event-stream client that decodes chunked transfer coding and SSE frames,
 * Prometheus sample lookup, and redis-server crash and restart.
 */
#include "cache_support.h"
#include "internal.h"

#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

/* Key prefix of generated configs (harness.c writes cache.prefix "mizan:"). */
#define KEY_PREFIX "mizan:"

/* Full path of an executable found in PATH (arena string), or NULL. */
static char *find_in_path(const char *name)
{
    const char *path = getenv("PATH");
    if (path == NULL || path[0] == '\0')
        path = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin";
    for (const char *p = path; *p != '\0';) {
        const char *colon = strchr(p, ':');
        size_t n = colon != NULL ? (size_t)(colon - p) : strlen(p);
        char *cand = mz_fmt("%.*s/%s", (int)n, n > 0 ? p : ".", name);
        if (access(cand, X_OK) == 0)
            return cand;
        if (colon == NULL)
            break;
        p = colon + 1;
    }
    return NULL;
}

/*
 * True when a failed mz_conn_fill() was its timeout: it gives up when less
 * than a whole millisecond is left, so allow for that.
 */
static bool timed_out(double deadline)
{
    return mz_now_ms() + 1.0 >= deadline;
}

/* ========================================================================
 * Cache keys
 * ====================================================================== */

char *mz_hmac_hex(const char *key, const void *msg, size_t len)
{
    char *openssl = find_in_path("openssl");
    cr_assert(openssl != NULL, "the openssl command line is needed to derive cache keys "
                               "(Debian: apt-get install openssl)");
    const char *base = getenv("TMPDIR");
    char *path = mz_fmt("%s/mizan-hmac-XXXXXX", base != NULL && base[0] != '\0' ? base : "/tmp");
    int fd = mkstemp(path);
    cr_assert(fd >= 0, "mkstemp %s: %s", path, strerror(errno));
    size_t off = 0;
    while (off < len) {
        ssize_t n = write(fd, (const char *)msg + off, len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            int e = errno;
            close(fd);
            unlink(path);
            cr_assert_fail("write %s: %s", path, strerror(e));
        }
        off += (size_t)n;
    }
    close(fd);
    const char *argv[] = {openssl, "dgst", "-sha256", "-hmac", key, "-r", path, NULL};
    mz_run_t *run = mz_run(argv, NULL, NULL, 20000);
    unlink(path);
    cr_assert(run->status == 0, "openssl dgst exited %d: %s", run->status, run->err);
    size_t hex = strspn(run->out, "0123456789abcdef");
    cr_assert(hex == 64, "openssl dgst printed %s, expected 64 hex digits first", run->out);
    return mz_fmt("%.64s", run->out);
}

/* HMAC of the NUL-joined parts (n of them) under MZ_CACHE_SECRET. */
static char *hmac_parts(const char *const *parts, size_t n)
{
    size_t len = 0;
    for (size_t i = 0; i < n; i++)
        len += strlen(parts[i]) + (i + 1 < n ? 1 : 0);
    char *msg = mz_alloc(len + 1);
    size_t off = 0;
    for (size_t i = 0; i < n; i++) {
        size_t l = strlen(parts[i]);
        memcpy(msg + off, parts[i], l);
        off += l;
        if (i + 1 < n)
            msg[off++] = '\0';
    }
    return mz_hmac_hex(MZ_CACHE_SECRET, msg, len);
}

char *mz_key_params_digest(const char *ctx, const char *jcs)
{
    const char *parts[] = {"mizan/v1/params", ctx, jcs};
    return hmac_parts(parts, 3);
}

static int cmp_str(const void *a, const void *b)
{
    /* strcmp compares as unsigned char: bytewise. */
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

char *mz_key_perm(bool staff, bool superuser, const char *const *perms)
{
    size_t n = 0;
    while (perms != NULL && perms[n] != NULL)
        n++;
    const char **sorted = mz_alloc((n + 1) * sizeof(*sorted));
    for (size_t i = 0; i < n; i++)
        sorted[i] = perms[i];
    qsort(sorted, n, sizeof(*sorted), cmp_str);
    char *body = mz_fmt("staff=%d\nsuperuser=%d\n", staff ? 1 : 0, superuser ? 1 : 0);
    for (size_t i = 0; i < n; i++) {
        if (i > 0 && strcmp(sorted[i], sorted[i - 1]) == 0)
            continue;
        body = mz_fmt("%s%s\n", body, sorted[i]);
    }
    const char *parts[] = {"mizan/v1/perms", body};
    return hmac_parts(parts, 2);
}

char *mz_key_bundle(const char *ctx, const char *jcs, const char *scope)
{
    const char *parts[] = {"mizan/v1/bundle", ctx, jcs, scope};
    return mz_fmt(KEY_PREFIX "ctx:{%s}:%s", ctx, hmac_parts(parts, 4));
}

char *mz_key_ctx_rev(const char *ctx)
{
    return mz_fmt(KEY_PREFIX "rev:{%s}", ctx);
}

char *mz_key_scoped_rev(const char *ctx, const char *jcs)
{
    return mz_fmt(KEY_PREFIX "rev:{%s}:%s", ctx, mz_key_params_digest(ctx, jcs));
}

/* ========================================================================
 * Event streams
 * ====================================================================== */

struct mz_sse {
    mz_conn_t *c;   /* the connection (arena-owned, closed at teardown) */
    bool chunked;   /* body in chunked transfer coding */
    bool ended;     /* last chunk or EOF seen */
    char *text;     /* decoded stream bytes not yet parsed into frames */
    size_t len;     /* bytes in text */
    size_t cap;     /* capacity of text */
    char *head;     /* the response head, for messages */
};

static void sse_free(void *p)
{
    struct mz_sse *s = p;
    free(s->text);
    free(s);
}

static void text_append(struct mz_sse *s, const char *bytes, size_t n)
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
 * Moves what the connection received into s->text, undoing the chunked
 * coding. 0, or -1 on a malformed chunk (reason in err).
 */
static int decode_body(struct mz_sse *s, char *err, size_t errlen)
{
    mz_conn_t *c = s->c;
    if (!s->chunked) {
        text_append(s, c->buf, c->len);
        mz_conn_consume(c, c->len);
        return 0;
    }
    while (!s->ended) {
        const char *eol = c->len > 0 ? memmem(c->buf, c->len, "\r\n", 2) : NULL;
        if (eol == NULL)
            return 0;
        char *end = NULL;
        unsigned long size = strtoul(c->buf, &end, 16);
        if (end == c->buf || (end != eol && *end != ';')) {
            snprintf(err, errlen, "malformed chunk size line: %.*s", (int)(eol - c->buf), c->buf);
            return -1;
        }
        size_t line = (size_t)(eol - c->buf) + 2;
        if (size == 0) {
            s->ended = true;
            return 0;
        }
        if (c->len < line + size + 2)
            return 0;
        if (memcmp(c->buf + line + size, "\r\n", 2) != 0) {
            snprintf(err, errlen, "chunk of %lu bytes not followed by CRLF", size);
            return -1;
        }
        text_append(s, c->buf + line, size);
        mz_conn_consume(c, line + size + 2);
    }
    return 0;
}

/* Appends "a\nb" style: joins value onto *field with a newline. */
static void field_add(char **field, const char *value, size_t n)
{
    if (*field == NULL)
        *field = mz_fmt("%.*s", (int)n, value);
    else
        *field = mz_fmt("%s\n%.*s", *field, (int)n, value);
}

/* Parses the frame text (without its blank line) into an arena frame. */
static mz_sse_frame_t *parse_frame(const char *raw, size_t n)
{
    mz_sse_frame_t *f = mz_alloc(sizeof(*f));
    f->raw = mz_fmt("%.*s", (int)n, raw);
    f->at_ms = mz_now_ms();
    for (const char *p = f->raw; *p != '\0';) {
        const char *nl = strchr(p, '\n');
        size_t l = nl != NULL ? (size_t)(nl - p) : strlen(p);
        if (l > 0 && p[l - 1] == '\r')
            l--;
        const char *colon = memchr(p, ':', l);
        size_t name_len = colon != NULL ? (size_t)(colon - p) : l;
        const char *value = colon != NULL ? colon + 1 : p + l;
        size_t vlen = (size_t)(p + l - value);
        if (vlen > 0 && value[0] == ' ') {
            value++;
            vlen--;
        }
        if (name_len == 0 && colon != NULL)
            field_add(&f->comment, value, vlen);
        else if (name_len == 5 && strncmp(p, "event", 5) == 0)
            field_add(&f->event, value, vlen);
        else if (name_len == 4 && strncmp(p, "data", 4) == 0)
            field_add(&f->data, value, vlen);
        else if (name_len == 5 && strncmp(p, "retry", 5) == 0)
            field_add(&f->retry, value, vlen);
        if (nl == NULL)
            break;
        p = nl + 1;
    }
    return f;
}

/* Takes one complete frame off s->text, or returns NULL. */
static mz_sse_frame_t *take_frame(struct mz_sse *s)
{
    /* Frames end with a blank line; skip stray blank lines first. */
    size_t skip = 0;
    while (skip < s->len && (s->text[skip] == '\n' || s->text[skip] == '\r'))
        skip++;
    if (skip > 0) {
        memmove(s->text, s->text + skip, s->len - skip + 1);
        s->len -= skip;
    }
    char *end = s->len > 0 ? memmem(s->text, s->len, "\n\n", 2) : NULL;
    if (end == NULL)
        return NULL;
    size_t n = (size_t)(end - s->text);
    mz_sse_frame_t *f = parse_frame(s->text, n);
    memmove(s->text, end + 2, s->len - n - 2 + 1);
    s->len -= n + 2;
    return f;
}

mz_sse_t *mz_sse_open(int port, const char *query, const char *token)
{
    struct mz_sse *s = calloc(1, sizeof(*s));
    if (s == NULL)
        mz_oom(sizeof(*s));
    mz_own(s, sse_free, MZ_PHASE_MEM);
    s->c = mz_connect(port);
    const char *headers[] = {"Accept: text/event-stream", NULL};
    char *path = query != NULL ? mz_fmt("/api/mizan/events/?%s", query) : mz_strdup("/api/mizan/events/");
    mz_req_t req = {.method = "GET", .path = path, .headers = headers, .token = token};
    char err[256] = "";
    cr_assert(mz_try_send(s->c, &req, err, sizeof(err)) == 0, "GET %s: %s", path, err);

    double deadline = mz_now_ms() + MZ_HTTP_TIMEOUT_MS;
    const char *end;
    while ((end = s->c->len > 0 ? memmem(s->c->buf, s->c->len, "\r\n\r\n", 4) : NULL) == NULL) {
        long n = mz_conn_fill(s->c, deadline, err, sizeof(err));
        cr_assert(n > 0, "GET %s: no response head (%s); received: %s", path,
                  n == 0 ? "connection closed" : err, s->c->buf);
    }
    size_t head_len = (size_t)(end - s->c->buf) + 4;
    s->head = mz_fmt("%.*s", (int)head_len, s->c->buf);
    mz_conn_consume(s->c, head_len);
    int status = 0;
    cr_assert(sscanf(s->head, "HTTP/1.%*d %d", &status) == 1, "GET %s: bad status line: %s", path,
              s->head);
    if (status != 200) {
        /* Show the error body too (it is small and already sent). */
        mz_conn_fill(s->c, mz_now_ms() + 500, err, sizeof(err));
        cr_assert_fail("GET %s: expected 200 text/event-stream, got:\n%s%s", path, s->head,
                       s->c->buf);
    }
    bool is_sse = false;
    for (const char *line = strstr(s->head, "\r\n"); line != NULL; line = strstr(line + 2, "\r\n")) {
        const char *h = line + 2;
        if (strncasecmp(h, "Content-Type:", 13) == 0) {
            const char *v = h + 13;
            v += strspn(v, " \t");
            is_sse = strncmp(v, "text/event-stream", 17) == 0;
        } else if (strncasecmp(h, "Transfer-Encoding:", 18) == 0) {
            const char *v = h + 18;
            v += strspn(v, " \t");
            s->chunked = strncasecmp(v, "chunked", 7) == 0;
        }
    }
    cr_assert(is_sse, "GET %s: Content-Type is not text/event-stream:\n%s", path, s->head);
    return s;
}

int mz_sse_next(mz_sse_t *s, int timeout_ms, mz_sse_frame_t **out, char *err, size_t errlen)
{
    double deadline = mz_now_ms() + timeout_ms;
    for (;;) {
        if (decode_body(s, err, errlen) < 0)
            return -1;
        mz_sse_frame_t *f = take_frame(s);
        if (f != NULL) {
            *out = f;
            return 1;
        }
        if (s->ended) {
            snprintf(err, errlen, "the stream ended");
            return -1;
        }
        if (mz_now_ms() >= deadline)
            return 0;
        long n = mz_conn_fill(s->c, deadline, err, errlen);
        if (n == 0) {
            s->ended = true;
            if (decode_body(s, err, errlen) < 0)
                return -1;
            if ((f = take_frame(s)) != NULL) {
                *out = f;
                return 1;
            }
            snprintf(err, errlen, "the gateway closed the stream");
            return -1;
        }
        if (n < 0)
            return timed_out(deadline) ? 0 : -1;
    }
}

void mz_sse_close(mz_sse_t *s)
{
    mz_conn_close(s->c);
    s->ended = true;
}

mz_sse_frame_t *mz_sse_expect(mz_sse_t *s, const char *event, const char *data_json, int timeout_ms)
{
    json_t *want = mz_json("%s", data_json);
    char *skipped = mz_strdup("");
    double deadline = mz_now_ms() + timeout_ms;
    for (;;) {
        int left = (int)(deadline - mz_now_ms());
        mz_sse_frame_t *f = NULL;
        char err[256] = "";
        int rc = left > 0 ? mz_sse_next(s, left, &f, err, sizeof(err)) : 0;
        if (rc == 1) {
            json_t *got = f->data != NULL ? mz_keep(json_loads(f->data, 0, NULL)) : NULL;
            if (f->event != NULL && strcmp(f->event, event) == 0 && got != NULL && json_equal(got, want))
                return f;
            skipped = mz_fmt("%s  [%s]\n", skipped, f->raw);
            continue;
        }
        cr_assert_fail("event stream: no `event: %s` with data %s within %d ms (%s); frames "
                       "received meanwhile:\n%s",
                       event, data_json, timeout_ms, rc == 0 ? "timed out" : err,
                       skipped[0] != '\0' ? skipped : "  (none)\n");
    }
}

int mz_sse_expect_no_context(mz_sse_t *s, const char *ctx, int window_ms)
{
    double deadline = mz_now_ms() + window_ms;
    int frames = 0;
    for (;;) {
        int left = (int)(deadline - mz_now_ms());
        if (left <= 0)
            return frames;
        mz_sse_frame_t *f = NULL;
        char err[256] = "";
        int rc = mz_sse_next(s, left, &f, err, sizeof(err));
        if (rc == 0)
            return frames;
        cr_assert(rc == 1, "event stream broke: %s", err);
        frames++;
        if (f->data == NULL)
            continue;
        json_t *got = mz_keep(json_loads(f->data, 0, NULL));
        const char *c = json_string_value(json_object_get(got, "context"));
        cr_assert(c == NULL || strcmp(c, ctx) != 0,
                  "event stream received a `%s` event it is not subscribed to: [%s]", ctx, f->raw);
    }
}

/* ========================================================================
 * Metrics, waiting
 * ====================================================================== */

double mz_metric(const mz_gw_t *gw, const char *series)
{
    mz_resp_t *r = mz_get(gw, "/metrics", NULL);
    cr_assert(r->status == 200, "GET /metrics:\n%s", mz_describe(r));
    size_t n = strlen(series);
    for (const char *line = r->body; line != NULL && *line != '\0';) {
        if (strncmp(line, series, n) == 0 && line[n] == ' ') {
            char *end = NULL;
            double v = strtod(line + n + 1, &end);
            cr_assert(end != line + n + 1, "unparsable sample: %.200s", line);
            return v;
        }
        const char *nl = strchr(line, '\n');
        line = nl != NULL ? nl + 1 : NULL;
    }
    cr_assert_fail("GET /metrics has no sample %s\n%s", series, r->body);
    return 0;
}

mz_resp_t *mz_wait_status(const mz_gw_t *gw, const char *path, int status, int timeout_ms,
                          double *waited_ms)
{
    double start = mz_now_ms();
    for (;;) {
        mz_resp_t *r = mz_get(gw, path, NULL);
        double now = mz_now_ms();
        if (r->status == status) {
            if (waited_ms != NULL)
                *waited_ms = now - start;
            return r;
        }
        cr_assert(now - start < timeout_ms, "GET %s did not answer %d within %d ms; last:\n%s", path,
                  status, timeout_ms, mz_describe(r));
        mz_sleep_ms(50);
    }
}

/* ========================================================================
 * redis-server outages
 * ====================================================================== */

void mz_redis_kill(mz_redis_t *r)
{
    if (r == NULL || r->exited)
        return;
    kill(r->pid, SIGKILL);
    int st;
    mz_reap(r->pid, 5000, &st);
    r->exited = true;
}

/* PING on a fresh connection without asserting: true on +PONG. */
static bool redis_pings(int port)
{
    char err[256];
    struct mz_conn *c = mz_conn_open_raw(port, 500, err, sizeof(err));
    if (c == NULL)
        return false;
    static const char ping[] = "*1\r\n$4\r\nPING\r\n";
    bool ok = mz_try_send_raw(c, ping, sizeof(ping) - 1, err, sizeof(err)) == 0;
    double deadline = mz_now_ms() + 1000;
    while (ok && memmem(c->buf, c->len, "\r\n", 2) == NULL)
        ok = mz_conn_fill(c, deadline, err, sizeof(err)) > 0;
    ok = ok && strncmp(c->buf, "+PONG\r\n", 7) == 0;
    mz_conn_free_raw(c);
    return ok;
}

void mz_redis_restart(mz_redis_t *r)
{
    cr_assert(r->exited, "mz_redis_restart: redis-server pid %d is still running", (int)r->pid);
    char *server = find_in_path("redis-server");
    cr_assert(server != NULL, "redis-server is not installed or not in PATH");
    char *port = mz_fmt("%d", r->port);
    const char *argv[] = {server, "--port",   port,   "--bind",      "127.0.0.1", "--save", "",
                          "--appendonly", "no", "--dir", r->dir, "--daemonize", "no", NULL};
    double deadline = mz_now_ms() + 10000;
    /* The port may still be held briefly by the old process's sockets. */
    while (mz_now_ms() < deadline) {
        int logfd = open(r->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
        cr_assert(logfd >= 0, "open %s: %s", r->log_path, strerror(errno));
        char why[256] = "";
        r->pid = mz_spawn(argv, r->dir, NULL, logfd, logfd, why, sizeof(why));
        close(logfd);
        cr_assert(r->pid > 0, "cannot start redis-server: %s", why);
        r->exited = false;
        while (mz_now_ms() < deadline) {
            int st;
            if (mz_reap(r->pid, 0, &st) == 1) {
                r->exited = true;
                break;
            }
            if (redis_pings(r->port))
                return;
            mz_sleep_ms(10);
        }
        if (!r->exited)
            break;
        mz_sleep_ms(100);
    }
    mz_redis_kill(r);
    cr_assert_fail("redis-server could not be restarted on port %d within 10 s\n%s", r->port,
                   mz_read_file(r->log_path));
}

/* ========================================================================
 * A raw subscriber
 * ====================================================================== */

struct mz_redis_sub {
    mz_conn_t *c; /* arena-owned connection */
    int port;     /* for messages */
};

/*
 * Parses one RESP array of bulk strings / integers at the start of c->buf
 * into items (arena strings, at most max). Returns the element count once
 * the whole reply is there (and consumes it), 0 when more bytes are needed,
 * -1 when it is not such a reply.
 */
static int take_array(mz_conn_t *c, char **items, int max)
{
    if (c->len == 0)
        return 0;
    if (c->buf[0] != '*')
        return -1;
    const char *p = c->buf, *end = c->buf + c->len;
    const char *eol = memmem(p, (size_t)(end - p), "\r\n", 2);
    if (eol == NULL)
        return 0;
    long n = strtol(p + 1, NULL, 10);
    if (n < 0 || n > max)
        return -1;
    p = eol + 2;
    for (long i = 0; i < n; i++) {
        if (p >= end)
            return 0;
        eol = memmem(p, (size_t)(end - p), "\r\n", 2);
        if (eol == NULL)
            return 0;
        if (*p == ':') {
            items[i] = mz_fmt("%.*s", (int)(eol - p - 1), p + 1);
            p = eol + 2;
            continue;
        }
        if (*p != '$')
            return -1;
        long len = strtol(p + 1, NULL, 10);
        if (len < 0)
            return -1;
        const char *data = eol + 2;
        if (end - data < len + 2)
            return 0;
        items[i] = mz_fmt("%.*s", (int)len, data);
        p = data + len + 2;
    }
    mz_conn_consume(c, (size_t)(p - c->buf));
    return (int)n;
}

/* Waits for the next array reply; returns its count, 0 on timeout. Asserting on errors. */
static int next_array(mz_redis_sub_t *sub, char **items, int max, int timeout_ms)
{
    double deadline = mz_now_ms() + timeout_ms;
    for (;;) {
        int n = take_array(sub->c, items, max);
        cr_assert(n >= 0, "redis subscriber on port %d: unexpected reply %.200s", sub->port, sub->c->buf);
        if (n > 0)
            return n;
        if (mz_now_ms() >= deadline)
            return 0;
        char err[256] = "";
        long got = mz_conn_fill(sub->c, deadline, err, sizeof(err));
        if (got < 0 && timed_out(deadline))
            return 0;
        cr_assert(got > 0, "redis subscriber on port %d: %s", sub->port, got == 0 ? "connection closed" : err);
    }
}

mz_redis_sub_t *mz_redis_subscribe(const mz_redis_t *r, const char *channel)
{
    mz_redis_sub_t *sub = mz_alloc(sizeof(*sub));
    sub->port = r->port;
    sub->c = mz_connect(r->port);
    char *cmd = mz_fmt("*2\r\n$9\r\nSUBSCRIBE\r\n$%zu\r\n%s\r\n", strlen(channel), channel);
    char err[256] = "";
    cr_assert(mz_try_send_raw(sub->c, cmd, strlen(cmd), err, sizeof(err)) == 0, "SUBSCRIBE: %s", err);
    char *items[3] = {NULL, NULL, NULL};
    int n = next_array(sub, items, 3, 5000);
    cr_assert(n == 3 && strcmp(items[0], "subscribe") == 0 && strcmp(items[1], channel) == 0,
              "SUBSCRIBE %s: no confirmation within 5 s", channel);
    return sub;
}

char *mz_redis_sub_next(mz_redis_sub_t *sub, int timeout_ms)
{
    double deadline = mz_now_ms() + timeout_ms;
    for (;;) {
        int left = (int)(deadline - mz_now_ms());
        if (left <= 0)
            return NULL;
        char *items[3] = {NULL, NULL, NULL};
        int n = next_array(sub, items, 3, left);
        if (n == 0)
            return NULL;
        if (n == 3 && strcmp(items[0], "message") == 0)
            return items[2];
    }
}
