/*
 * call.h - POST {prefix}/call/. Loop thread.
 */
#ifndef MIZAN_CALL_H
#define MIZAN_CALL_H

#include <stdbool.h>

#include "services.h"

void mizan_call_handle(mizan_exchange_t *ex);

/**
 * Drain budget spent: a mutation whose handler is still out is abandoned,
 * its targets invalidated, then answered 503 with details.invalidate.
 * Returns false (nothing done) for any other exchange. Loop thread.
 */
bool mizan_call_abort(mizan_exchange_t *ex);

#endif /* MIZAN_CALL_H */
