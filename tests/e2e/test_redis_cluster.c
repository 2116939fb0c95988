/*
 * test_redis_cluster.c - the shared cache on a real Redis Cluster (three
 * masters, three replicas, started per test by support/rcluster.c with a
 * short cluster-node-timeout): every key of a context lands on the slot of
 * its {C} tag and a lookup is one MGET to one node (INFO commandstats);
 * ASK during a hand-made slot migration and MOVED once it is complete; a
 * master killed under mixed load on two gateways (write on A, read on B):
 * no 5xx, no stale read after an acknowledged write, and cache hits again
 * on the promoted replica. The failover window is printed.
 */
#include <criterion/criterion.h>

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cache_support.h"
#include "harness.h"
#include "rcluster.h"

TestSuite(redis_cluster, .init = mz_setup, .fini = mz_teardown, .timeout = 300);

#define POST1 "/api/mizan/ctx/post/?post_id=1"
#define POST1_TARGET "{\"context\":\"post\",\"params\":{\"post_id\":1}}"
#define POST_FEED_TARGETS "[" POST1_TARGET ",{\"context\":\"feed\"}]"
#define NODE_TIMEOUT_MS 1000

static mz_gw_t *start_gw_url(const char *url, const char *instance, const char *dir)
{
    json_t *cfg = mz_json("{\"instance\":\"%s\",\"cache\":{\"redis_url\":\"%s\"}}", instance, url);
    mz_gw_opts_t opts = {.config = cfg, .dir = dir};
    mz_gw_t *gw = mz_gw_start_opts(&opts);
    mz_wait_status(gw, "/readyz", 200, 20000, NULL);
    return gw;
}

static mz_gw_t *start_gw(const mz_rcluster_t *c, const char *instance, const char *dir)
{
    return start_gw_url(c->url, instance, dir);
}

/* GET key on node i without following redirections: the raw reply. */
static json_t *node_get(const mz_rcluster_t *c, int i, const char *key)
{
    const char *argv[] = {"GET", key, NULL};
    return mz_redis_cmd(c->nodes[i], argv);
}

/* Sum of the calls of every data command (not cluster/info/ping housekeeping) on every live node. */
static long long data_calls(const mz_rcluster_t *c)
{
    static const char *cmds[] = {"mget", "get", "set", "incr", "expire", "publish", "wait", NULL};
    long long sum = 0;
    for (int i = 0; i < c->n; i++)
        for (int k = 0; cmds[k] != NULL && !c->nodes[i]->exited; k++)
            sum += mz_rcluster_cmdstat(c, i, cmds[k]);
    return sum;
}

/* Creates post, feed and drafts revisions, the post 1 scoped one, and warms post 1. */
static void warm_post1(const mz_gw_t *gw, const char *token)
{
    mz_mutate(gw, "create_post", "{\"title\":\"n\",\"body\":\"b\"}", token,
              "[{\"context\":\"feed\"},{\"context\":\"drafts\"},{\"context\":\"post\"}]");
    mz_mutate(gw, "update_post", "{\"post_id\":1,\"title\":\"warm\"}", token, POST_FEED_TARGETS);
    mz_ctx_get(gw, POST1, NULL, "MISS");
    mz_ctx_get(gw, POST1, NULL, "HIT");
}

Test(redis_cluster, keys_share_the_tag_slot_and_a_lookup_is_one_mget)
{
    mz_rcluster_t *c = mz_rcluster_start(3, 1, NODE_TIMEOUT_MS);
    mz_gw_t *gw = start_gw(c, "A", NULL);
    char *alice = mz_token(gw, "alice", NULL);
    warm_post1(gw, alice);
    mz_ctx_get(gw, "/api/mizan/ctx/me/", alice, "MISS");
    mz_ctx_get(gw, "/api/mizan/ctx/me/", alice, "HIT");

    /* Every kind of key: bundle (public and user scope), context and scoped revisions. */
    const char *keys[] = {
        mz_key_bundle("post", "{\"post_id\":1}", "public"),
        mz_key_ctx_rev("post"),
        mz_key_scoped_rev("post", "{\"post_id\":1}"),
        mz_key_bundle("me", "{}", mz_key_user_scope("alice", false, false, NULL)),
        mz_key_ctx_rev("feed"),
    };
    const char *tags[] = {"{post}", "{post}", "{post}", "{me}", "{feed}"};
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        int slot = mz_rcluster_keyslot(c, keys[i]);
        cr_assert_eq(slot, mz_rcluster_keyslot(c, tags[i]), "%s is not on the slot of %s", keys[i], tags[i]);
        int owner = mz_rcluster_owner(c, slot);
        cr_assert(owner >= 0, "no owner for slot %d", slot);
        json_t *v = node_get(c, owner, keys[i]);
        cr_assert(json_is_string(v), "%s is not held by the owner of its slot %d: %s", keys[i], slot, mz_dump(v));
    }

    /* One command connection per master per I/O loop (io_threads 2), whatever
     * the traffic; none left to replicas once the slot map is known (the
     * gateway drops them within a slot map refresh or two). */
    double deadline = mz_now_ms() + 10000;
    for (int i = 0; i < c->n; i++) {
        const char *role[] = {"ROLE", NULL};
        bool master = strcmp(json_string_value(json_array_get(mz_redis_cmd(c->nodes[i], role), 0)), "master") == 0;
        for (;;) {
            const char *argv[] = {"CLIENT", "LIST", NULL};
            const char *list = json_string_value(mz_redis_cmd(c->nodes[i], argv));
            int normal = 0;
            for (const char *p = list; p != NULL && (p = strstr(p, "flags=N ")) != NULL; p++) {
                const char *eol = strchr(p, '\n');
                const char *cmd = strstr(p, "cmd=client|list");
                if (cmd == NULL || (eol != NULL && cmd > eol))
                    normal++;
            }
            if (normal == (master ? 2 : 0))
                break;
            cr_assert(mz_now_ms() < deadline, "%s %d: %d command connections, expected %s\n%s",
                      master ? "master" : "replica", i, normal, master ? "one per I/O loop" : "none", list);
            mz_sleep_ms(50);
        }
    }

    /* A hit is one MGET on the owner of {post} and nothing else anywhere. */
    int owner = mz_rcluster_owner(c, mz_rcluster_keyslot(c, "{post}"));
    long long mget_before = mz_rcluster_cmdstat(c, owner, "mget");
    long long all_before = data_calls(c);
    enum { HITS = 20 };
    for (int i = 0; i < HITS; i++)
        mz_ctx_get(gw, POST1, NULL, "HIT");
    long long mget_after = mz_rcluster_cmdstat(c, owner, "mget");
    long long all_after = data_calls(c);
    cr_assert_eq(mget_after - mget_before, HITS, "owner saw %lld MGET for %d hits", mget_after - mget_before, HITS);
    cr_assert_eq(all_after - all_before, HITS, "the cluster saw %lld data commands for %d hits (one MGET each)",
                 all_after - all_before, HITS);
    mz_gw_stop_ok(gw);
}

/*
 * Waits (up to 10 s) until node i has run more SET commands than `before`
 * (INFO commandstats: a SET refused with MOVED / ASK is not counted): the
 * bundle a MISS stored has landed there. The store is fire-and-forget and the
 * MISS answers before it lands; the next request may be served by another
 * I/O loop, with its own connections, so its lookup is not ordered after
 * that store. With one hop the store is on the wire before the client has
 * the answer; redirected by ASK it needs a second hop from the storing loop,
 * which a redirected lookup from the other loop can overtake on a loaded
 * machine (it then reads the previous bundle, stale, and answers MISS).
 */
static void wait_store_on(const mz_rcluster_t *c, int i, long long before)
{
    double deadline = mz_now_ms() + 10000;
    while (mz_rcluster_cmdstat(c, i, "set") <= before) {
        cr_assert(mz_now_ms() < deadline, "the bundle stored by the MISS never reached node %d (SET calls stay %lld)",
                  i, before);
        mz_sleep_ms(10);
    }
}

/* MIGRATE every key of slot from node src to node dst. */
static int migrate_slot_keys(const mz_rcluster_t *c, int src, int dst, int slot)
{
    const char *getkeys[] = {"CLUSTER", "GETKEYSINSLOT", mz_fmt("%d", slot), "1000", NULL};
    json_t *keys = mz_redis_cmd(c->nodes[src], getkeys);
    cr_assert(json_is_array(keys), "GETKEYSINSLOT: %s", mz_dump(keys));
    size_t n = json_array_size(keys);
    if (n == 0)
        return 0;
    const char **argv = mz_alloc((n + 9) * sizeof(*argv));
    size_t a = 0;
    argv[a++] = "MIGRATE";
    argv[a++] = "127.0.0.1";
    argv[a++] = mz_fmt("%d", c->nodes[dst]->port);
    argv[a++] = "";
    argv[a++] = "0";
    argv[a++] = "5000";
    argv[a++] = "KEYS";
    for (size_t i = 0; i < n; i++)
        argv[a++] = json_string_value(json_array_get(keys, i));
    argv[a] = NULL;
    json_t *r = mz_redis_cmd(c->nodes[src], argv);
    cr_assert(json_is_string(r), "MIGRATE: %s", mz_dump(r));
    return (int)n;
}

Test(redis_cluster, ask_during_a_migration_and_moved_after_it)
{
    mz_rcluster_t *c = mz_rcluster_start(3, 1, NODE_TIMEOUT_MS);
    mz_gw_t *gw = start_gw(c, "A", NULL);
    char *alice = mz_token(gw, "alice", NULL);
    warm_post1(gw, alice);

    int slot = mz_rcluster_keyslot(c, "{post}");
    int src = mz_rcluster_owner(c, slot);
    int dst = -1;
    for (int i = 0; i < c->n && dst < 0; i++) {
        const char *role[] = {"ROLE", NULL};
        json_t *r = mz_redis_cmd(c->nodes[i], role);
        if (i != src && strcmp(json_string_value(json_array_get(r, 0)), "master") == 0)
            dst = i;
    }
    cr_assert(dst >= 0);
    const char *src_id = mz_rcluster_id(c, src), *dst_id = mz_rcluster_id(c, dst);

    /* The ASK window: the slot is migrating, every key already on dst. */
    const char *imp[] = {"CLUSTER", "SETSLOT", mz_fmt("%d", slot), "IMPORTING", src_id, NULL};
    const char *mig[] = {"CLUSTER", "SETSLOT", mz_fmt("%d", slot), "MIGRATING", dst_id, NULL};
    mz_expect_json(mz_redis_cmd(c->nodes[dst], imp), "\"OK\"");
    mz_expect_json(mz_redis_cmd(c->nodes[src], mig), "\"OK\"");
    cr_assert(migrate_slot_keys(c, src, dst, slot) >= 3, "post's three keys should be in slot %d", slot);
    double ask0 = mz_metric(gw, "mizan_redis_cluster_redirects_total{kind=\"ask\"}");
    mz_ctx_get(gw, POST1, NULL, "HIT");
    double ask1 = mz_metric(gw, "mizan_redis_cluster_redirects_total{kind=\"ask\"}");
    cr_assert(ask1 > ask0, "the hit during the migration should have followed ASK (%g -> %g)", ask0, ask1);

    /* A write during the window: its INCR is redirected, and read-your-writes
     * holds. The MISS's store follows ASK to the importing node (nothing
     * else SETs there), and once it is there the next lookup is a HIT. */
    mz_mutate(gw, "update_post", "{\"post_id\":1,\"title\":\"during the migration\"}", alice, POST_FEED_TARGETS);
    long long sets = mz_rcluster_cmdstat(c, dst, "set");
    mz_resp_t *after = mz_ctx_get(gw, POST1, NULL, "MISS");
    cr_assert_str_eq(mz_bundle_title(after), "during the migration");
    wait_store_on(c, dst, sets);
    mz_ctx_get(gw, POST1, NULL, "HIT");
    migrate_slot_keys(c, src, dst, slot); /* a key left behind on src, if any */

    /* Finish the resharding as redis-cli --cluster reshard does (the new
     * owner, the old one, then every other master): the gateway's next
     * lookup meets MOVED. */
    double moved0 = mz_metric(gw, "mizan_redis_cluster_redirects_total{kind=\"moved\"}");
    const char *node[] = {"CLUSTER", "SETSLOT", mz_fmt("%d", slot), "NODE", dst_id, NULL};
    mz_expect_json(mz_redis_cmd(c->nodes[dst], node), "\"OK\"");
    mz_expect_json(mz_redis_cmd(c->nodes[src], node), "\"OK\"");
    for (int i = 0; i < c->n; i++) {
        const char *role[] = {"ROLE", NULL};
        if (i != src && i != dst && strcmp(json_string_value(json_array_get(mz_redis_cmd(c->nodes[i], role), 0)),
                                           "master") == 0)
            mz_expect_json(mz_redis_cmd(c->nodes[i], node), "\"OK\"");
    }
    mz_resp_t *hit = mz_ctx_get(gw, POST1, NULL, "HIT");
    cr_assert_str_eq(mz_bundle_title(hit), "during the migration");
    double moved1 = mz_metric(gw, "mizan_redis_cluster_redirects_total{kind=\"moved\"}");
    cr_assert(moved1 > moved0, "the first lookup after the reshard should have followed MOVED");
    /* Then the map is refreshed: hits go straight to the new owner. */
    for (int i = 0; i < 10; i++)
        mz_ctx_get(gw, POST1, NULL, "HIT");
    mz_mutate(gw, "update_post", "{\"post_id\":1,\"title\":\"after the migration\"}", alice, POST_FEED_TARGETS);
    sets = mz_rcluster_cmdstat(c, dst, "set");
    cr_assert_str_eq(mz_bundle_title(mz_ctx_get(gw, POST1, NULL, "MISS")), "after the migration");
    wait_store_on(c, dst, sets); /* a loop that has not met MOVED yet stores through it */
    mz_ctx_get(gw, POST1, NULL, "HIT");
    json_t *rev = node_get(c, dst, mz_key_scoped_rev("post", "{\"post_id\":1}"));
    cr_assert(json_is_string(rev), "the scoped revision should live on the new owner: %s", mz_dump(rev));
    cr_assert(mz_metric(gw, "mizan_redis_cluster_redirects_total{kind=\"moved\"}") - moved1 < 5,
              "MOVED keeps coming: the slot map was not refreshed");
    mz_gw_stop_ok(gw);
}

/* ------------------------------------------------------------------------
 * Failover under load
 * ---------------------------------------------------------------------- */

enum { MAX_HITS = 1 << 18 };

typedef struct load {
    int ports[2];
    atomic_bool stop;
    atomic_long requests, errors5xx, failures;
    atomic_long bypass, hit;
    atomic_long not_ready;            /* /readyz answers other than 200 */
    _Atomic long long killed_at;   /* mz_now_ms() of the kill, 0 before */
    long long first_bypass, last_bypass; /* ms after the kill, -1 when none (load thread only) */
    long long *hits;               /* ms after the kill of each HIT after it */
    size_t nhits;
} load_t;

/* Reads post 1..3 and the feed on both gateways, in turn, until stopped. */
static void *load_main(void *arg)
{
    load_t *l = arg;
    const char *paths[] = {"/api/mizan/ctx/post/?post_id=1", "/api/mizan/ctx/post/?post_id=2",
                           "/api/mizan/ctx/post/?post_id=3", "/api/mizan/ctx/feed/"};
    char err[256];
    mz_conn_t *conns[2] = {NULL, NULL};
    for (long i = 0; !atomic_load(&l->stop); i++) {
        int g = (int)(i & 1);
        if (conns[g] == NULL && (conns[g] = mz_try_connect(l->ports[g], 15000, err, sizeof(err))) == NULL) {
            atomic_fetch_add(&l->failures, 1);
            mz_sleep_ms(10);
            continue;
        }
        bool probe = (i % 10) == 9;
        mz_req_t req = {.method = "GET", .path = probe ? "/readyz" : paths[(i / 2) % 4]};
        mz_resp_t *resp = NULL;
        if (mz_try_request(conns[g], &req, &resp, err, sizeof(err)) != 0) {
            atomic_fetch_add(&l->failures, 1);
            mz_conn_close(conns[g]);
            conns[g] = NULL;
            continue;
        }
        if (probe) {
            if (resp->status != 200)
                atomic_fetch_add(&l->not_ready, 1);
            if (conns[g]->peer_closed) {
                mz_conn_close(conns[g]);
                conns[g] = NULL;
            }
            continue;
        }
        atomic_fetch_add(&l->requests, 1);
        if (resp->status >= 500)
            atomic_fetch_add(&l->errors5xx, 1);
        const char *cache = mz_header(resp, "X-Mizan-Cache");
        long long killed = atomic_load(&l->killed_at);
        long long since = (long long)mz_now_ms() - killed;
        if (cache != NULL && strcmp(cache, "BYPASS") == 0) {
            atomic_fetch_add(&l->bypass, 1);
            if (killed > 0) {
                if (l->first_bypass < 0)
                    l->first_bypass = since;
                l->last_bypass = since;
            }
        }
        if (cache != NULL && strcmp(cache, "HIT") == 0) {
            atomic_fetch_add(&l->hit, 1);
            if (killed > 0 && l->nhits < MAX_HITS)
                l->hits[l->nhits++] = since;
        }
        if (conns[g]->peer_closed) {
            mz_conn_close(conns[g]);
            conns[g] = NULL;
        }
    }
    for (int g = 0; g < 2; g++)
        if (conns[g] != NULL)
            mz_conn_close(conns[g]);
    return NULL;
}

Test(redis_cluster, master_killed_under_mixed_load)
{
    mz_rcluster_t *c = mz_rcluster_start(3, 1, NODE_TIMEOUT_MS);
    int slot = mz_rcluster_keyslot(c, "{post}");
    int victim = mz_rcluster_owner(c, slot);
    cr_assert(victim >= 0);
    char *dir = mz_tmpdir();
    mz_gw_t *a = start_gw(c, "A", dir);
    /* B lists the victim first: its event subscription sits on the node that dies. */
    char *b_url = mz_fmt("redis-cluster://127.0.0.1:%d", c->nodes[victim]->port);
    for (int i = 0; i < c->n; i++)
        if (i != victim)
            b_url = mz_fmt("%s,127.0.0.1:%d", b_url, c->nodes[i]->port);
    mz_gw_t *b = start_gw_url(b_url, "B", dir);
    char *alice = mz_token(a, "alice", NULL);
    mz_sse_t *sse = mz_sse_open(b, "contexts=post", NULL);
    warm_post1(a, alice);
    mz_sse_expect(sse, "invalidate", POST1_TARGET, 10000);
    mz_sse_close(sse);
    mz_ctx_get(b, POST1, NULL, "HIT");

    load_t load = {.ports = {a->port, b->port}, .first_bypass = -1, .last_bypass = -1};
    load.hits = mz_alloc(MAX_HITS * sizeof(*load.hits));
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, load_main, &load), 0);

    long tag = (long)time(NULL);
    int round = 0, stale = 0;
    double killed_at = 0, slowest_write = 0, start = mz_now_ms();
    /* Writes on A, reads on B: before, during and after the failover. */
    while (mz_now_ms() - start < 90000) {
        if (round == 10) {
            mz_redis_kill(c->nodes[victim]);
            killed_at = mz_now_ms();
            atomic_store(&load.killed_at, (long long)killed_at);
        }
        char *title = mz_fmt("round %d of %ld", round, tag);
        mz_resp_t *m = mz_call(a, "update_post", mz_fmt("{\"post_id\":1,\"title\":\"%s\"}", title), alice);
        mz_expect_mutation(m);
        if (m->elapsed_ms > slowest_write)
            slowest_write = m->elapsed_ms;
        mz_resp_t *post = mz_get(b, POST1, NULL);
        cr_assert_eq(post->status, 200, "round %d: %s", round, mz_describe(post));
        if (strcmp(mz_bundle_title(post), title) != 0) {
            stale++;
            cr_log_error("round %d: B served \"%s\" (%s) after A acknowledged \"%s\"", round, mz_bundle_title(post),
                         mz_header(post, "X-Mizan-Cache"), title);
        }
        mz_resp_t *again = mz_get(b, POST1, NULL);
        cr_assert_eq(again->status, 200, "round %d: %s", round, mz_describe(again));
        if (strcmp(mz_bundle_title(again), title) != 0)
            stale++;
        round++;
        /* Enough: hits have been back for two seconds on the promoted replica. */
        if (killed_at > 0 && mz_now_ms() - killed_at > 3000 && mz_rcluster_owner(c, slot) >= 0 &&
            strcmp(mz_header(again, "X-Mizan-Cache"), "HIT") == 0 && load.last_bypass >= 0 &&
            mz_now_ms() - killed_at > (double)load.last_bypass + 2000)
            break;
    }
    atomic_store(&load.stop, true);
    pthread_join(th, NULL);
    long long first_hit = -1;
    for (size_t i = 0; i < load.nhits && first_hit < 0; i++)
        if (load.hits[i] > load.last_bypass)
            first_hit = load.hits[i];

    int promoted = mz_rcluster_owner(c, slot);
    fprintf(stderr,
            "redis_cluster failover (cluster-node-timeout %d ms): BYPASS from %lld to %lld ms after the kill; "
            "first HIT after it %lld ms after the kill; slowest write %.0f ms; %d write/read rounds; "
            "load: %ld requests, %ld HIT, %ld BYPASS, %ld 5xx, %ld /readyz not 200\n",
            c->node_timeout_ms, load.first_bypass, load.last_bypass, first_hit, slowest_write, round,
            atomic_load(&load.requests), atomic_load(&load.hit), atomic_load(&load.bypass),
            atomic_load(&load.errors5xx), atomic_load(&load.not_ready));
    cr_assert_eq(stale, 0, "%d stale read(s) after acknowledged writes", stale);
    cr_assert(load.first_bypass >= 0, "the kill should have caused a BYPASS window");
    cr_assert_eq(atomic_load(&load.errors5xx), 0, "%ld 5xx under load", atomic_load(&load.errors5xx));
    cr_assert_eq(atomic_load(&load.failures), 0, "%ld requests failed at the socket", atomic_load(&load.failures));
    cr_assert_eq(atomic_load(&load.not_ready), 0,
                 "/readyz left 200 during the failover %ld time(s): a load balancer would have answered 503",
                 atomic_load(&load.not_ready));
    cr_assert(first_hit >= 0, "no HIT within 60 s of the kill: the cache did not come back");
    cr_assert(promoted >= 0 && promoted != victim, "slot %d should be served by the promoted replica", slot);
    cr_assert(mz_metric(a, "mizan_redis_replay_queued") == 0);
    /* B subscribed again elsewhere: A's events reach B's streams. */
    sse = mz_sse_open(b, "contexts=post", NULL);
    mz_mutate(a, "update_post", "{\"post_id\":1,\"title\":\"after the failover\"}", alice, POST_FEED_TARGETS);
    mz_sse_expect(sse, "invalidate", POST1_TARGET, 10000);
    /* The cache serves hits on both gateways from the promoted replica. */
    mz_ctx_get(a, POST1, NULL, NULL);
    mz_ctx_get(a, POST1, NULL, "HIT");
    mz_ctx_get(b, POST1, NULL, "HIT");
    mz_gw_stop_ok(a);
    mz_gw_stop_ok(b);
}

/* ------------------------------------------------------------------------
 * The replay queue, per slot
 * ---------------------------------------------------------------------- */

/* GET key on whichever live master owns its slot. */
static json_t *owner_get(const mz_rcluster_t *c, const char *key)
{
    int owner = mz_rcluster_owner(c, mz_rcluster_keyslot(c, key));
    cr_assert(owner >= 0, "no live owner for %s", key);
    return node_get(c, owner, key);
}

/* The live master of slot in node i's own view (its CLUSTER SLOTS), or -1. */
static int owner_seen_by(const mz_rcluster_t *c, int i, int slot)
{
    const char *argv[] = {"CLUSTER", "SLOTS", NULL};
    json_t *map = mz_redis_cmd(c->nodes[i], argv);
    size_t k;
    json_t *e;
    json_array_foreach(map, k, e) {
        json_int_t lo = json_integer_value(json_array_get(e, 0)), hi = json_integer_value(json_array_get(e, 1));
        if (slot < lo || slot > hi)
            continue;
        json_int_t port = json_integer_value(json_array_get(json_array_get(e, 2), 1));
        for (int n = 0; n < c->n; n++)
            if (c->nodes[n]->port == port && !c->nodes[n]->exited)
                return n;
    }
    return -1;
}

/* Waits (up to 10 s) until every live node names the same live master for
 * slot, so that a read through any of them sees that master; returns it. */
static int settled_owner(const mz_rcluster_t *c, int slot)
{
    double deadline = mz_now_ms() + 10000;
    for (;;) {
        int first = -1;
        bool agree = true;
        for (int i = 0; i < c->n && agree; i++) {
            if (c->nodes[i]->exited)
                continue;
            int seen = owner_seen_by(c, i, slot);
            if (first < 0)
                first = seen;
            agree = seen >= 0 && seen == first;
        }
        if (agree && first >= 0)
            return first;
        cr_assert(mz_now_ms() < deadline, "the live nodes do not agree on the master of slot %d after 10 s", slot);
        mz_sleep_ms(20);
    }
}

static long long rev_value(const mz_rcluster_t *c, const char *key)
{
    json_t *v = owner_get(c, key);
    return json_is_string(v) ? strtoll(json_string_value(v), NULL, 10) : 0;
}

Test(redis_cluster, without_the_wait_an_invalidation_is_queued_and_replayed_on_its_new_master)
{
    mz_rcluster_t *c = mz_rcluster_start(3, 1, NODE_TIMEOUT_MS);
    /* create_post bumps post, feed and drafts. With redis-cli's layout (three
     * equal ranges) {post} (slot 5686) and {feed} (5677) share a master and
     * {drafts} (3192) is on another: kill the first. */
    int victim = mz_rcluster_owner(c, mz_rcluster_keyslot(c, "{post}"));
    cr_assert_eq(mz_rcluster_owner(c, mz_rcluster_keyslot(c, "{feed}")), victim);
    cr_assert_neq(mz_rcluster_owner(c, mz_rcluster_keyslot(c, "{drafts}")), victim);
    char *dir = mz_tmpdir();
    json_t *cfg = mz_json("{\"instance\":\"A\",\"cache\":{\"redis_url\":\"%s\",\"failover_wait_ms\":0}}", c->url);
    mz_gw_opts_t opts = {.config = cfg, .dir = dir};
    mz_gw_t *a = mz_gw_start_opts(&opts);
    mz_wait_status(a, "/readyz", 200, 20000, NULL);
    mz_gw_t *b = start_gw(c, "B", dir);
    char *alice = mz_token(a, "alice", NULL);
    warm_post1(a, alice);
    mz_ctx_get(b, POST1, NULL, "HIT");
    const char *post_rev = mz_key_ctx_rev("post"), *feed_rev = mz_key_ctx_rev("feed");
    const char *drafts_rev = mz_key_ctx_rev("drafts");
    long long post0 = rev_value(c, post_rev), feed0 = rev_value(c, feed_rev), drafts0 = rev_value(c, drafts_rev);
    /* Right after the cluster forms, CLUSTER SLOTS may list no replica yet
     * (gossip has not carried its offset): the increments above must still
     * have waited for the replica, or the failover below could undo them. */
    cr_assert(mz_rcluster_cmdstat(c, victim, "wait") > 0,
              "the victim's increments were acknowledged without WAIT for its replica");

    mz_redis_kill(c->nodes[victim]);
    /* A's command connections see the kill at once (connection reset). */
    mz_sleep_ms(200);
    mz_mutate(a, "create_post", "{\"title\":\"while queued\",\"body\":\"b\"}", alice,
              "[{\"context\":\"feed\"},{\"context\":\"drafts\"},{\"context\":\"post\"}]");
    /* drafts' master took its increment; post's and feed's are queued, and A
     * is not ready (and computes every context) until they are replayed. */
    cr_assert_eq(rev_value(c, drafts_rev), drafts0 + 1, "the drafts increment should have been applied at once");
    double queued = mz_metric(a, "mizan_redis_replay_queued");
    mz_resp_t *ready = mz_get(a, "/readyz", NULL);
    mz_resp_t *during = mz_get(a, POST1, NULL);
    cr_assert_eq(queued, 2, "two invalidations (post's and feed's) should be queued, not %g", queued);
    cr_assert_eq(ready->status, 503, "/readyz with invalidations queued: %s", mz_describe(ready));
    cr_assert_str_eq(mz_header(during, "X-Mizan-Cache"), "BYPASS");

    /* The replica takes over; A replays both increments there. */
    double waited = 0;
    mz_wait_status(a, "/readyz", 200, 30000, &waited);
    cr_assert_eq(mz_metric(a, "mizan_redis_replay_queued"), 0);
    /* A learned the new master from one node; the others follow by gossip. */
    int promoted = settled_owner(c, mz_rcluster_keyslot(c, "{post}"));
    cr_assert(promoted != victim);
    cr_assert_eq(settled_owner(c, mz_rcluster_keyslot(c, "{feed}")), promoted);
    long long post1 = rev_value(c, post_rev), feed1 = rev_value(c, feed_rev), drafts1 = rev_value(c, drafts_rev);
    cr_assert_eq(post1, post0 + 1, "post revision %lld -> %lld on the promoted replica", post0, post1);
    cr_assert_eq(feed1, feed0 + 1, "feed revision %lld -> %lld on the promoted replica", feed0, feed1);
    cr_assert_eq(drafts1, drafts0 + 1, "the replay applies only what was queued: drafts %lld -> %lld", drafts0,
                 drafts1);
    fprintf(stderr, "redis_cluster replay: A ready again %.0f ms after the mutation was queued\n", waited);
    /* B's post bundle (HIT before) is stale by the replayed revision: once
     * B's own routers have the new map (BYPASS until then), it recomputes.
     * Each of B's I/O loops has its own router and learns the map on its own,
     * and either may take a request: BYPASS may come back after the MISS,
     * but no HIT may come before it. */
    double deadline = mz_now_ms() + 10000;
    const char *first;
    while (strcmp(first = mz_header(mz_ctx_get(b, POST1, NULL, NULL), "X-Mizan-Cache"), "BYPASS") == 0) {
        cr_assert(mz_now_ms() < deadline, "B still computes without the cache 10 s after A replayed");
        mz_sleep_ms(20);
    }
    cr_assert_str_eq(first, "MISS", "B's first cached answer after the replay");
    /* Each I/O loop has its own router: the other loop may still be
     * BYPASS until its own map refresh (every 250 ms while sick). */
    while (strcmp(first = mz_header(mz_ctx_get(b, POST1, NULL, NULL), "X-Mizan-Cache"), "BYPASS") == 0) {
        cr_assert(mz_now_ms() < deadline, "B still computes without the cache 10 s after A replayed");
        mz_sleep_ms(20);
    }
    cr_assert_str_eq(first, "HIT", "B's answers once both loops have the new map");
    mz_gw_stop_ok(a);
    mz_gw_stop_ok(b);
}
