/*
 * upstream_client.c - the run-time half of upstream functions (see
 * upstream.h): an asynchronous HTTP/1.1 keep-alive client on every I/O
 * loop, written directly on the loop's event_base (nonblocking sockets, two
 * events per pooled connection created once) so that a call costs one
 * send(), one recv() and no allocation on the common path.
 *
 * DESIGN (one call): mizan_upstream_start() turns a job into a call (call
 * objects, their timer and their buffers are kept on a per-loop free list):
 * it prints the whole request once, "METHOD target" + the function's head
 * printed at start-up (Host, Accept, configured headers) + the per-call
 * headers (X-Request-Id, identity, token, Content-Type/Length) + the JSON
 * body, asks the upstream's circuit breaker, then takes an idle connection
 * of the loop's pool for that upstream (opening one while fewer than
 * pool_size exist) or waits in a bounded queue; a full queue is UNAVAILABLE
 * at once. Each connection carries one request at a time (no pipelining)
 * and stays open between requests (keep-alive), so sequential calls reuse
 * it. A query is retried here, after a short backoff, when the connection
 * failed (refused, reset, closed before an answer, or not established
 * within connect_timeout_ms), never after an answer or a timeout, and a
 * mutation is never retried. The call's deadline is the function's
 * timeout_ms, measured from the start: when it passes, the request is
 * cancelled (its connection closed) and the job comes back TIMEOUT, so a
 * late answer is never read.
 *
 * Timers: while a call waits for a connection or backs off, its own timer
 * event (kept with the call object) holds the deadline. While it is on a
 * connection, the connection's read event carries the timeout, re-armed
 * once per request to the nearer of the deadline and idle_timeout_ms (a
 * connection silent that long fails the call with TIMEOUT); a connecting
 * socket's write event carries the connect bound. An idle pooled connection
 * is closed once idle_timeout_ms passed since its last request.
 *
 * Answers are read by upstream_parse.c into the connection's buffers. A
 * connection is closed for good, never reused, when its framing is in doubt
 * (bytes past the answer's end, after a chunked body's end, a body on a
 * 1xx/204/304, duplicate or conflicting Content-Length/Transfer-Encoding,
 * bytes arriving while it is idle: logged and counted in
 * mizan_upstream_connections_dropped_total) or when the answer ends it
 * (Connection: close, not HTTP/1.1, a body ending with the connection).
 * Failures found while sending from within mizan_upstream_start() are
 * settled on the next turn of the loop (the call's timer is activated), so
 * the job is never handed back from within mizan_upstream_start(); an
 * answer is settled directly in the connection's read callback.
 *
 * Circuit breaker (one per upstream per instance, atomics shared by the
 * loops): closed until breaker_failures consecutive calls fail (connection
 * failure, timeout, 5xx, 429 or an unreadable answer); then open for
 * breaker_cooldown_ms, during which calls are UNAVAILABLE without touching
 * the network; then half-open: exactly one call is let through as a probe;
 * its success closes the breaker, its failure opens it again.
 */
#include "upstream.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/http.h>

#include "jsonread.h"
#include "log.h"
#include "text.h"
#include "metrics.h"
#include "token.h"
#include "upstream_parse.h"

/* Bound on an answer's status line and headers (and on chunked trailers). */
#define HEAD_MAX 65536
/* Receive buffer of a connection: first size, and what is kept when idle. */
#define IN_FIRST 4096
/* Request and answer buffers larger than this are not kept on the free list. */
#define KEEP_MAX 65536

typedef struct call call_t;
typedef struct pool pool_t;

/** A growable byte buffer, reused. */
typedef struct buf {
    char *p;
    size_t len, cap;
} buf_t;

/** One pooled connection slot. */
typedef struct conn {
    pool_t *pool;           /**< owner */
    int fd;                 /**< -1 while closed */
    bool connecting;        /**< connect() in progress */
    struct event *rev;      /**< EV_READ|EV_PERSIST with the call's timeout; created on first open */
    struct event *wev;      /**< EV_WRITE: connect completion, or a request send() could not finish */
    call_t *call;           /**< the call using it; NULL when idle */
    long long last_ms;      /**< when it last took a request (idle timeout) or received bytes */
    struct conn *fprev, *fnext; /**< the pool's free list while call == NULL */
    bool listed;            /**< on the free list */
    char *in;               /**< received bytes not yet consumed by the reader */
    size_t in_len, in_cap;
    mizan_upstream_parse_t parse; /**< the answer being read (its body buffer is reused) */
} conn_t;

/** A loop's connections to one upstream. */
struct pool {
    mizan_upstream_t *up;    /**< the service */
    conn_t *conns;           /**< pool_size slots */
    conn_t *fhead, *ftail;   /**< slots without a call: open ones first (most recent first), then closed */
    call_t *wait_head;       /**< calls waiting for a connection, oldest first */
    call_t *wait_tail;
    int nwait;               /**< length of the wait queue */
    struct sockaddr_storage sa; /**< the service's address */
    socklen_t salen;
};

/** A loop's client state. Loop thread only. */
struct mizan_upstream_loop {
    struct event_base *base;          /**< the loop's */
    void (*complete)(mizan_job_t *job); /**< hands a finished job back (the executor's) */
    pool_t *pools;   /**< one per upstream, by mizan_upstream_t.index */
    size_t npools;
    call_t *calls;   /**< every unfinished call (for shutdown) */
    call_t *spare;   /**< finished call objects, for reuse */
    bool closing;    /**< tearing down: do not hand connections to waiters */
};
typedef struct mizan_upstream_loop upstream_loop_t;

typedef enum {
    C_NEW = 0, /**< being set up */
    C_WAITING, /**< in its pool's wait queue */
    C_ACTIVE,  /**< a request in flight on conn */
    C_BACKOFF, /**< waiting before a retry */
} call_state_t;

/** What an attempt ended with. */
typedef enum {
    OUT_NONE = 0, /**< nothing yet */
    OUT_RESPONSE, /**< an HTTP answer: status, body */
    OUT_CONNECT,  /**< the connection failed before an answer */
    OUT_TIMEOUT,  /**< the connection went silent past idle_timeout_ms */
    OUT_INVALID,  /**< the answer could not be read (malformed, too large) */
} outcome_t;

/** One job's exchange with its upstream; loop thread only. */
struct call {
    /* Reset for every call (everything up to timer). */
    mizan_job_t *job;                /**< handed back exactly once, by finish() */
    const mizan_upstream_fn_t *spec; /**< what to send */
    upstream_loop_t *ul;
    pool_t *pool;
    conn_t *conn;                    /**< while C_ACTIVE */
    call_state_t state;
    outcome_t outcome;               /**< set when an attempt ends, consumed by settle() */
    int status;                      /**< HTTP status of OUT_RESPONSE */
    int attempts;                    /**< requests sent so far */
    size_t sent;                     /**< bytes of req written in this attempt */
    bool probe;                      /**< the breaker's half-open probe */
    bool judged;                     /**< the breaker has been told how this call went */
    const char *doubt;               /**< why the attempt's connection must not be reused (static), or NULL */
    bool violation;                  /**< doubt is a framing violation (logged, counted), not a plain close */
    long long t0, deadline;          /**< CLOCK_MONOTONIC ms */
    call_t *prev, *next;             /**< ul->calls */
    call_t *wnext;                   /**< pool wait queue, or ul->spare */
    /* Kept across calls on the free list. */
    struct event *timer;             /**< deadline while waiting or backing off; deferred settling */
    buf_t req;                       /**< the whole request: head and body */
    buf_t resp;                      /**< the answer's body (NUL-terminated) */
};

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static struct timeval ms_tv(long long ms)
{
    if (ms < 0)
        ms = 0;
    return (struct timeval){(time_t)(ms / 1000), (suseconds_t)((ms % 1000) * 1000)};
}

static void arm(call_t *c, long long at)
{
    struct timeval tv = ms_tv(at - now_ms());
    evtimer_add(c->timer, &tv);
}

/* Runs the call's timer callback on the next turn of the loop. */
static void kick(call_t *c)
{
    evtimer_del(c->timer);
    event_active(c->timer, EV_TIMEOUT, 0);
}

/* ---- buffers ------------------------------------------------------------ */

/* Room for n more bytes (and a NUL); -1 when out of memory. */
static int buf_reserve(buf_t *b, size_t n)
{
    return mizan_text_reserve(&b->p, &b->cap, b->len + n + 1, 512);
}

static int buf_add(buf_t *b, const void *s, size_t n)
{
    if (buf_reserve(b, n) < 0)
        return -1;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    return 0;
}

static int buf_str(buf_t *b, const char *s)
{
    return buf_add(b, s, strlen(s));
}

/* Frees a buffer grown past KEEP_MAX, so one large call does not pin memory. */
static void buf_trim(buf_t *b)
{
    b->len = 0;
    if (b->cap > KEEP_MAX) {
        free(b->p);
        b->p = NULL;
        b->cap = 0;
    }
}

/* ---- circuit breaker ---------------------------------------------------- */

typedef enum { B_ALLOW, B_PROBE, B_REJECT } verdict_t;

static verdict_t breaker_allow(mizan_upstream_t *up, long long now)
{
    if (up->breaker_failures == 0)
        return B_ALLOW;
    long long until = atomic_load_explicit(&up->open_until, memory_order_relaxed);
    if (until == 0)
        return B_ALLOW;
    if (now < until)
        return B_REJECT;
    bool expected = false;
    if (atomic_compare_exchange_strong(&up->probing, &expected, true))
        return B_PROBE;
    return B_REJECT;
}

/* Tells the breaker how call c went (once per call). */
static void breaker_judge(call_t *c, bool ok)
{
    mizan_upstream_t *up = c->pool->up;
    if (c->judged || up->breaker_failures == 0)
        return;
    c->judged = true;
    long long now = now_ms();
    if (ok) {
        atomic_store_explicit(&up->failures, 0, memory_order_relaxed);
        long long was = atomic_exchange(&up->open_until, 0);
        if (c->probe)
            atomic_store(&up->probing, false);
        if (was != 0)
            mizan_log(MIZAN_LOG_INFO, "upstream %s: circuit closed (a call succeeded)", up->name);
        return;
    }
    if (c->probe) {
        atomic_store(&up->open_until, now + up->breaker_cooldown_ms);
        atomic_store(&up->probing, false);
        atomic_fetch_add_explicit(&up->n_opened, 1, memory_order_relaxed);
        mizan_log(MIZAN_LOG_WARN, "upstream %s: half-open probe failed; circuit open for %d ms", up->name,
                  up->breaker_cooldown_ms);
        return;
    }
    int n = atomic_fetch_add_explicit(&up->failures, 1, memory_order_relaxed) + 1;
    long long closed = 0;
    if (n >= up->breaker_failures &&
        atomic_compare_exchange_strong(&up->open_until, &closed, now + up->breaker_cooldown_ms)) {
        atomic_fetch_add_explicit(&up->n_opened, 1, memory_order_relaxed);
        mizan_log(MIZAN_LOG_WARN, "upstream %s: %d consecutive failures; circuit open for %d ms", up->name, n,
                  up->breaker_cooldown_ms);
    }
}

/* ---- finishing ---------------------------------------------------------- */

/* Puts a finished call object on the free list (or frees it while closing). */
static void call_release(upstream_loop_t *ul, call_t *c)
{
    evtimer_del(c->timer);
    buf_trim(&c->req);
    buf_trim(&c->resp);
    c->wnext = ul->spare;
    ul->spare = c;
}

static void call_destroy(call_t *c)
{
    if (c->timer != NULL)
        event_free(c->timer);
    free(c->req.p);
    free(c->resp.p);
    free(c);
}

/* Hands the job back (its result or error already set) and recycles the call. */
static void finish(call_t *c)
{
    mizan_job_t *job = c->job;
    if (c->probe && !c->judged)
        atomic_store(&c->pool->up->probing, false); /* no verdict: let another call probe */
    /* "Ran" once a request was sent (or tried) to the service: a mutation
     * refused before that (circuit open, wait queue full) changed nothing. */
    job->ran = c->attempts > 0;
    job->run_us = (long)((now_ms() - c->t0) * 1000);
    if (job->code == MIZAN_OK && job->result == NULL)
        job->result = json_null();
    mizan_job_check_output(job);
    mizan_metrics_function(job->fn, job->run_us, job->code != MIZAN_OK);
    upstream_loop_t *ul = c->ul;
    if (c->prev != NULL)
        c->prev->next = c->next;
    else if (ul->calls == c)
        ul->calls = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    call_release(ul, c);
    ul->complete(job);
}

/* Sets the job's error (details stolen) and finishes. */
static void fail(call_t *c, mizan_code_t code, const char *message, json_t *details)
{
    mizan_req_error(c->job, code, message, details);
    finish(c);
}

/* Logs a failed call for operators (upstream name, status, attempts); never sent to clients. */
static void log_call(mizan_log_level_t level, const call_t *c, const char *what, int status)
{
    if (!mizan_log_enabled(level))
        return;
    json_t *f = json_pack("{s:s, s:s, s:s, s:i, s:i, s:s}", "upstream", c->pool != NULL ? c->pool->up->name : "?",
                          "function", c->job->fn->name, "reason", what, "status", status, "attempts", c->attempts,
                          "request_id", c->job->rid);
    mizan_log_fields(level, "upstream call failed", f);
    json_decref(f);
}

/* ---- connections ---------------------------------------------------------- */

/* Puts a slot without a call on its pool's free list: an open one first, a closed one last. */
static void free_add(conn_t *cn)
{
    pool_t *p = cn->pool;
    cn->listed = true;
    if (cn->fd >= 0) {
        cn->fprev = NULL;
        cn->fnext = p->fhead;
        if (p->fhead != NULL)
            p->fhead->fprev = cn;
        else
            p->ftail = cn;
        p->fhead = cn;
    } else {
        cn->fnext = NULL;
        cn->fprev = p->ftail;
        if (p->ftail != NULL)
            p->ftail->fnext = cn;
        else
            p->fhead = cn;
        p->ftail = cn;
    }
}

static void free_del(conn_t *cn)
{
    pool_t *p = cn->pool;
    if (!cn->listed)
        return;
    cn->listed = false;
    if (cn->fprev != NULL)
        cn->fprev->fnext = cn->fnext;
    else
        p->fhead = cn->fnext;
    if (cn->fnext != NULL)
        cn->fnext->fprev = cn->fprev;
    else
        p->ftail = cn->fprev;
    cn->fprev = cn->fnext = NULL;
}

/* An idle slot: an open connection first (reuse), else a closed one; NULL when all are busy. */
static conn_t *idle_conn(pool_t *p)
{
    return p->fhead;
}

/* Closes cn's socket (the slot opens a fresh one next time). */
static void conn_close(conn_t *cn)
{
    if (cn->fd < 0)
        return;
    bool listed = cn->listed;
    free_del(cn);
    event_del(cn->rev);
    event_del(cn->wev);
    close(cn->fd);
    cn->fd = -1;
    if (listed)
        free_add(cn); /* now closed: to the end of the free list */
    cn->connecting = false;
    cn->in_len = 0;
    if (cn->in_cap > IN_FIRST) {
        free(cn->in);
        cn->in = NULL;
        cn->in_cap = 0;
    }
}

/*
 * Closes a connection for good. A violation of the framing is logged and
 * counted; a plain close the service asked for (or a failure) is not.
 */
static void drop_conn(conn_t *cn, const char *why, bool violation)
{
    if (cn == NULL || cn->fd < 0)
        return;
    conn_close(cn);
    if (!violation)
        return;
    mizan_upstream_t *up = cn->pool->up;
    atomic_fetch_add_explicit(&up->n_dropped, 1, memory_order_relaxed);
    mizan_log(MIZAN_LOG_WARN, "upstream %s: connection closed, not reused: %s", up->name, why);
}

static void dispatch(call_t *c, conn_t *cn);

/* Gives freed connections to waiting calls. */
static void pool_kick(pool_t *p, upstream_loop_t *ul)
{
    conn_t *cn;
    while (!ul->closing && p->wait_head != NULL && (cn = idle_conn(p)) != NULL) {
        call_t *w = p->wait_head;
        p->wait_head = w->wnext;
        if (p->wait_head == NULL)
            p->wait_tail = NULL;
        w->wnext = NULL;
        p->nwait--;
        dispatch(w, cn);
    }
}

static void release_conn(call_t *c)
{
    conn_t *cn = c->conn;
    if (cn == NULL)
        return;
    cn->call = NULL;
    c->conn = NULL;
    if (cn->fd >= 0)
        event_del(cn->wev);
    free_add(cn);
    pool_kick(cn->pool, c->ul);
}

static void unwait(call_t *c)
{
    pool_t *p = c->pool;
    call_t **pp = &p->wait_head, *prev = NULL;
    while (*pp != NULL && *pp != c) {
        prev = *pp;
        pp = &(*pp)->wnext;
    }
    if (*pp == NULL)
        return;
    *pp = c->wnext;
    if (p->wait_tail == c)
        p->wait_tail = prev;
    c->wnext = NULL;
    p->nwait--;
}

static void settle(call_t *c);
static void timeout_active(call_t *c, const char *what);
static void send_more(call_t *c);

/* Ends the attempt in flight with outcome o; the connection is closed unless
 * it completed an answer. now: settle at once (from an event callback), else
 * on the next turn of the loop. */
static void attempt_end(call_t *c, outcome_t o, const char *close_why, bool now)
{
    c->outcome = o;
    if (now)
        evtimer_del(c->timer); /* a settling queued by dispatch() is superseded */
    if (close_why != NULL && c->doubt == NULL) {
        c->doubt = close_why;
        c->violation = false;
    }
    if (now)
        settle(c);
    else
        kick(c);
}

/* The timeout for the read event of a connection carrying c. */
static struct timeval busy_tv(const call_t *c, long long now)
{
    long long idle = c->pool->up->idle_timeout_ms;
    long long left = c->deadline - now;
    return ms_tv(left < idle ? left : idle);
}

/* Bytes on an idle connection, or its end, or its idle timeout. */
static void on_idle_event(conn_t *cn, short what)
{
    if (what & EV_TIMEOUT) {
        long long idle = cn->pool->up->idle_timeout_ms;
        long long quiet = now_ms() - cn->last_ms;
        if (quiet + 1 >= idle) {
            conn_close(cn);
        } else {
            struct timeval tv = ms_tv(idle - quiet);
            event_add(cn->rev, &tv);
        }
        return;
    }
    char tmp[512];
    ssize_t r = recv(cn->fd, tmp, sizeof(tmp), 0);
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    if (r > 0)
        drop_conn(cn, "bytes arrived on it while it was idle", true);
    else
        conn_close(cn); /* the service closed it (or it failed): quietly open a fresh one next time */
}

/* The connection's read event: the answer of its call, a timeout, or idle traffic. */
static void on_read(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    conn_t *cn = arg;
    call_t *c = cn->call;
    if (c == NULL) {
        on_idle_event(cn, what);
        return;
    }
    if (c->outcome != OUT_NONE)
        return; /* the attempt already ended; its settling is queued */
    long long now = now_ms();
    if (what & EV_TIMEOUT) {
        if (now >= c->deadline) {
            timeout_active(c, "no answer before the function's deadline");
        } else if (now - cn->last_ms + 1 >= c->pool->up->idle_timeout_ms) {
            timeout_active(c, "the connection went silent past idle_timeout_ms");
        } else {
            struct timeval tv = busy_tv(c, now);
            event_add(cn->rev, &tv);
        }
        return;
    }
    if (cn->in_cap - cn->in_len < 1024) {
        size_t cap = cn->in_cap < IN_FIRST ? IN_FIRST : cn->in_cap * 2;
        char *p = realloc(cn->in, cap);
        if (p == NULL) {
            attempt_end(c, OUT_INVALID, "out of memory", true);
            return;
        }
        cn->in = p;
        cn->in_cap = cap;
    }
    ssize_t r = recv(cn->fd, cn->in + cn->in_len, cn->in_cap - cn->in_len, 0);
    mizan_upstream_parse_rc_t rc;
    size_t used = 0;
    if (r < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            return;
        attempt_end(c, OUT_CONNECT, "the connection failed", true);
        return;
    }
    if (r == 0) {
        rc = mizan_upstream_parse_eof(&cn->parse);
        if (rc != MIZAN_UPARSE_DONE) {
            /* Closed before a whole answer: a connection failure (a query may retry). */
            attempt_end(c, OUT_CONNECT, "the service closed it", true);
            return;
        }
        used = cn->in_len;
    } else {
        cn->in_len += (size_t)r;
        cn->last_ms = now;
        rc = mizan_upstream_parse_feed(&cn->parse, cn->in, cn->in_len, &used);
    }
    if (rc == MIZAN_UPARSE_MORE) {
        if (used > 0) {
            memmove(cn->in, cn->in + used, cn->in_len - used);
            cn->in_len -= used;
        }
        if (now >= c->deadline) {
            timeout_active(c, "no answer before the function's deadline");
            return;
        }
        struct timeval tv = busy_tv(c, now);
        event_add(cn->rev, &tv);
        return;
    }
    if (rc == MIZAN_UPARSE_BAD) {
        attempt_end(c, OUT_INVALID, "an unreadable answer", true);
        return;
    }
    /* A whole answer. */
    mizan_upstream_parse_t *ps = &cn->parse;
    if (used < cn->in_len) {
        c->doubt = "bytes arrived past the end of an answer";
        c->violation = true;
    } else {
        c->doubt = ps->doubt;
        c->violation = ps->violation;
    }
    cn->in_len = 0;
    c->resp.len = 0;
    if (buf_add(&c->resp, ps->body, ps->body_len) < 0) {
        attempt_end(c, OUT_INVALID, "out of memory", true);
        return;
    }
    c->resp.p[c->resp.len] = '\0';
    if (ps->body_cap > KEEP_MAX)
        mizan_upstream_parse_deinit(ps); /* one large answer does not pin its buffer */
    c->status = ps->status;
    c->outcome = OUT_RESPONSE;
    settle(c);
}

/* The connection's write event: connect() finished or timed out, or the request can go on. */
static void on_write(evutil_socket_t fd, short what, void *arg)
{
    conn_t *cn = arg;
    call_t *c = cn->call;
    if (c == NULL || c->outcome != OUT_NONE)
        return;
    if (what & EV_TIMEOUT) {
        if (now_ms() >= c->deadline)
            timeout_active(c, "no answer before the function's deadline");
        else if (cn->connecting) /* not established within connect_timeout_ms: a connection failure */
            attempt_end(c, OUT_CONNECT, "it could not be established in time", true);
        else /* the service stopped reading the request */
            timeout_active(c, "the connection went silent past idle_timeout_ms");
        return;
    }
    if (cn->connecting) {
        int e = 0;
        socklen_t el = sizeof(e);
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &el) < 0 || e != 0) {
            attempt_end(c, OUT_CONNECT, "connect failed", true);
            return;
        }
        cn->connecting = false;
    }
    send_more(c);
}

/* Opens cn's socket towards its pool's service; -1 when that failed at once. */
static int conn_open(conn_t *cn, upstream_loop_t *ul)
{
    pool_t *p = cn->pool;
    if (cn->rev == NULL) {
        cn->rev = event_new(ul->base, -1, 0, on_read, cn);
        cn->wev = event_new(ul->base, -1, 0, on_write, cn);
        if (cn->rev == NULL || cn->wev == NULL)
            return -1;
    }
    int fd = socket(p->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    atomic_fetch_add_explicit(&p->up->n_connections, 1, memory_order_relaxed);
    int rc = connect(fd, (struct sockaddr *)&p->sa, p->salen);
    if (rc < 0 && errno != EINPROGRESS) {
        close(fd);
        return -1;
    }
    cn->fd = fd;
    cn->connecting = rc < 0;
    cn->in_len = 0;
    event_assign(cn->rev, ul->base, fd, EV_READ | EV_PERSIST, on_read, cn);
    event_assign(cn->wev, ul->base, fd, EV_WRITE, on_write, cn);
    return 0;
}

/* Writes what is left of c's request; waits for the socket when it is full. */
static void send_more(call_t *c)
{
    conn_t *cn = c->conn;
    while (c->sent < c->req.len) {
        ssize_t w = send(cn->fd, c->req.p + c->sent, c->req.len - c->sent, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                long long now = now_ms();
                struct timeval tv = busy_tv(c, now);
                event_add(cn->wev, &tv);
                return;
            }
            attempt_end(c, OUT_CONNECT, "the connection failed", true);
            return;
        }
        c->sent += (size_t)w;
    }
}

/* Sends c's request on cn (never settles synchronously). */
static void dispatch(call_t *c, conn_t *cn)
{
    c->state = C_ACTIVE;
    c->conn = cn;
    free_del(cn);
    cn->call = c;
    c->attempts++;
    c->sent = 0;
    c->doubt = NULL;
    c->violation = false;
    evtimer_del(c->timer);
    long long now = now_ms();
    cn->last_ms = now;
    if (cn->fd < 0 && conn_open(cn, c->ul) < 0) {
        attempt_end(c, OUT_CONNECT, NULL, false);
        return;
    }
    mizan_upstream_parse_begin(&cn->parse);
    cn->parse.max_head = HEAD_MAX;
    cn->parse.max_body = c->pool->up->max_response_bytes;
    struct timeval tv = busy_tv(c, now);
    if (event_add(cn->rev, &tv) < 0) {
        attempt_end(c, OUT_CONNECT, "cannot watch it", false);
        return;
    }
    if (cn->connecting) {
        long long ct = c->pool->up->connect_timeout_ms, left = c->deadline - now;
        struct timeval ctv = ms_tv(ct < left ? ct : left);
        if (event_add(cn->wev, &ctv) < 0)
            attempt_end(c, OUT_CONNECT, "cannot watch it", false);
        return;
    }
    /* Written at once on an established connection; a failure settles on the next turn. */
    while (c->sent < c->req.len) {
        ssize_t w = send(cn->fd, c->req.p + c->sent, c->req.len - c->sent, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                event_add(cn->wev, &tv);
                return;
            }
            attempt_end(c, OUT_CONNECT, "the connection failed", false);
            return;
        }
        c->sent += (size_t)w;
    }
}

/* Sends on an idle connection, or queues, or refuses. */
static void acquire(call_t *c)
{
    pool_t *p = c->pool;
    conn_t *cn = idle_conn(p);
    if (cn != NULL && p->wait_head == NULL) {
        dispatch(c, cn);
        return;
    }
    if (p->nwait >= p->up->queue_size) {
        atomic_fetch_add_explicit(&p->up->n_rejected, 1, memory_order_relaxed);
        /* Overload: one line per refused call would flood the log at warn. */
        log_call(MIZAN_LOG_DEBUG, c, "every pooled connection is busy and the wait queue is full", 0);
        fail(c, MIZAN_UNAVAILABLE, "the upstream service is busy; retry shortly", NULL);
        return;
    }
    c->state = C_WAITING;
    c->wnext = NULL;
    if (p->wait_tail != NULL)
        p->wait_tail->wnext = c;
    else
        p->wait_head = c;
    p->wait_tail = c;
    p->nwait++;
    arm(c, c->deadline);
    if (cn != NULL)
        pool_kick(p, c->ul);
}

/* ---- answers ------------------------------------------------------------------ */

/*
 * A violation list found in the upstream's error body (doc borrowed): the
 * body itself, or its "detail", "details", "errors" or "error.details"
 * member, when every entry has loc (array), msg and type (strings).
 * Returns it normalised to {loc, msg, type} with loc under "args" (new), or
 * NULL when there is none.
 */
static json_t *violations(const json_t *doc)
{
    const json_t *cands[5] = {doc, json_object_get(doc, "detail"), json_object_get(doc, "details"),
                              json_object_get(doc, "errors"),
                              json_object_get(json_object_get(doc, "error"), "details")};
    for (size_t k = 0; k < sizeof(cands) / sizeof(cands[0]); k++) {
        const json_t *list = cands[k];
        if (!json_is_array(list) || json_array_size(list) == 0)
            continue;
        json_t *out = json_array();
        size_t i;
        json_t *item;
        json_array_foreach(list, i, item)
        {
            json_t *loc = json_object_get(item, "loc"), *msg = json_object_get(item, "msg");
            json_t *type = json_object_get(item, "type");
            if (out == NULL || !json_is_array(loc) || !json_is_string(msg) || !json_is_string(type)) {
                json_decref(out);
                out = NULL;
                break;
            }
            json_t *nloc = json_array();
            json_array_append_new(nloc, json_string("args"));
            size_t j;
            json_t *part;
            json_array_foreach(loc, j, part)
            {
                /* The upstream's own framing (where it read the argument) means nothing to our client. */
                if (j == 0 && json_is_string(part) &&
                    (strcmp(json_string_value(part), "body") == 0 || strcmp(json_string_value(part), "query") == 0 ||
                     strcmp(json_string_value(part), "path") == 0 || strcmp(json_string_value(part), "args") == 0))
                    continue;
                if (json_is_string(part) || json_is_integer(part))
                    json_array_append(nloc, part);
            }
            json_array_append_new(out, json_pack("{s:o, s:O, s:O}", "loc", nloc, "msg", msg, "type", type));
        }
        if (out != NULL)
            return out;
    }
    return NULL;
}

/* Maps an HTTP answer onto the job (result, or protocol error) and finishes. */
static void answer(call_t *c)
{
    mizan_upstream_t *up = c->pool->up;
    int st = c->status;
    json_t *doc = c->resp.len > 0 ? mizan_json_read(c->resp.p, c->resp.len) : NULL;
    if (st >= 200 && st <= 299) {
        breaker_judge(c, true);
        json_t *whole = c->resp.len == 0 ? json_null() : doc;
        if (whole == NULL) {
            atomic_fetch_add_explicit(&up->n_invalid, 1, memory_order_relaxed);
            log_call(MIZAN_LOG_WARN, c, "a success answer whose body is not JSON", st);
            fail(c, MIZAN_INTERNAL_ERROR, "the upstream answer is not JSON", NULL);
            return;
        }
        json_t *v = mizan_json_pointer_get(&c->spec->result, whole);
        if (v == NULL) {
            atomic_fetch_add_explicit(&up->n_invalid, 1, memory_order_relaxed);
            log_call(MIZAN_LOG_WARN, c, "the result pointer matched nothing in the answer", st);
            json_decref(whole);
            fail(c, MIZAN_INTERNAL_ERROR, "the upstream answer lacks the configured result", NULL);
            return;
        }
        atomic_fetch_add_explicit(&up->n_ok, 1, memory_order_relaxed);
        mizan_req_result(c->job, json_incref(v));
        json_decref(whole);
        finish(c);
        return;
    }
    if (st == 408 || st == 429 || st >= 500) {
        breaker_judge(c, false);
        atomic_fetch_add_explicit(st == 408 ? &up->n_timeout : &up->n_server, 1, memory_order_relaxed);
        log_call(MIZAN_LOG_WARN, c, st == 408 ? "the upstream timed out" : "the upstream is failing or overloaded", st);
        json_decref(doc);
        if (st == 408)
            fail(c, MIZAN_TIMEOUT, "the upstream service did not answer in time", NULL);
        else
            fail(c, MIZAN_UNAVAILABLE, "the upstream service is unavailable", NULL);
        return;
    }
    if (st < 400) {
        /* 1xx leftovers and redirects: the config points at the wrong place. */
        breaker_judge(c, false);
        atomic_fetch_add_explicit(&up->n_invalid, 1, memory_order_relaxed);
        log_call(MIZAN_LOG_WARN, c, "an unexpected status (redirects are not followed)", st);
        json_decref(doc);
        fail(c, MIZAN_INTERNAL_ERROR, "the upstream answered with an unexpected status", NULL);
        return;
    }
    /* 4xx: the service works; the request or the caller was refused. */
    breaker_judge(c, true);
    atomic_fetch_add_explicit(&up->n_client, 1, memory_order_relaxed);
    switch (st) {
    case 401:
        json_decref(doc);
        fail(c, MIZAN_UNAUTHORIZED, "the upstream service requires authentication", NULL);
        return;
    case 403:
        json_decref(doc);
        fail(c, MIZAN_FORBIDDEN, "the upstream service refused this caller", NULL);
        return;
    case 404:
        json_decref(doc);
        fail(c, MIZAN_NOT_FOUND, "not found", NULL);
        return;
    case 413:
        json_decref(doc);
        fail(c, MIZAN_PAYLOAD_TOO_LARGE, "the upstream service found the request too large", NULL);
        return;
    default:
        break;
    }
    json_t *list = (st == 400 || st == 422) && doc != NULL ? violations(doc) : NULL;
    if (list != NULL) {
        char msg[64];
        size_t n = json_array_size(list);
        snprintf(msg, sizeof(msg), "%zu validation error%s", n, n == 1 ? "" : "s");
        json_decref(doc);
        fail(c, MIZAN_VALIDATION_FAILED, msg, list);
        return;
    }
    /* The upstream's own JSON explains; anything that is not JSON stays out. */
    fail(c, MIZAN_BAD_REQUEST, "the upstream service rejected the request", doc);
}

static bool retryable(const call_t *c, long long now)
{
    const mizan_upstream_t *up = c->pool->up;
    return c->job->fn->kind == MIZAN_QUERY && !c->probe && c->attempts <= up->retries && now < c->deadline &&
           (up->breaker_failures == 0 || atomic_load_explicit(&up->open_until, memory_order_relaxed) == 0);
}

/* The call's deadline (or idle_timeout_ms of silence) passed on its connection: cancel it. */
static void timeout_active(call_t *c, const char *what)
{
    mizan_upstream_t *up = c->pool->up;
    drop_conn(c->conn, "cancelled", false);
    release_conn(c);
    breaker_judge(c, false);
    atomic_fetch_add_explicit(&up->n_timeout, 1, memory_order_relaxed);
    log_call(MIZAN_LOG_WARN, c, what, 0);
    fail(c, MIZAN_TIMEOUT, "the upstream service did not answer in time", NULL);
}

/* Consumes the outcome of the attempt that just ended. */
static void settle(call_t *c)
{
    outcome_t o = c->outcome;
    mizan_upstream_t *up = c->pool->up;
    c->outcome = OUT_NONE;
    if (c->doubt != NULL)
        drop_conn(c->conn, c->doubt, c->violation);
    c->doubt = NULL;
    release_conn(c);
    long long now = now_ms();
    switch (o) {
    case OUT_RESPONSE:
        answer(c);
        return;
    case OUT_CONNECT:
        if (retryable(c, now)) {
            long long backoff = (long long)up->retry_backoff_ms << (c->attempts - 1 < 10 ? c->attempts - 1 : 10);
            atomic_fetch_add_explicit(&up->n_retries, 1, memory_order_relaxed);
            c->state = C_BACKOFF;
            arm(c, now + backoff < c->deadline ? now + backoff : c->deadline);
            return;
        }
        breaker_judge(c, false);
        atomic_fetch_add_explicit(&up->n_connect, 1, memory_order_relaxed);
        log_call(MIZAN_LOG_WARN, c, "cannot connect, or the connection was lost before an answer", 0);
        fail(c, MIZAN_UNAVAILABLE, "the upstream service is unavailable", NULL);
        return;
    case OUT_TIMEOUT:
        breaker_judge(c, false);
        atomic_fetch_add_explicit(&up->n_timeout, 1, memory_order_relaxed);
        log_call(MIZAN_LOG_WARN, c, "the connection went silent past idle_timeout_ms", 0);
        fail(c, MIZAN_TIMEOUT, "the upstream service did not answer in time", NULL);
        return;
    case OUT_INVALID:
    default:
        breaker_judge(c, false);
        atomic_fetch_add_explicit(&up->n_invalid, 1, memory_order_relaxed);
        log_call(MIZAN_LOG_WARN, c, "an unreadable answer (malformed, or over max_response_bytes)", 0);
        fail(c, MIZAN_UNAVAILABLE, "the upstream service sent an invalid answer", NULL);
        return;
    }
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    call_t *c = arg;
    if (c->outcome != OUT_NONE) {
        settle(c);
        return;
    }
    mizan_upstream_t *up = c->pool->up;
    long long now = now_ms();
    switch (c->state) {
    case C_WAITING:
        unwait(c);
        atomic_fetch_add_explicit(&up->n_timeout, 1, memory_order_relaxed);
        log_call(MIZAN_LOG_WARN, c, "no pooled connection became free before the deadline", 0);
        fail(c, MIZAN_TIMEOUT, "the upstream service did not answer in time", NULL);
        return;
    case C_BACKOFF:
        if (now >= c->deadline) {
            breaker_judge(c, false);
            atomic_fetch_add_explicit(&up->n_connect, 1, memory_order_relaxed);
            log_call(MIZAN_LOG_WARN, c, "cannot connect before the deadline", 0);
            fail(c, MIZAN_UNAVAILABLE, "the upstream service is unavailable", NULL);
            return;
        }
        acquire(c);
        return;
    case C_ACTIVE:
    case C_NEW:
    default:
        return; /* the connection's events watch an active call */
    }
}

/* ---- building the request ------------------------------------------------------ */

static bool unreserved(unsigned char ch)
{
    return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-' ||
           ch == '.' || ch == '_' || ch == '~';
}

/* Appends s[0..n) percent-encoded. -1 when out of memory. */
static int encode(buf_t *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    if (buf_reserve(b, n * 3) < 0)
        return -1;
    char *o = b->p + b->len;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (unreserved(ch)) {
            *o++ = (char)ch;
        } else {
            *o++ = '%';
            *o++ = hex[ch >> 4];
            *o++ = hex[ch & 15];
        }
    }
    b->len = (size_t)(o - b->p);
    return 0;
}

/* The text form of a non-string scalar v (borrowed) into buf (cap 64): numbers
 * in shortest round-trip form, true/false. Its length, or -1 for anything else. */
static int scalar_text(const json_t *v, char *buf, size_t cap)
{
    if (json_is_integer(v))
        return snprintf(buf, cap, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
    if (json_is_real(v)) {
        double d = json_real_value(v);
        int n = 0;
        for (int prec = 1; prec <= 17; prec++) {
            n = snprintf(buf, cap, "%.*g", prec, d);
            if (strtod(buf, NULL) == d)
                break;
        }
        return n;
    }
    if (json_is_boolean(v))
        return snprintf(buf, cap, "%s", json_is_true(v) ? "true" : "false");
    return -1;
}

static bool listed(char *const *list, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(list[i], name) == 0)
            return true;
    return false;
}

static bool path_arg(const mizan_upstream_fn_t *s, const char *name)
{
    for (size_t i = 0; i < s->nsegs; i++)
        if (s->segs[i].is_arg && strcmp(s->segs[i].text, name) == 0)
            return true;
    return false;
}

/* Where one argument goes. */
static mizan_upstream_place_t place_of(const mizan_upstream_fn_t *s, const char *name)
{
    if (listed(s->query, s->nquery, name))
        return MIZAN_UPSTREAM_QUERY;
    if (listed(s->body, s->nbody, name))
        return MIZAN_UPSTREAM_BODY;
    return path_arg(s, name) ? MIZAN_UPSTREAM_NOWHERE : s->rest;
}

/* Appends v (borrowed) percent-encoded: a string's bytes as they are (NUL
 * included), a number or boolean in its text form, an object or array as
 * compact JSON. -1 when out of memory (or for null, which callers leave out). */
static int encode_value(buf_t *b, const json_t *v)
{
    if (json_is_string(v))
        return encode(b, json_string_value(v), json_string_length(v));
    char text[64];
    int n = scalar_text(v, text, sizeof(text));
    if (n >= 0)
        return encode(b, text, (size_t)n);
    if (json_is_null(v))
        return -1;
    char *dump = json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS);
    if (dump == NULL)
        return -1;
    int rc = encode(b, dump, strlen(dump));
    free(dump);
    return rc;
}

/* Appends "?name=value" or "&name=value" (v borrowed); null values are left out. */
static int add_query_pair(buf_t *b, bool *first, const char *name, const json_t *v)
{
    if (json_is_null(v))
        return 0;
    if (buf_add(b, *first ? "?" : "&", 1) < 0)
        return -1;
    *first = false;
    if (encode(b, name, strlen(name)) < 0 || buf_add(b, "=", 1) < 0)
        return -1;
    return encode_value(b, v);
}

/* A VALIDATION_FAILED detail list for one argument (new reference). */
static json_t *arg_violation(const char *name, const char *msg)
{
    return json_pack("[{s:[s,s], s:s, s:s}]", "loc", "args", name, "msg", msg, "type", "upstream");
}

/* True when s can be sent as a header value (no control characters). */
static bool header_safe(const char *s)
{
    for (const unsigned char *q = (const unsigned char *)s; *q; q++)
        if ((*q < 0x20 && *q != '\t') || *q == 0x7f)
            return false;
    return true;
}

/* Appends "name: value\r\n". */
static int add_header(buf_t *b, const char *name, const char *value)
{
    size_t nn = strlen(name), vn = strlen(value);
    if (buf_reserve(b, nn + vn + 4) < 0)
        return -1;
    char *o = b->p + b->len;
    memcpy(o, name, nn);
    o += nn;
    *o++ = ':';
    *o++ = ' ';
    memcpy(o, value, vn);
    o += vn;
    *o++ = '\r';
    *o++ = '\n';
    b->len = (size_t)(o - b->p);
    return 0;
}

static int dump_to_buf(const char *s, size_t n, void *arg)
{
    return buf_add(arg, s, n);
}

/* The identity headers of c's caller; 1 when a claim cannot be sent in a header, -1 when out of memory. */
static int add_identity(call_t *c, buf_t *b)
{
    const mizan_upstream_fn_t *s = c->spec;
    const mizan_upstream_t *up = s->up;
    const mizan_identity_t *id = &c->job->caller->id;
    if (id->sub == NULL || s->no_identity)
        return 0;
    bool safe = true;
    for (const unsigned char *q = (const unsigned char *)id->sub; safe && *q; q++)
        safe = *q >= 0x20 && *q != 0x7f;
    for (size_t i = 0; safe && i < id->nperms; i++)
        for (const unsigned char *q = (const unsigned char *)id->perms[i]; safe && *q; q++)
            safe = *q >= 0x20 && *q != 0x7f && *q != ',';
    if (!safe)
        return 1;
    int rc = 0;
    if (up->sub_header != NULL)
        rc |= add_header(b, up->sub_header, id->sub);
    if (up->staff_header != NULL)
        rc |= add_header(b, up->staff_header, id->staff ? "true" : "false");
    if (up->superuser_header != NULL)
        rc |= add_header(b, up->superuser_header, id->superuser ? "true" : "false");
    if (up->perms_header != NULL) {
        rc |= buf_str(b, up->perms_header) | buf_add(b, ": ", 2);
        for (size_t i = 0; i < id->nperms; i++) {
            if (i > 0)
                rc |= buf_add(b, ",", 1);
            rc |= buf_str(b, id->perms[i]);
        }
        rc |= buf_add(b, "\r\n", 2);
    }
    const char *tok = c->job->caller != NULL ? c->job->caller->token : NULL;
    if (up->forward_token && tok != NULL && header_safe(tok))
        rc |= buf_add(b, "Authorization: Bearer ", 22) | buf_str(b, tok) | buf_add(b, "\r\n", 2);
    return rc != 0 ? -1 : 0;
}

/*
 * Prints c's whole request into c->req from the job's args and caller
 * (c->resp holds the JSON body meanwhile). -1 after failing the call
 * (which is then recycled).
 */
static int build(call_t *c)
{
    const mizan_upstream_fn_t *s = c->spec;
    const mizan_upstream_t *up = s->up;
    const json_t *args = c->job->args;
    buf_t *b = &c->req;
    json_t *body = s->has_body ? json_object() : NULL;
    int rc = -1;
    b->len = 0;
    c->resp.len = 0;
    if ((s->has_body && body == NULL) || buf_str(b, s->method_name) < 0 || buf_add(b, " ", 1) < 0)
        goto oom;
    size_t target = b->len;
    if (buf_str(b, up->base_path) < 0)
        goto oom;
    for (size_t i = 0; i < s->nsegs; i++) {
        const mizan_upstream_seg_t *seg = &s->segs[i];
        if (!seg->is_arg) {
            if (buf_str(b, seg->text) < 0)
                goto oom;
            continue;
        }
        const json_t *v = json_object_get(args, seg->text);
        if (v == NULL || json_is_null(v) || json_is_object(v) || json_is_array(v)) {
            fail(c, MIZAN_VALIDATION_FAILED, "1 validation error",
                 arg_violation(seg->text, "must be a string, number or boolean to fill the upstream path"));
            goto done;
        }
        if (json_is_string(v) && (json_string_length(v) == 0 || strcmp(json_string_value(v), ".") == 0 ||
                                  strcmp(json_string_value(v), "..") == 0)) {
            fail(c, MIZAN_VALIDATION_FAILED, "1 validation error",
                 arg_violation(seg->text, "cannot be empty, \".\" or \"..\" in the upstream path"));
            goto done;
        }
        if (encode_value(b, v) < 0)
            goto oom;
    }
    if (b->len == target && buf_add(b, "/", 1) < 0)
        goto oom;
    bool first = true;
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)args, key, v)
    {
        mizan_upstream_place_t where = place_of(s, key);
        if (where == MIZAN_UPSTREAM_BODY && body != NULL) {
            json_object_set(body, key, v);
            continue;
        }
        if (where != MIZAN_UPSTREAM_QUERY)
            continue;
        int qrc = 0;
        if (json_is_array(v)) {
            /* A list repeats the name: ?tag=a&tag=b. */
            size_t k;
            json_t *item;
            json_array_foreach(v, k, item) qrc |= add_query_pair(b, &first, key, item);
        } else {
            qrc = add_query_pair(b, &first, key, v);
        }
        if (qrc < 0)
            goto oom;
    }
    if (buf_add(b, s->head, s->head_len) < 0)
        goto oom;
    if (c->job->rid[0] != '\0' && header_safe(c->job->rid) && add_header(b, "X-Request-Id", c->job->rid) < 0)
        goto oom;
    int id = add_identity(c, b);
    if (id > 0) {
        fail(c, MIZAN_BAD_REQUEST, "the token holds a claim that cannot be forwarded in an HTTP header", NULL);
        goto done;
    }
    if (id < 0)
        goto oom;
    if (body != NULL) {
        if (json_dump_callback(body, dump_to_buf, &c->resp, JSON_COMPACT | JSON_SORT_KEYS) != 0)
            goto oom;
        char len[64];
        int n = snprintf(len, sizeof(len), "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
                         c->resp.len);
        if (buf_add(b, len, (size_t)n) < 0 || buf_add(b, c->resp.p, c->resp.len) < 0)
            goto oom;
        c->resp.len = 0;
    } else if (s->method == EVHTTP_REQ_POST || s->method == EVHTTP_REQ_PUT || s->method == EVHTTP_REQ_PATCH) {
        if (buf_str(b, "Content-Length: 0\r\n\r\n") < 0)
            goto oom;
    } else if (buf_add(b, "\r\n", 2) < 0) {
        goto oom;
    }
    rc = 0;
    goto done;
oom:
    fail(c, MIZAN_INTERNAL_ERROR, "out of memory", NULL);
done:
    json_decref(body);
    return rc;
}

/* ---- entry points -------------------------------------------------------------- */

/* A call object from the free list, or a new one; NULL when out of memory. */
static call_t *call_get(upstream_loop_t *ul)
{
    call_t *c = ul->spare;
    if (c != NULL) {
        ul->spare = c->wnext;
        memset(c, 0, offsetof(call_t, timer));
        return c;
    }
    c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    if ((c->timer = evtimer_new(ul->base, on_timer, c)) == NULL) {
        free(c);
        return NULL;
    }
    return c;
}

void mizan_upstream_start(mizan_upstream_loop_t *ul, mizan_job_t *job)
{
    const mizan_upstream_fn_t *spec = job->fn->upstream;
    call_t *c = spec != NULL && spec->up->index < ul->npools ? call_get(ul) : NULL;
    if (c == NULL) {
        mizan_req_error(job, MIZAN_INTERNAL_ERROR, "out of memory", NULL);
        job->ran = true;
        ul->complete(job);
        return;
    }
    c->job = job;
    c->spec = spec;
    c->ul = ul;
    c->pool = &ul->pools[spec->up->index];
    c->t0 = now_ms();
    c->deadline = c->t0 + job->fn->timeout_ms;
    c->next = ul->calls;
    if (ul->calls != NULL)
        ul->calls->prev = c;
    ul->calls = c;
    if (build(c) < 0)
        return;
    mizan_upstream_t *up = spec->up;
    verdict_t v = breaker_allow(up, c->t0);
    if (v == B_REJECT) {
        atomic_fetch_add_explicit(&up->n_rejected, 1, memory_order_relaxed);
        fail(c, MIZAN_UNAVAILABLE, "the upstream service is unavailable (circuit open)", NULL);
        return;
    }
    c->probe = v == B_PROBE;
    acquire(c);
}

/* The service's address for connect(); -1 when address is not numeric. */
static int pool_address(pool_t *p)
{
    memset(&p->sa, 0, sizeof(p->sa));
    struct sockaddr_in *v4 = (struct sockaddr_in *)&p->sa;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&p->sa;
    if (inet_pton(AF_INET, p->up->address, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)p->up->port);
        p->salen = sizeof(*v4);
        return 0;
    }
    if (inet_pton(AF_INET6, p->up->address, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)p->up->port);
        p->salen = sizeof(*v6);
        return 0;
    }
    return -1;
}

int mizan_upstream_loop_new(struct event_base *base, const mizan_upstreams_t *ups,
                            void (*complete)(mizan_job_t *job), mizan_upstream_loop_t **out, mizan_err_t *err)
{
    *out = NULL;
    if (ups == NULL || ups->nups == 0)
        return 0;
    upstream_loop_t *ul = calloc(1, sizeof(*ul));
    if (ul == NULL)
        return mizan_err_set(err, "out of memory");
    *out = ul;
    ul->base = base;
    ul->complete = complete;
    if ((ul->pools = calloc(ups->nups, sizeof(*ul->pools))) == NULL)
        return mizan_err_set(err, "out of memory");
    ul->npools = ups->nups;
    for (size_t i = 0; i < ups->nups; i++) {
        pool_t *p = &ul->pools[i];
        p->up = ups->ups[i];
        if (pool_address(p) < 0)
            return mizan_err_set(err, "upstream %s: address %s is not a numeric IP address", p->up->name,
                                 p->up->address);
        if ((p->conns = calloc((size_t)p->up->pool_size, sizeof(*p->conns))) == NULL)
            return mizan_err_set(err, "out of memory");
        for (int k = 0; k < p->up->pool_size; k++) {
            p->conns[k].pool = p;
            p->conns[k].fd = -1;
            free_add(&p->conns[k]);
        }
    }
    return 0;
}

void mizan_upstream_loop_free(mizan_upstream_loop_t *ul)
{
    if (ul == NULL)
        return;
    ul->closing = true;
    while (ul->calls != NULL) {
        call_t *c = ul->calls;
        if (c->conn != NULL)
            drop_conn(c->conn, "shutting down", false);
        if (c->state == C_WAITING)
            unwait(c);
        release_conn(c);
        c->outcome = OUT_NONE;
        fail(c, MIZAN_UNAVAILABLE, "the gateway is shutting down", NULL);
    }
    while (ul->spare != NULL) {
        call_t *c = ul->spare;
        ul->spare = c->wnext;
        call_destroy(c);
    }
    for (size_t i = 0; ul->pools != NULL && i < ul->npools; i++) {
        pool_t *p = &ul->pools[i];
        for (int k = 0; p->conns != NULL && k < p->up->pool_size; k++) {
            conn_t *cn = &p->conns[k];
            conn_close(cn);
            if (cn->rev != NULL)
                event_free(cn->rev);
            if (cn->wev != NULL)
                event_free(cn->wev);
            free(cn->in);
            mizan_upstream_parse_deinit(&cn->parse);
        }
        free(p->conns);
    }
    free(ul->pools);
    free(ul);
}

/* ---- metrics ---------------------------------------------------------------------- */

char *mizan_upstream_metrics(const mizan_upstreams_t *ups)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (f == NULL)
        return NULL;
    if (ups != NULL && ups->nups > 0) {
        static const char *const outcomes[] = {"ok", "client_error", "server_error", "timeout", "connect_error",
                                               "invalid", "rejected"};
        fprintf(f, "# HELP mizan_upstream_calls_total Upstream function calls by upstream and outcome.\n"
                   "# TYPE mizan_upstream_calls_total counter\n");
        for (size_t i = 0; i < ups->nups; i++) {
            mizan_upstream_t *up = ups->ups[i];
            atomic_llong *counts[] = {&up->n_ok,      &up->n_client,  &up->n_server,  &up->n_timeout,
                                      &up->n_connect, &up->n_invalid, &up->n_rejected};
            for (size_t k = 0; k < sizeof(outcomes) / sizeof(outcomes[0]); k++)
                fprintf(f, "mizan_upstream_calls_total{upstream=\"%s\",outcome=\"%s\"} %lld\n", up->name,
                        outcomes[k], atomic_load_explicit(counts[k], memory_order_relaxed));
        }
        fprintf(f, "# HELP mizan_upstream_retries_total Retries after a connection failure.\n"
                   "# TYPE mizan_upstream_retries_total counter\n");
        for (size_t i = 0; i < ups->nups; i++)
            fprintf(f, "mizan_upstream_retries_total{upstream=\"%s\"} %lld\n", ups->ups[i]->name,
                    atomic_load_explicit(&ups->ups[i]->n_retries, memory_order_relaxed));
        fprintf(f, "# HELP mizan_upstream_connections_opened_total TCP connections opened to the upstream.\n"
                   "# TYPE mizan_upstream_connections_opened_total counter\n");
        for (size_t i = 0; i < ups->nups; i++)
            fprintf(f, "mizan_upstream_connections_opened_total{upstream=\"%s\"} %lld\n", ups->ups[i]->name,
                    atomic_load_explicit(&ups->ups[i]->n_connections, memory_order_relaxed));
        fprintf(f, "# HELP mizan_upstream_connections_dropped_total Pooled connections closed because an answer "
                   "broke its framing (bytes past its end, conflicting framing headers).\n"
                   "# TYPE mizan_upstream_connections_dropped_total counter\n");
        for (size_t i = 0; i < ups->nups; i++)
            fprintf(f, "mizan_upstream_connections_dropped_total{upstream=\"%s\"} %lld\n", ups->ups[i]->name,
                    atomic_load_explicit(&ups->ups[i]->n_dropped, memory_order_relaxed));
        fprintf(f, "# HELP mizan_upstream_breaker_state Circuit breaker: 0 closed, 1 open, 2 half-open.\n"
                   "# TYPE mizan_upstream_breaker_state gauge\n");
        long long now = now_ms();
        for (size_t i = 0; i < ups->nups; i++) {
            long long until = atomic_load(&ups->ups[i]->open_until);
            fprintf(f, "mizan_upstream_breaker_state{upstream=\"%s\"} %d\n", ups->ups[i]->name,
                    until == 0 ? 0 : now < until ? 1 : 2);
        }
        fprintf(f, "# HELP mizan_upstream_breaker_opened_total Times the circuit breaker opened.\n"
                   "# TYPE mizan_upstream_breaker_opened_total counter\n");
        for (size_t i = 0; i < ups->nups; i++)
            fprintf(f, "mizan_upstream_breaker_opened_total{upstream=\"%s\"} %lld\n", ups->ups[i]->name,
                    atomic_load_explicit(&ups->ups[i]->n_opened, memory_order_relaxed));
    }
    if (fclose(f) != 0) {
        free(text);
        return NULL;
    }
    return text;
}

void mizan_upstream_read_stats(void *arg, mizan_stats_t *out)
{
    out->upstream_text = mizan_upstream_metrics(arg);
}
