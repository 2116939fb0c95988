/*
 * loop.c - the I/O loops: listener, evhttp, the message queue through
 * which other threads run work on a loop, and the drain and abort of a
 * graceful shutdown (see loop.h).
 *
 * DESIGN: the only calls that cross threads are mizan_loop_post() (any
 * thread -> loop: append under `lock`, event_active only when the queue
 * goes from empty to non-empty, the loop drains the whole queue at once)
 * and event_base_once()/event_base_loopbreak() from the main thread, which
 * libevent makes thread-safe after evthread_use_pthreads(). Everything else
 * in a loop is touched only by its own thread. The loop knows neither the
 * cache, the events, the executor nor the handlers: the assembly hands
 * them in (http.h, mizan_loop_hooks_t and services).
 */
#include "loop.h"

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

#include "conn.h"
#include "log.h"

/* ---- message queue ----------------------------------------------------- */

int mizan_loop_post(mizan_loop_t *loop, void (*fn)(void *arg), void *arg)
{
    mizan_msg_t *msg = malloc(sizeof(*msg));
    if (msg == NULL)
        return -1;
    msg->fn = fn;
    msg->arg = arg;
    msg->next = NULL;
    pthread_mutex_lock(&loop->lock);
    bool was_empty = loop->msg_head == NULL;
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

static void on_wake(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    mizan_loop_t *loop = arg;
    pthread_mutex_lock(&loop->lock);
    mizan_msg_t *msg = loop->msg_head;
    loop->msg_head = loop->msg_tail = NULL;
    pthread_mutex_unlock(&loop->lock);
    while (msg != NULL) {
        mizan_msg_t *next = msg->next;
        msg->fn(msg->arg);
        free(msg);
        msg = next;
    }
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

/* The process's loops, for callbacks that carry someone else's argument. */
static mizan_loop_t *all_loops[256];
static int nall_loops;

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
    for (int i = 0; i < nall_loops; i++)
        if (all_loops[i]->base == evconnlistener_get_base(lev))
            loop = all_loops[i];
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

int mizan_loop_init(mizan_loop_t *loop, int index, mizan_err_t *err)
{
    const mizan_config_t *cfg = loop->cfg;
    loop->index = index;
    if (index >= 0 && index < (int)(sizeof(all_loops) / sizeof(all_loops[0])) && index >= nall_loops) {
        all_loops[index] = loop;
        nall_loops = index + 1;
    }
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
    evhttp_set_gencb(loop->http, loop->hooks.request, loop);
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
    return 0;
}

int mizan_loop_start(mizan_loop_t *loop, int port, mizan_err_t *err)
{
    loop->fd = open_listener(loop->cfg, port, err);
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
        return mizan_err_set(err, "cannot start I/O thread %d", loop->index);
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
    if (loop->hooks.drain != NULL)
        loop->hooks.drain(loop);
}

void mizan_loop_begin_drain(mizan_loop_t *loop)
{
    event_base_once(loop->base, -1, EV_TIMEOUT, drain_cb, loop, NULL);
}

bool mizan_loop_idle(mizan_loop_t *loop)
{
    return atomic_load(&loop->nlive) == 0 && atomic_load(&loop->unsent) == 0;
}

static void abort_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    mizan_loop_t *loop = arg;
    if (loop->hooks.abort != NULL)
        loop->hooks.abort(loop);
}

void mizan_loop_abort(mizan_loop_t *loop)
{
    event_base_once(loop->base, -1, EV_TIMEOUT, abort_cb, loop, NULL);
}

void mizan_loop_stop(mizan_loop_t *loop)
{
    if (loop->base == NULL)
        return;
    if (loop->thread) {
        event_base_loopbreak(loop->base);
        pthread_join(loop->thread, NULL);
        loop->thread = 0;
    }
    on_wake(-1, 0, loop);
}

void mizan_loop_deinit(mizan_loop_t *loop)
{
    if (loop->base == NULL)
        return;
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
