/*
 * reply.h - every response goes through these; each ends its exchange.
 * Loop thread.
 */
#ifndef MIZAN_REPLY_H
#define MIZAN_REPLY_H

#include <jansson.h>

#include "http.h"
#include "mizan/mizan.h"

/** Sends body (borrowed text) with status and the protocol's headers; ends the exchange. */
void mizan_reply_text(mizan_exchange_t *ex, int status, const char *body, size_t len);

/** Sends JSON (stolen) with status 200; ends the exchange. */
void mizan_reply_json(mizan_exchange_t *ex, json_t *body);

/**
 * Sends the protocol error envelope (core/envelope.c); message NULL picks a
 * default; details stolen (NULL renders null). INTERNAL_ERROR hides message
 * (logged instead) and puts the request id in details. Ends the exchange.
 */
void mizan_reply_error(mizan_exchange_t *ex, mizan_code_t code, const char *message, json_t *details);

/** 503 with Retry-After: shutting down, or overloaded (the work queue is full). */
void mizan_reply_unavailable(mizan_exchange_t *ex);

/** A 422 from a validation error list (stolen). */
void mizan_reply_invalid(mizan_exchange_t *ex, json_t *errors);

/** Adds a response header before a reply. */
void mizan_reply_header(mizan_exchange_t *ex, const char *name, const char *value);

#endif /* MIZAN_REPLY_H */
