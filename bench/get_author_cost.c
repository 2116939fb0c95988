/*
 * get_author_cost.c - the cost of one get_author call in the blog store
 * (examples/blog/blog_store.c), the SQLite part of every ctx_post_miss
 * fetch: a 1000-post store (posts by one author, as the bench seeds it),
 * get_author called N times over post ids 1..1000.
 *
 * Counted in instructions (valgrind's callgrind), which is repeatable on
 * a shared, noisy machine where wall time is not. From the repository root:
 *
 *   cc -O2 -std=c17 -D_GNU_SOURCE -Iinclude -Iexamples/blog -o /tmp/gac \
 *      bench/get_author_cost.c examples/blog/blog_store.c -lsqlite3 -ljansson -lpthread
 *   rm -f /tmp/gac.db*; /tmp/gac /tmp/gac.db 0              # create and seed the file once
 *   valgrind --tool=callgrind --callgrind-out-file=/dev/null /tmp/gac /tmp/gac.db 0
 *   valgrind --tool=callgrind --callgrind-out-file=/dev/null /tmp/gac /tmp/gac.db 2000
 *
 * Instructions per call = (Collected of the second run - Collected of the
 * first) / 2000. bench/README.md lists the figures measured.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include "blog_store.h"

/* The gateway provides mizan_log to the module; this program stands in for it. */

void mizan_log(mizan_log_level_t level, const char *fmt, ...);
void mizan_log(mizan_log_level_t level, const char *fmt, ...)
{
    (void)level;
    (void)fmt;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s DB_FILE [CALLS]\n", argv[0]);
        return 2;
    }
    long n = argc > 2 ? atol(argv[2]) : 1000;
    blog_store_t *s;
    blog_err_t err;
    if (blog_store_open(argv[1], 1000, false, &s, &err) < 0) {
        fprintf(stderr, "open: %s\n", err.msg);
        return 1;
    }
    json_t *warm;
    if (blog_store_get_author(s, 1, &warm, &err) < 0)
        return 1;
    json_decref(warm);
    for (long i = 0; i < n; i++) {
        json_t *out;
        if (blog_store_get_author(s, 1 + i % 1000, &out, &err) < 0) {
            fprintf(stderr, "get_author: %s\n", err.msg);
            return 1;
        }
        if (i == 0) { /* shows what is being measured: {"name":"alice","posts":1000} */
            char *t = json_dumps(out, JSON_COMPACT);
            fprintf(stderr, "%s\n", t);
            free(t);
        }
        json_decref(out);
    }
    blog_store_close(s);
    return 0;
}
