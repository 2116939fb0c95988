/*
 * jcs.h - canonical JSON (RFC 8785, "JCS") for cache keys.
 *
 * Cache keys hash the canonical text of a context's params (PROTOCOL.md
 * section 6), so two gateways, or a gateway and a client computing keys on
 * its own, must produce the same bytes for the same value. The text has no
 * whitespace, object members sorted by the UTF-16 code units of their names,
 * strings escaping only '"', '\' and control characters, everything else raw
 * UTF-8, integers in decimal and reals as ECMAScript prints them.
 */
#ifndef MIZAN_JCS_H
#define MIZAN_JCS_H

#include <stddef.h>

#include <jansson.h>

#include "error.h"

/** Deepest nesting accepted: a scalar or an empty container at the top is depth 1. */
#define MIZAN_JCS_MAX_DEPTH 64

/**
 * Returns the canonical text of v as a new malloc'd NUL-terminated string
 * (the caller frees it) and stores its length, without the NUL, in *len
 * when len is not NULL. Borrows v.
 *
 * Fails (NULL, err filled) on: nesting deeper than MIZAN_JCS_MAX_DEPTH,
 * strings or member names that are not valid UTF-8, reals that are NaN or
 * infinite (RFC 8785 has no text for them), out of memory.
 *
 * Thread-safe: it only reads v, so several threads may canonicalize the same
 * value as long as nobody modifies it meanwhile.
 */
char *mizan_jcs_dump(const json_t *v, size_t *len, mizan_err_t *err);

/**
 * Writes the ECMAScript Number::toString text of d (shortest digits that
 * read back as d, e.g. 1.0 -> "1", 1e21 -> "1e+21", 0.1 -> "0.1", -0.0 ->
 * "0") into out, which holds outlen bytes (32 are always enough). Returns the
 * text's length, or -1 for NaN, infinities or a short buffer. Thread-safe.
 */
int mizan_jcs_number(double d, char *out, size_t outlen);

#endif /* MIZAN_JCS_H */
