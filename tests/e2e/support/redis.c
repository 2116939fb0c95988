/*
 * redis.c - a throw-away redis-server for the e2e tests (free loopback
 * port, no persistence, its own temp dir) and a minimal RESP client to
 * inspect what the gateway stored or published.
 */
#include "harness.h"
#include "internal.h"

#include <criterion/criterion.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int mz_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert(fd >= 0, "socket: %s", strerror(errno));
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = 0;
    socklen_t len = sizeof(sa);
    int ok = bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
             getsockname(fd, (struct sockaddr *)&sa, &len) == 0;
    int e = errno;
    close(fd);
    cr_assert(ok, "bind 127.0.0.1:0: %s", strerror(e));
    return ntohs(sa.sin_port);
}

/* Full path of an executable found in PATH (arena string), or NULL. */
static char *which(const char *name)
{
    const char *path = getenv("PATH");
    if (path == NULL || path[0] == '\0')
        path = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin";
    const char *p = path;
    while (*p != '\0') {
        const char *colon = strchr(p, ':');
        size_t n = colon ? (size_t)(colon - p) : strlen(p);
        char *cand = mz_fmt("%.*s/%s", (int)n, n ? p : ".", name);
        if (access(cand, X_OK) == 0)
            return cand;
        if (colon == NULL)
            break;
        p = colon + 1;
    }
    return NULL;
}

/* ------------------------------------------------------------------------
 * RESP
 * ---------------------------------------------------------------------- */

/* Parses one reply at c->buf[*pos], reading as needed; new reference or NULL. */
static json_t *parse_reply(mz_conn_t *c, size_t *pos, double deadline, char *err, size_t errlen,
                           int depth)
{
    if (depth > 16) {
        snprintf(err, errlen, "reply nested too deep");
        return NULL;
    }
    const char *eol;
    for (;;) {
        eol = c->len > *pos ? memmem(c->buf + *pos, c->len - *pos, "\r\n", 2) : NULL;
        if (eol != NULL)
            break;
        long n = mz_conn_fill(c, deadline, err, errlen);
        if (n <= 0) {
            if (n == 0)
                snprintf(err, errlen, "connection closed mid-reply");
            return NULL;
        }
    }
    char type = c->buf[*pos];
    char *line = mz_xstrndup(c->buf + *pos + 1, (size_t)(eol - (c->buf + *pos + 1)));
    *pos = (size_t)(eol - c->buf) + 2;
    json_t *out = NULL;
    long long n = 0;
    switch (type) {
    case '+':
        out = json_string(line);
        break;
    case '-':
        out = json_pack("{s:s}", "error", line);
        break;
    case ':':
        out = json_integer(strtoll(line, NULL, 10));
        break;
    case '$':
        n = strtoll(line, NULL, 10);
        if (n < 0) {
            out = json_null();
            break;
        }
        while (c->len < *pos + (size_t)n + 2) {
            long got = mz_conn_fill(c, deadline, err, errlen);
            if (got <= 0) {
                if (got == 0)
                    snprintf(err, errlen, "connection closed mid-reply");
                free(line);
                return NULL;
            }
        }
        out = json_stringn_nocheck(c->buf + *pos, (size_t)n);
        *pos += (size_t)n + 2;
        break;
    case '*':
        n = strtoll(line, NULL, 10);
        if (n < 0) {
            out = json_null();
            break;
        }
        out = json_array();
        for (long long i = 0; out != NULL && i < n; i++) {
            json_t *item = parse_reply(c, pos, deadline, err, errlen, depth + 1);
            if (item == NULL) {
                json_decref(out);
                out = NULL;
                free(line);
                return NULL;
            }
            json_array_append_new(out, item);
        }
        break;
    default:
        snprintf(err, errlen, "unknown RESP type byte 0x%02x", (unsigned char)type);
        free(line);
        return NULL;
    }
    free(line);
    if (out == NULL)
        mz_oom(0);
    return out;
}

/* Runs one command on a fresh raw connection; new reference or NULL + err. */
static json_t *command(int port, const char *const *argv, int timeout_ms, char *err, size_t errlen)
{
    struct mz_conn *c = mz_conn_open_raw(port, timeout_ms, err, errlen);
    if (c == NULL)
        return NULL;
    size_t argc = 0;
    while (argv[argc] != NULL)
        argc++;
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (f == NULL)
        mz_oom(0);
    fprintf(f, "*%zu\r\n", argc);
    for (size_t i = 0; i < argc; i++)
        fprintf(f, "$%zu\r\n%s\r\n", strlen(argv[i]), argv[i]);
    if (fclose(f) != 0)
        mz_oom(len);
    json_t *reply = NULL;
    double deadline = mz_now_ms() + timeout_ms;
    size_t off = 0;
    while (off < len) {
        ssize_t n = send(c->fd, text + off, len - off, MSG_NOSIGNAL);
        if (n > 0) {
            off += (size_t)n;
        } else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
            if (mz_now_ms() > deadline) {
                snprintf(err, errlen, "send timed out");
                goto done;
            }
            mz_sleep_ms(1);
        } else {
            snprintf(err, errlen, "send: %s", strerror(errno));
            goto done;
        }
    }
    size_t pos = 0;
    reply = parse_reply(c, &pos, deadline, err, errlen, 0);
done:
    free(text);
    mz_conn_free_raw(c);
    return reply;
}

json_t *mz_redis_cmd(const mz_redis_t *r, const char *const *argv)
{
    char err[256] = "";
    json_t *reply = command(r->port, argv, 10000, err, sizeof(err));
    cr_assert(reply != NULL, "redis command %s on port %d: %s", argv[0], r->port, err);
    return mz_keep(reply);
}

/* ------------------------------------------------------------------------
 * The server process
 * ---------------------------------------------------------------------- */

static void redis_cleanup(void *p)
{
    mz_redis_stop(p);
}

void mz_redis_stop(mz_redis_t *r)
{
    if (r == NULL || r->exited)
        return;
    int st;
    kill(r->pid, SIGTERM);
    if (mz_reap(r->pid, 5000, &st) == 0) {
        kill(r->pid, SIGKILL);
        mz_reap(r->pid, 5000, &st);
    }
    r->exited = true;
}

mz_redis_t *mz_redis_start(void)
{
    char *server = which("redis-server");
    cr_assert(server != NULL,
              "redis-server is not installed or not in PATH: the e2e tests need it "
              "(Debian: apt-get install redis-server)");
    mz_redis_t *r = mz_alloc(sizeof(*r));
    r->dir = mz_tmpdir();
    r->log_path = mz_fmt("%s/redis.log", r->dir);

    for (int attempt = 1; attempt <= 3; attempt++) {
        r->port = mz_free_port();
        r->url = mz_fmt("redis://127.0.0.1:%d", r->port);
        char *port = mz_fmt("%d", r->port);
        const char *argv[] = {server,     "--port",       port,     "--bind", "127.0.0.1",
                              "--save",   "",             "--appendonly", "no", "--dir",
                              r->dir,     "--daemonize",  "no",     NULL};
        int logfd = open(r->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
        cr_assert(logfd >= 0, "open %s: %s", r->log_path, strerror(errno));
        char why[256] = "";
        r->pid = mz_spawn(argv, r->dir, NULL, logfd, logfd, why, sizeof(why));
        close(logfd);
        cr_assert(r->pid > 0, "cannot start redis-server: %s", why);
        r->exited = false;
        if (attempt == 1)
            mz_own(r, redis_cleanup, MZ_PHASE_PROC);

        double deadline = mz_now_ms() + 10000;
        while (mz_now_ms() < deadline) {
            int st;
            if (mz_reap(r->pid, 0, &st) == 1) {
                r->exited = true;
                break; /* probably lost the port race: try another port */
            }
            char err[256];
            const char *ping[] = {"PING", NULL};
            json_t *reply = command(r->port, ping, 1000, err, sizeof(err));
            bool pong = json_is_string(reply) && strcmp(json_string_value(reply), "PONG") == 0;
            json_decref(reply);
            if (pong)
                return r;
            mz_sleep_ms(20);
        }
        if (!r->exited) {
            mz_redis_stop(r);
            cr_assert_fail("redis-server on port %d did not answer PING within 10 s\n%s", r->port,
                           mz_read_file(r->log_path));
        }
    }
    cr_assert_fail("redis-server exited at start three times\n%s", mz_read_file(r->log_path));
    return NULL;
}
