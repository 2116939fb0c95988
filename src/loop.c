/*
 * loop.c - the I/O loops: listener, evhttp, the completion queue through
 * which workers hand jobs back, deadline timers, and the exchange life
 * cycle.
 *
 * DESIGN: the only calls that cross threads are mizan_loop_complete()
 * (worker -> loop: append under `lock`, event_active only when the queue
 * goes from empty to non-empty, the loop drains the whole queue at once)
 * and event_base_once()/event_base_loopbreak() from the main thread, which
 * libevent makes thread-safe after evthread_use_pthreads(). Everything else
 * in a loop is touched only by its own thread.
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/http.h>
#include <event2/listener.h>

#include "cache.h"
#include "conn.h"
#include "events.h"
#include "gateway.h"
#include "log.h"
#include "metrics.h"
#include "upstream.h"

/* ---- completion queue -------------------------------------------------- */

void mizan_loop_complete(mizan_job_t *job)
{
    mizan_loop_t *loop = job->loop;
    pthread_mutex_lock(&loop->lock);
    bool was_empty = loop->done_head == NULL && loop->msg_head == NULL;
    job->next = NULL;
    if (loop->done_tail != NULL)
        loop->done_tail->next = job;
    else
        loop->done_head = job;
    loop->done_tail = job;
    pthread_mutex_unlock(&loop->lock);
    if (was_empty)
        event_active(loop->wake, EV_READ, 0);
}

int mizan_loop_post(mizan_loop_t *loop, void (*fn)(mizan_loop_t *loop, void *arg), void *arg)
{
    mizan_msg_t *msg = malloc(sizeof(*msg));
    if (msg == NULL)
        return -1;
    msg->fn = fn;
    msg->arg = arg;
    msg->next = NULL;
    pthread_mutex_lock(&loop->lock);
    bool was_empty = loop->done_head == NULL && loop->msg_head == NULL;
    if (loop->msg_tail != NULL)
        loop->msg_tail->next = msg;
    else
        loop->msg_head = msg;
    loop->msg_tail = msg;
    pthread_mutex_unlock(&loop->lock);
    if (was_empty)
        event_active(loop->wake, EV_READ, 0);
    return 0;
}

static void job_release(mizan_job_t *job)
{
    if (job->timer != NULL)
        event_free(job->timer);
    mizan_job_free(job);
}

/* A job is back from its worker (loop thread). */
static void job_returned(mizan_loop_t *loop, mizan_job_t *job)
{
    atomic_fetch_sub(&loop->outstanding, 1);
    /* Its run ended (even when its exchange gave up at the deadline): free its slot. */
    mizan_function_release(job->fn);
    job->back = true;
    if (job->timer != NULL)
        evtimer_del(job->timer);
    mizan_exchange_t *ex = job->owner;
    if (ex == NULL) {
        /* Abandoned at its deadline: the answer was already given. */
        job_release(job);
        return;
    }
    if (--ex->pending == 0)
        ex->done(ex);
}

static void on_wake(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    mizan_loop_t *loop = arg;
    pthread_mutex_lock(&loop->lock);
    mizan_job_t *job = loop->done_head;
    mizan_msg_t *msg = loop->msg_head;
    loop->done_head = loop->done_tail = NULL;
    loop->msg_head = loop->msg_tail = NULL;
    pthread_mutex_unlock(&loop->lock);
    while (job != NULL) {
        mizan_job_t *next = job->next;
        job_returned(loop, job);
        job = next;
    }
    while (msg != NULL) {
        mizan_msg_t *next = msg->next;
        msg->fn(loop, msg->arg);
        free(msg);
        msg = next;
    }
}

/* A job's deadline passed before it came back (loop thread). */
static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    mizan_job_t *job = arg;
    mizan_exchange_t *ex = job->owner;
    atomic_store(&job->cancelled, true);
    if (ex == NULL)
        return;
    job->owner = NULL;
    ex->jobs[job->slot] = NULL;
    mizan_metrics_timeout(job->fn);
    mizan_log(MIZAN_LOG_WARN, "function %s passed its %d ms deadline (request %s)", job->fn->name,
              job->fn->timeout_ms, ex->rid);
    if (ex->errors != NULL) {
        json_t *e = json_pack("{s:s, s:s, s:n}", "code", "TIMEOUT", "message", "function timed out", "details");
        json_object_set_new(ex->errors, job->fn->name, e);
    }
    if (--ex->pending == 0)
        ex->done(ex);
}

int mizan_exchange_submit(mizan_exchange_t *ex)
{
    mizan_loop_t *loop = ex->loop;
    mizan_job_t *batch[64];
    mizan_job_t **list = ex->njobs <= 64 ? batch : calloc(ex->njobs, sizeof(*list));
    size_t n = 0;
    if (list == NULL)
        return -1;
    for (size_t i = 0; i < ex->njobs; i++) {
        mizan_job_t *job = ex->jobs[i];
        if (job == NULL)
            continue;
        if (!mizan_function_acquire(job->fn)) {
            /* At its concurrency limit: refused at once, never queued behind
             * the runs in flight; the exchange sees an UNAVAILABLE job. */
            char msg[160];
            snprintf(msg, sizeof(msg), "function %s is at its limit of %d concurrent runs; retry shortly",
                     job->fn->name, job->fn->max_concurrency);
            mizan_req_error(job, MIZAN_UNAVAILABLE, msg, NULL);
            mizan_metrics_limited(job->fn);
            continue;
        }
        job->loop = loop;
        job->owner = ex;
        job->slot = (int)i;
        job->timer = evtimer_new(loop->base, on_deadline, job);
        if (job->timer == NULL)
            goto fail;
        list[n++] = job;
    }
    /* Upstream functions start on this loop (upstream_client.c); the rest
     * go to the worker pool, all or nothing. */
    size_t npool = 0;
    for (size_t i = 0; i < n; i++)
        if (list[i]->fn->upstream == NULL) {
            mizan_job_t *t = list[npool];
            list[npool++] = list[i];
            list[i] = t;
        }
    if (npool > 0 && mizan_pool_submit(&loop->gw->pool, list, npool) < 0)
        goto fail;
    for (size_t i = npool; i < n; i++)
        mizan_upstream_start(loop, list[i]);
    for (size_t i = 0; i < n; i++) {
        struct timeval tv = {list[i]->fn->timeout_ms / 1000, (list[i]->fn->timeout_ms % 1000) * 1000};
        evtimer_add(list[i]->timer, &tv);
    }
    ex->pending = n;
    atomic_fetch_add(&loop->outstanding, n);
    if (list != batch)
        free(list);
    return 0;
fail:
    for (size_t i = 0; i < ex->njobs; i++)
        if (ex->jobs[i] != NULL && ex->jobs[i]->code == MIZAN_OK && ex->jobs[i]->loop == loop)
            mizan_function_release(ex->jobs[i]->fn); /* taken above, never run */
    for (size_t i = 0; i < n; i++) {
        event_free(list[i]->timer);
        list[i]->timer = NULL;
        list[i]->owner = NULL;
    }
    if (list != batch)
        free(list);
    return -1;
}

/* ---- exchanges --------------------------------------------------------- */

static uint64_t next_random(mizan_loop_t *loop)
{
    /* xorshift128+: request ids need uniqueness, not secrecy. */
    uint64_t s1 = loop->rng[0];
    const uint64_t s0 = loop->rng[1];
    loop->rng[0] = s0;
    s1 ^= s1 << 23;
    loop->rng[1] = s1 ^ s0 ^ (s1 >> 17) ^ (s0 >> 26);
    return loop->rng[1] + s0;
}

static bool sane_request_id(const char *v)
{
    size_t n = 0;
    for (; v[n] != '\0'; n++)
        if (n >= 128 || !((v[n] >= 'A' && v[n] <= 'Z') || (v[n] >= 'a' && v[n] <= 'z') ||
                          (v[n] >= '0' && v[n] <= '9') || v[n] == '.' || v[n] == '_' || v[n] == '-'))
            return false;
    return n > 0;
}

void mizan_loop_request_id(mizan_loop_t *loop, char *out, size_t len)
{
    snprintf(out, len, "%016llx%016llx", (unsigned long long)next_random(loop),
             (unsigned long long)next_random(loop));
}

mizan_exchange_t *mizan_exchange_new(mizan_loop_t *loop, struct evhttp_request *req)
{
    mizan_exchange_t *ex = calloc(1, sizeof(*ex));
    if (ex == NULL)
        return NULL;
    ex->loop = loop;
    ex->req = req;
    ex->caller = mizan_caller_anonymous();
    ex->route = "unknown";
    clock_gettime(CLOCK_MONOTONIC, &ex->t0);
    const char *rid = evhttp_find_header(evhttp_request_get_input_headers(req), "X-Request-Id");
    if (rid != NULL && sane_request_id(rid))
        snprintf(ex->rid, sizeof(ex->rid), "%s", rid);
    else
        mizan_loop_request_id(loop, ex->rid, sizeof(ex->rid));
    ex->next = loop->live;
    if (loop->live != NULL)
        loop->live->prev = ex;
    loop->live = ex;
    atomic_fetch_add(&loop->nlive, 1);
    return ex;
}

struct evhttp_request *mizan_exchange_detach(mizan_exchange_t *ex)
{
    struct evhttp_request *req = ex->req;
    ex->req = NULL;
    mizan_exchange_finish(ex, 200);
    return req;
}

void mizan_exchange_finish(mizan_exchange_t *ex, int status)
{
    mizan_loop_t *loop = ex->loop;
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    long long us = (long long)(t1.tv_sec - ex->t0.tv_sec) * 1000000LL + (t1.tv_nsec - ex->t0.tv_nsec) / 1000;
    mizan_metrics_request(loop->gw, ex->route, status, us);
    if (mizan_log_enabled(MIZAN_LOG_INFO)) {
        json_t *f = json_pack("{s:s, s:s, s:i, s:I}", "request_id", ex->rid, "route", ex->route, "status", status,
                              "duration_us", (json_int_t)us);
        if (f != NULL && ex->target[0] != '\0')
            json_object_set_new(f, strcmp(ex->route, "ctx") == 0 ? "context" : "function", json_string(ex->target));
        if (f != NULL && ex->cache != NULL)
            json_object_set_new(f, "cache", json_string(ex->cache));
        mizan_log_fields(MIZAN_LOG_INFO, "request", f);
        json_decref(f);
    }
    for (size_t i = 0; i < ex->njobs; i++) {
        mizan_job_t *job = ex->jobs[i];
        if (job == NULL)
            continue;
        if (!job->back && job->timer != NULL) {
            /* Still out (shutdown abort): let it come back on its own. */
            job->owner = NULL;
            atomic_store(&job->cancelled, true);
            continue;
        }
        job_release(job);
    }
    free(ex->jobs);
    mizan_cache_exchange_done(ex);
    json_decref(ex->targets);
    json_decref(ex->params);
    json_decref(ex->data);
    json_decref(ex->errors);
    mizan_caller_unref(ex->caller);
    if (ex->prev != NULL)
        ex->prev->next = ex->next;
    else
        loop->live = ex->next;
    if (ex->next != NULL)
        ex->next->prev = ex->prev;
    atomic_fetch_sub(&loop->nlive, 1);
    free(ex);
}

/* ---- listener and thread ---------------------------------------------- */

static int open_listener(const mizan_config_t *cfg, int port, mizan_err_t *err)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV | AI_PASSIVE};
    struct addrinfo *ai = NULL;
    char portstr[16];
    snprintf(portstr, sizeof(portstr), "%d", port);
    int rc = getaddrinfo(cfg->listen_host, portstr, &hints, &ai);
    if (rc != 0)
        return mizan_err_set(err, "listen address \"%s\" is not a numeric IP address: %s", cfg->listen_host,
                             gai_strerror(rc));
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0 ||
        bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, cfg->backlog) < 0) {
        int e = errno;
        if (fd >= 0)
            close(fd);
        freeaddrinfo(ai);
        return mizan_err_set(err, "cannot listen on %s:%d: %s (is another process using it? set \"listen\" or MIZAN_LISTEN)",
                             cfg->listen_host, port, strerror(e));
    }
    freeaddrinfo(ai);
    return fd;
}

/* The process's gateway, for callbacks that carry someone else's argument. */
static mizan_gateway_t *the_gateway;

/* The listener is paused after accept() ran out of descriptors; resume. */
static void on_accept_resume(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    mizan_loop_t *loop = arg;
    if (loop->bound != NULL)
        evconnlistener_enable(evhttp_bound_socket_get_listener(loop->bound));
}

/*
 * accept() failed. Out of descriptors, the pending connection stays queued
 * and the listener would fire again at once, spinning the loop: pause it
 * for 100 ms and say why, at most once a second per loop.
 */
static void on_accept_error(struct evconnlistener *lev, void *arg)
{
    (void)arg; /* evhttp's, not ours: find the loop by its base */
    int e = EVUTIL_SOCKET_ERROR();
    mizan_loop_t *loop = NULL;
    for (int i = 0; the_gateway != NULL && i < the_gateway->nloops; i++)
        if (the_gateway->loops[i].base == evconnlistener_get_base(lev))
            loop = &the_gateway->loops[i];
    if (loop == NULL)
        return;
    time_t now = time(NULL);
    bool exhausted = e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM;
    if (now != loop->accept_warned) {
        loop->accept_warned = now;
        if (exhausted)
            mizan_log(MIZAN_LOG_ERROR,
                      "out of file descriptors accepting connections (%s): pausing accept on loop %d for 100 ms; "
                      "raise the open-file limit (LimitNOFILE, ulimit -n) or lower client concurrency",
                      strerror(e), loop->index);
        else
            mizan_log(MIZAN_LOG_WARN, "accept failed on loop %d: %s", loop->index, strerror(e));
    }
    if (exhausted) {
        evconnlistener_disable(lev);
        struct timeval tv = {0, 100000};
        event_base_once(loop->base, -1, EV_TIMEOUT, on_accept_resume, loop, &tv);
    }
}

static void *loop_main(void *arg)
{
    mizan_loop_t *loop = arg;
    event_base_loop(loop->base, EVLOOP_NO_EXIT_ON_EMPTY);
    return NULL;
}

int mizan_loop_start(mizan_loop_t *loop, mizan_gateway_t *gw, int index, int port, mizan_err_t *err)
{
    const mizan_config_t *cfg = &gw->cfg;
    loop->gw = gw;
    loop->index = index;
    the_gateway = gw;
    loop->fd = -1;
    pthread_mutex_init(&loop->lock, NULL);
    if (getrandom(loop->rng, sizeof(loop->rng), 0) != sizeof(loop->rng)) {
        loop->rng[0] = (uint64_t)time(NULL) ^ (uint64_t)index;
        loop->rng[1] = (uint64_t)getpid() * 2654435761u + 1;
    }
    loop->base = event_base_new();
    if (loop->base == NULL || (loop->http = evhttp_new(loop->base)) == NULL ||
        (loop->wake = event_new(loop->base, -1, 0, on_wake, loop)) == NULL)
        return mizan_err_set(err, "cannot create I/O loop %d", index);
    evhttp_set_gencb(loop->http, mizan_route_request, loop);
    evhttp_set_max_headers_size(loop->http, (ev_ssize_t)cfg->max_header_bytes);
    /* Bodies up to 4x the limit are read and answered 413 in the envelope;
     * larger declared bodies are cut off by evhttp itself. */
    evhttp_set_max_body_size(loop->http, (ev_ssize_t)cfg->max_body_bytes * 4);
    struct timeval idle = {cfg->idle_timeout_s, 0};
    evhttp_set_timeout_tv(loop->http, &idle);
    if (mizan_conns_init(loop, err) < 0)
        return -1;
    /* Every method reaches the router, which answers 405 with Allow (TRACE,
     * CONNECT and methods evhttp does not know included) instead of evhttp's
     * HTML 501 page. */
    evhttp_set_allowed_methods(loop->http, 0xffff);
    if (mizan_cache_loop_init(loop, err) < 0 || mizan_upstream_loop_init(loop, err) < 0)
        return -1;
    loop->fd = open_listener(cfg, port, err);
    if (loop->fd < 0)
        return -1;
    loop->bound = evhttp_accept_socket_with_handle(loop->http, loop->fd);
    if (loop->bound == NULL) {
        close(loop->fd);
        loop->fd = -1;
        return mizan_err_set(err, "cannot accept on the listening socket");
    }
    evconnlistener_set_error_cb(evhttp_bound_socket_get_listener(loop->bound), on_accept_error);
    if (pthread_create(&loop->thread, NULL, loop_main, loop) != 0)
        return mizan_err_set(err, "cannot start I/O thread %d", index);
    return 0;
}

static void drain_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    mizan_loop_t *loop = arg;
    if (loop->bound != NULL) {
        evhttp_del_accept_socket(loop->http, loop->bound);
        loop->bound = NULL;
        loop->fd = -1;
    }
    mizan_events_close_all(loop);
}

void mizan_loop_begin_drain(mizan_loop_t *loop)
{
    event_base_once(loop->base, -1, EV_TIMEOUT, drain_cb, loop, NULL);
}

bool mizan_loop_idle(mizan_loop_t *loop)
{
    return atomic_load(&loop->nlive) == 0 && atomic_load(&loop->outstanding) == 0 &&
           atomic_load(&loop->unsent) == 0;
}

static void abort_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    mizan_loop_t *loop = arg;
    mizan_exchange_t *ex = loop->live;
    while (ex != NULL) {
        mizan_exchange_t *next = ex->next;
        /* One waiting on Redis or on another loop's computation is answered
         * by that completion, which is bounded by timeouts. */
        if (!ex->external && !mizan_call_abort(ex))
            mizan_reply_unavailable(ex);
        ex = next;
    }
}

void mizan_loop_abort(mizan_loop_t *loop)
{
    event_base_once(loop->base, -1, EV_TIMEOUT, abort_cb, loop, NULL);
}

void mizan_loop_join(mizan_loop_t *loop)
{
    if (loop->base == NULL)
        return;
    if (loop->thread) {
        event_base_loopbreak(loop->base);
        pthread_join(loop->thread, NULL);
    }
    /* Jobs that never came back (a handler ignoring cancellation past the
     * drain budget) are gone with the process; everything else is back. */
    on_wake(-1, 0, loop);
    mizan_cache_loop_deinit(loop);
    mizan_upstream_loop_deinit(loop);
    on_wake(-1, 0, loop);
    if (loop->http != NULL)
        evhttp_free(loop->http);
    mizan_conns_deinit(loop);
    if (loop->wake != NULL)
        event_free(loop->wake);
    event_base_free(loop->base);
    pthread_mutex_destroy(&loop->lock);
    loop->base = NULL;
}
