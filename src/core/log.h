/*
 * log.h - structured logging: one JSON object per line on stderr.
 *
 * Every line carries "ts" (UTC, milliseconds), "level", "msg" and the
 * instance id, plus fields the caller adds. A line is formatted into a
 * buffer on the caller's stack and written with one write(2), so lines from
 * different threads never interleave and no lock is taken. Nothing secret
 * (tokens, secrets, cookie values) is ever passed to these functions.
 */
#ifndef MIZAN_LOG_H
#define MIZAN_LOG_H

#include <stdbool.h>

#include <jansson.h>

#include "mizan/mizan.h"

/** Sets the minimum level written (default info) and the instance id. Start-up only. */
void mizan_log_setup(mizan_log_level_t level, const char *instance);

/** Parses "debug", "info", "warn", "error"; -1 when unknown. */
int mizan_log_level_parse(const char *name);

/** True when a line of this level would be written. Thread-safe. */
bool mizan_log_enabled(mizan_log_level_t level);

/**
 * Writes a line with msg and the members of fields (borrowed; may be NULL)
 * merged in. Thread-safe.
 */
void mizan_log_fields(mizan_log_level_t level, const char *msg, const json_t *fields);

/** One field of mizan_log_line(). */
typedef struct mizan_log_field {
    const char *key; /**< a plain ASCII name (written as is) */
    const char *str; /**< the value, a string; NULL: the value is num */
    long long num;   /**< the value when str is NULL */
} mizan_log_field_t;

/**
 * The same line as mizan_log_fields() with the n fields in order, formatted
 * straight into a stack buffer: no JSON tree, no allocation (for lines
 * written on every request). A string that is not valid UTF-8 is left out,
 * as mizan_log_fields() leaves it out. Thread-safe.
 */
void mizan_log_line(mizan_log_level_t level, const char *msg, const mizan_log_field_t *fields, size_t n);

#endif /* MIZAN_LOG_H */
