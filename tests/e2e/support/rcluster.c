/*
 * rcluster.c - a throw-away Redis Cluster for the e2e tests (see
 * rcluster.h): nodes on free loopback ports whose cluster bus port
 * (port + 10000) is free too, created with redis-cli --cluster create.
 */
#include "rcluster.h"

#include "internal.h"

#include <criterion/criterion.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* Whether 127.0.0.1:port can be bound right now. */
static bool port_free(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return false;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bool ok = bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
    close(fd);
    return ok;
}

/* A port in 20000..29999 whose bus port (+10000) is free too, not in used[0..n). */
static int pick_port(const int *used, int n)
{
    static unsigned seed;
    if (seed == 0)
        seed = (unsigned)time(NULL) ^ (unsigned)getpid() * 2654435761u;
    for (int tries = 0; tries < 1000; tries++) {
        int port = 20000 + (int)(rand_r(&seed) % 10000);
        bool dup = false;
        for (int i = 0; i < n; i++)
            if (used[i] == port || used[i] + 10000 == port || used[i] == port + 10000)
                dup = true;
        if (!dup && port_free(port) && port_free(port + 10000))
            return port;
    }
    cr_assert_fail("no free port pair for a cluster node");
    return -1;
}

static void node_cleanup(void *p)
{
    mz_redis_stop(p);
}

/* Starts one cluster-enabled redis-server; 0, or -1 when it exited (port race). */
static int node_start(mz_redis_t *r, const char *server, int node_timeout_ms)
{
    char *port = mz_fmt("%d", r->port);
    char *timeout = mz_fmt("%d", node_timeout_ms);
    const char *argv[] = {server, "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                          "--dir", r->dir, "--daemonize", "no", "--cluster-enabled", "yes",
                          "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", timeout,
                          "--cluster-replica-validity-factor", "0", NULL};
    int logfd = open(r->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    cr_assert(logfd >= 0, "open %s: %s", r->log_path, strerror(errno));
    char why[256] = "";
    r->pid = mz_spawn(argv, r->dir, NULL, logfd, logfd, why, sizeof(why));
    close(logfd);
    cr_assert(r->pid > 0, "cannot start redis-server: %s", why);
    r->exited = false;
    double deadline = mz_now_ms() + 10000;
    while (mz_now_ms() < deadline) {
        int st;
        if (mz_reap(r->pid, 0, &st) == 1) {
            r->exited = true;
            return -1;
        }
        mz_conn_t *c = mz_try_connect(r->port, 200, why, sizeof(why));
        if (c != NULL) {
            mz_conn_close(c);
            const char *ping[] = {"PING", NULL};
            json_t *pong = mz_redis_cmd(r, ping);
            if (json_is_string(pong))
                return 0;
        }
        mz_sleep_ms(20);
    }
    cr_assert_fail("cluster node on port %d did not answer within 10 s\n%s", r->port, mz_read_file(r->log_path));
    return -1;
}

static json_t *cmd_on(const mz_redis_t *r, const char *a, const char *b)
{
    const char *argv[] = {a, b, NULL};
    return mz_redis_cmd(r, argv);
}

/* The first live node. */
static const mz_redis_t *live(const mz_rcluster_t *c)
{
    for (int i = 0; i < c->n; i++)
        if (!c->nodes[i]->exited)
            return c->nodes[i];
    cr_assert_fail("no live cluster node");
    return NULL;
}

bool mz_rcluster_wait_ok(const mz_rcluster_t *c, int timeout_ms)
{
    double deadline = mz_now_ms() + timeout_ms;
    while (mz_now_ms() < deadline) {
        bool ok = true;
        for (int i = 0; i < c->n && ok; i++) {
            if (c->nodes[i]->exited)
                continue;
            const char *info = json_string_value(cmd_on(c->nodes[i], "CLUSTER", "INFO"));
            ok = info != NULL && strstr(info, "cluster_state:ok") != NULL &&
                 strstr(info, mz_fmt("cluster_known_nodes:%d", c->n)) != NULL;
        }
        if (ok)
            return true;
        mz_sleep_ms(50);
    }
    return false;
}

/* Every replica reports master_link_status:up. */
static bool replicas_in_sync(const mz_rcluster_t *c)
{
    for (int i = 0; i < c->n; i++) {
        const char *info = json_string_value(cmd_on(c->nodes[i], "INFO", "replication"));
        if (info == NULL)
            return false;
        if (strstr(info, "role:slave") != NULL && strstr(info, "master_link_status:up") == NULL)
            return false;
    }
    return true;
}

mz_rcluster_t *mz_rcluster_start(int masters, int replicas, int node_timeout_ms)
{
    char *server = mz_find_exe("redis-server");
    char *cli = mz_find_exe("redis-cli");
    cr_assert(server != NULL && cli != NULL,
              "redis-server and redis-cli are needed for the cluster tests (Debian: apt-get install redis-server)");
    mz_rcluster_t *c = mz_alloc(sizeof(*c));
    c->n = masters * (1 + replicas);
    c->node_timeout_ms = node_timeout_ms;
    cr_assert(c->n >= 3 && c->n <= MZ_RCLUSTER_MAX, "a cluster of %d nodes", c->n);
    int ports[MZ_RCLUSTER_MAX];
    for (int i = 0; i < c->n; i++) {
        mz_redis_t *r = mz_alloc(sizeof(*r));
        r->dir = mz_tmpdir();
        r->log_path = mz_fmt("%s/redis.log", r->dir);
        r->exited = true;
        for (int attempt = 0;; attempt++) {
            cr_assert(attempt < 5, "cluster node %d exited at start five times\n%s", i, mz_read_file(r->log_path));
            r->port = pick_port(ports, i);
            if (attempt == 0)
                mz_own(r, node_cleanup, MZ_PHASE_PROC);
            if (node_start(r, server, node_timeout_ms) == 0)
                break;
        }
        r->url = mz_fmt("redis://127.0.0.1:%d", r->port);
        ports[i] = r->port;
        c->nodes[i] = r;
    }
    const char *argv[MZ_RCLUSTER_MAX + 8];
    int argc = 0;
    argv[argc++] = cli;
    argv[argc++] = "--cluster";
    argv[argc++] = "create";
    char *url = mz_fmt("redis-cluster://");
    for (int i = 0; i < c->n; i++) {
        argv[argc++] = mz_fmt("127.0.0.1:%d", ports[i]);
        url = mz_fmt("%s%s127.0.0.1:%d", url, i > 0 ? "," : "", ports[i]);
    }
    argv[argc++] = "--cluster-replicas";
    argv[argc++] = mz_fmt("%d", replicas);
    argv[argc++] = "--cluster-yes";
    argv[argc] = NULL;
    c->url = url;
    mz_run_t *run = mz_run(argv, NULL, NULL, 60000);
    cr_assert(run->status == 0, "redis-cli --cluster create failed (%d):\n%s\n%s", run->status, run->out, run->err);
    cr_assert(mz_rcluster_wait_ok(c, 30000), "the cluster did not reach cluster_state:ok within 30 s");
    double deadline = mz_now_ms() + 30000;
    while (!replicas_in_sync(c)) {
        cr_assert(mz_now_ms() < deadline, "replicas not in sync within 30 s");
        mz_sleep_ms(50);
    }
    return c;
}

int mz_rcluster_keyslot(const mz_rcluster_t *c, const char *key)
{
    const char *argv[] = {"CLUSTER", "KEYSLOT", key, NULL};
    json_t *v = mz_redis_cmd(live(c), argv);
    cr_assert(json_is_integer(v), "CLUSTER KEYSLOT %s: %s", key, mz_dump(v));
    return (int)json_integer_value(v);
}

int mz_rcluster_owner(const mz_rcluster_t *c, int slot)
{
    json_t *map = cmd_on(live(c), "CLUSTER", "SLOTS");
    cr_assert(json_is_array(map), "CLUSTER SLOTS: %s", mz_dump(map));
    size_t i;
    json_t *e;
    json_array_foreach(map, i, e) {
        json_int_t lo = json_integer_value(json_array_get(e, 0)), hi = json_integer_value(json_array_get(e, 1));
        if (slot < lo || slot > hi)
            continue;
        json_int_t port = json_integer_value(json_array_get(json_array_get(e, 2), 1));
        for (int k = 0; k < c->n; k++)
            if (c->nodes[k]->port == port && !c->nodes[k]->exited)
                return k;
    }
    return -1;
}

const char *mz_rcluster_id(const mz_rcluster_t *c, int i)
{
    json_t *v = cmd_on(c->nodes[i], "CLUSTER", "MYID");
    cr_assert(json_is_string(v), "CLUSTER MYID: %s", mz_dump(v));
    return json_string_value(v);
}

long long mz_rcluster_cmdstat(const mz_rcluster_t *c, int i, const char *command)
{
    const char *info = json_string_value(cmd_on(c->nodes[i], "INFO", "commandstats"));
    cr_assert(info != NULL, "INFO commandstats on node %d", i);
    const char *p = strstr(info, mz_fmt("cmdstat_%s:calls=", command));
    if (p == NULL)
        return 0;
    p = strchr(p, '=') + 1;
    return strtoll(p, NULL, 10);
}
