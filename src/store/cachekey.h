/*
 * cachekey.h - names of cache entries and revision counters.
 *
 * Every bundle and revision key is derived with HMAC-SHA256 under a secret
 * of at least 32 bytes (PROTOCOL.md section 6), so a key reveals neither the
 * params nor the user it belongs to and nobody without the secret can
 * produce one. The formulas, byte for byte:
 *
 *   params_digest(C, P) = hex(HMAC(K, "mizan/v1/params\0" C "\0" jcs(P)))
 *   perm_key(t)         = hex(HMAC(K, "mizan/v1/perms\0" "staff=" s "\n"
 *                                     "superuser=" u "\n" perm "\n" ...))
 *   scope               = "public" | "user:" sub ":" perm_key | "perms:" perm_key
 *   bundle_key(C, P, S) = prefix "ctx:{" C "}:"
 *                         hex(HMAC(K, "mizan/v1/bundle\0" C "\0" jcs(P) "\0" S))
 *   context_rev_key(C)  = prefix "rev:{" C "}"
 *   scoped_rev_key(C,P) = prefix "rev:{" C "}:" params_digest(C, P)
 *
 * A stored bundle is authenticated and bound to the key it is stored under:
 *
 *   value = mac "\n" doc,   doc = {"v":2,"rev":[context_rev,scoped_rev],"bundle":B}
 *   mac   = hex(HMAC(K, "mizan/v1/value\0" bundle_key "\0" doc))
 *
 * All functions are pure: a mizan_cachekey_t is read-only after
 * mizan_cachekey_init(), so any number of threads may derive keys from the
 * same one at once.
 */
#ifndef MIZAN_CACHEKEY_H
#define MIZAN_CACHEKEY_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "error.h"
#include "mizan/mizan.h"

/** Length of a lowercase hex HMAC-SHA256 digest, without the NUL. */
#define MIZAN_DIGEST_HEX_LEN 64

/** Shortest secret accepted, in bytes. */
#define MIZAN_CACHEKEY_SECRET_MIN 32

/** Longest secret accepted, in bytes. */
#define MIZAN_CACHEKEY_SECRET_MAX 256

/** Longest key prefix accepted, in bytes. */
#define MIZAN_CACHEKEY_PREFIX_MAX 63

/** The prefix used when none is given. */
#define MIZAN_CACHEKEY_DEFAULT_PREFIX "mizan:"

/**
 * Bytes (NUL included) that always hold a bundle, context revision or
 * scoped revision key of a context whose name is ctx_len bytes long.
 */
#define MIZAN_CACHEKEY_KEY_SIZE(ctx_len) \
    (MIZAN_CACHEKEY_PREFIX_MAX + sizeof("ctx:{}:") + (ctx_len) + MIZAN_DIGEST_HEX_LEN)

/** Bytes (NUL included) that always hold a "public" or "perms:" scope. */
#define MIZAN_CACHEKEY_PERMS_SCOPE_SIZE (sizeof("perms:") + MIZAN_DIGEST_HEX_LEN)

/** Bytes (NUL included) that always hold any scope of a caller whose sub is sub_len bytes. */
#define MIZAN_CACHEKEY_SCOPE_SIZE(sub_len) (sizeof("user::") + (sub_len) + MIZAN_DIGEST_HEX_LEN)

/** The key material and prefix; caller-owned, read-only once initialized. */
typedef struct mizan_cachekey {
    unsigned char secret[MIZAN_CACHEKEY_SECRET_MAX]; /**< HMAC key K */
    size_t secret_len;                               /**< bytes used in secret */
    char prefix[MIZAN_CACHEKEY_PREFIX_MAX + 1];      /**< NUL-terminated, e.g. "mizan:" */
    unsigned long id;                                /**< this key's number (a thread's keyed HMAC
                                                          context names the key it holds by it); 0 when unset */
} mizan_cachekey_t;

/**
 * Copies the secret (32 to 256 bytes) and the prefix (at most 63 bytes;
 * NULL means "mizan:") into k. Returns 0, or -1 with err filled when the
 * secret is too short or too long or the prefix too long; k is then
 * zeroed.
 */
int mizan_cachekey_init(mizan_cachekey_t *k, const unsigned char *secret, size_t len,
                        const char *prefix, mizan_err_t *err);

/** Wipes the secret from k. Safe on a zeroed or failed k. */
void mizan_cachekey_deinit(mizan_cachekey_t *k);

/**
 * params_digest(context, params) as 64 lowercase hex digits and a NUL.
 * Borrows params. Returns 0, or -1 (err filled) when params cannot be
 * canonicalized (see mizan_jcs_dump) or on out of memory.
 */
int mizan_cachekey_params_digest(const mizan_cachekey_t *k, const char *context,
                                 const json_t *params, char out[MIZAN_DIGEST_HEX_LEN + 1],
                                 mizan_err_t *err);

/**
 * perm_key of a permission set as 64 hex digits and a NUL. perms (nperms
 * strings; may be NULL when nperms is 0) are sorted bytewise and
 * de-duplicated on a private copy; the input is not modified. A perm that
 * contains a newline is refused (-1): the newline is the separator, so it
 * would let two different sets share a key.
 */
int mizan_cachekey_perm_key(const mizan_cachekey_t *k, bool staff, bool superuser,
                            const char *const *perms, size_t nperms,
                            char out[MIZAN_DIGEST_HEX_LEN + 1], mizan_err_t *err);

/**
 * The scope string of a caller for a context of the given scope: "public",
 * "user:" sub ":" perm_key (a user's bundle belongs to one sub and one
 * permission set, so a down-scoped token of the same sub gets its own), or
 * "perms:" perm_key. Writes it NUL-terminated into out (outlen bytes; see
 * MIZAN_CACHEKEY_SCOPE_SIZE). Returns 0, or -1 when out is too small, or
 * the scope is user and id is NULL or anonymous (no or empty sub), or on
 * the errors of mizan_cachekey_perm_key(). id is borrowed and may be NULL
 * for "public".
 */
int mizan_cachekey_scope(const mizan_cachekey_t *k, mizan_scope_t scope,
                         const mizan_identity_t *id, char *out, size_t outlen, mizan_err_t *err);

/**
 * bundle_key(context, params, scope) into out (outlen bytes; see
 * MIZAN_CACHEKEY_KEY_SIZE). Borrows params. Returns 0 or -1.
 */
int mizan_cachekey_bundle(const mizan_cachekey_t *k, const char *context, const json_t *params,
                          const char *scope, char *out, size_t outlen, mizan_err_t *err);

/** context_rev_key(context) into out (outlen bytes). Returns 0 or -1. */
int mizan_cachekey_context_rev(const mizan_cachekey_t *k, const char *context, char *out,
                               size_t outlen, mizan_err_t *err);

/**
 * scoped_rev_key(context, params) into out (outlen bytes). Borrows params.
 * Returns 0 or -1.
 */
int mizan_cachekey_scoped_rev(const mizan_cachekey_t *k, const char *context,
                              const json_t *params, char *out, size_t outlen, mizan_err_t *err);

/**
 * The mac of a stored value: hex(HMAC(K, "mizan/v1/value\0" bundle_key "\0"
 * doc)) over doc_len bytes of doc, into out. Returns 0 or -1.
 */
int mizan_cachekey_value_mac(const mizan_cachekey_t *k, const char *bundle_key, const char *doc,
                             size_t doc_len, char out[MIZAN_DIGEST_HEX_LEN + 1], mizan_err_t *err);

/**
 * The value to store under bundle_key for a bundle (body, body_len bytes of
 * JSON object text, borrowed) computed after reading revisions rev[0]
 * (context) and rev[1] (scoped): mac "\n" {"v":2,"rev":[..],"bundle":body}.
 * Returns a new malloc'd NUL-terminated string (its length in *len), or
 * NULL with err filled.
 */
char *mizan_cachekey_value_seal(const mizan_cachekey_t *k, const char *bundle_key, const long long rev[2],
                                const char *body, size_t body_len, size_t *len, mizan_err_t *err);

/**
 * Checks a value read from under bundle_key. When its mac verifies (in
 * constant time) and its doc has the shape mizan_cachekey_value_seal()
 * writes, fills rev and points *body / *body_len at the bundle inside value
 * (borrowed from value) and returns 0. Returns -1 (err says why) for
 * anything else: a forged or altered value, a value copied from another
 * key, a revision-1 value, or garbage. Such a value must never be served.
 */
int mizan_cachekey_value_open(const mizan_cachekey_t *k, const char *bundle_key, const char *value, size_t len,
                              long long rev[2], const char **body, size_t *body_len, mizan_err_t *err);

/**
 * mizan_cachekey_value_seal() for a context with stale_s: the doc carries
 * the bundle's freshness deadline, {"v":2,"rev":[..],"fresh":<unix
 * ms>,"bundle":body}. fresh_until_ms 0 writes the plain doc.
 */
char *mizan_cachekey_value_seal_fresh(const mizan_cachekey_t *k, const char *bundle_key, const long long rev[2],
                                      long long fresh_until_ms, const char *body, size_t body_len, size_t *len,
                                      mizan_err_t *err);

/**
 * mizan_cachekey_value_open() that also reads the freshness deadline into
 * *fresh_until_ms (NULL: not wanted): 0 for a doc without one (fresh until
 * its store lets it expire).
 */
int mizan_cachekey_value_open_fresh(const mizan_cachekey_t *k, const char *bundle_key, const char *value, size_t len,
                                    long long rev[2], long long *fresh_until_ms, const char **body, size_t *body_len,
                                    mizan_err_t *err);

/**
 * Reads a value the gateway itself holds in memory (the embedded store),
 * as mizan_cachekey_value_open_fresh() does but without checking its mac:
 * only for values that never left the process. Returns 0, or -1 for a
 * value of another shape.
 */
int mizan_cachekey_value_read_fresh(const char *value, size_t len, long long rev[2], long long *fresh_until_ms,
                                    const char **body, size_t *body_len, mizan_err_t *err);

#endif /* MIZAN_CACHEKEY_H */
