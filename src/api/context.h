/*
 * context.h - GET {prefix}/ctx/{name}/. Loop thread.
 */
#ifndef MIZAN_CONTEXT_H
#define MIZAN_CONTEXT_H

#include "services.h"

/** Serves context name for ex (already identified). */
void mizan_context_handle(mizan_exchange_t *ex, const char *name);

/** Frees what a loop's context requests remembered (after the loop thread stopped). */
void mizan_context_loop_deinit(mizan_services_t *svc);

#endif /* MIZAN_CONTEXT_H */
