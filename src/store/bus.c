/*
 * bus.c - the event bus (see bus.h).
 */
#include "bus.h"

void mizan_bus_attach(mizan_bus_t *bus, mizan_bus_sink_t sink, void *arg)
{
    bus->sink = sink;
    bus->arg = arg;
}

void mizan_bus_publish(const mizan_bus_t *bus, const char *event, size_t len)
{
    if (bus != NULL && bus->sink != NULL)
        bus->sink(bus->arg, event, len);
}
