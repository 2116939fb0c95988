/*
 * fault_support.c - helpers of the fault e2e tests (see fault_support.h):
 * the load generator, slow (slowloris) clients, many idle connections, the
 * `wrk` run, /proc readings, SIGSTOP with a guaranteed SIGCONT, and the
 * gateway started under a low descriptor limit.
 *
 * DESIGN: the load and trickle threads never assert; they append what they
 * saw under their set's mutex, and the main thread turns it into numbers.
 * Every set registers a teardown entry in the CONN phase, which runs before
 * processes are stopped: threads are told to stop and joined (each waits at
 * most one exchange timeout), sockets closed, paused processes continued.
 */
#include "fault_support.h"
#include "internal.h"

#include <criterion/criterion.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

/* Default bound on one exchange of a load thread. */
#define LOAD_TIMEOUT_MS 5000

/* Sleeps ms milliseconds unless *stop turns true first (checked every 20 ms). */
static void nap(int ms, atomic_bool *stop)
{
    while (ms > 0 && !atomic_load(stop)) {
        int step = ms < 20 ? ms : 20;
        mz_sleep_ms(step);
        ms -= step;
    }
}

static int cmp_start(const void *a, const void *b)
{
    double x = ((const mz_load_rec_t *)a)->start_ms;
    double y = ((const mz_load_rec_t *)b)->start_ms;
    return x < y ? -1 : x > y ? 1 : 0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a;
    double y = *(const double *)b;
    return x < y ? -1 : x > y ? 1 : 0;
}

/* ========================================================================
 * Load generator
 * ====================================================================== */

/* One client thread. */
typedef struct load_thread {
    struct mz_load *l;    /* its set */
    size_t index;         /* which thread (and so which request) */
    pthread_t tid;        /* valid once created */
    mz_load_rec_t *recs;  /* what it saw; guarded by l->lock */
    size_t n;             /* records used; guarded by l->lock */
    size_t cap;           /* records allocated; guarded by l->lock */
    bool ended;           /* left its loop; guarded by l->lock */
} load_thread_t;

struct mz_load {
    mz_load_opts_t o;        /* copy of the options (reqs borrowed) */
    load_thread_t *threads;  /* o.threads slots */
    size_t created;          /* threads actually started */
    atomic_bool stop;        /* tells the threads to end */
    pthread_mutex_t lock;    /* guards every thread's recs/n/cap/ended */
    bool joined;             /* threads joined (main thread only) */
    mz_load_rec_t *all;      /* records after the stop (arena) */
    size_t nall;             /* their count */
};

static void load_append(load_thread_t *t, const mz_load_rec_t *rec)
{
    pthread_mutex_lock(&t->l->lock);
    if (t->n == t->cap) {
        t->cap = t->cap ? t->cap * 2 : 256;
        t->recs = mz_xrealloc(t->recs, t->cap * sizeof(*t->recs));
    }
    t->recs[t->n++] = *rec;
    pthread_mutex_unlock(&t->l->lock);
}

/* Fills status, cache, code and Retry-After of rec from a response. */
static void load_note(mz_load_rec_t *rec, const mz_resp_t *r)
{
    rec->status = r->status;
    const char *cache = mz_header(r, "X-Mizan-Cache");
    if (cache != NULL)
        snprintf(rec->cache, sizeof(rec->cache), "%s", cache);
    const char *code = json_string_value(json_object_get(json_object_get(r->json, "error"), "code"));
    if (code != NULL)
        snprintf(rec->code, sizeof(rec->code), "%s", code);
    const char *ra = mz_header(r, "Retry-After");
    rec->retry_after = ra != NULL && ra[0] != '\0' && strspn(ra, "0123456789") == strlen(ra);
}

static void *load_main(void *arg)
{
    load_thread_t *t = arg;
    struct mz_load *l = t->l;
    const mz_req_t *req = &l->o.reqs[t->index % l->o.nreqs];
    struct mz_conn *c = NULL;
    while (!atomic_load(&l->stop)) {
        mz_load_rec_t rec;
        memset(&rec, 0, sizeof(rec));
        rec.thread = (int)t->index;
        rec.start_ms = mz_now_ms();
        if (c == NULL) {
            c = mz_conn_open_raw(l->o.port, l->o.timeout_ms, rec.err, sizeof(rec.err));
            if (c != NULL)
                c->timeout_ms = l->o.timeout_ms;
        }
        bool answered = false;
        if (c != NULL) {
            mz_resp_t *r = NULL;
            if (mz_try_request(c, req, &r, rec.err, sizeof(rec.err)) == 0) {
                load_note(&rec, r);
                answered = true;
            }
        }
        rec.end_ms = mz_now_ms();
        bool gone = !answered || c == NULL || c->peer_closed;
        rec.closed = answered && gone;
        if (answered)
            rec.err[0] = '\0';
        load_append(t, &rec);
        if (gone) {
            mz_conn_free_raw(c);
            c = NULL;
            if (l->o.stop_when_closed)
                break;
            if (!answered)
                nap(10, &l->stop); /* do not spin on a refused port */
        }
        nap(l->o.pause_ms, &l->stop);
    }
    mz_conn_free_raw(c);
    pthread_mutex_lock(&l->lock);
    t->ended = true;
    pthread_mutex_unlock(&l->lock);
    return NULL;
}

static void load_join(struct mz_load *l)
{
    if (l->joined)
        return;
    atomic_store(&l->stop, true);
    for (size_t i = 0; i < l->created; i++)
        pthread_join(l->threads[i].tid, NULL);
    l->joined = true;
}

static void load_cleanup(void *p)
{
    struct mz_load *l = p;
    load_join(l);
    for (size_t i = 0; i < l->o.threads; i++)
        free(l->threads[i].recs);
    pthread_mutex_destroy(&l->lock);
}

mz_load_t *mz_load_start(const mz_load_opts_t *opts)
{
    cr_assert(opts->threads > 0 && opts->nreqs > 0 && opts->reqs != NULL, "test bug: empty load");
    struct mz_load *l = mz_alloc(sizeof(*l));
    l->o = *opts;
    if (l->o.timeout_ms <= 0)
        l->o.timeout_ms = LOAD_TIMEOUT_MS;
    l->threads = mz_alloc(opts->threads * sizeof(*l->threads));
    atomic_init(&l->stop, false);
    pthread_mutex_init(&l->lock, NULL);
    mz_own(l, load_cleanup, MZ_PHASE_CONN);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 512 * 1024);
    int rc = 0;
    for (size_t i = 0; i < opts->threads; i++) {
        l->threads[i].l = l;
        l->threads[i].index = i;
        rc = pthread_create(&l->threads[i].tid, &attr, load_main, &l->threads[i]);
        if (rc != 0)
            break;
        l->created++;
    }
    pthread_attr_destroy(&attr);
    cr_assert(rc == 0, "pthread_create failed after %zu of %zu load threads: %s", l->created,
              opts->threads, strerror(rc));
    return l;
}

size_t mz_load_count(mz_load_t *l)
{
    size_t n = 0;
    pthread_mutex_lock(&l->lock);
    for (size_t i = 0; i < l->created; i++)
        n += l->threads[i].n;
    pthread_mutex_unlock(&l->lock);
    return n;
}

bool mz_load_finished(mz_load_t *l)
{
    bool all = true;
    pthread_mutex_lock(&l->lock);
    for (size_t i = 0; i < l->created; i++)
        all = all && l->threads[i].ended;
    pthread_mutex_unlock(&l->lock);
    return all;
}

mz_load_rec_t *mz_load_snapshot(mz_load_t *l, size_t *n)
{
    pthread_mutex_lock(&l->lock);
    size_t total = 0;
    for (size_t i = 0; i < l->created; i++)
        total += l->threads[i].n;
    mz_load_rec_t *all = mz_alloc((total ? total : 1) * sizeof(*all));
    size_t k = 0;
    for (size_t i = 0; i < l->created; i++) {
        if (l->threads[i].n > 0)
            memcpy(all + k, l->threads[i].recs, l->threads[i].n * sizeof(*all));
        k += l->threads[i].n;
    }
    pthread_mutex_unlock(&l->lock);
    qsort(all, total, sizeof(*all), cmp_start);
    *n = total;
    return all;
}

mz_load_rec_t *mz_load_stop(mz_load_t *l, size_t *n)
{
    if (!l->joined) {
        load_join(l);
        l->all = mz_load_snapshot(l, &l->nall);
    }
    *n = l->nall;
    return l->all;
}

char *mz_load_summary(const mz_load_rec_t *recs, size_t n)
{
    int statuses[16] = {0};
    size_t status_count[16] = {0};
    size_t nstatus = 0, failures = 0, hit = 0, miss = 0, bypass = 0, nocache = 0;
    const char *first_err = NULL;
    double *lat = mz_alloc((n ? n : 1) * sizeof(*lat));
    for (size_t i = 0; i < n; i++) {
        lat[i] = recs[i].end_ms - recs[i].start_ms;
        if (recs[i].status == 0) {
            failures++;
            if (first_err == NULL)
                first_err = recs[i].err;
            continue;
        }
        size_t k = 0;
        while (k < nstatus && statuses[k] != recs[i].status)
            k++;
        if (k == nstatus && nstatus < 16)
            statuses[nstatus++] = recs[i].status;
        if (k < 16)
            status_count[k]++;
        if (strcmp(recs[i].cache, "HIT") == 0)
            hit++;
        else if (strcmp(recs[i].cache, "MISS") == 0)
            miss++;
        else if (strcmp(recs[i].cache, "BYPASS") == 0)
            bypass++;
        else
            nocache++;
    }
    qsort(lat, n, sizeof(*lat), cmp_double);
    char *by_status = mz_fmt("%s", "");
    for (size_t k = 0; k < nstatus; k++)
        by_status = mz_fmt("%s%s%d: %zu", by_status, k ? ", " : "", statuses[k], status_count[k]);
    return mz_fmt("%zu exchanges (status %s; failures %zu%s%s%s; X-Mizan-Cache HIT %zu, MISS %zu, "
                  "BYPASS %zu, none %zu; latency max %.1f ms, p99 %.1f ms)",
                  n, nstatus ? by_status : "-", failures, first_err ? ", first: \"" : "",
                  first_err ? first_err : "", first_err ? "\"" : "", hit, miss, bypass, nocache,
                  n ? lat[n - 1] : 0.0, n ? lat[(size_t)((double)(n - 1) * 0.99)] : 0.0);
}

/* ========================================================================
 * Slow clients
 * ====================================================================== */

struct mz_trickle {
    int *fds;           /* n sockets; -1 once closed; written by the thread only until joined */
    size_t n;           /* connections */
    char *text;         /* what each sends, one byte per interval */
    size_t len;         /* strlen(text) */
    int interval_ms;    /* between two bytes */
    double first_ms;    /* when the first byte went out (thread) */
    double *closed_ms;  /* when the server closed each (0: open); guarded by lock */
    size_t sent;        /* bytes sent to each (thread) */
    size_t open;        /* connections not closed by the server; guarded by lock */
    pthread_mutex_t lock;
    atomic_bool stop;   /* tells the thread to end */
    pthread_t tid;
    bool running;       /* thread created and not joined */
    double *result;     /* mz_trickle_stop()'s answer (arena) */
};

/* The server closed connection i (thread). */
static void trickle_closed(struct mz_trickle *t, size_t i)
{
    close(t->fds[i]);
    t->fds[i] = -1;
    pthread_mutex_lock(&t->lock);
    t->closed_ms[i] = mz_now_ms();
    t->open--;
    pthread_mutex_unlock(&t->lock);
}

static void *trickle_main(void *arg)
{
    struct mz_trickle *t = arg;
    struct pollfd *pfd = mz_xmalloc(t->n * sizeof(*pfd));
    size_t *idx = mz_xmalloc(t->n * sizeof(*idx));
    double next = mz_now_ms();
    while (!atomic_load(&t->stop)) {
        double now = mz_now_ms();
        if (t->sent < t->len && now >= next) {
            for (size_t i = 0; i < t->n; i++) {
                if (t->fds[i] < 0)
                    continue;
                ssize_t w = send(t->fds[i], t->text + t->sent, 1, MSG_NOSIGNAL | MSG_DONTWAIT);
                if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                    trickle_closed(t, i);
            }
            if (t->sent == 0)
                t->first_ms = now;
            t->sent++;
            next += t->interval_ms;
        }
        size_t k = 0;
        for (size_t i = 0; i < t->n; i++) {
            if (t->fds[i] < 0)
                continue;
            pfd[k] = (struct pollfd){t->fds[i], POLLIN | POLLRDHUP, 0};
            idx[k++] = i;
        }
        int wait = (int)(next - mz_now_ms());
        if (wait > 20 || t->sent >= t->len)
            wait = 20;
        if (wait < 0)
            wait = 0;
        if (k == 0) {
            mz_sleep_ms(wait);
            continue;
        }
        int rc = poll(pfd, (nfds_t)k, wait);
        if (rc <= 0)
            continue;
        for (size_t j = 0; j < k; j++) {
            if (pfd[j].revents == 0)
                continue;
            char buf[512];
            ssize_t r = recv(pfd[j].fd, buf, sizeof(buf), MSG_DONTWAIT);
            /* Bytes (an error page) are read and dropped; the close follows. */
            if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
                trickle_closed(t, idx[j]);
        }
    }
    free(pfd);
    free(idx);
    return NULL;
}

static void trickle_join(struct mz_trickle *t)
{
    if (!t->running)
        return;
    atomic_store(&t->stop, true);
    pthread_join(t->tid, NULL);
    t->running = false;
}

static void trickle_cleanup(void *p)
{
    struct mz_trickle *t = p;
    trickle_join(t);
    for (size_t i = 0; i < t->n; i++)
        if (t->fds[i] >= 0)
            close(t->fds[i]);
    free(t->fds);
    free(t->closed_ms);
    pthread_mutex_destroy(&t->lock);
}

mz_trickle_t *mz_trickle_start(int port, size_t n, const char *text, int interval_ms)
{
    struct mz_trickle *t = mz_alloc(sizeof(*t));
    t->fds = mz_xmalloc(n * sizeof(*t->fds));
    t->closed_ms = mz_xmalloc(n * sizeof(*t->closed_ms));
    for (size_t i = 0; i < n; i++) {
        t->fds[i] = -1;
        t->closed_ms[i] = 0;
    }
    t->text = mz_strdup(text);
    t->len = strlen(text);
    t->interval_ms = interval_ms;
    pthread_mutex_init(&t->lock, NULL);
    atomic_init(&t->stop, false);
    mz_own(t, trickle_cleanup, MZ_PHASE_CONN);
    for (size_t i = 0; i < n; i++) {
        char err[256] = "";
        struct mz_conn *c = mz_conn_open_raw(port, 5000, err, sizeof(err));
        cr_assert(c != NULL, "slow client %zu of %zu: %s", i + 1, n, err);
        t->fds[i] = c->fd;
        c->fd = -1;
        mz_conn_free_raw(c);
        t->n = i + 1;
    }
    t->open = n;
    int rc = pthread_create(&t->tid, NULL, trickle_main, t);
    cr_assert(rc == 0, "pthread_create: %s", strerror(rc));
    t->running = true;
    return t;
}

size_t mz_trickle_open(mz_trickle_t *t)
{
    pthread_mutex_lock(&t->lock);
    size_t n = t->open;
    pthread_mutex_unlock(&t->lock);
    return n;
}

double *mz_trickle_stop(mz_trickle_t *t, size_t *bytes_sent)
{
    if (t->result == NULL) {
        trickle_join(t);
        t->result = mz_alloc((t->n ? t->n : 1) * sizeof(*t->result));
        for (size_t i = 0; i < t->n; i++) {
            t->result[i] = t->closed_ms[i] > 0 ? t->closed_ms[i] - t->first_ms : -1;
            if (t->fds[i] >= 0) {
                close(t->fds[i]);
                t->fds[i] = -1;
            }
        }
    }
    if (bytes_sent != NULL)
        *bytes_sent = t->sent;
    return t->result;
}

/* ========================================================================
 * Many idle connections
 * ====================================================================== */

struct mz_many {
    int *fds;  /* n sockets, -1 when not established or closed */
    size_t n;  /* sockets asked for */
};

void mz_many_close(mz_many_t *m)
{
    for (size_t i = 0; i < m->n; i++) {
        if (m->fds[i] >= 0) {
            close(m->fds[i]);
            m->fds[i] = -1;
        }
    }
}

static void many_cleanup(void *p)
{
    mz_many_t *m = p;
    mz_many_close(m);
    free(m->fds);
}

mz_many_t *mz_many_open(int port, size_t n, int timeout_ms, size_t *established, char *err,
                        size_t errlen)
{
    mz_many_t *m = mz_alloc(sizeof(*m));
    m->fds = mz_xmalloc((n ? n : 1) * sizeof(*m->fds));
    m->n = n;
    for (size_t i = 0; i < n; i++)
        m->fds[i] = -1;
    mz_own(m, many_cleanup, MZ_PHASE_CONN);
    err[0] = '\0';
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    /* pending[i]: 1 connecting, 2 established. */
    unsigned char *state = mz_alloc(n ? n : 1);
    size_t done = 0, connecting = 0;
    for (size_t i = 0; i < n; i++) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            snprintf(err, errlen, "socket %zu of %zu: %s", i + 1, n, strerror(errno));
            break;
        }
        if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
            state[i] = 2;
            done++;
        } else if (errno == EINPROGRESS) {
            state[i] = 1;
            connecting++;
        } else {
            snprintf(err, errlen, "connect %zu of %zu to 127.0.0.1:%d: %s", i + 1, n, port,
                     strerror(errno));
            close(fd);
            break;
        }
        m->fds[i] = fd;
    }
    double deadline = mz_now_ms() + timeout_ms;
    struct pollfd *pfd = mz_xmalloc((connecting ? connecting : 1) * sizeof(*pfd));
    size_t *idx = mz_xmalloc((connecting ? connecting : 1) * sizeof(*idx));
    while (connecting > 0) {
        size_t k = 0;
        for (size_t i = 0; i < n; i++) {
            if (state[i] == 1) {
                pfd[k] = (struct pollfd){m->fds[i], POLLOUT, 0};
                idx[k++] = i;
            }
        }
        int left = (int)(deadline - mz_now_ms());
        if (left <= 0) {
            if (err[0] == '\0')
                snprintf(err, errlen, "%zu connections still not established after %d ms",
                         connecting, timeout_ms);
            break;
        }
        int rc = poll(pfd, (nfds_t)k, left);
        if (rc < 0 && errno != EINTR) {
            snprintf(err, errlen, "poll: %s", strerror(errno));
            break;
        }
        for (size_t j = 0; rc > 0 && j < k; j++) {
            if (pfd[j].revents == 0)
                continue;
            size_t i = idx[j];
            int soerr = 0;
            socklen_t sl = sizeof(soerr);
            connecting--;
            if (getsockopt(m->fds[i], SOL_SOCKET, SO_ERROR, &soerr, &sl) == 0 && soerr == 0) {
                state[i] = 2;
                done++;
            } else {
                state[i] = 0;
                if (err[0] == '\0')
                    snprintf(err, errlen, "connect %zu to 127.0.0.1:%d: %s", i + 1, port,
                             strerror(soerr ? soerr : errno));
                close(m->fds[i]);
                m->fds[i] = -1;
            }
        }
    }
    for (size_t i = 0; i < n; i++) {
        if (state[i] != 2 && m->fds[i] >= 0) {
            close(m->fds[i]);
            m->fds[i] = -1;
        }
    }
    free(pfd);
    free(idx);
    *established = done;
    return m;
}

size_t mz_many_alive(mz_many_t *m)
{
    size_t alive = 0;
    for (size_t i = 0; i < m->n; i++) {
        if (m->fds[i] < 0)
            continue;
        char b;
        ssize_t r = recv(m->fds[i], &b, 1, MSG_PEEK | MSG_DONTWAIT);
        if (r > 0 || (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)))
            alive++;
    }
    return alive;
}

/* ========================================================================
 * Processes
 * ====================================================================== */

double mz_proc_cpu_ms(pid_t pid)
{
    char *path = mz_fmt("/proc/%d/stat", (int)pid);
    char *text = mz_read_file(path);
    if (text == NULL)
        return -1;
    /* The command name may hold spaces and parentheses: fields follow the last ')'. */
    const char *p = strrchr(text, ')');
    if (p == NULL)
        return -1;
    unsigned long long utime = 0, stime = 0;
    /* After ')': state (3) ... majflt/cmajflt (12, 13), utime (14), stime (15). */
    if (sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &utime, &stime) != 2)
        return -1;
    long tck = sysconf(_SC_CLK_TCK);
    return (double)(utime + stime) * 1000.0 / (double)(tck > 0 ? tck : 100);
}

long mz_proc_fd_count(pid_t pid)
{
    char *path = mz_fmt("/proc/%d/fd", (int)pid);
    DIR *d = opendir(path);
    if (d == NULL)
        return -1;
    long n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

long mz_proc_nofile(pid_t pid)
{
    struct rlimit rl;
    if (prlimit(pid, RLIMIT_NOFILE, NULL, &rl) != 0)
        return -1;
    return rl.rlim_cur == RLIM_INFINITY ? -1 : (long)rl.rlim_cur;
}

/* A process paused by mz_proc_pause(); continued at teardown if still paused. */
typedef struct paused {
    pid_t pid;
    bool stopped;
} paused_t;

enum { MAX_PAUSED = 8 };
static paused_t *paused_list[MAX_PAUSED]; /* main thread only */

static void paused_cleanup(void *p)
{
    paused_t *pp = p;
    if (pp->stopped)
        kill(pp->pid, SIGCONT);
    pp->stopped = false;
    for (size_t i = 0; i < MAX_PAUSED; i++)
        if (paused_list[i] == pp)
            paused_list[i] = NULL;
}

void mz_proc_pause(pid_t pid)
{
    paused_t *pp = NULL;
    for (size_t i = 0; i < MAX_PAUSED && pp == NULL; i++)
        if (paused_list[i] != NULL && paused_list[i]->pid == pid)
            pp = paused_list[i];
    for (size_t i = 0; i < MAX_PAUSED && pp == NULL; i++) {
        if (paused_list[i] == NULL) {
            pp = paused_list[i] = mz_alloc(sizeof(*pp));
            pp->pid = pid;
            mz_own(pp, paused_cleanup, MZ_PHASE_CONN);
        }
    }
    cr_assert(pp != NULL, "test bug: more than %d paused processes", MAX_PAUSED);
    cr_assert(kill(pid, SIGSTOP) == 0, "kill(%d, SIGSTOP): %s", (int)pid, strerror(errno));
    pp->stopped = true;
}

void mz_proc_resume(pid_t pid)
{
    for (size_t i = 0; i < MAX_PAUSED; i++)
        if (paused_list[i] != NULL && paused_list[i]->pid == pid)
            paused_list[i]->stopped = false;
    cr_assert(kill(pid, SIGCONT) == 0, "kill(%d, SIGCONT): %s", (int)pid, strerror(errno));
}

mz_gw_t *mz_gw_start_nofile(const mz_gw_opts_t *opts, long nofile)
{
    char *prlimit_bin = mz_find_exe("prlimit");
    cr_assert(prlimit_bin != NULL, "prlimit is needed to start the gateway under a low descriptor "
                                   "limit (Debian package util-linux)");
    const char *bin = mz_bin();
    cr_assert(strchr(bin, '\'') == NULL && strchr(prlimit_bin, '\'') == NULL,
              "test bug: a quote in %s or %s", bin, prlimit_bin);
    char *dir = mz_tmpdir();
    char *script = mz_write_file(dir, "mizand-nofile.sh",
                                 mz_fmt("#!/bin/sh\nexec '%s' --nofile=%ld:%ld -- '%s' \"$@\"\n",
                                        prlimit_bin, nofile, nofile, bin));
    cr_assert(chmod(script, 0700) == 0, "chmod %s: %s", script, strerror(errno));
    char *saved = mz_strdup(bin);
    cr_assert(setenv("MIZAN_TEST_BIN", script, 1) == 0);
    mz_gw_t *gw = mz_gw_start_opts(opts);
    cr_assert(setenv("MIZAN_TEST_BIN", saved, 1) == 0);
    return gw;
}

size_t mz_gw_log_count(const mz_gw_t *gw, const char *needle)
{
    char *text = mz_read_file(gw->log_path);
    size_t n = 0;
    for (const char *line = text; line != NULL && *line != '\0';) {
        const char *nl = strchr(line, '\n');
        size_t len = nl != NULL ? (size_t)(nl - line) : strlen(line);
        if (memmem(line, len, needle, strlen(needle)) != NULL)
            n++;
        line = nl != NULL ? nl + 1 : NULL;
    }
    return n;
}

/* ========================================================================
 * wrk
 * ====================================================================== */

/* A wrk duration ("337.04us", "1.14ms", "2.00s", "1.00m") in ms; -1 if unparsable. */
static double wrk_ms(const char *s)
{
    double v = 0;
    char unit[8] = "";
    if (sscanf(s, "%lf%7[a-z]", &v, unit) != 2)
        return -1;
    if (strcmp(unit, "us") == 0)
        return v / 1000.0;
    if (strcmp(unit, "ms") == 0)
        return v;
    if (strcmp(unit, "s") == 0)
        return v * 1000.0;
    if (strcmp(unit, "m") == 0)
        return v * 60000.0;
    if (strcmp(unit, "h") == 0)
        return v * 3600000.0;
    return -1;
}

mz_wrk_t *mz_wrk_run(int port, const char *path, const char *post_body, int threads, int conns,
                     int duration_s, int timeout_s)
{
    char *wrk = mz_find_exe("wrk");
    cr_assert(wrk != NULL, "wrk is not installed (Debian: apt-get install wrk)");
    const char *argv[16];
    size_t k = 0;
    argv[k++] = wrk;
    argv[k++] = "--latency";
    argv[k++] = "-t";
    argv[k++] = mz_fmt("%d", threads);
    argv[k++] = "-c";
    argv[k++] = mz_fmt("%d", conns);
    argv[k++] = "-d";
    argv[k++] = mz_fmt("%ds", duration_s);
    argv[k++] = "--timeout";
    argv[k++] = mz_fmt("%ds", timeout_s);
    if (post_body != NULL) {
        cr_assert(strstr(post_body, "]]") == NULL, "test bug: ]] in a wrk body");
        char *script = mz_write_file(mz_tmpdir(), "post.lua",
                                     mz_fmt("wrk.method = \"POST\"\n"
                                            "wrk.body = [[%s]]\n"
                                            "wrk.headers[\"Content-Type\"] = \"application/json\"\n",
                                            post_body));
        argv[k++] = "-s";
        argv[k++] = script;
    }
    argv[k++] = mz_fmt("http://127.0.0.1:%d%s", port, path);
    argv[k] = NULL;
    mz_run_t *run = mz_run(argv, NULL, NULL, (duration_s + timeout_s + 15) * 1000);
    cr_assert(run->status == 0, "wrk exited %d\nstdout: %s\nstderr: %s", run->status, run->out,
              run->err);
    mz_wrk_t *w = mz_alloc(sizeof(*w));
    w->out = run->out;
    w->latency_avg_ms = w->latency_max_ms = w->latency_p99_ms = -1;
    w->requests = -1;
    for (const char *line = run->out; line != NULL && *line != '\0';) {
        const char *nl = strchr(line, '\n');
        char *l = mz_fmt("%.*s", (int)(nl != NULL ? nl - line : (long)strlen(line)), line);
        char a[32], b[32], c[32];
        const char *t = l + strspn(l, " \t");
        if (strncmp(t, "Latency ", 8) == 0 && strncmp(t, "Latency Distribution", 20) != 0 &&
            sscanf(t + 8, "%31s %31s %31s", a, b, c) == 3) {
            w->latency_avg_ms = wrk_ms(a);
            w->latency_max_ms = wrk_ms(c);
        } else if (strncmp(t, "99%", 3) == 0 && sscanf(t + 3, "%31s", a) == 1) {
            w->latency_p99_ms = wrk_ms(a);
        } else if (strstr(t, " requests in ") != NULL) {
            w->requests = strtol(t, NULL, 10);
        } else if (strncmp(t, "Socket errors:", 14) == 0) {
            sscanf(t, "Socket errors: connect %ld, read %ld, write %ld, timeout %ld", &w->err_connect,
                   &w->err_read, &w->err_write, &w->err_timeout);
        } else if (strncmp(t, "Non-2xx or 3xx responses:", 25) == 0) {
            w->non2xx = strtol(t + 25, NULL, 10);
        }
        line = nl != NULL ? nl + 1 : NULL;
    }
    cr_assert(w->requests >= 0 && w->latency_max_ms >= 0, "cannot read wrk's summary:\n%s", run->out);
    return w;
}
