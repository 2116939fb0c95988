/*
 * test_guarantees_exec.c - end-to-end tests of the execution guarantees
 * (PROTOCOL revision 2): what a misbehaving upstream can and cannot do to
 * the next caller of a pooled connection, scope by construction checked at
 * start-up, and per-function concurrency limits under a flood of slow calls.
 *
 * The misbehaving upstream is a raw-socket HTTP server run on a thread of
 * the test (rawup_*): it answers each request by its path, and some paths
 * break the framing on purpose (bytes past Content-Length, a body on a 204,
 * bytes after a chunked body's end, bytes sent later on an idle
 * connection). Its answers echo the X-Mizan-Sub header, so a reply meant
 * for one user and delivered to another shows up at once.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cache_support.h"
#include "harness.h"
#include "internal.h" /* mz_own: the raw upstream is stopped at teardown like the others */

TestSuite(guarantees_exec, .init = mz_setup, .fini = mz_teardown, .timeout = 240);

/* ------------------------------------------------------------------------
 * A raw, scriptable, misbehaving upstream
 * ---------------------------------------------------------------------- */

#define RAW_MAX_CONNS 32

/** One accepted connection of the raw upstream. */
typedef struct rawconn {
    int fd;            /**< -1: free slot */
    char buf[8192];    /**< request bytes not yet handled */
    size_t len;
    double late_at;    /**< mz_now_ms() at which to send unsolicited bytes (0: none) */
    char *delayed;     /**< an answer held back until delayed_at (NULL: none) */
    double delayed_at;
} rawconn_t;

/** The raw upstream: one thread, poll() over the listener and its connections. */
typedef struct rawup {
    int lfd;
    int port;
    char *url;
    pthread_t thread;
    atomic_bool stop;
    atomic_int accepted;   /**< connections accepted so far */
    atomic_int requests;   /**< requests answered so far */
    rawconn_t conns[RAW_MAX_CONNS];
} rawup_t;

/* The extra answer a broken framing leaves on the connection. */
static const char SMUGGLED[] = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 19\r\n\r\n"
                               "{\"who\":\"SMUGGLED\"}\n";

static void send_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w <= 0) {
            if (w < 0 && errno == EINTR)
                continue;
            return;
        }
        p += w;
        n -= (size_t)w;
    }
}

/* The value of header name in the request head (copied into out), or "" when absent. */
static void req_header(const char *head, const char *name, char *out, size_t cap)
{
    out[0] = '\0';
    size_t n = strlen(name);
    for (const char *line = strstr(head, "\r\n"); line != NULL && line[2] != '\r'; line = strstr(line + 2, "\r\n")) {
        const char *h = line + 2;
        if (strncasecmp(h, name, n) == 0 && h[n] == ':') {
            h += n + 1;
            while (*h == ' ')
                h++;
            size_t k = strcspn(h, "\r");
            snprintf(out, cap, "%.*s", (int)(k < cap ? k : cap - 1), h);
            return;
        }
    }
}

/* Answers one request (head NUL-terminated) on rc. */
static void raw_answer(rawup_t *u, rawconn_t *rc, const char *head)
{
    char path[256] = "", sub[128];
    sscanf(head, "%*s %255s", path);
    req_header(head, "X-Mizan-Sub", sub, sizeof(sub));
    char body[512];
    snprintf(body, sizeof(body), "{\"who\":\"%s\",\"path\":\"%s\"}", sub[0] ? sub : "anon", path);
    char *out = NULL;
    int n = 0;
    if (strcmp(path, "/smuggle") == 0) {
        /* Bytes past Content-Length: a whole second answer. */
        n = asprintf(&out, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s%s",
                     strlen(body), body, SMUGGLED);
    } else if (strcmp(path, "/dupcl") == 0) {
        /* Content-Length twice: the framing is ambiguous even when nothing follows. */
        n = asprintf(&out,
                     "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
                     "Content-Length: %zu\r\n\r\n%s",
                     strlen(body), strlen(body), body);
    } else if (strcmp(path, "/nocontent") == 0) {
        /* A body on a 204. */
        n = asprintf(&out, "HTTP/1.1 204 No Content\r\n\r\n%s", SMUGGLED);
    } else if (strcmp(path, "/chunked") == 0) {
        /* Bytes after the chunked body's last chunk. */
        n = asprintf(&out,
                     "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                     "%zx\r\n%s\r\n0\r\n\r\n%s",
                     strlen(body), body, SMUGGLED);
    } else {
        n = asprintf(&out, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
                     strlen(body), body);
        if (strcmp(path, "/late") == 0)
            rc->late_at = mz_now_ms() + 100; /* then an unsolicited answer on the idle connection */
        if (strcmp(path, "/slow") == 0 && rc->delayed == NULL) {
            rc->delayed = out; /* answered 1 s later */
            rc->delayed_at = mz_now_ms() + 1000;
            atomic_fetch_add(&u->requests, 1);
            return;
        }
    }
    if (n > 0)
        send_all(rc->fd, out, (size_t)n);
    free(out);
    atomic_fetch_add(&u->requests, 1);
}

static void raw_close(rawconn_t *rc)
{
    close(rc->fd);
    rc->fd = -1;
    rc->len = 0;
    rc->late_at = 0;
    free(rc->delayed);
    rc->delayed = NULL;
}

static void *raw_main(void *arg)
{
    rawup_t *u = arg;
    while (!atomic_load(&u->stop)) {
        struct pollfd pfd[RAW_MAX_CONNS + 1];
        int map[RAW_MAX_CONNS + 1];
        nfds_t n = 0;
        pfd[n] = (struct pollfd){.fd = u->lfd, .events = POLLIN};
        map[n++] = -1;
        for (int i = 0; i < RAW_MAX_CONNS; i++)
            if (u->conns[i].fd >= 0) {
                pfd[n] = (struct pollfd){.fd = u->conns[i].fd, .events = POLLIN};
                map[n++] = i;
            }
        poll(pfd, n, 20);
        double now = mz_now_ms();
        for (int i = 0; i < RAW_MAX_CONNS; i++) {
            rawconn_t *rc = &u->conns[i];
            if (rc->fd >= 0 && rc->late_at > 0 && now >= rc->late_at) {
                rc->late_at = 0;
                send_all(rc->fd, SMUGGLED, strlen(SMUGGLED));
            }
            if (rc->fd >= 0 && rc->delayed != NULL && now >= rc->delayed_at) {
                send_all(rc->fd, rc->delayed, strlen(rc->delayed));
                free(rc->delayed);
                rc->delayed = NULL;
            }
        }
        for (nfds_t k = 0; k < n; k++) {
            if (pfd[k].revents == 0)
                continue;
            if (map[k] < 0) {
                int fd = accept(u->lfd, NULL, NULL);
                if (fd < 0)
                    continue;
                int slot = -1;
                for (int i = 0; i < RAW_MAX_CONNS && slot < 0; i++)
                    if (u->conns[i].fd < 0)
                        slot = i;
                if (slot < 0) {
                    close(fd);
                    continue;
                }
                u->conns[slot].fd = fd;
                u->conns[slot].len = 0;
                u->conns[slot].late_at = 0;
                atomic_fetch_add(&u->accepted, 1);
                continue;
            }
            rawconn_t *rc = &u->conns[map[k]];
            ssize_t r = recv(rc->fd, rc->buf + rc->len, sizeof(rc->buf) - 1 - rc->len, 0);
            if (r <= 0) {
                raw_close(rc);
                continue;
            }
            rc->len += (size_t)r;
            rc->buf[rc->len] = '\0';
            char *end;
            while ((end = strstr(rc->buf, "\r\n\r\n")) != NULL) {
                /* Requests to this upstream are GETs without a body. */
                size_t used = (size_t)(end + 4 - rc->buf);
                end[2] = '\0';
                raw_answer(u, rc, rc->buf);
                memmove(rc->buf, rc->buf + used, rc->len - used);
                rc->len -= used;
                rc->buf[rc->len] = '\0';
            }
        }
    }
    for (int i = 0; i < RAW_MAX_CONNS; i++)
        if (u->conns[i].fd >= 0)
            raw_close(&u->conns[i]);
    return NULL;
}

static void rawup_stop(void *p)
{
    rawup_t *u = p;
    atomic_store(&u->stop, true);
    pthread_join(u->thread, NULL);
    close(u->lfd);
}

/* Starts the raw upstream on a free loopback port; stopped at teardown. Asserting. */
static rawup_t *rawup_start(void)
{
    rawup_t *u = mz_alloc(sizeof(*u));
    for (int i = 0; i < RAW_MAX_CONNS; i++)
        u->conns[i].fd = -1;
    u->lfd = mz_listen_loopback(64, &u->port);
    u->url = mz_fmt("http://127.0.0.1:%d", u->port);
    cr_assert(pthread_create(&u->thread, NULL, raw_main, u) == 0);
    mz_own(u, rawup_stop, MZ_PHASE_PROC);
    return u;
}

/* A gateway with one I/O loop and one pooled connection per service of the raw upstream. */
static mz_gw_t *start_raw_gateway(const rawup_t *u)
{
    const char *svc = "\"pool_size\": 1, \"queue_size\": 16, \"retries\": 0, \"breaker\": {\"failures\": 0}";
    json_t *cfg = mz_json(
        "{\"io_threads\": 1,"
        " \"upstreams\": {\"ident\": {\"url\": \"%s\", %s}, \"pub\": {\"url\": \"%s\", \"identity\": false, %s},"
        "   \"wide\": {\"url\": \"%s\", \"pool_size\": 8, \"breaker\": {\"failures\": 0}}},"
        " \"functions\": ["
        "  {\"name\": \"who\", \"auth\": true, \"upstream\": {\"service\": \"ident\", \"path\": \"/who\"}},"
        "  {\"name\": \"p_smuggle\", \"auth\": true, \"upstream\": {\"service\": \"ident\", \"path\": \"/smuggle\"}},"
        "  {\"name\": \"p_nocontent\", \"auth\": true,"
        "   \"upstream\": {\"service\": \"ident\", \"path\": \"/nocontent\"}},"
        "  {\"name\": \"p_dupcl\", \"auth\": true, \"upstream\": {\"service\": \"ident\", \"path\": \"/dupcl\"}},"
        "  {\"name\": \"p_chunked\", \"auth\": true, \"upstream\": {\"service\": \"ident\", \"path\": \"/chunked\"}},"
        "  {\"name\": \"p_late\", \"auth\": true, \"upstream\": {\"service\": \"ident\", \"path\": \"/late\"}},"
        "  {\"name\": \"who_noid\", \"auth\": true,"
        "   \"upstream\": {\"service\": \"ident\", \"path\": \"/who\", \"identity\": false}},"
        "  {\"name\": \"pub_smuggle\", \"upstream\": {\"service\": \"pub\", \"path\": \"/smuggle\"}},"
        "  {\"name\": \"pub_item\", \"upstream\": {\"service\": \"pub\", \"path\": \"/item\"}},"
        "  {\"name\": \"slow_up\", \"max_concurrency\": 2, \"upstream\": {\"service\": \"wide\", \"path\": \"/slow\"}}],"
        " \"contexts\": [{\"name\": \"items\", \"ttl\": 60, \"scope\": \"public\", \"functions\": [\"pub_item\"]}]}",
        u->url, svc, u->url, svc, u->url);
    return mz_gw_start(cfg);
}

/* The result of a successful call, as compact JSON text. */
static char *result_text(mz_resp_t *r)
{
    return mz_dump(mz_expect_result(r));
}

/* ------------------------------------------------------------------------
 * Item: a pooled upstream connection whose framing is in doubt is never reused
 * ---------------------------------------------------------------------- */

Test(guarantees_exec, broken_upstream_framing_never_reaches_the_next_user)
{
    rawup_t *u = rawup_start();
    mz_gw_t *gw = start_raw_gateway(u);
    char *alice = mz_token(gw, "alice", NULL);
    char *bob = mz_token(gw, "bob", NULL);

    static const struct {
        const char *fn;
        const char *alice_sees; /* NULL: JSON null (an answer without a body) */
    } cases[] = {
        {"p_smuggle", "{\"who\": \"alice\", \"path\": \"/smuggle\"}"},
        {"p_nocontent", NULL},
        {"p_chunked", "{\"who\": \"alice\", \"path\": \"/chunked\"}"},
        {"p_dupcl", "{\"who\": \"alice\", \"path\": \"/dupcl\"}"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int conns_before = atomic_load(&u->accepted);
        mz_resp_t *r = mz_call(gw, cases[i].fn, NULL, alice);
        json_t *res = mz_expect_result(r);
        if (cases[i].alice_sees != NULL)
            mz_expect_json(res, cases[i].alice_sees);
        else
            cr_assert(json_is_null(res), "%s: expected null, got %s", cases[i].fn, mz_dump(res));
        /* Bob's call right after: his own answer, never the bytes alice's answer left behind. */
        r = mz_call(gw, "who", NULL, bob);
        char *got = result_text(r);
        cr_assert(strstr(r->body, "SMUGGLED") == NULL, "after %s, bob got the bytes left on alice's connection: %s",
                  cases[i].fn, r->body);
        mz_expect_json(mz_expect_result(r), "{\"who\": \"bob\", \"path\": \"/who\"}");
        cr_assert(atomic_load(&u->accepted) > conns_before,
                  "after %s the gateway kept the connection whose framing was broken (%d connections, got %s)",
                  cases[i].fn, atomic_load(&u->accepted), got);
    }
    double dropped = mz_metric(gw, "mizan_upstream_connections_dropped_total{upstream=\"ident\"}");
    cr_assert(dropped >= 4, "expected 4 dropped connections in /metrics, got %g", dropped);
    mz_gw_stop_ok(gw);
}

Test(guarantees_exec, unsolicited_bytes_on_an_idle_connection_drop_it)
{
    rawup_t *u = rawup_start();
    mz_gw_t *gw = start_raw_gateway(u);
    char *alice = mz_token(gw, "alice", NULL);
    char *bob = mz_token(gw, "bob", NULL);
    mz_expect_json(mz_expect_result(mz_call(gw, "p_late", NULL, alice)), "{\"who\": \"alice\", \"path\": \"/late\"}");
    mz_sleep_ms(400); /* the upstream sends a stray answer 100 ms after its own */
    mz_resp_t *r = mz_call(gw, "who", NULL, bob);
    cr_assert(strstr(r->body, "SMUGGLED") == NULL, "bob got bytes that arrived on an idle connection: %s", r->body);
    mz_expect_json(mz_expect_result(r), "{\"who\": \"bob\", \"path\": \"/who\"}");
    mz_gw_stop_ok(gw);
}

Test(guarantees_exec, smuggled_upstream_answer_is_never_cached_in_a_public_bundle)
{
    rawup_t *u = rawup_start();
    mz_gw_t *gw = start_raw_gateway(u);
    mz_expect_json(mz_expect_result(mz_call(gw, "pub_smuggle", NULL, NULL)),
                   "{\"who\": \"anon\", \"path\": \"/smuggle\"}");
    mz_resp_t *r = mz_ctx_get(gw, "/api/mizan/ctx/items/", NULL, "MISS");
    cr_assert(strstr(r->body, "SMUGGLED") == NULL, "the public bundle holds the smuggled answer: %s", r->body);
    mz_expect_json(json_object_get(r->json, "data"), "{\"pub_item\": {\"who\": \"anon\", \"path\": \"/item\"}}");
    r = mz_ctx_get(gw, "/api/mizan/ctx/items/", NULL, "HIT");
    cr_assert(strstr(r->body, "SMUGGLED") == NULL, "the cached bundle holds the smuggled answer: %s", r->body);
    mz_gw_stop_ok(gw);
}

/* ------------------------------------------------------------------------
 * Item: scope by construction, refused at start-up
 * ---------------------------------------------------------------------- */

/* Runs mizand on config (merged onto the test defaults) and expects it to refuse to start with want in its log. */
static void expect_refused_at_startup(json_t *config, const char *want)
{
    char *dir = mz_tmpdir();
    json_t *cfg = mz_keep(mz_config_defaults(dir));
    mz_json_merge(cfg, config);
    char *path = mz_write_config(dir, "mizan.json", cfg);
    const char *argv[] = {mz_env("MIZAN_TEST_BIN"), "--config", path, NULL};
    mz_run_t *run = mz_run(argv, dir, NULL, 20000);
    cr_assert(run->status != 0 && run->status != -1, "mizand started (status %d) with a mis-scoped context:\n%s%s",
              run->status, run->out, run->err);
    cr_assert(strstr(run->err, want) != NULL || strstr(run->out, want) != NULL,
              "the start-up error does not say \"%s\":\n%s%s", want, run->out, run->err);
}

Test(guarantees_exec, mis_scoped_contexts_are_refused_at_startup)
{
    /* A public context over the blog's native whoami (auth true). */
    expect_refused_at_startup(
        mz_json("{\"contexts\": [{\"name\": \"me_public\", \"ttl\": 60, \"functions\": [\"whoami\"]}]}"),
        "context \"me_public\" is public-scoped but its function \"whoami\" requires a token");
    /* A public context over list_drafts (a permission). */
    expect_refused_at_startup(mz_json("{\"contexts\": [{\"name\": \"drafts_public\", \"ttl\": 60, \"scope\": "
                                      "\"public\", \"functions\": [\"list_drafts\"]}]}"),
                              "context \"drafts_public\" is public-scoped but its function \"list_drafts\" requires "
                              "staff, superuser or a permission");
    /* A perms context over an upstream function that forwards the caller's identity. */
    expect_refused_at_startup(
        mz_json("{\"upstreams\": {\"api\": {\"url\": \"http://127.0.0.1:9\"}},"
                " \"functions\": [{\"name\": \"up_get\", \"upstream\": {\"service\": \"api\", \"path\": \"/x\"}}],"
                " \"contexts\": [{\"name\": \"upc\", \"ttl\": 60, \"scope\": \"perms\", \"functions\": [\"up_get\"]}]}"),
        "context \"upc\" is perms-scoped but its function \"up_get\" forwards the caller's identity");
}

Test(guarantees_exec, upstream_function_without_identity_may_be_public)
{
    rawup_t *u = rawup_start();
    mz_gw_t *gw = start_raw_gateway(u);
    char *bob = mz_token(gw, "bob", NULL);
    /* "identity": false on the function: nothing of bob reaches the upstream. */
    mz_expect_json(mz_expect_result(mz_call(gw, "who_noid", NULL, bob)), "{\"who\": \"anon\", \"path\": \"/who\"}");
    mz_expect_json(mz_expect_result(mz_call(gw, "who", NULL, bob)), "{\"who\": \"bob\", \"path\": \"/who\"}");
    mz_gw_stop_ok(gw);
}

/* ------------------------------------------------------------------------
 * Item: per-function concurrency limits (BLOG_EXAMPLE rev 2: sleep and
 * slow_a..slow_d run at most 4 at a time)
 * ---------------------------------------------------------------------- */

/* A non-negative integer Retry-After (delta-seconds). */
static bool retry_after_ok(const mz_resp_t *r)
{
    const char *v = mz_header(r, "Retry-After");
    return v != NULL && v[0] != '\0' && strspn(v, "0123456789") == strlen(v);
}

/*
 * Floods sleep with n concurrent anonymous calls of ms each; while they run,
 * times one ping. Returns the ping's latency; *ok and *limited count the
 * sleeps answered 200 and 503 (each 503 checked for its envelope and
 * Retry-After, and for coming back at once).
 */
static double flood_sleep(const mz_gw_t *gw, size_t n, int ms, int *ok, int *limited)
{
    mz_req_t *reqs = mz_alloc(n * sizeof(*reqs));
    for (size_t i = 0; i < n; i++)
        reqs[i] = mz_call_req("sleep", mz_fmt("{\"ms\": %d}", ms), NULL);
    mz_batch_t *b = mz_batch_start(gw->port, n, reqs, 30000);
    cr_assert(mz_batch_wait_sent(b, n, 10000), "the %zu sleep calls were not all sent", n);
    mz_sleep_ms(300);
    mz_resp_t *ping = mz_call(gw, "ping", NULL, NULL);
    mz_expect_json(mz_expect_result(ping), "\"pong\"");
    mz_result_t *res = mz_batch_join(b);
    *ok = *limited = 0;
    for (size_t i = 0; i < n; i++) {
        cr_assert(res[i].resp != NULL, "sleep call %zu got no response: %s", i, res[i].err);
        mz_resp_t *r = res[i].resp;
        if (r->status == 200) {
            (*ok)++;
            continue;
        }
        mz_expect_error(r, 503, "UNAVAILABLE");
        cr_assert(retry_after_ok(r), "a 503 without a delta-seconds Retry-After:\n%s", mz_describe(r));
        cr_assert(res[i].end_ms - res[i].start_ms < ms / 2.0,
                  "a refused call waited %.0f ms instead of being refused at once",
                  res[i].end_ms - res[i].start_ms);
        (*limited)++;
    }
    return ping->elapsed_ms;
}

Test(guarantees_exec, sleep_flood_is_limited_and_never_delays_ping)
{
    mz_gw_t *gw = mz_gw_start(mz_json("{\"workers\": 8}"));
    int ok, limited;
    double ping_ms = flood_sleep(gw, 18, 3000, &ok, &limited);
    cr_log_info("ping under 18 concurrent 3000 ms sleeps (limit 4): %.1f ms", ping_ms);
    cr_assert(ok == 4 && limited == 14, "expected 4 sleeps to run and 14 to be refused, got %d and %d", ok, limited);
    cr_assert(ping_ms < 1000, "ping took %.0f ms while the sleeps ran", ping_ms);
    cr_assert_eq(mz_metric(gw, "mizan_function_limited_total{function=\"sleep\"}"), 14);
    cr_assert_eq(mz_metric(gw, "mizan_function_runs_total{function=\"sleep\"}"), 4);
    /* The slots come back: the next sleep runs. */
    mz_expect_json(mz_expect_result(mz_call(gw, "sleep", "{\"ms\": 1}", NULL)), "{\"slept_ms\": 1}");
    mz_gw_stop_ok(gw);
}

Test(guarantees_exec, operator_override_sets_a_functions_limit)
{
    mz_gw_t *gw = mz_gw_start(mz_json("{\"workers\": 8, \"max_concurrency\": {\"sleep\": 2}}"));
    int ok, limited;
    flood_sleep(gw, 6, 1500, &ok, &limited);
    cr_assert(ok == 2 && limited == 4, "limit 2: expected 2 runs and 4 refusals, got %d and %d", ok, limited);
    mz_gw_stop_ok(gw);
    /* An unknown name is a start-up error naming the field. */
    expect_refused_at_startup(mz_json("{\"max_concurrency\": {\"no_such_fn\": 3}}"),
                              "field \"max_concurrency.no_such_fn\": no function \"no_such_fn\" is registered");
    expect_refused_at_startup(mz_json("{\"max_concurrency\": {\"sleep\": -1}}"), "field \"max_concurrency.sleep\"");
}

Test(guarantees_exec, a_context_past_the_limit_reports_the_slot_as_unavailable)
{
    mz_gw_t *gw = mz_gw_start(mz_json("{\"workers\": 16}"));
    enum { N = 4 };
    mz_req_t reqs[N];
    for (size_t i = 0; i < N; i++)
        reqs[i] = (mz_req_t){.method = "GET", .path = "/api/mizan/ctx/fanout/?ms=2500"};
    mz_batch_t *b = mz_batch_start(gw->port, N, reqs, 30000);
    cr_assert(mz_batch_wait_sent(b, N, 10000));
    mz_sleep_ms(400);
    /* Four fanouts hold every slot of slow_a..slow_d: a fifth gets UNAVAILABLE in each slot, at once. */
    mz_resp_t *r = mz_get(gw, "/api/mizan/ctx/fanout/?ms=2500", NULL);
    cr_assert(r->status == 200, "%s", mz_describe(r));
    cr_assert(r->elapsed_ms < 1500, "the refused context waited %.0f ms", r->elapsed_ms);
    cr_assert_str_eq(mz_header(r, "X-Mizan-Cache"), "BYPASS");
    mz_expect_json(json_object_get(r->json, "data"), "{}");
    const char *fns[] = {"slow_a", "slow_b", "slow_c", "slow_d"};
    for (size_t i = 0; i < 4; i++) {
        json_t *e = json_object_get(json_object_get(r->json, "errors"), fns[i]);
        cr_assert_str_eq(json_string_value(json_object_get(e, "code")), "UNAVAILABLE", "%s: %s", fns[i], r->body);
    }
    mz_result_t *res = mz_batch_join(b);
    for (size_t i = 0; i < N; i++) {
        cr_assert(res[i].resp != NULL && res[i].resp->status == 200, "fanout %zu: %s", i,
                  res[i].resp != NULL ? mz_describe(res[i].resp) : res[i].err);
        mz_expect_json(json_object_get(res[i].resp->json, "errors"), "{}");
    }
    mz_gw_stop_ok(gw);
}

/* ------------------------------------------------------------------------
 * The blog's maintained per-author post count (get_author without a scan)
 * ---------------------------------------------------------------------- */

/* get_author's result for post_id, as a call (never cached). */
static json_t *author_of(const mz_gw_t *gw, long long post_id)
{
    return mz_expect_result(mz_call(gw, "get_author", mz_fmt("{\"post_id\": %lld}", post_id), NULL));
}

Test(guarantees_exec, blog_author_counts_follow_every_write_and_restart)
{
    char *dir = mz_tmpdir();
    mz_gw_opts_t opts = {.dir = dir};
    mz_gw_t *gw = mz_gw_start_opts(&opts);
    char *alice = mz_token(gw, "alice", NULL);
    char *bob = mz_token(gw, "bob", NULL);
    char *staff = mz_token(gw, "root", "--staff", NULL);
    mz_expect_json(author_of(gw, 1), "{\"name\": \"alice\", \"posts\": 3}");
    json_t *p4 = mz_expect_mutation(mz_call(gw, "create_post", "{\"title\": \"a4\", \"body\": \"b\"}", alice));
    mz_expect_mutation(mz_call(gw, "create_post", "{\"title\": \"a5\", \"body\": \"b\", \"published\": false}", alice));
    mz_expect_json(author_of(gw, 1), "{\"name\": \"alice\", \"posts\": 5}");
    json_t *pb = mz_expect_mutation(mz_call(gw, "create_post", "{\"title\": \"b1\", \"body\": \"b\"}", bob));
    long long bob_post = json_integer_value(json_object_get(pb, "id"));
    mz_expect_json(author_of(gw, bob_post), "{\"name\": \"bob\", \"posts\": 1}");
    long long a4 = json_integer_value(json_object_get(p4, "id"));
    mz_expect_mutation(mz_call(gw, "delete_post", mz_fmt("{\"post_id\": %lld}", a4), staff));
    mz_expect_json(author_of(gw, 1), "{\"name\": \"alice\", \"posts\": 4}");
    mz_expect_json(author_of(gw, bob_post), "{\"name\": \"bob\", \"posts\": 1}");
    mz_gw_stop_ok(gw);
    /* A restart on the same file keeps the counts (no second backfill, no drift). */
    gw = mz_gw_start_opts(&opts);
    mz_expect_json(author_of(gw, 1), "{\"name\": \"alice\", \"posts\": 4}");
    mz_expect_json(author_of(gw, bob_post), "{\"name\": \"bob\", \"posts\": 1}");
    mz_gw_stop_ok(gw);
}

Test(guarantees_exec, config_declared_upstream_function_limit)
{
    rawup_t *u = rawup_start();
    mz_gw_t *gw = start_raw_gateway(u);
    enum { N = 5 };
    mz_req_t reqs[N];
    for (size_t i = 0; i < N; i++)
        reqs[i] = mz_call_req("slow_up", NULL, NULL);
    mz_result_t *res = mz_parallel(gw->port, N, reqs, 20000);
    int ok = 0, limited = 0;
    for (size_t i = 0; i < N; i++) {
        cr_assert(res[i].resp != NULL, "call %zu: %s", i, res[i].err);
        if (res[i].resp->status == 200) {
            mz_expect_json(mz_expect_result(res[i].resp), "{\"who\": \"anon\", \"path\": \"/slow\"}");
            ok++;
            continue;
        }
        mz_expect_error(res[i].resp, 503, "UNAVAILABLE");
        cr_assert(retry_after_ok(res[i].resp), "%s", mz_describe(res[i].resp));
        cr_assert(res[i].end_ms - res[i].start_ms < 700, "a refused call waited %.0f ms",
                  res[i].end_ms - res[i].start_ms);
        limited++;
    }
    cr_assert(ok == 2 && limited == 3, "max_concurrency 2: expected 2 answers and 3 refusals, got %d and %d", ok,
              limited);
    cr_assert_eq(atomic_load(&u->requests), 2, "refused calls must not reach the upstream");
    cr_assert_eq(mz_metric(gw, "mizan_function_limited_total{function=\"slow_up\"}"), 3);
    mz_gw_stop_ok(gw);
}
