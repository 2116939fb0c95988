/*
 * conn.h - per-connection request deadlines: a client must deliver a whole
 * request (head and body) within idle_timeout_s of its first byte.
 *
 * evhttp's own timeout restarts on every byte read, so a client trickling
 * one header byte a second (slowloris) would hold a connection for hours.
 * Each loop therefore creates the connections' bufferevents itself
 * (evhttp_set_bevcb), watches their input buffers for the first byte of a
 * request, learns from the router when the request was complete, and a
 * sweep every half second closes connections whose request is overdue.
 *
 * The same watch checks the framing of every request before evhttp reads
 * it (framing.h) and answers a refused one itself, in the envelope, and
 * bounds what the client of an event stream may send.
 *
 * Loop-thread only.
 */
#ifndef MIZAN_CONN_H
#define MIZAN_CONN_H

#include "gateway.h"

struct evhttp_connection;
struct evhttp_request;

/** Installs the watch on the loop's evhttp. Before the loop runs. */
int mizan_conns_init(mizan_loop_t *loop, mizan_err_t *err);

/** Frees what is left, after evhttp_free() (which closed every connection). */
void mizan_conns_deinit(mizan_loop_t *loop);

/**
 * The request was read completely (the router has it): its deadline is met,
 * and the connection is not swept until its answer goes out.
 */
void mizan_conns_request_read(mizan_loop_t *loop, struct evhttp_request *req);

/** The answer to the connection's request is being sent (not for streams). */
void mizan_conns_reply_sending(mizan_loop_t *loop, struct evhttp_request *req);

/**
 * The request's connection now carries an event stream: what its client
 * sends is discarded, and past sse_max_input_bytes the stream is closed.
 */
void mizan_conns_streaming(mizan_loop_t *loop, struct evhttp_request *req);

/** The stream on req's connection ended (graceful shutdown): read requests again. */
void mizan_conns_stream_ended(mizan_loop_t *loop, struct evhttp_request *req);

/**
 * The answer to req was written out (its on-complete callback): a
 * connection refused meanwhile gets its own answer next.
 */
void mizan_conns_reply_flushed(mizan_loop_t *loop, struct evhttp_request *req);

/**
 * Sets the close callback of evcon (NULL to clear) without displacing the
 * deadline bookkeeping, which also needs to know when the connection goes.
 * Use it instead of evhttp_connection_set_closecb().
 */
void mizan_conns_on_close(mizan_loop_t *loop, struct evhttp_connection *evcon,
                          void (*cb)(struct evhttp_connection *, void *), void *arg);

#endif /* MIZAN_CONN_H */
