/*
 * codegen.h - client code generation from the schema document
 * (docs/schema-document.md): `mizand codegen --lang ts` writes one
 * TypeScript file with typed wrappers for every function and context of a
 * registry, for the @mizan/client package (docs/codegen.md).
 *
 * Both sources, a config file (its modules loaded as --check-config does)
 * and a running gateway's /schema/ URL, go through the same path: the
 * document's JSON text is parsed and handed to mizan_codegen_ts(), so the
 * two produce byte-identical files for the same registry. The output is
 * deterministic: names and object members are sorted.
 *
 * Everything here runs on the main thread of the `mizand codegen`
 * command; nothing is shared with a serving gateway.
 */
#ifndef MIZAN_CODEGEN_H
#define MIZAN_CODEGEN_H

#include <jansson.h>

#include "error.h"

/**
 * The TypeScript type expression for a JSON Schema (borrowed), as used for
 * args, results, params and data. Nested object types are written over
 * several lines indented from `indent` spaces. Returns a new string (free
 * it), or NULL on allocation failure.
 */
char *mizan_codegen_ts_type(const json_t *schema, int indent);

/**
 * The whole TypeScript file for a schema document (borrowed). import_spec
 * is the module specifier of the client package (NULL: "@mizan/client").
 * Returns a new string (free it), or NULL with err when the document is
 * not a schema document this generator understands (wrong or missing
 * `version`, malformed members).
 */
char *mizan_codegen_ts(const json_t *doc, const char *import_spec, mizan_err_t *err);

/**
 * GETs a schema document from url ("http://host[:port]/path"; https is not
 * supported) within timeout_ms, with libevent's HTTP client on a private
 * event base. Returns the parsed document (new reference), or NULL with err
 * naming the URL and what went wrong (connection, status, JSON).
 */
json_t *mizan_codegen_fetch(const char *url, int timeout_ms, mizan_err_t *err);

#endif /* MIZAN_CODEGEN_H */
