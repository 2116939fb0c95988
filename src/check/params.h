/*
 * params.h - context params: how a query-string text becomes a typed value
 * (PROTOCOL.md section 5), and which canonical value a mutation's argument
 * names for auto-scoped invalidation.
 *
 * Both directions use one set of rules, so a scoped invalidation target is
 * always keyed exactly like the bundles it must reach. A param's declared
 * "type" is a string or an array of the strings "integer", "boolean",
 * "null" and "string" (the registry allows nothing else for params).
 *
 * Pure functions; any thread.
 */
#ifndef MIZAN_PARAMS_H
#define MIZAN_PARAMS_H

#include <jansson.h>

/**
 * Coerces a query-string value s by the declared types (borrowed): an
 * integer when "integer" is declared and s is plain decimal ("5", "-3"),
 * true/false when "boolean" is declared and s is "true"/"false", null when
 * "null" is declared and s is "" or "null", else the string s (which
 * validation then reports when "string" is not declared). Tried in that
 * order. Returns a new reference (NULL only when out of memory).
 */
json_t *mizan_params_coerce(const json_t *types, const char *s);

/**
 * The one canonical param value a mutation's argument v (borrowed) names,
 * or NULL when there is not exactly one. v is read two ways: as the JSON
 * value it is (an integer-valued number such as 12.0 counts as the integer
 * 12), when its type is declared; and as the text a client would put in the
 * query string for it, coerced by mizan_params_coerce(). When the readings
 * that fit the declared types agree, that value is returned (new
 * reference); null is read only as itself. When none fits, or two fit and
 * differ (the string "1" for a
 * param typed ["integer","string"]), or v is an array, an object or a
 * fractional number, NULL: a bundle could not be named with certainty.
 */
json_t *mizan_params_canonical(const json_t *types, const json_t *v);

#endif /* MIZAN_PARAMS_H */
