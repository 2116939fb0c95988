/*
 * route.h - the protocol's routes: every request enters here (the loop's
 * request hook), and the loop's drain and abort hooks. Loop thread.
 */
#ifndef MIZAN_ROUTE_H
#define MIZAN_ROUTE_H

#include "services.h"

/** Every request (the loop's request hook; arg is the loop). */
void mizan_route_request(struct evhttp_request *req, void *arg);

/** The loop's drain hook: ends the loop's event streams. */
void mizan_route_drain(mizan_loop_t *loop);

/** The loop's abort hook: answers every exchange still open (drain budget spent). */
void mizan_route_abort(mizan_loop_t *loop);

#endif /* MIZAN_ROUTE_H */
