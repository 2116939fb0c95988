/*
 * blog_store.c - posts and comments in SQLite, for the blog example module.
 *
 * See blog_store.h for the interface. This file is the only one that speaks
 * SQL; it answers in jansson values shaped for the wire.
 *
 * DESIGN: threads and connections.
 *   The gateway runs handlers on many worker threads at once. A SQLite
 *   connection must not be used by two threads at the same time, so each
 *   thread gets its own: conn_get() opens it on the thread's first call and
 *   parks it in a pthread key. When the thread exits, the key's destructor
 *   (conn_release) closes it. Each connection also prepares its statements
 *   once, on first use, and keeps them (prepared statements belong to a
 *   connection, so they are per thread too).
 *
 *   Every open connection is also on a list in the store, under a mutex.
 *   The list is what lets blog_store_close() close the connections of
 *   threads that are still alive when the module is unloaded; it first
 *   deletes the pthread key, so no destructor can run into a freed store
 *   (or into unloaded code) afterwards. The mutex is taken only when a
 *   connection opens (a thread's first request) or closes (its exit), so
 *   requests never contend on it.
 *
 * DESIGN: several processes on one file.
 *   The journal is WAL: readers never block the writer and the writer never
 *   blocks readers, across processes. Writers still take turns: every write
 *   starts with BEGIN IMMEDIATE, which takes the write lock up front (a
 *   deferred transaction that reads first and then writes can fail with
 *   SQLITE_BUSY halfway through, since SQLite cannot upgrade its snapshot).
 *   A connection waits up to BUSY_TIMEOUT_MS for the lock before giving up
 *   with SQLITE_BUSY, which the handler answers as INTERNAL_ERROR.
 *   Reads are single statements, so each sees one consistent snapshot
 *   without an explicit transaction.
 *
 *   Start-up creates the schema and seeds the demo data inside one
 *   BEGIN IMMEDIATE transaction, and seeds only when the blog_meta table has
 *   no "seeded" row: of several processes starting together on one file,
 *   exactly one seeds and the others see its commit.
 */
#include "blog_store.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sqlite3.h>

/** How long a request waits for another writer before failing. */
#define BUSY_TIMEOUT_MS 5000

/**
 * How long start-up waits for another process that is seeding the same
 * file (seeding thousands of benchmark posts can take a few seconds).
 */
#define INIT_BUSY_TIMEOUT_MS 60000

/** Pause between attempts to switch a busy file to WAL at start-up. */
#define WAL_RETRY_MS 20

/* ------------------------------------------------------------------ */
/* Schema and statements                                                */
/* ------------------------------------------------------------------ */

/*
 * AUTOINCREMENT keeps ids from ever being reused after a delete: a client
 * (or a cache) holding "post 7" must never see a different post under that
 * id later.
 *
 * author_stats keeps each author's post count, so get_author reads one row
 * instead of counting the author's index entries on every call (1000 of
 * them on the benchmark's store). Triggers maintain it inside the very
 * transaction that inserts, deletes or re-authors a post, whichever process
 * or statement does it (seeding included), so it is never out of step with
 * posts. A file created before the table existed is backfilled once at
 * start-up (see prepare_schema).
 */
static const char SCHEMA_SQL[] =
    "CREATE TABLE IF NOT EXISTS posts ("
    "  id        INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  title     TEXT NOT NULL,"
    "  body      TEXT NOT NULL,"
    "  author    TEXT NOT NULL,"
    "  published INTEGER NOT NULL CHECK (published IN (0, 1)));"
    "CREATE INDEX IF NOT EXISTS posts_by_state ON posts (published, id);"
    "CREATE INDEX IF NOT EXISTS posts_by_author ON posts (author);"
    "CREATE TABLE IF NOT EXISTS comments ("
    "  id      INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  post_id INTEGER NOT NULL REFERENCES posts (id) ON DELETE CASCADE,"
    "  author  TEXT NOT NULL,"
    "  text    TEXT NOT NULL);"
    "CREATE INDEX IF NOT EXISTS comments_by_post ON comments (post_id, id);"
    "CREATE TABLE IF NOT EXISTS blog_meta ("
    "  key   TEXT PRIMARY KEY,"
    "  value TEXT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS author_stats ("
    "  author TEXT PRIMARY KEY,"
    "  posts  INTEGER NOT NULL) WITHOUT ROWID;"
    "CREATE TRIGGER IF NOT EXISTS author_stats_insert AFTER INSERT ON posts BEGIN"
    "  INSERT INTO author_stats (author, posts) VALUES (new.author, 1)"
    "    ON CONFLICT (author) DO UPDATE SET posts = posts + 1;"
    " END;"
    "CREATE TRIGGER IF NOT EXISTS author_stats_delete AFTER DELETE ON posts BEGIN"
    "  UPDATE author_stats SET posts = posts - 1 WHERE author = old.author;"
    " END;"
    "CREATE TRIGGER IF NOT EXISTS author_stats_reauthor AFTER UPDATE OF author ON posts"
    " WHEN new.author IS NOT old.author BEGIN"
    "  UPDATE author_stats SET posts = posts - 1 WHERE author = old.author;"
    "  INSERT INTO author_stats (author, posts) VALUES (new.author, 1)"
    "    ON CONFLICT (author) DO UPDATE SET posts = posts + 1;"
    " END;";

/*
 * Fills author_stats from posts, once per file: a file created by an
 * earlier version has posts but no counts. Runs in the start-up write
 * transaction after SCHEMA_SQL, so no write can slip in between.
 */
static const char BACKFILL_SQL[] =
    "DELETE FROM author_stats;"
    "INSERT INTO author_stats (author, posts) SELECT author, count(*) FROM posts GROUP BY author;"
    "INSERT INTO blog_meta (key, value) VALUES ('author_stats', datetime('now'));";

/** The statements a connection prepares (lazily) and keeps. */
typedef enum stmt_id {
    ST_BEGIN_WRITE,
    ST_COMMIT,
    ST_ROLLBACK,
    ST_GET_POST,
    ST_FIND_POST,
    ST_LIST_POSTS,
    ST_LIST_COMMENTS,
    ST_GET_AUTHOR,
    ST_STATS,
    ST_INSERT_POST,
    ST_UPDATE_POST,
    ST_PUBLISH_POST,
    ST_DELETE_POST,
    ST_INSERT_COMMENT,
    ST_GET_COMMENT,
    ST_COUNT /* number of statements, not a statement */
} stmt_id_t;

/*
 * Post rows are always selected as (id, title, body, author, published) and
 * comment rows as (id, post_id, author, text): post_from_row() and
 * comment_from_row() rely on that order.
 */
static const char *const STMT_SQL[ST_COUNT] = {
    [ST_BEGIN_WRITE] = "BEGIN IMMEDIATE",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
    [ST_GET_POST] = "SELECT id, title, body, author, published FROM posts WHERE id = ?1",
    /* One row when the post exists; its column says whether ?2 wrote it. */
    [ST_FIND_POST] = "SELECT author = ?2 FROM posts WHERE id = ?1",
    /* LIMIT -1 means no limit in SQLite. */
    [ST_LIST_POSTS] = "SELECT id, title, body, author, published FROM posts"
                      " WHERE published = ?1 ORDER BY id DESC LIMIT ?2",
    /*
     * The LEFT JOIN answers "does the post exist" and "its comments" in one
     * statement, hence one snapshot: no row at all means no such post, one
     * row of NULLs means a post without comments.
     */
    [ST_LIST_COMMENTS] = "SELECT c.id, c.post_id, c.author, c.text"
                         " FROM posts p LEFT JOIN comments c ON c.post_id = p.id"
                         " WHERE p.id = ?1 ORDER BY c.id",
    /* The count is the maintained one (author_stats), read in the same snapshot as the post. */
    [ST_GET_AUTHOR] = "SELECT p.author, coalesce((SELECT s.posts FROM author_stats s WHERE s.author = p.author), 0)"
                      " FROM posts p WHERE p.id = ?1",
    [ST_STATS] = "SELECT (SELECT count(*) FROM posts), (SELECT count(*) FROM comments)",
    [ST_INSERT_POST] = "INSERT INTO posts (title, body, author, published) VALUES (?1, ?2, ?3, ?4)",
    /* A NULL parameter keeps the column as it is. */
    [ST_UPDATE_POST] = "UPDATE posts SET title = coalesce(?2, title), body = coalesce(?3, body)"
                       " WHERE id = ?1",
    [ST_PUBLISH_POST] = "UPDATE posts SET published = 1 WHERE id = ?1",
    /* The post's comments go with it (ON DELETE CASCADE; foreign keys are on). */
    [ST_DELETE_POST] = "DELETE FROM posts WHERE id = ?1",
    [ST_INSERT_COMMENT] = "INSERT INTO comments (post_id, author, text) VALUES (?1, ?2, ?3)",
    [ST_GET_COMMENT] = "SELECT id, post_id, author, text FROM comments WHERE id = ?1",
};

/* ------------------------------------------------------------------ */
/* Seed data                                                            */
/* ------------------------------------------------------------------ */

/** Author of every seeded post. */
#define SEED_AUTHOR "alice"

/** Posts 1..3, in id order. */
static const struct {
    const char *title;
    const char *body;
} SEED_POSTS[] = {
    {"Welcome to the Mizan blog",
     "This blog is the example module that ships with the Mizan gateway. Every "
     "page you see is a handful of C functions behind one HTTP endpoint: read "
     "blog.c to see how they are declared, validated and cached."},
    {"Contexts: one round trip for a whole page",
     "A post page needs the post, its comments and a line about its author. "
     "The post context runs get_post, list_comments and get_author side by "
     "side on the worker pool and answers with a single bundle."},
    {"Writes that never read stale",
     "Each mutation names the contexts it changes. The gateway bumps their "
     "revisions before it answers, so the next read on any instance is fresh "
     "while everything untouched stays cached."},
};

/** Comments of the seeded posts, in id order (ids 1..3). */
static const struct {
    int64_t post_id;
    const char *author;
    const char *text;
} SEED_COMMENTS[] = {
    {1, "bob", "Congratulations on the launch! The schema endpoint saved me an afternoon."},
    {1, "carol", "Is there a guide for writing a first module? Asking for a friend."},
    {2, "bob", "The bundle for this page took 3 ms here, comments included."},
};

/* ------------------------------------------------------------------ */
/* Types                                                                */
/* ------------------------------------------------------------------ */

/** One thread's connection. Used only by the thread that opened it. */
typedef struct conn {
    sqlite3 *db;                  /**< the connection */
    sqlite3_stmt *stmt[ST_COUNT]; /**< prepared on first use; NULL until then */
    struct blog_store *store;     /**< owner, to unlink from on thread exit */
    struct conn *prev;            /**< store->conns list; guarded by store->lock */
    struct conn *next;            /**< store->conns list; guarded by store->lock */
} conn_t;

struct blog_store {
    char *path;           /**< absolute database path; immutable after open */
    pthread_key_t key;    /**< each thread's conn_t; destructor conn_release */
    pthread_mutex_t lock; /**< guards conns; taken only to open or close a connection */
    conn_t *conns;        /**< every open connection, so close can reach them all */
    bool full_sync;       /**< PRAGMA synchronous = FULL (else NORMAL); immutable after open */
};

/* ------------------------------------------------------------------ */
/* Errors                                                               */
/* ------------------------------------------------------------------ */

/** Fills err with code and a formatted reason. Returns -1. */
static int fail(blog_err_t *err, mizan_code_t code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(blog_err_t *err, mizan_code_t code, const char *fmt, ...)
{
    va_list ap;

    err->code = code;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    return -1;
}

/**
 * Fills err with INTERNAL_ERROR, what failed and SQLite's reason (db may be
 * NULL after a failed allocation). Only logs see it. Returns -1.
 */
static int fail_sql(blog_err_t *err, sqlite3 *db, const char *what)
{
    return fail(err, MIZAN_INTERNAL_ERROR, "blog store: %s: %s (sqlite %d)", what,
                sqlite3_errmsg(db), db ? sqlite3_extended_errcode(db) : SQLITE_NOMEM);
}

/** NOT_FOUND for a post, with a message clients may see. Returns -1. */
static int post_not_found(blog_err_t *err, int64_t post_id)
{
    return fail(err, MIZAN_NOT_FOUND, "post %lld not found", (long long)post_id);
}

/** A jansson allocation failed (or stored text was not UTF-8). Returns -1. */
static int fail_json(blog_err_t *err, const char *what)
{
    return fail(err, MIZAN_INTERNAL_ERROR,
                "blog store: cannot build %s (out of memory or text not UTF-8)", what);
}

/* ------------------------------------------------------------------ */
/* Connections                                                          */
/* ------------------------------------------------------------------ */

/*
 * Waits for a lock held by another connection (or process) in short,
 * even steps. SQLite's own busy timeout backs off to 100 ms sleeps, which
 * under write contention between gateway processes leaves the lock free
 * while every waiter sleeps: p99 latencies of a second. limit is the
 * budget in milliseconds, smuggled through the handler's pointer argument.
 */
static int on_busy(void *limit, int count)
{
    const long step_us = 500;
    if ((long)count * step_us / 1000 >= (long)(intptr_t)limit)
        return 0; /* give up: SQLITE_BUSY */
    struct timespec ts = {0, step_us * 1000};
    nanosleep(&ts, NULL);
    return 1;
}

/**
 * Opens path with flags, then turns on extended result codes, the busy
 * timeout and foreign keys (a per-connection setting in SQLite, off by
 * default), and sets how a commit is made durable: with the WAL journal,
 * NORMAL syncs at checkpoints only (a commit survives a crash of the
 * gateway, a power loss may take the last ones back), FULL syncs every
 * commit. Returns 0 with *out set, or -1.
 */
static int open_db(const char *path, int flags, int busy_ms, bool full_sync, sqlite3 **out, blog_err_t *err)
{
    sqlite3 *db = NULL;
    int ret = -1;

    /* NOMUTEX: a connection is only ever used by one thread at a time. */
    if (sqlite3_open_v2(path, &db, flags | SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
        fail_sql(err, db, "cannot open the database");
        goto done;
    }
    sqlite3_extended_result_codes(db, 1);
    if (sqlite3_busy_handler(db, on_busy, (void *)(intptr_t)busy_ms) != SQLITE_OK ||
        sqlite3_exec(db, "PRAGMA foreign_keys = ON", NULL, NULL, NULL) != SQLITE_OK ||
        sqlite3_exec(db, full_sync ? "PRAGMA synchronous = FULL" : "PRAGMA synchronous = NORMAL", NULL, NULL,
                     NULL) != SQLITE_OK) {
        fail_sql(err, db, "cannot configure the connection");
        goto done;
    }
    *out = db;
    db = NULL;
    ret = 0;
done:
    sqlite3_close(db); /* a no-op for NULL; sqlite3_open_v2 may allocate even when it fails */
    return ret;
}

/** Finalizes c's statements, closes its connection and frees it. */
static void conn_close(conn_t *c)
{
    for (int i = 0; i < ST_COUNT; i++)
        sqlite3_finalize(c->stmt[i]);
    sqlite3_close(c->db);
    free(c);
}

/** pthread key destructor: the thread that owned c is exiting. */
static void conn_release(void *arg)
{
    conn_t *c = arg;
    blog_store_t *s = c->store;

    pthread_mutex_lock(&s->lock);
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    pthread_mutex_unlock(&s->lock);
    conn_close(c);
}

/** The calling thread's connection, opened on first use. NULL on failure. */
static conn_t *conn_get(blog_store_t *s, blog_err_t *err)
{
    conn_t *c = pthread_getspecific(s->key);
    conn_t *fresh = NULL;

    if (c)
        return c;
    fresh = calloc(1, sizeof *fresh);
    if (!fresh) {
        fail(err, MIZAN_INTERNAL_ERROR, "blog store: out of memory for a connection");
        goto done;
    }
    fresh->store = s;
    /* No SQLITE_OPEN_CREATE: the file was created at start-up; if it has
     * gone since, failing beats silently starting an empty blog. */
    if (open_db(s->path, SQLITE_OPEN_READWRITE, BUSY_TIMEOUT_MS, s->full_sync, &fresh->db, err) < 0)
        goto done;
    if (pthread_setspecific(s->key, fresh) != 0) {
        fail(err, MIZAN_INTERNAL_ERROR, "blog store: cannot keep a per-thread connection");
        goto done;
    }
    pthread_mutex_lock(&s->lock);
    fresh->next = s->conns;
    if (s->conns)
        s->conns->prev = fresh;
    s->conns = fresh;
    pthread_mutex_unlock(&s->lock);
    c = fresh;
    fresh = NULL;
done:
    if (fresh)
        conn_close(fresh); /* closes a half-opened connection too */
    return c;
}

/* ------------------------------------------------------------------ */
/* Statement helpers                                                    */
/* ------------------------------------------------------------------ */

/** c's prepared statement id (prepared now if this is its first use), or NULL. */
static sqlite3_stmt *conn_stmt(conn_t *c, stmt_id_t id, blog_err_t *err)
{
    if (!c->stmt[id] && sqlite3_prepare_v3(c->db, STMT_SQL[id], -1, SQLITE_PREPARE_PERSISTENT,
                                           &c->stmt[id], NULL) != SQLITE_OK) {
        fail_sql(err, c->db, "cannot prepare a statement");
        return NULL;
    }
    return c->stmt[id];
}

/**
 * Makes st ready for its next use: ends the current run (releasing the
 * snapshot a read holds) and drops the bound values. NULL is a no-op.
 */
static void stmt_done(sqlite3_stmt *st)
{
    if (st) {
        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
    }
}

/** Binds text (NULL for an absent one) to parameter idx of st. Returns a SQLite code. */
static int bind_text(sqlite3_stmt *st, int idx, blog_text_t text)
{
    if (!text.ptr)
        return sqlite3_bind_null(st, idx);
    /* TRANSIENT: SQLite copies the text, so the caller's buffer may go. */
    return sqlite3_bind_text64(st, idx, text.ptr, text.len, SQLITE_TRANSIENT, SQLITE_UTF8);
}

/** A C string as blog_text_t. */
static blog_text_t cstr(const char *s)
{
    blog_text_t t = {s, s ? strlen(s) : 0};
    return t;
}

/**
 * Column col of st's current row as text, borrowed until the next step or
 * reset (ptr NULL for SQL NULL). SQLite wants the text asked for before its
 * length, which is why this is not two arguments to one call.
 */
static blog_text_t column_text(sqlite3_stmt *st, int col)
{
    blog_text_t t;

    t.ptr = (const char *)sqlite3_column_text(st, col);
    t.len = (size_t)sqlite3_column_bytes(st, col);
    return t;
}

/**
 * Steps st, a statement of c that returns no rows (INSERT, UPDATE, ...),
 * then makes it ready for its next use, on success and failure alike.
 * sqlite3_changes() and sqlite3_last_insert_rowid() still answer for it
 * afterwards. what names the step in the error.
 */
static int step_done(conn_t *c, sqlite3_stmt *st, const char *what, blog_err_t *err)
{
    int ret = 0;

    if (sqlite3_step(st) != SQLITE_DONE)
        ret = fail_sql(err, c->db, what);
    stmt_done(st);
    return ret;
}

/** Runs statement id of c, which takes no parameters and returns no rows. */
static int run(conn_t *c, stmt_id_t id, blog_err_t *err)
{
    sqlite3_stmt *st = conn_stmt(c, id, err);

    return st ? step_done(c, st, STMT_SQL[id], err) : -1;
}

/** Starts a write transaction on c (waiting for other writers). */
static int begin_write(conn_t *c, blog_err_t *err)
{
    return run(c, ST_BEGIN_WRITE, err);
}

/** Commits c's transaction. */
static int commit(conn_t *c, blog_err_t *err)
{
    return run(c, ST_COMMIT, err);
}

/**
 * Rolls back c's transaction if one is open (SQLite may already have rolled
 * it back by itself after some errors). Used on failure paths, where the
 * first error is the one worth reporting, so this one is dropped.
 */
static void rollback(conn_t *c)
{
    blog_err_t ignored;

    if (c && !sqlite3_get_autocommit(c->db))
        (void)run(c, ST_ROLLBACK, &ignored);
}

/* ------------------------------------------------------------------ */
/* Rows to JSON                                                         */
/* ------------------------------------------------------------------ */

/** The post in st's current row: a new object, or NULL (out of memory, bad UTF-8). */
static json_t *post_from_row(sqlite3_stmt *st)
{
    blog_text_t title = column_text(st, 1);
    blog_text_t body = column_text(st, 2);
    blog_text_t author = column_text(st, 3);

    /* "s%" takes a pointer and a size_t length; a NULL pointer fails the pack. */
    return json_pack("{s:I, s:s%, s:s%, s:s%, s:b}", "id", (json_int_t)sqlite3_column_int64(st, 0),
                     "title", title.ptr, title.len, "body", body.ptr, body.len, "author",
                     author.ptr, author.len, "published", sqlite3_column_int(st, 4) != 0);
}

/** The comment in st's current row: a new object, or NULL. */
static json_t *comment_from_row(sqlite3_stmt *st)
{
    blog_text_t author = column_text(st, 2);
    blog_text_t text = column_text(st, 3);

    return json_pack("{s:I, s:I, s:s%, s:s%}", "id", (json_int_t)sqlite3_column_int64(st, 0),
                     "post_id", (json_int_t)sqlite3_column_int64(st, 1), "author", author.ptr,
                     author.len, "text", text.ptr, text.len);
}

/**
 * Reads post post_id on c. Returns 0 with *out a new object, or with *out
 * NULL when there is no such post; -1 on failure.
 */
static int read_post(conn_t *c, int64_t post_id, json_t **out, blog_err_t *err)
{
    sqlite3_stmt *st = conn_stmt(c, ST_GET_POST, err);
    int ret = -1;
    int rc;

    *out = NULL;
    if (!st)
        return -1;
    if (sqlite3_bind_int64(st, 1, post_id) != SQLITE_OK) {
        fail_sql(err, c->db, "cannot bind");
        goto done;
    }
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *out = post_from_row(st);
        if (!*out) {
            fail_json(err, "a post");
            goto done;
        }
    } else if (rc != SQLITE_DONE) {
        fail_sql(err, c->db, "cannot read a post");
        goto done;
    }
    ret = 0;
done:
    stmt_done(st);
    return ret;
}

/**
 * Looks post post_id up on c: *exists says whether it is there and, when
 * who is not NULL, *by_who whether who wrote it.
 */
static int find_post(conn_t *c, int64_t post_id, const char *who, bool *exists, bool *by_who,
                     blog_err_t *err)
{
    sqlite3_stmt *st = conn_stmt(c, ST_FIND_POST, err);
    int ret = -1;
    int rc;

    *exists = false;
    *by_who = false;
    if (!st)
        return -1;
    if (sqlite3_bind_int64(st, 1, post_id) != SQLITE_OK ||
        bind_text(st, 2, cstr(who)) != SQLITE_OK) {
        fail_sql(err, c->db, "cannot bind");
        goto done;
    }
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *exists = true;
        *by_who = sqlite3_column_int(st, 0) == 1; /* NULL (who absent) reads as 0 */
    } else if (rc != SQLITE_DONE) {
        fail_sql(err, c->db, "cannot look a post up");
        goto done;
    }
    ret = 0;
done:
    stmt_done(st);
    return ret;
}

/* ------------------------------------------------------------------ */
/* Opening: WAL, schema, seed                                           */
/* ------------------------------------------------------------------ */

/**
 * Switches the file to the WAL journal (a property of the file, so this
 * sticks for every later connection). Some file systems cannot do WAL; the
 * blog then still works, with readers and the writer taking turns, and the
 * log says so.
 */
static int use_wal(sqlite3 *db, blog_err_t *err)
{
    sqlite3_stmt *st = NULL;
    const char *mode;
    int waited_ms = 0;
    int ret = -1;
    int rc;

    if (sqlite3_prepare_v2(db, "PRAGMA journal_mode = WAL", -1, &st, NULL) != SQLITE_OK) {
        fail_sql(err, db, "cannot switch to the WAL journal");
        goto done;
    }
    /*
     * Changing the journal mode needs the file to itself for a moment. When
     * another process holds a lock on it (typically: it is seeding the same
     * new file right now), SQLite may answer SQLITE_BUSY at once without
     * consulting the busy timeout, so wait and retry here.
     */
    while ((rc = sqlite3_step(st)) != SQLITE_ROW) {
        bool busy = (rc & 0xff) == SQLITE_BUSY || (rc & 0xff) == SQLITE_LOCKED;
        if (!busy || waited_ms >= INIT_BUSY_TIMEOUT_MS) {
            fail_sql(err, db, "cannot switch to the WAL journal");
            goto done;
        }
        sqlite3_reset(st);
        sqlite3_sleep(WAL_RETRY_MS);
        waited_ms += WAL_RETRY_MS;
    }
    /* The pragma answers with the mode now in force. */
    mode = (const char *)sqlite3_column_text(st, 0);
    if (!mode || strcmp(mode, "wal") != 0)
        mizan_log(MIZAN_LOG_WARN, "blog: the database stays in journal mode %s, not wal",
                  mode ? mode : "(unknown)");
    ret = 0;
done:
    sqlite3_finalize(st);
    return ret;
}

/** Prepares sql on db into *st (a one-off statement for start-up). */
static int prepare_once(sqlite3 *db, const char *sql, sqlite3_stmt **st, blog_err_t *err)
{
    if (sqlite3_prepare_v2(db, sql, -1, st, NULL) != SQLITE_OK)
        return fail_sql(err, db, "cannot prepare a set-up statement");
    return 0;
}

/** Steps st (an INSERT) once and resets it for the next row. */
static int insert_row(sqlite3 *db, sqlite3_stmt *st, blog_err_t *err)
{
    int rc = sqlite3_step(st);

    sqlite3_reset(st);
    return rc == SQLITE_DONE ? 0 : fail_sql(err, db, "cannot insert seed data");
}

/**
 * Inserts the demo data: posts 1..3 and their comments, then filler posts
 * 4..seed_posts (published, by alice, no comments) for benchmarks. Runs
 * inside the start-up transaction.
 */
static int seed(sqlite3 *db, long seed_posts, blog_err_t *err)
{
    sqlite3_stmt *post = NULL;
    sqlite3_stmt *comment = NULL;
    char title[64];
    char body[128];
    int ret = -1;

    if (prepare_once(db,
                     "INSERT INTO posts (id, title, body, author, published)"
                     " VALUES (?1, ?2, ?3, '" SEED_AUTHOR "', 1)",
                     &post, err) < 0 ||
        prepare_once(db, "INSERT INTO comments (id, post_id, author, text) VALUES (?1, ?2, ?3, ?4)",
                     &comment, err) < 0)
        goto done;

    for (long id = 1; id <= seed_posts; id++) {
        const char *t = title;
        const char *b = body;
        if (id <= (long)(sizeof SEED_POSTS / sizeof SEED_POSTS[0])) {
            t = SEED_POSTS[id - 1].title;
            b = SEED_POSTS[id - 1].body;
        } else {
            snprintf(title, sizeof title, "Load test post %ld", id);
            snprintf(body, sizeof body, "Filler post %ld of %ld, seeded for benchmarks.", id,
                     seed_posts);
        }
        if (sqlite3_bind_int64(post, 1, id) != SQLITE_OK ||
            sqlite3_bind_text(post, 2, t, -1, SQLITE_STATIC) != SQLITE_OK ||
            sqlite3_bind_text(post, 3, b, -1, SQLITE_STATIC) != SQLITE_OK) {
            fail_sql(err, db, "cannot bind seed data");
            goto done;
        }
        if (insert_row(db, post, err) < 0)
            goto done;
    }

    for (size_t i = 0; i < sizeof SEED_COMMENTS / sizeof SEED_COMMENTS[0]; i++) {
        if (sqlite3_bind_int64(comment, 1, (sqlite3_int64)i + 1) != SQLITE_OK ||
            sqlite3_bind_int64(comment, 2, SEED_COMMENTS[i].post_id) != SQLITE_OK ||
            bind_text(comment, 3, cstr(SEED_COMMENTS[i].author)) != SQLITE_OK ||
            bind_text(comment, 4, cstr(SEED_COMMENTS[i].text)) != SQLITE_OK) {
            fail_sql(err, db, "cannot bind seed data");
            goto done;
        }
        if (insert_row(db, comment, err) < 0)
            goto done;
    }
    ret = 0;
done:
    sqlite3_finalize(post);
    sqlite3_finalize(comment);
    return ret;
}

/**
 * Creates the schema and seeds the data unless a previous start (of this
 * or any other process) already did, all in one write transaction so that
 * concurrent starts serialize on it. Sets *seeded when this call seeded.
 */
static int prepare_schema(sqlite3 *db, long seed_posts, bool *seeded, blog_err_t *err)
{
    sqlite3_stmt *st = NULL;
    int ret = -1;
    int rc;

    *seeded = false;
    if (sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) {
        fail_sql(err, db, "cannot start the set-up transaction");
        return -1;
    }
    if (sqlite3_exec(db, SCHEMA_SQL, NULL, NULL, NULL) != SQLITE_OK) {
        fail_sql(err, db, "cannot create the schema");
        goto done;
    }
    if (prepare_once(db, "SELECT 1 FROM blog_meta WHERE key = 'author_stats'", &st, err) < 0)
        goto done;
    rc = sqlite3_step(st);
    sqlite3_finalize(st);
    st = NULL;
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        fail_sql(err, db, "cannot read blog_meta");
        goto done;
    }
    if (rc == SQLITE_DONE && sqlite3_exec(db, BACKFILL_SQL, NULL, NULL, NULL) != SQLITE_OK) {
        fail_sql(err, db, "cannot fill the per-author post counts");
        goto done;
    }
    if (prepare_once(db, "SELECT 1 FROM blog_meta WHERE key = 'seeded'", &st, err) < 0)
        goto done;
    rc = sqlite3_step(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        fail_sql(err, db, "cannot read blog_meta");
        goto done;
    }
    if (rc == SQLITE_DONE) {
        /* Seeded once, ever: deleting every post later does not re-seed. */
        if (seed(db, seed_posts, err) < 0)
            goto done;
        if (sqlite3_exec(db,
                         "INSERT INTO blog_meta (key, value) VALUES ('seeded', datetime('now'))",
                         NULL, NULL, NULL) != SQLITE_OK) {
            fail_sql(err, db, "cannot record the seed");
            goto done;
        }
        *seeded = true;
    }
    sqlite3_finalize(st); /* a pending statement would keep COMMIT from ending the read */
    st = NULL;
    if (sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
        fail_sql(err, db, "cannot commit the set-up transaction");
        goto done;
    }
    ret = 0;
done:
    sqlite3_finalize(st);
    if (ret < 0 && !sqlite3_get_autocommit(db))
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    return ret;
}

/**
 * Rewrites err's message as "<path>: <message><hint>" (start-up errors
 * only: the operator reads them, clients never do). Returns -1.
 */
static int at_path(blog_err_t *err, const char *path, const char *hint)
{
    char reason[sizeof err->msg];

    snprintf(reason, sizeof reason, "%s", err->msg);
    return fail(err, err->code, "%s: %s%s", path, reason, hint);
}

int blog_store_open(const char *path, long seed_posts, bool full_sync, blog_store_t **out, blog_err_t *err)
{
    blog_store_t *s = NULL;
    sqlite3 *db = NULL;
    const char *abs;
    size_t abs_size;
    bool seeded = false;
    bool have_lock = false;
    bool have_key = false;
    int ret = -1;

    if (seed_posts < 3)
        seed_posts = 3; /* posts 1..3 and their comments always exist */
    if (!sqlite3_threadsafe()) {
        fail(err, MIZAN_INTERNAL_ERROR, "the SQLite library was built without thread support");
        goto done;
    }
    if (open_db(path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, INIT_BUSY_TIMEOUT_MS, full_sync, &db,
                err) < 0) {
        at_path(err, path, "; check that its directory exists and is writable");
        goto done;
    }
    /* SQLite knows the absolute path; "" means an in-memory or temporary
     * database, which every thread's connection would see as its own. */
    abs = sqlite3_db_filename(db, "main");
    if (!abs || !*abs) {
        fail(err, MIZAN_INTERNAL_ERROR, "\"%s\" is not a database file; give a file path", path);
        goto done;
    }
    abs_size = strlen(abs) + 1;
    s = calloc(1, sizeof *s);
    if (s)
        s->full_sync = full_sync;
    if (!s || !(s->path = malloc(abs_size))) {
        fail(err, MIZAN_INTERNAL_ERROR, "out of memory");
        goto done;
    }
    memcpy(s->path, abs, abs_size);

    if (use_wal(db, err) < 0 || prepare_schema(db, seed_posts, &seeded, err) < 0) {
        at_path(err, s->path, "");
        goto done;
    }
    if (seeded)
        mizan_log(MIZAN_LOG_INFO, "blog: seeded %ld posts into %s", seed_posts, s->path);

    if (pthread_mutex_init(&s->lock, NULL) != 0) {
        fail(err, MIZAN_INTERNAL_ERROR, "cannot create a mutex");
        goto done;
    }
    have_lock = true;
    if (pthread_key_create(&s->key, conn_release) != 0) {
        fail(err, MIZAN_INTERNAL_ERROR, "cannot create a thread-specific key");
        goto done;
    }
    have_key = true;
    *out = s;
    s = NULL;
    ret = 0;
done:
    /* The start-up connection only; worker threads open their own. */
    sqlite3_close(db);
    if (s) {
        if (have_key)
            pthread_key_delete(s->key);
        if (have_lock)
            pthread_mutex_destroy(&s->lock);
        free(s->path);
        free(s);
    }
    return ret;
}

void blog_store_close(blog_store_t *store)
{
    if (!store)
        return;
    /* No destructor may run for this key from now on, so threads that
     * outlive the module will not call into it. */
    pthread_key_delete(store->key);
    pthread_mutex_lock(&store->lock);
    while (store->conns) {
        conn_t *c = store->conns;
        store->conns = c->next;
        conn_close(c);
    }
    pthread_mutex_unlock(&store->lock);
    pthread_mutex_destroy(&store->lock);
    free(store->path);
    free(store);
}

const char *blog_store_path(const blog_store_t *store)
{
    return store->path;
}

/* ------------------------------------------------------------------ */
/* Reads                                                                */
/* ------------------------------------------------------------------ */

int blog_store_get_post(blog_store_t *store, int64_t post_id, json_t **out, blog_err_t *err)
{
    conn_t *c = conn_get(store, err);

    if (!c || read_post(c, post_id, out, err) < 0)
        return -1;
    return *out ? 0 : post_not_found(err, post_id);
}

int blog_store_list_posts(blog_store_t *store, bool published, int64_t limit, json_t **out,
                          blog_err_t *err)
{
    conn_t *c = conn_get(store, err);
    sqlite3_stmt *st = NULL;
    json_t *list = NULL;
    int ret = -1;
    int rc;

    if (!c || !(st = conn_stmt(c, ST_LIST_POSTS, err)))
        return -1;
    if (sqlite3_bind_int(st, 1, published) != SQLITE_OK ||
        sqlite3_bind_int64(st, 2, limit > 0 ? limit : -1) != SQLITE_OK) {
        fail_sql(err, c->db, "cannot bind");
        goto done;
    }
    if (!(list = json_array())) {
        fail_json(err, "a list");
        goto done;
    }
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        /* append_new takes the post even when it fails, and refuses NULL. */
        if (json_array_append_new(list, post_from_row(st)) < 0) {
            fail_json(err, "a post");
            goto done;
        }
    }
    if (rc != SQLITE_DONE) {
        fail_sql(err, c->db, "cannot list posts");
        goto done;
    }
    *out = list;
    list = NULL;
    ret = 0;
done:
    stmt_done(st);
    json_decref(list);
    return ret;
}

int blog_store_list_comments(blog_store_t *store, int64_t post_id, json_t **out, blog_err_t *err)
{
    conn_t *c = conn_get(store, err);
    sqlite3_stmt *st = NULL;
    json_t *list = NULL;
    bool post_seen = false;
    int ret = -1;
    int rc;

    if (!c || !(st = conn_stmt(c, ST_LIST_COMMENTS, err)))
        return -1;
    if (sqlite3_bind_int64(st, 1, post_id) != SQLITE_OK) {
        fail_sql(err, c->db, "cannot bind");
        goto done;
    }
    if (!(list = json_array())) {
        fail_json(err, "a list");
        goto done;
    }
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        post_seen = true;
        if (sqlite3_column_type(st, 0) == SQLITE_NULL)
            continue; /* the post has no comments */
        if (json_array_append_new(list, comment_from_row(st)) < 0) {
            fail_json(err, "a comment");
            goto done;
        }
    }
    if (rc != SQLITE_DONE) {
        fail_sql(err, c->db, "cannot list comments");
        goto done;
    }
    if (!post_seen) {
        post_not_found(err, post_id);
        goto done;
    }
    *out = list;
    list = NULL;
    ret = 0;
done:
    stmt_done(st);
    json_decref(list);
    return ret;
}

int blog_store_get_author(blog_store_t *store, int64_t post_id, json_t **out, blog_err_t *err)
{
    conn_t *c = conn_get(store, err);
    sqlite3_stmt *st = NULL;
    blog_text_t name;
    int ret = -1;
    int rc;

    if (!c || !(st = conn_stmt(c, ST_GET_AUTHOR, err)))
        return -1;
    if (sqlite3_bind_int64(st, 1, post_id) != SQLITE_OK) {
        fail_sql(err, c->db, "cannot bind");
        goto done;
    }
    rc = sqlite3_step(st);
    if (rc == SQLITE_DONE) {
        post_not_found(err, post_id);
        goto done;
    }
    if (rc != SQLITE_ROW) {
        fail_sql(err, c->db, "cannot read an author");
        goto done;
    }
    name = column_text(st, 0);
    *out = json_pack("{s:s%, s:I}", "name", name.ptr, name.len, "posts",
                     (json_int_t)sqlite3_column_int64(st, 1));
    if (!*out) {
        fail_json(err, "an author");
        goto done;
    }
    ret = 0;
done:
    stmt_done(st);
    return ret;
}

int blog_store_stats(blog_store_t *store, json_t **out, blog_err_t *err)
{
    conn_t *c = conn_get(store, err);
    sqlite3_stmt *st = NULL;
    int ret = -1;

    if (!c || !(st = conn_stmt(c, ST_STATS, err)))
        return -1;
    if (sqlite3_step(st) != SQLITE_ROW) {
        fail_sql(err, c->db, "cannot count");
        goto done;
    }
    *out = json_pack("{s:I, s:I}", "posts", (json_int_t)sqlite3_column_int64(st, 0), "comments",
                     (json_int_t)sqlite3_column_int64(st, 1));
    if (!*out) {
        fail_json(err, "the stats");
        goto done;
    }
    ret = 0;
done:
    stmt_done(st);
    return ret;
}

/* ------------------------------------------------------------------ */
/* Writes                                                               */
/* ------------------------------------------------------------------ */

/*
 * Every write below has the same shape:
 *
 *     BEGIN IMMEDIATE
 *     check (the post exists, the caller may touch it)
 *     write
 *     re-read what was written
 *     COMMIT
 *
 * and on any failure the done: path rolls back, so a half-done write is
 * never left behind and the connection is ready for the next request.
 */

/** Drops st's partial bindings and reports a bind failure. Returns -1. */
static int bind_failed(conn_t *c, sqlite3_stmt *st, blog_err_t *err)
{
    fail_sql(err, c->db, "cannot bind a parameter");
    stmt_done(st);
    return -1;
}

/** Reads back post post_id just written on c (*out: a new object). */
static int reread_post(conn_t *c, int64_t post_id, json_t **out, blog_err_t *err)
{
    if (read_post(c, post_id, out, err) < 0)
        return -1;
    if (!*out)
        return fail(err, MIZAN_INTERNAL_ERROR, "blog store: post %lld vanished inside a write",
                    (long long)post_id);
    return 0;
}

/** Reads back comment comment_id just written on c (*out: a new object). */
static int reread_comment(conn_t *c, int64_t comment_id, json_t **out, blog_err_t *err)
{
    sqlite3_stmt *st = conn_stmt(c, ST_GET_COMMENT, err);
    int ret = -1;

    if (!st)
        return -1;
    if (sqlite3_bind_int64(st, 1, comment_id) != SQLITE_OK)
        return bind_failed(c, st, err);
    if (sqlite3_step(st) != SQLITE_ROW) {
        fail_sql(err, c->db, "cannot re-read a comment");
        goto done;
    }
    if (!(*out = comment_from_row(st))) {
        fail_json(err, "a comment");
        goto done;
    }
    ret = 0;
done:
    stmt_done(st);
    return ret;
}

int blog_store_create_post(blog_store_t *store, blog_text_t title, blog_text_t body,
                           const char *author, bool published, json_t **out, blog_err_t *err)
{
    conn_t *c = conn_get(store, err);
    sqlite3_stmt *st;
    json_t *post = NULL;
    int ret = -1;

    if (!c || begin_write(c, err) < 0)
        return -1;
    if (!(st = conn_stmt(c, ST_INSERT_POST, err)))
        goto done;
    if (bind_text(st, 1, title) != SQLITE_OK || bind_text(st, 2, body) != SQLITE_OK ||
        bind_text(st, 3, cstr(author)) != SQLITE_OK ||
        sqlite3_bind_int(st, 4, published) != SQLITE_OK) {
        bind_failed(c, st, err);
        goto done;
    }
    /* An absent title or body would break NOT NULL here rather than store "". */
    if (step_done(c, st, "cannot insert a post", err) < 0)
        goto done;
    /* The id SQLite just gave the row. It is per connection, and this
     * connection is this thread's alone, so no other insert can interfere. */
    if (reread_post(c, sqlite3_last_insert_rowid(c->db), &post, err) < 0 || commit(c, err) < 0)
        goto done;
    *out = post;
    post = NULL;
    ret = 0;
done:
    if (ret < 0)
        rollback(c);
    json_decref(post);
    return ret;
}

int blog_store_update_post(blog_store_t *store, int64_t post_id, blog_text_t title,
                           blog_text_t body, const char *editor, bool moderator, json_t **out,
                           blog_err_t *err)
{
    conn_t *c = conn_get(store, err);
    sqlite3_stmt *st;
    json_t *post = NULL;
    bool exists;
    bool by_editor;
    int ret = -1;

    if (!c || begin_write(c, err) < 0)
        return -1;
    /* Check and write in one transaction: the post cannot disappear or
     * change between the permission check and the update. */
    if (find_post(c, post_id, editor, &exists, &by_editor, err) < 0)
        goto done;
    if (!exists) {
        post_not_found(err, post_id);
        goto done;
    }
    if (!by_editor && !moderator) {
        fail(err, MIZAN_FORBIDDEN, "only the post's author, staff or a superuser may edit it");
        goto done;
    }
    if (!(st = conn_stmt(c, ST_UPDATE_POST, err)))
        goto done;
    if (sqlite3_bind_int64(st, 1, post_id) != SQLITE_OK || bind_text(st, 2, title) != SQLITE_OK ||
        bind_text(st, 3, body) != SQLITE_OK) {
        bind_failed(c, st, err);
        goto done;
    }
    if (step_done(c, st, "cannot update a post", err) < 0 ||
        reread_post(c, post_id, &post, err) < 0 || commit(c, err) < 0)
        goto done;
    *out = post;
    post = NULL;
    ret = 0;
done:
    if (ret < 0)
        rollback(c);
    json_decref(post);
    return ret;
}

int blog_store_add_comment(blog_store_t *store, int64_t post_id, const char *author,
                           blog_text_t text, json_t **out, blog_err_t *err)
{
    conn_t *c = conn_get(store, err);
    sqlite3_stmt *st;
    json_t *comment = NULL;
    bool exists;
    bool unused;
    int ret = -1;

    if (!c || begin_write(c, err) < 0)
        return -1;
    if (find_post(c, post_id, NULL, &exists, &unused, err) < 0)
        goto done;
    if (!exists) {
        post_not_found(err, post_id);
        goto done;
    }
    if (!(st = conn_stmt(c, ST_INSERT_COMMENT, err)))
        goto done;
    if (sqlite3_bind_int64(st, 1, post_id) != SQLITE_OK ||
        bind_text(st, 2, cstr(author)) != SQLITE_OK || bind_text(st, 3, text) != SQLITE_OK) {
        bind_failed(c, st, err);
        goto done;
    }
    if (step_done(c, st, "cannot insert a comment", err) < 0 ||
        reread_comment(c, sqlite3_last_insert_rowid(c->db), &comment, err) < 0 ||
        commit(c, err) < 0)
        goto done;
    *out = comment;
    comment = NULL;
    ret = 0;
done:
    if (ret < 0)
        rollback(c);
    json_decref(comment);
    return ret;
}

int blog_store_delete_post(blog_store_t *store, int64_t post_id, blog_err_t *err)
{
    conn_t *c = conn_get(store, err);
    sqlite3_stmt *st;
    int ret = -1;

    if (!c || begin_write(c, err) < 0)
        return -1;
    if (!(st = conn_stmt(c, ST_DELETE_POST, err)))
        goto done;
    if (sqlite3_bind_int64(st, 1, post_id) != SQLITE_OK) {
        bind_failed(c, st, err);
        goto done;
    }
    if (step_done(c, st, "cannot delete a post", err) < 0)
        goto done;
    /* Rows the DELETE itself removed (cascaded comments are not counted). */
    if (sqlite3_changes(c->db) == 0) {
        post_not_found(err, post_id);
        goto done;
    }
    if (commit(c, err) < 0)
        goto done;
    ret = 0;
done:
    if (ret < 0)
        rollback(c);
    return ret;
}

int blog_store_publish_post(blog_store_t *store, int64_t post_id, json_t **out, blog_err_t *err)
{
    conn_t *c = conn_get(store, err);
    sqlite3_stmt *st;
    json_t *post = NULL;
    int ret = -1;

    if (!c || begin_write(c, err) < 0)
        return -1;
    if (!(st = conn_stmt(c, ST_PUBLISH_POST, err)))
        goto done;
    if (sqlite3_bind_int64(st, 1, post_id) != SQLITE_OK) {
        bind_failed(c, st, err);
        goto done;
    }
    if (step_done(c, st, "cannot publish a post", err) < 0)
        goto done;
    /* SQLite counts a matched row as changed even when it was published
     * already, so 0 really means "no such post". */
    if (sqlite3_changes(c->db) == 0) {
        post_not_found(err, post_id);
        goto done;
    }
    if (reread_post(c, post_id, &post, err) < 0 || commit(c, err) < 0)
        goto done;
    *out = post;
    post = NULL;
    ret = 0;
done:
    if (ret < 0)
        rollback(c);
    json_decref(post);
    return ret;
}
