/*
 * exchange.c - the life of one request in flight (see exchange.h): its
 * request id, its place in the loop's live list, and its end: one metrics
 * record and one log line.
 */
#include "exchange.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/http.h>

#include "log.h"
#include "metrics.h"
#include "text.h"

static uint64_t next_random(mizan_loop_t *loop)
{
    /* xorshift128+: request ids need uniqueness, not secrecy. */
    uint64_t s1 = loop->rng[0];
    const uint64_t s0 = loop->rng[1];
    loop->rng[0] = s0;
    s1 ^= s1 << 23;
    loop->rng[1] = s1 ^ s0 ^ (s1 >> 17) ^ (s0 >> 26);
    return loop->rng[1] + s0;
}

static bool sane_request_id(const char *v)
{
    size_t n = 0;
    for (; v[n] != '\0'; n++)
        if (n >= 128 || !((v[n] >= 'A' && v[n] <= 'Z') || (v[n] >= 'a' && v[n] <= 'z') ||
                          (v[n] >= '0' && v[n] <= '9') || v[n] == '.' || v[n] == '_' || v[n] == '-'))
            return false;
    return n > 0;
}

void mizan_exchange_request_id(mizan_loop_t *loop, char *out, size_t len)
{
    /* 32 lowercase hex digits, written by hand: this runs on every request. */
    static const char hex[] = "0123456789abcdef";
    char id[33];
    for (int half = 0; half < 2; half++) {
        uint64_t r = next_random(loop);
        for (int i = 15; i >= 0; i--, r >>= 4)
            id[half * 16 + i] = hex[r & 0xF];
    }
    id[32] = '\0';
    if (len > 0) {
        size_t n = len - 1 < 32 ? len - 1 : 32;
        memcpy(out, id, n);
        out[n] = '\0';
    }
}

mizan_exchange_t *mizan_exchange_new(mizan_loop_t *loop, struct evhttp_request *req)
{
    mizan_exchange_t *ex = calloc(1, sizeof(*ex));
    if (ex == NULL)
        return NULL;
    ex->loop = loop;
    ex->req = req;
    ex->route = "unknown";
    clock_gettime(CLOCK_MONOTONIC, &ex->t0);
    const char *rid = evhttp_find_header(evhttp_request_get_input_headers(req), "X-Request-Id");
    if (rid != NULL && sane_request_id(rid))
        mizan_text_copy(ex->rid, sizeof(ex->rid), rid);
    else
        mizan_exchange_request_id(loop, ex->rid, sizeof(ex->rid));
    ex->next = loop->live;
    if (loop->live != NULL)
        loop->live->prev = ex;
    loop->live = ex;
    atomic_fetch_add(&loop->nlive, 1);
    return ex;
}

struct evhttp_request *mizan_exchange_detach(mizan_exchange_t *ex)
{
    struct evhttp_request *req = ex->req;
    ex->req = NULL;
    mizan_exchange_finish(ex, 200);
    return req;
}

void mizan_exchange_finish(mizan_exchange_t *ex, int status)
{
    mizan_loop_t *loop = ex->loop;
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    long long us = (long long)(t1.tv_sec - ex->t0.tv_sec) * 1000000LL + (t1.tv_nsec - ex->t0.tv_nsec) / 1000;
    mizan_metrics_request(ex->route, status, us);
    if (mizan_log_enabled(MIZAN_LOG_INFO)) {
        /* One line per request: formatted straight into a buffer (log.h). */
        mizan_log_field_t f[6] = {
            {"request_id", ex->rid, 0},
            {"route", ex->route, 0},
            {"status", NULL, status},
            {"duration_us", NULL, us},
        };
        size_t n = 4;
        if (ex->target[0] != '\0')
            f[n++] = (mizan_log_field_t){strcmp(ex->route, "ctx") == 0 ? "context" : "function", ex->target, 0};
        if (ex->cache != NULL)
            f[n++] = (mizan_log_field_t){"cache", ex->cache, 0};
        mizan_log_line(MIZAN_LOG_INFO, "request", f, n);
    }
    if (ex->release != NULL)
        ex->release(ex);
    if (ex->prev != NULL)
        ex->prev->next = ex->next;
    else
        loop->live = ex->next;
    if (ex->next != NULL)
        ex->next->prev = ex->prev;
    atomic_fetch_sub(&loop->nlive, 1);
    free(ex);
}

