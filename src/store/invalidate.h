/*
 * invalidate.h - what a mutation made stale (PROTOCOL.md section 5):
 * building the target list with auto-scoping, then recording it (revision
 * bumps and events) before the mutation's response is sent.
 */
#ifndef MIZAN_INVALIDATE_H
#define MIZAN_INVALIDATE_H

#include <jansson.h>

#include "registry.h"

/**
 * The targets of a mutation (new array): for each context the function
 * invalidates, {"context": C, "params": {...}} when every param of C is
 * required, is an arg of the mutation, and the arg has exactly one
 * canonical value by C's declared types (mizan_params_canonical(); the
 * params are those canonical values, e.g. 12.0 becomes 12) that validates
 * as C's params; else {"context": C}. Then the handler's run-time targets
 * (borrowed, may be NULL), scoped the same way; duplicates dropped. NULL on
 * allocation failure. Used for successful mutations and for mutations that
 * may have run but failed (PROTOCOL.md section 5).
 */
json_t *mizan_invalidate_targets(const mizan_function_t *fn, const json_t *args, const json_t *runtime);

#endif /* MIZAN_INVALIDATE_H */
