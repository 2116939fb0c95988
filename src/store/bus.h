/*
 * bus.h - the event bus: where invalidation events go once recorded. The
 * store publishes on it; whoever delivers events to clients (the event
 * streams of api/events.c) is its sink, attached at assembly. The bus
 * itself knows neither side.
 *
 * DESIGN (threads): the sink is set before the loops run and never
 * changes; mizan_bus_publish() may be called from any thread and calls the
 * sink on that thread, which must not block.
 */
#ifndef MIZAN_BUS_H
#define MIZAN_BUS_H

#include <stddef.h>

/** Receives one event (JSON text, borrowed for the call). */
typedef void (*mizan_bus_sink_t)(void *arg, const char *event, size_t len);

typedef struct mizan_bus {
    mizan_bus_sink_t sink; /**< NULL: events are dropped (nobody listens) */
    void *arg;             /**< the sink's */
} mizan_bus_t;

/** Attaches the sink. Start-up only. */
void mizan_bus_attach(mizan_bus_t *bus, mizan_bus_sink_t sink, void *arg);

/** Hands one event (borrowed) to the sink. Any thread. */
void mizan_bus_publish(const mizan_bus_t *bus, const char *event, size_t len);

#endif /* MIZAN_BUS_H */
