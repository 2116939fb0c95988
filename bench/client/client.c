/*
 * client.c - the bench harness's own HTTP client, for the measurements that
 * wrk cannot make. wrk is a closed-loop generator: each connection sends its
 * next request only when the previous answer came back, so a slow answer
 * also delays the requests that should have been sent meanwhile and their
 * waiting never shows in the percentiles (coordinated omission). Where the
 * question is "what latency does a client see at a given request rate",
 * this client sends on a fixed schedule instead and measures every request
 * from the moment it was due, not from the moment a connection was free.
 *
 * One binary, four modes, each printing one JSON object on stdout
 * (diagnostics on stderr):
 *
 *   rate   open loop: METHOD URL at RATE requests/s for DURATION seconds
 *          over a pool of keep-alive connections; latency from the due time.
 *   sse    N Server-Sent Events clients spread over one or more gateways;
 *          once all are connected, update_post mutations at a fixed rate on
 *          distinct posts; for every (client, mutation) the time from the
 *          mutation's response (and from its due time) to the event frame.
 *   check  read-after-write checker: chains that each read a post's
 *          context on instance B (so that B holds its bundle), write a
 *          unique title with update_post on instance A and, as soon as it
 *          is acknowledged, read the context on B again; a read that does
 *          not return the title just written is a violation. A and B swap
 *          roles on every pass over a chain's posts.
 *   idle   opens idle keep-alive connections in stages (e.g. 1000, then up
 *          to 10000), each after one GET; prints "ready N FAILED" after every
 *          stage and waits for a line on stdin before the next stage; on the
 *          last line (or EOF) resets every connection and exits.
 *
 * Everything runs on one libevent loop in one thread; evhttp's client side
 * does the HTTP/1.1 framing (chunked SSE streams included).
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>

/** Most --header options. */
#define MAX_HEADERS 16
/** Most --events URLs (gateway instances) and idle stages. */
#define MAX_TARGETS 16
/** Violations kept as examples in the check report. */
#define MAX_SAMPLES 5

/* ------------------------------------------------------------------------
 * Small helpers: clock, messages, latency samples, URLs
 * ---------------------------------------------------------------------- */

/** Monotonic clock in seconds. */
static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

/* Start-up failure: message on stderr, exit 2. */
static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("bench-client: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(2);
}

/** A growable set of latency samples, in seconds. */
typedef struct {
    double *v;  /* samples (sorted by samples_json) */
    size_t n;   /* used */
    size_t cap; /* allocated */
    long lost;  /* samples dropped for lack of memory */
} samples_t;

static void samples_add(samples_t *s, double x)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 1024;
        double *v = realloc(s->v, cap * sizeof(*v));
        if (v == NULL) {
            s->lost++;
            return;
        }
        s->v = v;
        s->cap = cap;
    }
    s->v[s->n++] = x;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Nearest-rank percentile p (0..100] of the sorted samples. */
static double percentile(const samples_t *s, double p)
{
    size_t rank = (size_t)ceil(p / 100.0 * (double)s->n);
    if (rank < 1)
        rank = 1;
    if (rank > s->n)
        rank = s->n;
    return s->v[rank - 1];
}

/* Rounds to microsecond precision in milliseconds. */
static double ms(double seconds)
{
    return round(seconds * 1e6) / 1e3;
}

/*
 * Returns a new object {count, min, mean, p50, p90, p99, p99_9, max} in
 * milliseconds (null members when there is no sample). Sorts s.
 */
static json_t *samples_json(samples_t *s)
{
    if (s->n == 0)
        return json_pack("{s:i,s:n,s:n,s:n,s:n,s:n,s:n,s:n}", "count", 0, "min", "mean", "p50", "p90", "p99",
                         "p99_9", "max");
    qsort(s->v, s->n, sizeof(double), cmp_double);
    double sum = 0;
    for (size_t i = 0; i < s->n; i++)
        sum += s->v[i];
    return json_pack("{s:I,s:f,s:f,s:f,s:f,s:f,s:f,s:f}", "count", (json_int_t)s->n, "min", ms(s->v[0]), "mean",
                     ms(sum / (double)s->n), "p50", ms(percentile(s, 50)), "p90", ms(percentile(s, 90)), "p99",
                     ms(percentile(s, 99)), "p99_9", ms(percentile(s, 99.9)), "max", ms(s->v[s->n - 1]));
}

/** Where requests go: http://HOST:PORT/PATH?QUERY. */
typedef struct {
    char host[256];     /* numeric address or name */
    int port;           /* TCP port */
    char path[2048];    /* path and query, at least "/" */
    char hostport[300]; /* Host header value */
} target_t;

/* Fills t from url, or dies naming the bad URL. */
static void target_parse(target_t *t, const char *url)
{
    struct evhttp_uri *u = evhttp_uri_parse(url);
    if (u == NULL || evhttp_uri_get_host(u) == NULL)
        die("cannot parse URL %s", url);
    const char *scheme = evhttp_uri_get_scheme(u);
    if (scheme == NULL || strcmp(scheme, "http") != 0)
        die("only http:// URLs are supported: %s", url);
    snprintf(t->host, sizeof(t->host), "%s", evhttp_uri_get_host(u));
    t->port = evhttp_uri_get_port(u) > 0 ? evhttp_uri_get_port(u) : 80;
    const char *path = evhttp_uri_get_path(u);
    const char *query = evhttp_uri_get_query(u);
    snprintf(t->path, sizeof(t->path), "%s%s%s", path != NULL && *path ? path : "/", query ? "?" : "",
             query ? query : "");
    snprintf(t->hostport, sizeof(t->hostport), "%s:%d", t->host, t->port);
    evhttp_uri_free(u);
}

/* A new keep-alive connection to t (no retry, timeout_s per request). */
static struct evhttp_connection *conn_new(struct event_base *base, const target_t *t, int timeout_s)
{
    struct evhttp_connection *c = evhttp_connection_base_new(base, NULL, t->host, (unsigned short)t->port);
    if (c == NULL)
        die("cannot create a connection to %s", t->hostport);
    evhttp_connection_set_timeout(c, timeout_s);
    evhttp_connection_set_retries(c, 0);
    return c;
}

/* Adds the Host header and, when body is not NULL, a JSON body to req. */
static void request_fill(struct evhttp_request *req, const target_t *t, const char *body, const char *auth)
{
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Host", t->hostport);
    if (auth != NULL)
        evhttp_add_header(h, "Authorization", auth);
    if (body != NULL) {
        evhttp_add_header(h, "Content-Type", "application/json");
        evbuffer_add(evhttp_request_get_output_buffer(req), body, strlen(body));
    }
}

/* A new JSON value parsed from a finished request's body, or NULL. */
static json_t *response_json(struct evhttp_request *req)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(in);
    const char *data = (const char *)evbuffer_pullup(in, -1);
    return json_loadb(data != NULL ? data : "", len, 0, NULL);
}

/* True for a finished request with a 2xx status. */
static bool is_2xx(const struct evhttp_request *req)
{
    if (req == NULL)
        return false;
    int code = evhttp_request_get_response_code(req);
    return code >= 200 && code < 300;
}

/* A new event base whose timers use timerfd (sub-millisecond schedules). */
static struct event_base *base_new(void)
{
    struct event_config *cfg = event_config_new();
    if (cfg == NULL)
        die("out of memory");
    event_config_set_flag(cfg, EVENT_BASE_FLAG_PRECISE_TIMER);
    struct event_base *base = event_base_new_with_config(cfg);
    event_config_free(cfg);
    if (base == NULL)
        die("cannot create an event base");
    return base;
}

/* Raises the open-file limit to the hard limit (idle and sse hold many sockets). */
static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

/* Prints value (stolen) as one line of JSON on stdout. */
static void print_json(json_t *value)
{
    if (value == NULL)
        die("out of memory building the report");
    json_dumpf(value, stdout, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(10));
    fputc('\n', stdout);
    fflush(stdout);
    json_decref(value);
}

/* ------------------------------------------------------------------------
 * Options (one set for every mode; each mode reads the ones it needs)
 * ---------------------------------------------------------------------- */

typedef struct {
    const char *url;                  /* rate, idle: the request URL */
    const char *method;               /* rate: GET or POST */
    const char *body;                 /* rate: POST body */
    const char *headers[MAX_HEADERS]; /* rate: "Name: value" */
    int nheaders;
    double rate;                      /* rate, sse: requests (mutations) per second */
    double duration;                  /* rate, sse, check: seconds */
    int conns;                        /* rate, sse: connection pool size */
    int timeout;                      /* per-request timeout, seconds */
    const char *events[MAX_TARGETS];  /* sse: event stream URLs */
    int nevents;
    int clients;                      /* sse: event stream clients */
    const char *mutate;               /* sse: call endpoint URL */
    const char *token;                /* sse, check: bearer token */
    long post_base;                   /* sse, check: first post id used */
    long post_count;                  /* sse, check: how many post ids may be used */
    double settle;                    /* sse: wait for late events, seconds */
    double connect_wait;              /* sse: wait for every stream, seconds */
    const char *a, *b;                /* check: base URLs of the two instances */
    int chains;                       /* check: concurrent write-read chains */
    long stages[MAX_TARGETS];         /* idle: cumulative connection counts */
    int nstages;
    int concurrency;                  /* idle: connects in flight */
} options_t;

static void usage(void)
{
    fprintf(stderr,
            "usage: bench-client rate  --url URL [--method GET|POST] [--body JSON] [--header 'K: V']...\n"
            "                          --rate R --duration S [--conns N] [--timeout S]\n"
            "       bench-client sse   --events URL [--events URL]... --clients N --mutate URL --token T\n"
            "                          --rate R --duration S [--post-base ID] [--post-count N] [--settle S]\n"
            "       bench-client check --a BASE_URL --b BASE_URL --token T --duration S [--chains N]\n"
            "                          [--post-base ID] [--post-count N]\n"
            "       bench-client idle  --url URL --stages N[,N...] [--concurrency N]\n");
}

static double parse_num(const char *s, const char *what)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno != 0 || end == s || *end != '\0' || !(v >= 0))
        die("--%s wants a non-negative number, not \"%s\"", what, s);
    return v;
}

static void parse_stages(options_t *o, const char *list)
{
    char buf[512];
    snprintf(buf, sizeof(buf), "%s", list);
    char *save = NULL;
    for (char *tok = strtok_r(buf, ",", &save); tok != NULL; tok = strtok_r(NULL, ",", &save)) {
        if (o->nstages == MAX_TARGETS)
            die("at most %d stages", MAX_TARGETS);
        long n = (long)parse_num(tok, "stages");
        if (n < 1 || (o->nstages > 0 && n <= o->stages[o->nstages - 1]))
            die("--stages wants increasing positive counts");
        o->stages[o->nstages++] = n;
    }
}

static void parse_options(options_t *o, int argc, char **argv)
{
    static const struct option opts[] = {
        {"url", required_argument, NULL, 'u'},       {"method", required_argument, NULL, 'm'},
        {"body", required_argument, NULL, 'B'},      {"header", required_argument, NULL, 'H'},
        {"rate", required_argument, NULL, 'r'},      {"duration", required_argument, NULL, 'd'},
        {"conns", required_argument, NULL, 'c'},     {"timeout", required_argument, NULL, 'T'},
        {"events", required_argument, NULL, 'e'},    {"clients", required_argument, NULL, 'n'},
        {"mutate", required_argument, NULL, 'M'},    {"token", required_argument, NULL, 't'},
        {"post-base", required_argument, NULL, 'p'}, {"post-count", required_argument, NULL, 'P'},
        {"settle", required_argument, NULL, 's'},    {"connect-wait", required_argument, NULL, 'W'},
        {"a", required_argument, NULL, 'a'},         {"b", required_argument, NULL, 'b'},
        {"chains", required_argument, NULL, 'C'},    {"stages", required_argument, NULL, 'S'},
        {"concurrency", required_argument, NULL, 'x'}, {NULL, 0, NULL, 0},
    };
    memset(o, 0, sizeof(*o));
    o->method = "GET";
    o->conns = 64;
    o->timeout = 30;
    o->clients = 100;
    o->post_base = 1;
    o->post_count = 1000;
    o->settle = 5;
    o->connect_wait = 60;
    o->chains = 4;
    o->concurrency = 256;
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
            case 'u': o->url = optarg; break;
            case 'm': o->method = optarg; break;
            case 'B': o->body = optarg; break;
            case 'H':
                if (o->nheaders == MAX_HEADERS)
                    die("at most %d --header", MAX_HEADERS);
                o->headers[o->nheaders++] = optarg;
                break;
            case 'r': o->rate = parse_num(optarg, "rate"); break;
            case 'd': o->duration = parse_num(optarg, "duration"); break;
            case 'c': o->conns = (int)parse_num(optarg, "conns"); break;
            case 'T': o->timeout = (int)parse_num(optarg, "timeout"); break;
            case 'e':
                if (o->nevents == MAX_TARGETS)
                    die("at most %d --events", MAX_TARGETS);
                o->events[o->nevents++] = optarg;
                break;
            case 'n': o->clients = (int)parse_num(optarg, "clients"); break;
            case 'M': o->mutate = optarg; break;
            case 't': o->token = optarg; break;
            case 'p': o->post_base = (long)parse_num(optarg, "post-base"); break;
            case 'P': o->post_count = (long)parse_num(optarg, "post-count"); break;
            case 's': o->settle = parse_num(optarg, "settle"); break;
            case 'W': o->connect_wait = parse_num(optarg, "connect-wait"); break;
            case 'a': o->a = optarg; break;
            case 'b': o->b = optarg; break;
            case 'C': o->chains = (int)parse_num(optarg, "chains"); break;
            case 'S': parse_stages(o, optarg); break;
            case 'x': o->concurrency = (int)parse_num(optarg, "concurrency"); break;
            default: usage(); exit(2);
        }
    }
    if (o->conns < 1 || o->timeout < 1 || o->chains < 1 || o->concurrency < 1 || o->post_base < 1)
        die("--conns, --timeout, --chains, --concurrency and --post-base must be at least 1");
}

/* ------------------------------------------------------------------------
 * The open-loop engine: request i is due at start + i / rate, whatever the
 * state of earlier requests. It goes out on an idle connection when there
 * is one, else it waits in the queue of the least busy connection; either
 * way its latency counts from its due time.
 * ---------------------------------------------------------------------- */

typedef struct engine engine_t;

/** Builds request index on req (headers, body); returns the path, or NULL to skip it. */
typedef const char *(*engine_build_fn)(engine_t *e, long index, struct evhttp_request *req);
/** Called once per request when it finished (req NULL or code 0 on failure). */
typedef void (*engine_done_fn)(engine_t *e, long index, double due, struct evhttp_request *req);

struct engine {
    struct event_base *base;         /* the one loop */
    target_t target;                 /* where requests go */
    enum evhttp_cmd_type cmd;        /* method */
    struct evhttp_connection **conns; /* the pool */
    int *busy;                       /* requests outstanding per connection */
    int nconns;
    double rate;                     /* requests per second */
    long total;                      /* requests to send */
    long sent;                       /* requests handed to evhttp so far */
    long finished;                   /* requests whose callback ran */
    double start;                    /* due time of request 0 */
    int next;                        /* round-robin start of the idle-connection scan */
    struct event *tick;              /* scheduler timer */
    engine_build_fn build;
    engine_done_fn done;
    void (*all_done)(engine_t *e);   /* every request finished */
    void *user;                      /* the mode's state */
};

/** One request in flight. */
typedef struct {
    engine_t *e;
    long index; /* request number */
    double due; /* when it was due */
    int conn;   /* pool slot */
} engine_req_t;

static void engine_on_done(struct evhttp_request *req, void *arg)
{
    engine_req_t *r = arg;
    engine_t *e = r->e;
    e->busy[r->conn]--;
    e->finished++;
    e->done(e, r->index, r->due, req);
    free(r);
    if (e->finished == e->total && e->sent == e->total && e->all_done != NULL)
        e->all_done(e);
}

/* Picks an idle connection (round robin), else the least busy one. */
static int engine_pick(engine_t *e)
{
    int best = e->next % e->nconns;
    for (int k = 0; k < e->nconns; k++) {
        int i = (e->next + k) % e->nconns;
        if (e->busy[i] == 0) {
            best = i;
            break;
        }
        if (e->busy[i] < e->busy[best])
            best = i;
    }
    e->next = best + 1;
    return best;
}

static void engine_send(engine_t *e, long index, double due)
{
    engine_req_t *r = malloc(sizeof(*r));
    struct evhttp_request *req = r != NULL ? evhttp_request_new(engine_on_done, r) : NULL;
    if (req == NULL) {
        free(r);
        e->finished++;
        e->done(e, index, due, NULL);
        return;
    }
    r->e = e;
    r->index = index;
    r->due = due;
    r->conn = engine_pick(e);
    const char *path = e->build(e, index, req);
    e->busy[r->conn]++;
    if (path == NULL || evhttp_make_request(e->conns[r->conn], req, e->cmd, path) < 0) {
        /* evhttp_make_request frees req on failure; run the callback ourselves. */
        if (path == NULL)
            evhttp_request_free(req);
        engine_on_done(NULL, r);
    }
}

static void engine_on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    engine_t *e = arg;
    double now = now_s();
    long due = (long)((now - e->start) * e->rate) + 1;
    if (due > e->total)
        due = e->total;
    while (e->sent < due) {
        long i = e->sent++;
        engine_send(e, i, e->start + (double)i / e->rate);
    }
    if (e->sent < e->total) {
        /* Sleep until the next request is due (precise timer: timerfd). */
        double wait = e->start + (double)e->sent / e->rate - now_s();
        if (wait < 0)
            wait = 0;
        struct timeval tv = {(time_t)wait, (suseconds_t)((wait - floor(wait)) * 1e6)};
        evtimer_add(e->tick, &tv);
    } else if (e->finished == e->total && e->all_done != NULL) {
        e->all_done(e);
    }
}

/* Sets up the pool; requests start with engine_start. */
static void engine_init(engine_t *e, struct event_base *base, const char *url, enum evhttp_cmd_type cmd, int nconns,
                        int timeout_s, double rate, long total)
{
    memset(e, 0, sizeof(*e));
    e->base = base;
    target_parse(&e->target, url);
    e->cmd = cmd;
    e->nconns = nconns;
    e->rate = rate > 0 ? rate : 1;
    e->total = total;
    e->conns = calloc((size_t)nconns, sizeof(*e->conns));
    e->busy = calloc((size_t)nconns, sizeof(*e->busy));
    e->tick = evtimer_new(base, engine_on_tick, e);
    if (e->conns == NULL || e->busy == NULL || e->tick == NULL)
        die("out of memory");
    for (int i = 0; i < nconns; i++)
        e->conns[i] = conn_new(base, &e->target, timeout_s);
}

static void engine_start(engine_t *e)
{
    e->start = now_s();
    if (e->total == 0) {
        if (e->all_done != NULL)
            e->all_done(e);
        return;
    }
    engine_on_tick(-1, 0, e);
}

static void engine_deinit(engine_t *e)
{
    for (int i = 0; i < e->nconns; i++)
        if (e->conns[i] != NULL)
            evhttp_connection_free(e->conns[i]);
    free(e->conns);
    free(e->busy);
    if (e->tick != NULL)
        event_free(e->tick);
}

/* ------------------------------------------------------------------------
 * rate: one fixed request at a fixed rate
 * ---------------------------------------------------------------------- */

typedef struct {
    const options_t *o;
    samples_t lat;      /* 2xx latencies from the due time */
    long ok, non2xx, failed;
    double last_done;   /* when the last request finished */
} rate_state_t;

static const char *rate_build(engine_t *e, long index, struct evhttp_request *req)
{
    (void)index;
    rate_state_t *st = e->user;
    request_fill(req, &e->target, st->o->body, NULL);
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    for (int i = 0; i < st->o->nheaders; i++) {
        char name[128];
        const char *colon = strchr(st->o->headers[i], ':');
        if (colon == NULL || (size_t)(colon - st->o->headers[i]) >= sizeof(name))
            continue;
        memcpy(name, st->o->headers[i], (size_t)(colon - st->o->headers[i]));
        name[colon - st->o->headers[i]] = '\0';
        const char *value = colon + 1;
        while (*value == ' ')
            value++;
        evhttp_add_header(h, name, value);
    }
    return e->target.path;
}

static void rate_done(engine_t *e, long index, double due, struct evhttp_request *req)
{
    (void)index;
    rate_state_t *st = e->user;
    double now = now_s();
    st->last_done = now;
    if (req == NULL || evhttp_request_get_response_code(req) == 0)
        st->failed++;
    else if (is_2xx(req)) {
        st->ok++;
        samples_add(&st->lat, now - due);
    } else
        st->non2xx++;
}

static void rate_all_done(engine_t *e)
{
    event_base_loopexit(e->base, NULL);
}

static int run_rate(const options_t *o)
{
    if (o->url == NULL || o->rate <= 0 || o->duration <= 0)
        die("rate needs --url, --rate and --duration");
    enum evhttp_cmd_type cmd = strcmp(o->method, "POST") == 0 ? EVHTTP_REQ_POST : EVHTTP_REQ_GET;
    struct event_base *base = base_new();
    rate_state_t st;
    memset(&st, 0, sizeof(st));
    st.o = o;
    engine_t e;
    long total = (long)llround(o->rate * o->duration);
    engine_init(&e, base, o->url, cmd, o->conns, o->timeout, o->rate, total);
    e.build = rate_build;
    e.done = rate_done;
    e.all_done = rate_all_done;
    e.user = &st;
    engine_start(&e);
    /* Bound the whole run: the schedule plus one request timeout. */
    struct timeval limit = {(time_t)(o->duration + o->timeout + 1), 0};
    event_base_loopexit(base, &limit);
    event_base_dispatch(base);
    double elapsed = (st.last_done > 0 ? st.last_done : now_s()) - e.start;
    long unfinished = e.total - e.finished;
    json_t *lat = samples_json(&st.lat);
    print_json(json_pack("{s:s,s:s,s:f,s:f,s:i,s:I,s:I,s:I,s:I,s:I,s:I,s:f,s:o}", "mode", "rate", "url", o->url,
                         "rate", o->rate, "duration_s", o->duration, "conns", o->conns, "planned", (json_int_t)total,
                         "sent", (json_int_t)e.sent, "ok", (json_int_t)st.ok, "non2xx", (json_int_t)st.non2xx,
                         "failed", (json_int_t)st.failed, "unfinished", (json_int_t)unfinished, "achieved_rps",
                         elapsed > 0 ? (double)st.ok / elapsed : 0.0, "latency_ms", lat));
    engine_deinit(&e);
    free(st.lat.v);
    event_base_free(base);
    return 0;
}

/* ------------------------------------------------------------------------
 * sse: event delivery latency
 * ---------------------------------------------------------------------- */

typedef struct sse_state sse_state_t;

/** One event stream. */
typedef struct {
    sse_state_t *st;
    struct evhttp_connection *conn;
    target_t target;
    bool connected; /* first bytes of the stream arrived */
    bool closed;    /* the stream ended */
    char *line;     /* partial line carried between chunks */
    size_t len, cap;
    double *recv;   /* per mutation: arrival time of its event, 0 = not yet */
} sse_client_t;

struct sse_state {
    const options_t *o;
    struct event_base *base;
    sse_client_t *clients;
    int nclients;
    int connected, closed_early;
    long nmut;          /* mutations planned */
    double *sent_at;    /* per mutation: due time */
    double *resp_at;    /* per mutation: response time, 0 = failed */
    long mut_ok, mut_failed;
    long received, duplicates, unexpected;
    bool mutating;      /* the mutation phase has begun */
    bool finished;
    double connect_start, mut_done_at;
    engine_t eng;
    struct event *watch; /* connect / settle watcher */
    char run_tag[32];
};

/* Handles one complete line of an event stream. */
static void sse_line(sse_client_t *c, const char *line)
{
    sse_state_t *st = c->st;
    if (strncmp(line, "data:", 5) != 0)
        return;
    const char *payload = line + 5;
    while (*payload == ' ')
        payload++;
    json_t *ev = json_loads(payload, 0, NULL);
    json_t *pid = json_object_get(json_object_get(ev, "params"), "post_id");
    const char *ctx = json_string_value(json_object_get(ev, "context"));
    long idx = json_is_integer(pid) ? (long)json_integer_value(pid) - st->o->post_base : -1;
    if (ctx == NULL || strcmp(ctx, "post") != 0 || !st->mutating || idx < 0 || idx >= st->nmut) {
        st->unexpected++;
    } else if (c->recv[idx] != 0) {
        st->duplicates++;
    } else {
        c->recv[idx] = now_s();
        st->received++;
    }
    json_decref(ev);
}

static void sse_on_chunk(struct evhttp_request *req, void *arg)
{
    sse_client_t *c = arg;
    if (!c->connected) {
        c->connected = true;
        c->st->connected++;
    }
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t n = evbuffer_get_length(in);
    if (c->len + n + 1 > c->cap) {
        size_t cap = (c->len + n + 1) * 2;
        char *line = realloc(c->line, cap);
        if (line == NULL) {
            evbuffer_drain(in, n);
            return;
        }
        c->line = line;
        c->cap = cap;
    }
    evbuffer_remove(in, c->line + c->len, n);
    c->len += n;
    c->line[c->len] = '\0';
    size_t start = 0;
    for (size_t i = 0; i < c->len; i++) {
        if (c->line[i] != '\n')
            continue;
        c->line[i] = '\0';
        if (i > start && c->line[i - 1] == '\r')
            c->line[i - 1] = '\0';
        sse_line(c, c->line + start);
        start = i + 1;
    }
    memmove(c->line, c->line + start, c->len - start);
    c->len -= start;
}

static void sse_on_end(struct evhttp_request *req, void *arg)
{
    (void)req;
    sse_client_t *c = arg;
    if (!c->closed && !c->st->finished) {
        c->closed = true;
        c->st->closed_early++;
    }
}

static const char *sse_build(engine_t *e, long index, struct evhttp_request *req)
{
    sse_state_t *st = e->user;
    char body[256], auth[2048];
    snprintf(body, sizeof(body), "{\"function\":\"update_post\",\"args\":{\"post_id\":%ld,\"title\":\"sse %s %ld\"}}",
             st->o->post_base + index, st->run_tag, index);
    snprintf(auth, sizeof(auth), "Bearer %s", st->o->token);
    request_fill(req, &e->target, body, auth);
    return e->target.path;
}

static void sse_mut_done(engine_t *e, long index, double due, struct evhttp_request *req)
{
    sse_state_t *st = e->user;
    st->sent_at[index] = due;
    if (is_2xx(req)) {
        st->resp_at[index] = now_s();
        st->mut_ok++;
    } else {
        st->mut_failed++;
        if (req != NULL && st->mut_failed <= 3)
            fprintf(stderr, "bench-client: update_post answered %d\n", evhttp_request_get_response_code(req));
    }
}

static void sse_mut_all_done(engine_t *e)
{
    sse_state_t *st = e->user;
    if (st->mut_done_at == 0)
        st->mut_done_at = now_s();
}

/* Expected deliveries: every acknowledged mutation to every open stream. */
static long sse_expected(const sse_state_t *st)
{
    long open = 0;
    for (int i = 0; i < st->nclients; i++)
        if (st->clients[i].connected && !st->clients[i].closed)
            open++;
    return open * st->mut_ok;
}

static void sse_on_watch(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    sse_state_t *st = arg;
    double now = now_s();
    if (!st->mutating) {
        if (st->connected + st->closed_early >= st->nclients || now - st->connect_start > st->o->connect_wait) {
            if (st->connected < st->nclients)
                fprintf(stderr, "bench-client: %d of %d event streams connected\n", st->connected, st->nclients);
            st->mutating = true;
            engine_start(&st->eng);
        }
        return;
    }
    if (st->mut_done_at > 0 && (st->received >= sse_expected(st) || now - st->mut_done_at > st->o->settle)) {
        st->finished = true;
        event_base_loopexit(st->base, NULL);
    }
}

static int run_sse(const options_t *o)
{
    if (o->nevents == 0 || o->mutate == NULL || o->token == NULL || o->rate <= 0 || o->duration <= 0 ||
        o->clients < 1)
        die("sse needs --events, --clients, --mutate, --token, --rate and --duration");
    struct event_base *base = base_new();
    sse_state_t st;
    memset(&st, 0, sizeof(st));
    st.o = o;
    st.base = base;
    st.nclients = o->clients;
    st.nmut = (long)llround(o->rate * o->duration);
    if (st.nmut > o->post_count) {
        fprintf(stderr, "bench-client: %ld mutations capped to %ld distinct posts\n", st.nmut, o->post_count);
        st.nmut = o->post_count;
    }
    snprintf(st.run_tag, sizeof(st.run_tag), "%ld-%d", (long)time(NULL), (int)getpid());
    st.clients = calloc((size_t)st.nclients, sizeof(*st.clients));
    st.sent_at = calloc((size_t)st.nmut + 1, sizeof(double));
    st.resp_at = calloc((size_t)st.nmut + 1, sizeof(double));
    st.watch = event_new(base, -1, EV_PERSIST, sse_on_watch, &st);
    if (st.clients == NULL || st.sent_at == NULL || st.resp_at == NULL || st.watch == NULL)
        die("out of memory");

    st.connect_start = now_s();
    for (int i = 0; i < st.nclients; i++) {
        sse_client_t *c = &st.clients[i];
        c->st = &st;
        target_parse(&c->target, o->events[i % o->nevents]);
        c->recv = calloc((size_t)st.nmut + 1, sizeof(double));
        if (c->recv == NULL)
            die("out of memory");
        /* A stream is quiet between events: a long timeout keeps it open. */
        c->conn = conn_new(base, &c->target, 3600);
        struct evhttp_request *req = evhttp_request_new(sse_on_end, c);
        if (req == NULL)
            die("out of memory");
        evhttp_request_set_chunked_cb(req, sse_on_chunk);
        request_fill(req, &c->target, NULL, NULL);
        evhttp_add_header(evhttp_request_get_output_headers(req), "Accept", "text/event-stream");
        if (evhttp_make_request(c->conn, req, EVHTTP_REQ_GET, c->target.path) < 0)
            die("cannot send the event stream request");
    }

    engine_init(&st.eng, base, o->mutate, EVHTTP_REQ_POST, o->conns, o->timeout, o->rate, st.nmut);
    st.eng.build = sse_build;
    st.eng.done = sse_mut_done;
    st.eng.all_done = sse_mut_all_done;
    st.eng.user = &st;
    struct timeval every = {0, 20000};
    evtimer_add(st.watch, &every);
    struct timeval limit = {(time_t)(o->connect_wait + o->duration + o->timeout + o->settle + 5), 0};
    event_base_loopexit(base, &limit);
    event_base_dispatch(base);
    st.finished = true;

    samples_t from_resp, from_req;
    memset(&from_resp, 0, sizeof(from_resp));
    memset(&from_req, 0, sizeof(from_req));
    long before_response = 0, missing = 0;
    int open_streams = 0;
    for (int i = 0; i < st.nclients; i++) {
        sse_client_t *c = &st.clients[i];
        if (!c->connected || c->closed)
            continue;
        open_streams++;
        for (long m = 0; m < st.nmut; m++) {
            if (st.resp_at[m] == 0)
                continue;
            if (c->recv[m] == 0) {
                missing++;
                continue;
            }
            double d = c->recv[m] - st.resp_at[m];
            if (d < 0)
                before_response++;
            samples_add(&from_resp, d);
            samples_add(&from_req, c->recv[m] - st.sent_at[m]);
        }
    }
    json_t *lr = samples_json(&from_resp), *lq = samples_json(&from_req);
    print_json(json_pack("{s:s,s:i,s:i,s:i,s:i,s:f,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:o,s:o}", "mode", "sse",
                         "clients", st.nclients, "connected", st.connected, "open_at_end", open_streams,
                         "closed_early", st.closed_early, "rate", o->rate, "mutations", (json_int_t)st.nmut,
                         "mutations_ok", (json_int_t)st.mut_ok, "mutations_failed", (json_int_t)st.mut_failed,
                         "events_expected", (json_int_t)(open_streams * st.mut_ok), "events_received",
                         (json_int_t)st.received, "events_missing", (json_int_t)missing, "duplicates",
                         (json_int_t)st.duplicates, "unexpected", (json_int_t)st.unexpected, "before_response",
                         (json_int_t)before_response, "latency_from_response_ms", lr, "latency_from_request_ms",
                         lq));
    engine_deinit(&st.eng);
    for (int i = 0; i < st.nclients; i++) {
        evhttp_connection_free(st.clients[i].conn);
        free(st.clients[i].recv);
        free(st.clients[i].line);
    }
    free(st.clients);
    free(st.sent_at);
    free(st.resp_at);
    free(from_resp.v);
    free(from_req.v);
    event_free(st.watch);
    event_base_free(base);
    return 0;
}

/* ------------------------------------------------------------------------
 * check: read-after-write across instances
 * ---------------------------------------------------------------------- */

typedef struct check_state check_state_t;

/** A write-then-read loop over its own posts (no two chains share a post). */
typedef struct {
    check_state_t *st;
    int id;
    struct evhttp_connection *conn[2]; /* to A and to B */
    long seq;                          /* iteration number */
    long post;                         /* post of this iteration */
    int writer;                        /* 0: A writes, B reads; 1: the reverse */
    char title[96];                    /* what was written */
} chain_t;

struct check_state {
    const options_t *o;
    struct event_base *base;
    target_t t[2];
    chain_t *chains;
    char auth[2048];
    double deadline;
    int running;
    long primes;                  /* priming reads answered */
    long writes_ok, write_errors, reads_ok, read_errors, violations;
    long cache[3]; /* HIT, MISS, BYPASS of the verifying reads */
    json_t *samples; /* examples of violations */
    char run_tag[32];
};

static void chain_step(chain_t *ch);

static void chain_next(chain_t *ch)
{
    ch->seq++;
    if (now_s() >= ch->st->deadline) {
        if (--ch->st->running == 0)
            event_base_loopexit(ch->st->base, NULL);
        return;
    }
    chain_step(ch);
}

/* Sends GET post context for ch->post to instance `which`, answered to cb. */
static void chain_get(chain_t *ch, int which, void (*cb)(struct evhttp_request *, void *))
{
    check_state_t *st = ch->st;
    char path[64];
    snprintf(path, sizeof(path), "/api/mizan/ctx/post/?post_id=%ld", ch->post);
    struct evhttp_request *r = evhttp_request_new(cb, ch);
    if (r == NULL) {
        st->read_errors++;
        chain_next(ch);
        return;
    }
    request_fill(r, &st->t[which], NULL, NULL);
    if (evhttp_make_request(ch->conn[which], r, EVHTTP_REQ_GET, path) < 0) {
        st->read_errors++;
        chain_next(ch);
    }
}

/* Third step: the reader's answer must carry the title just written. */
static void on_verify(struct evhttp_request *req, void *arg)
{
    chain_t *ch = arg;
    check_state_t *st = ch->st;
    if (!is_2xx(req)) {
        st->read_errors++;
        chain_next(ch);
        return;
    }
    st->reads_ok++;
    const char *cache = evhttp_find_header(evhttp_request_get_input_headers(req), "X-Mizan-Cache");
    if (cache != NULL)
        st->cache[strcmp(cache, "HIT") == 0 ? 0 : strcmp(cache, "MISS") == 0 ? 1 : 2]++;
    json_t *body = response_json(req);
    json_t *post = json_object_get(json_object_get(body, "data"), "get_post");
    const char *title = json_string_value(json_object_get(post, "title"));
    if (title == NULL || strcmp(title, ch->title) != 0) {
        st->violations++;
        if (json_array_size(st->samples) < MAX_SAMPLES)
            json_array_append_new(st->samples,
                                  json_pack("{s:I,s:s,s:s,s:s?,s:s?}", "post_id", (json_int_t)ch->post, "written_on",
                                            ch->writer == 0 ? "a" : "b", "expected", ch->title, "got", title,
                                            "cache", cache));
    }
    json_decref(body);
    chain_next(ch);
}

/* Second step: the write was acknowledged (or not); read it back on the other instance. */
static void on_write(struct evhttp_request *req, void *arg)
{
    chain_t *ch = arg;
    check_state_t *st = ch->st;
    if (!is_2xx(req)) {
        st->write_errors++;
        if (req != NULL && st->write_errors <= 3)
            fprintf(stderr, "bench-client: update_post answered %d\n", evhttp_request_get_response_code(req));
        chain_next(ch);
        return;
    }
    st->writes_ok++;
    chain_get(ch, 1 - ch->writer, on_verify);
}

/*
 * First step done: the reader now holds the post's current bundle in its
 * cache (a hit, or a miss it just stored), so only an invalidation coming
 * from the writer's instance can make the coming read fresh.
 */
static void on_prime(struct evhttp_request *req, void *arg)
{
    chain_t *ch = arg;
    check_state_t *st = ch->st;
    if (!is_2xx(req)) {
        st->read_errors++;
        chain_next(ch);
        return;
    }
    st->primes++;
    char body[256];
    snprintf(body, sizeof(body), "{\"function\":\"update_post\",\"args\":{\"post_id\":%ld,\"title\":\"%s\"}}", ch->post,
             ch->title);
    struct evhttp_request *r = evhttp_request_new(on_write, ch);
    if (r == NULL) {
        st->write_errors++;
        chain_next(ch);
        return;
    }
    request_fill(r, &st->t[ch->writer], body, st->auth);
    if (evhttp_make_request(ch->conn[ch->writer], r, EVHTTP_REQ_POST, "/api/mizan/call/") < 0) {
        st->write_errors++;
        chain_next(ch);
    }
}

/* One iteration: read on the reader (prime), write on the writer, read on the reader (verify). */
static void chain_step(chain_t *ch)
{
    check_state_t *st = ch->st;
    long per_chain = st->o->post_count / st->o->chains;
    ch->post = st->o->post_base + ch->id + (long)st->o->chains * (ch->seq % per_chain);
    ch->writer = (int)((ch->seq / per_chain) % 2);
    snprintf(ch->title, sizeof(ch->title), "raw %s %d %ld", st->run_tag, ch->id, ch->seq);
    chain_get(ch, 1 - ch->writer, on_prime);
}

static int run_check(const options_t *o)
{
    if (o->a == NULL || o->b == NULL || o->token == NULL || o->duration <= 0)
        die("check needs --a, --b, --token and --duration");
    if (o->post_count < o->chains)
        die("check needs at least one post per chain");
    struct event_base *base = base_new();
    check_state_t st;
    memset(&st, 0, sizeof(st));
    st.o = o;
    st.base = base;
    target_parse(&st.t[0], o->a);
    target_parse(&st.t[1], o->b);
    snprintf(st.auth, sizeof(st.auth), "Bearer %s", o->token);
    snprintf(st.run_tag, sizeof(st.run_tag), "%ld-%d", (long)time(NULL), (int)getpid());
    st.samples = json_array();
    st.chains = calloc((size_t)o->chains, sizeof(*st.chains));
    if (st.samples == NULL || st.chains == NULL)
        die("out of memory");
    double start = now_s();
    st.deadline = start + o->duration;
    st.running = o->chains;
    for (int i = 0; i < o->chains; i++) {
        chain_t *ch = &st.chains[i];
        ch->st = &st;
        ch->id = i;
        ch->conn[0] = conn_new(base, &st.t[0], o->timeout);
        ch->conn[1] = conn_new(base, &st.t[1], o->timeout);
        chain_step(ch);
    }
    struct timeval limit = {(time_t)(o->duration + o->timeout + 1), 0};
    event_base_loopexit(base, &limit);
    event_base_dispatch(base);
    double elapsed = now_s() - start;
    print_json(json_pack("{s:s,s:i,s:f,s:I,s:I,s:I,s:I,s:I,s:I,s:f,s:{s:I,s:I,s:I},s:o}", "mode", "check",
                         "chains", o->chains, "duration_s", elapsed, "primes", (json_int_t)st.primes, "writes_ok", (json_int_t)st.writes_ok, "write_errors",
                         (json_int_t)st.write_errors, "reads_ok", (json_int_t)st.reads_ok, "read_errors",
                         (json_int_t)st.read_errors, "violations", (json_int_t)st.violations, "pairs_per_s",
                         elapsed > 0 ? (double)st.reads_ok / elapsed : 0.0, "read_cache", "hit",
                         (json_int_t)st.cache[0], "miss", (json_int_t)st.cache[1], "bypass", (json_int_t)st.cache[2],
                         "violation_samples", st.samples));
    for (int i = 0; i < o->chains; i++) {
        evhttp_connection_free(st.chains[i].conn[0]);
        evhttp_connection_free(st.chains[i].conn[1]);
    }
    free(st.chains);
    event_base_free(base);
    return 0;
}

/* ------------------------------------------------------------------------
 * idle: many idle keep-alive connections, in stages
 * ---------------------------------------------------------------------- */

typedef struct {
    const options_t *o;
    struct event_base *base;
    target_t target;
    struct evhttp_connection **conns; /* every connection opened */
    long opened;                      /* connections created */
    long inflight;                    /* first requests not answered yet */
    long established, failed;         /* answered 2xx / not */
    int stage;                        /* index into o->stages */
    bool waiting;                     /* a stage is complete; waiting for stdin */
    struct event *input;              /* stdin watcher */
} idle_state_t;

static void idle_fill(idle_state_t *st);

static void idle_on_response(struct evhttp_request *req, void *arg)
{
    idle_state_t *st = arg;
    st->inflight--;
    if (is_2xx(req))
        st->established++;
    else
        st->failed++;
    idle_fill(st);
}

/* Opens connections up to the current stage, keeping o->concurrency in flight. */
static void idle_fill(idle_state_t *st)
{
    long goal = st->o->stages[st->stage];
    while (st->opened < goal && st->inflight < st->o->concurrency) {
        struct evhttp_connection *c = conn_new(st->base, &st->target, 3600);
        st->conns[st->opened++] = c;
        struct evhttp_request *req = evhttp_request_new(idle_on_response, st);
        if (req == NULL)
            die("out of memory");
        request_fill(req, &st->target, NULL, NULL);
        st->inflight++;
        if (evhttp_make_request(c, req, EVHTTP_REQ_GET, st->target.path) < 0) {
            st->inflight--;
            st->failed++;
        }
    }
    if (!st->waiting && st->opened == goal && st->inflight == 0) {
        st->waiting = true;
        printf("ready %ld %ld\n", st->established, st->failed);
        fflush(stdout);
    }
}

static void idle_on_input(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    idle_state_t *st = arg;
    char buf[256];
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n > 0 && !st->waiting)
        return; /* a line before the stage is ready: ignored */
    if (n <= 0 || st->stage + 1 >= st->o->nstages) {
        event_base_loopexit(st->base, NULL);
        return;
    }
    st->stage++;
    st->waiting = false;
    idle_fill(st);
}

static int run_idle(const options_t *o)
{
    if (o->url == NULL || o->nstages == 0)
        die("idle needs --url and --stages");
    struct event_base *base = base_new();
    idle_state_t st;
    memset(&st, 0, sizeof(st));
    st.o = o;
    st.base = base;
    target_parse(&st.target, o->url);
    st.conns = calloc((size_t)o->stages[o->nstages - 1], sizeof(*st.conns));
    st.input = event_new(base, STDIN_FILENO, EV_READ | EV_PERSIST, idle_on_input, &st);
    if (st.conns == NULL || st.input == NULL)
        die("out of memory");
    event_add(st.input, NULL);
    idle_fill(&st);
    event_base_dispatch(base);

    /* Reset rather than close: no TIME_WAIT left to eat ephemeral ports. */
    struct linger lg = {1, 0};
    for (long i = 0; i < st.opened; i++) {
        struct bufferevent *bev = evhttp_connection_get_bufferevent(st.conns[i]);
        evutil_socket_t fd = bev != NULL ? bufferevent_getfd(bev) : -1;
        if (fd >= 0)
            setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
        evhttp_connection_free(st.conns[i]);
    }
    print_json(json_pack("{s:s,s:I,s:I,s:I}", "mode", "idle", "opened", (json_int_t)st.opened, "established",
                         (json_int_t)st.established, "failed", (json_int_t)st.failed));
    free(st.conns);
    event_free(st.input);
    event_base_free(base);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage();
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    raise_nofile();
    const char *mode = argv[1];
    options_t o;
    parse_options(&o, argc - 1, argv + 1);
    if (strcmp(mode, "rate") == 0)
        return run_rate(&o);
    if (strcmp(mode, "sse") == 0)
        return run_sse(&o);
    if (strcmp(mode, "check") == 0)
        return run_check(&o);
    if (strcmp(mode, "idle") == 0)
        return run_idle(&o);
    usage();
    return 2;
}
