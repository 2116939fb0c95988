/*
 * codegen.c - the TypeScript generator of `mizand codegen` (see codegen.h
 * and docs/codegen.md) and the HTTP fetch of a running gateway's schema
 * document.
 *
 * The generator reads only the schema document (docs/schema-document.md),
 * never the registry's C structures, so a config file and a /schema/ URL
 * give the same file. Output is deterministic: function and context names,
 * object members and union members appear in a fixed (sorted or declared)
 * order, so a staleness check can diff the file.
 *
 * JSON Schema to TypeScript (the keyword subset of PROTOCOL.md section 4):
 * string, integer/number, boolean and null map to string, number, boolean
 * and null; a `type` array is a union; `enum` a union of literals; `const`
 * a literal; an object a type literal with `?` on members not `required`,
 * plus an index signature when `additionalProperties` is a schema or true;
 * `items` gives T[]; `true` or a schema without type is unknown; `false` is
 * never. Bounds, patterns, defaults and descriptions become JSDoc comments.
 */
#include "codegen.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "registry.h"

/* ---- a growing string ------------------------------------------------- */

/* Text being built; oom is sticky, so callers check once at the end. */
typedef struct sb {
    char *p;    /* NUL-terminated text (NULL until the first append) */
    size_t len; /* bytes used, without the NUL */
    size_t cap; /* bytes allocated */
    bool oom;   /* an allocation failed: the text is incomplete */
} sb_t;

static void sb_add(sb_t *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (p == NULL) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_puts(sb_t *b, const char *s)
{
    sb_add(b, s, strlen(s));
}

static void sb_printf(sb_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sb_t *b, const char *fmt, ...)
{
    char *s = NULL;
    va_list ap;
    va_start(ap, fmt);
    int n = vasprintf(&s, fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->oom = true;
        return;
    }
    sb_add(b, s, (size_t)n);
    free(s);
}

static void sb_indent(sb_t *b, int n)
{
    for (int i = 0; i < n; i++)
        sb_add(b, " ", 1);
}

/* Hands the text over (caller frees); NULL after an allocation failure. */
static char *sb_take(sb_t *b)
{
    if (b->oom || b->p == NULL) {
        bool empty = !b->oom && b->p == NULL;
        free(b->p);
        return empty ? strdup("") : NULL;
    }
    return b->p;
}

/* ---- names -------------------------------------------------------------- */

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The member names of obj (borrowed strings), sorted; *n of them. NULL on OOM. */
static const char **sorted_keys(const json_t *obj, size_t *n)
{
    *n = json_is_object(obj) ? json_object_size(obj) : 0;
    const char **keys = calloc(*n + 1, sizeof(*keys));
    if (keys == NULL)
        return NULL;
    size_t i = 0;
    const char *key;
    json_t *value;
    if (*n > 0)
        json_object_foreach((json_t *)obj, key, value)
        {
            (void)value;
            keys[i++] = key;
        }
    qsort(keys, *n, sizeof(*keys), cmp_str);
    return keys;
}

/* Whether s can stand unquoted as a TypeScript property name. */
static bool is_identifier(const char *s)
{
    if (s[0] == '\0' || !(isalpha((unsigned char)s[0]) || s[0] == '_' || s[0] == '$'))
        return false;
    for (const char *p = s + 1; *p; p++)
        if (!(isalnum((unsigned char)*p) || *p == '_' || *p == '$'))
            return false;
    return true;
}

/* A JSON value (borrowed) as compact JSON text, appended; strings are valid TS string literals. */
static void add_json(sb_t *b, const json_t *v)
{
    char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    if (s == NULL) {
        b->oom = true;
        return;
    }
    sb_puts(b, s);
    free(s);
}

/* A property key: bare when it is an identifier, else a quoted string. */
static void add_key(sb_t *b, const char *name)
{
    if (is_identifier(name)) {
        sb_puts(b, name);
        return;
    }
    json_t *s = json_string(name);
    if (s == NULL) {
        b->oom = true;
        return;
    }
    add_json(b, s);
    json_decref(s);
}

/* "get_post" -> "GetPost", "up.post_ok" -> "UpPostOk": PascalCase, dots and underscores dropped. */
static void add_pascal(sb_t *b, const char *name)
{
    bool upper = true;
    for (const char *p = name; *p; p++) {
        if (*p == '_' || *p == '.') {
            upper = true;
            continue;
        }
        char c = upper ? (char)toupper((unsigned char)*p) : *p;
        sb_add(b, &c, 1);
        upper = false;
    }
}

/* ---- comments ------------------------------------------------------------ */

/* Text for inside a JSDoc comment: one line, no comment terminator. */
static void add_comment_text(sb_t *b, const char *s)
{
    for (const char *p = s; *p; p++) {
        if (*p == '\n' || *p == '\r' || *p == '\t')
            sb_add(b, " ", 1);
        else if (p[0] == '*' && p[1] == '/')
            sb_add(b, "*\\", 2);
        else
            sb_add(b, p, 1);
    }
}

/* Whether type (a name or an array of names) names t. */
static bool has_type(const json_t *type, const char *t)
{
    if (json_is_string(type))
        return strcmp(json_string_value(type), t) == 0;
    size_t i;
    json_t *item;
    json_array_foreach(type, i, item) if (json_is_string(item) && strcmp(json_string_value(item), t) == 0) return true;
    return false;
}

/* The JSDoc line of one property, or nothing when the schema says nothing worth one. */
static void add_property_doc(sb_t *b, const json_t *s, int indent)
{
    static const char *const tags[] = {"minimum",   "maximum",   "exclusiveMinimum", "exclusiveMaximum",
                                       "multipleOf", "minLength", "maxLength",        "pattern",
                                       "minItems",  "maxItems",  "uniqueItems",      "minProperties",
                                       "maxProperties", "default", NULL};
    if (!json_is_object(s))
        return;
    sb_t line = {0};
    const char *title = json_string_value(json_object_get(s, "title"));
    const char *desc = json_string_value(json_object_get(s, "description"));
    if (title != NULL) {
        add_comment_text(&line, title);
        sb_puts(&line, desc != NULL ? ": " : "");
    }
    if (desc != NULL)
        add_comment_text(&line, desc);
    if (has_type(json_object_get(s, "type"), "integer"))
        sb_puts(&line, line.len > 0 ? " @integer" : "@integer");
    for (size_t i = 0; tags[i] != NULL; i++) {
        json_t *v = json_object_get(s, tags[i]);
        if (v == NULL)
            continue;
        sb_printf(&line, "%s@%s ", line.len > 0 ? " " : "", tags[i]);
        char *text = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
        if (text == NULL) {
            line.oom = true;
            break;
        }
        add_comment_text(&line, text);
        free(text);
    }
    if (line.oom)
        b->oom = true;
    else if (line.len > 0) {
        sb_indent(b, indent);
        sb_printf(b, "/** %s */\n", line.p);
    }
    free(line.p);
}

/* ---- types ----------------------------------------------------------------- */

static void add_type(sb_t *b, const json_t *s, int indent);

/* A literal type for a const or enum value: scalars as themselves, containers structurally. */
static void add_literal(sb_t *b, const json_t *v)
{
    if (json_is_array(v)) {
        sb_puts(b, "[");
        size_t i;
        json_t *item;
        json_array_foreach(v, i, item)
        {
            sb_puts(b, i > 0 ? ", " : "");
            add_literal(b, item);
        }
        sb_puts(b, "]");
        return;
    }
    if (json_is_object(v)) {
        size_t n;
        const char **keys = sorted_keys(v, &n);
        if (keys == NULL) {
            b->oom = true;
            return;
        }
        if (n == 0)
            sb_puts(b, "Record<string, never>");
        else {
            sb_puts(b, "{ ");
            for (size_t i = 0; i < n; i++) {
                add_key(b, keys[i]);
                sb_puts(b, ": ");
                add_literal(b, json_object_get(v, keys[i]));
                sb_puts(b, "; ");
            }
            sb_puts(b, "}");
        }
        free(keys);
        return;
    }
    add_json(b, v);
}

/* Whether text holds a `|` outside brackets and string literals (a union needing parentheses). */
static bool top_level_union(const char *text)
{
    int depth = 0;
    for (const char *p = text; *p; p++) {
        if (*p == '"') {
            for (p++; *p && *p != '"'; p++)
                if (*p == '\\' && p[1] != '\0')
                    p++;
            if (*p == '\0')
                break;
        } else if (*p == '{' || *p == '[' || *p == '(' || *p == '<') {
            depth++;
        } else if (*p == '}' || *p == ']' || *p == ')' || *p == '>') {
            depth--;
        } else if (*p == '|' && depth == 0) {
            return true;
        }
    }
    return false;
}

/*
 * Union parts, each rendered once: parts[] holds up to max distinct texts
 * (owned); a text already present is dropped.
 */
typedef struct parts {
    char *text[64];
    size_t n;
    bool oom;
} parts_t;

static void parts_add(parts_t *ps, char *text)
{
    if (text == NULL) {
        ps->oom = true;
        return;
    }
    for (size_t i = 0; i < ps->n; i++)
        if (strcmp(ps->text[i], text) == 0) {
            free(text);
            return;
        }
    if (ps->n == sizeof(ps->text) / sizeof(ps->text[0])) {
        free(text);
        return;
    }
    ps->text[ps->n++] = text;
}

/* Writes the parts joined by " | " (unknown swallows the rest; none is never) and frees them. */
static void parts_emit(sb_t *b, parts_t *ps)
{
    bool unknown = false;
    for (size_t i = 0; i < ps->n; i++)
        unknown = unknown || strcmp(ps->text[i], "unknown") == 0;
    if (ps->oom)
        b->oom = true;
    else if (unknown)
        sb_puts(b, "unknown");
    else if (ps->n == 0)
        sb_puts(b, "never");
    for (size_t i = 0; i < ps->n; i++) {
        if (!unknown && !ps->oom) {
            sb_puts(b, i > 0 ? " | " : "");
            sb_puts(b, ps->text[i]);
        }
        free(ps->text[i]);
    }
    ps->n = 0;
}

/* The type text of schema s rendered on its own (new string, or NULL). */
static char *type_text(const json_t *s, int indent)
{
    sb_t t = {0};
    add_type(&t, s, indent);
    return sb_take(&t);
}

static void add_object(sb_t *b, const json_t *s, int indent)
{
    const json_t *props = json_object_get(s, "properties");
    const json_t *required = json_object_get(s, "required");
    const json_t *ap = json_object_get(s, "additionalProperties");
    size_t n;
    const char **keys = sorted_keys(props, &n);
    if (keys == NULL) {
        b->oom = true;
        return;
    }
    /* Required names without a declared schema are members of type unknown. */
    const char **extra = calloc(json_array_size(required) + 1, sizeof(*extra));
    size_t nextra = 0;
    if (extra == NULL) {
        free(keys);
        b->oom = true;
        return;
    }
    size_t i;
    json_t *item;
    json_array_foreach(required, i, item)
    {
        const char *r = json_string_value(item);
        bool dup = false;
        for (size_t k = 0; k < nextra; k++)
            dup = dup || strcmp(extra[k], r) == 0;
        if (r != NULL && !dup && json_object_get(props, r) == NULL)
            extra[nextra++] = r;
    }
    qsort(extra, nextra, sizeof(*extra), cmp_str);

    if (n + nextra == 0) {
        if (json_is_false(ap)) {
            sb_puts(b, "Record<string, never>");
        } else {
            sb_puts(b, "Record<string, ");
            if (ap == NULL || json_is_true(ap))
                sb_puts(b, "unknown");
            else
                add_type(b, ap, indent);
            sb_puts(b, ">");
        }
        free(keys);
        free(extra);
        return;
    }
    parts_t index = {{0}, 0, false};
    bool open = ap != NULL && !json_is_false(ap);
    if (open)
        parts_add(&index, json_is_true(ap) ? strdup("unknown") : type_text(ap, indent + 2));
    sb_puts(b, "{\n");
    for (size_t k = 0; k < n + nextra; k++) {
        const char *name = k < n ? keys[k] : extra[k - n];
        const json_t *ps = k < n ? json_object_get(props, name) : json_true();
        bool req = false;
        json_array_foreach(required, i, item) req = req || (json_is_string(item) && strcmp(json_string_value(item), name) == 0);
        add_property_doc(b, ps, indent + 2);
        sb_indent(b, indent + 2);
        add_key(b, name);
        sb_puts(b, req ? ": " : "?: ");
        char *t = type_text(ps, indent + 2);
        if (t == NULL) {
            b->oom = true;
        } else {
            sb_puts(b, t);
            if (open) {
                parts_add(&index, strdup(t));
                if (!req)
                    parts_add(&index, strdup("undefined"));
            }
            free(t);
        }
        sb_puts(b, ";\n");
    }
    if (open) {
        sb_indent(b, indent + 2);
        sb_puts(b, "[key: string]: ");
        parts_emit(b, &index);
        sb_puts(b, ";\n");
    }
    sb_indent(b, indent);
    sb_puts(b, "}");
    free(keys);
    free(extra);
}

static void add_array(sb_t *b, const json_t *s, int indent)
{
    const json_t *items = json_object_get(s, "items");
    char *t = items != NULL ? type_text(items, indent) : strdup("unknown");
    if (t == NULL) {
        b->oom = true;
        return;
    }
    bool paren = top_level_union(t);
    sb_printf(b, "%s%s%s[]", paren ? "(" : "", t, paren ? ")" : "");
    free(t);
}

/* One type name of s ("object", "integer", ...) as a TypeScript type. */
static void add_one(sb_t *b, const json_t *s, const char *t, int indent)
{
    if (strcmp(t, "string") == 0)
        sb_puts(b, "string");
    else if (strcmp(t, "integer") == 0 || strcmp(t, "number") == 0)
        sb_puts(b, "number");
    else if (strcmp(t, "boolean") == 0)
        sb_puts(b, "boolean");
    else if (strcmp(t, "null") == 0)
        sb_puts(b, "null");
    else if (strcmp(t, "object") == 0)
        add_object(b, s, indent);
    else if (strcmp(t, "array") == 0)
        add_array(b, s, indent);
    else
        sb_puts(b, "unknown");
}

static void add_type(sb_t *b, const json_t *s, int indent)
{
    if (json_is_false(s)) {
        sb_puts(b, "never");
        return;
    }
    if (!json_is_object(s)) {
        sb_puts(b, "unknown");
        return;
    }
    const json_t *c = json_object_get(s, "const");
    if (c != NULL) {
        add_literal(b, c);
        return;
    }
    const json_t *e = json_object_get(s, "enum");
    if (json_is_array(e)) {
        parts_t ps = {{0}, 0, false};
        size_t i;
        json_t *item;
        json_array_foreach(e, i, item)
        {
            sb_t lit = {0};
            add_literal(&lit, item);
            parts_add(&ps, sb_take(&lit));
        }
        parts_emit(b, &ps);
        return;
    }
    const json_t *type = json_object_get(s, "type");
    if (json_is_string(type)) {
        add_one(b, s, json_string_value(type), indent);
        return;
    }
    if (json_is_array(type)) {
        parts_t ps = {{0}, 0, false};
        size_t i;
        json_t *item;
        json_array_foreach(type, i, item)
        {
            sb_t one = {0};
            add_one(&one, s, json_is_string(item) ? json_string_value(item) : "", indent);
            parts_add(&ps, sb_take(&one));
        }
        parts_emit(b, &ps);
        return;
    }
    /* No type: what the other keywords describe, else anything. */
    if (json_object_get(s, "properties") != NULL || json_object_get(s, "required") != NULL)
        add_object(b, s, indent);
    else if (json_object_get(s, "items") != NULL)
        add_array(b, s, indent);
    else
        sb_puts(b, "unknown");
}

char *mizan_codegen_ts_type(const json_t *schema, int indent)
{
    return type_text(schema, indent);
}

/* ---- the file ----------------------------------------------------------------- */

/* Pascal-case names of every function or context, made unique ("Name", "Name2", ...). */
static char **type_bases(const char **names, size_t n)
{
    char **out = calloc(n + 1, sizeof(*out));
    if (out == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        sb_t base = {0};
        add_pascal(&base, names[i]);
        if (base.len == 0)
            sb_puts(&base, "Fn");
        char *cand = sb_take(&base);
        for (int k = 2; cand != NULL; k++) {
            bool taken = false;
            for (size_t j = 0; j < i && !taken; j++)
                taken = strcmp(out[j], cand) == 0;
            if (!taken)
                break;
            sb_t next = {0};
            add_pascal(&next, names[i]);
            sb_printf(&next, "%d", k);
            free(cand);
            cand = sb_take(&next);
        }
        if (cand == NULL) {
            for (size_t j = 0; j < i; j++)
                free(out[j]);
            free(out);
            return NULL;
        }
        out[i] = cand;
    }
    return out;
}

static void free_strv(char **v, size_t n)
{
    for (size_t i = 0; v != NULL && i < n; i++)
        free(v[i]);
    free(v);
}

/* `export interface Name {...}` for an object literal type, else `export type Name = ...;`. */
static void add_decl(sb_t *b, const char *base, const char *suffix, const json_t *schema)
{
    char *t = type_text(schema, 0);
    if (t == NULL) {
        b->oom = true;
        return;
    }
    size_t len = strlen(t);
    if (t[0] == '{' && t[len - 1] == '}' && !top_level_union(t))
        sb_printf(b, "export interface %s%s %s\n", base, suffix, t);
    else
        sb_printf(b, "export type %s%s = %s;\n", base, suffix, t);
    free(t);
}

/* Whether an args schema requires anything (then the wrapper's args are required). */
static bool requires_args(const json_t *schema)
{
    return json_array_size(json_object_get(schema, "required")) > 0 || json_is_false(schema);
}

/* The one-line description comment of a function. */
static void add_function_doc(sb_t *b, const char *name, const json_t *fn, int indent)
{
    sb_indent(b, indent);
    sb_puts(b, "/** ");
    add_comment_text(b, name);
    sb_printf(b, " (%s", json_string_value(json_object_get(fn, "kind")));
    const json_t *auth = json_object_get(fn, "auth");
    if (auth != NULL && !json_is_false(auth)) {
        char *a = json_dumps(auth, JSON_COMPACT | JSON_ENCODE_ANY);
        if (a == NULL)
            b->oom = true;
        else {
            sb_puts(b, ", auth ");
            add_comment_text(b, a);
        }
        free(a);
    }
    const json_t *inv = json_object_get(fn, "invalidates");
    if (json_array_size(inv) > 0) {
        sb_puts(b, ", invalidates ");
        size_t i;
        json_t *item;
        json_array_foreach(inv, i, item)
        {
            sb_puts(b, i > 0 ? ", " : "");
            add_comment_text(b, json_is_string(item) ? json_string_value(item) : "?");
        }
    }
    sb_puts(b, ")");
    const char *desc = json_string_value(json_object_get(fn, "description"));
    if (desc != NULL) {
        sb_puts(b, ": ");
        add_comment_text(b, desc);
    }
    sb_puts(b, " */\n");
}

/* The name union: "a" | "b", or never. */
static void add_name_union(sb_t *b, const char *type, const char **names, size_t n)
{
    sb_printf(b, "export type %s = ", type);
    if (n == 0)
        sb_puts(b, "never");
    for (size_t i = 0; i < n; i++) {
        json_t *s = json_string(names[i]);
        sb_puts(b, i > 0 ? " | " : "");
        if (s == NULL)
            b->oom = true;
        else
            add_json(b, s);
        json_decref(s);
    }
    sb_puts(b, ";\n");
}

/* Checks the document's shape; -1 with err. */
static int check_doc(const json_t *doc, mizan_err_t *err)
{
    if (!json_is_object(doc))
        return mizan_err_set(err, "the schema document must be a JSON object");
    const json_t *v = json_object_get(doc, "version");
    if (v == NULL)
        return mizan_err_set(err, "the schema document has no \"version\": the gateway predates schema document "
                                  "version %d; upgrade it",
                             MIZAN_SCHEMA_DOC_VERSION);
    if (!json_is_integer(v) || json_integer_value(v) != MIZAN_SCHEMA_DOC_VERSION)
        return mizan_err_set(err, "schema document version %lld is not supported (this mizand reads version %d)",
                             json_is_integer(v) ? (long long)json_integer_value(v) : -1LL, MIZAN_SCHEMA_DOC_VERSION);
    const json_t *fns = json_object_get(doc, "functions"), *ctxs = json_object_get(doc, "contexts");
    if (!json_is_object(fns) || !json_is_object(ctxs))
        return mizan_err_set(err, "the schema document must hold \"functions\" and \"contexts\" objects");
    const char *key;
    json_t *f;
    json_object_foreach((json_t *)fns, key, f)
    {
        const char *kind = json_string_value(json_object_get(f, "kind"));
        if (!json_is_object(f) || kind == NULL || (strcmp(kind, "query") != 0 && strcmp(kind, "mutation") != 0) ||
            json_object_get(f, "input_schema") == NULL)
            return mizan_err_set(err, "function \"%s\" of the schema document lacks \"kind\" or \"input_schema\"", key);
    }
    json_object_foreach((json_t *)ctxs, key, f)
    {
        if (!json_is_object(f) || !json_is_array(json_object_get(f, "functions")))
            return mizan_err_set(err, "context \"%s\" of the schema document lacks \"functions\"", key);
    }
    return 0;
}

char *mizan_codegen_ts(const json_t *doc, const char *import_spec, mizan_err_t *err)
{
    if (check_doc(doc, err) < 0)
        return NULL;
    const json_t *fns = json_object_get(doc, "functions"), *ctxs = json_object_get(doc, "contexts");
    size_t nf = 0, nc = 0;
    const char **fnames = sorted_keys(fns, &nf), **cnames = sorted_keys(ctxs, &nc);
    char **fbase = fnames != NULL ? type_bases(fnames, nf) : NULL;
    char **cbase = cnames != NULL ? type_bases(cnames, nc) : NULL;
    json_t *spec = json_string(import_spec != NULL ? import_spec : "@mizan/client");
    sb_t b = {0};
    if (fbase == NULL || cbase == NULL || spec == NULL) {
        b.oom = true;
        goto done;
    }

    sb_printf(&b,
              "// Generated by mizand codegen from the registry (schema document version %d). Do not edit.\n"
              "import { createClient, type ClientOptions, type MizanClient } from ",
              MIZAN_SCHEMA_DOC_VERSION);
    add_json(&b, spec);
    sb_puts(&b, ";\n\n");
    add_name_union(&b, "FunctionName", fnames, nf);
    add_name_union(&b, "ContextName", cnames, nc);

    sb_puts(&b, "\n// ---- functions: args and result of each ----\n");
    for (size_t i = 0; i < nf; i++) {
        const json_t *f = json_object_get(fns, fnames[i]);
        sb_puts(&b, "\n");
        add_function_doc(&b, fnames[i], f, 0);
        add_decl(&b, fbase[i], "Args", json_object_get(f, "input_schema"));
        const json_t *out = json_object_get(f, "output_schema");
        add_decl(&b, fbase[i], "Result", out != NULL && !json_is_null(out) ? out : json_true());
    }
    sb_puts(&b, "\n/** Every function: its kind, args and result (for createClient<Functions, Contexts>). */\n"
                "export interface Functions {\n");
    for (size_t i = 0; i < nf; i++) {
        sb_puts(&b, "  ");
        add_key(&b, fnames[i]);
        sb_printf(&b, ": { kind: \"%s\"; args: %sArgs; result: %sResult };\n",
                  json_string_value(json_object_get(json_object_get(fns, fnames[i]), "kind")), fbase[i], fbase[i]);
    }
    sb_puts(&b, "}\n");

    sb_puts(&b, "\n// ---- contexts: params and bundle data of each ----\n");
    for (size_t i = 0; i < nc; i++) {
        const json_t *c = json_object_get(ctxs, cnames[i]);
        sb_puts(&b, "\n/** ");
        add_comment_text(&b, cnames[i]);
        const char *scope = json_string_value(json_object_get(c, "scope"));
        sb_printf(&b, " (context, scope %s, ttl %lld s)", scope != NULL ? scope : "public",
                  (long long)json_integer_value(json_object_get(c, "ttl")));
        const char *desc = json_string_value(json_object_get(c, "description"));
        if (desc != NULL) {
            sb_puts(&b, ": ");
            add_comment_text(&b, desc);
        }
        sb_puts(&b, " */\n");
        const json_t *ps = json_object_get(c, "params_schema");
        add_decl(&b, cbase[i], "Params", ps != NULL ? ps : json_true());
        const json_t *members = json_object_get(c, "functions");
        sb_printf(&b, "export interface %sData {\n", cbase[i]);
        size_t k;
        json_t *m;
        json_array_foreach(members, k, m)
        {
            const char *mn = json_string_value(m);
            const char **hit = mn != NULL ? bsearch(&mn, fnames, nf, sizeof(*fnames), cmp_str) : NULL;
            sb_puts(&b, "  ");
            add_key(&b, mn != NULL ? mn : "?");
            if (hit != NULL)
                sb_printf(&b, ": %sResult;\n", fbase[hit - fnames]);
            else
                sb_puts(&b, ": unknown;\n");
        }
        sb_puts(&b, "}\n");
    }
    sb_puts(&b, "\n/** Every context: its params and bundle data (for createClient<Functions, Contexts>). */\n"
                "export interface Contexts {\n");
    for (size_t i = 0; i < nc; i++) {
        sb_puts(&b, "  ");
        add_key(&b, cnames[i]);
        sb_printf(&b, ": { params: %sParams; data: %sData };\n", cbase[i], cbase[i]);
    }
    sb_puts(&b, "}\n");

    sb_puts(&b, "\n// ---- the typed client ----\n\n"
                "/** A client typed for this registry. */\n"
                "export type Client = MizanClient<Functions, Contexts>;\n\n"
                "/** A Client plus one method per function: `client.fn.name(args)`. */\n"
                "export interface TypedClient extends Client {\n"
                "  fn: {\n");
    for (size_t i = 0; i < nf; i++) {
        const json_t *f = json_object_get(fns, fnames[i]);
        add_function_doc(&b, fnames[i], f, 4);
        sb_puts(&b, "    ");
        add_key(&b, fnames[i]);
        sb_printf(&b, "(args%s: %sArgs): Promise<%sResult>;\n", requires_args(json_object_get(f, "input_schema")) ? "" : "?",
                  fbase[i], fbase[i]);
    }
    sb_puts(&b, "  };\n"
                "}\n\n"
                "/** createClient<Functions, Contexts>(options) with the `fn` wrappers. */\n"
                "export function createTypedClient(options: ClientOptions): TypedClient {\n"
                "  const client = createClient<Functions, Contexts>(options);\n"
                "  const fn: TypedClient[\"fn\"] = {\n");
    for (size_t i = 0; i < nf; i++) {
        json_t *s = json_string(fnames[i]);
        sb_puts(&b, "    ");
        add_key(&b, fnames[i]);
        sb_puts(&b, ": (...a) => client.call(");
        if (s == NULL)
            b.oom = true;
        else
            add_json(&b, s);
        json_decref(s);
        sb_puts(&b, ", ...a),\n");
    }
    sb_puts(&b, "  };\n"
                "  return Object.assign(client, { fn });\n"
                "}\n");
done:
    free_strv(fbase, nf);
    free_strv(cbase, nc);
    free(fnames);
    free(cnames);
    json_decref(spec);
    char *text = sb_take(&b);
    if (text == NULL)
        mizan_err_set(err, "out of memory");
    return text;
}

/* ---- fetching a document ------------------------------------------------------ */

/* What the response callback leaves for mizan_codegen_fetch. */
typedef struct fetch {
    struct event_base *base;
    int status;      /* HTTP status; 0: no response */
    char *body;      /* response body (owned), NUL-terminated */
    size_t len;      /* bytes of body */
    bool oom;        /* the body could not be copied */
} fetch_t;

static void on_response(struct evhttp_request *req, void *arg)
{
    fetch_t *f = arg;
    if (req != NULL && evhttp_request_get_response_code(req) > 0) {
        f->status = evhttp_request_get_response_code(req);
        struct evbuffer *in = evhttp_request_get_input_buffer(req);
        f->len = evbuffer_get_length(in);
        f->body = malloc(f->len + 1);
        if (f->body == NULL)
            f->oom = true;
        else {
            evbuffer_remove(in, f->body, f->len);
            f->body[f->len] = '\0';
        }
    }
    event_base_loopexit(f->base, NULL);
}

json_t *mizan_codegen_fetch(const char *url, int timeout_ms, mizan_err_t *err)
{
    json_t *doc = NULL;
    fetch_t f = {0};
    struct evhttp_connection *conn = NULL;
    struct evhttp_uri *uri = evhttp_uri_parse(url);
    const char *scheme = uri != NULL ? evhttp_uri_get_scheme(uri) : NULL;
    const char *host = uri != NULL ? evhttp_uri_get_host(uri) : NULL;
    if (uri == NULL || scheme == NULL || host == NULL || host[0] == '\0') {
        mizan_err_set(err, "%s: not a URL like http://127.0.0.1:8080/api/mizan/schema/", url);
        goto done;
    }
    if (strcasecmp(scheme, "http") != 0) {
        mizan_err_set(err, "%s: only http:// URLs are supported", url);
        goto done;
    }
    int port = evhttp_uri_get_port(uri);
    const char *path = evhttp_uri_get_path(uri);
    const char *query = evhttp_uri_get_query(uri);
    char target[2048];
    snprintf(target, sizeof(target), "%s%s%s", path != NULL && path[0] != '\0' ? path : "/", query != NULL ? "?" : "",
             query != NULL ? query : "");
    if ((f.base = event_base_new()) == NULL ||
        (conn = evhttp_connection_base_new(f.base, NULL, host, (unsigned short)(port > 0 ? port : 80))) == NULL) {
        mizan_err_set(err, "%s: cannot set up an HTTP connection", url);
        goto done;
    }
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    evhttp_connection_set_timeout_tv(conn, &tv);
    struct evhttp_request *req = evhttp_request_new(on_response, &f);
    if (req == NULL) {
        mizan_err_set(err, "out of memory");
        goto done;
    }
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Host", host);
    evhttp_add_header(h, "Accept", "application/json");
    evhttp_add_header(h, "Connection", "close");
    if (evhttp_make_request(conn, req, EVHTTP_REQ_GET, target) != 0) {
        mizan_err_set(err, "%s: cannot send the request", url);
        goto done;
    }
    event_base_dispatch(f.base);
    if (f.oom) {
        mizan_err_set(err, "out of memory");
        goto done;
    }
    if (f.status == 0) {
        mizan_err_set(err, "%s: no answer (connection refused, closed or timed out after %d ms)", url, timeout_ms);
        goto done;
    }
    if (f.status != 200) {
        mizan_err_set(err, "%s: HTTP status %d (expected 200 with the schema document)", url, f.status);
        goto done;
    }
    json_error_t jerr;
    doc = json_loadb(f.body, f.len, JSON_REJECT_DUPLICATES, &jerr);
    if (doc == NULL)
        mizan_err_set(err, "%s: the answer is not JSON (%s at %d:%d)", url, jerr.text, jerr.line, jerr.column);
done:
    if (conn != NULL)
        evhttp_connection_free(conn);
    if (f.base != NULL)
        event_base_free(f.base);
    if (uri != NULL)
        evhttp_uri_free(uri);
    free(f.body);
    return doc;
}
