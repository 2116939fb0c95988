/*
 * token.h - Mizan Web Tokens (MWT): verification, minting and extraction
 * from request headers (PROTOCOL.md section 4, "Mizan Web Token").
 *
 * An MWT is a JWS compact serialization signed with HMAC-SHA256:
 * base64url(header) "." base64url(payload) "." base64url(signature), no
 * padding. Any JWT library can mint one. The gateway verifies every token
 * it receives against a small immutable key set (several keys allow
 * rotation through the header's `kid`), and `mizand token ...` mints them
 * for operators.
 *
 * Every function here is pure with respect to its arguments: no global
 * state, so all of them may be called from any thread at once as long as
 * the key set is not being modified (it is built at start-up and then only
 * read).
 *
 * Failure messages are written for clients: they name the reason (expired,
 * bad signature, ...) and never repeat the token or any part of it.
 */
#ifndef MIZAN_TOKEN_H
#define MIZAN_TOKEN_H

#include <stdbool.h>
#include <stddef.h>

#include "error.h"
#include "mizan/mizan.h"

/** Most keys a key set holds (current key plus retired ones). */
#define MIZAN_TOKEN_MAX_KEYS 16

/** Longest token accepted, in bytes; a longer one is "token is malformed". */
#define MIZAN_TOKEN_MAX_LEN 8192

/** Most entries a token's `perms` claim may hold. */
#define MIZAN_TOKEN_MAX_PERMS 256

/** One HMAC key. */
typedef struct mizan_token_key {
    char kid[64];              /**< key id matched against the header's `kid` (NUL-terminated; may be "") */
    unsigned char secret[256]; /**< HMAC-SHA256 key bytes */
    size_t secret_len;         /**< bytes used in secret; 1..256 (0 makes the key unusable) */
} mizan_token_key_t;

/** The configured key set; built at start-up, read-only afterwards. */
typedef struct mizan_token_keys {
    mizan_token_key_t keys[MIZAN_TOKEN_MAX_KEYS]; /**< keys[0..nkeys) are in use */
    size_t nkeys;                                 /**< number of keys in use */
    size_t primary;  /**< index of the key used when a token has no kid, and for minting */
    long leeway_s;   /**< clock leeway in seconds (default 0; negative counts as 0) */
} mizan_token_keys_t;

/**
 * A verified caller, filled by mizan_token_verify(). Owns its strings:
 * release with mizan_token_claims_deinit().
 */
typedef struct mizan_token_claims {
    char *sub;          /**< `sub` claim: non-empty, no control characters */
    bool staff;         /**< `staff` claim (false when absent) */
    bool superuser;     /**< `superuser` claim (false when absent) */
    char **perms;       /**< `perms` claim, nperms strings (NULL when none) */
    size_t nperms;      /**< number of entries in perms */
    long long exp;      /**< `exp` claim, unix seconds */
    long long nbf;      /**< `nbf` claim when has_nbf */
    long long iat;      /**< `iat` claim when has_iat */
    bool has_nbf;       /**< the token carries `nbf` */
    bool has_iat;       /**< the token carries `iat` */
} mizan_token_claims_t;

/**
 * Verifies a compact MWT at time now (unix seconds).
 *
 * Checks, in order: size (at most MIZAN_TOKEN_MAX_LEN bytes) and shape
 * (exactly three strict base64url parts, no padding); the header (a JSON
 * object; `alg` exactly "HS256"; `typ`, when present, "MWT" or "JWT"; no
 * `crit`; `kid`, when present, a non-empty configured key id, otherwise
 * the primary key); the signature (32 bytes, HMAC-SHA256 over the ASCII bytes
 * `header_b64 "." payload_b64`, compared in constant time); then the
 * payload (a JSON object: `sub` non-empty string without control
 * characters U+0000..U+001F or U+007F, `exp` integer, optional integer
 * `nbf`/`iat`, boolean `staff`/`superuser`, array of such strings `perms`; other claims ignored) and the time window:
 *
 *   expired       when now >= exp + leeway
 *   not yet valid when now + leeway < nbf
 *
 * so a token with exp = T is accepted up to T - 1 (leeway 0) and refused
 * from T on. Duplicate JSON members are refused.
 *
 * token need not be NUL-terminated (len bytes are read). Returns 0 with
 * *out filled (caller owns it: mizan_token_claims_deinit()), or -1 with
 * *out zeroed and err->msg a client-safe reason that never echoes the
 * token: "token is malformed[: detail]", "token signature is invalid",
 * "token algorithm must be HS256", "token type must be MWT or JWT",
 * "token has expired", "token is not valid yet", "token key id is unknown",
 * "token has no subject", "token has no expiry", "token keys are not
 * configured", "token could not be verified" (HMAC failure) or "out of
 * memory". out must not be NULL. Every such failure is a 401 to clients.
 *
 * Pure function of its inputs; thread-safe.
 */
int mizan_token_verify(const mizan_token_keys_t *keys, const char *token, size_t len,
                       long long now, mizan_token_claims_t *out, mizan_err_t *err);

/** Frees what claims own and zeroes it. NULL and zeroed claims are fine. */
void mizan_token_claims_deinit(mizan_token_claims_t *c);

/**
 * Fills id so that it borrows from c (sub, staff, superuser, perms): id is
 * valid only while c is alive and unchanged.
 */
void mizan_token_claims_identity(const mizan_token_claims_t *c, mizan_identity_t *id);

/**
 * Signs exact header and payload JSON texts (taken byte for byte, not
 * re-serialized) with key: returns a new malloc'd NUL-terminated
 * `b64url(header) "." b64url(payload) "." b64url(HMAC-SHA256)` that the
 * caller frees, or NULL with err. The texts are not checked, which is
 * what tests need to build deliberately odd tokens. Thread-safe.
 */
char *mizan_token_sign(const mizan_token_key_t *key, const char *header, size_t header_len,
                       const char *payload, size_t payload_len, mizan_err_t *err);

/**
 * Mints a token for operators (`mizand token ...`): header
 * {"alg":"HS256","typ":"MWT"} plus "kid" when kid != NULL; payload with
 * sub, exp = now + ttl_s, iat = now, "staff": true / "superuser": true only
 * when set, and perms only when nperms > 0. Uses the key named kid, or the
 * primary key when kid is NULL (kid "" is refused). sub and every perm
 * must be non-empty UTF-8 without control characters, ttl_s > 0,
 * nperms <= MIZAN_TOKEN_MAX_PERMS, and the token must fit in
 * MIZAN_TOKEN_MAX_LEN. Returns a new malloc'd string (caller frees) or
 * NULL with err. Thread-safe.
 */
char *mizan_token_mint(const mizan_token_keys_t *keys, const char *kid, const char *sub,
                       bool staff, bool superuser, const char *const *perms, size_t nperms,
                       long long ttl_s, long long now, mizan_err_t *err);

/**
 * Finds the raw token of a request. authorization is the Authorization
 * header value (NULL when absent), cookie the Cookie header value (NULL
 * when absent), cookie_name the cookie to read (NULL: cookies are not
 * read).
 *
 * "Bearer <token>" (scheme case-insensitive, blanks around the token
 * ignored) wins over the cookie. An Authorization header that is present
 * and not blank but is not a Bearer token with a non-empty token sets
 * *malformed to true and returns NULL: the caller answers 401 rather than
 * fall back to the cookie. A blank Authorization header counts as absent.
 * In the Cookie header the first cookie whose name is exactly cookie_name
 * and whose value is not empty is used (surrounding double quotes are
 * removed).
 *
 * Returns a pointer into authorization or cookie with *len set, or NULL
 * when there is no token (*len = 0). *malformed is always written.
 */
const char *mizan_token_extract(const char *authorization, const char *cookie,
                                const char *cookie_name, size_t *len, bool *malformed);

#endif /* MIZAN_TOKEN_H */
