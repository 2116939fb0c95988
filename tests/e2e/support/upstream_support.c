/*
 * upstream_support.c - starts and drives the upstream test server (see
 * upstream_support.h) for the upstream e2e tests.
 */
#include "upstream_support.h"

#include "harness.h"
#include "internal.h"

#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PYTHON "/usr/bin/python3"

static void upstream_cleanup(void *p)
{
    mz_upstream_stop(p);
}

void mz_upstream_stop(mz_upstream_t *u)
{
    if (u == NULL || u->exited)
        return;
    int st;
    kill(u->pid, SIGTERM);
    if (mz_reap(u->pid, 5000, &st) == 0) {
        kill(u->pid, SIGKILL);
        mz_reap(u->pid, 5000, &st);
    }
    u->exited = true;
}

/* The first {"msg": "listening", ...} line of the log, parsed; NULL until it appears. */
static json_t *ready_line(const char *log_path)
{
    char *text = mz_read_file(log_path);
    if (text == NULL)
        return NULL;
    for (char *line = text; line != NULL && *line != '\0';) {
        char *nl = strchr(line, '\n');
        if (nl == NULL)
            break;
        json_t *obj = json_loadb(line, (size_t)(nl - line), 0, NULL);
        const char *msg = json_string_value(json_object_get(obj, "msg"));
        if (msg != NULL && strcmp(msg, "listening") == 0)
            return mz_keep(obj);
        json_decref(obj);
        line = nl + 1;
    }
    return NULL;
}

mz_upstream_t *mz_upstream_start(void)
{
    cr_assert(access(PYTHON, X_OK) == 0,
              "%s is missing: the upstream tests run examples/upstream/blog_api.py with the system Python "
              "(Debian: apt-get install python3)",
              PYTHON);
    const char *src = mz_env("MIZAN_TEST_SOURCE_DIR");
    char *script = mz_fmt("%s/examples/upstream/blog_api.py", src);
    cr_assert(access(script, R_OK) == 0, "cannot read %s", script);
    mz_upstream_t *u = mz_alloc(sizeof(*u));
    u->dir = mz_tmpdir();
    u->log_path = mz_fmt("%s/blog_api.log", u->dir);
    const char *argv[] = {PYTHON, script, "--port", "0", "--control-port", "0", NULL};
    int logfd = open(u->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    cr_assert(logfd >= 0, "open %s: %s", u->log_path, strerror(errno));
    char why[256] = "";
    u->pid = mz_spawn(argv, u->dir, NULL, logfd, logfd, why, sizeof(why));
    close(logfd);
    cr_assert(u->pid > 0, "cannot start %s: %s", script, why);
    mz_own(u, upstream_cleanup, MZ_PHASE_PROC);
    double deadline = mz_now_ms() + 10000;
    for (;;) {
        json_t *ready = ready_line(u->log_path);
        if (ready != NULL) {
            u->port = (int)json_integer_value(json_object_get(ready, "port"));
            u->control_port = (int)json_integer_value(json_object_get(ready, "control_port"));
            cr_assert(u->port > 0 && u->control_port > 0, "bad listening line: %s", mz_dump(ready));
            u->url = mz_fmt("http://127.0.0.1:%d", u->port);
            return u;
        }
        int st;
        if (mz_reap(u->pid, 0, &st) == 1) {
            u->exited = true;
            cr_assert_fail("blog_api.py exited with status %d at start:\n%s", st, mz_read_file(u->log_path));
        }
        cr_assert(mz_now_ms() < deadline, "blog_api.py did not start within 10 s:\n%s", mz_read_file(u->log_path));
        mz_sleep_ms(10);
    }
}

json_t *mz_upstream_stats(const mz_upstream_t *u)
{
    mz_conn_t *c = mz_connect(u->control_port);
    mz_req_t req = {.method = "GET", .path = "/stats"};
    mz_resp_t *r = mz_request(c, &req);
    mz_conn_close(c);
    cr_assert(r->status == 200 && json_is_object(r->json), "upstream /stats: %s", mz_describe(r));
    return r->json;
}

long long mz_upstream_stat(const mz_upstream_t *u, const char *key)
{
    json_t *v = json_object_get(mz_upstream_stats(u), key);
    cr_assert(json_is_integer(v), "upstream /stats has no integer %s", key);
    return json_integer_value(v);
}

long long mz_upstream_path_count(const mz_upstream_t *u, const char *path)
{
    json_t *v = json_object_get(json_object_get(mz_upstream_stats(u), "paths"), path);
    return json_is_integer(v) ? json_integer_value(v) : 0;
}

json_t *mz_upstream_control(const mz_upstream_t *u, const char *json_text)
{
    mz_conn_t *c = mz_connect(u->control_port);
    const char *headers[] = {"Content-Type: application/json", NULL};
    mz_req_t req = {.method = "POST", .path = "/control", .headers = headers, .body = json_text};
    mz_resp_t *r = mz_request(c, &req);
    mz_conn_close(c);
    cr_assert(r->status == 200 && json_is_object(r->json), "upstream /control %s: %s", json_text, mz_describe(r));
    return r->json;
}
