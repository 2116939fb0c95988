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

/** The value of one hexadecimal digit (either case), or -1. */
static inline int mizan_hex_digit(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

#endif /* MIZAN_TEXT_H */
