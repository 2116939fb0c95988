/*
 * harness.h - end-to-end test support: start the built `mizand` (and
 * redis-server) in throw-away directories on free loopback ports, speak
 * HTTP/1.1 to it over plain sockets, and check the protocol's envelopes.
 *
 * The e2e tests never link the gateway: everything they know about it comes
 * through its command line, its log lines and the wire (PROTOCOL.md).
 *
 * Lifetime. Every test suite installs mz_setup() / mz_teardown() as its
 * Criterion init / fini fixtures. Everything the harness hands out
 * (gateways, connections, responses, strings, JSON values given to
 * mz_keep()) is owned by a per-test arena that mz_teardown() releases,
 * after it has killed every process the test started and removed every
 * temporary directory - also when an assertion failed half-way. Returned
 * pointers are therefore borrowed and valid until the end of the test;
 * tests never free them. Child processes also get PR_SET_PDEATHSIG(SIGKILL),
 * so a test that crashes or is killed for a timeout leaves no gateway
 * running.
 *
 * Threads. Functions documented "asserting" use Criterion assertions and
 * must only be called from the test's main thread. The mz_try_* / mz_conn_*
 * functions and the batch runner never assert and may run on any thread
 * (the arena is mutex-guarded).
 *
 * Environment read: MIZAN_TEST_BIN (the mizand to start),
 * MIZAN_TEST_MODULE_DIR (module_dir of generated configs),
 * MIZAN_TEST_SOURCE_DIR, MIZAN_TEST_BUILD_DIR; MIZAN_TEST_KEEP_TMP=1 keeps
 * temporary directories, MIZAN_TEST_VERBOSE=1 prints every gateway log at
 * teardown. Inherited MIZAN_* variables other than MIZAN_TEST_* are removed
 * from the environment of started gateways so that a developer's shell
 * cannot change what a test sees.
 */
#ifndef MZ_HARNESS_H
#define MZ_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include <jansson.h>

/** Token signing key of generated configs (the PROTOCOL.md §4 vector key). */
#define MZ_TOKEN_SECRET "mizan-token-secret-0123456789abcd"
/** Cache key secret of generated configs (the PROTOCOL.md §6 vector key). */
#define MZ_CACHE_SECRET "mizan-test-secret-0123456789abcdef"
/** Default bound on one HTTP exchange. */
#define MZ_HTTP_TIMEOUT_MS 15000
/** Default bound on a gateway's start (until its "listening" line). */
#define MZ_READY_TIMEOUT_MS 20000
/** Default bound on a gateway's graceful stop after SIGTERM. */
#define MZ_STOP_TIMEOUT_MS 15000

/* ------------------------------------------------------------------------
 * Fixtures, environment, clock, arena
 * ---------------------------------------------------------------------- */

/** Criterion init fixture: ignores SIGPIPE, resets the per-test arena. */
void mz_setup(void);

/**
 * Criterion fini fixture: closes connections, stops (SIGTERM, then
 * SIGKILL) every process still running, removes temporary directories and
 * frees the arena. Never asserts.
 */
void mz_teardown(void);

/** Value of a required environment variable (asserting: fails when unset). */
const char *mz_env(const char *name);

/** Monotonic clock in milliseconds (fractional). Thread-safe. */
double mz_now_ms(void);

/** Sleeps ms milliseconds (restarting after signals). Thread-safe. */
void mz_sleep_ms(int ms);

/** printf into a new string owned by the arena. Thread-safe. */
char *mz_fmt(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/** n zeroed bytes owned by the arena. Thread-safe. */
void *mz_alloc(size_t n);

/** A string of n copies of ch (arena-owned). Thread-safe. */
char *mz_repeat(char ch, size_t n);

/** Hands a reference to the arena (steals v; returns v, borrowed). */
json_t *mz_keep(json_t *v);

/**
 * Parses printf-formatted JSON text (any JSON value) into a value owned by
 * the arena (returned borrowed). Asserting: fails on a parse error.
 */
json_t *mz_json(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/** Compact dump with sorted keys (borrows v; arena string; "(null)" for NULL). */
char *mz_dump(const json_t *v);

/** A fresh directory under $TMPDIR (or /tmp), removed at teardown. Asserting. */
char *mz_tmpdir(void);

/** Writes text to dir/name (created or truncated); returns the path. Asserting. */
char *mz_write_file(const char *dir, const char *name, const char *text);

/** Whole content of a file (arena string), or NULL when it cannot be read. */
char *mz_read_file(const char *path);

/** Raises RLIMIT_NOFILE's soft limit to at least want (up to the hard limit);
 *  returns the resulting soft limit. */
long mz_raise_nofile(long want);

/** A listening TCP socket on a free loopback port (*port receives it), with backlog. Asserting. */
int mz_listen_loopback(int backlog, int *port);

/* ------------------------------------------------------------------------
 * Running commands
 * ---------------------------------------------------------------------- */

/** Full path of an executable found in PATH (arena string), or NULL. */
char *mz_find_exe(const char *name);

/** Outcome of mz_run(). */
typedef struct mz_run {
    int status;        /**< exit code; 128+signal when killed; -1 on timeout */
    char *out;         /**< everything written to stdout (NUL-terminated) */
    char *err;         /**< everything written to stderr (NUL-terminated) */
    double elapsed_ms; /**< wall time until the child was reaped */
} mz_run_t;

/**
 * Runs argv (argv[0] a path; NULL-terminated) in cwd (NULL: inherited) with
 * env (extra "NAME=value" strings, NULL-terminated, may be NULL), capturing
 * stdout and stderr, killing it after timeout_ms. Asserting (fails only
 * when the command cannot be started). The result lives in the arena.
 */
mz_run_t *mz_run(const char *const *argv, const char *cwd, const char *const *env, int timeout_ms);

/* ------------------------------------------------------------------------
 * The gateway under test
 * ---------------------------------------------------------------------- */

/** A started gateway; owned by the arena. */
typedef struct mz_gw {
    pid_t pid;         /**< the mizand process */
    int port;          /**< bound port parsed from the "listening" log line */
    char *dir;         /**< its working directory (temp dir unless given) */
    char *config_path; /**< the config file written for it */
    char *log_path;    /**< its stdout+stderr */
    json_t *config;    /**< the config as written (borrowed, arena-owned) */
    bool exited;       /**< reaped already */
    int exit_status;   /**< when exited: exit code or 128+signal */
    double started_ms; /**< mz_now_ms() when it was spawned */
} mz_gw_t;

/** How to start a gateway; zero-initialise and set what matters. */
typedef struct mz_gw_opts {
    json_t *config;         /**< borrowed; merged onto mz_config_defaults()
                                 (objects merge recursively, a JSON null
                                 deletes the member); NULL: defaults only */
    bool raw_config;        /**< write `config` as is, without defaults */
    const char *const *env; /**< extra "NAME=value", NULL-terminated, or NULL */
    const char *dir;        /**< existing directory (e.g. to share a blog.db
                                 between gateways); NULL: a new temp dir */
    int ready_timeout_ms;   /**< 0: MZ_READY_TIMEOUT_MS */
} mz_gw_opts_t;

/**
 * The defaults every generated config starts from (new reference): listen
 * 127.0.0.1:0, io_threads 2, workers 8, queue_size 1024, log_level info,
 * token and cache secrets, module_dir = MIZAN_TEST_MODULE_DIR, the blog
 * module with its database at dir/blog.db, and validate_output true (every
 * result checked against its declared output schema).
 */
json_t *mz_config_defaults(const char *dir);

/** Merges src into dst as mz_gw_opts_t.config describes (borrows both). */
void mz_json_merge(json_t *dst, const json_t *src);

/** Writes a config (borrowed) as dir/name; returns the path. Asserting. */
char *mz_write_config(const char *dir, const char *name, const json_t *config);

/**
 * Starts mizand and waits for its "listening" log line. Asserting: fails,
 * quoting the log's tail, when the process dies or is not ready in time.
 */
mz_gw_t *mz_gw_start_opts(const mz_gw_opts_t *opts);

/** mz_gw_start_opts() with only config overrides (borrowed; may be NULL). */
mz_gw_t *mz_gw_start(json_t *config);

/**
 * Sends SIGTERM and waits up to timeout_ms (0: MZ_STOP_TIMEOUT_MS) for the
 * exit. Returns the exit status (exit code, or 128+signal). Asserting:
 * fails (after SIGKILL) when the gateway does not exit in time.
 */
int mz_gw_stop(mz_gw_t *gw, int timeout_ms);

/** mz_gw_stop() and asserts exit status 0, quoting the log's tail if not. */
void mz_gw_stop_ok(mz_gw_t *gw);

/** Sends a signal to the gateway (it must still be running). Asserting. */
void mz_gw_signal(mz_gw_t *gw, int sig);

/**
 * Waits up to timeout_ms for the gateway to exit; returns its exit status,
 * or -1 when it is still running. Never asserts.
 */
int mz_gw_wait(mz_gw_t *gw, int timeout_ms);

/** True while the process has not exited (reaps it when it has). */
bool mz_gw_alive(mz_gw_t *gw);

/** The last max bytes of the gateway's log (arena string, never NULL). */
char *mz_gw_log_tail(const mz_gw_t *gw, size_t max);

/**
 * Mints an MWT with `mizand token --config <gw's config> --sub sub` plus the
 * extra arguments that follow (const char *, NULL-terminated: "--staff",
 * "--superuser", "--perm", "blog.view_drafts", "--ttl", "60", ...).
 * Asserting: the command must exit 0 and print a three-part token.
 */
char *mz_token(const mz_gw_t *gw, const char *sub, ...) __attribute__((sentinel));

/** Same as mz_token() with an explicit config file. */
char *mz_token_cfg(const char *config_path, const char *sub, ...) __attribute__((sentinel));

/* ------------------------------------------------------------------------
 * HTTP/1.1 client
 * ---------------------------------------------------------------------- */

/** One response header. */
typedef struct mz_header {
    char *name;  /**< as sent */
    char *value; /**< trimmed */
} mz_header_t;

/** A parsed response; owned by the arena. */
typedef struct mz_resp {
    int status;           /**< HTTP status code */
    char *reason;         /**< reason phrase */
    mz_header_t *headers; /**< nheaders entries, in order */
    size_t nheaders;      /**< number of headers */
    char *body;           /**< body bytes, NUL-terminated */
    size_t body_len;      /**< body length without the NUL */
    json_t *json;         /**< body parsed as JSON (any value), NULL if not JSON */
    double elapsed_ms;    /**< from the first byte sent to the last byte read */
} mz_resp_t;

/** A request to send; every pointer is borrowed for the call. */
typedef struct mz_req {
    const char *method;          /**< "GET", "POST", ... */
    const char *path;            /**< request target, e.g. "/api/mizan/call/" */
    const char *const *headers;  /**< extra "Name: value" lines, NULL-terminated,
                                      or NULL */
    const char *body;            /**< NULL: no body */
    size_t body_len;             /**< bytes of body (strlen when 0 and body set) */
    const char *token;           /**< sent as Authorization: Bearer, or NULL */
    bool no_content_length;      /**< omit Content-Length even with a body */
} mz_req_t;

/** A client connection (keep-alive capable); owned by the arena. */
typedef struct mz_conn {
    int fd;           /**< non-blocking socket; -1 once closed */
    int port;         /**< peer port */
    int timeout_ms;   /**< bound on one exchange (MZ_HTTP_TIMEOUT_MS) */
    bool peer_closed; /**< EOF seen or "Connection: close" received */
    char *buf;        /**< bytes received and not yet consumed */
    size_t len;       /**< bytes in buf */
    size_t cap;       /**< capacity of buf */
} mz_conn_t;

/** Connects to 127.0.0.1:port; NULL with a reason in err on failure. */
mz_conn_t *mz_try_connect(int port, int timeout_ms, char *err, size_t errlen);

/** Asserting mz_try_connect(). */
mz_conn_t *mz_connect(int port);

/** Closes the socket now (the struct stays valid until teardown). */
void mz_conn_close(mz_conn_t *c);

/** Sends raw bytes; 0, or -1 with a reason. */
int mz_try_send_raw(mz_conn_t *c, const void *bytes, size_t len, char *err, size_t errlen);

/** Serialises and sends a request; 0, or -1 with a reason. */
int mz_try_send(mz_conn_t *c, const mz_req_t *req, char *err, size_t errlen);

/** Reads one response within c->timeout_ms; 0 and *out, or -1 with a reason. */
int mz_try_recv(mz_conn_t *c, mz_resp_t **out, char *err, size_t errlen);

/**
 * Reads only a response head (status line and headers, 1xx skipped); the
 * body stays buffered in c for a stream reader. 0 and *out (empty body),
 * or -1 with a reason.
 */
int mz_try_recv_head(mz_conn_t *c, mz_resp_t **out, char *err, size_t errlen);

/** mz_try_send() + mz_try_recv(); elapsed_ms covers both. */
int mz_try_request(mz_conn_t *c, const mz_req_t *req, mz_resp_t **out, char *err, size_t errlen);

/**
 * Waits up to timeout_ms for the peer to close the connection (EOF or
 * reset), discarding any bytes received. Returns 1 when it closed, 0 when it
 * is still open at the deadline, -1 on another error. Never asserts.
 */
int mz_wait_closed(mz_conn_t *c, int timeout_ms);

/** Asserting request on an open connection. */
mz_resp_t *mz_request(mz_conn_t *c, const mz_req_t *req);

/** Asserting request on a fresh connection to the gateway (closed after). */
mz_resp_t *mz_http(const mz_gw_t *gw, const mz_req_t *req);

/**
 * POST /api/mizan/call/ with {"function": fn, "args": <args_json>} (args
 * member omitted when args_json is NULL); token may be NULL. Asserting.
 */
mz_resp_t *mz_call(const mz_gw_t *gw, const char *fn, const char *args_json, const char *token);

/** mz_call() on an existing connection. */
mz_resp_t *mz_call_on(mz_conn_t *c, const char *fn, const char *args_json, const char *token);

/** GET path with an optional token. Asserting. */
mz_resp_t *mz_get(const mz_gw_t *gw, const char *path, const char *token);

/** POST path with a raw body (may be NULL) and optional token. Asserting. */
mz_resp_t *mz_post(const mz_gw_t *gw, const char *path, const char *body, const char *token);

/** Body of a call request for fn and args_json (arena string). */
char *mz_call_body(const char *fn, const char *args_json);

/** First header of that name, case-insensitively; NULL when absent. */
const char *mz_header(const mz_resp_t *r, const char *name);

/** Number of headers of that name. */
size_t mz_header_count(const mz_resp_t *r, const char *name);

/** One-paragraph description (status, headers, body) for failure messages. */
char *mz_describe(const mz_resp_t *r);

/** True when id is 1..128 characters of [A-Za-z0-9._-]. */
bool mz_request_id_sane(const char *id);

/* ------------------------------------------------------------------------
 * Server-Sent Events streams
 * ---------------------------------------------------------------------- */

/** An open event stream (arena-owned). */
typedef struct mz_stream mz_stream_t;

/**
 * GETs path (with optional extra header lines and token) on a new
 * connection and reads the response head into *head; the body is then read
 * frame by frame. Asserting (on connection or head failures only: check
 * (*head)->status yourself).
 */
mz_stream_t *mz_stream_open(const mz_gw_t *gw, const char *path, const char *const *headers,
                            const char *token, mz_resp_t **head);

/**
 * The next frame (its lines up to and including the blank line that ends
 * it; comments included), as an arena string; NULL on timeout, end of
 * stream or error. Never asserts.
 */
char *mz_stream_next_frame(mz_stream_t *s, int timeout_ms);

/**
 * The data of the next frame whose `event:` is event (frames without data,
 * such as heartbeats, and other events are skipped), parsed as JSON
 * (arena-owned, borrowed; {"unparsable_data": "..."} when it is not JSON);
 * NULL on timeout or end of stream. Never asserts.
 */
json_t *mz_stream_next_event(mz_stream_t *s, const char *event, int timeout_ms);

/** True once the server ended the stream (waits up to timeout_ms). */
bool mz_stream_closed(mz_stream_t *s, int timeout_ms);

/** Closes the client side of the stream (the client goes away). */
void mz_stream_close(mz_stream_t *s);

/* ------------------------------------------------------------------------
 * Concurrency
 * ---------------------------------------------------------------------- */

/** Outcome of one request of a batch. */
typedef struct mz_result {
    mz_resp_t *resp; /**< NULL when the exchange failed */
    char err[256];   /**< the reason when resp is NULL */
    double start_ms; /**< mz_now_ms() before connecting */
    double end_ms;   /**< mz_now_ms() after the response (or failure) */
} mz_result_t;

/** A set of requests running concurrently, one thread and connection each. */
typedef struct mz_batch mz_batch_t;

/**
 * Starts n threads, each connecting to 127.0.0.1:port and sending reqs[i]
 * (borrowed until mz_batch_join()), all released at once. timeout_ms bounds
 * each exchange (0: MZ_HTTP_TIMEOUT_MS). Asserting (thread creation).
 */
mz_batch_t *mz_batch_start(int port, size_t n, const mz_req_t *reqs, int timeout_ms);

/** Waits up to timeout_ms until at least count requests were fully sent. */
bool mz_batch_wait_sent(mz_batch_t *b, size_t count, int timeout_ms);

/** Joins every thread; returns the n results (arena-owned). */
mz_result_t *mz_batch_join(mz_batch_t *b);

/** mz_batch_start() + mz_batch_join(). */
mz_result_t *mz_parallel(int port, size_t n, const mz_req_t *reqs, int timeout_ms);

/** Fills a request that calls fn (POST /api/mizan/call/); strings go to the arena. */
mz_req_t mz_call_req(const char *fn, const char *args_json, const char *token);

/* ------------------------------------------------------------------------
 * redis-server
 * ---------------------------------------------------------------------- */

/** A started redis-server; owned by the arena. */
typedef struct mz_redis {
    pid_t pid;      /**< the redis-server process */
    int port;       /**< its loopback port */
    char *dir;      /**< its temp dir (log, no persistence) */
    char *url;      /**< "redis://127.0.0.1:PORT" */
    char *log_path; /**< its stdout+stderr */
    bool exited;    /**< reaped already */
} mz_redis_t;

/**
 * Starts redis-server on a free loopback port without persistence and
 * waits for PING. Asserting: fails (never skips) when redis-server is not
 * installed or does not answer within 10 s.
 */
mz_redis_t *mz_redis_start(void);

/** Stops it (SIGTERM, then SIGKILL). Safe to call twice. */
void mz_redis_stop(mz_redis_t *r);

/**
 * Runs one command (argv NULL-terminated) on a fresh connection and returns
 * the reply as JSON (arena-owned): simple and bulk strings as strings,
 * integers as integers, nil as null, arrays as arrays, an error reply as
 * {"error": "..."}. Asserting.
 */
json_t *mz_redis_cmd(const mz_redis_t *r, const char *const *argv);

/** A free loopback TCP port (bound and released; racy by nature). */
int mz_free_port(void);

/* ------------------------------------------------------------------------
 * Protocol assertions (macros, so that failures name the test's line).
 * All asserting; JSON arguments are borrowed; returned values are borrowed
 * from the response (valid until teardown).
 * ---------------------------------------------------------------------- */

/** Status is exactly st. */
#define mz_expect_status(r, st) mz_expect_status_at(__FILE__, __LINE__, (r), (st))
/** Cache-Control: no-store, Content-Type: application/json, sane X-Request-Id. */
#define mz_expect_std_headers(r) mz_expect_std_headers_at(__FILE__, __LINE__, (r))
/**
 * Status st, standard headers, body exactly
 * {"error": {"code": code, "message": non-empty string, "details": any}};
 * returns details (borrowed).
 */
#define mz_expect_error(r, st, code) mz_expect_error_at(__FILE__, __LINE__, (r), (st), (code))
/** 200, standard headers, body exactly {"result": ...}; returns result (borrowed). */
#define mz_expect_result(r) mz_expect_result_at(__FILE__, __LINE__, (r))
/**
 * 200, standard headers, body exactly {"result": ..., "invalidate": <array>};
 * returns result (borrowed); the list is r->json["invalidate"].
 */
#define mz_expect_mutation(r) mz_expect_mutation_at(__FILE__, __LINE__, (r))
/** json_equal(actual, expected text); the message shows both. */
#define mz_expect_json(actual, expected_text) \
    mz_expect_json_at(__FILE__, __LINE__, (actual), (expected_text))
/**
 * details (a VALIDATION_FAILED list) holds an entry whose loc equals loc_json
 * and whose type equals type (NULL: any); every entry is {loc, msg, type}.
 */
#define mz_expect_violation(details, loc_json, type) \
    mz_expect_violation_at(__FILE__, __LINE__, (details), (loc_json), (type))

void mz_expect_status_at(const char *file, int line, const mz_resp_t *r, int status);
void mz_expect_std_headers_at(const char *file, int line, const mz_resp_t *r);
json_t *mz_expect_error_at(const char *file, int line, const mz_resp_t *r, int status,
                           const char *code);
json_t *mz_expect_result_at(const char *file, int line, const mz_resp_t *r);
json_t *mz_expect_mutation_at(const char *file, int line, const mz_resp_t *r);
void mz_expect_json_at(const char *file, int line, const json_t *actual, const char *expected);
void mz_expect_violation_at(const char *file, int line, const json_t *details,
                            const char *loc_json, const char *type);

#endif /* MZ_HARNESS_H */
