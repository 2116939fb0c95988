/*
 * jsonwrite.h - a fast writer of compact JSON text from jansson values,
 * byte for byte what json_dumpb(v, JSON_COMPACT | JSON_PRESERVE_ORDER)
 * writes: the reply path renders every answer, and jansson's dumper pays
 * a formatted print and a hash-table entry for every object and array it
 * walks (its loop check).
 *
 * Strings are checked as UTF-8 the way jansson checks them; reals are
 * printed by jansson itself; anything the writer does not handle (other
 * flags, deep nesting, invalid UTF-8) makes it decline, and the caller
 * falls back to jansson. tests/fuzz/fuzz_jsonwrite.c checks that the two
 * agree on every value. Any thread; no globals.
 */
#ifndef MIZAN_JSONWRITE_H
#define MIZAN_JSONWRITE_H

#include <stddef.h>

#include <jansson.h>

/** What mizan_json_write() did. */
typedef enum mizan_json_write_rc {
    MIZAN_JSONW_DECLINED = -2, /**< not handled here: use jansson */
    MIZAN_JSONW_NOROOM = -1,   /**< the text is longer than the buffer */
    MIZAN_JSONW_OK = 0,
} mizan_json_write_rc_t;

/**
 * Writes v (borrowed) as json_dumpb(v, flags) would into buf[0..cap);
 * *len receives the length. flags may only hold JSON_COMPACT,
 * JSON_PRESERVE_ORDER and JSON_ENCODE_ANY; without JSON_ENCODE_ANY only an
 * object or an array is written (like jansson).
 */
mizan_json_write_rc_t mizan_json_write(const json_t *v, size_t flags, char *buf, size_t cap, size_t *len);

#endif /* MIZAN_JSONWRITE_H */
