/*
 * test_memcache.c - the embedded cache (src/memcache.c): round trips,
 * revision counters, expiry on a fake clock, LRU eviction by bytes,
 * refusals, counters surviving bundle pressure, and threads hammering it.
 * (tests/unit/stress_memcache.c runs the hammer as a plain program, for
 * ThreadSanitizer, which Criterion does not survive.)
 */
#include <criterion/criterion.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "memcache.h"

/* The fake clock: milliseconds, moved by the tests. */
static long long fake_now = 1000000;

static long long fake_clock(void *ud)
{
    return *(long long *)ud;
}

static mizan_memcache_t *new_cache(size_t max_bytes)
{
    mizan_memcache_t *c = mizan_memcache_new(max_bytes);
    cr_assert_not_null(c);
    mizan_memcache_set_clock(c, fake_clock, &fake_now);
    return c;
}

static void put(mizan_memcache_t *c, const char *key, const char *value, int ttl)
{
    mizan_err_t err = {""};
    cr_assert_eq(mizan_memcache_set(c, key, value, strlen(value), ttl, &err), 0, "set %s: %s", key,
                 err.msg);
}

/* The stored value under key (new string) or NULL. */
static char *get(mizan_memcache_t *c, const char *key)
{
    char *v = NULL;
    size_t len = 0;
    mizan_err_t err = {""};
    cr_assert_eq(mizan_memcache_mget(c, NULL, NULL, key, NULL, NULL, &v, &len, &err), 0, "%s",
                 err.msg);
    if (v != NULL)
        cr_assert_eq(strlen(v), len);
    return v;
}

static bool has(mizan_memcache_t *c, const char *key)
{
    char *v = get(c, key);
    free(v);
    return v != NULL;
}

static long long rev(mizan_memcache_t *c, const char *key)
{
    long long r = -42;
    mizan_err_t err = {""};
    cr_assert_eq(mizan_memcache_mget(c, key, NULL, NULL, &r, NULL, NULL, NULL, &err), 0);
    return r;
}

static long long incr(mizan_memcache_t *c, const char *key, int ttl)
{
    mizan_err_t err = {""};
    long long v = mizan_memcache_incr(c, key, ttl, &err);
    cr_assert_gt(v, 0, "incr %s: %s", key, err.msg);
    return v;
}

Test(memcache, round_trip_like_mget)
{
    mizan_memcache_t *c = new_cache(1 << 20);
    static const char stored[] = "{\"v\":1,\"rev\":[3,1],\"bundle\":{\"context\":\"post\"}}";
    mizan_err_t err = {""};
    cr_assert_eq(mizan_memcache_set(c, "mizan:ctx:{post}:ab", stored, strlen(stored), 60, &err), 0);
    cr_assert_eq(incr(c, "mizan:rev:{post}", 0), 1);
    cr_assert_eq(incr(c, "mizan:rev:{post}", 0), 2);
    cr_assert_eq(incr(c, "mizan:rev:{post}", 0), 3);
    cr_assert_eq(incr(c, "mizan:rev:{post}:ab", 120), 1);

    long long cr = -1, sr = -1;
    char *v = NULL;
    size_t len = 0;
    cr_assert_eq(mizan_memcache_mget(c, "mizan:rev:{post}", "mizan:rev:{post}:ab",
                                     "mizan:ctx:{post}:ab", &cr, &sr, &v, &len, &err),
                 0);
    cr_assert_eq(cr, 3);
    cr_assert_eq(sr, 1);
    cr_assert_not_null(v);
    cr_assert_eq(len, strlen(stored));
    cr_assert_str_eq(v, stored);
    free(v);

    /* Missing everything: zeros and NULL. */
    cr_assert_eq(mizan_memcache_mget(c, "mizan:rev:{feed}", "mizan:rev:{feed}:00",
                                     "mizan:ctx:{feed}:00", &cr, &sr, &v, &len, &err),
                 0);
    cr_assert_eq(cr, 0);
    cr_assert_eq(sr, 0);
    cr_assert_null(v);
    cr_assert_eq(len, 0);
    mizan_memcache_free(c);
}

Test(memcache, values_are_binary_safe_copies)
{
    mizan_memcache_t *c = new_cache(1 << 20);
    static const char bin[] = {'a', '\0', 'b', '\n', '\xff'};
    mizan_err_t err = {""};
    cr_assert_eq(mizan_memcache_set(c, "k", bin, sizeof(bin), 10, &err), 0);
    char *v = NULL;
    size_t len = 0;
    cr_assert_eq(mizan_memcache_mget(c, NULL, NULL, "k", NULL, NULL, &v, &len, &err), 0);
    cr_assert_eq(len, sizeof(bin));
    cr_assert(memcmp(v, bin, sizeof(bin)) == 0);
    cr_assert_eq(v[len], '\0');
    /* The copy belongs to the caller: changing it leaves the cache alone. */
    v[0] = 'X';
    free(v);
    cr_assert_eq(mizan_memcache_mget(c, NULL, NULL, "k", NULL, NULL, &v, &len, &err), 0);
    cr_assert_eq(v[0], 'a');
    free(v);
    mizan_memcache_free(c);
}

Test(memcache, replace_updates_value_and_bytes)
{
    mizan_memcache_t *c = new_cache(1 << 20);
    put(c, "key", "first", 10);
    cr_assert_eq(mizan_memcache_bytes(c), 3 + 5 + MIZAN_MEMCACHE_ENTRY_OVERHEAD);
    put(c, "key", "second value", 10);
    cr_assert_eq(mizan_memcache_count(c), 1);
    cr_assert_eq(mizan_memcache_bytes(c), 3 + 12 + MIZAN_MEMCACHE_ENTRY_OVERHEAD);
    char *v = get(c, "key");
    cr_assert_str_eq(v, "second value");
    free(v);
    cr_assert_eq(mizan_memcache_del(c, "key"), 1);
    cr_assert_eq(mizan_memcache_del(c, "key"), 0);
    cr_assert_eq(mizan_memcache_bytes(c), 0);
    cr_assert_eq(mizan_memcache_count(c), 0);
    cr_assert(!has(c, "key"));
    mizan_memcache_free(c);
}

Test(memcache, counters_count_independently)
{
    mizan_memcache_t *c = new_cache(1 << 16);
    cr_assert_eq(rev(c, "a"), 0);
    cr_assert_eq(incr(c, "a", 0), 1);
    cr_assert_eq(incr(c, "b", 0), 1);
    cr_assert_eq(incr(c, "a", 0), 2);
    cr_assert_eq(rev(c, "a"), 2);
    cr_assert_eq(rev(c, "b"), 1);
    /* A counter and a bundle under the same name do not meet. */
    put(c, "a", "bundle", 10);
    cr_assert_eq(rev(c, "a"), 2);
    mizan_memcache_free(c);
}

Test(memcache, bundles_expire)
{
    fake_now = 5000000;
    mizan_memcache_t *c = new_cache(1 << 16);
    put(c, "k", "v", 10);
    fake_now += 9999;
    cr_assert(has(c, "k"), "alive 1 ms before its TTL");
    fake_now += 1;
    cr_assert(!has(c, "k"), "expired at its TTL");
    cr_assert_eq(mizan_memcache_count(c), 0, "an expired bundle is dropped when looked up");
    cr_assert_eq(mizan_memcache_bytes(c), 0);
    mizan_memcache_stats_t st;
    mizan_memcache_stats(c, &st);
    cr_assert_eq(st.expired, 1);
    mizan_memcache_free(c);
}

Test(memcache, scoped_revisions_expire_and_extend)
{
    fake_now = 7000000;
    mizan_memcache_t *c = new_cache(1 << 16);
    cr_assert_eq(incr(c, "s", 20), 1);
    fake_now += 15000;
    cr_assert_eq(incr(c, "s", 20), 2); /* now lives until +35 s */
    fake_now += 19999;
    cr_assert_eq(rev(c, "s"), 2);
    fake_now += 1;
    cr_assert_eq(rev(c, "s"), 0, "expired counter reads 0");
    cr_assert_eq(incr(c, "s", 20), 1, "an expired counter counts from 0");

    /* "At least": a shorter TTL does not cut a longer one. */
    cr_assert_eq(incr(c, "t", 100), 1);
    fake_now += 1000;
    cr_assert_eq(incr(c, "t", 10), 2);
    fake_now += 50000;
    cr_assert_eq(rev(c, "t"), 2);
    fake_now += 49000;
    cr_assert_eq(rev(c, "t"), 0);
    mizan_memcache_free(c);
}

Test(memcache, context_revisions_never_expire)
{
    fake_now = 9000000;
    mizan_memcache_t *c = new_cache(1 << 16);
    cr_assert_eq(incr(c, "ctx", 0), 1);
    fake_now += 10LL * 365 * 24 * 3600 * 1000;
    cr_assert_eq(rev(c, "ctx"), 1);
    /* A TTL given later does not make it mortal. */
    cr_assert_eq(incr(c, "ctx", 5), 2);
    fake_now += 3600 * 1000;
    cr_assert_eq(rev(c, "ctx"), 2);
    mizan_memcache_free(c);
}

/* Cost of a bundle with a 2-byte key and a 100-byte value. */
#define COST (2 + 100 + MIZAN_MEMCACHE_ENTRY_OVERHEAD)

/* Keys k0 to k9. */
static void put_sized(mizan_memcache_t *c, int i)
{
    char key[3] = {'k', (char)('0' + i), '\0'}, value[101];
    memset(value, 'a' + i, 100);
    value[100] = '\0';
    put(c, key, value, 60);
}

static bool has_sized(mizan_memcache_t *c, int i)
{
    char key[3] = {'k', (char)('0' + i), '\0'};
    return has(c, key);
}

Test(memcache, lru_evicts_least_recently_used_by_bytes)
{
    mizan_memcache_t *c = new_cache(8 * COST);
    for (int i = 0; i < 8; i++)
        put_sized(c, i);
    cr_assert_eq(mizan_memcache_count(c), 8);
    cr_assert_eq(mizan_memcache_bytes(c), 8 * COST);

    /* Reading k0 makes k1 the least recently used. */
    cr_assert(has_sized(c, 0));
    put_sized(c, 8);
    cr_assert_eq(mizan_memcache_count(c), 8);
    cr_assert_eq(mizan_memcache_bytes(c), 8 * COST);
    mizan_memcache_stats_t st;
    mizan_memcache_stats(c, &st);
    cr_assert_eq(st.evictions, 1);
    cr_assert(!has_sized(c, 1), "k1 was least recently used");
    cr_assert(has_sized(c, 0), "k0 was read, so it stays");

    /* Rewriting k2 also counts as a use; k3 goes next. */
    put_sized(c, 2);
    put_sized(c, 9);
    cr_assert(!has_sized(c, 3));
    for (int i = 0; i < 10; i++)
        if (i != 1 && i != 3)
            cr_assert(has_sized(c, i), "k%d should be there", i);
    cr_assert_leq(mizan_memcache_bytes(c), 8 * COST);
    mizan_memcache_free(c);
}

Test(memcache, oversized_entries_refused)
{
    mizan_memcache_t *c = new_cache(8 * COST);
    mizan_err_t err = {""};
    char value[102];
    memset(value, 'x', sizeof(value));
    /* Exactly max_bytes / 8 fits (see the LRU test); one byte more does not. */
    cr_assert_eq(mizan_memcache_set(c, "k0", value, 100, 60, &err), 0);
    cr_assert_eq(mizan_memcache_set(c, "k1", value, 101, 60, &err), -1);
    cr_assert_neq(err.msg[0], '\0');
    cr_assert_eq(mizan_memcache_count(c), 1);
    cr_assert(!has(c, "k1"));
    /* A refused rewrite does not leave the older text behind. */
    cr_assert_eq(mizan_memcache_set(c, "k0", value, 101, 60, &err), -1);
    cr_assert(!has(c, "k0"));
    cr_assert_eq(mizan_memcache_bytes(c), 0);
    /* Nor does a bad TTL store anything. */
    cr_assert_eq(mizan_memcache_set(c, "k2", value, 10, 0, &err), -1);
    cr_assert_eq(mizan_memcache_set(c, "k2", value, 10, -5, &err), -1);
    cr_assert(!has(c, "k2"));

    /* A zero-byte cache stores nothing, without failing otherwise. */
    mizan_memcache_t *none = new_cache(0);
    cr_assert_eq(mizan_memcache_set(none, "k", "v", 1, 60, &err), -1);
    cr_assert_eq(incr(none, "r", 0), 1);
    mizan_memcache_free(none);
    mizan_memcache_free(c);
}

Test(memcache, counters_survive_bundle_pressure)
{
    mizan_memcache_t *c = new_cache(8 * COST);
    char key[32];
    for (int i = 0; i < 200; i++) {
        snprintf(key, sizeof(key), "rev:%d", i);
        for (int n = 0; n <= i % 3; n++)
            incr(c, key, i % 2 ? 3600 : 0);
    }
    for (int round = 0; round < 50; round++)
        for (int i = 0; i < 10; i++)
            put_sized(c, i);
    mizan_memcache_stats_t st;
    mizan_memcache_stats(c, &st);
    cr_assert_gt(st.evictions, 400);
    cr_assert_eq(st.revs, 200);
    for (int i = 0; i < 200; i++) {
        snprintf(key, sizeof(key), "rev:%d", i);
        cr_assert_eq(rev(c, key), i % 3 + 1, "counter %s lost", key);
    }
    mizan_memcache_free(c);
}

Test(memcache, writes_sweep_expired_entries)
{
    fake_now = 11000000;
    mizan_memcache_t *c = new_cache(1 << 20);
    char key[32];
    for (int i = 0; i < 50; i++) {
        snprintf(key, sizeof(key), "old:%d", i);
        put(c, key, "v", 1);
        snprintf(key, sizeof(key), "oldrev:%d", i);
        incr(c, key, 1);
    }
    fake_now += 2000;
    /* Nobody asks for the old keys again; writes alone must clear them. */
    for (int i = 0; i < 64; i++) {
        snprintf(key, sizeof(key), "new:%d", i);
        put(c, key, "v", 60);
    }
    mizan_memcache_stats_t st;
    mizan_memcache_stats(c, &st);
    cr_assert_eq(st.count, 64, "count %zu", st.count);
    cr_assert_eq(st.revs, 0, "revs %zu", st.revs);
    cr_assert_eq(st.expired, 100);
    cr_assert_eq(st.bytes, 64 * (strlen("new:0") + 1 + MIZAN_MEMCACHE_ENTRY_OVERHEAD) + 54,
                 "bytes %zu", st.bytes);
    mizan_memcache_free(c);
}

Test(memcache, drop_prefix_removes_one_context)
{
    mizan_memcache_t *c = new_cache(1 << 16);
    put(c, "mizan:ctx:{post}:aa", "1", 60);
    put(c, "mizan:ctx:{post}:bb", "2", 60);
    put(c, "mizan:ctx:{postx}:cc", "3", 60);
    put(c, "mizan:ctx:{feed}:aa", "4", 60);
    cr_assert_eq(mizan_memcache_drop_prefix(c, "mizan:ctx:{post}:"), 2);
    cr_assert(!has(c, "mizan:ctx:{post}:aa"));
    cr_assert(!has(c, "mizan:ctx:{post}:bb"));
    cr_assert(has(c, "mizan:ctx:{postx}:cc"));
    cr_assert(has(c, "mizan:ctx:{feed}:aa"));
    cr_assert_eq(mizan_memcache_count(c), 2);
    cr_assert_eq(mizan_memcache_bytes(c),
                 2 * (strlen("mizan:ctx:{feed}:aa") + 1 + MIZAN_MEMCACHE_ENTRY_OVERHEAD) + 1);
    cr_assert_eq(mizan_memcache_drop_prefix(c, "nothing"), 0);
    mizan_memcache_free(c);
}

Test(memcache, many_entries_grow_the_table)
{
    mizan_memcache_t *c = new_cache(64u << 20);
    char key[32], value[32];
    for (int i = 0; i < 20000; i++) {
        snprintf(key, sizeof(key), "key:%d", i);
        snprintf(value, sizeof(value), "value:%d", i);
        put(c, key, value, 60);
    }
    cr_assert_eq(mizan_memcache_count(c), 20000);
    for (int i = 0; i < 20000; i += 7) {
        snprintf(key, sizeof(key), "key:%d", i);
        snprintf(value, sizeof(value), "value:%d", i);
        char *v = get(c, key);
        cr_assert_not_null(v, "%s lost", key);
        cr_assert_str_eq(v, value);
        free(v);
    }
    mizan_memcache_free(c);
}

/* ------------------------------------------------------------------------ */
/* Threads                                                                  */
/* ------------------------------------------------------------------------ */

#define THREADS 8
#define ROUNDS 4000
#define KEYS 64

struct hammer {
    mizan_memcache_t *c;
    int id;
    long failures;
    char first_failure[128];
};

static void fail(struct hammer *h, const char *what)
{
    if (h->failures++ == 0)
        snprintf(h->first_failure, sizeof(h->first_failure), "%s", what);
}

/* Each value names its key, so a reader can tell a value under the wrong
 * key or a torn one; the shared counter checks that no increment is lost,
 * the private one that a thread sees its own increments in order. */
static void *hammer(void *arg)
{
    struct hammer *h = arg;
    mizan_err_t err = {""};
    char key[32], value[256], own[32];
    snprintf(own, sizeof(own), "rev:own:%d", h->id);
    unsigned seed = (unsigned)h->id * 2654435761u;
    long long last_shared = 0;
    for (int i = 0; i < ROUNDS; i++) {
        seed = seed * 1103515245u + 12345u;
        int k = (int)((seed >> 8) % KEYS);
        snprintf(key, sizeof(key), "mizan:ctx:{c%d}:%d", k % 4, k);
        switch ((seed >> 20) % 4) {
        case 0: {
            int pad = (int)((seed >> 4) % 150);
            int n = snprintf(value, sizeof(value), "%s|%0*d|end", key, pad, i);
            if (mizan_memcache_set(h->c, key, value, (size_t)n, 60, &err) < 0)
                fail(h, "set failed");
            break;
        }
        case 1: {
            long long cr = -1, sr = -1;
            char *v = NULL;
            size_t len = 0;
            if (mizan_memcache_mget(h->c, "rev:shared", own, key, &cr, &sr, &v, &len, &err) < 0)
                fail(h, "mget failed");
            if (cr < last_shared)
                fail(h, "shared counter went back");
            last_shared = cr;
            if (v != NULL) {
                size_t kl = strlen(key);
                if (len < kl + 4 || memcmp(v, key, kl) != 0 || v[kl] != '|' ||
                    strcmp(v + len - 4, "|end") != 0 || strlen(v) != len)
                    fail(h, "value under the wrong key or torn");
                free(v);
            }
            break;
        }
        case 2: {
            long long before = -1, after;
            mizan_memcache_mget(h->c, NULL, own, NULL, NULL, &before, NULL, NULL, &err);
            after = mizan_memcache_incr(h->c, own, 3600, &err);
            if (after != before + 1)
                fail(h, "own counter skipped");
            if (mizan_memcache_incr(h->c, "rev:shared", 0, &err) < 1)
                fail(h, "incr failed");
            break;
        }
        default:
            if (i % 97 == 0)
                mizan_memcache_drop_prefix(h->c, "mizan:ctx:{c1}:");
            else
                mizan_memcache_del(h->c, key);
            break;
        }
    }
    return NULL;
}

Test(memcache, threads_hammer_it)
{
    /* Small enough that eviction runs all the time. */
    mizan_memcache_t *c = mizan_memcache_new(8 * 1024);
    cr_assert_not_null(c);
    struct hammer h[THREADS];
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++) {
        h[i] = (struct hammer){.c = c, .id = i};
        cr_assert_eq(pthread_create(&t[i], NULL, hammer, &h[i]), 0);
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);

    long long incrs = 0;
    for (int i = 0; i < THREADS; i++) {
        cr_assert_eq(h[i].failures, 0, "thread %d: %ld failures, first: %s", i, h[i].failures,
                     h[i].first_failure);
        char own[32];
        snprintf(own, sizeof(own), "rev:own:%d", i);
        incrs += rev(c, own);
    }
    cr_assert_gt(incrs, 0);
    cr_assert_eq(rev(c, "rev:shared"), incrs, "lost increments");
    mizan_memcache_stats_t st;
    mizan_memcache_stats(c, &st);
    cr_assert_leq(st.bytes, 8 * 1024);
    cr_assert_gt(st.evictions, 0);
    /* The byte count matches what is actually there. */
    size_t sum = 0, found = 0;
    for (int k = 0; k < KEYS; k++) {
        char key[32];
        snprintf(key, sizeof(key), "mizan:ctx:{c%d}:%d", k % 4, k);
        char *v = get(c, key);
        if (v != NULL) {
            sum += strlen(key) + strlen(v) + MIZAN_MEMCACHE_ENTRY_OVERHEAD;
            found++;
            free(v);
        }
    }
    cr_assert_eq(found, st.count);
    cr_assert_eq(sum, st.bytes);
    mizan_memcache_free(c);
}
