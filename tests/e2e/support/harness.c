/*
 * harness.c - the per-test arena and fixtures, temporary files, child
 * processes, and the gateway under test: config generation, start-up
 * until its "listening" log line, graceful stop, and token minting through
 * `mizand token`.
 *
 * DESIGN: Criterion forks one child per test, so the arena is a plain
 * process-global list. It is mutex-guarded because batch threads register
 * their responses in it. Teardown takes the whole list under the lock and
 * runs it without the lock, phase by phase (connections, processes,
 * directories, memory), so a cleanup may still read files or memory that a
 * later phase releases (e.g. a gateway's log tail).
 */
#include "harness.h"
#include "internal.h"

#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

extern char **environ;

/* ========================================================================
 * Arena
 * ====================================================================== */

/* One thing to release at teardown. */
typedef struct owned {
    void *ptr;             /* what to release */
    void (*fn)(void *);    /* how */
    enum mz_phase phase;   /* when */
} owned_t;

static pthread_mutex_t arena_lock = PTHREAD_MUTEX_INITIALIZER; /* guards the three below */
static owned_t *arena;      /* registered entries, in registration order */
static size_t arena_len;    /* entries used */
static size_t arena_cap;    /* entries allocated */

_Noreturn void mz_oom(size_t n)
{
    fprintf(stderr, "e2e harness: out of memory allocating %zu bytes\n", n);
    abort();
}

void *mz_xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (p == NULL)
        mz_oom(n);
    return p;
}

void *mz_xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (q == NULL)
        mz_oom(n);
    return q;
}

char *mz_xstrdup(const char *s)
{
    char *d = strdup(s);
    if (d == NULL)
        mz_oom(strlen(s) + 1);
    return d;
}

char *mz_xstrndup(const char *s, size_t n)
{
    char *d = strndup(s, n);
    if (d == NULL)
        mz_oom(n + 1);
    return d;
}

void *mz_own(void *ptr, void (*fn)(void *), enum mz_phase phase)
{
    pthread_mutex_lock(&arena_lock);
    if (arena_len == arena_cap) {
        size_t cap = arena_cap ? arena_cap * 2 : 256;
        owned_t *grown = realloc(arena, cap * sizeof(*grown));
        if (grown == NULL) {
            pthread_mutex_unlock(&arena_lock);
            mz_oom(cap * sizeof(*grown));
        }
        arena = grown;
        arena_cap = cap;
    }
    arena[arena_len++] = (owned_t){ptr, fn, phase};
    pthread_mutex_unlock(&arena_lock);
    return ptr;
}

void *mz_alloc(size_t n)
{
    void *p = calloc(1, n ? n : 1);
    if (p == NULL)
        mz_oom(n);
    return mz_own(p, free, MZ_PHASE_MEM);
}

char *mz_strdup(const char *s)
{
    return mz_own(mz_xstrdup(s), free, MZ_PHASE_MEM);
}

static void decref(void *v)
{
    json_decref(v);
}

json_t *mz_keep(json_t *v)
{
    if (v == NULL)
        return NULL;
    return mz_own(v, decref, MZ_PHASE_MEM);
}

/* ========================================================================
 * Fixtures, environment, clock, strings
 * ====================================================================== */

void mz_setup(void)
{
    /* A peer closing early must surface as EPIPE, not kill the test. */
    signal(SIGPIPE, SIG_IGN);
    pthread_mutex_lock(&arena_lock);
    arena_len = 0;
    pthread_mutex_unlock(&arena_lock);
}

void mz_teardown(void)
{
    pthread_mutex_lock(&arena_lock);
    owned_t *list = arena;
    size_t len = arena_len;
    arena = NULL;
    arena_len = 0;
    arena_cap = 0;
    pthread_mutex_unlock(&arena_lock);

    for (int phase = MZ_PHASE_CONN; phase <= MZ_PHASE_MEM; phase++) {
        for (size_t i = len; i-- > 0;) {
            if (list[i].phase == (enum mz_phase)phase)
                list[i].fn(list[i].ptr);
        }
    }
    free(list);
}

const char *mz_env(const char *name)
{
    const char *v = getenv(name);
    cr_assert(v != NULL && v[0] != '\0',
              "environment variable %s is not set: run the e2e tests through ctest "
              "(it sets MIZAN_TEST_BIN, MIZAN_TEST_MODULE_DIR, MIZAN_TEST_SOURCE_DIR, "
              "MIZAN_TEST_BUILD_DIR)",
              name);
    return v;
}

const char *mz_bin(void)
{
    return mz_env("MIZAN_TEST_BIN");
}

double mz_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

void mz_sleep_ms(int ms)
{
    if (ms <= 0)
        return;
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static char *vfmt_raw(const char *fmt, va_list ap)
{
    char *s = NULL;
    if (vasprintf(&s, fmt, ap) < 0)
        mz_oom(strlen(fmt));
    return s;
}

char *mz_fmt(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = vfmt_raw(fmt, ap);
    va_end(ap);
    return mz_own(s, free, MZ_PHASE_MEM);
}

char *mz_repeat(char ch, size_t n)
{
    char *s = mz_alloc(n + 1);
    memset(s, ch, n);
    s[n] = '\0';
    return s;
}

json_t *mz_json(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *text = vfmt_raw(fmt, ap);
    va_end(ap);
    mz_own(text, free, MZ_PHASE_MEM);
    json_error_t e;
    json_t *v = json_loads(text, JSON_DECODE_ANY, &e);
    cr_assert(v != NULL, "test bug: bad JSON literal %s (%s at %d:%d)", text, e.text, e.line,
              e.column);
    return mz_keep(v);
}

char *mz_dump(const json_t *v)
{
    if (v == NULL)
        return mz_strdup("(null)");
    char *s = json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
    if (s == NULL)
        mz_oom(0);
    return mz_own(s, free, MZ_PHASE_MEM);
}

/* ========================================================================
 * Files
 * ====================================================================== */

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

void mz_rmtree(const char *dir)
{
    nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static void tmpdir_cleanup(void *p)
{
    const char *keep = getenv("MIZAN_TEST_KEEP_TMP");
    if (keep != NULL && strcmp(keep, "1") == 0) {
        fprintf(stderr, "e2e: kept %s\n", (const char *)p);
    } else {
        mz_rmtree(p);
    }
    free(p);
}

char *mz_tmpdir(void)
{
    const char *base = getenv("TMPDIR");
    if (base == NULL || base[0] == '\0')
        base = "/tmp";
    char *tmpl = NULL;
    if (asprintf(&tmpl, "%s/mizan-e2e-XXXXXX", base) < 0)
        mz_oom(strlen(base) + 20);
    char *dir = mkdtemp(tmpl);
    if (dir == NULL) {
        int e = errno;
        free(tmpl);
        cr_assert_fail("mkdtemp under %s: %s", base, strerror(e));
    }
    mz_own(dir, tmpdir_cleanup, MZ_PHASE_DIR);
    return dir;
}

char *mz_write_file(const char *dir, const char *name, const char *text)
{
    char *path = mz_fmt("%s/%s", dir, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    cr_assert(fd >= 0, "open %s: %s", path, strerror(errno));
    size_t len = strlen(text);
    size_t off = 0;
    while (off < len) {
        ssize_t n = write(fd, text + off, len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int e = errno;
            close(fd);
            cr_assert_fail("write %s: %s", path, strerror(e));
        }
        off += (size_t)n;
    }
    close(fd);
    return path;
}

/* Reads a whole file into a malloc'd NUL-terminated buffer (not in the arena). */
static char *read_file_raw(const char *path, size_t *len_out)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    size_t cap = 4096;
    size_t len = 0;
    char *buf = mz_xmalloc(cap);
    for (;;) {
        if (cap - len < 2) {
            cap *= 2;
            buf = mz_xrealloc(buf, cap);
        }
        ssize_t n = read(fd, buf + len, cap - len - 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    close(fd);
    buf[len] = '\0';
    if (len_out != NULL)
        *len_out = len;
    return buf;
}

char *mz_read_file(const char *path)
{
    char *s = read_file_raw(path, NULL);
    return s ? mz_own(s, free, MZ_PHASE_MEM) : NULL;
}

int mz_listen_loopback(int backlog, int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert(fd >= 0, "socket: %s", strerror(errno));
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert(bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 && listen(fd, backlog) == 0, "listen: %s",
              strerror(errno));
    socklen_t sl = sizeof(sa);
    cr_assert(getsockname(fd, (struct sockaddr *)&sa, &sl) == 0);
    *port = ntohs(sa.sin_port);
    return fd;
}

long mz_raise_nofile(long want)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return -1;
    if ((rlim_t)want > rl.rlim_cur) {
        rl.rlim_cur = (rl.rlim_max == RLIM_INFINITY || (rlim_t)want < rl.rlim_max)
                          ? (rlim_t)want
                          : rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    return rl.rlim_cur == RLIM_INFINITY ? LONG_MAX : (long)rl.rlim_cur;
}

/* ========================================================================
 * Child processes
 * ====================================================================== */

/* True when the environment entry "NAME=..." has the name of "NAME=...". */
static bool same_env_name(const char *a, const char *b)
{
    const char *ea = strchr(a, '=');
    const char *eb = strchr(b, '=');
    size_t la = ea ? (size_t)(ea - a) : strlen(a);
    size_t lb = eb ? (size_t)(eb - b) : strlen(b);
    return la == lb && memcmp(a, b, la) == 0;
}

/*
 * The child's environment: ours without inherited MIZAN_* (other than
 * MIZAN_TEST_*) and without names that extra overrides, then extra.
 * Returns a malloc'd array of borrowed strings.
 */
static char **build_env(const char *const *extra)
{
    size_t n = 0;
    size_t nextra = 0;
    for (char **e = environ; e && *e; e++)
        n++;
    for (const char *const *x = extra; x && *x; x++)
        nextra++;
    char **envp = mz_xmalloc((n + nextra + 1) * sizeof(*envp));
    size_t k = 0;
    for (char **e = environ; e && *e; e++) {
        if (strncmp(*e, "MIZAN_", 6) == 0 && strncmp(*e, "MIZAN_TEST_", 11) != 0)
            continue;
        bool overridden = false;
        for (const char *const *x = extra; x && *x; x++) {
            if (same_env_name(*e, *x))
                overridden = true;
        }
        if (!overridden)
            envp[k++] = *e;
    }
    for (const char *const *x = extra; x && *x; x++)
        envp[k++] = (char *)*x;
    envp[k] = NULL;
    return envp;
}

/* Writes "a b: errno N" from the forked child (async-signal-safe). */
static void child_say(const char *a, const char *b, int err)
{
    char num[16];
    size_t n = sizeof(num);
    num[--n] = '\0';
    do {
        num[--n] = (char)('0' + err % 10);
        err /= 10;
    } while (err > 0 && n > 0);
    ssize_t ignored = write(2, a, strlen(a));
    ignored = write(2, b, strlen(b));
    ignored = write(2, ": errno ", 8);
    ignored = write(2, num + n, strlen(num + n));
    ignored = write(2, "\n", 1);
    (void)ignored;
}

pid_t mz_spawn(const char *const *argv, const char *cwd, const char *const *env, int out_fd,
               int err_fd, char *err, size_t errlen)
{
    char **envp = build_env(env);
    pid_t parent = getpid();
    int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (devnull < 0) {
        snprintf(err, errlen, "open /dev/null: %s", strerror(errno));
        free(envp);
        return -1;
    }
    pid_t pid = fork();
    if (pid < 0) {
        snprintf(err, errlen, "fork: %s", strerror(errno));
        free(envp);
        close(devnull);
        return -1;
    }
    if (pid == 0) {
        /* Only async-signal-safe calls from here to execve. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        signal(SIGPIPE, SIG_DFL);
        if (dup2(devnull, 0) < 0 || dup2(out_fd >= 0 ? out_fd : devnull, 1) < 0 ||
            dup2(err_fd >= 0 ? err_fd : devnull, 2) < 0)
            _exit(127);
        if (cwd != NULL && chdir(cwd) != 0) {
            child_say("e2e harness: cannot chdir to ", cwd, errno);
            _exit(127);
        }
        close_range(3, ~0U, 0);
        execve(argv[0], (char *const *)argv, envp);
        child_say("e2e harness: cannot execute ", argv[0], errno);
        _exit(127);
    }
    free(envp);
    close(devnull);
    return pid;
}

static int decode_status(int st)
{
    if (WIFEXITED(st))
        return WEXITSTATUS(st);
    if (WIFSIGNALED(st))
        return 128 + WTERMSIG(st);
    return -1;
}

int mz_reap(pid_t pid, int timeout_ms, int *status)
{
    double deadline = mz_now_ms() + timeout_ms;
    for (;;) {
        int st = 0;
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid) {
            *status = decode_status(st);
            return 1;
        }
        if (r < 0 && errno != EINTR) {
            /* Not our child any more (reaped elsewhere): treat as gone. */
            *status = -1;
            return 1;
        }
        if (mz_now_ms() >= deadline)
            return 0;
        mz_sleep_ms(5);
    }
}

/* Appends what fd has to offer to a growing buffer; false on EOF/error. */
static bool drain_fd(int fd, char **buf, size_t *len, size_t *cap)
{
    if (*cap - *len < 4096) {
        *cap = *cap * 2 + 4096;
        *buf = mz_xrealloc(*buf, *cap);
    }
    ssize_t n = read(fd, *buf + *len, *cap - *len - 1);
    if (n < 0 && (errno == EINTR || errno == EAGAIN))
        return true;
    if (n <= 0)
        return false;
    *len += (size_t)n;
    (*buf)[*len] = '\0';
    return true;
}

mz_run_t *mz_run(const char *const *argv, const char *cwd, const char *const *env, int timeout_ms)
{
    int out_pipe[2];
    int err_pipe[2];
    cr_assert(pipe2(out_pipe, O_CLOEXEC) == 0, "pipe2: %s", strerror(errno));
    cr_assert(pipe2(err_pipe, O_CLOEXEC) == 0, "pipe2: %s", strerror(errno));
    char why[256] = "";
    double start = mz_now_ms();
    pid_t pid = mz_spawn(argv, cwd, env, out_pipe[1], err_pipe[1], why, sizeof(why));
    close(out_pipe[1]);
    close(err_pipe[1]);
    if (pid < 0) {
        close(out_pipe[0]);
        close(err_pipe[0]);
        cr_assert_fail("cannot run %s: %s", argv[0], why);
    }

    mz_run_t *run = mz_alloc(sizeof(*run));
    size_t out_len = 0, out_cap = 4096, err_len = 0, err_cap = 4096;
    char *out = mz_xmalloc(out_cap);
    char *errs = mz_xmalloc(err_cap);
    out[0] = '\0';
    errs[0] = '\0';
    struct pollfd pfd[2] = {{out_pipe[0], POLLIN, 0}, {err_pipe[0], POLLIN, 0}};
    double deadline = start + timeout_ms;
    bool timed_out = false;
    while (pfd[0].fd >= 0 || pfd[1].fd >= 0) {
        int left = (int)(deadline - mz_now_ms());
        if (left <= 0) {
            timed_out = true;
            break;
        }
        int n = poll(pfd, 2, left);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            break;
        for (int i = 0; i < 2; i++) {
            if (pfd[i].fd < 0 || pfd[i].revents == 0)
                continue;
            bool more = i == 0 ? drain_fd(pfd[i].fd, &out, &out_len, &out_cap)
                               : drain_fd(pfd[i].fd, &errs, &err_len, &err_cap);
            if (!more) {
                close(pfd[i].fd);
                pfd[i].fd = -1;
            }
        }
    }
    for (int i = 0; i < 2; i++) {
        if (pfd[i].fd >= 0)
            close(pfd[i].fd);
    }
    int status = -1;
    if (timed_out || mz_reap(pid, timed_out ? 0 : (int)(deadline - mz_now_ms()) + 1000, &status) == 0) {
        kill(pid, SIGKILL);
        mz_reap(pid, 5000, &status);
        status = -1;
    }
    run->status = status;
    run->out = mz_own(out, free, MZ_PHASE_MEM);
    run->err = mz_own(errs, free, MZ_PHASE_MEM);
    run->elapsed_ms = mz_now_ms() - start;
    return run;
}

/* ========================================================================
 * Gateway configs
 * ====================================================================== */

json_t *mz_config_defaults(const char *dir)
{
    const char *module_dir = mz_env("MIZAN_TEST_MODULE_DIR");
    char *db = mz_fmt("%s/blog.db", dir);
    /* validate_output: every result of every e2e test is checked against its
     * function's declared output schema, so the suite proves the declared types. */
    json_t *cfg = json_pack("{s:s, s:i, s:i, s:i, s:s,"
                            " s:{s:s, s:i, s:s}, s:{s:s, s:s, s:s},"
                            " s:s, s:[{s:s, s:{s:s}}], s:b}",
                            "listen", "127.0.0.1:0", "io_threads", 2, "workers", 8, "queue_size",
                            1024, "log_level", "info", "token", "secret", MZ_TOKEN_SECRET,
                            "leeway_s", 0, "cookie", "mwt", "cache", "secret", MZ_CACHE_SECRET,
                            "redis_url", "", "prefix", "mizan:", "module_dir", module_dir,
                            "modules", "name", "blog", "config", "db", db, "validate_output", 1);
    if (cfg == NULL)
        mz_oom(0);
    return cfg;
}

void mz_json_merge(json_t *dst, const json_t *src)
{
    const char *key;
    json_t *value;
    json_object_foreach((json_t *)src, key, value) {
        json_t *cur = json_object_get(dst, key);
        if (json_is_null(value)) {
            json_object_del(dst, key);
        } else if (json_is_object(value) && json_is_object(cur)) {
            mz_json_merge(cur, value);
        } else {
            json_t *copy = json_deep_copy(value);
            if (copy == NULL || json_object_set_new(dst, key, copy) != 0)
                mz_oom(0);
        }
    }
}

char *mz_write_config(const char *dir, const char *name, const json_t *config)
{
    char *text = json_dumps(config, JSON_INDENT(2));
    if (text == NULL)
        mz_oom(0);
    mz_own(text, free, MZ_PHASE_MEM);
    return mz_write_file(dir, name, text);
}

/* ========================================================================
 * The gateway process
 * ====================================================================== */

static char *tail_of_file(const char *path, size_t max)
{
    size_t len = 0;
    char *all = read_file_raw(path, &len);
    if (all == NULL)
        return mz_fmt("(cannot read %s)", path);
    const char *start = all;
    if (len > max) {
        start = all + (len - max);
        const char *nl = strchr(start, '\n');
        if (nl != NULL && nl[1] != '\0')
            start = nl + 1;
    }
    char *tail = mz_strdup(start);
    free(all);
    return tail;
}

char *mz_gw_log_tail(const mz_gw_t *gw, size_t max)
{
    return tail_of_file(gw->log_path, max);
}

static void gw_cleanup(void *p)
{
    mz_gw_t *gw = p;
    const char *verbose = getenv("MIZAN_TEST_VERBOSE");
    if (!gw->exited) {
        int st = -1;
        kill(gw->pid, SIGTERM);
        if (mz_reap(gw->pid, 5000, &st) == 0) {
            kill(gw->pid, SIGKILL);
            mz_reap(gw->pid, 5000, &st);
            fprintf(stderr, "e2e teardown: mizand pid %d ignored SIGTERM for 5 s, killed\n",
                    (int)gw->pid);
        }
        gw->exited = true;
        gw->exit_status = st;
        if (st != 0) {
            char *tail = read_file_raw(gw->log_path, NULL);
            fprintf(stderr, "e2e teardown: mizand pid %d exited with status %d; log %s:\n%s\n",
                    (int)gw->pid, st, gw->log_path, tail ? tail : "(unreadable)");
            free(tail);
        }
    }
    if (verbose != NULL && strcmp(verbose, "1") == 0) {
        char *all = read_file_raw(gw->log_path, NULL);
        fprintf(stderr, "--- %s ---\n%s\n", gw->log_path, all ? all : "(unreadable)");
        free(all);
    }
}

/* Port from an address "host:port" or "[v6]:port"; 0 when malformed. */
static int port_of(const char *addr)
{
    const char *colon = strrchr(addr, ':');
    if (colon == NULL || colon[1] == '\0')
        return 0;
    char *end = NULL;
    long port = strtol(colon + 1, &end, 10);
    if (*end != '\0' || port < 1 || port > 65535)
        return 0;
    return (int)port;
}

/* Scans log text for the first {"msg":"listening","addr":...} line. */
static int find_listening(const char *text)
{
    const char *line = text;
    while (line != NULL && *line != '\0') {
        const char *nl = strchr(line, '\n');
        if (nl == NULL)
            break; /* incomplete last line: wait for the rest */
        size_t len = (size_t)(nl - line);
        if (memmem(line, len, "listening", 9) != NULL) {
            json_t *obj = json_loadb(line, len, 0, NULL);
            const char *msg = json_string_value(json_object_get(obj, "msg"));
            const char *addr = json_string_value(json_object_get(obj, "addr"));
            int port = (msg && addr && strcmp(msg, "listening") == 0) ? port_of(addr) : 0;
            json_decref(obj);
            if (port > 0)
                return port;
        }
        line = nl + 1;
    }
    return 0;
}

mz_gw_t *mz_gw_start_opts(const mz_gw_opts_t *opts)
{
    static int seq; /* names configs/logs of several gateways in one dir */
    const char *bin = mz_bin();
    mz_gw_t *gw = mz_alloc(sizeof(*gw));
    gw->dir = opts->dir ? mz_strdup(opts->dir) : mz_tmpdir();

    json_t *cfg;
    if (opts->raw_config) {
        cr_assert(opts->config != NULL, "raw_config needs a config");
        cfg = json_deep_copy(opts->config);
        if (cfg == NULL)
            mz_oom(0);
    } else {
        cfg = mz_config_defaults(gw->dir);
        if (opts->config != NULL)
            mz_json_merge(cfg, opts->config);
    }
    gw->config = mz_keep(cfg);
    int n = ++seq;
    gw->config_path = mz_write_config(gw->dir, mz_fmt("mizan-%d.json", n), cfg);
    gw->log_path = mz_fmt("%s/mizand-%d.log", gw->dir, n);

    int logfd = open(gw->log_path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0600);
    cr_assert(logfd >= 0, "open %s: %s", gw->log_path, strerror(errno));
    const char *argv[] = {bin, "--config", gw->config_path, NULL};
    char why[256] = "";
    gw->started_ms = mz_now_ms();
    gw->pid = mz_spawn(argv, gw->dir, opts->env, logfd, logfd, why, sizeof(why));
    close(logfd);
    cr_assert(gw->pid > 0, "cannot start %s: %s", bin, why);
    mz_own(gw, gw_cleanup, MZ_PHASE_PROC);

    int timeout = opts->ready_timeout_ms > 0 ? opts->ready_timeout_ms : MZ_READY_TIMEOUT_MS;
    double deadline = gw->started_ms + timeout;
    for (;;) {
        char *text = read_file_raw(gw->log_path, NULL);
        int port = text ? find_listening(text) : 0;
        free(text);
        if (port > 0) {
            gw->port = port;
            return gw;
        }
        int st;
        if (mz_reap(gw->pid, 0, &st) == 1) {
            gw->exited = true;
            gw->exit_status = st;
            cr_assert_fail("mizand (%s) exited with status %d before listening\n"
                           "--- config %s ---\n%s\n--- log tail %s ---\n%s",
                           bin, st, gw->config_path, mz_read_file(gw->config_path), gw->log_path,
                           mz_gw_log_tail(gw, 4000));
        }
        if (mz_now_ms() >= deadline) {
            cr_assert_fail("mizand did not log \"msg\":\"listening\" with an \"addr\" within %d "
                           "ms\n--- log tail %s ---\n%s",
                           timeout, gw->log_path, mz_gw_log_tail(gw, 4000));
        }
        mz_sleep_ms(10);
    }
}

mz_gw_t *mz_gw_start(json_t *config)
{
    mz_gw_opts_t opts = {.config = config};
    return mz_gw_start_opts(&opts);
}

int mz_gw_wait(mz_gw_t *gw, int timeout_ms)
{
    if (gw->exited)
        return gw->exit_status;
    int st;
    if (mz_reap(gw->pid, timeout_ms, &st) == 0)
        return -1;
    gw->exited = true;
    gw->exit_status = st;
    return st;
}

bool mz_gw_alive(mz_gw_t *gw)
{
    return mz_gw_wait(gw, 0) == -1 && !gw->exited;
}

void mz_gw_signal(mz_gw_t *gw, int sig)
{
    cr_assert(mz_gw_alive(gw), "mizand already exited with status %d\n--- log tail ---\n%s",
              gw->exit_status, mz_gw_log_tail(gw, 4000));
    cr_assert(kill(gw->pid, sig) == 0, "kill(%d, %d): %s", (int)gw->pid, sig, strerror(errno));
}

int mz_gw_stop(mz_gw_t *gw, int timeout_ms)
{
    if (gw->exited)
        return gw->exit_status;
    if (timeout_ms <= 0)
        timeout_ms = MZ_STOP_TIMEOUT_MS;
    kill(gw->pid, SIGTERM);
    int st = mz_gw_wait(gw, timeout_ms);
    if (st == -1 && !gw->exited) {
        kill(gw->pid, SIGKILL);
        mz_gw_wait(gw, 5000);
        cr_assert_fail("mizand did not exit within %d ms of SIGTERM (killed)\n--- log tail ---\n%s",
                       timeout_ms, mz_gw_log_tail(gw, 4000));
    }
    return st;
}

void mz_gw_stop_ok(mz_gw_t *gw)
{
    int st = mz_gw_stop(gw, 0);
    cr_assert(st == 0, "mizand exited with status %d after SIGTERM (expected 0)\n--- log tail ---\n%s",
              st, mz_gw_log_tail(gw, 6000));
}

/* ========================================================================
 * Tokens
 * ====================================================================== */

static char *vtoken(const char *config_path, const char *sub, va_list ap)
{
    size_t nextra = 0;
    va_list count;
    va_copy(count, ap);
    while (va_arg(count, const char *) != NULL)
        nextra++;
    va_end(count);

    const char **argv = mz_alloc((7 + nextra) * sizeof(*argv));
    size_t k = 0;
    argv[k++] = mz_bin();
    argv[k++] = "token";
    argv[k++] = "--config";
    argv[k++] = config_path;
    argv[k++] = "--sub";
    argv[k++] = sub;
    for (const char *a; (a = va_arg(ap, const char *)) != NULL;)
        argv[k++] = a;
    argv[k] = NULL;

    mz_run_t *run = mz_run(argv, NULL, NULL, 20000);
    cr_assert(run->status == 0, "mizand token --config %s --sub %s exited %d\nstdout: %s\nstderr: %s",
              config_path, sub, run->status, run->out, run->err);
    size_t len = strlen(run->out);
    while (len > 0 && (run->out[len - 1] == '\n' || run->out[len - 1] == '\r' ||
                       run->out[len - 1] == ' '))
        run->out[--len] = '\0';
    int dots = 0;
    bool clean = len > 0;
    for (size_t i = 0; i < len; i++) {
        char ch = run->out[i];
        if (ch == '.')
            dots++;
        else if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
                   ch == '-' || ch == '_'))
            clean = false;
    }
    cr_assert(clean && dots == 2,
              "mizand token printed %s, expected one base64url header.payload.signature line",
              run->out);
    return run->out;
}

char *mz_token(const mz_gw_t *gw, const char *sub, ...)
{
    va_list ap;
    va_start(ap, sub);
    char *t = vtoken(gw->config_path, sub, ap);
    va_end(ap);
    return t;
}

char *mz_token_cfg(const char *config_path, const char *sub, ...)
{
    va_list ap;
    va_start(ap, sub);
    char *t = vtoken(config_path, sub, ap);
    va_end(ap);
    return t;
}

char *mz_find_exe(const char *name)
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
