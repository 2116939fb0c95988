/*
 * test_redis.c - the Redis layer (src/redis.c) against a real redis-server
 * started by each test on a free loopback port in a temporary directory:
 * URL parsing, lookups, stores, invalidations (INCR, EXPIRE, PUBLISH), the
 * subscription, AUTH (password and ACL user) with SELECT, Redis killed and
 * restarted (the replay queue), Redis paused (command timeouts), and freeing
 * a connection with commands in flight. Each test drives its own event_base
 * in the test thread; Redis state is checked over a plain blocking socket.
 */
#include <criterion/criterion.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/thread.h>

#include "log.h"
#include "redis.h"

/* ------------------------------------------------------------------------ */
/* A blocking RESP client for checking what Redis holds                     */
/* ------------------------------------------------------------------------ */

typedef struct rr {
    char type;      /* '+', '-', ':', '$', '*', or 'n' for a nil */
    long long num;  /* ':' */
    char *str;      /* '+', '-', '$' (NUL-terminated copy) */
    size_t len;
    size_t n;       /* '*' */
    struct rr **el;
} rr_t;

typedef struct raw {
    int fd;
    char buf[8192];
    size_t pos, end;
} raw_t;

static raw_t *raw_open(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return NULL;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct timeval tv = {.tv_sec = 3};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        close(fd);
        return NULL;
    }
    raw_t *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        close(fd);
        return NULL;
    }
    c->fd = fd;
    return c;
}

static void raw_close(raw_t *c)
{
    if (c != NULL) {
        close(c->fd);
        free(c);
    }
}

static int raw_byte(raw_t *c)
{
    if (c->pos == c->end) {
        ssize_t n = read(c->fd, c->buf, sizeof(c->buf));
        if (n <= 0)
            return -1;
        c->pos = 0;
        c->end = (size_t)n;
    }
    return (unsigned char)c->buf[c->pos++];
}

/* Reads a line without its CRLF; -1 on EOF, timeout or overflow. */
static int raw_line(raw_t *c, char *out, size_t cap)
{
    size_t o = 0;
    for (;;) {
        int b = raw_byte(c);
        if (b < 0)
            return -1;
        if (b == '\r') {
            if (raw_byte(c) != '\n')
                return -1;
            out[o] = '\0';
            return 0;
        }
        if (o + 1 >= cap)
            return -1;
        out[o++] = (char)b;
    }
}

static void rr_free(rr_t *r)
{
    if (r == NULL)
        return;
    for (size_t i = 0; i < r->n; i++)
        rr_free(r->el[i]);
    free(r->el);
    free(r->str);
    free(r);
}

static rr_t *raw_read(raw_t *c)
{
    char line[512];
    if (raw_line(c, line, sizeof(line)) != 0)
        return NULL;
    rr_t *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return NULL;
    r->type = line[0];
    switch (line[0]) {
    case '+':
    case '-':
        r->str = strdup(line + 1);
        r->len = strlen(line + 1);
        return r;
    case ':':
        r->num = strtoll(line + 1, NULL, 10);
        return r;
    case '$': {
        long long len = strtoll(line + 1, NULL, 10);
        if (len < 0) {
            r->type = 'n';
            return r;
        }
        r->str = malloc((size_t)len + 1);
        r->len = (size_t)len;
        for (long long i = 0; i < len + 2; i++) {
            int b = raw_byte(c);
            if (b < 0) {
                rr_free(r);
                return NULL;
            }
            if (i < len)
                r->str[i] = (char)b;
        }
        r->str[len] = '\0';
        return r;
    }
    case '*': {
        long long n = strtoll(line + 1, NULL, 10);
        if (n < 0) {
            r->type = 'n';
            return r;
        }
        r->el = calloc((size_t)n + 1, sizeof(*r->el));
        for (long long i = 0; i < n; i++) {
            r->el[i] = raw_read(c);
            r->n = (size_t)i + 1;
            if (r->el[i] == NULL) {
                rr_free(r);
                return NULL;
            }
        }
        return r;
    }
    default:
        rr_free(r);
        return NULL;
    }
}

static int raw_send(raw_t *c, int argc, const char **argv, const size_t *lens)
{
    char head[64];
    int hl = snprintf(head, sizeof(head), "*%d\r\n", argc);
    if (write(c->fd, head, (size_t)hl) != hl)
        return -1;
    for (int i = 0; i < argc; i++) {
        hl = snprintf(head, sizeof(head), "$%zu\r\n", lens[i]);
        if (write(c->fd, head, (size_t)hl) != hl || write(c->fd, argv[i], lens[i]) != (ssize_t)lens[i] ||
            write(c->fd, "\r\n", 2) != 2)
            return -1;
    }
    return 0;
}

/* Sends a command of NUL-terminated words (list ends with NULL) and reads the reply (new). */
static rr_t *raw_cmd(raw_t *c, ...)
{
    const char *argv[16];
    size_t lens[16];
    int argc = 0;
    va_list ap;
    va_start(ap, c);
    for (const char *a; argc < 16 && (a = va_arg(ap, const char *)) != NULL;) {
        argv[argc] = a;
        lens[argc++] = strlen(a);
    }
    va_end(ap);
    if (raw_send(c, argc, argv, lens) != 0)
        return NULL;
    return raw_read(c);
}

/* Runs a command that must answer +OK. */
static void raw_ok(raw_t *c, const char *what, rr_t *r)
{
    cr_assert_not_null(r, "%s: no reply", what);
    cr_assert(r->type == '+' && strcmp(r->str, "OK") == 0, "%s: %c%s", what, r->type, r->str ? r->str : "");
    rr_free(r);
    (void)c;
}

/* GET key as an integer (0 when missing). */
static long long raw_get_int(raw_t *c, const char *key)
{
    rr_t *r = raw_cmd(c, "GET", key, NULL);
    cr_assert_not_null(r, "GET %s: no reply", key);
    long long v = r->type == 'n' ? 0 : strtoll(r->str, NULL, 10);
    cr_assert(r->type == 'n' || r->type == '$', "GET %s: type %c", key, r->type);
    rr_free(r);
    return v;
}

static long long raw_int_cmd(raw_t *c, const char *cmd, const char *key)
{
    rr_t *r = raw_cmd(c, cmd, key, NULL);
    cr_assert_not_null(r, "%s %s: no reply", cmd, key);
    cr_assert_eq(r->type, ':', "%s %s: type %c %s", cmd, key, r->type, r->str ? r->str : "");
    long long v = r->num;
    rr_free(r);
    return v;
}

/* ------------------------------------------------------------------------ */
/* redis-server processes                                                   */
/* ------------------------------------------------------------------------ */

typedef struct srv {
    pid_t pid;
    int port;
    const char *extra[8]; /* extra arguments, NULL-terminated */
} srv_t;

static struct {
    char dir[64];
    struct event_base *base;
    struct event *tick;
    srv_t srv;
    mizan_redis_shared_t *shared;
    mizan_redis_t *conns[4];
    int nconns;
    int saved_stderr;
} T = {.saved_stderr = -1};

static long long mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static bool in_path(const char *prog)
{
    const char *path = getenv("PATH");
    if (path == NULL)
        path = "/usr/local/bin:/usr/bin:/bin";
    char buf[4096];
    while (*path != '\0') {
        size_t n = strcspn(path, ":");
        snprintf(buf, sizeof(buf), "%.*s/%s", (int)n, path, prog);
        if (access(buf, X_OK) == 0)
            return true;
        path += n;
        if (*path == ':')
            path++;
    }
    return false;
}

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert(fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    socklen_t len = sizeof(sa);
    cr_assert_eq(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    close(fd);
    return ntohs(sa.sin_port);
}

/* Starts redis-server on s->port (a new free one when 0) and waits for it to answer. */
static void srv_start(srv_t *s)
{
    cr_assert(in_path("redis-server"),
              "redis-server is not installed (not found in PATH): install the redis-server package to run these tests");
    if (s->port == 0)
        s->port = free_port();
    char port[16], log[128];
    snprintf(port, sizeof(port), "%d", s->port);
    snprintf(log, sizeof(log), "%s/redis.log", T.dir);
    const char *argv[32] = {"redis-server", "--port", port, "--bind", "127.0.0.1", "--save", "",
                            "--appendonly", "no", "--dir", T.dir, "--logfile", log};
    int argc = 13;
    for (int i = 0; s->extra[i] != NULL && argc < 31; i++)
        argv[argc++] = s->extra[i];
    argv[argc] = NULL;

    pid_t pid = fork();
    cr_assert(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive a crashed test */
        int devnull = open("/dev/null", O_RDWR);
        if (devnull >= 0) {
            dup2(devnull, 0);
            dup2(devnull, 1);
        }
        execvp("redis-server", (char *const *)argv);
        _exit(127);
    }
    s->pid = pid;
    long long deadline = mono_ms() + 10000;
    for (;;) {
        int st;
        cr_assert_eq(waitpid(pid, &st, WNOHANG), 0, "redis-server exited at start (see %s)", log);
        raw_t *c = raw_open(s->port);
        if (c != NULL) {
            rr_t *r = raw_cmd(c, "PING", NULL);
            bool up = r != NULL && (r->type == '+' || (r->type == '-' && strncmp(r->str, "NOAUTH", 6) == 0));
            rr_free(r);
            raw_close(c);
            if (up)
                return;
        }
        cr_assert(mono_ms() < deadline, "redis-server did not answer PING on port %d within 10 s", s->port);
        usleep(20000);
    }
}

static void srv_kill(srv_t *s)
{
    if (s->pid > 0) {
        kill(s->pid, SIGKILL);
        waitpid(s->pid, NULL, 0);
        s->pid = 0;
    }
}

/* A raw connection to the test server, authenticated when auth is not NULL. */
static raw_t *srv_raw(const char *auth_user, const char *auth_pw)
{
    raw_t *c = raw_open(T.srv.port);
    cr_assert_not_null(c, "cannot connect to redis-server on port %d", T.srv.port);
    if (auth_pw != NULL)
        raw_ok(c, "AUTH", auth_user != NULL ? raw_cmd(c, "AUTH", auth_user, auth_pw, NULL)
                                            : raw_cmd(c, "AUTH", auth_pw, NULL));
    return c;
}

/* ------------------------------------------------------------------------ */
/* Fixture and loop driving                                                 */
/* ------------------------------------------------------------------------ */

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
}

static void setup(void)
{
    cr_assert_eq(evthread_use_pthreads(), 0);
    snprintf(T.dir, sizeof(T.dir), "/tmp/mizan-redis-XXXXXX");
    cr_assert_not_null(mkdtemp(T.dir));
    T.base = event_base_new();
    cr_assert_not_null(T.base);
    /* Wakes the loop every few ms so waits can check their deadline. */
    T.tick = event_new(T.base, -1, EV_PERSIST, on_tick, NULL);
    struct timeval tv = {.tv_usec = 5000};
    event_add(T.tick, &tv);
}

static void restore_stderr(void)
{
    if (T.saved_stderr >= 0) {
        dup2(T.saved_stderr, STDERR_FILENO);
        close(T.saved_stderr);
        T.saved_stderr = -1;
    }
}

static void teardown(void)
{
    restore_stderr();
    for (int i = 0; i < T.nconns; i++)
        mizan_redis_free(T.conns[i]);
    T.nconns = 0;
    mizan_redis_shared_free(T.shared);
    T.shared = NULL;
    if (T.tick != NULL)
        event_free(T.tick);
    if (T.base != NULL)
        event_base_free(T.base);
    srv_kill(&T.srv);
    char path[160];
    snprintf(path, sizeof(path), "%s/redis.log", T.dir);
    unlink(path);
    snprintf(path, sizeof(path), "%s/stderr.log", T.dir);
    unlink(path);
    rmdir(T.dir);
}

TestSuite(redis, .init = setup, .fini = teardown, .timeout = 90);

#define WAIT_FOR(cond, ms)                                                                                   \
    do {                                                                                                     \
        long long deadline_ = mono_ms() + (ms);                                                              \
        while (!(cond) && mono_ms() < deadline_)                                                             \
            event_base_loop(T.base, EVLOOP_ONCE);                                                            \
    } while (0)

/* Runs the loop for ms. */
static void spin(int ms)
{
    long long deadline = mono_ms() + ms;
    while (mono_ms() < deadline)
        event_base_loop(T.base, EVLOOP_ONCE);
}

static void make_shared(const char *url, int timeout_ms)
{
    mizan_err_t err = {""};
    T.shared = mizan_redis_shared_new(url, timeout_ms, &err);
    cr_assert_not_null(T.shared, "shared_new: %s", err.msg);
    mizan_redis_shared_set_backoff(T.shared, 20, 200);
}

static mizan_redis_t *add_conn(mizan_redis_t *r)
{
    cr_assert_not_null(r);
    cr_assert_lt(T.nconns, 4);
    T.conns[T.nconns++] = r;
    return r;
}

/* Forgets a connection the test freed itself. */
static void drop_conn(mizan_redis_t *r)
{
    for (int i = 0; i < T.nconns; i++) {
        if (T.conns[i] == r) {
            T.conns[i] = T.conns[--T.nconns];
            return;
        }
    }
}

/* Starts a plain server and one usable command connection. */
static mizan_redis_t *start_plain(int timeout_ms)
{
    srv_start(&T.srv);
    char url[64];
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d", T.srv.port);
    make_shared(url, timeout_ms);
    mizan_redis_t *r = add_conn(mizan_redis_new(T.base, T.shared));
    WAIT_FOR(mizan_redis_usable(r), 5000);
    cr_assert(mizan_redis_usable(r), "connection not usable within 5 s");
    return r;
}

/* ------------------------------------------------------------------------ */
/* Callback recorders                                                       */
/* ------------------------------------------------------------------------ */

static bool in_call; /* set while a mizan_redis_* call runs: callbacks must not see it */

typedef struct lk {
    int calls;
    int rc;
    long long ctx_rev, scoped_rev;
    bool has_value;
    char value[256];
    size_t len;
    long long at;
    bool reentered;
} lk_t;

static void lookup_cb(void *arg, int rc, long long ctx_rev, long long scoped_rev, const char *value, size_t len)
{
    lk_t *l = arg;
    l->calls++;
    l->reentered |= in_call;
    l->rc = rc;
    l->ctx_rev = ctx_rev;
    l->scoped_rev = scoped_rev;
    l->has_value = value != NULL;
    l->len = len;
    if (value != NULL && len < sizeof(l->value))
        memcpy(l->value, value, len);
    l->at = mono_ms();
}

static void do_lookup(mizan_redis_t *r, const char *k1, const char *k2, const char *k3, lk_t *l)
{
    memset(l, 0, sizeof(*l));
    l->rc = 99;
    in_call = true;
    mizan_redis_lookup(r, k1, k2, k3, lookup_cb, l);
    in_call = false;
    cr_assert_eq(l->calls, 0, "lookup called back from within mizan_redis_lookup");
}

typedef struct dn {
    int calls;
    int rc;
    bool reentered;
} dn_t;

static void done_cb(void *arg, int rc)
{
    dn_t *d = arg;
    d->calls++;
    d->reentered |= in_call;
    d->rc = rc;
}

static void do_invalidate(mizan_redis_t *r, const mizan_redis_inval_t *items, size_t n, const char *channel,
                          dn_t *d)
{
    memset(d, 0, sizeof(*d));
    d->rc = 99;
    in_call = true;
    mizan_redis_invalidate(r, items, n, channel, done_cb, d);
    in_call = false;
    cr_assert_eq(d->calls, 0, "invalidate called back from within mizan_redis_invalidate");
}

typedef struct msgs {
    int n;
    char text[8][128];
    size_t len[8];
} msgs_t;

static void msg_cb(void *arg, const char *msg, size_t len)
{
    msgs_t *m = arg;
    if (m->n < 8 && len < sizeof(m->text[0])) {
        memcpy(m->text[m->n], msg, len);
        m->len[m->n] = len;
    }
    m->n++;
}

/* Reads one pub/sub message from a raw subscriber; its payload (new) or NULL on timeout. */
static char *raw_next_message(raw_t *c)
{
    rr_t *r = raw_read(c);
    if (r == NULL)
        return NULL;
    char *out = NULL;
    if (r->type == '*' && r->n == 3 && strcmp(r->el[0]->str, "message") == 0)
        out = strdup(r->el[2]->str);
    rr_free(r);
    return out;
}

static raw_t *raw_subscribe(const char *channel, const char *pw)
{
    raw_t *c = srv_raw(NULL, pw);
    rr_t *r = raw_cmd(c, "SUBSCRIBE", channel, NULL);
    cr_assert(r != NULL && r->type == '*' && r->n == 3 && strcmp(r->el[0]->str, "subscribe") == 0,
              "raw SUBSCRIBE failed");
    rr_free(r);
    return c;
}

/* ------------------------------------------------------------------------ */
/* URL parsing                                                              */
/* ------------------------------------------------------------------------ */

Test(redis, url_valid)
{
    mizan_redis_url_t u;
    mizan_err_t err = {""};

    cr_assert_eq(mizan_redis_url_parse("redis://localhost", &u, &err), 0, "%s", err.msg);
    cr_assert_str_eq(u.host, "localhost");
    cr_assert_eq(u.port, 6379);
    cr_assert_eq(u.db, 0);
    cr_assert_str_eq(u.user, "");
    cr_assert_str_eq(u.password, "");

    cr_assert_eq(mizan_redis_url_parse("redis://10.0.0.7:6380/2", &u, &err), 0, "%s", err.msg);
    cr_assert_str_eq(u.host, "10.0.0.7");
    cr_assert_eq(u.port, 6380);
    cr_assert_eq(u.db, 2);

    cr_assert_eq(mizan_redis_url_parse("redis://:pw@cache.internal:7000/0", &u, &err), 0, "%s", err.msg);
    cr_assert_str_eq(u.user, "");
    cr_assert_str_eq(u.password, "pw");
    cr_assert_str_eq(u.host, "cache.internal");
    cr_assert_eq(u.port, 7000);

    cr_assert_eq(mizan_redis_url_parse("redis://alice:s%40cr%2Fet@h/15", &u, &err), 0, "%s", err.msg);
    cr_assert_str_eq(u.user, "alice");
    cr_assert_str_eq(u.password, "s@cr/et");
    cr_assert_str_eq(u.host, "h");
    cr_assert_eq(u.port, 6379);
    cr_assert_eq(u.db, 15);

    /* A raw '@' in the password: the last '@' ends the credentials. */
    cr_assert_eq(mizan_redis_url_parse("redis://bob:p@ss@h:1", &u, &err), 0, "%s", err.msg);
    cr_assert_str_eq(u.user, "bob");
    cr_assert_str_eq(u.password, "p@ss");
    cr_assert_eq(u.port, 1);

    cr_assert_eq(mizan_redis_url_parse("redis://[::1]:7001/3", &u, &err), 0, "%s", err.msg);
    cr_assert_str_eq(u.host, "::1");
    cr_assert_eq(u.port, 7001);
    cr_assert_eq(u.db, 3);

    cr_assert_eq(mizan_redis_url_parse("redis://[fe80::1%25eth0]", &u, &err), 0, "%s", err.msg);
    cr_assert_str_eq(u.host, "fe80::1%25eth0");

    cr_assert_eq(mizan_redis_url_parse("REDIS://h/", &u, &err), 0, "%s", err.msg);
    cr_assert_str_eq(u.host, "h");
    cr_assert_eq(u.db, 0);

    cr_assert_eq(mizan_redis_url_parse("redis://my-redis_1.svc:65535", &u, &err), 0, "%s", err.msg);
    cr_assert_eq(u.port, 65535);
}

Test(redis, url_invalid_never_echoes_the_password)
{
    static const char *bad[] = {
        "",
        "http://h:6379",
        "rediss://:secretPW@h",
        "redis://",
        "redis://:secretPW@",
        "redis://:secretPW@:6379",
        "redis://:secretPW@h:0",
        "redis://:secretPW@h:65536",
        "redis://:secretPW@h:",
        "redis://:secretPW@h:12ab",
        "redis://:secretPW@h/x",
        "redis://:secretPW@h/1?timeout=3",
        "redis://:secretPW@[::1",
        "redis://:secretPW@h h",
        "redis://secretPW@h",
        "redis://u:secretPW%zz@h",
        "redis://u:secretPW%00@h",
        "redis://u:secretPW@h:6379/0/extra",
        "redis://:secretPW@h::1",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        mizan_redis_url_t u;
        mizan_err_t err = {""};
        cr_assert_eq(mizan_redis_url_parse(bad[i], &u, &err), -1, "accepted \"%s\"", bad[i]);
        cr_assert_neq(err.msg[0], '\0', "no message for \"%s\"", bad[i]);
        cr_assert_null(strstr(err.msg, "secretPW"), "password echoed for \"%s\": %s", bad[i], err.msg);
        cr_assert_str_eq(u.password, "", "password left behind for \"%s\"", bad[i]);
    }
    mizan_redis_url_t u;
    mizan_err_t err = {""};
    cr_assert_eq(mizan_redis_url_parse(NULL, &u, &err), -1);

    /* Too long parts. */
    char url[700];
    memset(url, 'a', sizeof(url));
    memcpy(url, "redis://:", 9);
    memcpy(url + 9 + 300, "@h", 3);
    cr_assert_eq(mizan_redis_url_parse(url, &u, &err), -1);
    cr_assert(strstr(err.msg, "password") != NULL, "%s", err.msg);
    cr_assert_null(strstr(err.msg, "aaaa"));

    /* shared_new refuses bad input the same way. */
    cr_assert_null(mizan_redis_shared_new("redis://:secretPW@h:99999", 250, &err));
    cr_assert_null(strstr(err.msg, "secretPW"), "%s", err.msg);
    cr_assert_null(mizan_redis_shared_new("redis://h", 0, &err));
    cr_assert(strstr(err.msg, "timeout") != NULL, "%s", err.msg);
}

/* ------------------------------------------------------------------------ */
/* Commands against a live server                                           */
/* ------------------------------------------------------------------------ */

Test(redis, lookup_of_missing_keys)
{
    mizan_redis_t *r = start_plain(1000);
    lk_t l;
    do_lookup(r, "t:rev:{c}", "t:rev:{c}:p", "t:ctx:{c}:b", &l);
    WAIT_FOR(l.calls > 0, 3000);
    cr_assert_eq(l.calls, 1);
    cr_assert_not(l.reentered);
    cr_assert_eq(l.rc, 0);
    cr_assert_eq(l.ctx_rev, 0);
    cr_assert_eq(l.scoped_rev, 0);
    cr_assert_not(l.has_value);
    cr_assert_eq(l.len, 0);

    mizan_redis_stats_t st;
    mizan_redis_shared_stats(T.shared, &st);
    cr_assert_eq(st.connections_up, 1);
    cr_assert_eq(st.replay_queued, 0);
    cr_assert_not(mizan_redis_shared_pending(T.shared));
}

Test(redis, store_then_lookup)
{
    mizan_redis_t *r = start_plain(1000);
    raw_t *c = srv_raw(NULL, NULL);
    raw_ok(c, "SET", raw_cmd(c, "SET", "t:rev:{post}", "7", NULL));
    raw_ok(c, "SET", raw_cmd(c, "SET", "t:rev:{post}:d", "-3", NULL));

    static const char value[] = "{\"v\":1}\0tail"; /* binary-safe: a NUL inside */
    size_t vlen = sizeof(value) - 1;
    mizan_redis_store(r, "t:ctx:{post}:k", value, vlen, 60);
    lk_t l;
    do_lookup(r, "t:rev:{post}", "t:rev:{post}:d", "t:ctx:{post}:k", &l);
    WAIT_FOR(l.calls > 0, 3000);
    cr_assert_eq(l.calls, 1);
    cr_assert_eq(l.rc, 0);
    cr_assert_eq(l.ctx_rev, 7);
    cr_assert_eq(l.scoped_rev, -3);
    cr_assert(l.has_value);
    cr_assert_eq(l.len, vlen);
    cr_assert_eq(memcmp(l.value, value, vlen), 0);

    long long ttl = raw_int_cmd(c, "TTL", "t:ctx:{post}:k");
    cr_assert(ttl > 50 && ttl <= 60, "TTL %lld", ttl);

    /* A revision that is not an integer fails the lookup, naming the key
     * at fault so that the caller can repair it. */
    raw_ok(c, "SET", raw_cmd(c, "SET", "t:rev:{post}:d", "12x", NULL));
    do_lookup(r, "t:rev:{post}", "t:rev:{post}:d", "t:ctx:{post}:k", &l);
    WAIT_FOR(l.calls > 0, 3000);
    cr_assert_eq(l.calls, 1);
    cr_assert_eq(l.rc, MIZAN_REDIS_LOOKUP_BAD_REV);
    cr_assert_eq(l.ctx_rev, 0);
    cr_assert_eq(l.scoped_rev, 1);
    cr_assert_not(l.has_value);

    /* A store with no TTL is dropped. */
    mizan_redis_store(r, "t:ctx:{post}:nottl", "x", 1, 0);
    spin(100);
    cr_assert_eq(raw_int_cmd(c, "EXISTS", "t:ctx:{post}:nottl"), 0);
    raw_close(c);
}

Test(redis, invalidate_bumps_expires_and_publishes)
{
    mizan_redis_t *r = start_plain(1000);
    raw_t *sub = raw_subscribe("t:events", NULL);
    raw_t *c = srv_raw(NULL, NULL);

    mizan_redis_inval_t items[2] = {
        {.rev_key = "t:rev:{post}", .expire_s = 0, .event = "{\"context\":\"post\"}", .event_len = 18},
        {.rev_key = "t:rev:{post}:abc", .expire_s = 120, .event = "scoped", .event_len = 6},
    };
    dn_t d;
    do_invalidate(r, items, 2, "t:events", &d);
    WAIT_FOR(d.calls > 0, 3000);
    cr_assert_eq(d.calls, 1);
    cr_assert_eq(d.rc, 0);
    cr_assert_not(d.reentered);

    cr_assert_eq(raw_get_int(c, "t:rev:{post}"), 1);
    cr_assert_eq(raw_get_int(c, "t:rev:{post}:abc"), 1);
    cr_assert_eq(raw_int_cmd(c, "TTL", "t:rev:{post}"), -1);
    long long ttl = raw_int_cmd(c, "TTL", "t:rev:{post}:abc");
    cr_assert(ttl > 110 && ttl <= 120, "TTL %lld", ttl);

    char *m1 = raw_next_message(sub);
    char *m2 = raw_next_message(sub);
    cr_assert_not_null(m1);
    cr_assert_not_null(m2);
    cr_assert_str_eq(m1, "{\"context\":\"post\"}");
    cr_assert_str_eq(m2, "scoped");
    free(m1);
    free(m2);

    /* The lookup sees the bumped revisions. */
    lk_t l;
    do_lookup(r, "t:rev:{post}", "t:rev:{post}:abc", "t:ctx:{post}:k", &l);
    WAIT_FOR(l.calls > 0, 3000);
    cr_assert_eq(l.rc, 0);
    cr_assert_eq(l.ctx_rev, 1);
    cr_assert_eq(l.scoped_rev, 1);

    /* A second invalidation bumps again; an empty one reports success. */
    do_invalidate(r, items, 1, "t:events", &d);
    WAIT_FOR(d.calls > 0, 3000);
    cr_assert_eq(d.rc, 0);
    cr_assert_eq(raw_get_int(c, "t:rev:{post}"), 2);
    do_invalidate(r, items, 0, "t:events", &d);
    WAIT_FOR(d.calls > 0, 3000);
    cr_assert_eq(d.calls, 1);
    cr_assert_eq(d.rc, 0);

    mizan_redis_stats_t st;
    mizan_redis_shared_stats(T.shared, &st);
    cr_assert_eq(st.published, 3);
    cr_assert_eq(st.replay_queued, 0);
    raw_close(c);
    raw_close(sub);
}

/* GET key: the type letter of the reply and, for a bulk string, its integer value. */
static char raw_get_type(raw_t *c, const char *key, long long *v)
{
    rr_t *r = raw_cmd(c, "GET", key, NULL);
    cr_assert_not_null(r, "GET %s: no reply", key);
    char t = r->type;
    if (t == '$')
        *v = strtoll(r->str, NULL, 10);
    rr_free(r);
    return t;
}

Test(redis, revision_keys_of_the_wrong_type_are_repaired_by_invalidations)
{
    mizan_redis_t *r = start_plain(1000);
    raw_t *c = srv_raw(NULL, NULL);
    /* A list, a hash, text, and an integer at its limit: INCR fails on each. */
    rr_free(raw_cmd(c, "RPUSH", "t:rev:{a}", "x", NULL));
    rr_free(raw_cmd(c, "HSET", "t:rev:{b}:d", "f", "v", NULL));
    raw_ok(c, "SET", raw_cmd(c, "SET", "t:rev:{c}", "not a number", NULL));
    raw_ok(c, "SET", raw_cmd(c, "SET", "t:rev:{d}", "9223372036854775807", NULL));
    mizan_redis_inval_t items[4] = {
        {.rev_key = "t:rev:{a}", .expire_s = 0, .event = "a", .event_len = 1},
        {.rev_key = "t:rev:{b}:d", .expire_s = 120, .event = "b", .event_len = 1},
        {.rev_key = "t:rev:{c}", .expire_s = 0, .event = "c", .event_len = 1},
        {.rev_key = "t:rev:{d}", .expire_s = 0, .event = "d", .event_len = 1},
    };
    long long before = (long long)time(NULL) * 1000000;
    dn_t d;
    do_invalidate(r, items, 4, "t:events", &d);
    WAIT_FOR(d.calls > 0, 3000);
    cr_assert_eq(d.calls, 1);
    cr_assert_eq(d.rc, 0, "the invalidation must be recorded, not queued (rc %d)", d.rc);
    const char *keys[4] = {"t:rev:{a}", "t:rev:{b}:d", "t:rev:{c}", "t:rev:{d}"};
    for (int i = 0; i < 4; i++) {
        long long v = 0;
        cr_assert_eq(raw_get_type(c, keys[i], &v), '$', "%s is not a string revision again", keys[i]);
        cr_assert(v >= before && v < before + 3600LL * 1000000, "%s repaired to %lld", keys[i], v);
    }
    long long ttl = raw_int_cmd(c, "TTL", "t:rev:{b}:d");
    cr_assert(ttl > 110 && ttl <= 120, "a repaired scoped revision keeps its expiry (TTL %lld)", ttl);
    cr_assert_eq(raw_int_cmd(c, "TTL", "t:rev:{a}"), -1);
    mizan_redis_stats_t st;
    mizan_redis_shared_stats(T.shared, &st);
    cr_assert_eq(st.replay_queued, 0);
    cr_assert_eq(st.repaired, 4);
    /* Each event goes out again after its key was repaired. */
    cr_assert_eq(st.published, 8);
    cr_assert(mizan_redis_usable(r), "the connection stays usable");
    /* The next bump is an ordinary INCR. */
    long long v0 = 0, v1 = 0;
    raw_get_type(c, "t:rev:{a}", &v0);
    do_invalidate(r, items, 1, "t:events", &d);
    WAIT_FOR(d.calls > 0, 3000);
    cr_assert_eq(d.rc, 0);
    raw_get_type(c, "t:rev:{a}", &v1);
    cr_assert_eq(v1, v0 + 1);
    raw_close(c);
}

Test(redis, repair_rev_overwrites_a_corrupted_revision)
{
    mizan_redis_t *r = start_plain(1000);
    raw_t *c = srv_raw(NULL, NULL);
    raw_ok(c, "SET", raw_cmd(c, "SET", "t:rev:{e}:x", "junk", NULL));
    lk_t l;
    do_lookup(r, "t:rev:{e}", "t:rev:{e}:x", "t:ctx:{e}:k", &l);
    WAIT_FOR(l.calls > 0, 3000);
    cr_assert_eq(l.rc, MIZAN_REDIS_LOOKUP_BAD_REV);
    mizan_redis_repair_rev(r, "t:rev:{e}:x", 60);
    do_lookup(r, "t:rev:{e}", "t:rev:{e}:x", "t:ctx:{e}:k", &l);
    WAIT_FOR(l.calls > 0, 3000);
    cr_assert_eq(l.rc, 0, "the lookup works again after the repair");
    cr_assert(l.scoped_rev > (long long)time(NULL) * 1000000 - 60LL * 1000000);
    long long ttl = raw_int_cmd(c, "TTL", "t:rev:{e}:x");
    cr_assert(ttl > 50 && ttl <= 60, "TTL %lld", ttl);
    raw_close(c);
}

Test(redis, subscription_receives_messages)
{
    mizan_redis_t *r = start_plain(1000);
    msgs_t m = {0};
    mizan_redis_t *sub = add_conn(mizan_redis_subscribe(T.base, T.shared, "t:events", msg_cb, &m));
    cr_assert_not(mizan_redis_usable(sub));
    WAIT_FOR(mizan_redis_usable(sub), 5000);
    cr_assert(mizan_redis_usable(sub));

    raw_t *c = srv_raw(NULL, NULL);
    const char *argv[3] = {"PUBLISH", "t:events", "bin\0ary"};
    size_t lens[3] = {7, 8, 7};
    cr_assert_eq(raw_send(c, 3, argv, lens), 0);
    rr_t *rep = raw_read(c);
    cr_assert(rep != NULL && rep->type == ':' && rep->num == 1, "PUBLISH reached %lld subscribers",
              rep ? rep->num : -1);
    rr_free(rep);
    WAIT_FOR(m.n >= 1, 3000);
    cr_assert_eq(m.n, 1);
    cr_assert_eq(m.len[0], 7);
    cr_assert_eq(memcmp(m.text[0], "bin\0ary", 7), 0);

    /* An invalidation on the command connection reaches the subscriber. */
    mizan_redis_inval_t item = {.rev_key = "t:rev:{feed}", .expire_s = 0, .event = "feed!", .event_len = 5};
    dn_t d;
    do_invalidate(r, &item, 1, "t:events", &d);
    WAIT_FOR(d.calls > 0 && m.n >= 2, 3000);
    cr_assert_eq(d.rc, 0);
    cr_assert_eq(m.n, 2);
    cr_assert_eq(m.len[1], 5);
    cr_assert_eq(memcmp(m.text[1], "feed!", 5), 0);

    /* Messages on other channels are not delivered. */
    raw_ok(c, "noop", raw_cmd(c, "SET", "x", "y", NULL));
    rep = raw_cmd(c, "PUBLISH", "t:other", "zzz", NULL);
    rr_free(rep);
    spin(100);
    cr_assert_eq(m.n, 2);

    /* Lookups on a subscription fail; they do not hang. */
    lk_t l;
    do_lookup(sub, "a", "b", "c", &l);
    WAIT_FOR(l.calls > 0, 1000);
    cr_assert_eq(l.rc, -1);

    mizan_redis_stats_t st;
    mizan_redis_shared_stats(T.shared, &st);
    cr_assert_eq(st.messages, 2);
    cr_assert_eq(st.connections_up, 2);
    raw_close(c);
}

/* Redirects stderr (the log) into a file in the test directory. */
static void capture_stderr(void)
{
    char path[160];
    snprintf(path, sizeof(path), "%s/stderr.log", T.dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    cr_assert(fd >= 0);
    T.saved_stderr = dup(STDERR_FILENO);
    dup2(fd, STDERR_FILENO);
    close(fd);
    mizan_log_setup(MIZAN_LOG_DEBUG, "test");
}

/* The captured log so far (new string). */
static char *captured(void)
{
    char path[160];
    snprintf(path, sizeof(path), "%s/stderr.log", T.dir);
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f);
    char *buf = calloc(1, 1 << 20);
    size_t n = fread(buf, 1, (1 << 20) - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

Test(redis, auth_password_and_select_db)
{
    T.srv.extra[0] = "--requirepass";
    T.srv.extra[1] = "Pa55-word";
    srv_start(&T.srv);
    capture_stderr();
    char url[96];
    snprintf(url, sizeof(url), "redis://:Pa55-word@127.0.0.1:%d/3", T.srv.port);
    make_shared(url, 1000);
    mizan_redis_t *r = add_conn(mizan_redis_new(T.base, T.shared));
    WAIT_FOR(mizan_redis_usable(r), 5000);
    cr_assert(mizan_redis_usable(r));

    msgs_t m = {0};
    mizan_redis_t *sub = add_conn(mizan_redis_subscribe(T.base, T.shared, "t:events", msg_cb, &m));
    WAIT_FOR(mizan_redis_usable(sub), 5000);
    cr_assert(mizan_redis_usable(sub), "subscription with a password not usable");

    mizan_redis_store(r, "t:ctx:{db}:k", "in-three", 8, 60);
    mizan_redis_inval_t item = {.rev_key = "t:rev:{db}", .expire_s = 30, .event = "e", .event_len = 1};
    dn_t d;
    do_invalidate(r, &item, 1, "t:events", &d);
    WAIT_FOR(d.calls > 0 && m.n > 0, 3000);
    cr_assert_eq(d.rc, 0);
    cr_assert_eq(m.n, 1, "event not received by the authenticated subscription");

    raw_t *c = srv_raw(NULL, "Pa55-word");
    cr_assert_eq(raw_int_cmd(c, "EXISTS", "t:ctx:{db}:k"), 0, "key landed in db 0");
    raw_ok(c, "SELECT", raw_cmd(c, "SELECT", "3", NULL));
    rr_t *v = raw_cmd(c, "GET", "t:ctx:{db}:k", NULL);
    cr_assert(v != NULL && v->type == '$' && strcmp(v->str, "in-three") == 0, "value not in db 3");
    rr_free(v);
    cr_assert_eq(raw_get_int(c, "t:rev:{db}"), 1);

    lk_t l;
    do_lookup(r, "t:rev:{db}", "t:none", "t:ctx:{db}:k", &l);
    WAIT_FOR(l.calls > 0, 3000);
    cr_assert_eq(l.rc, 0);
    cr_assert_eq(l.ctx_rev, 1);
    cr_assert_eq(l.len, 8);

    /* An ACL user. */
    rr_t *acl = raw_cmd(c, "ACL", "SETUSER", "alice", "on", ">al1ce-pw", "~*", "&*", "+@all", NULL);
    raw_ok(c, "ACL SETUSER", acl);
    char url2[128];
    snprintf(url2, sizeof(url2), "redis://alice:al1ce-pw@127.0.0.1:%d/3", T.srv.port);
    mizan_err_t err = {""};
    mizan_redis_shared_t *s2 = mizan_redis_shared_new(url2, 1000, &err);
    cr_assert_not_null(s2, "%s", err.msg);
    mizan_redis_t *r2 = mizan_redis_new(T.base, s2);
    cr_assert_not_null(r2);
    WAIT_FOR(mizan_redis_usable(r2), 5000);
    bool usable2 = mizan_redis_usable(r2);
    do_lookup(r2, "t:rev:{db}", "t:none", "t:ctx:{db}:k", &l);
    WAIT_FOR(l.calls > 0, 3000);
    mizan_redis_free(r2);
    mizan_redis_shared_free(s2);
    cr_assert(usable2, "ACL user connection not usable");
    cr_assert_eq(l.rc, 0);
    cr_assert_eq(l.ctx_rev, 1, "ACL user connection did not select db 3");

    char *log = captured();
    restore_stderr();
    cr_assert(strstr(log, "established") != NULL, "no connection log line");
    cr_assert_null(strstr(log, "Pa55-word"), "password logged");
    cr_assert_null(strstr(log, "al1ce-pw"), "password logged");
    free(log);
    raw_close(c);
}

static int state_true, state_false;

static void count_state(void *arg, bool usable)
{
    (void)arg;
    if (usable)
        state_true++;
    else
        state_false++;
}

Test(redis, wrong_password_is_refused_and_not_logged)
{
    T.srv.extra[0] = "--requirepass";
    T.srv.extra[1] = "right-one";
    srv_start(&T.srv);
    capture_stderr();
    char url[96];
    snprintf(url, sizeof(url), "redis://:Wr0ng-Passw0rd@127.0.0.1:%d/0", T.srv.port);
    make_shared(url, 1000);
    mizan_redis_t *r = add_conn(mizan_redis_new(T.base, T.shared));
    mizan_redis_on_state(r, count_state, NULL);
    spin(700);
    cr_assert_not(mizan_redis_usable(r));
    cr_assert_eq(state_true, 0);
    mizan_redis_stats_t st;
    mizan_redis_shared_stats(T.shared, &st);
    cr_assert_eq(st.connections_up, 0);

    lk_t l;
    do_lookup(r, "a", "b", "c", &l);
    WAIT_FOR(l.calls > 0, 1000);
    cr_assert_eq(l.rc, -1);

    char *log = captured();
    restore_stderr();
    cr_assert(strstr(log, "refused") != NULL, "no refusal in the log");
    cr_assert(strstr(log, "WRONGPASS") != NULL, "no server reason in the log");
    cr_assert_null(strstr(log, "Wr0ng-Passw0rd"), "password logged");
    free(log);
}

/* ------------------------------------------------------------------------ */
/* Redis going away                                                         */
/* ------------------------------------------------------------------------ */

typedef struct watch {
    int ups, downs;
    /* Seen at the moment the connection last became usable: */
    size_t queued_at_up;
    long long replayed_at_up;
    long long rev_at_up;
    raw_t *raw; /* to read the revision from inside the callback */
} watch_t;

static void watch_state(void *arg, bool usable)
{
    watch_t *w = arg;
    if (!usable) {
        w->downs++;
        return;
    }
    w->ups++;
    mizan_redis_stats_t st;
    mizan_redis_shared_stats(T.shared, &st);
    w->queued_at_up = st.replay_queued;
    w->replayed_at_up = st.replayed;
    if (w->raw != NULL)
        w->rev_at_up = raw_get_int(w->raw, "t:rev:{post}");
}

Test(redis, killed_then_restarted_replays_the_queue)
{
    mizan_redis_t *r = start_plain(500);
    mizan_redis_t *r2 = add_conn(mizan_redis_new(T.base, T.shared));
    msgs_t m = {0};
    mizan_redis_t *sub = add_conn(mizan_redis_subscribe(T.base, T.shared, "t:events", msg_cb, &m));
    WAIT_FOR(mizan_redis_usable(r2) && mizan_redis_usable(sub), 5000);
    cr_assert(mizan_redis_usable(r2) && mizan_redis_usable(sub));
    watch_t w1 = {0}, w2 = {0}, ws = {0};
    mizan_redis_on_state(r, watch_state, &w1);
    mizan_redis_on_state(r2, watch_state, &w2);
    mizan_redis_on_state(sub, watch_state, &ws);

    srv_kill(&T.srv);
    WAIT_FOR(!mizan_redis_usable(r) && !mizan_redis_usable(r2) && !mizan_redis_usable(sub), 3000);
    cr_assert_not(mizan_redis_usable(r));
    cr_assert_eq(w1.downs, 1);
    cr_assert_eq(w2.downs, 1);
    cr_assert_eq(ws.downs, 1, "subscription down not reported");

    /* Lookups fail fast, invalidations queue. */
    lk_t l;
    long long t0 = mono_ms();
    do_lookup(r, "t:rev:{post}", "t:rev:{post}:x", "t:ctx:{post}:k", &l);
    WAIT_FOR(l.calls > 0, 2000);
    cr_assert_eq(l.calls, 1);
    cr_assert_eq(l.rc, -1);
    cr_assert_lt(l.at - t0, 200, "lookup took %lld ms to fail", l.at - t0);

    mizan_redis_inval_t items[2] = {
        {.rev_key = "t:rev:{post}", .expire_s = 0, .event = "ev-1", .event_len = 4},
        {.rev_key = "t:rev:{post}:x", .expire_s = 90, .event = "ev-2", .event_len = 4},
    };
    dn_t d;
    do_invalidate(r, items, 2, "t:events", &d);
    WAIT_FOR(d.calls > 0, 2000);
    cr_assert_eq(d.calls, 1);
    cr_assert_eq(d.rc, 1);
    cr_assert(mizan_redis_shared_pending(T.shared));
    mizan_redis_stats_t st;
    mizan_redis_shared_stats(T.shared, &st);
    cr_assert_eq(st.replay_queued, 2);
    cr_assert_eq(st.connections_up, 0);
    mizan_redis_store(r, "t:ctx:{post}:k", "stale", 5, 60); /* dropped */
    spin(300); /* a few failed attempts */

    /* Restart on the same port; a raw subscriber listens before the loop runs again. */
    srv_start(&T.srv);
    raw_t *rawsub = raw_subscribe("t:events", NULL);
    w1.raw = srv_raw(NULL, NULL);
    w2.raw = w1.raw;
    WAIT_FOR(mizan_redis_usable(r) && mizan_redis_usable(r2) && mizan_redis_usable(sub), 5000);
    cr_assert(mizan_redis_usable(r) && mizan_redis_usable(r2), "not usable again after restart");
    cr_assert_eq(w1.ups, 1);
    cr_assert_eq(w2.ups, 1);
    cr_assert_eq(w1.queued_at_up, 0, "usable before the queue was replayed");
    cr_assert_eq(w1.replayed_at_up, 2);
    cr_assert_eq(w1.rev_at_up, 1, "revision not bumped when usable was reported");
    cr_assert_eq(w2.queued_at_up, 0, "other connection usable before the replay");
    cr_assert_eq(w2.rev_at_up, 1);
    cr_assert_not(mizan_redis_shared_pending(T.shared));

    char *e1 = raw_next_message(rawsub);
    char *e2 = raw_next_message(rawsub);
    cr_assert_not_null(e1);
    cr_assert_not_null(e2);
    cr_assert_str_eq(e1, "ev-1");
    cr_assert_str_eq(e2, "ev-2");
    free(e1);
    free(e2);
    cr_assert_eq(raw_get_int(w1.raw, "t:rev:{post}:x"), 1);
    long long ttl = raw_int_cmd(w1.raw, "TTL", "t:rev:{post}:x");
    cr_assert(ttl > 80 && ttl <= 90, "TTL %lld", ttl);
    cr_assert_eq(raw_int_cmd(w1.raw, "EXISTS", "t:ctx:{post}:k"), 0, "a store was not dropped");

    do_lookup(r, "t:rev:{post}", "t:rev:{post}:x", "t:ctx:{post}:k", &l);
    WAIT_FOR(l.calls > 0, 2000);
    cr_assert_eq(l.rc, 0);
    cr_assert_eq(l.ctx_rev, 1);
    cr_assert_eq(l.scoped_rev, 1);

    mizan_redis_shared_stats(T.shared, &st);
    cr_assert_eq(st.connections_up, 3);
    cr_assert_geq(st.reconnects, 3);
    cr_assert_eq(st.replayed, 2);
    cr_assert_eq(ws.ups, 1, "subscription up not reported");
    raw_close(w1.raw);
    raw_close(rawsub);
}

Test(redis, paused_redis_times_out_then_recovers)
{
    mizan_redis_t *r = start_plain(250);
    watch_t w = {0};
    mizan_redis_on_state(r, watch_state, &w);

    kill(T.srv.pid, SIGSTOP);
    lk_t l;
    long long t0 = mono_ms();
    do_lookup(r, "t:rev:{p}", "t:rev:{p}:s", "t:ctx:{p}:k", &l);
    mizan_redis_inval_t item = {.rev_key = "t:rev:{p}", .expire_s = 0, .event = "paused", .event_len = 6};
    dn_t d;
    do_invalidate(r, &item, 1, "t:events", &d);
    WAIT_FOR(l.calls > 0 && d.calls > 0, 3000);
    long long took = l.at - t0;
    cr_assert_eq(l.calls, 1);
    cr_assert_eq(l.rc, -1);
    cr_assert(took >= 200 && took < 1500, "lookup failed after %lld ms (timeout 250)", took);
    cr_assert_eq(d.calls, 1);
    cr_assert_eq(d.rc, 1, "in-flight invalidation not queued");
    cr_assert_not(mizan_redis_usable(r));
    cr_assert_eq(w.downs, 1);
    spin(600); /* reconnection attempts time out while paused */
    cr_assert_not(mizan_redis_usable(r));
    cr_assert(mizan_redis_shared_pending(T.shared));

    kill(T.srv.pid, SIGCONT);
    WAIT_FOR(mizan_redis_usable(r), 5000);
    cr_assert(mizan_redis_usable(r), "no recovery after SIGCONT");
    cr_assert_not(mizan_redis_shared_pending(T.shared));
    do_lookup(r, "t:rev:{p}", "t:rev:{p}:s", "t:ctx:{p}:k", &l);
    WAIT_FOR(l.calls > 0, 2000);
    cr_assert_eq(l.rc, 0);
    /* The invalidation was applied once or twice (it may have reached Redis before the timeout). */
    cr_assert(l.ctx_rev == 1 || l.ctx_rev == 2, "rev %lld", l.ctx_rev);
}

Test(redis, free_with_commands_in_flight_calls_back_once)
{
    mizan_redis_t *r = start_plain(5000);
    kill(T.srv.pid, SIGSTOP);

    lk_t l[5];
    for (int i = 0; i < 5; i++)
        do_lookup(r, "a", "b", "c", &l[i]);
    mizan_redis_inval_t items[2] = {
        {.rev_key = "t:rev:{f}", .expire_s = 0, .event = "f1", .event_len = 2},
        {.rev_key = "t:rev:{g}", .expire_s = 5, .event = "f2", .event_len = 2},
    };
    dn_t d;
    do_invalidate(r, items, 2, "t:events", &d);
    mizan_redis_store(r, "t:ctx:{f}:k", "v", 1, 60);
    spin(100); /* written to the socket, no reply while paused */
    for (int i = 0; i < 5; i++)
        cr_assert_eq(l[i].calls, 0);
    cr_assert_eq(d.calls, 0);

    /* Issued just before the free: still sent, still failed by the free. */
    lk_t late;
    do_lookup(r, "a", "b", "c", &late);

    drop_conn(r);
    mizan_redis_free(r);
    for (int i = 0; i < 5; i++) {
        cr_assert_eq(l[i].calls, 1, "lookup %d called %d times", i, l[i].calls);
        cr_assert_eq(l[i].rc, -1);
    }
    cr_assert_eq(late.calls, 1);
    cr_assert_eq(late.rc, -1);
    cr_assert_eq(d.calls, 1);
    cr_assert_eq(d.rc, 1);
    mizan_redis_stats_t st;
    mizan_redis_shared_stats(T.shared, &st);
    cr_assert_eq(st.replay_queued, 2);
    cr_assert_eq(st.connections_up, 0);

    /* A connection that never came up, with a deferred failure pending. */
    mizan_redis_t *r2 = mizan_redis_new(T.base, T.shared);
    cr_assert_not_null(r2);
    lk_t pending;
    do_lookup(r2, "a", "b", "c", &pending);
    do_invalidate(r2, items, 1, "t:events", &d);
    mizan_redis_free(r2);
    cr_assert_eq(pending.calls, 1);
    cr_assert_eq(pending.rc, -1);
    cr_assert_eq(d.calls, 1);
    cr_assert_eq(d.rc, 1);

    spin(100);
    for (int i = 0; i < 5; i++)
        cr_assert_eq(l[i].calls, 1);
    cr_assert_eq(pending.calls, 1);
    kill(T.srv.pid, SIGCONT);
}

Test(redis, unreachable_redis_fails_without_reentry)
{
    int port = free_port(); /* nothing listens there */
    char url[64];
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d", port);
    make_shared(url, 250);
    mizan_redis_t *r = add_conn(mizan_redis_new(T.base, T.shared));
    mizan_redis_on_state(r, count_state, NULL);
    lk_t l;
    do_lookup(r, "a", "b", "c", &l);
    WAIT_FOR(l.calls > 0, 1000);
    cr_assert_eq(l.calls, 1);
    cr_assert_eq(l.rc, -1);
    mizan_redis_inval_t item = {.rev_key = "k", .expire_s = 0, .event = "e", .event_len = 1};
    dn_t d;
    do_invalidate(r, &item, 1, "c", &d);
    WAIT_FOR(d.calls > 0, 1000);
    cr_assert_eq(d.rc, 1);
    spin(300);
    cr_assert_eq(state_true, 0);
    cr_assert_not(mizan_redis_usable(r));

    /* Redis appears on that port: the queue is replayed, then usable. */
    T.srv.port = port;
    srv_start(&T.srv);
    WAIT_FOR(mizan_redis_usable(r), 5000);
    cr_assert(mizan_redis_usable(r));
    cr_assert_eq(state_true, 1);
    raw_t *c = srv_raw(NULL, NULL);
    cr_assert_eq(raw_get_int(c, "k"), 1);
    raw_close(c);
}
