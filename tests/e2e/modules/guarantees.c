/*
 * guarantees.c - a test-only function module for the cache guarantees of
 * PROTOCOL.md section 5 (rev 2): mutations that commit and then fail or
 * pass their deadline, and contexts whose params cannot always be scoped
 * (an optional param; a param typed ["integer","string"]).
 *
 * State is one counter in a file (module config "dir"), so that several
 * gateway processes started on the same directory share it, like instances
 * sharing one database. Every context shows the counter; every mutation
 * adds one to it before doing anything else. A bundle served after a
 * mutation with the old counter is therefore a stale bundle.
 *
 * Functions (all open to anyone):
 *   gt_read        query     returns {"n": counter}
 *   gt_bump        mutation  counter += 1; invalidates gt_item, gt_opt, gt_multi
 *   gt_bump_slow   mutation  counter += 1, then sleeps args.ms past its
 *                            deadline (module config "slow_timeout_ms",
 *                            default 300 ms); invalidates gt_item
 *   gt_bump_fail   mutation  counter += 1, then fails (INTERNAL_ERROR);
 *                            invalidates gt_item
 * Contexts (public, TTL 60 s, one function: gt_read):
 *   gt_item   {id: integer, required}
 *   gt_opt    {id: integer, required; lang: string, optional}
 *   gt_multi  {key: ["integer","string"], required}
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mizan/mizan.h>

#include "counter_file.h"

typedef struct gt_state {
    char path[4096]; /* the counter file */
} gt_state_t;

static int bump(mizan_req_t *req)
{
    const gt_state_t *st = mizan_req_module_data(req);
    long long v;
    if (counter_file_add(st->path, 1, &v) < 0)
        return mizan_req_error(req, MIZAN_INTERNAL_ERROR, "cannot write the counter", NULL);
    return 0;
}

static int fn_read(mizan_req_t *req)
{
    const gt_state_t *st = mizan_req_module_data(req);
    long long v;
    if (counter_file_add(st->path, 0, &v) < 0)
        return mizan_req_error(req, MIZAN_INTERNAL_ERROR, "cannot read the counter", NULL);
    mizan_req_result(req, json_pack("{s:I}", "n", (json_int_t)v));
    return 0;
}

static int fn_bump(mizan_req_t *req)
{
    if (bump(req) < 0)
        return -1;
    mizan_req_result(req, json_pack("{s:b}", "bumped", 1));
    return 0;
}

static int fn_bump_slow(mizan_req_t *req)
{
    if (bump(req) < 0)
        return -1;
    /* Committed; now outlive the deadline (the sleep ends early once the
     * gateway cancels the call, long after its 504 went out). */
    json_int_t ms = json_integer_value(json_object_get(mizan_req_args(req), "ms"));
    mizan_req_sleep(req, (long)ms);
    mizan_req_result(req, json_pack("{s:b}", "bumped", 1));
    return 0;
}

static int fn_bump_fail(mizan_req_t *req)
{
    if (bump(req) < 0)
        return -1;
    return mizan_req_error(req, MIZAN_INTERNAL_ERROR, "failed after committing", NULL);
}

static void free_state(void *data)
{
    free(data);
}

#define FNS(...) ((const char *const[]){__VA_ARGS__, NULL})

MIZAN_EXPORT int mizan_module_init(mizan_module_t *m);

MIZAN_EXPORT int mizan_module_init(mizan_module_t *m)
{
    gt_state_t *st = calloc(1, sizeof(*st));
    if (st == NULL)
        return mizan_module_fail(m, "out of memory");
    if (counter_file_path(m, "gt-counter", st->path, sizeof(st->path)) < 0) {
        free(st);
        return -1;
    }
    const json_t *slow_ms = json_object_get(mizan_module_config(m), "slow_timeout_ms");
    int slow_timeout_ms = json_is_integer(slow_ms) ? (int)json_integer_value(slow_ms) : 300;
    mizan_module_set_data(m, st, free_state);

    static const char open_schema[] = "{\"type\": \"object\"}";
    static const char slow_schema[] =
        "{\"type\": \"object\", \"required\": [\"id\", \"ms\"],"
        " \"properties\": {\"id\": {\"type\": \"integer\"}, \"ms\": {\"type\": \"integer\", \"minimum\": 0}}}";
    const mizan_function_def_t fns[] = {
        {.name = "gt_read", .kind = MIZAN_QUERY, .handler = fn_read, .input_schema = open_schema},
        {.name = "gt_bump", .kind = MIZAN_MUTATION, .handler = fn_bump, .input_schema = open_schema,
         .invalidates = FNS("gt_item", "gt_opt", "gt_multi")},
        {.name = "gt_bump_slow", .kind = MIZAN_MUTATION, .handler = fn_bump_slow, .input_schema = slow_schema,
         .invalidates = FNS("gt_item"), .timeout_ms = slow_timeout_ms},
        {.name = "gt_bump_fail", .kind = MIZAN_MUTATION, .handler = fn_bump_fail, .input_schema = open_schema,
         .invalidates = FNS("gt_item")},
    };
    const mizan_context_def_t ctxs[] = {
        {.name = "gt_item", .functions = FNS("gt_read"), .ttl = 60, .scope = MIZAN_SCOPE_PUBLIC,
         .params_schema = "{\"type\": \"object\", \"additionalProperties\": false, \"required\": [\"id\"],"
                          " \"properties\": {\"id\": {\"type\": \"integer\"}}}"},
        {.name = "gt_opt", .functions = FNS("gt_read"), .ttl = 60, .scope = MIZAN_SCOPE_PUBLIC,
         .params_schema = "{\"type\": \"object\", \"additionalProperties\": false, \"required\": [\"id\"],"
                          " \"properties\": {\"id\": {\"type\": \"integer\"}, \"lang\": {\"type\": \"string\"}}}"},
        {.name = "gt_multi", .functions = FNS("gt_read"), .ttl = 60, .scope = MIZAN_SCOPE_PUBLIC,
         .params_schema = "{\"type\": \"object\", \"additionalProperties\": false, \"required\": [\"key\"],"
                          " \"properties\": {\"key\": {\"type\": [\"integer\", \"string\"]}}}"},
    };
    for (size_t i = 0; i < sizeof(fns) / sizeof(fns[0]); i++)
        if (mizan_module_add_function(m, &fns[i]) < 0)
            return -1;
    for (size_t i = 0; i < sizeof(ctxs) / sizeof(ctxs[0]); i++)
        if (mizan_module_add_context(m, &ctxs[i]) < 0)
            return -1;
    return 0;
}
