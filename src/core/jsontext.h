/*
 * jsontext.h - JSON text for an answer, rendered without the heap when it
 * fits: the reply path renders every response body, and growing a heap
 * string by doubling costs more than writing the text itself.
 *
 * Any thread; each thread has its own scratch buffer.
 */
#ifndef MIZAN_JSONTEXT_H
#define MIZAN_JSONTEXT_H

#include <stddef.h>

#include <jansson.h>

/**
 * Renders v (borrowed) with jansson's flags. Returns the text (not
 * NUL-terminated; *len bytes) in the calling thread's scratch buffer,
 * valid until that thread's next call, or, when it does not fit, a new
 * malloc'd string also stored in *owned for the caller to free (*owned is
 * NULL otherwise). NULL when v cannot be rendered or memory runs out.
 */
const char *mizan_jsontext_render(const json_t *v, size_t flags, size_t *len, char **owned);

#endif /* MIZAN_JSONTEXT_H */
