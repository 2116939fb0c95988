/*
 * text.h - small string helpers for the hot path. Pure; any thread.
 */
#ifndef MIZAN_TEXT_H
#define MIZAN_TEXT_H

#include <stddef.h>
#include <string.h>

/** Copies src into out (size > 0 bytes), cut short to fit: snprintf("%s") without the formatter. */
static inline void mizan_text_copy(char *out, size_t size, const char *src)
{
    size_t n = strlen(src);
    if (n >= size)
        n = size - 1;
    memcpy(out, src, n);
    out[n] = '\0';
}

#endif /* MIZAN_TEXT_H */
