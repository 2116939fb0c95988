/*
 * test_upstream_wire.c - end-to-end tests of the upstream client's reading
 * of answers as they really arrive: a raw upstream on a thread of the test
 * sends each answer a few bytes at a time (TCP_NODELAY, a pause between
 * pieces), framed by Content-Length, by chunks with extensions and
 * trailers, or by the end of the connection, with JSON the fast reader
 * leaves to jansson (non-ASCII text, surrogate pairs, big integers), and a
 * large answer (a 10 KiB header, a 240 KiB body) that outgrows the
 * connection's first buffers.
 *
 * Checked against a real gateway: every result, one kept-alive connection
 * for all the keep-alive answers, a new one after an answer that ended its
 * connection, and no connection counted as dropped (nothing here breaks the
 * framing).
 */
#include <criterion/criterion.h>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cache_support.h" /* mz_metric */
#include "harness.h"
#include "internal.h" /* mz_own: the raw upstream is stopped at teardown like the others */

TestSuite(upstream_wire, .init = mz_setup, .fini = mz_teardown, .timeout = 240);

/** The raw upstream: one thread, one connection at a time. */
typedef struct wireup {
    int lfd;
    int port;
    char *url;
    pthread_t thread;
    atomic_bool stop;
    atomic_int accepted; /**< connections accepted so far */
} wireup_t;

/* Sends n bytes in pieces of step bytes with a short pause between them. */
static void dribble(int fd, const char *p, size_t n, size_t step)
{
    while (n > 0) {
        size_t k = n < step ? n : step;
        ssize_t w = send(fd, p, k, MSG_NOSIGNAL);
        if (w <= 0)
            return;
        p += w;
        n -= (size_t)w;
        usleep(300);
    }
}

/* The answer to one request for path (new string); *close_after: end the connection after it. */
static char *answer_for(const char *path, bool *close_after, size_t *step)
{
    *close_after = false;
    *step = 3;
    char *out = NULL;
    int n = -1;
    if (strcmp(path, "/cl") == 0) {
        const char *body = "{\"framing\":\"length\",\"n\":[1,2,3]}";
        n = asprintf(&out, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
                     strlen(body), body);
    } else if (strcmp(path, "/chunked") == 0) {
        n = asprintf(&out, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                     "5;name=value\r\n{\"fra\r\n"
                     "13\r\nming\":\"chunks\",\"n\":\r\n"
                     "1;a;b=\"c\"\r\n7\r\n"
                     "1\r\n}\r\n"
                     "0\r\nX-Checksum: 12\r\nX-Other: x\r\n\r\n");
    } else if (strcmp(path, "/text") == 0) {
        const char *body = "{\"name\":\"Zo\xc3\xab \\u00e9t\\u00e9 \\ud83d\\ude00\",\"big\":12345678901234567890e-1,"
                           "\"id\":1234567890123456789}";
        n = asprintf(&out, "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n%s", strlen(body), body);
    } else if (strcmp(path, "/big") == 0) {
        /* A 10 KiB header and a 240 KiB body: buffers grow past their first size, then shrink back. */
        size_t nitems = 20000;
        char *body = malloc(nitems * 12 + 8), *pad = malloc(10241);
        if (body == NULL || pad == NULL) {
            free(body);
            free(pad);
            return NULL;
        }
        size_t k = 0;
        body[k++] = '[';
        for (size_t i = 0; i < nitems; i++) {
            memcpy(body + k, "\"abcdefghi\",", 12);
            k += 12;
        }
        memcpy(body + k, "0]", 3);
        memset(pad, 'p', 10240);
        pad[10240] = '\0';
        n = asprintf(&out, "HTTP/1.1 200 OK\r\nX-Pad: %s\r\nContent-Length: %zu\r\n\r\n%s", pad, strlen(body), body);
        free(body);
        free(pad);
        *step = 4000;
    } else if (strcmp(path, "/close") == 0) {
        n = asprintf(&out, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{\"framing\":\"close\"}");
        *close_after = true;
    } else {
        n = asprintf(&out, "HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\n{}");
    }
    return n < 0 ? NULL : out;
}

static void *wire_main(void *arg)
{
    wireup_t *u = arg;
    while (!atomic_load(&u->stop)) {
        int fd = accept(u->lfd, NULL, NULL);
        if (fd < 0)
            continue;
        atomic_fetch_add(&u->accepted, 1);
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        struct timeval tv = {0, 200000};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        char buf[8192];
        size_t len = 0;
        bool open = true;
        while (open && !atomic_load(&u->stop)) {
            ssize_t r = recv(fd, buf + len, sizeof(buf) - 1 - len, 0);
            if (r == 0)
                break;
            if (r < 0)
                continue; /* receive timeout: look at stop again */
            len += (size_t)r;
            buf[len] = '\0';
            char *end;
            while (open && (end = strstr(buf, "\r\n\r\n")) != NULL) {
                /* Requests to this upstream are GETs without a body. */
                size_t used = (size_t)(end + 4 - buf);
                char path[256] = "";
                sscanf(buf, "%*s %255s", path);
                bool close_after;
                size_t step;
                char *out = answer_for(path, &close_after, &step);
                if (out != NULL)
                    dribble(fd, out, strlen(out), step);
                free(out);
                memmove(buf, buf + used, len - used);
                len -= used;
                buf[len] = '\0';
                open = !close_after;
            }
        }
        close(fd);
    }
    return NULL;
}

static void wireup_stop(void *p)
{
    wireup_t *u = p;
    atomic_store(&u->stop, true);
    shutdown(u->lfd, SHUT_RDWR);
    pthread_join(u->thread, NULL);
    close(u->lfd);
}

/* Starts the raw upstream on a free loopback port; stopped at teardown. Asserting. */
static wireup_t *wireup_start(void)
{
    wireup_t *u = mz_alloc(sizeof(*u));
    u->lfd = mz_listen_loopback(16, &u->port);
    u->url = mz_fmt("http://127.0.0.1:%d", u->port);
    cr_assert(pthread_create(&u->thread, NULL, wire_main, u) == 0);
    mz_own(u, wireup_stop, MZ_PHASE_PROC);
    return u;
}

Test(upstream_wire, answers_read_in_pieces_whatever_their_framing)
{
    wireup_t *u = wireup_start();
    json_t *cfg = mz_json(
        "{\"io_threads\": 1,"
        " \"upstreams\": {\"w\": {\"url\": \"%s\", \"pool_size\": 1, \"retries\": 0, \"identity\": false,"
        "   \"breaker\": {\"failures\": 0}}},"
        " \"functions\": ["
        "  {\"name\": \"w_cl\", \"upstream\": {\"service\": \"w\", \"path\": \"/cl\"}},"
        "  {\"name\": \"w_chunked\", \"upstream\": {\"service\": \"w\", \"path\": \"/chunked\"}},"
        "  {\"name\": \"w_text\", \"upstream\": {\"service\": \"w\", \"path\": \"/text\"}},"
        "  {\"name\": \"w_big\", \"upstream\": {\"service\": \"w\", \"path\": \"/big\"}},"
        "  {\"name\": \"w_close\", \"upstream\": {\"service\": \"w\", \"path\": \"/close\"}}]}",
        u->url);
    mz_gw_t *gw = mz_gw_start(cfg);

    /* Keep-alive answers, each read in pieces: one connection for all of them, twice over. */
    for (int round = 0; round < 2; round++) {
        mz_expect_json(mz_expect_result(mz_call(gw, "w_cl", NULL, NULL)), "{\"framing\": \"length\", \"n\": [1, 2, 3]}");
        mz_expect_json(mz_expect_result(mz_call(gw, "w_chunked", NULL, NULL)), "{\"framing\": \"chunks\", \"n\": 7}");
        json_t *text = mz_expect_result(mz_call(gw, "w_text", NULL, NULL));
        cr_assert_str_eq(json_string_value(json_object_get(text, "name")),
                         "Zo\xc3\xab \xc3\xa9t\xc3\xa9 \xf0\x9f\x98\x80", "%s", mz_dump(text));
        cr_assert(json_is_integer(json_object_get(text, "id")) &&
                      json_integer_value(json_object_get(text, "id")) == 1234567890123456789LL,
                  "%s", mz_dump(text));
        cr_assert(json_is_real(json_object_get(text, "big")), "%s", mz_dump(text));
        json_t *big = mz_expect_result(mz_call(gw, "w_big", NULL, NULL));
        cr_assert(json_is_array(big) && json_array_size(big) == 20001, "a big answer read whole");
        cr_assert_str_eq(json_string_value(json_array_get(big, 19999)), "abcdefghi");
    }
    cr_assert_eq(atomic_load(&u->accepted), 1, "keep-alive answers read in pieces used %d connections",
                 atomic_load(&u->accepted));

    /* An answer framed by the end of its connection: read whole, and the next call opens a new one. */
    mz_expect_json(mz_expect_result(mz_call(gw, "w_close", NULL, NULL)), "{\"framing\": \"close\"}");
    mz_expect_json(mz_expect_result(mz_call(gw, "w_cl", NULL, NULL)), "{\"framing\": \"length\", \"n\": [1, 2, 3]}");
    cr_assert_eq(atomic_load(&u->accepted), 2, "after a close-delimited answer: %d connections",
                 atomic_load(&u->accepted));

    cr_assert_eq(mz_metric(gw, "mizan_upstream_connections_dropped_total{upstream=\"w\"}"), 0.0,
                 "no answer here breaks its framing");
    cr_assert_eq(mz_metric(gw, "mizan_upstream_calls_total{upstream=\"w\",outcome=\"ok\"}"), 10.0);
    mz_gw_stop_ok(gw);
}
