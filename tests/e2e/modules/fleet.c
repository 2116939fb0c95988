/*
 * fleet.c - a test-only function module for stale-while-revalidate and the
 * fleet-wide fill lock (docs/cache.md, "Stale-while-revalidate" and "One
 * computation per bundle across the fleet").
 *
 * State is one counter in a file (module config "dir"), so that several
 * gateway processes started on the same directory share it, like instances
 * sharing one database. Every context shows the counter; the mutation adds
 * one to it. A bundle served after the mutation with the old counter is a
 * stale bundle.
 *
 * Functions (all open to anyone):
 *   fl_read       query     returns {"n": counter}, after sleeping module
 *                           config "read_ms" (default 0)
 *   fl_read_slow  query     the same after sleeping "slow_ms" (default
 *                           1000); deadline "slow_timeout_ms" (default 2500)
 *   fl_bump       mutation  counter += 1; invalidates fl_item
 * Contexts (public, param {id: integer, required}):
 *   fl_item   fl_read,      TTL 1 s, stale_s 60
 *   fl_slow   fl_read_slow, TTL 60 s
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mizan/mizan.h>

#include "counter_file.h"

MIZAN_MODULE_ABI;

typedef struct fl_state {
    char path[4096]; /* the counter file */
    long read_ms, slow_ms;
} fl_state_t;

/* Adds delta (0: none) to the counter and replies {"n": the new value}. */
static int reply_counter(mizan_req_t *req, long long delta)
{
    const fl_state_t *st = mizan_req_module_data(req);
    long long v;
    if (counter_file_add(st->path, delta, &v) < 0)
        return mizan_req_error(req, MIZAN_INTERNAL_ERROR,
                               delta != 0 ? "cannot write the counter" : "cannot read the counter", NULL);
    mizan_req_result(req, json_pack("{s:I}", "n", (json_int_t)v));
    return 0;
}

static int read_after(mizan_req_t *req, long ms)
{
    if (ms > 0)
        mizan_req_sleep(req, ms);
    return reply_counter(req, 0);
}

static int fn_read(mizan_req_t *req)
{
    return read_after(req, ((const fl_state_t *)mizan_req_module_data(req))->read_ms);
}

static int fn_read_slow(mizan_req_t *req)
{
    return read_after(req, ((const fl_state_t *)mizan_req_module_data(req))->slow_ms);
}

static int fn_bump(mizan_req_t *req)
{
    return reply_counter(req, 1);
}

static void free_state(void *data)
{
    free(data);
}

static long config_ms(mizan_module_t *m, const char *name, long dflt)
{
    const json_t *v = json_object_get(mizan_module_config(m), name);
    return json_is_integer(v) ? (long)json_integer_value(v) : dflt;
}

#define FNS(...) ((const char *const[]){__VA_ARGS__, NULL})

MIZAN_EXPORT int mizan_module_init(mizan_module_t *m);

MIZAN_EXPORT int mizan_module_init(mizan_module_t *m)
{
    fl_state_t *st = calloc(1, sizeof(*st));
    if (st == NULL)
        return mizan_module_fail(m, "out of memory");
    if (counter_file_path(m, "fl-counter", st->path, sizeof(st->path)) < 0) {
        free(st);
        return -1;
    }
    st->read_ms = config_ms(m, "read_ms", 0);
    st->slow_ms = config_ms(m, "slow_ms", 1000);
    int slow_timeout_ms = (int)config_ms(m, "slow_timeout_ms", 2500);
    mizan_module_set_data(m, st, free_state);

    static const char id_schema[] = "{\"type\": \"object\", \"required\": [\"id\"],"
                                    " \"properties\": {\"id\": {\"type\": \"integer\"}}}";
    static const char params[] = "{\"type\": \"object\", \"additionalProperties\": false, \"required\": [\"id\"],"
                                 " \"properties\": {\"id\": {\"type\": \"integer\"}}}";
    const mizan_function_def_t fns[] = {
        {.name = "fl_read", .kind = MIZAN_QUERY, .handler = fn_read, .input_schema = id_schema},
        {.name = "fl_read_slow", .kind = MIZAN_QUERY, .handler = fn_read_slow, .input_schema = id_schema,
         .timeout_ms = slow_timeout_ms},
        {.name = "fl_bump", .kind = MIZAN_MUTATION, .handler = fn_bump, .input_schema = id_schema,
         .invalidates = FNS("fl_item")},
    };
    const mizan_context_def_t ctxs[] = {
        {.name = "fl_item", .functions = FNS("fl_read"), .ttl = 1, .stale_s = 60, .scope = MIZAN_SCOPE_PUBLIC,
         .params_schema = params},
        {.name = "fl_slow", .functions = FNS("fl_read_slow"), .ttl = 60, .scope = MIZAN_SCOPE_PUBLIC,
         .params_schema = params},
    };
    for (size_t i = 0; i < sizeof(fns) / sizeof(fns[0]); i++)
        if (mizan_module_add_function(m, &fns[i]) < 0)
            return -1;
    for (size_t i = 0; i < sizeof(ctxs) / sizeof(ctxs[0]); i++)
        if (mizan_module_add_context(m, &ctxs[i]) < 0)
            return -1;
    return 0;
}
