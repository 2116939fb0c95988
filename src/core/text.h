/*
 * text.h - small string helpers for the hot path. Pure; any thread.
 */
#ifndef MIZAN_TEXT_H
#define MIZAN_TEXT_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
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

/**
 * Grows *buf (malloc'd, *cap bytes; NULL and 0 at first) to hold at least
 * need bytes, doubling from first. Returns 0, or -1 when out of memory
 * (*buf and *cap unchanged).
 */
static inline int mizan_text_reserve(char **buf, size_t *cap, size_t need, size_t first)
{
    if (*buf != NULL && need <= *cap)
        return 0;
    if (need > SIZE_MAX / 2)
        return -1;
    size_t c = *cap < first ? first : *cap;
    while (c < need)
        c *= 2;
    char *p = realloc(*buf, c);
    if (p == NULL)
        return -1;
    *buf = p;
    *cap = c;
    return 0;
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
