/*
 * stress_memcache.c - the embedded cache under many threads, as a plain
 * program so that it can run under ThreadSanitizer (Criterion aborts under
 * TSan). Not part of the Criterion suite; build and run it by hand:
 *
 *   gcc -std=c17 -D_GNU_SOURCE -g -O1 -fsanitize=thread -Isrc -Iinclude \
 *       src/memcache.c src/error.c tests/unit/stress_memcache.c \
 *       -o stress_memcache -pthread && ./stress_memcache
 *
 * Threads set, read, delete, drop and count at random over a small key
 * space in a cache small enough to evict constantly; the checks are that no
 * reader ever sees a value under the wrong key or a torn one, that no
 * increment is lost, and that the byte count matches what is held. Exits 0
 * when every check holds, 1 otherwise.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "memcache.h"

#define THREADS 8
#define ROUNDS 20000
#define KEYS 64
#define MAX_BYTES (8 * 1024)

/* One thread's work and findings. */
struct worker {
    mizan_memcache_t *c; /* shared cache */
    int id;              /* thread number */
    long failures;       /* checks that did not hold */
};

static void check(struct worker *w, int ok, const char *what)
{
    if (!ok) {
        if (w->failures++ == 0)
            fprintf(stderr, "thread %d: %s\n", w->id, what);
    }
}

static void key_of(int k, char *key, size_t size)
{
    snprintf(key, size, "mizan:ctx:{c%d}:%d", k % 4, k);
}

static void *work(void *arg)
{
    struct worker *w = arg;
    mizan_err_t err = {""};
    char key[32], value[256], own[32];
    snprintf(own, sizeof(own), "rev:own:%d", w->id);
    unsigned seed = (unsigned)(w->id + 1) * 2654435761u;
    long long last_shared = 0;

    for (int i = 0; i < ROUNDS; i++) {
        seed = seed * 1103515245u + 12345u;
        key_of((int)((seed >> 8) % KEYS), key, sizeof(key));
        switch ((seed >> 20) % 5) {
        case 0: {
            int n = snprintf(value, sizeof(value), "%s|%0*d|end", key, (int)((seed >> 4) % 150), i);
            check(w, mizan_memcache_set(w->c, key, value, (size_t)n, 60, &err) == 0, "set failed");
            break;
        }
        case 1: {
            long long shared = -1, mine = -1;
            char *v = NULL;
            size_t len = 0;
            check(w, mizan_memcache_mget(w->c, "rev:shared", own, key, &shared, &mine, &v, &len,
                                         &err) == 0,
                  "mget failed");
            check(w, shared >= last_shared, "shared counter went back");
            last_shared = shared;
            if (v != NULL) {
                size_t kl = strlen(key);
                check(w, len >= kl + 4 && memcmp(v, key, kl) == 0 && v[kl] == '|' &&
                             strcmp(v + len - 4, "|end") == 0 && strlen(v) == len,
                      "value under the wrong key or torn");
                free(v);
            }
            break;
        }
        case 2: {
            long long before = -1;
            mizan_memcache_mget(w->c, NULL, own, NULL, NULL, &before, NULL, NULL, &err);
            check(w, mizan_memcache_incr(w->c, own, 3600, &err) == before + 1, "own counter skipped");
            check(w, mizan_memcache_incr(w->c, "rev:shared", 0, &err) >= 1, "incr failed");
            break;
        }
        case 3: {
            mizan_memcache_stats_t st;
            mizan_memcache_stats(w->c, &st);
            check(w, st.bytes <= MAX_BYTES, "over the byte bound");
            break;
        }
        default:
            if (i % 97 == 0)
                mizan_memcache_drop_prefix(w->c, "mizan:ctx:{c1}:");
            else
                mizan_memcache_del(w->c, key);
            break;
        }
    }
    return NULL;
}

int main(void)
{
    mizan_memcache_t *c = mizan_memcache_new(MAX_BYTES);
    if (c == NULL) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    struct worker w[THREADS];
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++) {
        w[i] = (struct worker){.c = c, .id = i};
        if (pthread_create(&t[i], NULL, work, &w[i]) != 0) {
            fprintf(stderr, "pthread_create failed\n");
            return 1;
        }
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);

    long failures = 0;
    long long own_total = 0;
    mizan_err_t err = {""};
    for (int i = 0; i < THREADS; i++) {
        char own[32];
        long long r = 0;
        snprintf(own, sizeof(own), "rev:own:%d", i);
        mizan_memcache_mget(c, own, NULL, NULL, &r, NULL, NULL, NULL, &err);
        own_total += r;
        failures += w[i].failures;
    }
    long long shared = 0;
    mizan_memcache_mget(c, "rev:shared", NULL, NULL, &shared, NULL, NULL, NULL, &err);
    if (shared != own_total) {
        fprintf(stderr, "lost increments: shared %lld, own total %lld\n", shared, own_total);
        failures++;
    }

    mizan_memcache_stats_t st;
    mizan_memcache_stats(c, &st);
    size_t sum = 0, found = 0;
    for (int k = 0; k < KEYS; k++) {
        char key[32];
        char *v = NULL;
        size_t len = 0;
        key_of(k, key, sizeof(key));
        mizan_memcache_mget(c, NULL, NULL, key, NULL, NULL, &v, &len, &err);
        if (v != NULL) {
            sum += strlen(key) + len + MIZAN_MEMCACHE_ENTRY_OVERHEAD;
            found++;
            free(v);
        }
    }
    if (found != st.count || sum != st.bytes) {
        fprintf(stderr, "accounting: %zu bundles / %zu bytes held, %zu / %zu counted\n", found,
                sum, st.count, st.bytes);
        failures++;
    }
    if (st.evictions == 0) {
        fprintf(stderr, "no evictions: the cache was not under pressure\n");
        failures++;
    }
    printf("stress_memcache: %d threads x %d rounds, %llu evictions, %lld increments, %ld failures\n",
           THREADS, ROUNDS, st.evictions, shared, failures);
    mizan_memcache_free(c);
    return failures == 0 ? 0 : 1;
}
