/*
 * events.h - invalidation events to clients: Server-Sent Events streams
 * at {prefix}/events/ (PROTOCOL.md section 7).
 *
 * Each I/O loop keeps its own streams. An event published on any thread is
 * rendered once into an SSE frame and posted to every loop, which writes it
 * to the streams whose context filter matches. A stream whose unsent bytes
 * pass sse_max_buffer_bytes (a client that stopped reading) is dropped so
 * it cannot stall or bloat the others. A comment line goes out every
 * sse_heartbeat_s seconds.
 *
 * PROTOCOL.md section 7 rev 2: streams open only for contexts the caller
 * may read; messages from the events channel are checked before they are
 * written anywhere; a client may send at most sse_max_input_bytes on its
 * stream (conn.c); streams are bounded per instance and per address.
 */
#ifndef MIZAN_EVENTS_H
#define MIZAN_EVENTS_H

#include <stddef.h>

#include "gateway.h"

/** Sets up the loop's stream list and heartbeat. Main thread, before the loop runs. */
int mizan_events_loop_init(mizan_loop_t *loop, mizan_err_t *err);

/** Frees what is left of the loop's streams (after the loop thread stopped). */
void mizan_events_loop_deinit(mizan_loop_t *loop);

/**
 * Delivers one event (the JSON text published on the events channel,
 * borrowed) to every matching stream of this instance. Any thread.
 */
void mizan_events_publish(mizan_gateway_t *gw, const char *event, size_t len);

/** Serves GET {prefix}/events/?contexts=a,b (route.c, after identification). */
void mizan_events_handle(mizan_exchange_t *ex);

/** Ends every stream of the loop (graceful shutdown). Loop thread. */
void mizan_events_close_all(mizan_loop_t *loop);

/** Messages from the events channel dropped as malformed since start. Any thread. */
size_t mizan_events_dropped(void);

/** Streams open on the whole instance. Any thread. */
size_t mizan_events_clients(mizan_gateway_t *gw);

#endif /* MIZAN_EVENTS_H */
