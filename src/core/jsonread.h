/*
 * jsonread.h - a fast reader of JSON documents into jansson values, for
 * answers that are read on the hot path (upstream answers): jansson's own
 * json_loadb() spends most of its time in a character-at-a-time lexer.
 *
 * The reader handles the common shape of a document itself (ASCII strings
 * with any escape but \u0000 and surrogates, integers of up to 18 digits,
 * reals, nesting up to 64 levels) and hands anything else, valid or not, to
 * json_loadb() with JSON_DECODE_ANY, so that what is accepted and what it
 * becomes is exactly what jansson decides: the two agree on every input
 * (tests/fuzz/fuzz_jsonread.c checks it).
 *
 * Any thread; no globals.
 */
#ifndef MIZAN_JSONREAD_H
#define MIZAN_JSONREAD_H

#include <stddef.h>

#include <jansson.h>

/**
 * The JSON document text[0..len) as a new value (any JSON value at the top,
 * like JSON_DECODE_ANY), or NULL when it is not JSON (or memory ran out).
 */
json_t *mizan_json_read(const char *text, size_t len);

/**
 * The fast reader alone: the new value, or NULL when it declined the input
 * (not JSON, or a shape it leaves to jansson). For tests and fuzzing.
 */
json_t *mizan_json_read_fast(const char *text, size_t len);

#endif /* MIZAN_JSONREAD_H */
