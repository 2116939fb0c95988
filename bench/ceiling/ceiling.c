/*
 * ceiling.c - the bench harness's reference server: the least work an
 * evhttp + jansson JSON responder can do, so that every gateway figure can
 * be read as a fraction of what the same libraries on the same cores give.
 *
 * It is built like the gateway's front end: one event base and one evhttp
 * per thread, each on its own SO_REUSEPORT listener bound to the same port
 * (the kernel spreads connections over them), keep-alive, no cross-thread
 * traffic. It does what the gateway cannot avoid doing for a call and
 * nothing more:
 *
 *   POST (any path)  parses the body as one JSON object
 *                    {"function": F, "args": {...}} and answers
 *                    {"result": R}: "pong" for ping, a + b for add, the
 *                    args object otherwise; 400 when the body is not JSON;
 *   GET  (any path)  answers a small JSON object built per request.
 *
 * Both carry Content-Type and Cache-Control like the gateway's responses.
 * There is no validation, routing, worker hand-off, auth or cache: the
 * distance to the gateway is the price of those.
 *
 * Usage: ceiling [--threads N] [--host 127.0.0.1] [--port 0]
 * Prints "listening HOST:PORT" on stdout once every listener is up, then
 * serves until SIGINT or SIGTERM.
 */
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/thread.h>
#include <jansson.h>

/** Most I/O threads accepted on the command line. */
#define MAX_THREADS 64
/** listen(2) backlog, as the gateway's default. */
#define BACKLOG 4096
/** Idle keep-alive connections live this long (the idle-connection test holds them). */
#define IDLE_TIMEOUT_S 600

/** One I/O thread: its listener, base and evhttp (owned by that thread once started). */
typedef struct {
    int fd;                   /* SO_REUSEPORT listening socket, -1 once evhttp owns it */
    struct event_base *base;  /* this thread's loop */
    struct evhttp *http;      /* this thread's HTTP server */
    pthread_t thread;         /* the thread running base */
    int started;              /* 1 once thread is running */
} io_thread_t;

/*
 * Sends body (new reference, stolen) as the JSON response with status code.
 * Runs on the request's own loop.
 */
static void reply_json(struct evhttp_request *req, int code, json_t *body)
{
    struct evbuffer *out = evhttp_request_get_output_buffer(req);
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    char *text = body != NULL ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    evhttp_add_header(h, "Content-Type", "application/json");
    evhttp_add_header(h, "Cache-Control", "no-store");
    if (text == NULL) {
        evbuffer_add_printf(out, "{\"error\":{\"code\":\"INTERNAL_ERROR\",\"message\":\"out of memory\"}}");
        evhttp_send_reply(req, 500, "Internal Server Error", out);
        return;
    }
    evbuffer_add(out, text, strlen(text));
    free(text);
    evhttp_send_reply(req, code, code == 200 ? "OK" : "Bad Request", out);
}

/* Answers a call body (borrowed) with a new {"result": ...} object, or NULL. */
static json_t *answer_call(json_t *body)
{
    const char *fn = json_string_value(json_object_get(body, "function"));
    json_t *args = json_object_get(body, "args");
    if (fn != NULL && strcmp(fn, "ping") == 0)
        return json_pack("{s:s}", "result", "pong");
    if (fn != NULL && strcmp(fn, "add") == 0 && json_is_integer(json_object_get(args, "a")) &&
        json_is_integer(json_object_get(args, "b"))) {
        json_int_t a = json_integer_value(json_object_get(args, "a"));
        json_int_t b = json_integer_value(json_object_get(args, "b"));
        return json_pack("{s:I}", "result", (json_int_t)((unsigned long long)a + (unsigned long long)b));
    }
    return json_pack("{s:O?}", "result", args);
}

/* The only request handler: runs on the loop that accepted the connection. */
static void on_request(struct evhttp_request *req, void *arg)
{
    (void)arg;
    if (evhttp_request_get_command(req) == EVHTTP_REQ_POST) {
        struct evbuffer *in = evhttp_request_get_input_buffer(req);
        size_t len = evbuffer_get_length(in);
        const char *data = (const char *)evbuffer_pullup(in, -1);
        json_error_t jerr;
        json_t *body = json_loadb(data != NULL ? data : "", len, 0, &jerr);
        if (!json_is_object(body)) {
            json_decref(body);
            reply_json(req, 400, json_pack("{s:{s:s,s:s,s:n}}", "error", "code", "BAD_REQUEST", "message",
                                           "body is not a JSON object", "details"));
            return;
        }
        json_t *answer = answer_call(body);
        json_decref(body);
        reply_json(req, 200, answer);
        return;
    }
    const char *uri = evhttp_request_get_uri(req);
    reply_json(req, 200, json_pack("{s:b,s:s,s:s}", "ok", 1, "server", "ceiling", "uri", uri != NULL ? uri : ""));
}

static void *thread_main(void *arg)
{
    io_thread_t *t = arg;
    event_base_dispatch(t->base);
    return NULL;
}

/*
 * Opens a non-blocking SO_REUSEPORT listener on host:port (port 0: any).
 * Returns the fd, or -1 with a message on stderr.
 */
static int open_listener(const char *host, int port)
{
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((unsigned short)port);
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
        fprintf(stderr, "ceiling: %s is not a numeric IPv4 address\n", host);
        return -1;
    }
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0 ||
        bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, BACKLOG) < 0) {
        fprintf(stderr, "ceiling: cannot listen on %s:%d: %s\n", host, port, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

/* The port fd is bound to, or -1. */
static int bound_port(int fd)
{
    struct sockaddr_in sa;
    socklen_t len = sizeof(sa);
    if (getsockname(fd, (struct sockaddr *)&sa, &len) < 0)
        return -1;
    return ntohs(sa.sin_port);
}

static void usage(void)
{
    fprintf(stderr, "usage: ceiling [--threads N] [--host 127.0.0.1] [--port 0]\n");
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"threads", required_argument, NULL, 't'},
        {"host", required_argument, NULL, 'H'},
        {"port", required_argument, NULL, 'p'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int nthreads = 1, port = 0, rc = 1, c;
    const char *host = "127.0.0.1";
    io_thread_t threads[MAX_THREADS];
    memset(threads, 0, sizeof(threads));
    for (int i = 0; i < MAX_THREADS; i++)
        threads[i].fd = -1;

    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
            case 't': nthreads = atoi(optarg); break;
            case 'H': host = optarg; break;
            case 'p': port = atoi(optarg); break;
            default: usage(); return c == 'h' ? 0 : 2;
        }
    }
    if (nthreads < 1 || nthreads > MAX_THREADS || port < 0 || port > 65535) {
        usage();
        return 2;
    }

    /* Signals are taken by sigwait below; every thread inherits the mask. */
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);
    signal(SIGPIPE, SIG_IGN);
    if (evthread_use_pthreads() < 0) {
        fprintf(stderr, "ceiling: evthread_use_pthreads failed\n");
        return 1;
    }
    json_object_seed(0);

    for (int i = 0; i < nthreads; i++) {
        io_thread_t *t = &threads[i];
        if ((t->fd = open_listener(host, port)) < 0)
            goto done;
        if (i == 0 && (port = bound_port(t->fd)) <= 0) {
            fprintf(stderr, "ceiling: getsockname: %s\n", strerror(errno));
            goto done;
        }
        t->base = event_base_new();
        t->http = t->base != NULL ? evhttp_new(t->base) : NULL;
        if (t->http == NULL || evhttp_accept_socket(t->http, t->fd) < 0) {
            fprintf(stderr, "ceiling: cannot set up the HTTP server of thread %d\n", i);
            goto done;
        }
        t->fd = -1; /* the evhttp listener owns and closes it now */
        evhttp_set_gencb(t->http, on_request, NULL);
        evhttp_set_timeout(t->http, IDLE_TIMEOUT_S);
        evhttp_set_allowed_methods(t->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD);
    }
    for (int i = 0; i < nthreads; i++) {
        if (pthread_create(&threads[i].thread, NULL, thread_main, &threads[i]) != 0) {
            fprintf(stderr, "ceiling: cannot start thread %d\n", i);
            goto done;
        }
        threads[i].started = 1;
    }
    printf("listening %s:%d\n", host, port);
    fflush(stdout);

    int sig = 0;
    sigwait(&stop, &sig);
    rc = 0;

done:
    for (int i = 0; i < nthreads; i++)
        if (threads[i].started)
            event_base_loopbreak(threads[i].base);
    for (int i = 0; i < nthreads; i++) {
        if (threads[i].started)
            pthread_join(threads[i].thread, NULL);
        if (threads[i].http != NULL)
            evhttp_free(threads[i].http);
        if (threads[i].fd >= 0)
            close(threads[i].fd);
        if (threads[i].base != NULL)
            event_base_free(threads[i].base);
    }
    return rc;
}
