/*
 * error.h - the internal error report.
 *
 * Internal functions return 0 / -1 (or NULL) and describe a failure in a
 * caller-provided mizan_err_t, which is a fixed buffer: filling it never
 * allocates, so it is safe on every failure path, out-of-memory included.
 */
#ifndef MIZAN_ERROR_H
#define MIZAN_ERROR_H

#include <stddef.h>

#include "mizan/mizan.h"

/** A failure description; caller-owned, usually on the stack. */
typedef struct mizan_err {
    char msg[512]; /**< NUL-terminated human-readable reason ("" when none) */
} mizan_err_t;

/**
 * Formats a reason into err (printf-style, truncated to fit). err may be
 * NULL. Returns -1 so callers can `return mizan_err_set(err, ...)`.
 */
int mizan_err_set(mizan_err_t *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif /* MIZAN_ERROR_H */
