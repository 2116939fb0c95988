/*
 * test_support.c - checks of the e2e harness itself, so that a gateway
 * failure reported by the other e2e tests is never a harness bug: the
 * HTTP client's framing (chunked, 1xx, close-delimited, keep-alive,
 * timeouts) and the event-stream reader against a scripted loopback server, command running (exit
 * codes, output capture, timeouts, environment scrubbing), the redis-server
 * launcher, and that a test process dying abruptly takes its children
 * with it.
 */
#include <criterion/criterion.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

TestSuite(support, .init = mz_setup, .fini = mz_teardown, .timeout = 60);

/* ------------------------------------------------------------------------
 * A scripted HTTP server: for each request head received, writes the next
 * canned reply; a NULL reply means "say nothing and keep the connection".
 * ---------------------------------------------------------------------- */

typedef struct script {
    int listen_fd;               /* bound loopback listener */
    int port;                    /* its port */
    const char *const *replies;  /* nreplies canned replies; NULL: stay silent 1 s */
    size_t nreplies;             /* number of replies */
    bool close_after;            /* close the connection after the last reply */
    pthread_t thread;            /* the server thread */
} script_t;

/* Reads until a blank line ends a request head; false on EOF or 5 s timeout. */
static bool read_head(int fd)
{
    char buf[4096];
    size_t len = 0;
    while (len < sizeof(buf) - 1) {
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, 5000) <= 0)
            return false;
        ssize_t n = recv(fd, buf + len, sizeof(buf) - 1 - len, 0);
        if (n <= 0)
            return false;
        len += (size_t)n;
        buf[len] = '\0';
        if (strstr(buf, "\r\n\r\n") != NULL)
            return true;
    }
    return false;
}

static void *script_main(void *arg)
{
    script_t *s = arg;
    int fd = accept(s->listen_fd, NULL, NULL);
    if (fd < 0)
        return NULL;
    for (size_t i = 0; i < s->nreplies; i++) {
        if (!read_head(fd))
            break;
        const char *reply = s->replies[i];
        if (reply == NULL) {
            mz_sleep_ms(1000);
            continue;
        }
        size_t off = 0, len = strlen(reply);
        while (off < len) {
            ssize_t n = send(fd, reply + off, len - off, MSG_NOSIGNAL);
            if (n <= 0)
                break;
            off += (size_t)n;
        }
    }
    if (!s->close_after)
        mz_sleep_ms(500);
    close(fd);
    return NULL;
}

static script_t *script_start(const char *const *replies, size_t n, bool close_after)
{
    script_t *s = mz_alloc(sizeof(*s));
    s->replies = replies;
    s->nreplies = n;
    s->close_after = close_after;
    s->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert(s->listen_fd >= 0);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t sl = sizeof(sa);
    cr_assert(bind(s->listen_fd, (struct sockaddr *)&sa, sizeof(sa)) == 0);
    cr_assert(listen(s->listen_fd, 4) == 0);
    cr_assert(getsockname(s->listen_fd, (struct sockaddr *)&sa, &sl) == 0);
    s->port = ntohs(sa.sin_port);
    cr_assert(pthread_create(&s->thread, NULL, script_main, s) == 0);
    return s;
}

static void script_join(script_t *s)
{
    pthread_join(s->thread, NULL);
    close(s->listen_fd);
}

Test(support, http_client_framing_and_keepalive)
{
    const char *replies[] = {
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Test: one\r\n\r\n"
        "5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nTrailer: x\r\n\r\n",
        "HTTP/1.1 100 Continue\r\n\r\n"
        "HTTP/1.1 404 Not Found\r\nContent-Length: 15\r\nx-lower:  padded  \r\n\r\n"
        "{\"error\": null}",
        "HTTP/1.1 204 No Content\r\n\r\n",
        "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n[1, 2, 3]",
    };
    script_t *s = script_start(replies, 4, true);
    mz_conn_t *c = mz_connect(s->port);
    mz_req_t get = {.method = "GET", .path = "/a"};

    mz_resp_t *r = mz_request(c, &get);
    cr_assert_eq(r->status, 200);
    cr_assert_str_eq(r->body, "hello world");
    cr_assert_eq(r->body_len, 11);
    cr_assert_str_eq(mz_header(r, "x-test"), "one");
    cr_assert_null(r->json, "a non-JSON body parses to NULL");

    r = mz_request(c, &get);
    cr_assert_eq(r->status, 404, "the 100 Continue is skipped");
    cr_assert_str_eq(r->reason, "Not Found");
    cr_assert_str_eq(mz_header(r, "X-Lower"), "padded");
    cr_assert(json_is_object(r->json) && json_is_null(json_object_get(r->json, "error")));

    r = mz_request(c, &get);
    cr_assert_eq(r->status, 204);
    cr_assert_eq(r->body_len, 0);
    cr_assert(!c->peer_closed);

    r = mz_request(c, &get);
    cr_assert_eq(r->status, 200);
    mz_expect_json(r->json, "[1, 2, 3]");
    cr_assert(c->peer_closed, "Connection: close is noted");
    script_join(s);
}

Test(support, sse_frames_across_chunks)
{
    const char *replies[] = {
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
        "25\r\nretry: 2000\n: connected\n\nevent: inval\r\n"
        "1a\r\nidate\ndata: {\"context\":\"po\r\n"
        "6\r\nst\"}\n\n\r\n"
        "2e\r\nevent: other\ndata: 1\n\nevent: invalidate\ndata: \r\n"
        "c\r\n{\"context\":\"\r\n"
        "a\r\nfeed\"}\n\n: \r\n"
        "a\r\nheartbeat\n\r\n"
        "1\r\n\n\r\n"
        "0\r\n\r\n",
    };
    script_t *s = script_start(replies, 1, true);
    mz_gw_t fake = {.port = s->port, .log_path = "/dev/null"};
    mz_resp_t *head = NULL;
    mz_stream_t *st = mz_stream_open(&fake, "/events", NULL, NULL, &head);
    cr_assert_eq(head->status, 200);
    mz_expect_json(mz_stream_next_event(st, "invalidate", 2000), "{\"context\": \"post\"}");
    mz_expect_json(mz_stream_next_event(st, "invalidate", 2000), "{\"context\": \"feed\"}");
    char *frame = mz_stream_next_frame(st, 2000);
    cr_assert_str_eq(frame, ": heartbeat\n\n");
    cr_assert_null(mz_stream_next_frame(st, 500), "the stream ended with the last chunk");
    cr_assert(mz_stream_closed(st, 1000));
    script_join(s);
}

Test(support, http_client_times_out)
{
    const char *replies[] = {NULL};
    script_t *s = script_start(replies, 1, true);
    mz_conn_t *c = mz_connect(s->port);
    c->timeout_ms = 300;
    mz_req_t get = {.method = "GET", .path = "/silent"};
    mz_resp_t *r = NULL;
    char err[256] = "";
    double t0 = mz_now_ms();
    cr_assert_eq(mz_try_request(c, &get, &r, err, sizeof(err)), -1);
    double took = mz_now_ms() - t0;
    cr_assert(took >= 290 && took < 2000, "timed out after %.1f ms", took);
    cr_assert(strstr(err, "timeout") != NULL, "%s", err);
    script_join(s);
}

Test(support, http_request_serialisation)
{
    /* The server echoes nothing useful; we check what the client sends. */
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t sl = sizeof(sa);
    cr_assert(bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) == 0 && listen(lfd, 1) == 0);
    getsockname(lfd, (struct sockaddr *)&sa, &sl);
    mz_conn_t *c = mz_connect(ntohs(sa.sin_port));
    int sfd = accept(lfd, NULL, NULL);
    cr_assert(sfd >= 0);
    const char *hdrs[] = {"X-Request-Id: abc", NULL};
    mz_req_t req = mz_call_req("add", "{\"a\":1}", "tok.en.sig");
    req.headers = hdrs;
    char err[256];
    cr_assert(mz_try_send(c, &req, err, sizeof(err)) == 0, "%s", err);
    char buf[2048] = "";
    size_t len = 0;
    while (strstr(buf, "{\"function\":\"add\",\"args\":{\"a\":1}}") == NULL && len < sizeof(buf) - 1) {
        ssize_t n = recv(sfd, buf + len, sizeof(buf) - 1 - len, 0);
        cr_assert(n > 0);
        len += (size_t)n;
        buf[len] = '\0';
    }
    cr_assert(strncmp(buf, "POST /api/mizan/call/ HTTP/1.1\r\n", 32) == 0, "%s", buf);
    cr_assert(strstr(buf, "\r\nAuthorization: Bearer tok.en.sig\r\n") != NULL, "%s", buf);
    cr_assert(strstr(buf, "\r\nX-Request-Id: abc\r\n") != NULL, "%s", buf);
    cr_assert(strstr(buf, "\r\nContent-Type: application/json\r\n") != NULL, "%s", buf);
    cr_assert(strstr(buf, "\r\nContent-Length: 33\r\n") != NULL, "%s", buf);
    cr_assert(strstr(buf, "\r\n\r\n{\"function\":\"add\",\"args\":{\"a\":1}}") != NULL, "%s", buf);
    close(sfd);
    close(lfd);
}

/* ------------------------------------------------------------------------
 * Commands and processes
 * ---------------------------------------------------------------------- */

Test(support, run_captures_status_output_and_env)
{
    const char *argv[] = {"/bin/sh", "-c", "echo out; echo err >&2; exit 3", NULL};
    mz_run_t *run = mz_run(argv, NULL, NULL, 5000);
    cr_assert_eq(run->status, 3);
    cr_assert_str_eq(run->out, "out\n");
    cr_assert_str_eq(run->err, "err\n");

    setenv("MIZAN_WORKERS", "3", 1);
    const char *env[] = {"FOO=bar", "MIZAN_LISTEN=127.0.0.1:9", NULL};
    const char *show[] = {"/bin/sh", "-c",
                          "echo \"$FOO ${MIZAN_WORKERS:-unset} $MIZAN_LISTEN ${MIZAN_TEST_BIN:+kept}\"; pwd",
                          NULL};
    char *dir = mz_tmpdir();
    run = mz_run(show, dir, env, 5000);
    cr_assert_eq(run->status, 0);
    cr_assert_str_eq(run->out, mz_fmt("bar unset 127.0.0.1:9 %s\n%s\n",
                                      getenv("MIZAN_TEST_BIN") ? "kept" : "", dir));

    const char *slow[] = {"/bin/sleep", "10", NULL};
    run = mz_run(slow, NULL, NULL, 300);
    cr_assert_eq(run->status, -1, "a command past its timeout reports -1");
    cr_assert(run->elapsed_ms < 3000, "%.1f ms", run->elapsed_ms);

    const char *killed[] = {"/bin/sh", "-c", "kill -9 $$", NULL};
    run = mz_run(killed, NULL, NULL, 5000);
    cr_assert_eq(run->status, 128 + 9);
}

/* True when pid no longer runs (gone, or a zombie waiting for its reaper). */
static bool process_gone(pid_t pid)
{
    char *stat = mz_read_file(mz_fmt("/proc/%d/stat", (int)pid));
    if (stat == NULL)
        return true;
    const char *close_paren = strrchr(stat, ')');
    return close_paren != NULL && (close_paren[2] == 'Z' || close_paren[2] == 'X');
}

Test(support, children_die_with_the_test_process)
{
    /* What the crashing process reports: its child's pid and temp dir. */
    struct {
        pid_t pid;
        char dir[512];
    } report;
    memset(&report, 0, sizeof(report));
    int pfd[2];
    cr_assert(pipe(pfd) == 0);
    pid_t tester = fork();
    cr_assert(tester >= 0);
    if (tester == 0) {
        /* A test process that starts a long-running child (redis-server
         * runs until killed) and is then killed without any teardown, as a
         * crash or a Criterion timeout would. */
        close(pfd[0]);
        mz_setup();
        mz_redis_t *r = mz_redis_start();
        report.pid = r->pid;
        snprintf(report.dir, sizeof(report.dir), "%s", r->dir);
        ssize_t w = write(pfd[1], &report, sizeof(report));
        (void)w;
        kill(getpid(), SIGKILL);
        _exit(1);
    }
    close(pfd[1]);
    ssize_t n = read(pfd[0], &report, sizeof(report));
    close(pfd[0]);
    int st;
    waitpid(tester, &st, 0);
    cr_assert(n == (ssize_t)sizeof(report) && report.pid > 0, "the crashing child did not report");
    char *leftover = mz_tmpdir();
    /* The killed process could not remove its temp dir: let ours go with it. */
    cr_assert(rename(report.dir, mz_fmt("%s/leftover", leftover)) == 0, "%s: %s", report.dir,
              strerror(errno));
    double deadline = mz_now_ms() + 5000;
    while (!process_gone(report.pid) && mz_now_ms() < deadline)
        mz_sleep_ms(20);
    bool gone = process_gone(report.pid);
    if (!gone)
        kill(report.pid, SIGKILL);
    cr_assert(gone, "redis-server pid %d outlived the test process that started it",
              (int)report.pid);
}

/* ------------------------------------------------------------------------
 * redis-server
 * ---------------------------------------------------------------------- */

Test(support, redis_launcher_and_commands)
{
    mz_redis_t *r = mz_redis_start();
    cr_assert(r->port > 0);
    cr_assert_str_eq(r->url, mz_fmt("redis://127.0.0.1:%d", r->port));
    const char *set[] = {"SET", "mizan:k", "v a l", NULL};
    mz_expect_json(mz_redis_cmd(r, set), "\"OK\"");
    const char *get[] = {"GET", "mizan:k", NULL};
    mz_expect_json(mz_redis_cmd(r, get), "\"v a l\"");
    const char *incr[] = {"INCR", "mizan:n", NULL};
    mz_expect_json(mz_redis_cmd(r, incr), "1");
    mz_expect_json(mz_redis_cmd(r, incr), "2");
    const char *missing[] = {"GET", "nope", NULL};
    mz_expect_json(mz_redis_cmd(r, missing), "null");
    const char *mget[] = {"MGET", "mizan:k", "nope", "mizan:n", NULL};
    mz_expect_json(mz_redis_cmd(r, mget), "[\"v a l\", null, \"2\"]");
    const char *bad[] = {"NOSUCHCOMMAND", NULL};
    json_t *err = mz_redis_cmd(r, bad);
    cr_assert(json_is_string(json_object_get(err, "error")), "%s", mz_dump(err));
    const char *save[] = {"CONFIG", "GET", "save", NULL};
    mz_expect_json(mz_redis_cmd(r, save), "[\"save\", \"\"]");

    int port = r->port;
    mz_redis_stop(r);
    char why[256];
    cr_assert_null(mz_try_connect(port, 1000, why, sizeof(why)), "redis still listening after stop");
}
