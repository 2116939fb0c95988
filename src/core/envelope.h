/*
 * envelope.h - the protocol's error envelope (PROTOCOL.md section 2): the
 * one renderer behind every client-facing error, whether an HTTP answer
 * (http/reply.c), a connection-level refusal (http/conn.c) or one
 * function's failure inside a context bundle (api/context.c).
 *
 * Pure functions; any thread.
 */
#ifndef MIZAN_ENVELOPE_H
#define MIZAN_ENVELOPE_H

#include <jansson.h>

#include "mizan/mizan.h"

/** The default human message of a code. */
const char *mizan_envelope_message(mizan_code_t code);

/**
 * The envelope's text {"error":{code,message,details}} (new, malloc'd;
 * NULL when out of memory). message NULL picks the default; details
 * stolen (NULL renders null).
 */
char *mizan_envelope_render(mizan_code_t code, const char *message, json_t *details);

/**
 * The error object of one function's failure, as under a context's
 * "errors" (new reference). code MIZAN_OK counts as INTERNAL_ERROR, whose
 * real reason (message) is logged with the request id and function name
 * and replaced by "internal error" with the request id in details; other
 * codes keep message (NULL: the code's name) and details (borrowed; NULL
 * renders null).
 */
json_t *mizan_envelope_failure(mizan_code_t code, const char *message, const json_t *details, const char *rid,
                               const char *function);

#endif /* MIZAN_ENVELOPE_H */
