/*
 * auth.h - per-function auth requirements (PROTOCOL.md section 4): parsing
 * them from a module's declaration, showing them in the schema endpoint,
 * and deciding whether a caller may run a function.
 *
 *   false            anyone                          (MIZAN_AUTH_NONE)
 *   true             any valid token                 (MIZAN_AUTH_TOKEN)
 *   "staff"          staff: true, or superuser       (MIZAN_AUTH_STAFF)
 *   "superuser"      superuser: true                 (MIZAN_AUTH_SUPERUSER)
 *   {"perm": "p"}    perms holds "p", or superuser   (MIZAN_AUTH_PERM)
 *   native predicate the module's callback decides   (MIZAN_AUTH_NATIVE)
 *
 * No token where one is required is 401 (UNAUTHORIZED); a valid token that
 * falls short is 403 (FORBIDDEN). A superuser satisfies every requirement,
 * native predicates included (the predicate is then not called).
 *
 * Requirements are built at start-up and read-only afterwards, so
 * mizan_auth_check() may run on every I/O thread at once.
 */
#ifndef MIZAN_AUTH_H
#define MIZAN_AUTH_H

#include <jansson.h>

#include "error.h"
#include "mizan/mizan.h"

/** What a requirement asks of the caller. */
typedef enum mizan_auth_kind {
    MIZAN_AUTH_NONE = 0,  /**< false: anyone, anonymous included */
    MIZAN_AUTH_TOKEN,     /**< true: any valid token */
    MIZAN_AUTH_STAFF,     /**< "staff": staff or superuser */
    MIZAN_AUTH_SUPERUSER, /**< "superuser": superuser only */
    MIZAN_AUTH_PERM,      /**< {"perm": ...}: the named permission or superuser */
    MIZAN_AUTH_NATIVE,    /**< a module's C predicate (or superuser) */
} mizan_auth_kind_t;

/** One function's requirement; caller-owned (mizan_auth_deinit()). */
typedef struct mizan_auth {
    mizan_auth_kind_t kind; /**< which requirement */
    char *perm;             /**< MIZAN_AUTH_PERM: the permission (owned), else NULL */
    mizan_auth_fn fn;       /**< MIZAN_AUTH_NATIVE: the predicate, else NULL */
    void *fn_data;          /**< MIZAN_AUTH_NATIVE: the module data passed to fn (not owned) */
} mizan_auth_t;

/**
 * Parses a requirement from JSON. spec is borrowed; NULL means the default
 * (false). Accepts false, true, "staff", "superuser" and {"perm": "<non-empty
 * string>"} with no other member. Returns 0 with *out filled (release with
 * mizan_auth_deinit()), or -1 with *out zeroed and err naming what is
 * allowed. A native requirement is not parsed: the registry sets kind,
 * fn and fn_data itself.
 */
int mizan_auth_parse(const json_t *spec, mizan_auth_t *out, mizan_err_t *err);

/** Frees what a owns and zeroes it (kind becomes MIZAN_AUTH_NONE). NULL is fine. */
void mizan_auth_deinit(mizan_auth_t *a);

/**
 * The requirement as shown by the schema endpoint: false, true, "staff",
 * "superuser", {"perm": "..."} or "native". Returns a new reference, or NULL
 * when out of memory.
 */
json_t *mizan_auth_to_json(const mizan_auth_t *a);

/**
 * Decides whether the caller id (borrowed; NULL or id->sub == NULL means
 * anonymous) meets a. Returns MIZAN_OK, MIZAN_UNAUTHORIZED (anonymous where
 * a token is needed) or MIZAN_FORBIDDEN (a token that falls short). A
 * native predicate is called for anonymous callers too, with id->sub NULL
 * (a function may admit them); when it refuses, an anonymous caller gets
 * 401 and a token holder 403. A native requirement without a predicate
 * refuses everyone but superusers; so do a NULL a and an unknown kind
 * (fail closed: 401 when anonymous, else 403). Pure apart from the predicate; safe on
 * any thread as long as the predicate is.
 */
mizan_code_t mizan_auth_check(const mizan_auth_t *a, const mizan_identity_t *id);

#endif /* MIZAN_AUTH_H */
