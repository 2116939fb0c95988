/*
 * fuzz_token.c - fuzz target for Mizan Web Tokens (token.c): verification
 * of untrusted tokens and their extraction from request headers.
 *
 * Every input is used three ways, against a fixed key set (two keys, kids
 * "main" (primary) and "old", leeway 30 s) at a fixed time:
 *
 *   1. the whole input is a token for mizan_token_verify();
 *   2. the input, split at its first newline into a header text and a
 *      payload text, is signed with the key the header names (or the
 *      primary key) and then verified, so the fuzzer reaches the header
 *      and claim checks that a random signature never passes;
 *   3. the input, split at its first newline, is an Authorization value and
 *      a Cookie value for mizan_token_extract() (cookie name "mwt"), also
 *      with the Authorization header absent.
 *
 * Properties checked beyond "no memory error":
 *   - a failure leaves the claims zeroed and has one of the reasons token.h
 *     documents (fixed texts, so none can echo the token);
 *   - accepted claims are sane: non-empty sub without NUL, the time window
 *     holds at the verification time, perms within the documented bound;
 *   - a token signed with the key its header names is never refused for
 *     its signature, and when accepted its sub and exp are the payload's;
 *   - extraction returns a slice of one of the two header values, not
 *     blank-padded (except inside a quoted cookie value), and never a token
 *     together with "malformed".
 */
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "fuzz.h"
#include "token.h"

#define NOW 1700000000LL
#define LEEWAY 30

static mizan_token_keys_t keys;

static void setup(void)
{
    static bool done;
    if (done)
        return;
    done = true;
    memset(&keys, 0, sizeof(keys));
    static const char *const kids[] = {"main", "old"};
    static const char *const secrets[] = {"mizan-token-secret-0123456789abcd", "an-older-secret-kept-for-rotation-42"};
    for (size_t i = 0; i < 2; i++) {
        snprintf(keys.keys[i].kid, sizeof(keys.keys[i].kid), "%s", kids[i]);
        keys.keys[i].secret_len = strlen(secrets[i]);
        memcpy(keys.keys[i].secret, secrets[i], keys.keys[i].secret_len);
    }
    keys.nkeys = 2;
    keys.primary = 0;
    keys.leeway_s = LEEWAY;
}

static bool all_zero(const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        if (b[i] != 0)
            return false;
    return true;
}

/*
 * True when msg is one of the reasons token.h documents for a refused
 * token ("token is malformed" may carry a detail), in printable ASCII and
 * short: the reasons are fixed texts, so no part of a token can reach a
 * client through them.
 */
static bool documented_reason(const char *msg)
{
    static const char *const exact[] = {
        "token signature is invalid", "token algorithm must be HS256", "token type must be MWT or JWT",
        "token has expired",          "token is not valid yet",        "token key id is unknown",
        "token has no subject",       "token has no expiry",           "token keys are not configured",
        "token could not be verified", "out of memory",                "token is malformed",
    };
    size_t len = strlen(msg);
    if (len == 0 || len > 120)
        return false;
    for (size_t i = 0; i < len; i++)
        if (msg[i] < 0x20 || msg[i] > 0x7e)
            return false;
    for (size_t i = 0; i < sizeof(exact) / sizeof(exact[0]); i++)
        if (strcmp(msg, exact[i]) == 0)
            return true;
    return strncmp(msg, "token is malformed: ", 20) == 0;
}

/* Verifies token[0..len) and checks the outcome's invariants; returns rc, claims in *out. */
static int verify_checked(const char *token, size_t len, mizan_token_claims_t *out)
{
    mizan_err_t err = {{0}};
    int rc = mizan_token_verify(&keys, token, len, NOW, out, &err);
    if (rc != 0) {
        FUZZ_CHECK(rc == -1, "verify returns 0 or -1");
        FUZZ_CHECK(all_zero(out, sizeof(*out)), "a refused token leaves the claims zeroed");
        FUZZ_CHECK(documented_reason(err.msg), "a refusal has one of the documented client-safe reasons");
        return rc;
    }
    FUZZ_CHECK(out->sub != NULL && out->sub[0] != '\0', "an accepted token has a subject");
    FUZZ_CHECK(out->exp > NOW - LEEWAY, "an accepted token has not expired");
    FUZZ_CHECK(!out->has_nbf || NOW + LEEWAY >= out->nbf, "an accepted token is valid already");
    FUZZ_CHECK(out->nperms <= MIZAN_TOKEN_MAX_PERMS, "perms within the bound");
    FUZZ_CHECK(out->nperms == 0 || out->perms != NULL, "perms present when counted");
    for (size_t i = 0; i < out->nperms; i++)
        FUZZ_CHECK(out->perms[i] != NULL, "every perm is a string");
    mizan_identity_t id;
    mizan_token_claims_identity(out, &id);
    FUZZ_CHECK(id.sub == out->sub && id.nperms == out->nperms, "the identity borrows the claims");
    return rc;
}

/* The key a token with this header text is signed with: its kid's, else the primary. */
static const mizan_token_key_t *signing_key(const json_t *header)
{
    const char *kid = json_string_value(json_object_get(header, "kid"));
    if (kid != NULL)
        for (size_t i = 0; i < keys.nkeys; i++)
            if (strcmp(keys.keys[i].kid, kid) == 0)
                return &keys.keys[i];
    return &keys.keys[keys.primary];
}

static void signed_mode(const char *data, size_t size)
{
    const char *nl = memchr(data, '\n', size);
    if (nl == NULL)
        return;
    size_t hlen = (size_t)(nl - data), plen = size - hlen - 1;
    const char *payload_text = nl + 1;
    json_error_t jerr;
    json_t *header = json_loadb(data, hlen, 0, &jerr);
    json_t *payload = json_loadb(payload_text, plen, 0, &jerr);
    mizan_err_t err = {{0}};
    char *token = mizan_token_sign(signing_key(header), data, hlen, payload_text, plen, &err);
    mizan_token_claims_t claims;
    if (token == NULL)
        goto done;
    mizan_err_t verr = {{0}};
    int rc = mizan_token_verify(&keys, token, strlen(token), NOW, &claims, &verr);
    FUZZ_CHECK(rc != 0 ? strcmp(verr.msg, "token signature is invalid") != 0 : true,
               "a token signed with the key its header names has a valid signature");
    if (rc == 0) {
        mizan_token_claims_deinit(&claims);
        rc = verify_checked(token, strlen(token), &claims);
        FUZZ_CHECK(rc == 0, "verification is deterministic");
        const json_t *sub = json_object_get(payload, "sub");
        FUZZ_CHECK(json_is_string(sub) && strcmp(json_string_value(sub), claims.sub) == 0,
                   "the subject is the payload's sub");
        FUZZ_CHECK(json_integer_value(json_object_get(payload, "exp")) == claims.exp,
                   "the expiry is the payload's exp");
        mizan_token_claims_deinit(&claims);
        FUZZ_CHECK(all_zero(&claims, sizeof(claims)), "deinit zeroes the claims");
    }
done:
    free(token);
    json_decref(header);
    json_decref(payload);
}

/* True when [p, p + len) lies inside the C string s. */
static bool inside(const char *p, size_t len, const char *s)
{
    return s != NULL && p >= s && p + len <= s + strlen(s);
}

static void extract_checked(const char *auth, const char *cookie)
{
    size_t len = 12345;
    bool malformed = true;
    const char *tok = mizan_token_extract(auth, cookie, "mwt", &len, &malformed);
    if (tok == NULL) {
        FUZZ_CHECK(len == 0, "no token: length 0");
        if (malformed)
            FUZZ_CHECK(auth != NULL, "only an Authorization header can be malformed");
        return;
    }
    FUZZ_CHECK(!malformed, "a token is never returned as malformed");
    FUZZ_CHECK(len > 0, "a token is not empty");
    FUZZ_CHECK(inside(tok, len, auth) || inside(tok, len, cookie), "the token is a slice of a header value");
    /* Blanks around a Bearer token or a bare cookie value are not part of
     * it; inside a quoted cookie value they are kept (and verification then
     * refuses the token). */
    bool quoted = inside(tok, len, cookie) && tok > cookie && tok[-1] == '"';
    FUZZ_CHECK(quoted || (tok[0] != ' ' && tok[0] != '\t' && tok[len - 1] != ' ' && tok[len - 1] != '\t'),
               "the token is not blank-padded");
    mizan_token_claims_t claims;
    if (verify_checked(tok, len, &claims) == 0)
        mizan_token_claims_deinit(&claims);
}

static void extract_mode(const char *data, size_t size)
{
    char *copy = malloc(size + 1);
    if (copy == NULL)
        return;
    memcpy(copy, data, size);
    copy[size] = '\0';
    char *cookie = strchr(copy, '\n');
    if (cookie != NULL)
        *cookie++ = '\0';
    extract_checked(copy, cookie);
    extract_checked(NULL, cookie != NULL ? cookie : copy);
    free(copy);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_init();
    setup();
    mizan_token_claims_t claims;
    if (verify_checked((const char *)data, size, &claims) == 0)
        mizan_token_claims_deinit(&claims);
    signed_mode((const char *)data, size);
    extract_mode((const char *)data, size);
    return 0;
}
