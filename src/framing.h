/*
 * framing.h - the request framing rules of PROTOCOL.md section 1 (rev 2),
 * checked on the raw bytes before the HTTP library parses them.
 *
 * libevent's evhttp is lenient where leniency lets one connection carry a
 * request the gateway never meant to accept (request smuggling): it takes
 * the first of two Content-Length headers, reads "+19" as 19, ignores a
 * "Transfer-Encoding :" header, leaves the body of a GET on the connection
 * to be read as the next request, and answers the rest with HTML pages.
 * conn.c therefore feeds every byte a client sends through these functions
 * first: a request head is accepted only when its framing is unambiguous,
 * and a chunked body is followed chunk by chunk so the next head is found
 * exactly where evhttp will look for it.
 *
 * Pure functions on caller-owned state; any thread.
 */
#ifndef MIZAN_FRAMING_H
#define MIZAN_FRAMING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/** How the body after an accepted head is delimited. */
typedef enum mizan_body_kind {
    MIZAN_BODY_NONE = 0, /**< no body: the next byte starts the next request */
    MIZAN_BODY_LENGTH,   /**< exactly `length` bytes */
    MIZAN_BODY_CHUNKED,  /**< chunked transfer coding (HTTP/1.1) */
} mizan_body_kind_t;

/** The verdict on one request head. */
typedef struct mizan_head {
    int status;             /**< 0: accepted; else 400 or 413 */
    char reason[112];       /**< why it was refused (client-safe text) */
    mizan_body_kind_t body; /**< when accepted */
    uint64_t length;        /**< MIZAN_BODY_LENGTH: bytes of body */
    char rid[129];          /**< the head's X-Request-Id when sane, else "" */
    char origin[256];       /**< the head's Origin (no control characters), else "" */
} mizan_head_t;

/**
 * Checks a complete request head: the bytes from the request line through
 * the empty line that ends the header block (len bytes, lines ended by LF
 * or CRLF). max_body is the body limit. Refused (out->status 400) are a
 * malformed request line or version other than HTTP/1.0 and HTTP/1.1, a
 * stray CR, a control character, a folded or malformed header line, a
 * header name containing whitespace, more than one Content-Length, a
 * Content-Length that is not plain decimal digits, Transfer-Encoding with
 * Content-Length, in an HTTP/1.0 request, repeated or other than "chunked",
 * an Expect other than 100-continue, and a body on a method that takes
 * none (everything but POST, PUT and PATCH). A declared body over max_body
 * is 413. Always fills *out.
 */
void mizan_framing_check_head(const char *head, size_t len, uint64_t max_body, mizan_head_t *out);

/** Where a chunked body is being read; zero-initialise before the first chunk. */
typedef struct mizan_chunked {
    int state;      /**< parser state (framing.c) */
    uint64_t left;  /**< bytes of the current chunk still to come */
    uint64_t total; /**< body bytes so far */
    int digits;     /**< hex digits of the size line so far */
} mizan_chunked_t;

/**
 * Follows n more bytes of a chunked body. Returns the bytes that belong to
 * the body (n, or fewer when the body ended inside the bytes given, *done
 * then true), or -1 with *status (400 malformed, 413 over max_body) and
 * reason filled. Chunk extensions and trailers are refused: evhttp cannot
 * read them.
 */
long mizan_framing_chunked(mizan_chunked_t *st, const char *p, size_t n, uint64_t max_body, bool *done,
                           int *status, char *reason, size_t reason_len);

#endif /* MIZAN_FRAMING_H */
