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
    char *openssl = mz_find_exe("openssl");
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

char *mz_key_user_scope(const char *sub, bool staff, bool superuser, const char *const *perms)
{
    return mz_fmt("user:%s:%s", sub, mz_key_perm(staff, superuser, perms));
}

char *mz_stored_value(const char *bundle_key, long long r0, long long r1, const char *body)
{
    char *doc = mz_fmt("{\"v\":2,\"rev\":[%lld,%lld],\"bundle\":%s}", r0, r1, body);
    const char *parts[] = {"mizan/v1/value", bundle_key, doc};
    return mz_fmt("%s\n%s", hmac_parts(parts, 3), doc);
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

/* A stream read through the harness's SSE reader, with frames parsed. */
struct mz_sse {
    mz_stream_t *stream; /* the harness stream (arena-owned) */
};

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

mz_sse_t *mz_sse_open(const mz_gw_t *gw, const char *query, const char *token)
{
    struct mz_sse *s = mz_alloc(sizeof(*s));
    const char *headers[] = {"Accept: text/event-stream", NULL};
    char *path = query != NULL ? mz_fmt("/api/mizan/events/?%s", query) : mz_strdup("/api/mizan/events/");
    mz_resp_t *head = NULL;
    s->stream = mz_stream_open(gw, path, headers, token, &head);
    cr_assert_eq(head->status, 200, "GET %s: expected 200 text/event-stream, got %d", path, head->status);
    const char *ctype = mz_header(head, "Content-Type");
    cr_assert(ctype != NULL && strncmp(ctype, "text/event-stream", 17) == 0,
              "GET %s: Content-Type is not text/event-stream: %s", path, ctype != NULL ? ctype : "(none)");
    return s;
}

int mz_sse_next(mz_sse_t *s, int timeout_ms, mz_sse_frame_t **out, char *err, size_t errlen)
{
    for (;;) {
        char *frame = mz_stream_next_frame(s->stream, timeout_ms);
        if (frame == NULL) {
            if (mz_stream_closed(s->stream, 0)) {
                snprintf(err, errlen, "the gateway closed the stream");
                return -1;
            }
            return 0;
        }
        /* The frame ends with its blank line: parse what comes before. */
        size_t n = strlen(frame);
        while (n > 0 && (frame[n - 1] == '\n' || frame[n - 1] == '\r'))
            n--;
        if (n == 0)
            continue; /* a stray blank line */
        *out = parse_frame(frame, n);
        return 1;
    }
}

void mz_sse_close(mz_sse_t *s)
{
    mz_stream_close(s->stream);
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
    char *server = mz_find_exe("redis-server");
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

mz_resp_t *mz_ctx_get(const mz_gw_t *gw, const char *path, const char *token, const char *cache)
{
    mz_resp_t *r = mz_get(gw, path, token);
    cr_assert(r->status == 200, "GET %s: expected 200\n%s", path, mz_describe(r));
    mz_expect_std_headers(r);
    cr_assert(json_is_object(r->json), "GET %s: body is not a JSON object\n%s", path, mz_describe(r));
    const char *got = mz_header(r, "X-Mizan-Cache");
    cr_assert(got != NULL, "GET %s: no X-Mizan-Cache header\n%s", path, mz_describe(r));
    if (cache != NULL)
        cr_assert(strcmp(got, cache) == 0, "GET %s: X-Mizan-Cache %s, expected %s\n%s", path, got, cache,
                  mz_describe(r));
    return r;
}

json_t *mz_mutate(const mz_gw_t *gw, const char *fn, const char *args, const char *token, const char *want)
{
    mz_resp_t *r = mz_call(gw, fn, args, token);
    json_t *result = mz_expect_mutation(r);
    mz_expect_json(json_object_get(r->json, "invalidate"), want);
    return result;
}

const char *mz_bundle_title(const mz_resp_t *r)
{
    json_t *t = json_object_get(json_object_get(json_object_get(r->json, "data"), "get_post"), "title");
    cr_assert(json_is_string(t), "bundle has no data.get_post.title\n%s", mz_describe(r));
    return json_string_value(t);
}

mz_gw_t *mz_cache_gw_start(const char *dir, json_t *cfg, const mz_redis_t *r, const char *extra)
{
    if (r != NULL)
        mz_json_merge(cfg, mz_json("{\"cache\":{\"redis_url\":\"redis://127.0.0.1:%d/0\"}}", r->port));
    if (extra != NULL)
        mz_json_merge(cfg, mz_json("%s", extra));
    mz_gw_opts_t opts = {.config = cfg, .dir = dir};
    mz_gw_t *gw = mz_gw_start_opts(&opts);
    if (r != NULL)
        mz_wait_status(gw, "/readyz", 200, 10000, NULL);
    return gw;
}
