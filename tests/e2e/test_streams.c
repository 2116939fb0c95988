/*
 * test_streams.c - event streams under attack (PROTOCOL.md section 7, rev 2):
 * what a client sends on its stream is discarded and bounded (the gateway
 * closes the stream, and its RSS stays flat while a client pushes 64 MiB);
 * streams are bounded per instance and per client address, so one address
 * cannot take every slot; a stream opens only for contexts the caller may
 * read; and messages written to the Redis events channel cannot inject a
 * frame into any stream.
 */
#include <criterion/criterion.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cache_support.h"
#include "fault_support.h"
#include "harness.h"

TestSuite(streams, .init = mz_setup, .fini = mz_teardown, .timeout = 300);

#define FEED_EVENT "{\"context\":\"feed\"}"

/* VmRSS of pid in KiB from /proc/PID/status. Asserting. */
static long rss_kib(pid_t pid)
{
    char *status = mz_read_file(mz_fmt("/proc/%d/status", (int)pid));
    cr_assert_not_null(status, "cannot read /proc/%d/status", (int)pid);
    const char *p = strstr(status, "\nVmRSS:");
    cr_assert_not_null(p, "no VmRSS in /proc/%d/status", (int)pid);
    return strtol(p + 7, NULL, 10);
}

/*
 * Opens a stream from source address src (NULL: any) with raw sockets and
 * reads the answer's head. Returns the socket (blocking, kept open) and the
 * status in *status; the caller closes it.
 */
static int raw_stream(int port, const char *src, const char *query, int *status)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert(fd >= 0, "socket: %s", strerror(errno));
    struct timeval tv = {10, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    if (src != NULL) {
        struct sockaddr_in a = {.sin_family = AF_INET};
        inet_pton(AF_INET, src, &a.sin_addr);
        cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0, "bind %s: %s", src, strerror(errno));
    }
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &to.sin_addr);
    cr_assert_eq(connect(fd, (struct sockaddr *)&to, sizeof(to)), 0, "connect: %s", strerror(errno));
    char *req = mz_fmt("GET /api/mizan/events/%s%s HTTP/1.1\r\nHost: x\r\n\r\n", query ? "?" : "", query ? query : "");
    cr_assert_eq(send(fd, req, strlen(req), MSG_NOSIGNAL), (ssize_t)strlen(req));
    char head[4096];
    size_t n = 0;
    while (n < sizeof(head) - 1) {
        ssize_t got = recv(fd, head + n, 1, 0);
        cr_assert(got == 1, "no answer head from the gateway (%s)", got == 0 ? "closed" : strerror(errno));
        n++;
        if (n >= 4 && memcmp(head + n - 4, "\r\n\r\n", 4) == 0)
            break;
    }
    head[n] = '\0';
    cr_assert(sscanf(head, "HTTP/1.1 %d", status) == 1, "not an HTTP answer: %s", head);
    return fd;
}

/* Reads from fd until needle shows up within timeout_ms; true when it did. */
static bool recv_until(int fd, const char *needle, int timeout_ms)
{
    char buf[8192];
    size_t n = 0;
    double deadline = mz_now_ms() + timeout_ms;
    while (mz_now_ms() < deadline) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 100) <= 0)
            continue;
        ssize_t got = recv(fd, buf + n, sizeof(buf) - 1 - n, MSG_DONTWAIT);
        if (got <= 0)
            return false;
        n += (size_t)got;
        buf[n] = '\0';
        if (strstr(buf, needle) != NULL)
            return true;
        if (n > sizeof(buf) / 2) { /* keep the tail */
            memmove(buf, buf + n - 256, 256);
            n = 256;
        }
    }
    return false;
}

/* Pushes up to total bytes on fd in 1 MiB writes; returns the bytes the kernel took. */
static size_t flood(int fd, size_t total)
{
    static char chunk[1 << 20];
    memset(chunk, 'x', sizeof(chunk));
    size_t sent = 0;
    while (sent < total) {
        ssize_t w = send(fd, chunk, sizeof(chunk), MSG_NOSIGNAL);
        if (w <= 0)
            break; /* EPIPE / ECONNRESET: the gateway closed the stream */
        sent += (size_t)w;
    }
    return sent;
}

/* True when the gateway closed fd within timeout_ms. */
static bool closed_by_peer(int fd, int timeout_ms)
{
    double deadline = mz_now_ms() + timeout_ms;
    char buf[4096];
    while (mz_now_ms() < deadline) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 100) <= 0)
            continue;
        ssize_t got = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
        if (got == 0 || (got < 0 && (errno == ECONNRESET || errno == EPIPE)))
            return true;
    }
    return false;
}

/* Waits until mizan_sse_clients equals want; returns the last value. */
static double wait_clients(const mz_gw_t *gw, double want, int timeout_ms)
{
    double deadline = mz_now_ms() + timeout_ms, v = -1;
    while ((v = mz_metric(gw, "mizan_sse_clients")) != want && mz_now_ms() < deadline)
        mz_sleep_ms(50);
    return v;
}

/* ------------------------------------------------------------------------
 * What a client sends on its stream
 * ---------------------------------------------------------------------- */

/* Floods a stream with 64 MiB under config cfg and checks it is closed with RSS flat. */
static void flood_case(json_t *cfg, size_t limit)
{
    mz_gw_t *gw = mz_gw_start(cfg);
    char *alice = mz_token(gw, "alice", NULL);
    int status = 0;
    int fd = raw_stream(gw->port, NULL, "contexts=feed", &status);
    cr_assert_eq(status, 200);
    cr_assert(recv_until(fd, ": connected", 5000), "no hello frame");

    /* A little input is tolerated: the stream keeps delivering. */
    char small[512];
    memset(small, 'y', sizeof(small));
    cr_assert_eq(send(fd, small, sizeof(small), MSG_NOSIGNAL), (ssize_t)sizeof(small));
    mz_expect_mutation(mz_call(gw, "update_post", "{\"post_id\":1,\"title\":\"flood\"}", alice));
    cr_assert(recv_until(fd, "data: " FEED_EVENT, 5000), "the stream stopped delivering after 512 bytes of input");

    long before = rss_kib(gw->pid);
    double t0 = mz_now_ms();
    size_t sent = flood(fd, (size_t)64 << 20);
    bool closed = closed_by_peer(fd, 10000);
    long after = rss_kib(gw->pid);
    close(fd);
    cr_log_info("stream input limit %zu B: the client got %zu bytes (%.1f MiB) into the socket in %.0f ms before the "
                "gateway closed it; gateway VmRSS %ld KiB -> %ld KiB (%+.1f MiB)",
                limit, sent, (double)sent / (1 << 20), mz_now_ms() - t0, before, after, (after - before) / 1024.0);
    cr_assert(closed, "the gateway left open a stream whose client sent %zu bytes", sent);
    cr_assert(sent < ((size_t)64 << 20), "the gateway took all 64 MiB of input on a stream");
    /* Kernel socket buffers hold a few MiB; the gateway itself must not grow with the input. */
    cr_assert(after - before < 16 * 1024, "VmRSS grew by %ld KiB while a client pushed %zu bytes", after - before,
              sent);
    cr_assert(mz_gw_log_count(gw, "closing an event stream whose client sent more than") >= 1,
              "no log line for the closed stream");
    cr_assert_eq(wait_clients(gw, 0, 5000), 0.0, "the closed stream is still counted");
    mz_expect_json(mz_expect_result(mz_call(gw, "ping", NULL, NULL)), "\"pong\"");
    mz_gw_stop_ok(gw);
}

Test(streams, client_input_is_discarded_and_the_stream_closed)
{
    flood_case(NULL, 4096);
}

Test(streams, client_input_bound_is_configurable)
{
    flood_case(mz_json("{\"sse_max_input_bytes\": 1048576}"), 1048576);
}

/* ------------------------------------------------------------------------
 * Slots per instance and per address
 * ---------------------------------------------------------------------- */

Test(streams, streams_are_bounded_per_address_and_per_instance)
{
    mz_gw_t *gw = mz_gw_start(mz_json("{\"sse_max_clients\": 5, \"sse_max_clients_per_address\": 3}"));
    int fds[8], n = 0, status = 0;
    for (int i = 0; i < 3; i++) {
        fds[n++] = raw_stream(gw->port, "127.0.0.1", "contexts=feed", &status);
        cr_assert_eq(status, 200, "stream %d from 127.0.0.1", i + 1);
    }
    /* The fourth from the same address is refused at once, in the envelope. */
    mz_resp_t *r = mz_get(gw, "/api/mizan/events/?contexts=feed", NULL);
    mz_expect_error(r, 503, "UNAVAILABLE");
    cr_assert_not_null(mz_header(r, "Retry-After"), "%s", mz_describe(r));
    cr_assert_not_null(strstr(r->body, "from this address"), "%s", r->body);
    /* Another address still gets a slot: one client cannot take them all. */
    for (int i = 0; i < 2; i++) {
        fds[n++] = raw_stream(gw->port, "127.0.0.2", "contexts=feed", &status);
        cr_assert_eq(status, 200, "stream %d from 127.0.0.2", i + 1);
    }
    cr_assert_eq(mz_metric(gw, "mizan_sse_clients"), 5.0);
    /* The instance is full now, for every address. */
    int extra = raw_stream(gw->port, "127.0.0.3", "contexts=feed", &status);
    cr_assert_eq(status, 503, "a sixth stream with sse_max_clients 5");
    close(extra);
    /* A slot given back can be taken again. */
    close(fds[0]);
    cr_assert_eq(wait_clients(gw, 4, 5000), 4.0, "a closed stream still holds its slot");
    fds[0] = raw_stream(gw->port, "127.0.0.1", "contexts=feed", &status);
    cr_assert_eq(status, 200, "a stream from 127.0.0.1 after one of its three closed");
    for (int i = 0; i < n; i++)
        close(fds[i]);
    cr_assert_eq(wait_clients(gw, 0, 5000), 0.0);
    mz_gw_stop_ok(gw);
}

/* ------------------------------------------------------------------------
 * Who may listen
 * ---------------------------------------------------------------------- */

Test(streams, a_stream_opens_only_for_contexts_the_caller_may_read)
{
    mz_gw_t *gw = mz_gw_start(NULL);
    char *bob = mz_token(gw, "bob", NULL);
    char *drafter = mz_token(gw, "carol", "--perm", "blog.view_drafts", NULL);
    char *root = mz_token(gw, "root", "--superuser", NULL);
    /* Exactly what GET /ctx/{name}/ answers. */
    struct {
        const char *query, *token;
        int status;
        const char *code;
    } cases[] = {
        {"contexts=me", NULL, 401, "UNAUTHORIZED"},
        {"contexts=drafts", NULL, 401, "UNAUTHORIZED"},
        {"contexts=feed,drafts", NULL, 401, "UNAUTHORIZED"},
        {"contexts=drafts", bob, 403, "FORBIDDEN"},
        {"contexts=post,drafts", bob, 403, "FORBIDDEN"},
        {"contexts=nope", NULL, 404, "NOT_FOUND"},
        {"contexts=drafts,nope", bob, 404, "NOT_FOUND"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        mz_resp_t *r = mz_get(gw, mz_fmt("/api/mizan/events/?%s", cases[i].query), cases[i].token);
        mz_expect_error(r, cases[i].status, cases[i].code);
        const char *ctx = strchr(cases[i].query, '=') + 1;
        if (strchr(ctx, ',') == NULL && cases[i].status != 404)
            mz_expect_error(mz_get(gw, mz_fmt("/api/mizan/ctx/%s/", ctx), cases[i].token), cases[i].status,
                            cases[i].code);
    }
    cr_assert_eq(mz_metric(gw, "mizan_sse_clients"), 0.0, "a refused stream was counted");
    mz_sse_open(gw, "contexts=me", bob);
    mz_sse_open(gw, "contexts=drafts,feed", drafter);

    /* Unfiltered: only what the caller may read. */
    mz_sse_t *anon = mz_sse_open(gw, NULL, NULL);
    mz_sse_t *everything = mz_sse_open(gw, NULL, root);
    mz_sse_t *drafts = mz_sse_open(gw, "contexts=drafts", drafter);
    mz_expect_mutation(mz_call(gw, "create_post", "{\"title\":\"n\",\"body\":\"b\"}", bob));
    mz_sse_expect(everything, "invalidate", "{\"context\":\"drafts\"}", 5000);
    mz_sse_expect(drafts, "invalidate", "{\"context\":\"drafts\"}", 5000);
    mz_sse_expect(anon, "invalidate", FEED_EVENT, 5000);
    mz_sse_expect_no_context(anon, "drafts", 700);
    mz_gw_stop_ok(gw);
}

/* ------------------------------------------------------------------------
 * The Redis events channel
 * ---------------------------------------------------------------------- */

static void publish(const mz_redis_t *r, const char *msg)
{
    const char *argv[] = {"PUBLISH", "mizan:events", msg, NULL};
    mz_redis_cmd(r, argv);
}

/*
 * Reads frames of s until the event whose data is want_json; asserts that
 * every frame before it is the hello, a heartbeat, or an `invalidate` event
 * whose data is one of allowed_json (NULL-terminated), and that no frame
 * carries an event other than "invalidate" or a line of its own.
 */
static void expect_clean_until(mz_sse_t *s, const char *who, const char *want_json, const char *const *allowed_json)
{
    json_t *want = mz_json("%s", want_json);
    double deadline = mz_now_ms() + 8000;
    for (;;) {
        int left = (int)(deadline - mz_now_ms());
        mz_sse_frame_t *f = NULL;
        char err[256] = "";
        int rc = left > 0 ? mz_sse_next(s, left, &f, err, sizeof(err)) : 0;
        cr_assert_eq(rc, 1, "%s: no %s within 8 s (%s)", who, want_json, rc == 0 ? "timed out" : err);
        if (f->event == NULL && f->data == NULL) {
            cr_assert(f->comment != NULL, "%s: a frame with no field: '%s'", who, f->raw);
            continue; /* hello or heartbeat */
        }
        cr_assert(f->event != NULL && strcmp(f->event, "invalidate") == 0, "%s: injected frame: '%s'", who, f->raw);
        cr_assert(strchr(f->data, '\n') == NULL && f->retry == NULL && f->comment == NULL,
                  "%s: injected lines: '%s'", who, f->raw);
        json_t *d = mz_keep(json_loads(f->data, 0, NULL));
        cr_assert_not_null(d, "%s: data is not JSON: '%s'", who, f->raw);
        cr_assert_eq(strncmp(f->raw, "event: invalidate\ndata: ", 24), 0, "%s: frame layout: '%s'", who, f->raw);
        cr_assert_null(strchr(f->raw + 24, '\n'), "%s: more than two lines: '%s'", who, f->raw);
        if (json_equal(d, want))
            return;
        bool ok = false;
        for (size_t i = 0; allowed_json[i] != NULL && !ok; i++)
            ok = json_equal(d, mz_json("%s", allowed_json[i]));
        cr_assert(ok, "%s: unexpected event before %s: '%s'", who, want_json, f->raw);
    }
}

Test(streams, redis_messages_cannot_inject_frames)
{
    mz_redis_t *r = mz_redis_start();
    json_t *cfg = mz_json("{\"cache\":{\"redis_url\":\"redis://127.0.0.1:%d/0\"}}", r->port);
    mz_gw_t *gw = mz_gw_start(cfg);
    mz_wait_status(gw, "/readyz", 200, 10000, NULL);
    char *root = mz_token(gw, "root", "--superuser", NULL);
    mz_sse_t *feed = mz_sse_open(gw, "contexts=feed", NULL);
    mz_sse_t *all = mz_sse_open(gw, NULL, root);
    double dropped0 = mz_metric(gw, "mizan_events_dropped_total");

    const char *bad[] = {
        /* an escaped LF in the event type: would add an "event:" line */
        "{\"type\":\"invalidate\\nevent: pwned\\ndata: {}\\n\",\"context\":\"feed\"}",
        "{\"type\":\"pwned\",\"context\":\"feed\"}",
        /* raw CR/LF between JSON tokens */
        "{\"type\":\"invalidate\",\r\n\"context\":\"feed\"}",
        "{\"type\":\"invalidate\",\"context\":\"feed\"}\r\n\r\nevent: pwned\r\ndata: 1",
        /* context outside the name grammar */
        "{\"type\":\"invalidate\",\"context\":\"feed\\n\\nevent: pwned\"}",
        "{\"type\":\"invalidate\",\"context\":\"\"}",
        "{\"type\":\"invalidate\",\"context\":\"1feed\"}",
        /* params not an object of scalars */
        "{\"type\":\"invalidate\",\"context\":\"feed\",\"params\":{\"a\":{\"b\":1}}}",
        "{\"type\":\"invalidate\",\"context\":\"feed\",\"params\":{\"a\":[1]}}",
        "{\"type\":\"invalidate\",\"context\":\"feed\",\"params\":[1]}",
        "{\"type\":\"invalidate\",\"context\":\"feed\",\"params\":\"x\"}",
        "not json at all",
        "[\"invalidate\",\"feed\"]",
    };
    size_t nbad = sizeof(bad) / sizeof(bad[0]);
    for (size_t i = 0; i < nbad; i++)
        publish(r, bad[i]);
    /* Valid, with CR/LF escaped inside a string: delivered, still one frame. */
    const char *escaped = "{\"context\":\"feed\",\"params\":{\"q\":\"x\\r\\n\\r\\nevent: pwned\\r\\ndata: 1\"}}";
    publish(r, "{\"type\":\"invalidate\",\"context\":\"feed\",\"params\":{\"q\":\"x\\r\\n\\r\\nevent: pwned\\r\\ndata: 1\"},"
               "\"origin\":\"elsewhere\",\"ts\":1}");
    /* And a good event after all of them. */
    publish(r, "{\"type\":\"invalidate\",\"context\":\"feed\",\"params\":{\"n\":2},\"origin\":\"elsewhere\",\"ts\":2}");
    const char *none[] = {NULL};
    const char *escaped_only[] = {escaped, NULL};
    expect_clean_until(feed, "feed stream", escaped, none);
    expect_clean_until(feed, "feed stream", "{\"context\":\"feed\",\"params\":{\"n\":2}}", none);
    expect_clean_until(all, "unfiltered stream", "{\"context\":\"feed\",\"params\":{\"n\":2}}", escaped_only);
    double dropped = mz_metric(gw, "mizan_events_dropped_total") - dropped0;
    cr_assert_eq(dropped, (double)nbad, "mizan_events_dropped_total rose by %.0f for %zu bad messages", dropped, nbad);
    cr_assert(mz_gw_log_count(gw, "dropped a message on the events channel") >= nbad, "drops are not logged");
    mz_gw_stop_ok(gw);
}
