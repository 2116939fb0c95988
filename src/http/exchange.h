/*
 * exchange.h - the life of one request in flight: created by the router,
 * ended by the reply (reply.c) or handed over to a long-lived stream.
 * Loop thread only.
 */
#ifndef MIZAN_EXCHANGE_H
#define MIZAN_EXCHANGE_H

#include "http.h"

/** A new exchange for req, linked into the loop's live list. NULL when out of memory. */
mizan_exchange_t *mizan_exchange_new(mizan_loop_t *loop, struct evhttp_request *req);

/** Hands the request over to a long-lived stream: the exchange is logged and freed, req returned. */
struct evhttp_request *mizan_exchange_detach(mizan_exchange_t *ex);

/** Logs, counts and frees an answered exchange (reply.c calls it). */
void mizan_exchange_finish(mizan_exchange_t *ex, int status);

/** Writes a fresh request id (32 hex digits) into out. Loop thread. */
void mizan_exchange_request_id(mizan_loop_t *loop, char *out, size_t len);

#endif /* MIZAN_EXCHANGE_H */
