/*
 * loop.h - the I/O loops: thread, event base, evhttp and listener, the
 * message queue through which other threads run work on a loop, and the
 * drain and abort of a graceful shutdown (types in http.h).
 */
#ifndef MIZAN_LOOP_H
#define MIZAN_LOOP_H

#include "error.h"
#include "http.h"

/**
 * Creates the loop's base, evhttp and connection watch (cfg, draining,
 * hooks and services must be set). Main thread. -1 with err.
 */
int mizan_loop_init(mizan_loop_t *loop, int index, mizan_err_t *err);

/** Binds the listener on port and starts the thread. Main thread. -1 with err. */
int mizan_loop_start(mizan_loop_t *loop, int port, mizan_err_t *err);

/** Runs fn(arg) on loop's thread soon. Any thread. -1 on allocation failure. */
int mizan_loop_post(mizan_loop_t *loop, void (*fn)(void *arg), void *arg);

/** Closes the listener and runs the drain hook; new requests on open connections still arrive. Any thread. */
void mizan_loop_begin_drain(mizan_loop_t *loop);

/** No exchange unanswered and no reply unflushed. Any thread. */
bool mizan_loop_idle(mizan_loop_t *loop);

/** Runs the abort hook on the loop (drain budget spent). Any thread. */
void mizan_loop_abort(mizan_loop_t *loop);

/** Stops the loop thread and joins it; the loop's objects stay until mizan_loop_deinit(). Main thread. */
void mizan_loop_stop(mizan_loop_t *loop);

/** Runs what is still posted and frees the loop. Main thread, after stop and after the services let go. */
void mizan_loop_deinit(mizan_loop_t *loop);

#endif /* MIZAN_LOOP_H */
