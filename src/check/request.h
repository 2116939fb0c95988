/*
 * request.h - reading what a client sent: the JSON body (size, nesting
 * depth and syntax checked before any recursion) and the query string
 * (strict percent-decoding, repeated keys refused).
 */
#ifndef MIZAN_REQUEST_H
#define MIZAN_REQUEST_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "error.h"

/**
 * Parses a request body as one JSON value. Nesting deeper than max_depth is
 * refused by a linear pre-scan before jansson recurses; invalid UTF-8,
 * duplicate object keys and integers outside int64 are refused by the
 * parser. Returns a new reference, or NULL with a client-safe reason.
 */
json_t *mizan_request_parse_json(const char *buf, size_t len, int max_depth, mizan_err_t *err);

/**
 * Decodes an application/x-www-form-urlencoded query string into an object
 * of string values (new reference). Malformed percent-escapes, invalid
 * UTF-8, NUL bytes and repeated keys are refused: NULL with a reason.
 * query may be NULL or empty (an empty object).
 */
json_t *mizan_request_parse_query(const char *query, mizan_err_t *err);

/**
 * True when the len bytes at s are a function or context name of PROTOCOL.md
 * section 4: [A-Za-z_][A-Za-z0-9_.]* (so an embedded NUL never matches).
 */
bool mizan_request_name_valid(const char *s, size_t len);

#endif /* MIZAN_REQUEST_H */
