/*
 * upstream_support.h - the upstream test server for the e2e tests: the
 * example service examples/upstream/blog_api.py, run with /usr/bin/python3
 * on free loopback ports with its test routes on, plus its control port
 * (connection and request counters, outage, dropped connections).
 *
 * Lifetime and threads as in harness.h: everything is owned by the
 * per-test arena and stopped at mz_teardown(); functions documented
 * "asserting" run on the test's main thread.
 */
#ifndef MZ_UPSTREAM_SUPPORT_H
#define MZ_UPSTREAM_SUPPORT_H

#include <stdbool.h>
#include <sys/types.h>

#include <jansson.h>

/** A started upstream test server; owned by the arena. */
typedef struct mz_upstream {
    pid_t pid;         /**< the python process */
    int port;          /**< API port (the one the gateway calls; counted) */
    int control_port;  /**< /stats and /control (not counted) */
    char *url;         /**< "http://127.0.0.1:PORT" */
    char *dir;         /**< its temp dir */
    char *log_path;    /**< its stdout+stderr */
    bool exited;       /**< reaped already */
} mz_upstream_t;

/**
 * Starts blog_api.py (MIZAN_TEST_SOURCE_DIR/examples/upstream) on free
 * ports and waits for its "listening" line. Asserting: fails when
 * /usr/bin/python3 is missing or the server does not start within 10 s.
 */
mz_upstream_t *mz_upstream_start(void);

/** Stops it (SIGTERM, then SIGKILL). Safe to call twice. Never asserts. */
void mz_upstream_stop(mz_upstream_t *u);

/**
 * GET /stats on the control port: {"connections", "requests", "dropped",
 * "paths": {path: count}, "outage", "drop_pending"} (arena-owned).
 * Asserting.
 */
json_t *mz_upstream_stats(const mz_upstream_t *u);

/** One integer member of mz_upstream_stats(). Asserting. */
long long mz_upstream_stat(const mz_upstream_t *u, const char *key);

/** Requests served on one path so far (0 when none). Asserting. */
long long mz_upstream_path_count(const mz_upstream_t *u, const char *path);

/**
 * POST /control with a JSON object text, e.g. {"outage": true},
 * {"drop_connections": 2}, {"reset": true}. Returns the new stats
 * (arena-owned). Asserting.
 */
json_t *mz_upstream_control(const mz_upstream_t *u, const char *json_text);

#endif /* MZ_UPSTREAM_SUPPORT_H */
