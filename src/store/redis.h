/*
 * redis.h - the gateway's Redis layer: URL parsing, per-loop command
 * connections, the subscription connection, and the replay queue of
 * invalidations that could not be applied.
 *
 * DESIGN (threads): a mizan_redis_t belongs to one I/O loop. It is created,
 * used and freed on that loop's thread only, and every callback it makes runs
 * on that thread. The instance-wide state (URL, counters, the replay queue)
 * lives in a mizan_redis_shared_t, which any thread may touch: its mutex is
 * held only for short list operations, never across a Redis round trip. When
 * the replay queue changes, the shared state wakes every command connection
 * with event_active (the one call that crosses threads), so a connection that
 * is up replays the queue and every connection re-evaluates whether it is
 * usable. That requires evthread_use_pthreads() before the bases are made.
 *
 * Redis is reached with hiredis' async API on libevent; nothing here ever
 * blocks on Redis. hiredis 0.14 has no per-command timeout, so each
 * connection keeps one timer on its oldest unanswered command: when a reply
 * is late by the command timeout, the connection is torn down (every pending
 * callback fails) and re-established with exponential backoff.
 *
 * Redis Cluster (a redis-cluster:// URL): the mizan_redis_t a loop gets from
 * mizan_redis_new is then a router. It holds one ordinary command connection
 * per cluster node (made as the slot map names them), a copy of the slot map
 * (CLUSTER SLOTS, refreshed periodically, on MOVED and whenever an owning
 * node is lost), and sends each command to the owner of its key's slot. A
 * MOVED reply updates the map and resends the command there; an ASK reply
 * resends it after ASKING on the target. Every key of one context shares the
 * {C} hash tag, so a lookup is still one MGET to one node. An invalidation
 * is INCR / EXPIRE, then WAIT for the master's replica when it has one (an
 * increment a failover could lose is not acknowledged: it is queued), then
 * PUBLISH. The replay queue is instance-wide as with one Redis; a replay
 * routes each item to its slot's current owner. The router is usable when
 * the map is known, every node owning slots is connected and nothing is
 * queued. The subscription connects to the URL's nodes in turn.
 *
 * Consistency rule: an invalidation that could not be applied is queued and
 * replayed (INCR is idempotent enough: applying one twice only
 * over-invalidates). While anything is queued or being replayed, no
 * connection of the instance is usable for bundle reads, so no instance can
 * serve a bundle older than a mutation it acknowledged.
 */
#ifndef MIZAN_REDIS_H
#define MIZAN_REDIS_H

#include <stdbool.h>
#include <stddef.h>

#include "error.h"

struct event_base;

/** Most nodes a redis-cluster:// URL may list. */
#define MIZAN_REDIS_MAX_SEEDS 16

/** One host:port of a URL. */
typedef struct mizan_redis_addr {
    char host[256];
    int port;
} mizan_redis_addr_t;

/**
 * A parsed redis://[user:password@]host[:port][/db] URL, or
 * redis-cluster://[user:password@]host[:port],host[:port],... (no db: a
 * cluster has only db 0). user and password are percent-decoded; host has
 * no brackets (an IPv6 literal is written [::1] in the URL). port defaults
 * to 6379, db to 0. host/port are the first (or only) node.
 */
typedef struct mizan_redis_url {
    char host[256];
    int port;
    int db;
    char user[128];     /**< "" when absent */
    char password[256]; /**< "" when absent; never logged */
    bool cluster;       /**< a redis-cluster:// URL */
    int nseeds;         /**< cluster: how many nodes the URL lists (>= 1) */
    mizan_redis_addr_t seeds[MIZAN_REDIS_MAX_SEEDS]; /**< cluster: the nodes, in URL order */
} mizan_redis_url_t;

/**
 * Parses url into out. -1 with err on a malformed URL; the message never
 * contains the password (nor the URL, which may carry it). Any thread.
 */
int mizan_redis_url_parse(const char *url, mizan_redis_url_t *out, mizan_err_t *err);

/** Instance-wide state shared by every connection; thread-safe. */
typedef struct mizan_redis_shared mizan_redis_shared_t;

/**
 * New shared state for url with command_timeout_ms (> 0) as the longest a
 * command may wait for its reply. NULL with err on a bad URL, a bad timeout
 * or out of memory.
 */
mizan_redis_shared_t *mizan_redis_shared_new(const char *url, int command_timeout_ms, mizan_err_t *err);

/**
 * Sets the reconnection backoff: the first retry waits min_ms, each further
 * one twice as long up to max_ms, each with jitter (a random delay between
 * half and all of it). Defaults 100 and 5000. Call before any connection is
 * made (tests shorten it).
 */
void mizan_redis_shared_set_backoff(mizan_redis_shared_t *s, int min_ms, int max_ms);

/**
 * Redis Cluster: how long a mutation's invalidation whose slot has no
 * reachable master waits for one (a replica taking over) before it is
 * queued for replay and the mutation acknowledged. Default 10000; 0 queues
 * at once. Call before any connection is made.
 */
void mizan_redis_shared_set_failover_wait(mizan_redis_shared_t *s, int ms);

/** Frees s and anything still queued. Only after every connection is freed. */
void mizan_redis_shared_free(mizan_redis_shared_t *s);

/** Counters, read with mizan_redis_shared_stats. */
typedef struct mizan_redis_stats {
    int connections_up;   /**< connections connected and set up right now (both kinds) */
    long long reconnects; /**< times a connection was set up again after losing Redis */
    size_t replay_queued; /**< invalidations not yet applied: queued or being replayed */
    long long replayed;   /**< invalidations applied from the replay queue */
    long long published;  /**< PUBLISH commands Redis acknowledged */
    long long messages;   /**< messages received by subscriptions */
    long long repaired;   /**< revision keys overwritten because they held no revision */
    long long moved;      /**< cluster: MOVED replies followed */
    long long asked;      /**< cluster: ASK replies followed */
    long long refreshes;  /**< cluster: slot maps received (CLUSTER SLOTS) */
} mizan_redis_stats_t;

/** A snapshot of the counters. Any thread. */
void mizan_redis_shared_stats(mizan_redis_shared_t *s, mizan_redis_stats_t *out);

/**
 * True while an invalidation is queued or being replayed: no connection of
 * the instance is usable then. Any thread.
 */
bool mizan_redis_shared_pending(mizan_redis_shared_t *s);

/** A Redis connection owned by one loop (command or subscription). */
typedef struct mizan_redis mizan_redis_t;

/**
 * A command connection on base (which must outlive it). Connects in the
 * background on the loop: AUTH (user and password, or password alone) when
 * the URL has them, SELECT when db is not 0 (PING otherwise), then replays
 * the shared queue; reconnects with backoff forever, until freed. NULL when
 * out of memory. Loop thread.
 */
mizan_redis_t *mizan_redis_new(struct event_base *base, mizan_redis_shared_t *shared);

/**
 * Tears r down. Every pending callback is called exactly once, with failure,
 * before this returns (lookups rc -1, invalidations rc 1 with their items
 * queued); on_state is not called. Must not be called from inside one of r's
 * own callbacks. NULL is a no-op. Loop thread.
 */
void mizan_redis_free(mizan_redis_t *r);

/**
 * True when r is connected, set up, and nothing is queued or being replayed
 * anywhere in the instance: bundles may be read and written. For a
 * subscription: the subscription is confirmed. Loop thread.
 */
bool mizan_redis_usable(const mizan_redis_t *r);

/**
 * Registers cb (NULL to remove), called on the loop each time
 * mizan_redis_usable(r) flips, with its new value. cb must not free r.
 * Loop thread.
 */
void mizan_redis_on_state(mizan_redis_t *r, void (*cb)(void *arg, bool usable), void *arg);

/**
 * The reply to MGET k1 k2 k3. rc 0: ctx_rev and scoped_rev are the first two
 * values as integers (0 when missing), value/len the third (value NULL, len 0
 * when missing; the bytes are valid only inside the callback). rc -1: Redis
 * unusable, the command timed out, or Redis answered an error or a
 * non-integer revision; the other arguments are then 0/NULL.
 * rc MIZAN_REDIS_LOOKUP_BAD_REV: a revision key holds something that is not
 * a revision (text, an integer out of range); ctx_rev and scoped_rev are 1
 * for the key(s) at fault, else 0, and the caller should repair them with
 * mizan_redis_repair_rev() and compute without the cache this time.
 */
#define MIZAN_REDIS_LOOKUP_BAD_REV (-2)

typedef void (*mizan_redis_lookup_cb)(void *arg, int rc, long long ctx_rev, long long scoped_rev,
                                      const char *value, size_t len);

/**
 * Sends MGET k1 k2 k3 (NUL-terminated keys, copied). cb is called exactly
 * once on the loop, never from within this call (a failure known at once is
 * delivered from the loop's next turn). Loop thread.
 */
void mizan_redis_lookup(mizan_redis_t *r, const char *k1, const char *k2, const char *k3,
                        mizan_redis_lookup_cb cb, void *arg);

/**
 * Sends SET key value EX ttl_s, fire and forget (value copied). Silently
 * dropped when r is not usable or ttl_s <= 0. Loop thread.
 */
void mizan_redis_store(mizan_redis_t *r, const char *key, const char *value, size_t len, int ttl_s);

/**
 * Overwrites a revision key that holds no revision with a fresh one (the
 * wall clock in microseconds, above any revision a bundle was stored with,
 * so it invalidates like an INCR), with EX expire_s when > 0. Fire and
 * forget; dropped when r is not connected. An INCR of a batch that fails
 * repairs its key the same way by itself. Loop thread.
 */
void mizan_redis_repair_rev(mizan_redis_t *r, const char *key, int expire_s);

/**
 * A fill lock: SET key token NX PX ttl_ms on the owner of key's slot, then
 * cb(arg, rc) on this loop: 1 taken, 0 held by someone else, -1 unknown
 * (Redis unusable, an error, a timeout). Always called, never from inside
 * this call. Command connection only.
 */
void mizan_redis_lock(mizan_redis_t *r, const char *key, const char *token, int ttl_ms,
                      void (*cb)(void *arg, int rc), void *arg);

/** Releases a fill lock if it still holds token (a compare-and-delete script); no reply awaited. */
void mizan_redis_unlock(mizan_redis_t *r, const char *key, const char *token);

/** One invalidation: INCR rev_key, EXPIRE rev_key expire_s when > 0, PUBLISH event. */
typedef struct mizan_redis_inval {
    const char *rev_key;
    int expire_s;
    const char *event;
    size_t event_len;
} mizan_redis_inval_t;

/**
 * rc 0: every item was applied. rc 1: some were not (Redis unusable, or it
 * failed midway); those items were queued and will be replayed whole. rc -1:
 * out of memory copying the items: nothing was sent or queued.
 */
typedef void (*mizan_redis_done_cb)(void *arg, int rc);

/**
 * Applies n items (copied, strings included) on r and publishes each event
 * on channel. The commands are sent whenever r itself is connected and set
 * up, even while a replay elsewhere makes r unusable for reads; otherwise the
 * items are queued at once. cb is called exactly once on the loop after every
 * reply arrived, never from within this call. Loop thread.
 */
void mizan_redis_invalidate(mizan_redis_t *r, const mizan_redis_inval_t *items, size_t n,
                            const char *channel, mizan_redis_done_cb cb, void *arg);

/**
 * A subscription connection to channel on base (one per instance). cb runs
 * on the loop for each message (msg valid only inside cb). Reconnects with
 * backoff; its on_state says when the subscription is up or down (events may
 * have been missed while it was down). It never replays the queue (a
 * subscribed connection cannot run commands); lookups on it fail, stores are
 * dropped and invalidations are queued. NULL when out of memory. Loop thread.
 */
mizan_redis_t *mizan_redis_subscribe(struct event_base *base, mizan_redis_shared_t *shared,
                                     const char *channel,
                                     void (*cb)(void *arg, const char *msg, size_t len), void *arg);

/**
 * The Redis Cluster hash slot of key (0..16383): CRC16 (XMODEM) of the hash
 * tag (the bytes between the first '{' and the next '}' when that is not
 * empty), else of the whole key. Any thread.
 */
unsigned mizan_redis_key_slot(const char *key, size_t len);

#endif /* MIZAN_REDIS_H */
