/*
 * rcluster.h - a throw-away Redis Cluster for the e2e tests: N masters with
 * R replicas each (redis-server --cluster-enabled yes on free loopback
 * ports, no persistence, a short cluster-node-timeout), created with
 * redis-cli --cluster create, and the few cluster queries the tests need.
 * Everything is owned by the test's arena (processes stop at teardown).
 */
#ifndef MZ_RCLUSTER_H
#define MZ_RCLUSTER_H

#include <stdbool.h>

#include "harness.h"

#define MZ_RCLUSTER_MAX 12

/** A started cluster; nodes[i] is a mz_redis_t usable with mz_redis_cmd(). */
typedef struct mz_rcluster {
    int n;                               /**< nodes */
    mz_redis_t *nodes[MZ_RCLUSTER_MAX];  /**< every node (exited once killed) */
    char *url;                           /**< redis-cluster://127.0.0.1:p1,...: every node */
    int node_timeout_ms;                 /**< cluster-node-timeout */
} mz_rcluster_t;

/**
 * Starts masters x (1 + replicas) nodes, creates the cluster and waits
 * until every node reports cluster_state:ok, knows every other node, and
 * every replica is in sync. Asserting (fails, never skips).
 */
mz_rcluster_t *mz_rcluster_start(int masters, int replicas, int node_timeout_ms);

/** CLUSTER KEYSLOT key, asked of a live node. Asserting. */
int mz_rcluster_keyslot(const mz_rcluster_t *c, const char *key);

/** The live node (index in nodes) whose CLUSTER SLOTS, asked of a live node, makes it slot's master; -1 when none. */
int mz_rcluster_owner(const mz_rcluster_t *c, int slot);

/** CLUSTER MYID of node i (arena string). Asserting. */
const char *mz_rcluster_id(const mz_rcluster_t *c, int i);

/** Waits up to timeout_ms until every live node says cluster_state:ok and knows all n nodes; false on timeout. */
bool mz_rcluster_wait_ok(const mz_rcluster_t *c, int timeout_ms);

/** The calls of command (e.g. "mget", "cluster|slots") in INFO commandstats of node i; 0 when never called. */
long long mz_rcluster_cmdstat(const mz_rcluster_t *c, int i, const char *command);

#endif /* MZ_RCLUSTER_H */
