/*
 * schema.h - the gateway's input validator: a compiler and validator for
 * JSON Schema, draft-07 and 2020-12 (PROTOCOL.md section 4's keyword subset
 * is the floor; docs/validation.md is the user's guide).
 *
 * A function's input schema (and a context's params schema) is compiled once
 * at start-up into an immutable mizan_schema_t, then used by every I/O or
 * worker thread to validate `args` / `params` and fill in `default` values.
 *
 * Vocabulary. A schema's "$schema" picks the dialect (draft-07 when absent):
 *   - both: type, enum, const, the numeric, string, array and object
 *     assertions, properties, patternProperties, additionalProperties,
 *     propertyNames, required, contains, allOf, anyOf, oneOf, not,
 *     if/then/else, $ref, $id, definitions and $defs, format, default, and
 *     the annotations (title, description, $comment, examples, readOnly,
 *     writeOnly, deprecated, content*, discriminator, example, x-*);
 *   - draft-07: items (a schema or an array), additionalItems, dependencies,
 *     "$id": "#name" anchors, and "$ref" overriding its siblings;
 *   - 2020-12: prefixItems, items, minContains, maxContains,
 *     dependentRequired, dependentSchemas, unevaluatedItems,
 *     unevaluatedProperties, $anchor, $dynamicAnchor, $dynamicRef.
 * Any other keyword is refused at compile time (unless opts.ignore_unknown),
 * so a typo in a declared schema stops start-up instead of silently
 * validating nothing.
 *
 * References. "$ref" resolves JSON pointers, "$id" base URIs and anchors
 * within the schema, and documents of a configured local directory
 * (opts.dir, named by URIs under opts.base_uri). Anything else, any network
 * URI in particular, is refused at compile time with a message naming it.
 * A cycle of references that never looks into the value ({"$ref": "#"} at
 * the root, A -> B -> A through allOf) is refused at compile time too.
 *
 * Semantics worth knowing:
 *   - Equality (enum, const, uniqueItems) is JSON Schema equality: numbers
 *     compare by mathematical value (1 == 1.0), objects ignore member order.
 *   - "integer" matches JSON integers and reals with a zero fraction (1.0).
 *   - multipleOf is decided exactly on the shortest decimal form of each
 *     number (what was written in the JSON text), so 0.0075 is a multiple of
 *     0.0001 and 0.00751 is not; integer by integer is exact integer math.
 *   - minLength / maxLength count Unicode code points, not bytes.
 *   - pattern is a PCRE2 regex in UTF mode, searched unanchored like
 *     ECMA-262 RegExp.prototype.test; `$` matches only at the very end and
 *     \uXXXX escapes are understood, as in ECMA-262.
 *   - format is an annotation unless opts.format_assertion (see
 *     schema_format.h for the formats checked).
 *   - When a value has the wrong `type`, the other keywords of that schema
 *     are not reported for it (they would only repeat the same mistake).
 *   - anyOf / oneOf with no matching branch report the violations of the
 *     branch that came closest (fewest violations), typed "anyOf"/"oneOf".
 *
 * DESIGN (threads, cost): a compiled schema is a graph of nodes, one per
 * schema position (compiling is linear in the schema's size), never
 * written after mizan_schema_compile() returns, so any number of threads
 * may validate against it at once. Validation keeps its state on the
 * calling thread; its work is bounded per call by MIZAN_SCHEMA_BUDGET.
 */
#ifndef MIZAN_SCHEMA_H
#define MIZAN_SCHEMA_H

#include <stdbool.h>

#include <jansson.h>

#include "error.h"

/** Deepest nesting of subschemas accepted by mizan_schema_compile(). */
#define MIZAN_SCHEMA_MAX_DEPTH 64

/**
 * Work units one mizan_schema_validate() call may spend (roughly
 * nanoseconds of one core's work; see the DESIGN note below). Past it the
 * instance is refused as a whole with one entry of type "budget".
 */
#define MIZAN_SCHEMA_BUDGET 5000000

/** A compiled schema: immutable, shareable across threads. */
typedef struct mizan_schema mizan_schema_t;

/** Dialects (picked by a schema's "$schema"; the options give the default). */
typedef enum mizan_schema_dialect {
    MIZAN_SCHEMA_DRAFT7 = 0,
    MIZAN_SCHEMA_DRAFT2020_12 = 1,
} mizan_schema_dialect_t;

/** How schemas are compiled. Zero-initialised: the defaults. */
typedef struct mizan_schema_opts {
    const char *dir;       /**< local directory of schema documents for $ref, or NULL: none */
    const char *base_uri;  /**< URI prefix naming files of dir, and the base URI
                                of a schema without "$id"; NULL: "mizan:/schemas/" */
    bool format_assertion; /**< "format" is asserted (default: an annotation) */
    bool ignore_unknown;   /**< unknown keywords are ignored, as JSON Schema says,
                                instead of refused (the suite runner uses this) */
    int dialect;           /**< dialect without "$schema" (mizan_schema_dialect_t) */
} mizan_schema_opts_t;

/**
 * Sets the options mizan_schema_compile() uses (copied; NULL: back to the
 * defaults). Call at start-up, before any thread compiles.
 */
void mizan_schema_set_defaults(const mizan_schema_opts_t *opts);

/**
 * mizan_schema_compile() with explicit options (borrowed for the call;
 * NULL: the defaults). Documents read from opts->dir are kept by the
 * compiled schema.
 */
mizan_schema_t *mizan_schema_compile_opts(const json_t *schema, const mizan_schema_opts_t *opts,
                                          mizan_err_t *err);

/**
 * The JSON types a value of the root's property `name` may have, as an
 * array of type names in coercion order: "integer", "number", "boolean",
 * "null", "string", "object", "array" (following $ref, allOf, anyOf, oneOf,
 * enum and const). Borrowed, valid as long as s; NULL when the root
 * declares no such property. Used to coerce query-string params.
 */
const json_t *mizan_schema_property_types(const mizan_schema_t *s, const char *name);

/**
 * Compiles a schema. schema is borrowed; the compiled form takes its own
 * reference to it (json_incref) and points into it, so the caller must not
 * modify schema afterwards (freeing its own reference is fine).
 *
 * Returns a new compiled schema (free with mizan_schema_free()), or NULL
 * with err naming the JSON pointer of the offending keyword and the reason,
 * e.g. "/properties/title/minLenght: unknown keyword", "/minLength: must
 * be a non-negative integer", "/pattern: invalid regular expression: ...
 * at offset 3", "/properties/a/$ref: remote reference ... refused", a $ref
 * cycle, or a schema nested deeper than MIZAN_SCHEMA_MAX_DEPTH; a bad root
 * reads "schema: a schema must be an object or a boolean". Also NULL ("out
 * of memory") on allocation failure. Uses the options of
 * mizan_schema_set_defaults(). Call from any thread.
 */
mizan_schema_t *mizan_schema_compile(const json_t *schema, mizan_err_t *err);

/** Frees a compiled schema and drops its reference to the source. NULL ok. */
void mizan_schema_free(mizan_schema_t *s);

/**
 * The source JSON the schema was compiled from (borrowed, valid as long as
 * s; must not be modified).
 */
const json_t *mizan_schema_source(const mizan_schema_t *s);

/**
 * Validates instance against s.
 *
 * Every violation is appended to errors (borrowed JSON array) as
 * {"loc": [loc_root, key or index, ...], "msg": "...", "type": "..."}
 * where type is the keyword that failed ("missing" for required, "false"
 * for the false schema) and msg is short and human ("field required",
 * "expected string, got integer", "must be >= 1", "at most 200
 * characters", "unexpected property", "must be one of [1, 2]").
 * loc_root is "args" or "params" (NULL: loc starts with the first key or
 * index).
 *
 * Returns the number of violations appended (0: valid), or -1 on allocation
 * failure (errors may then hold some entries; the verdict is unknown) or
 * when s or instance is NULL or errors is not an array.
 *
 * When, and only when, the instance is valid, the `default` of every
 * declared property missing from an object is filled in (a deep copy),
 * recursively through the objects present in the instance (properties,
 * additionalProperties and array items); a filled-in default is not itself
 * descended into. instance (borrowed) is therefore modified: pass your own
 * copy.
 *
 * Cost (DESIGN). Validation runs on the I/O loop that read the request,
 * so one call may spend at most MIZAN_SCHEMA_BUDGET work units (about 5 ms
 * of one core): every subschema applied to a value, every violation built,
 * every enum/const comparison, every uniqueItems check and every pattern
 * match is charged. When the budget runs out validation stops, the entries
 * found so far stay in errors and one more is appended at the root:
 * {"loc": [loc_root], "msg": "validation too costly: ...", "type":
 * "budget"}; the caller answers 422 VALIDATION_FAILED as for any other
 * violation. The budget is a count, not a clock, so the verdict on an
 * input never depends on the machine's load. A request is therefore cut
 * off within a few milliseconds rather than moved off the loop: the cut
 * off is deterministic and costs no thread hop on every ordinary request.
 *
 * pattern and hostile regexes: every match runs under a PCRE2 match limit
 * taken from the budget, escalating from a small limit (enough for any
 * ordinary pattern on that string) by eightfold steps up to 1,000,000
 * steps per value; each try is charged its whole limit. A value that hits
 * the per-value limit (or the depth or heap limit) is reported invalid,
 * type "pattern", msg "pattern too costly to evaluate on this value", and
 * no further pattern of that call is evaluated (inside a branch being
 * tried, of anyOf, oneOf, not, if or contains, the whole value is refused
 * with that entry at the root: the branch's verdict cannot be known); many strings each just
 * under the per-value limit exhaust the request's budget instead.
 *
 * uniqueItems encodes every item canonically (numbers by value, object
 * members sorted by name) and sorts the encodings: O(size + n log n)
 * comparisons whatever the items are; there is no hash to collide.
 *
 * Allocation: PCRE2 needs a match data block per concurrent match, and
 * pcre2_match_data cannot live on the stack (its size is opaque). Each
 * thread therefore creates, on its first pattern match, a match data block,
 * a match context and a JIT stack kept in thread-specific storage (pthread
 * key, freed when the thread exits); the compiled schema stays immutable.
 * The block holds a single ovector pair (a test, not a capture), and PCRE2
 * keeps the interpreter's backtracking frames in it between calls, so
 * steady-state matching allocates nothing. uniqueItems allocates a
 * temporary buffer of its items' encodings.
 *
 * Thread-safe: any number of threads may validate against one s at once.
 */
int mizan_schema_validate(const mizan_schema_t *s, json_t *instance, const char *loc_root,
                          json_t *errors);

#endif /* MIZAN_SCHEMA_H */
