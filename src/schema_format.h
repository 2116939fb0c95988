/*
 * schema_format.h - the `format` assertions of the input validator
 * (src/schema.c), used when the configuration turns format assertion on
 * (by default `format` is an annotation only).
 */
#ifndef MIZAN_SCHEMA_FORMAT_H
#define MIZAN_SCHEMA_FORMAT_H

#include <stdbool.h>
#include <stddef.h>

/**
 * Whether str (len bytes, UTF-8, may hold NUL bytes) is a valid `format`
 * value: date-time, date, time (RFC 3339, leap seconds only at 23:59:60
 * UTC), email and idn-email (RFC 5321 mailbox: dot-atom or quoted local
 * part, host name or address literal), ipv4 (dotted quad, no leading
 * zeros), ipv6 (RFC 4291 text, no zone), hostname, uri (absolute, RFC
 * 3986, IPvFuture hosts too), uri-reference, iri, iri-reference, uuid
 * (8-4-4-4-12 hex), duration (RFC 3339 appendix A), uri-template (RFC
 * 6570), json-pointer, relative-json-pointer and regex (an ECMA-262 pattern
 * PCRE2 compiles in the validator's flavour). A format the gateway does not know is
 * always valid, as JSON Schema prescribes. Pure; thread-safe.
 */
bool mizan_schema_format_check(const char *format, const char *str, size_t len);

#endif /* MIZAN_SCHEMA_FORMAT_H */
