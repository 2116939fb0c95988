/*
 * blog_store.h - the blog example's data layer: posts and comments in one
 * SQLite file.
 *
 * blog.c (the functions the gateway serves) talks to SQLite only through
 * this interface, so the handlers read as "validate, call the store, answer"
 * and all the database plumbing lives in blog_store.c:
 *
 *   - one SQLite connection per worker thread, opened on first use and
 *     closed when the thread exits or the store is closed;
 *   - WAL journal, a 5 s busy timeout and foreign keys on every connection,
 *     so several gateway processes can share the file;
 *   - every write in a BEGIN IMMEDIATE transaction that also re-reads what
 *     it wrote, so a caller sees the row as stored;
 *   - the schema created and the demo data seeded exactly once, even when
 *     several processes start on the same file at the same moment.
 *
 * Results come back as new jansson values in the wire shapes of
 * BLOG_EXAMPLE.md: a post is {"id","title","body","author","published"},
 * a comment {"id","post_id","author","text"}.
 *
 * Names: the gateway's own API owns the mizan_ prefix, so the module's
 * cross-file symbols use blog_store_ / blog_ instead. They are not exported
 * from blog.so (the module is built with hidden visibility; only
 * mizan_module_init is).
 */
#ifndef BLOG_STORE_H
#define BLOG_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "mizan/mizan.h"

/**
 * Why a store call failed. Every store function returns 0, or -1 after
 * filling one of these; filling it never allocates.
 *
 * code is the protocol error the handler should answer with: NOT_FOUND and
 * FORBIDDEN carry a message fit for clients ("post 7 not found");
 * INTERNAL_ERROR carries the SQLite diagnostic, which the gateway only logs.
 */
typedef struct blog_err {
    mizan_code_t code; /**< protocol code to answer with */
    char msg[256];     /**< NUL-terminated reason */
} blog_err_t;

/**
 * A piece of UTF-8 text with its length, as jansson hands it out (a JSON
 * string may contain "\u0000", so a length is kept rather than relying on
 * the terminator). ptr is NULL for "absent" where a function allows it.
 */
typedef struct blog_text {
    const char *ptr; /**< text, borrowed; NULL: absent */
    size_t len;      /**< length in bytes */
} blog_text_t;

/** The store: database path and the per-thread connections. Opaque. */
typedef struct blog_store blog_store_t;

/**
 * Opens (creating when missing) the database at path, switches it to WAL,
 * creates the schema and, the first time, seeds posts 1..3 by alice (post 1
 * with two comments, post 2 with one) plus posts 4..seed_posts when
 * seed_posts > 3. A relative path is resolved against the current working
 * directory now, once; the store keeps the absolute path. full_sync makes
 * every commit wait for the disk (PRAGMA synchronous = FULL); otherwise a
 * commit is durable across a crash of the process, and a power loss may
 * take the last commits back (NORMAL, the usual setting with WAL).
 *
 * Call once at module start-up, before any worker thread runs. Returns 0
 * with *out set (free with blog_store_close), or -1 with err filled.
 */
int blog_store_open(const char *path, long seed_posts, bool full_sync, blog_store_t **out, blog_err_t *err);

/**
 * Closes every connection the store opened, on whatever thread, and frees
 * the store. Call only when no thread uses the store any more. NULL is a
 * no-op.
 */
void blog_store_close(blog_store_t *store);

/** The absolute database path (owned by the store). */
const char *blog_store_path(const blog_store_t *store);

/*
 * Reads. Each function below is thread-safe: it runs on the calling
 * thread's own connection. On success *out is a new reference the caller
 * owns.
 */

/** The post, or NOT_FOUND. */
int blog_store_get_post(blog_store_t *store, int64_t post_id, json_t **out, blog_err_t *err);

/**
 * Posts with the given published flag, newest (highest id) first, at most
 * limit of them (limit <= 0: all). *out is an array, possibly empty.
 */
int blog_store_list_posts(blog_store_t *store, bool published, int64_t limit, json_t **out,
                          blog_err_t *err);

/** Comments of the post, oldest first (an array); NOT_FOUND when the post is missing. */
int blog_store_list_comments(blog_store_t *store, int64_t post_id, json_t **out, blog_err_t *err);

/**
 * {"name": author, "posts": n}: the post's author and how many posts (drafts
 * included) that author has; NOT_FOUND when the post is missing.
 */
int blog_store_get_author(blog_store_t *store, int64_t post_id, json_t **out, blog_err_t *err);

/** {"posts": n, "comments": n} over the whole store. */
int blog_store_stats(blog_store_t *store, json_t **out, blog_err_t *err);

/*
 * Writes. Each runs in its own BEGIN IMMEDIATE transaction and hands back
 * the affected row as re-read inside that transaction (a new reference).
 */

/** Inserts a post by author (a token sub) and returns it. title/body must be present. */
int blog_store_create_post(blog_store_t *store, blog_text_t title, blog_text_t body,
                           const char *author, bool published, json_t **out, blog_err_t *err);

/**
 * Changes a post's title and/or body (an absent one, ptr NULL, is kept).
 * The editor must be the post's author unless moderator is true (staff or
 * superuser); otherwise FORBIDDEN and nothing changes. NOT_FOUND when the
 * post is missing.
 */
int blog_store_update_post(blog_store_t *store, int64_t post_id, blog_text_t title,
                           blog_text_t body, const char *editor, bool moderator, json_t **out,
                           blog_err_t *err);

/** Adds a comment by author to the post and returns it; NOT_FOUND when the post is missing. */
int blog_store_add_comment(blog_store_t *store, int64_t post_id, const char *author,
                           blog_text_t text, json_t **out, blog_err_t *err);

/** Deletes the post and its comments; NOT_FOUND when the post is missing. */
int blog_store_delete_post(blog_store_t *store, int64_t post_id, blog_err_t *err);

/** Marks the post published (idempotent) and returns it; NOT_FOUND when missing. */
int blog_store_publish_post(blog_store_t *store, int64_t post_id, json_t **out, blog_err_t *err);

#endif /* BLOG_STORE_H */
