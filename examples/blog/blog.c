/*
 * blog.c - the blog example module: the functions and contexts of
 * BLOG_EXAMPLE.md, served by the Mizan gateway.
 *
 * Start here to learn how to write a module. The file reads top to bottom:
 *
 *   1. argument accessors, which read a handler's args safely;
 *   2. the handlers, one per function: read the args, do the work (through
 *      blog_store.h for anything that touches the database), answer;
 *   3. the registry tables: each function's kind, input schema, auth and
 *      invalidations, and the contexts that group functions into bundles;
 *   4. mizan_module_init(), the one exported symbol: read the config, open
 *      the store, register everything.
 *
 * Rules every handler here follows, and yours should too:
 *   - Handlers run on the gateway's worker threads, several at once. There
 *     are no mutable globals; the module's state comes from
 *     mizan_req_module_data(), and the store gives each thread its own
 *     database connection.
 *   - Args are borrowed and read-only. A result is a new value whose
 *     reference the gateway steals.
 *   - Answer once: `return answer(req, value)` (mizan_req_result, then 0) or
 *     `return mizan_req_error(...)` (which returns -1).
 *   - A client-facing message says what the caller got wrong and nothing
 *     about internals (no SQL, no paths). INTERNAL_ERROR messages are only
 *     logged; the client gets a generic one.
 *
 * The gateway validates args against each function's input schema and
 * fills in "default" values before a handler runs, so a handler normally
 * sees well-formed args. The accessors still check presence, type and
 * range and answer VALIDATION_FAILED themselves, so that a careless edit
 * to a schema can never make a handler read garbage or crash.
 *
 * Configuration: the module's "config" object in the gateway config.
 *   "db"          the SQLite file, default "blog.db". A relative path is
 *                 relative to the gateway's working directory at start-up.
 *                 The environment variable MIZAN_BLOG_DB, when set and not
 *                 empty, overrides it.
 *   "seed_posts"  integer 3..1000000, default 3: how many posts a new database
 *                 starts with. Posts 1..3 are the demo posts; the rest are
 *                 filler for benchmarks. An existing database is never
 *                 re-seeded.
 *   "durability"  "normal" (default) or "full": with "normal" a commit
 *                 survives a crash of the gateway and a power loss may take
 *                 the last commits back (SQLite's synchronous = NORMAL, the
 *                 usual setting with WAL: no disk sync per commit); "full"
 *                 waits for the disk on every commit.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "blog_store.h"
#include "mizan/mizan.h"

/* Ids and sums are int64 in the store and json_int_t in jansson. */
_Static_assert(sizeof(json_int_t) == sizeof(int64_t), "jansson must use 64-bit integers");

/** Default SQLite file, relative to the gateway's working directory. */
#define DEFAULT_DB "blog.db"

/** Environment variable that overrides the "db" config. */
#define DB_ENV "MIZAN_BLOG_DB"

/** Bounds of the "seed_posts" config. */
#define SEED_POSTS_MIN 3
#define SEED_POSTS_MAX 1000000

/* ================================================================== */
/* 1. Argument accessors                                                */
/* ================================================================== */

/*
 * Each accessor returns 0 with the value in *out, or -1 after answering
 * VALIDATION_FAILED with one detail in the shape of PROTOCOL.md section 3,
 * e.g. [{"loc": ["args", "post_id"], "msg": "field required", "type": "missing"}].
 * A handler just writes `if (arg_...(...) < 0) return -1;`.
 */

/** Answers VALIDATION_FAILED about argument name. Returns -1. */
static int bad_arg(mizan_req_t *req, const char *name, const char *type, const char *msg)
{
    /* If this pack runs out of memory, details is NULL: the code still
     * tells the caller what kind of error it is. */
    json_t *details =
        json_pack("[{s:[s,s], s:s, s:s}]", "loc", "args", name, "msg", msg, "type", type);

    mizan_req_error(req, MIZAN_VALIDATION_FAILED, "1 validation error", details);
    return -1; /* spelt out so the compiler sees no path that leaves *out unset */
}

/** JSON Schema's name for the type of v (borrowed). */
static const char *type_name(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "object";
    case JSON_ARRAY:
        return "array";
    case JSON_STRING:
        return "string";
    case JSON_INTEGER:
        return "integer";
    case JSON_REAL:
        return "number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "boolean";
    case JSON_NULL:
        return "null";
    }
    return "unknown";
}

/** Answers VALIDATION_FAILED: argument name is a v, not a want. Returns -1. */
static int wrong_type(mizan_req_t *req, const char *name, const char *want, const json_t *v)
{
    char msg[64];

    snprintf(msg, sizeof msg, "expected %s, got %s", want, type_name(v));
    return bad_arg(req, name, "type", msg);
}

/**
 * Looks argument name up: *out is borrowed from the args, NULL when the
 * argument is absent and optional. A required one that is absent answers
 * VALIDATION_FAILED.
 */
static int arg_lookup(mizan_req_t *req, const char *name, bool required, const json_t **out)
{
    *out = json_object_get(mizan_req_args(req), name);
    if (!*out && required)
        return bad_arg(req, name, "missing", "field required");
    return 0;
}

/**
 * Converts v (borrowed) to an integer. JSON Schema counts 3.0 as an
 * integer, so a validator may let one through; accept it here as well.
 */
static bool as_int(const json_t *v, json_int_t *out)
{
    if (json_is_integer(v)) {
        *out = json_integer_value(v);
        return true;
    }
    if (json_is_real(v)) {
        double d = json_real_value(v);
        /* Range first: converting an out-of-range double is undefined. */
        if (d >= -9223372036854775808.0 && d < 9223372036854775808.0 &&
            d == (double)(json_int_t)d) {
            *out = (json_int_t)d;
            return true;
        }
    }
    return false;
}

/** Checks value, read from argument name, against [min, max]. */
static int int_in_range(mizan_req_t *req, const char *name, json_int_t value, json_int_t min,
                        json_int_t max)
{
    char msg[64];

    if (value < min) {
        snprintf(msg, sizeof msg, "must be >= %" JSON_INTEGER_FORMAT, min);
        return bad_arg(req, name, "minimum", msg);
    }
    if (value > max) {
        snprintf(msg, sizeof msg, "must be <= %" JSON_INTEGER_FORMAT, max);
        return bad_arg(req, name, "maximum", msg);
    }
    return 0;
}

/** Required integer argument name, within [min, max]. */
static int arg_int(mizan_req_t *req, const char *name, json_int_t min, json_int_t max,
                   json_int_t *out)
{
    const json_t *v;

    *out = 0;
    if (arg_lookup(req, name, true, &v) < 0)
        return -1;
    if (!as_int(v, out))
        return wrong_type(req, name, "integer", v);
    return int_in_range(req, name, *out, min, max);
}

/** Optional integer argument name, within [min, max]; dflt when absent. */
static int arg_int_or(mizan_req_t *req, const char *name, json_int_t min, json_int_t max,
                      json_int_t dflt, json_int_t *out)
{
    const json_t *v;

    *out = dflt;
    if (arg_lookup(req, name, false, &v) < 0)
        return -1;
    if (!v)
        return 0;
    if (!as_int(v, out))
        return wrong_type(req, name, "integer", v);
    return int_in_range(req, name, *out, min, max);
}

/**
 * String argument name; out->ptr is borrowed from the args (valid until the
 * handler returns), NULL when the argument is absent and optional.
 */
static int arg_text_opt(mizan_req_t *req, const char *name, bool required, blog_text_t *out)
{
    const json_t *v;

    out->ptr = NULL;
    out->len = 0;
    if (arg_lookup(req, name, required, &v) < 0)
        return -1;
    if (!v)
        return 0;
    if (!json_is_string(v))
        return wrong_type(req, name, "string", v);
    out->ptr = json_string_value(v);
    out->len = json_string_length(v);
    return 0;
}

/** Required string argument name (see arg_text_opt). */
static int arg_text(mizan_req_t *req, const char *name, blog_text_t *out)
{
    return arg_text_opt(req, name, true, out);
}

/** Optional boolean argument name; dflt when absent. */
static int arg_bool_or(mizan_req_t *req, const char *name, bool dflt, bool *out)
{
    const json_t *v;

    *out = dflt;
    if (arg_lookup(req, name, false, &v) < 0)
        return -1;
    if (!v)
        return 0;
    if (!json_is_boolean(v))
        return wrong_type(req, name, "boolean", v);
    *out = json_is_true(v);
    return 0;
}

/** Required argument name of any type; *out is borrowed from the args. */
static int arg_value(mizan_req_t *req, const char *name, const json_t **out)
{
    return arg_lookup(req, name, true, out);
}

/* ================================================================== */
/* 2. Handlers                                                          */
/* ================================================================== */

/*
 * Handlers are named fn_<function> (a bare `sleep` would clash with libc).
 * Each returns 0 after answering with a result, -1 after an error.
 */

/**
 * Answers with result, stealing it. A NULL result means a jansson
 * allocation failed, which is answered as INTERNAL_ERROR (the gateway
 * would otherwise store a NULL result as JSON null).
 */
static int answer(mizan_req_t *req, json_t *result)
{
    if (!result)
        return mizan_req_error(req, MIZAN_INTERNAL_ERROR, "blog: out of memory building a result",
                               NULL);
    mizan_req_result(req, result);
    return 0;
}

/** Answers with the error a store call reported. Returns -1. */
static int store_failed(mizan_req_t *req, const blog_err_t *err)
{
    /* NOT_FOUND / FORBIDDEN messages are written for clients; INTERNAL_ERROR
     * ones (SQLite's diagnostics) only reach the gateway's log. */
    return mizan_req_error(req, err->code, err->msg, NULL);
}

/** The module state set in mizan_module_init(). */
static blog_store_t *store_of(const mizan_req_t *req)
{
    return mizan_req_module_data(req);
}

/**
 * The caller's token subject in *sub (borrowed). Functions that need one
 * are declared with auth true, so the gateway has already turned anonymous
 * callers away; the check stays so a relaxed auth cannot store NULL authors.
 */
static int caller(mizan_req_t *req, const char **sub)
{
    *sub = mizan_req_identity(req)->sub;
    if (!*sub) {
        mizan_req_error(req, MIZAN_UNAUTHORIZED, "sign in to do this", NULL);
        return -1;
    }
    return 0;
}

/* ---- Small functions: no database ---------------------------------- */

/** ping: "pong". The smallest possible function. */
static int fn_ping(mizan_req_t *req)
{
    return answer(req, json_string("pong"));
}

/** add: a + b, refusing a sum that does not fit in int64. */
static int fn_add(mizan_req_t *req)
{
    json_int_t a;
    json_int_t b;

    if (arg_int(req, "a", INT64_MIN, INT64_MAX, &a) < 0 ||
        arg_int(req, "b", INT64_MIN, INT64_MAX, &b) < 0)
        return -1;
    /* Signed overflow is undefined behaviour in C: test before adding. */
    if ((b > 0 && a > INT64_MAX - b) || (b < 0 && a < INT64_MIN - b))
        return mizan_req_error(req, MIZAN_BAD_REQUEST, "sum outside int64", NULL);
    return answer(req, json_integer(a + b));
}

/** echo: the value argument, whatever it is. */
static int fn_echo(mizan_req_t *req)
{
    const json_t *value;

    if (arg_value(req, "value", &value) < 0)
        return -1;
    /* The args belong to the gateway and die with the request, and a json_t
     * has one owner at a time: answer with our own copy, not the original. */
    return answer(req, json_deep_copy(value));
}

/**
 * Reads the ms argument (0..10000) into *ms and sleeps that long. The
 * sleep ends early when the request is cancelled (deadline passed, or the
 * gateway is stopping); the answer is then TIMEOUT.
 */
static int nap(mizan_req_t *req, json_int_t *ms)
{
    if (arg_int(req, "ms", 0, 10000, ms) < 0)
        return -1;
    if (mizan_req_sleep(req, (long)*ms) < 0)
        return mizan_req_error(req, MIZAN_TIMEOUT,
                               "the request was cancelled before the sleep ended", NULL);
    return 0;
}

/** sleep: {"slept_ms": ms} after sleeping ms milliseconds. */
static int fn_sleep(mizan_req_t *req)
{
    json_int_t ms;

    if (nap(req, &ms) < 0)
        return -1;
    return answer(req, json_pack("{s:I}", "slept_ms", ms));
}

/**
 * slow_a .. slow_d: one handler registered under four names (the gateway
 * tells it which one it is running as). The fanout context runs all four
 * at once, so its bundle takes ms, not 4 * ms.
 */
static int fn_slow(mizan_req_t *req)
{
    json_int_t ms;

    if (nap(req, &ms) < 0)
        return -1;
    return answer(req, json_pack("{s:s, s:I}", "fn", mizan_req_function(req), "slept_ms", ms));
}

/** boom: always fails, to show (and test) how an internal failure looks. */
static int fn_boom(mizan_req_t *req)
{
    /* Logged as is; the client only sees a generic message and a request id. */
    return mizan_req_error(req, MIZAN_INTERNAL_ERROR, "boom: this function always fails", NULL);
}

/** whoami: the caller as the verified token describes it. */
static int fn_whoami(mizan_req_t *req)
{
    const mizan_identity_t *id = mizan_req_identity(req);
    json_t *perms = json_array();
    const char *sub;

    if (caller(req, &sub) < 0) {
        json_decref(perms);
        return -1;
    }
    for (size_t i = 0; perms && i < id->nperms; i++) {
        if (json_array_append_new(perms, json_string(id->perms[i])) < 0) {
            json_decref(perms);
            perms = NULL;
        }
    }
    /* "o" steals perms; a NULL perms makes the pack fail, and answer()
     * turns that into INTERNAL_ERROR. */
    return answer(req, json_pack("{s:s, s:b, s:b, s:o}", "sub", sub, "staff", id->staff,
                                 "superuser", id->superuser, "perms", perms));
}

/* ---- Queries on the store ------------------------------------------ */

/** get_post: the post, or NOT_FOUND. */
static int fn_get_post(mizan_req_t *req)
{
    json_int_t post_id;
    json_t *post;
    blog_err_t err;

    if (arg_int(req, "post_id", 1, INT64_MAX, &post_id) < 0)
        return -1;
    if (blog_store_get_post(store_of(req), post_id, &post, &err) < 0)
        return store_failed(req, &err);
    return answer(req, post);
}

/**
 * list_comments: the post's comments, oldest first. A missing post is
 * NOT_FOUND rather than an empty list, like get_post and get_author, the
 * other members of the post context, and so "no comments yet" and "no such
 * post" stay distinguishable.
 */
static int fn_list_comments(mizan_req_t *req)
{
    json_int_t post_id;
    json_t *comments;
    blog_err_t err;

    if (arg_int(req, "post_id", 1, INT64_MAX, &post_id) < 0)
        return -1;
    if (blog_store_list_comments(store_of(req), post_id, &comments, &err) < 0)
        return store_failed(req, &err);
    return answer(req, comments);
}

/** get_author: {"name": the post's author, "posts": how many posts they wrote}. */
static int fn_get_author(mizan_req_t *req)
{
    json_int_t post_id;
    json_t *author;
    blog_err_t err;

    if (arg_int(req, "post_id", 1, INT64_MAX, &post_id) < 0)
        return -1;
    if (blog_store_get_author(store_of(req), post_id, &author, &err) < 0)
        return store_failed(req, &err);
    return answer(req, author);
}

/** list_posts: published posts, newest first, at most limit (1..100, default 20). */
static int fn_list_posts(mizan_req_t *req)
{
    json_int_t limit;
    json_t *posts;
    blog_err_t err;

    if (arg_int_or(req, "limit", 1, 100, 20, &limit) < 0)
        return -1;
    if (blog_store_list_posts(store_of(req), true, limit, &posts, &err) < 0)
        return store_failed(req, &err);
    return answer(req, posts);
}

/** list_drafts: every unpublished post, newest first (perm blog.view_drafts). */
static int fn_list_drafts(mizan_req_t *req)
{
    json_t *posts;
    blog_err_t err;

    if (blog_store_list_posts(store_of(req), false, 0, &posts, &err) < 0)
        return store_failed(req, &err);
    return answer(req, posts);
}

/** site_stats: {"posts": n, "comments": n} (superusers only). */
static int fn_site_stats(mizan_req_t *req)
{
    json_t *stats;
    blog_err_t err;

    if (blog_store_stats(store_of(req), &stats, &err) < 0)
        return store_failed(req, &err);
    return answer(req, stats);
}

/* ---- Mutations ------------------------------------------------------ */

/*
 * A mutation's declared "invalidates" list (section 3 below) is all the
 * gateway needs to keep caches fresh: on success it bumps those contexts,
 * scoped by the mutation's own args where it can (update_post {"post_id":5}
 * makes {"context":"post","params":{"post_id":5}} stale, not every post).
 * A handler only calls mizan_req_invalidate() for what depends on data it
 * finds at run time; update_post shows one.
 */

/** create_post: a new post by the caller; published unless told otherwise. */
static int fn_create_post(mizan_req_t *req)
{
    const char *sub;
    blog_text_t title;
    blog_text_t body;
    bool published;
    json_t *post;
    blog_err_t err;

    if (caller(req, &sub) < 0 || arg_text(req, "title", &title) < 0 ||
        arg_text(req, "body", &body) < 0 || arg_bool_or(req, "published", true, &published) < 0)
        return -1;
    if (blog_store_create_post(store_of(req), title, body, sub, published, &post, &err) < 0)
        return store_failed(req, &err);
    return answer(req, post);
}

/**
 * update_post: changes the title and/or body. Only the post's author may,
 * or a moderator (staff or superuser); anyone else gets FORBIDDEN. The
 * store checks this inside the write transaction.
 */
static int fn_update_post(mizan_req_t *req)
{
    const mizan_identity_t *id = mizan_req_identity(req);
    const char *sub;
    json_int_t post_id;
    blog_text_t title;
    blog_text_t body;
    json_t *post;
    blog_err_t err;

    if (caller(req, &sub) < 0 || arg_int(req, "post_id", 1, INT64_MAX, &post_id) < 0 ||
        arg_text_opt(req, "title", false, &title) < 0 ||
        arg_text_opt(req, "body", false, &body) < 0)
        return -1;
    if (blog_store_update_post(store_of(req), post_id, title, body, sub, id->staff || id->superuser,
                               &post, &err) < 0)
        return store_failed(req, &err);
    /* The declared targets are post and feed. A draft also shows in the
     * drafts list, which only the stored row can tell us: add that target
     * at run time. */
    if (!json_is_true(json_object_get(post, "published")) &&
        mizan_req_invalidate(req, "drafts", NULL) < 0)
        mizan_log(MIZAN_LOG_WARN, "blog: update_post could not invalidate the drafts context");
    return answer(req, post);
}

/** add_comment: a comment by the caller on the post; NOT_FOUND when it is missing. */
static int fn_add_comment(mizan_req_t *req)
{
    const char *sub;
    json_int_t post_id;
    blog_text_t text;
    json_t *comment;
    blog_err_t err;

    if (caller(req, &sub) < 0 || arg_int(req, "post_id", 1, INT64_MAX, &post_id) < 0 ||
        arg_text(req, "text", &text) < 0)
        return -1;
    if (blog_store_add_comment(store_of(req), post_id, sub, text, &comment, &err) < 0)
        return store_failed(req, &err);
    return answer(req, comment);
}

/** delete_post: removes the post and its comments (staff only). */
static int fn_delete_post(mizan_req_t *req)
{
    json_int_t post_id;
    blog_err_t err;

    if (arg_int(req, "post_id", 1, INT64_MAX, &post_id) < 0)
        return -1;
    if (blog_store_delete_post(store_of(req), post_id, &err) < 0)
        return store_failed(req, &err);
    /* The declared post target is scoped to this post_id, but the author's
     * other post pages count one post fewer now: the whole context is stale
     * (the same choice as create_post; see INVALIDATES_FEED_DRAFTS_POST). */
    if (mizan_req_invalidate(req, "post", NULL) < 0)
        mizan_log(MIZAN_LOG_WARN, "blog: delete_post could not invalidate the post context");
    return answer(req, json_pack("{s:I}", "deleted", post_id));
}

/** publish_post: makes a draft public (perm blog.publish_post). */
static int fn_publish_post(mizan_req_t *req)
{
    json_int_t post_id;
    json_t *post;
    blog_err_t err;

    if (arg_int(req, "post_id", 1, INT64_MAX, &post_id) < 0)
        return -1;
    if (blog_store_publish_post(store_of(req), post_id, &post, &err) < 0)
        return store_failed(req, &err);
    return answer(req, post);
}

/* ================================================================== */
/* 3. The registry: functions and contexts                              */
/* ================================================================== */

/*
 * Input schemas are JSON Schema (draft-07 keywords; PROTOCOL.md section 4)
 * as text. Every one ends with "additionalProperties": false, so a
 * misspelt argument is a 422 instead of being silently ignored.
 */

static const char NO_ARGS_SCHEMA[] = "{\"type\": \"object\", \"additionalProperties\": false}";

static const char POST_ID_SCHEMA[] =
    "{\"type\": \"object\","
    " \"properties\": {\"post_id\": {\"type\": \"integer\", \"minimum\": 1}},"
    " \"required\": [\"post_id\"],"
    " \"additionalProperties\": false}";

static const char ADD_SCHEMA[] =
    "{\"type\": \"object\","
    " \"properties\": {\"a\": {\"type\": \"integer\"}, \"b\": {\"type\": \"integer\"}},"
    " \"required\": [\"a\", \"b\"],"
    " \"additionalProperties\": false}";

static const char ECHO_SCHEMA[] =
    "{\"type\": \"object\","
    " \"properties\": {\"value\": {\"description\": \"any JSON value\"}},"
    " \"required\": [\"value\"],"
    " \"additionalProperties\": false}";

static const char MS_SCHEMA[] =
    "{\"type\": \"object\","
    " \"properties\": {\"ms\": {\"type\": \"integer\", \"minimum\": 0, \"maximum\": 10000}},"
    " \"required\": [\"ms\"],"
    " \"additionalProperties\": false}";

static const char LIST_POSTS_SCHEMA[] =
    "{\"type\": \"object\","
    " \"properties\": {\"limit\": {\"type\": \"integer\", \"minimum\": 1, \"maximum\": 100,"
    " \"default\": 20}},"
    " \"additionalProperties\": false}";

static const char CREATE_POST_SCHEMA[] =
    "{\"type\": \"object\","
    " \"properties\": {"
    "   \"title\": {\"type\": \"string\", \"minLength\": 1, \"maxLength\": 200},"
    "   \"body\": {\"type\": \"string\"},"
    "   \"published\": {\"type\": \"boolean\", \"default\": true}},"
    " \"required\": [\"title\", \"body\"],"
    " \"additionalProperties\": false}";

static const char UPDATE_POST_SCHEMA[] =
    "{\"type\": \"object\","
    " \"properties\": {"
    "   \"post_id\": {\"type\": \"integer\", \"minimum\": 1},"
    "   \"title\": {\"type\": \"string\", \"minLength\": 1, \"maxLength\": 200},"
    "   \"body\": {\"type\": \"string\"}},"
    " \"required\": [\"post_id\"],"
    " \"additionalProperties\": false}";

static const char ADD_COMMENT_SCHEMA[] =
    "{\"type\": \"object\","
    " \"properties\": {"
    "   \"post_id\": {\"type\": \"integer\", \"minimum\": 1},"
    "   \"text\": {\"type\": \"string\", \"minLength\": 1, \"maxLength\": 2000}},"
    " \"required\": [\"post_id\", \"text\"],"
    " \"additionalProperties\": false}";

/*
 * Output schemas: what each function returns, in the same JSON Schema
 * subset. The gateway publishes them at /api/mizan/schema/, so a generated
 * client is typed end to end (`mizand codegen`), and with
 * "validate_output": true in the gateway config (the test suite runs that
 * way) a result that strays from its schema is an INTERNAL_ERROR instead
 * of a surprise in a browser. Objects are closed ("additionalProperties":
 * false) and every member is required: the handlers always set them all.
 */

#define POST_OBJECT_SCHEMA                                                                  \
    "{\"type\": \"object\","                                                                \
    " \"properties\": {\"id\": {\"type\": \"integer\", \"minimum\": 1},"                        \
    "   \"title\": {\"type\": \"string\"}, \"body\": {\"type\": \"string\"},"                   \
    "   \"author\": {\"type\": \"string\"}, \"published\": {\"type\": \"boolean\"}},"            \
    " \"required\": [\"id\", \"title\", \"body\", \"author\", \"published\"],"                  \
    " \"additionalProperties\": false}"

#define COMMENT_OBJECT_SCHEMA                                                               \
    "{\"type\": \"object\","                                                                \
    " \"properties\": {\"id\": {\"type\": \"integer\", \"minimum\": 1},"                        \
    "   \"post_id\": {\"type\": \"integer\", \"minimum\": 1},"                                 \
    "   \"author\": {\"type\": \"string\"}, \"text\": {\"type\": \"string\"}},"                 \
    " \"required\": [\"id\", \"post_id\", \"author\", \"text\"],"                             \
    " \"additionalProperties\": false}"

static const char OUT_PONG[] = "{\"type\": \"string\", \"const\": \"pong\"}";

static const char OUT_INTEGER[] = "{\"type\": \"integer\"}";

static const char OUT_ANY[] = "{\"description\": \"the value argument, unchanged\"}";

/* boom never succeeds: no result is valid (the false schema). */
static const char OUT_NOTHING[] = "false";

static const char OUT_SLEPT[] =
    "{\"type\": \"object\","
    " \"properties\": {\"slept_ms\": {\"type\": \"integer\", \"minimum\": 0, \"maximum\": 10000}},"
    " \"required\": [\"slept_ms\"],"
    " \"additionalProperties\": false}";

static const char OUT_SLOW[] =
    "{\"type\": \"object\","
    " \"properties\": {\"fn\": {\"type\": \"string\", \"enum\": [\"slow_a\", \"slow_b\", \"slow_c\", \"slow_d\"]},"
    "   \"slept_ms\": {\"type\": \"integer\", \"minimum\": 0, \"maximum\": 10000}},"
    " \"required\": [\"fn\", \"slept_ms\"],"
    " \"additionalProperties\": false}";

static const char OUT_POST[] = POST_OBJECT_SCHEMA;

static const char OUT_POSTS[] = "{\"type\": \"array\", \"items\": " POST_OBJECT_SCHEMA "}";

static const char OUT_COMMENT[] = COMMENT_OBJECT_SCHEMA;

static const char OUT_COMMENTS[] = "{\"type\": \"array\", \"items\": " COMMENT_OBJECT_SCHEMA "}";

static const char OUT_AUTHOR[] =
    "{\"type\": \"object\","
    " \"properties\": {\"name\": {\"type\": \"string\"}, \"posts\": {\"type\": \"integer\", \"minimum\": 0}},"
    " \"required\": [\"name\", \"posts\"],"
    " \"additionalProperties\": false}";

static const char OUT_WHOAMI[] =
    "{\"type\": \"object\","
    " \"properties\": {\"sub\": {\"type\": \"string\"}, \"staff\": {\"type\": \"boolean\"},"
    "   \"superuser\": {\"type\": \"boolean\"},"
    "   \"perms\": {\"type\": \"array\", \"items\": {\"type\": \"string\"}}},"
    " \"required\": [\"sub\", \"staff\", \"superuser\", \"perms\"],"
    " \"additionalProperties\": false}";

static const char OUT_STATS[] =
    "{\"type\": \"object\","
    " \"properties\": {\"posts\": {\"type\": \"integer\", \"minimum\": 0},"
    "   \"comments\": {\"type\": \"integer\", \"minimum\": 0}},"
    " \"required\": [\"posts\", \"comments\"],"
    " \"additionalProperties\": false}";

static const char OUT_DELETED[] =
    "{\"type\": \"object\","
    " \"properties\": {\"deleted\": {\"type\": \"integer\", \"minimum\": 1}},"
    " \"required\": [\"deleted\"],"
    " \"additionalProperties\": false}";

/*
 * Auth requirements, as JSON text. NULL (or "false") lets anyone call;
 * "true" needs any valid token; "\"staff\"" and "\"superuser\"" need that
 * claim (a superuser passes every check); {"perm": "..."}, written with
 * AUTH_PERM("..."), needs that permission in the token's perms.
 */
#define AUTH_ANYONE NULL
#define AUTH_SIGNED_IN "true"
#define AUTH_STAFF "\"staff\""
#define AUTH_SUPERUSER "\"superuser\""
#define AUTH_PERM(perm) "{\"perm\": \"" perm "\"}"

/* What each mutation makes stale (NULL-terminated context names). */
/*
 * create_post changes get_author.posts on every post page of its author, so
 * it declares the whole `post` context (it has no post_id arg, so nothing
 * scopes it). Listing each of the author's posts at run time would spare
 * other authors' pages, but run-time targets only reach the gateway when
 * the handler returns: a create that commits and then passes its deadline
 * would leave the author's pages stale. A declared target is invalidated
 * even then, and a post page costs three small queries to recompute, while
 * posts are written far less often than they are read.
 */
static const char *const INVALIDATES_FEED_DRAFTS_POST[] = {"feed", "drafts", "post", NULL};
static const char *const INVALIDATES_POST_FEED[] = {"post", "feed", NULL};
static const char *const INVALIDATES_POST[] = {"post", NULL};
static const char *const INVALIDATES_POST_FEED_DRAFTS[] = {"post", "feed", "drafts", NULL};

/*
 * Every function the module serves. timeout_ms is left at 0 everywhere:
 * the gateway's configured default deadline applies.
 */
/*
 * sleep and slow_a..slow_d are open to anyone and hold a worker while they
 * sleep, so each runs at most SLOW_MAX_RUNS at a time: a flood of them is
 * refused (503 UNAVAILABLE with Retry-After) instead of taking every worker
 * from the other functions.
 */
#define SLOW_MAX_RUNS 4

static const mizan_function_def_t FUNCTIONS[] = {
    {.name = "ping", .kind = MIZAN_QUERY, .handler = fn_ping,
     .input_schema = NO_ARGS_SCHEMA, .auth = AUTH_ANYONE,
     .output_schema = OUT_PONG,
     .description = "Answers \"pong\"; a liveness check for the function path.",
     .nonblocking = true},
    {.name = "add", .kind = MIZAN_QUERY, .handler = fn_add,
     .input_schema = ADD_SCHEMA, .auth = AUTH_ANYONE,
     .output_schema = OUT_INTEGER,
     .description = "Adds two integers; a sum outside int64 is BAD_REQUEST.",
     .nonblocking = true},
    {.name = "echo", .kind = MIZAN_QUERY, .handler = fn_echo,
     .input_schema = ECHO_SCHEMA, .auth = AUTH_ANYONE,
     .output_schema = OUT_ANY,
     .description = "Returns its value argument unchanged.",
     .nonblocking = true},
    {.name = "sleep", .kind = MIZAN_QUERY, .handler = fn_sleep,
     .input_schema = MS_SCHEMA, .auth = AUTH_ANYONE,
     .output_schema = OUT_SLEPT,
     .description = "Sleeps ms milliseconds, then returns {\"slept_ms\": ms}.",
     .max_concurrency = SLOW_MAX_RUNS},
    {.name = "slow_a", .kind = MIZAN_QUERY, .handler = fn_slow,
     .input_schema = MS_SCHEMA, .auth = AUTH_ANYONE,
     .output_schema = OUT_SLOW,
     .description = "Sleeps ms milliseconds; one of the four fanout functions.",
     .max_concurrency = SLOW_MAX_RUNS},
    {.name = "slow_b", .kind = MIZAN_QUERY, .handler = fn_slow,
     .input_schema = MS_SCHEMA, .auth = AUTH_ANYONE,
     .output_schema = OUT_SLOW,
     .description = "Sleeps ms milliseconds; one of the four fanout functions.",
     .max_concurrency = SLOW_MAX_RUNS},
    {.name = "slow_c", .kind = MIZAN_QUERY, .handler = fn_slow,
     .input_schema = MS_SCHEMA, .auth = AUTH_ANYONE,
     .output_schema = OUT_SLOW,
     .description = "Sleeps ms milliseconds; one of the four fanout functions.",
     .max_concurrency = SLOW_MAX_RUNS},
    {.name = "slow_d", .kind = MIZAN_QUERY, .handler = fn_slow,
     .input_schema = MS_SCHEMA, .auth = AUTH_ANYONE,
     .output_schema = OUT_SLOW,
     .description = "Sleeps ms milliseconds; one of the four fanout functions.",
     .max_concurrency = SLOW_MAX_RUNS},
    {.name = "boom", .kind = MIZAN_QUERY, .handler = fn_boom,
     .input_schema = NO_ARGS_SCHEMA, .auth = AUTH_ANYONE,
     .output_schema = OUT_NOTHING,
     .description = "Always fails with INTERNAL_ERROR.",
     .nonblocking = true},
    {.name = "get_post", .kind = MIZAN_QUERY, .handler = fn_get_post,
     .input_schema = POST_ID_SCHEMA, .auth = AUTH_ANYONE,
     .output_schema = OUT_POST,
     .description = "One post by id."},
    {.name = "list_comments", .kind = MIZAN_QUERY, .handler = fn_list_comments,
     .input_schema = POST_ID_SCHEMA, .auth = AUTH_ANYONE,
     .output_schema = OUT_COMMENTS,
     .description = "The comments of a post, oldest first."},
    {.name = "get_author", .kind = MIZAN_QUERY, .handler = fn_get_author,
     .input_schema = POST_ID_SCHEMA, .auth = AUTH_ANYONE,
     .output_schema = OUT_AUTHOR,
     .description = "A post's author and how many posts they have written."},
    {.name = "list_posts", .kind = MIZAN_QUERY, .handler = fn_list_posts,
     .input_schema = LIST_POSTS_SCHEMA, .auth = AUTH_ANYONE,
     .output_schema = OUT_POSTS,
     .description = "Published posts, newest first."},
    {.name = "whoami", .kind = MIZAN_QUERY, .handler = fn_whoami,
     .input_schema = NO_ARGS_SCHEMA, .auth = AUTH_SIGNED_IN,
     .output_schema = OUT_WHOAMI,
     .description = "The caller's subject, staff and superuser flags and perms."},
    {.name = "list_drafts", .kind = MIZAN_QUERY, .handler = fn_list_drafts,
     .input_schema = NO_ARGS_SCHEMA, .auth = AUTH_PERM("blog.view_drafts"),
     .output_schema = OUT_POSTS,
     .description = "Unpublished posts, newest first."},
    {.name = "site_stats", .kind = MIZAN_QUERY, .handler = fn_site_stats,
     .input_schema = NO_ARGS_SCHEMA, .auth = AUTH_SUPERUSER,
     .output_schema = OUT_STATS,
     .description = "How many posts and comments the blog holds."},
    {.name = "create_post", .kind = MIZAN_MUTATION, .handler = fn_create_post,
     .input_schema = CREATE_POST_SCHEMA, .auth = AUTH_SIGNED_IN,
     .output_schema = OUT_POST,
     .invalidates = INVALIDATES_FEED_DRAFTS_POST,
     .description = "Writes a new post as the caller."},
    {.name = "update_post", .kind = MIZAN_MUTATION, .handler = fn_update_post,
     .input_schema = UPDATE_POST_SCHEMA, .auth = AUTH_SIGNED_IN,
     .output_schema = OUT_POST,
     .invalidates = INVALIDATES_POST_FEED,
     .description = "Edits a post's title or body; its author, staff or a superuser only."},
    {.name = "add_comment", .kind = MIZAN_MUTATION, .handler = fn_add_comment,
     .input_schema = ADD_COMMENT_SCHEMA, .auth = AUTH_SIGNED_IN,
     .output_schema = OUT_COMMENT,
     .invalidates = INVALIDATES_POST,
     .description = "Comments on a post as the caller."},
    {.name = "delete_post", .kind = MIZAN_MUTATION, .handler = fn_delete_post,
     .input_schema = POST_ID_SCHEMA, .auth = AUTH_STAFF,
     .output_schema = OUT_DELETED,
     .invalidates = INVALIDATES_POST_FEED_DRAFTS,
     .description = "Deletes a post and its comments."},
    {.name = "publish_post", .kind = MIZAN_MUTATION, .handler = fn_publish_post,
     .input_schema = POST_ID_SCHEMA, .auth = AUTH_PERM("blog.publish_post"),
     .output_schema = OUT_POST,
     .invalidates = INVALIDATES_POST_FEED_DRAFTS,
     .description = "Publishes a draft."},
};

/*
 * Contexts group functions that a page needs together. One GET evaluates
 * them all concurrently and answers one bundle, cached for ttl seconds per
 * scope: public (shared by everyone), user (per token sub) or perms (per
 * permission set). A context's params are passed to each member function
 * that declares them.
 */

static const char POST_PARAMS_SCHEMA[] =
    "{\"type\": \"object\","
    " \"properties\": {\"post_id\": {\"type\": \"integer\", \"minimum\": 1}},"
    " \"required\": [\"post_id\"],"
    " \"additionalProperties\": false}";

static const char FANOUT_PARAMS_SCHEMA[] =
    "{\"type\": \"object\","
    " \"properties\": {\"ms\": {\"type\": \"integer\", \"minimum\": 0, \"maximum\": 10000}},"
    " \"required\": [\"ms\"],"
    " \"additionalProperties\": false}";

static const char *const POST_FUNCTIONS[] = {"get_post", "list_comments", "get_author", NULL};
static const char *const FEED_FUNCTIONS[] = {"list_posts", NULL};
static const char *const ME_FUNCTIONS[] = {"whoami", NULL};
static const char *const DRAFTS_FUNCTIONS[] = {"list_drafts", NULL};
static const char *const FANOUT_FUNCTIONS[] = {"slow_a", "slow_b", "slow_c", "slow_d", NULL};

static const mizan_context_def_t CONTEXTS[] = {
    {.name = "post", .params_schema = POST_PARAMS_SCHEMA, .functions = POST_FUNCTIONS,
     .ttl = 60, .scope = MIZAN_SCOPE_PUBLIC,
     .description = "A post page: the post, its comments, its author."},
    {.name = "feed", .params_schema = NULL, .functions = FEED_FUNCTIONS,
     .ttl = 30, .scope = MIZAN_SCOPE_PUBLIC,
     .description = "The front page: the latest published posts."},
    {.name = "me", .params_schema = NULL, .functions = ME_FUNCTIONS,
     .ttl = 60, .scope = MIZAN_SCOPE_USER,
     .description = "The signed-in caller, cached per user."},
    {.name = "drafts", .params_schema = NULL, .functions = DRAFTS_FUNCTIONS,
     .ttl = 60, .scope = MIZAN_SCOPE_PERMS,
     .description = "Unpublished posts, cached per permission set."},
    {.name = "fanout", .params_schema = FANOUT_PARAMS_SCHEMA, .functions = FANOUT_FUNCTIONS,
     .ttl = 0, .scope = MIZAN_SCOPE_PUBLIC,
     .description = "Four slow functions run side by side; never cached."},
};

/* ================================================================== */
/* 4. Start-up                                                          */
/* ================================================================== */

/**
 * Reads the module's config (borrowed from the gateway) into *db (borrowed
 * from the config or the environment; valid during mizan_module_init) and
 * *seed_posts. Unknown keys are refused so that a typo does not pass
 * silently. Returns 0, or -1 after mizan_module_fail().
 */
static int read_config(mizan_module_t *m, const char **db, long *seed_posts, bool *full_sync)
{
    const json_t *config = mizan_module_config(m);
    const char *env = getenv(DB_ENV); /* start-up is single-threaded */
    json_t *keys = (json_t *)config; /* jansson's iterator wants non-const; nothing is modified */
    const json_t *v;
    json_int_t n;
    const char *key;
    void *it;

    *db = DEFAULT_DB;
    *seed_posts = SEED_POSTS_MIN;
    *full_sync = false;
    if (!json_is_object(config))
        return mizan_module_fail(m, "the blog module's \"config\" must be an object");
    for (it = json_object_iter(keys); it; it = json_object_iter_next(keys, it)) {
        key = json_object_iter_key(it);
        if (strcmp(key, "db") != 0 && strcmp(key, "seed_posts") != 0 && strcmp(key, "durability") != 0)
            return mizan_module_fail(
                m, "unknown config key \"%s\" (known: \"db\", \"seed_posts\", \"durability\")", key);
    }
    if ((v = json_object_get(config, "db"))) {
        if (!json_is_string(v) || json_string_length(v) == 0 ||
            strlen(json_string_value(v)) != json_string_length(v))
            return mizan_module_fail(m, "config \"db\" must be a non-empty file path");
        *db = json_string_value(v);
    }
    if (env && *env)
        *db = env;
    if ((v = json_object_get(config, "seed_posts"))) {
        if (!as_int(v, &n) || n < SEED_POSTS_MIN || n > SEED_POSTS_MAX)
            return mizan_module_fail(m, "config \"seed_posts\" must be an integer from %d to %d",
                                     SEED_POSTS_MIN, SEED_POSTS_MAX);
        *seed_posts = (long)n;
    }
    if ((v = json_object_get(config, "durability"))) {
        if (!json_is_string(v) ||
            (strcmp(json_string_value(v), "normal") != 0 && strcmp(json_string_value(v), "full") != 0))
            return mizan_module_fail(m, "config \"durability\" must be \"normal\" or \"full\"");
        *full_sync = strcmp(json_string_value(v), "full") == 0;
    }
    return 0;
}

/** mizan_module_set_data() free function: runs after every worker stopped. */
static void free_store(void *data)
{
    blog_store_close(data);
}

/**
 * The module's entry point, called once by the gateway at start-up, on the
 * main thread, before any worker runs. Returns 0, or -1 when the module
 * cannot start (the gateway then exits with the recorded reason).
 */
MIZAN_EXPORT int mizan_module_init(mizan_module_t *m);

/* The ABI this module is built for, checked by the gateway before init. */
MIZAN_MODULE_ABI;

MIZAN_EXPORT int mizan_module_init(mizan_module_t *m)
{
    const char *db;
    long seed_posts;
    bool full_sync;
    blog_store_t *store;
    blog_err_t err;

    if (mizan_module_abi(m) != MIZAN_ABI_VERSION)
        return mizan_module_fail(m, "built for module ABI %d but the gateway speaks %d; rebuild it",
                                 MIZAN_ABI_VERSION, mizan_module_abi(m));
    if (read_config(m, &db, &seed_posts, &full_sync) < 0)
        return -1;
    if (blog_store_open(db, seed_posts, full_sync, &store, &err) < 0)
        return mizan_module_fail(m, "%s", err.msg);
    /* From here the gateway owns the store and frees it at shutdown. */
    mizan_module_set_data(m, store, free_store);

    /* The definitions are copied, so static tables (or stack ones) do. A
     * failed registration has recorded its reason already. */
    for (size_t i = 0; i < sizeof FUNCTIONS / sizeof FUNCTIONS[0]; i++)
        if (mizan_module_add_function(m, &FUNCTIONS[i]) < 0)
            return -1;
    for (size_t i = 0; i < sizeof CONTEXTS / sizeof CONTEXTS[0]; i++)
        if (mizan_module_add_context(m, &CONTEXTS[i]) < 0)
            return -1;
    mizan_log(MIZAN_LOG_INFO, "blog: serving %s", blog_store_path(store));
    return 0;
}
