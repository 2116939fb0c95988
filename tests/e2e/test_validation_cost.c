/*
 * test_validation_cost.c - end-to-end tests that hostile inputs cannot make
 * schema validation stall an I/O loop (PROTOCOL.md section 4; the budget of
 * docs/validation.md).
 *
 * The gateway runs with one I/O loop, so the connection that polls
 * /healthz shares the loop that validates the hostile request. Two attacks:
 *
 *   - uniqueItems: 12,000 distinct objects {"a": k, "b": j(k)} built so
 *     that the hash the validator once used for uniqueItems (FNV-1a over
 *     member names, a splitmix64 finaliser, member hashes summed) gives all
 *     of them one value, which made the check compare every pair;
 *   - patterns: 4,000 strings, each of which costs a backtracking pattern
 *     about half of its per-value match limit.
 *
 * The worst /healthz latency during each attack is printed (the numbers
 * the docs quote) and asserted under a bound generous enough for a loaded
 * machine, but far below the seconds either attack used to cost.
 */
#include <criterion/criterion.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "harness.h"

TestSuite(validation_cost, .init = mz_setup, .fini = mz_teardown, .timeout = 300);

/* Bound on the worst /healthz answer while an attack is validated. */
#define STALL_BOUND_MS 1000.0

/* -------------------------------------------------- the old uniqueItems hash */

static uint64_t old_mix64(uint64_t h)
{
    h ^= h >> 30;
    h *= 0xbf58476d1ce4e5b9ULL;
    h ^= h >> 27;
    h *= 0x94d049bb133111ebULL;
    h ^= h >> 31;
    return h;
}

/* x with x ^= x >> s undone. */
static uint64_t unxorshift(uint64_t y, int s)
{
    uint64_t x = y;
    for (int i = 0; i < 64 / s + 1; i++)
        x = y ^ (x >> s);
    return x;
}

/* Inverse of an odd number modulo 2^64 (Newton's iteration). */
static uint64_t inverse(uint64_t a)
{
    uint64_t x = a;
    for (int i = 0; i < 6; i++)
        x *= 2 - a * x;
    return x;
}

static uint64_t old_unmix64(uint64_t h)
{
    h = unxorshift(h, 31);
    h *= inverse(0x94d049bb133111ebULL);
    h = unxorshift(h, 27);
    h *= inverse(0xbf58476d1ce4e5b9ULL);
    return unxorshift(h, 30);
}

static uint64_t old_hash_bytes(const char *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)p[i];
        h *= 0x100000001b3ULL;
    }
    return old_mix64(h ^ n);
}

static uint64_t old_int_hash(int64_t i)
{
    return old_mix64((uint64_t)i ^ 0x1234567ULL);
}

/* The old hash of {"a": a, "b": b}. */
static uint64_t old_pair_hash(int64_t a, int64_t b)
{
    uint64_t sum = old_mix64(old_hash_bytes("a", 1) ^ old_int_hash(a)) +
                   old_mix64(old_hash_bytes("b", 1) ^ old_int_hash(b));
    return old_mix64(sum ^ 0x6f626a65ULL ^ 2);
}

/* The b that makes {"a": a, "b": b}'s member sum equal target. */
static int64_t colliding_b(int64_t a, uint64_t target)
{
    uint64_t ta = old_mix64(old_hash_bytes("a", 1) ^ old_int_hash(a));
    uint64_t hb = old_unmix64(target - ta) ^ old_hash_bytes("b", 1);
    return (int64_t)(old_unmix64(hb) ^ 0x1234567ULL);
}

/* ---------------------------------------------------------------- polling */

/* A thread that asks /healthz on its own keep-alive connection. */
typedef struct poller {
    int port;                 /* the gateway */
    atomic_bool stop;         /* set by the test to end the thread */
    atomic_int window;        /* which attack is running (0: none) */
    double worst_ms[4];       /* worst answer time per window */
    int answered[4];          /* answers per window */
    int failures;             /* exchanges that failed */
    char err[256];            /* the last failure */
    pthread_t thread;
} poller_t;

static void *poll_main(void *arg)
{
    poller_t *p = arg;
    mz_conn_t *c = mz_try_connect(p->port, 2000, p->err, sizeof(p->err));
    if (c == NULL) {
        p->failures++;
        return NULL;
    }
    c->timeout_ms = 60000;
    mz_req_t req = {.method = "GET", .path = "/healthz"};
    while (!atomic_load(&p->stop)) {
        int w = atomic_load(&p->window);
        double t0 = mz_now_ms();
        mz_resp_t *r = NULL;
        if (mz_try_request(c, &req, &r, p->err, sizeof(p->err)) < 0 || r->status != 200) {
            p->failures++;
            break;
        }
        double took = mz_now_ms() - t0;
        /* An answer that straddles two windows counts for both. */
        int w2 = atomic_load(&p->window);
        for (int k = 0; k < 4; k++)
            if ((k == w || k == w2) && took > p->worst_ms[k])
                p->worst_ms[k] = took;
        p->answered[w2]++;
        mz_sleep_ms(2);
    }
    return NULL;
}

/* --------------------------------------------------------------- payloads */

#define CONFIG \
    "{\"io_threads\": 1," \
    " \"upstreams\": {\"sink\": {\"url\": \"http://127.0.0.1:%d\", \"retries\": 0}}," \
    " \"functions\": [{\"name\": \"ingest\", \"upstream\": {\"service\": \"sink\", \"method\": \"POST\"," \
    "   \"path\": \"/ingest\"}," \
    "   \"input_schema\": {\"type\": \"object\", \"properties\": {" \
    "     \"rows\": {\"type\": \"array\", \"uniqueItems\": true}," \
    "     \"tags\": {\"type\": \"array\", \"items\": {\"type\": \"string\", \"pattern\": \"^(a+)+$\"}}}}}]}"

/* {"function": "ingest", "args": {"rows": [12,000 colliding objects]}}. */
static char *unique_attack(size_t *len)
{
    enum { N = 12000 };
    char *body = mz_alloc((size_t)N * 64 + 128);
    size_t p = (size_t)sprintf(body, "{\"function\":\"ingest\",\"args\":{\"rows\":[");
    uint64_t target = 0x5eed5eed5eed5eedULL;
    uint64_t first = 0;
    for (int k = 0; k < N; k++) {
        int64_t b = colliding_b(k, target);
        uint64_t h = old_pair_hash(k, b);
        if (k == 0)
            first = h;
        cr_assert_eq(h, first, "item %d does not collide under the old hash", k);
        p += (size_t)sprintf(body + p, "%s{\"a\":%d,\"b\":%lld}", k == 0 ? "" : ",", k, (long long)b);
    }
    p += (size_t)sprintf(body + p, "]}}");
    *len = p;
    return body;
}

/* 4,000 strings of 18 'a' and a '!': each a no-match that costs ^(a+)+$
 * about 2^19 backtracking steps, under the per-value match limit. */
static char *pattern_attack(size_t *len)
{
    enum { N = 4000 };
    char *body = mz_alloc((size_t)N * 24 + 128);
    size_t p = (size_t)sprintf(body, "{\"function\":\"ingest\",\"args\":{\"tags\":[");
    for (int k = 0; k < N; k++)
        p += (size_t)sprintf(body + p, "%s\"aaaaaaaaaaaaaaaaaa!\"", k == 0 ? "" : ",");
    p += (size_t)sprintf(body + p, "]}}");
    *len = p;
    return body;
}

Test(validation_cost, hostile_inputs_do_not_stall_the_loop)
{
    mz_gw_t *gw = mz_gw_start(mz_json(CONFIG, mz_free_port()));
    size_t ulen = 0, plen = 0;
    char *ubody = unique_attack(&ulen);
    char *pbody = pattern_attack(&plen);

    poller_t *p = mz_alloc(sizeof(*p));
    p->port = gw->port;
    cr_assert_eq(pthread_create(&p->thread, NULL, poll_main, p), 0);
    mz_sleep_ms(300);

    mz_req_t req = {.method = "POST", .path = "/api/mizan/call/", .headers = (const char *const[]){
                        "Content-Type: application/json", NULL}};
    atomic_store(&p->window, 1);
    req.body = ubody;
    req.body_len = ulen;
    mz_resp_t *ru = mz_http(gw, &req);
    mz_sleep_ms(100);
    atomic_store(&p->window, 2);
    req.body = pbody;
    req.body_len = plen;
    mz_resp_t *rp = mz_http(gw, &req);
    mz_sleep_ms(100);
    /* The same rows under an undeclared member: reading and parsing the
     * body without the uniqueItems check, for comparison. */
    atomic_store(&p->window, 3);
    char *plain = mz_fmt("%s", ubody);
    memcpy(strstr(plain, "\"rows\""), "\"rowz\"", 6);
    req.body = plain;
    req.body_len = ulen;
    mz_resp_t *rz = mz_http(gw, &req);
    mz_sleep_ms(100);
    atomic_store(&p->window, 0);
    mz_sleep_ms(50);
    atomic_store(&p->stop, true);
    pthread_join(p->thread, NULL);

    printf("validation_cost: uniqueItems payload %zu bytes (%.0f KiB): worst /healthz %.1f ms, answer %d in %.1f ms\n",
           ulen, ulen / 1024.0, p->worst_ms[1], ru->status, ru->elapsed_ms);
    printf("validation_cost: pattern payload %zu bytes (%.0f KiB): worst /healthz %.1f ms, answer %d in %.1f ms\n",
           plen, plen / 1024.0, p->worst_ms[2], rp->status, rp->elapsed_ms);
    printf("validation_cost: same rows unvalidated (parse only): worst /healthz %.1f ms, answer %d\n",
           p->worst_ms[3], rz->status);
    printf("validation_cost: idle worst /healthz %.1f ms\n", p->worst_ms[0]);
    fflush(stdout);

    cr_assert_eq(p->failures, 0, "the /healthz poller failed: %s", p->err);
    cr_assert(p->answered[1] > 0 && p->answered[2] > 0, "the poller must have been answered during both attacks");
    cr_assert(p->worst_ms[1] < STALL_BOUND_MS, "uniqueItems attack stalled /healthz for %.1f ms", p->worst_ms[1]);
    cr_assert(p->worst_ms[2] < STALL_BOUND_MS, "pattern attack stalled /healthz for %.1f ms", p->worst_ms[2]);

    /* The distinct items are valid (the dead upstream then fails the call);
     * the pattern flood is refused as too costly, in the envelope. */
    cr_assert(ru->status != 422, "distinct items must pass uniqueItems:\n%s", mz_describe(ru));
    json_t *details = mz_expect_error(rp, 422, "VALIDATION_FAILED");
    mz_expect_violation(details, "[\"args\"]", "budget");
}

Test(validation_cost, duplicates_are_still_found)
{
    mz_gw_t *gw = mz_gw_start(mz_json(CONFIG, mz_free_port()));
    /* 5,000 distinct items, then one equal to item 17 (1 == 1.0, members
     * in another order). */
    size_t cap = 5000 * 48 + 256, p = 0;
    char *args = mz_alloc(cap);
    p += (size_t)sprintf(args + p, "{\"rows\":[");
    for (int k = 0; k < 5000; k++)
        p += (size_t)sprintf(args + p, "%s{\"a\":%d,\"b\":[%d]}", k == 0 ? "" : ",", k, k % 7);
    p += (size_t)sprintf(args + p, ",{\"b\":[%d.0],\"a\":17.0}]}", 17 % 7);
    mz_resp_t *r = mz_call(gw, "ingest", args, NULL);
    json_t *details = mz_expect_error(r, 422, "VALIDATION_FAILED");
    mz_expect_violation(details, "[\"args\",\"rows\"]", "uniqueItems");
    cr_assert(strstr(mz_dump(details), "17 and 5000") != NULL, "wrong pair reported: %s", mz_dump(details));

    /* A legitimate request with many pattern-checked strings passes. */
    p = 0;
    p += (size_t)sprintf(args + p, "{\"tags\":[");
    for (int k = 0; k < 4000; k++)
        p += (size_t)sprintf(args + p, "%s\"aaaaaaaaaaaaaaaaaaa\"", k == 0 ? "" : ",");
    p += (size_t)sprintf(args + p, "]}");
    r = mz_call(gw, "ingest", args, NULL);
    cr_assert(r->status != 422, "matching strings must pass:\n%s", mz_describe(r));
}
