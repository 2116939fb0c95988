/*
 * upstream_parse.h - the in-place reader of upstream HTTP/1.x answers used
 * by the upstream client (upstream_client.c): status line, headers, and a
 * body framed by Content-Length, by chunked transfer coding (extensions and
 * trailers allowed) or by the end of the connection.
 *
 * DESIGN: a pure state machine, no I/O and no event loop, so it can be unit
 * tested and fuzzed on its own. The caller keeps the bytes it received and
 * not yet consumed in its own buffer and hands them to
 * mizan_upstream_parse_feed() each time more arrive; the reader consumes
 * what it can (a head only once it is complete), copies the body into its
 * own reusable buffer and says how many bytes it used. Bytes left once an
 * answer is complete belong to nothing: the caller must not reuse the
 * connection (see doubt).
 *
 * Besides refusing what cannot be read (BAD, with a static reason), the
 * reader records why the connection must not carry another request:
 * a framing violation (duplicate or conflicting Content-Length and
 * Transfer-Encoding, a body announced on a 1xx/204/304) in doubt with
 * violation set, or a plain end (Connection: close, an answer other than
 * HTTP/1.1, a body that ends with the connection) with violation clear.
 * One thread at a time per reader; no globals.
 */
#ifndef MIZAN_UPSTREAM_PARSE_H
#define MIZAN_UPSTREAM_PARSE_H

#include <stdbool.h>
#include <stddef.h>

/** What a feed or the end of the connection leaves the reader with. */
typedef enum mizan_upstream_parse_rc {
    MIZAN_UPARSE_BAD = -1, /**< unreadable answer: error says why */
    MIZAN_UPARSE_MORE = 0, /**< incomplete: feed the unused bytes again with more */
    MIZAN_UPARSE_DONE = 1, /**< one whole answer read */
} mizan_upstream_parse_rc_t;

/** One answer being read; reset by mizan_upstream_parse_begin(), body buffer kept. */
typedef struct mizan_upstream_parse {
    /* limits (set by the caller, kept across answers) */
    size_t max_head; /**< bytes of status line + headers, and of the chunked trailers */
    size_t max_body; /**< bytes of decoded body */

    /* the answer */
    int status;         /**< status code (100..599) once the head is read */
    int minor;          /**< HTTP/1.minor */
    char *body;         /**< decoded body (NUL-terminated when DONE); owned, reused */
    size_t body_len;
    size_t body_cap;
    const char *doubt;  /**< why the connection must not be reused (static), or NULL */
    bool violation;     /**< doubt is a framing violation, not a plain end */
    const char *error;  /**< why BAD (static) */

    /* state */
    int state;
    unsigned long long left; /**< body or chunk bytes still to come */
    size_t scanned;          /**< head bytes already searched for its end */
    size_t trailer;          /**< trailer bytes seen */
} mizan_upstream_parse_t;

/** Starts a new answer on p (limits and body buffer kept). */
void mizan_upstream_parse_begin(mizan_upstream_parse_t *p);

/**
 * Reads from buf[0..len) (the bytes not used by earlier feeds, followed by
 * the new ones); *used receives how many were consumed. DONE: the answer is
 * complete (bytes past *used are not part of it); MORE: keep the unused
 * bytes and call again with more; BAD: unreadable (error set).
 */
mizan_upstream_parse_rc_t mizan_upstream_parse_feed(mizan_upstream_parse_t *p, const char *buf, size_t len,
                                                    size_t *used);

/**
 * The connection ended after every byte was fed: DONE when the body was
 * framed by the end of the connection, BAD otherwise (a truncated answer).
 */
mizan_upstream_parse_rc_t mizan_upstream_parse_eof(mizan_upstream_parse_t *p);

/** Frees the body buffer. NULL-safe; p may be begun again afterwards. */
void mizan_upstream_parse_deinit(mizan_upstream_parse_t *p);

#endif /* MIZAN_UPSTREAM_PARSE_H */
