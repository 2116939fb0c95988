/*
 * test_redis_cluster.c - the pure parts of the Redis Cluster support in
 * src/redis.c: redis-cluster:// URLs (node lists, credentials, refusals
 * that never echo the password) and the hash slot of a key (CRC16 of its
 * {tag}), checked against the slots Redis documents. The routing itself is
 * tested against a real cluster in tests/e2e/test_redis_cluster.c.
 */
#include <criterion/criterion.h>

#include <stdio.h>
#include <string.h>

#include "redis.h"

Test(redis_cluster, url_lists_nodes_and_credentials)
{
    mizan_redis_url_t u;
    mizan_err_t err = {""};
    cr_assert_eq(mizan_redis_url_parse("redis-cluster://10.0.0.1:7000,10.0.0.2:7001,[::1]:7002,cache", &u, &err), 0,
                 "%s", err.msg);
    cr_assert(u.cluster);
    cr_assert_eq(u.nseeds, 4);
    cr_assert_str_eq(u.seeds[0].host, "10.0.0.1");
    cr_assert_eq(u.seeds[0].port, 7000);
    cr_assert_str_eq(u.seeds[1].host, "10.0.0.2");
    cr_assert_eq(u.seeds[1].port, 7001);
    cr_assert_str_eq(u.seeds[2].host, "::1");
    cr_assert_eq(u.seeds[2].port, 7002);
    cr_assert_str_eq(u.seeds[3].host, "cache");
    cr_assert_eq(u.seeds[3].port, 6379);
    cr_assert_str_eq(u.host, "10.0.0.1");
    cr_assert_eq(u.port, 7000);
    cr_assert_eq(u.db, 0);

    cr_assert_eq(mizan_redis_url_parse("redis-cluster://mizan:p%40ss,w@rd@h1:1,h2:2/0", &u, &err), 0, "%s", err.msg);
    cr_assert_str_eq(u.user, "mizan");
    cr_assert_str_eq(u.password, "p@ss,w@rd");
    cr_assert_eq(u.nseeds, 2);
    cr_assert_str_eq(u.seeds[1].host, "h2");

    cr_assert_eq(mizan_redis_url_parse("REDIS-CLUSTER://:pw@h", &u, &err), 0, "%s", err.msg);
    cr_assert(u.cluster);
    cr_assert_str_eq(u.password, "pw");
    cr_assert_eq(mizan_redis_url_parse("redis://h:7000", &u, &err), 0, "%s", err.msg);
    cr_assert_not(u.cluster);
}

Test(redis_cluster, bad_urls_are_refused_without_the_password)
{
    static const char *bad[] = {
        "redis-cluster://",
        "redis-cluster://:secretPW@",
        "redis-cluster://:secretPW@h1:1,",
        "redis-cluster://:secretPW@h1:1,,h2:2",
        "redis-cluster://:secretPW@h1:0",
        "redis-cluster://:secretPW@h1:1/3",
        "redis-cluster://:secretPW@h1:1?x=1",
        "redis-cluster://:secretPW@h1 h2",
        "rediss-cluster://:secretPW@h1:1",
        "redis://:secretPW@h1:1,h2:2",
        "redis-cluster://:secretPW@1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        mizan_redis_url_t u;
        mizan_err_t err = {""};
        cr_assert_eq(mizan_redis_url_parse(bad[i], &u, &err), -1, "accepted \"%s\"", bad[i]);
        cr_assert_neq(err.msg[0], '\0', "no message for \"%s\"", bad[i]);
        cr_assert_null(strstr(err.msg, "secretPW"), "password echoed for \"%s\": %s", bad[i], err.msg);
        cr_assert_str_eq(u.password, "", "password left behind for \"%s\"", bad[i]);
    }
}

static unsigned slot(const char *key)
{
    return mizan_redis_key_slot(key, strlen(key));
}

Test(redis_cluster, key_slots_follow_the_hash_tag)
{
    /* The CRC16 check value, and slots as redis-cli CLUSTER KEYSLOT gives them. */
    cr_assert_eq(slot("123456789"), 0x31C3u & 16383u);
    cr_assert_eq(slot("foo"), 12182u);
    cr_assert_eq(slot("{user1000}.following"), slot("user1000"));
    cr_assert_eq(slot("{user1000}.following"), 3443u);
    /* The tag is the first {...}; an empty one means the whole key. */
    cr_assert_eq(slot("a{b}c{d}"), slot("b"));
    cr_assert_eq(slot("foo{}{bar}"), mizan_redis_key_slot("foo{}{bar}", 10));
    cr_assert_neq(slot("foo{}{bar}"), slot("bar"));
    cr_assert_eq(slot("foo{{bar}}"), slot("{bar"));
    cr_assert_eq(slot("{post"), mizan_redis_key_slot("{post", 5));
    /* Every key of a context shares its slot. */
    unsigned post = slot("post");
    cr_assert_eq(slot("mizan:rev:{post}"), post);
    cr_assert_eq(slot("mizan:rev:{post}:82d21d6a3238fa1479ed6567c287c214b50cabfe4d4ed7c7e0c1bfab5d37e17e"), post);
    cr_assert_eq(slot("mizan:ctx:{post}:609fa05978b34ce85e89ca31370427d12c3b0afbc8f4bf0c491c023bcd5d63ba"), post);
    for (int i = 0; i < 1000; i++) {
        char k[32];
        snprintf(k, sizeof(k), "k%d", i);
        cr_assert_lt(slot(k), 16384u);
    }
}
