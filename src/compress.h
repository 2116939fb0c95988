/*
 * compress.h - gzip of large response bodies (PROTOCOL.md section 8):
 * Accept-Encoding negotiation with q-values, and zlib's deflate in gzip
 * framing. reply.c asks mizan_compress_body() before every answer; event
 * streams never go through it, so they are never compressed.
 *
 * Pure functions of their arguments: any thread may call them, and the
 * thresholds come from the (immutable) config.
 */
#ifndef MIZAN_COMPRESS_H
#define MIZAN_COMPRESS_H

#include <stdbool.h>
#include <stddef.h>

struct evbuffer;
struct evhttp_request;

/**
 * Whether an Accept-Encoding header value (NULL: absent) accepts gzip:
 * `gzip` or `x-gzip` with a q-value above 0, or else `*` with a q-value
 * above 0. An explicit `gzip;q=0` refuses even when `*` is accepted; a
 * malformed q-value makes its entry count as absent. Case-insensitive.
 */
bool mizan_compress_accepts_gzip(const char *accept_encoding);

/**
 * Appends len bytes of in, gzip-compressed at level (1..9), to out.
 * Returns 0, or -1 (out unchanged) when zlib fails.
 */
int mizan_compress_gzip(const char *body, size_t len, int level, struct evbuffer *out);

/**
 * Decides for one answer to req: a body longer than min_bytes, with
 * compression on (level 1..9), gets `Vary: Accept-Encoding`; when the
 * request also accepts gzip (and is not HEAD, and the answer has no
 * Content-Encoding yet), the compressed body is appended to out with
 * `Content-Encoding: gzip`, and the function returns true. Otherwise
 * returns false and out is untouched (the caller sends the body as is).
 * A body that does not shrink is sent as is. Loop thread of req.
 */
bool mizan_compress_body(struct evhttp_request *req, size_t min_bytes, int level, const char *body, size_t len,
                         struct evbuffer *out);

#endif /* MIZAN_COMPRESS_H */
