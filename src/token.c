/*
 * token.c - Mizan Web Tokens: a strict base64url codec, HS256 signing and
 * constant-time verification, claim parsing, minting for operators, and
 * finding the token in the Authorization or Cookie header.
 *
 * Verification is deliberately narrow: one algorithm (HS256, so "none" and
 * algorithm confusion are impossible), canonical base64url only (a
 * signature has exactly one encoding), no duplicate JSON members (so the
 * claims the gateway reads are the claims that were signed, whatever JSON
 * parser the minter used), and the payload is parsed only after its
 * signature checked out. Messages never quote the token: jansson's own
 * error text, which would, is never passed on.
 */
#include "token.h"

#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <jansson.h>

/* Bytes in an HMAC-SHA256 signature, and their base64url length. */
#define SIG_LEN 32

static const char b64url_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* ------------------------------------------------------------------------
 * base64url without padding (RFC 4648 section 5, RFC 7515 appendix C)
 * ------------------------------------------------------------------------ */

/* Characters needed to encode n bytes (no padding). n < SIZE_MAX / 2. */
static size_t b64url_len(size_t n)
{
    return n / 3 * 4 + (n % 3 == 0 ? 0 : n % 3 + 1);
}

/* Writes b64url_len(n) characters to out; no NUL. */
static void b64url_encode(const unsigned char *in, size_t n, char *out)
{
    size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        *out++ = b64url_alphabet[v >> 18 & 63];
        *out++ = b64url_alphabet[v >> 12 & 63];
        *out++ = b64url_alphabet[v >> 6 & 63];
        *out++ = b64url_alphabet[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;
        *out++ = b64url_alphabet[v >> 18 & 63];
        *out++ = b64url_alphabet[v >> 12 & 63];
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        *out++ = b64url_alphabet[v >> 18 & 63];
        *out++ = b64url_alphabet[v >> 12 & 63];
        *out++ = b64url_alphabet[v >> 6 & 63];
    }
}

/* The 6-bit value of a base64url character, or -1. */
static int b64url_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '-')
        return 62;
    if (c == '_')
        return 63;
    return -1;
}

/*
 * Strict decoder: only the 64 alphabet characters (no '=', no blanks), no
 * impossible length (n % 4 == 1), and the unused low bits of the last
 * character must be zero so that every byte string has exactly one
 * accepted encoding. out holds at least n * 3 / 4 bytes. Returns 0 with
 * *out_len set, or -1.
 */
static int b64url_decode(const char *in, size_t n, unsigned char *out, size_t *out_len)
{
    if (n % 4 == 1)
        return -1;
    uint32_t acc = 0;
    int bits = 0;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        int v = b64url_value((unsigned char)in[i]);
        if (v < 0)
            return -1;
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits & 0xff);
        }
        acc &= (1u << bits) - 1; /* keep only the bits not yet written */
    }
    if (acc != 0)
        return -1;
    *out_len = o;
    return 0;
}

/* ------------------------------------------------------------------------
 * keys and signatures
 * ------------------------------------------------------------------------ */

/* The key whose id is the n bytes at kid, or NULL. */
static const mizan_token_key_t *find_key(const mizan_token_keys_t *keys, const char *kid,
                                         size_t n)
{
    size_t count = keys->nkeys < MIZAN_TOKEN_MAX_KEYS ? keys->nkeys : MIZAN_TOKEN_MAX_KEYS;
    for (size_t i = 0; i < count; i++) {
        const mizan_token_key_t *k = &keys->keys[i];
        if (strnlen(k->kid, sizeof(k->kid)) == n && memcmp(k->kid, kid, n) == 0)
            return k;
    }
    return NULL;
}

/* The primary key, or NULL when the key set has none. */
static const mizan_token_key_t *primary_key(const mizan_token_keys_t *keys)
{
    if (keys->nkeys == 0 || keys->nkeys > MIZAN_TOKEN_MAX_KEYS || keys->primary >= keys->nkeys)
        return NULL;
    return &keys->keys[keys->primary];
}

static bool key_usable(const mizan_token_key_t *key)
{
    return key != NULL && key->secret_len > 0 && key->secret_len <= sizeof(key->secret);
}

/* HMAC-SHA256 of n bytes under key into mac[SIG_LEN]. 0 or -1. */
static int hmac_sha256(const mizan_token_key_t *key, const char *data, size_t n,
                       unsigned char mac[SIG_LEN])
{
    unsigned int mac_len = 0;
    if (HMAC(EVP_sha256(), key->secret, (int)key->secret_len, (const unsigned char *)data, n,
             mac, &mac_len) == NULL ||
        mac_len != SIG_LEN)
        return -1;
    return 0;
}

char *mizan_token_sign(const mizan_token_key_t *key, const char *header, size_t header_len,
                       const char *payload, size_t payload_len, mizan_err_t *err)
{
    if (!key_usable(key)) {
        mizan_err_set(err, "token key is not usable (empty or longer than %zu bytes)",
                      sizeof(key->secret));
        return NULL;
    }
    if (header == NULL || payload == NULL || header_len > SIZE_MAX / 8 ||
        payload_len > SIZE_MAX / 8) {
        mizan_err_set(err, "token header or payload is missing or too long");
        return NULL;
    }
    size_t hb = b64url_len(header_len);
    size_t pb = b64url_len(payload_len);
    size_t total = hb + 1 + pb + 1 + b64url_len(SIG_LEN) + 1;
    char *tok = malloc(total);
    if (tok == NULL) {
        mizan_err_set(err, "out of memory");
        return NULL;
    }
    b64url_encode((const unsigned char *)header, header_len, tok);
    tok[hb] = '.';
    b64url_encode((const unsigned char *)payload, payload_len, tok + hb + 1);
    tok[hb + 1 + pb] = '.';
    unsigned char mac[SIG_LEN];
    if (hmac_sha256(key, tok, hb + 1 + pb, mac) != 0) {
        free(tok);
        mizan_err_set(err, "HMAC-SHA256 failed");
        return NULL;
    }
    b64url_encode(mac, SIG_LEN, tok + hb + 1 + pb + 1);
    tok[total - 1] = '\0';
    return tok;
}

/* ------------------------------------------------------------------------
 * verification
 * ------------------------------------------------------------------------ */

/* a + b for b >= 0, saturating at LLONG_MAX. */
static long long add_sat(long long a, long long b)
{
    return a > LLONG_MAX - b ? LLONG_MAX : a + b;
}

/* True when v (borrowed) is a JSON string equal to the C string s (length included). */
static bool json_string_is(const json_t *v, const char *s)
{
    size_t n = strlen(s);
    return json_is_string(v) && json_string_length(v) == n && memcmp(json_string_value(v), s, n) == 0;
}

/* Parses n bytes as one JSON object; NULL when they are not one. New reference. */
static json_t *load_object(const unsigned char *text, size_t n)
{
    json_error_t jerr;
    json_t *v = json_loadb((const char *)text, n, JSON_REJECT_DUPLICATES, &jerr);
    if (v != NULL && !json_is_object(v)) {
        json_decref(v);
        return NULL;
    }
    return v;
}

/*
 * Checks the header (borrowed) and picks the key. 0 with *key set, or -1
 * with err.
 */
static int check_header(const mizan_token_keys_t *keys, const json_t *header,
                        const mizan_token_key_t **key, mizan_err_t *err)
{
    if (!json_string_is(json_object_get(header, "alg"), "HS256"))
        return mizan_err_set(err, "token algorithm must be HS256");
    const json_t *typ = json_object_get(header, "typ");
    if (typ != NULL && !json_string_is(typ, "MWT") && !json_string_is(typ, "JWT"))
        return mizan_err_set(err, "token type must be MWT or JWT");
    /* RFC 7515 4.1.11: extensions marked critical must be understood; none are. */
    if (json_object_get(header, "crit") != NULL)
        return mizan_err_set(err, "token is malformed: critical header parameters are not supported");
    const json_t *kid = json_object_get(header, "kid");
    if (keys->nkeys == 0 || keys->nkeys > MIZAN_TOKEN_MAX_KEYS)
        return mizan_err_set(err, "token keys are not configured");
    if (kid == NULL) {
        *key = primary_key(keys);
    } else {
        if (!json_is_string(kid))
            return mizan_err_set(err, "token is malformed: header kid must be a string");
        /* An empty kid would otherwise match a key configured without one. */
        if (json_string_length(kid) == 0)
            return mizan_err_set(err, "token is malformed: header kid must not be empty");
        *key = find_key(keys, json_string_value(kid), json_string_length(kid));
        if (*key == NULL)
            return mizan_err_set(err, "token key id is unknown");
    }
    if (!key_usable(*key))
        return mizan_err_set(err, "token keys are not configured");
    return 0;
}

/* Reads an optional integer claim of payload (borrowed). 0 (present or not) or -1 with err. */
static int opt_integer(const json_t *payload, const char *name, long long *value, bool *has,
                       mizan_err_t *err)
{
    const json_t *v = json_object_get(payload, name);
    *has = v != NULL;
    if (v == NULL)
        return 0;
    if (!json_is_integer(v))
        return mizan_err_set(err, "token is malformed: claim %s must be an integer", name);
    *value = json_integer_value(v);
    return 0;
}

/* Reads an optional boolean claim of payload (borrowed; false when absent). 0 or -1 with err. */
static int opt_boolean(const json_t *payload, const char *name, bool *value, mizan_err_t *err)
{
    const json_t *v = json_object_get(payload, name);
    *value = false;
    if (v == NULL)
        return 0;
    if (!json_is_boolean(v))
        return mizan_err_set(err, "token is malformed: claim %s must be a boolean", name);
    *value = json_is_true(v);
    return 0;
}

/*
 * True when the JSON string v (borrowed) is non-empty and holds no control
 * character (U+0000..U+001F, U+007F): such a string cannot be confused with
 * another once joined, logged or used in a key.
 */
static bool clean_string(const json_t *v)
{
    const char *s = json_string_value(v);
    size_t n = json_string_length(v);
    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return false;
    return true;
}

/*
 * Checks the claims of the payload (borrowed) at now and copies them into
 * out (zeroed on entry; on failure the caller deinits it). 0 or -1 with err.
 */
static int read_claims(const mizan_token_keys_t *keys, const json_t *payload, long long now,
                       mizan_token_claims_t *out, mizan_err_t *err)
{
    const json_t *sub = json_object_get(payload, "sub");
    if (sub == NULL)
        return mizan_err_set(err, "token has no subject");
    if (!json_is_string(sub))
        return mizan_err_set(err, "token is malformed: claim sub must be a string");
    if (json_string_length(sub) == 0)
        return mizan_err_set(err, "token has no subject");
    /* A NUL would let "a\0b" pass as "a"; CR, LF and the other controls could
     * forge log lines or join two values into one. */
    if (!clean_string(sub))
        return mizan_err_set(err, "token is malformed: claim sub contains a control character");

    const json_t *exp = json_object_get(payload, "exp");
    if (exp == NULL)
        return mizan_err_set(err, "token has no expiry");
    if (!json_is_integer(exp))
        return mizan_err_set(err, "token is malformed: claim exp must be an integer");
    out->exp = json_integer_value(exp);
    if (opt_integer(payload, "nbf", &out->nbf, &out->has_nbf, err) != 0 ||
        opt_integer(payload, "iat", &out->iat, &out->has_iat, err) != 0 ||
        opt_boolean(payload, "staff", &out->staff, err) != 0 ||
        opt_boolean(payload, "superuser", &out->superuser, err) != 0)
        return -1;

    const json_t *perms = json_object_get(payload, "perms");
    if (perms != NULL) {
        if (!json_is_array(perms))
            return mizan_err_set(err, "token is malformed: claim perms must be an array of strings");
        if (json_array_size(perms) > MIZAN_TOKEN_MAX_PERMS)
            return mizan_err_set(err, "token is malformed: claim perms holds more than %d entries",
                                 MIZAN_TOKEN_MAX_PERMS);
        size_t i;
        const json_t *p;
        json_array_foreach(perms, i, p) {
            if (!json_is_string(p))
                return mizan_err_set(err,
                                     "token is malformed: claim perms must be an array of strings");
            if (!clean_string(p))
                return mizan_err_set(err, "token is malformed: claim perms holds an empty string or a "
                                          "control character");
        }
    }

    /* The time window, after every shape check so the reason is stable. */
    long long leeway = keys->leeway_s > 0 ? keys->leeway_s : 0;
    if (now >= add_sat(out->exp, leeway))
        return mizan_err_set(err, "token has expired");
    if (out->has_nbf && add_sat(now, leeway) < out->nbf)
        return mizan_err_set(err, "token is not valid yet");

    out->sub = strdup(json_string_value(sub));
    if (out->sub == NULL)
        return mizan_err_set(err, "out of memory");
    size_t n = json_array_size(perms); /* 0 when perms is NULL */
    if (n > 0) {
        out->perms = calloc(n, sizeof(*out->perms));
        if (out->perms == NULL)
            return mizan_err_set(err, "out of memory");
        for (size_t i = 0; i < n; i++) {
            out->perms[i] = strdup(json_string_value(json_array_get(perms, i)));
            if (out->perms[i] == NULL)
                return mizan_err_set(err, "out of memory");
            out->nperms = i + 1;
        }
    }
    return 0;
}

int mizan_token_verify(const mizan_token_keys_t *keys, const char *token, size_t len,
                       long long now, mizan_token_claims_t *out, mizan_err_t *err)
{
    int rc = -1;
    unsigned char *buf = NULL;
    json_t *header = NULL;
    json_t *payload = NULL;

    if (out == NULL)
        return mizan_err_set(err, "token claims have nowhere to go");
    memset(out, 0, sizeof(*out));
    if (keys == NULL) {
        mizan_err_set(err, "token keys are not configured");
        goto done;
    }
    if (token == NULL || len == 0 || len > MIZAN_TOKEN_MAX_LEN) {
        mizan_err_set(err, "token is malformed");
        goto done;
    }

    /* Exactly three non-empty parts. */
    const char *dot1 = memchr(token, '.', len);
    const char *dot2 = dot1 ? memchr(dot1 + 1, '.', len - (size_t)(dot1 + 1 - token)) : NULL;
    if (dot2 == NULL || memchr(dot2 + 1, '.', len - (size_t)(dot2 + 1 - token)) != NULL) {
        mizan_err_set(err, "token is malformed: it must have three parts");
        goto done;
    }
    size_t hlen = (size_t)(dot1 - token);
    size_t plen = (size_t)(dot2 - dot1 - 1);
    size_t slen = len - (size_t)(dot2 + 1 - token);
    if (hlen == 0 || plen == 0 || slen == 0) {
        mizan_err_set(err, "token is malformed: it must have three parts");
        goto done;
    }

    /* Decoded parts are smaller than their encodings: one buffer holds all. */
    buf = malloc(len);
    if (buf == NULL) {
        mizan_err_set(err, "out of memory");
        goto done;
    }
    unsigned char *hbuf = buf;
    size_t hn = 0;
    size_t pn = 0;
    size_t sn = 0;
    if (b64url_decode(token, hlen, hbuf, &hn) != 0 ||
        b64url_decode(dot1 + 1, plen, hbuf + hn, &pn) != 0 ||
        b64url_decode(dot2 + 1, slen, hbuf + hn + pn, &sn) != 0) {
        mizan_err_set(err, "token is malformed: invalid base64url");
        goto done;
    }
    unsigned char *pbuf = hbuf + hn;
    unsigned char *sig = pbuf + pn;

    header = load_object(hbuf, hn);
    if (header == NULL) {
        mizan_err_set(err, "token is malformed: header is not a JSON object");
        goto done;
    }
    const mizan_token_key_t *key = NULL;
    if (check_header(keys, header, &key, err) != 0)
        goto done;

    unsigned char mac[SIG_LEN];
    if (hmac_sha256(key, token, (size_t)(dot2 - token), mac) != 0) {
        mizan_err_set(err, "token could not be verified");
        goto done;
    }
    if (sn != SIG_LEN || CRYPTO_memcmp(mac, sig, SIG_LEN) != 0) {
        mizan_err_set(err, "token signature is invalid");
        goto done;
    }

    payload = load_object(pbuf, pn);
    if (payload == NULL) {
        mizan_err_set(err, "token is malformed: payload is not a JSON object");
        goto done;
    }
    if (read_claims(keys, payload, now, out, err) != 0)
        goto done;
    rc = 0;

done:
    if (rc != 0)
        mizan_token_claims_deinit(out);
    json_decref(header);
    json_decref(payload);
    free(buf);
    return rc;
}

void mizan_token_claims_deinit(mizan_token_claims_t *c)
{
    if (c == NULL)
        return;
    free(c->sub);
    if (c->perms != NULL) {
        for (size_t i = 0; i < c->nperms; i++)
            free(c->perms[i]);
        free(c->perms);
    }
    memset(c, 0, sizeof(*c));
}

void mizan_token_claims_identity(const mizan_token_claims_t *c, mizan_identity_t *id)
{
    id->sub = c->sub;
    id->staff = c->staff;
    id->superuser = c->superuser;
    id->perms = (const char *const *)c->perms;
    id->nperms = c->nperms;
}

/* ------------------------------------------------------------------------
 * minting
 * ------------------------------------------------------------------------ */

/* True when s is non-empty and holds no control character (see clean_string). */
static bool clean_cstring(const char *s)
{
    if (s[0] == '\0')
        return false;
    for (; *s != '\0'; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return false;
    return true;
}

/* Sets obj[name] to a new string; -1 on invalid UTF-8 or no memory. */
static int set_string(json_t *obj, const char *name, const char *value)
{
    return json_object_set_new(obj, name, json_string(value));
}

char *mizan_token_mint(const mizan_token_keys_t *keys, const char *kid, const char *sub,
                       bool staff, bool superuser, const char *const *perms, size_t nperms,
                       long long ttl_s, long long now, mizan_err_t *err)
{
    char *result = NULL;
    json_t *header = NULL;
    json_t *payload = NULL;
    json_t *arr = NULL;
    char *htext = NULL;
    char *ptext = NULL;
    char *tok = NULL;

    if (keys == NULL || keys->nkeys == 0 || keys->nkeys > MIZAN_TOKEN_MAX_KEYS) {
        mizan_err_set(err, "token keys are not configured");
        goto done;
    }
    const mizan_token_key_t *key = kid ? find_key(keys, kid, strlen(kid)) : primary_key(keys);
    if (key == NULL) {
        mizan_err_set(err, kid ? "token key id is unknown" : "token keys are not configured");
        goto done;
    }
    if (sub == NULL || !clean_cstring(sub)) {
        mizan_err_set(err, "token subject must be a non-empty string without control characters");
        goto done;
    }
    if (kid != NULL && kid[0] == '\0') {
        mizan_err_set(err, "token key id must not be empty");
        goto done;
    }
    if (ttl_s <= 0) {
        mizan_err_set(err, "token lifetime must be a positive number of seconds");
        goto done;
    }
    if (now > LLONG_MAX - ttl_s) {
        mizan_err_set(err, "token lifetime is too long");
        goto done;
    }
    if (nperms > MIZAN_TOKEN_MAX_PERMS || (nperms > 0 && perms == NULL)) {
        mizan_err_set(err, "a token holds at most %d perms", MIZAN_TOKEN_MAX_PERMS);
        goto done;
    }

    header = json_object();
    payload = json_object();
    if (header == NULL || payload == NULL || set_string(header, "alg", "HS256") != 0 ||
        set_string(header, "typ", "MWT") != 0 || (kid && set_string(header, "kid", kid) != 0)) {
        mizan_err_set(err, "token header could not be built (kid must be UTF-8)");
        goto done;
    }
    if (set_string(payload, "sub", sub) != 0) {
        mizan_err_set(err, "token subject must be valid UTF-8");
        goto done;
    }
    if (json_object_set_new(payload, "exp", json_integer(now + ttl_s)) != 0 ||
        json_object_set_new(payload, "iat", json_integer(now)) != 0 ||
        (staff && json_object_set_new(payload, "staff", json_true()) != 0) ||
        (superuser && json_object_set_new(payload, "superuser", json_true()) != 0)) {
        mizan_err_set(err, "out of memory");
        goto done;
    }
    if (nperms > 0) {
        arr = json_array();
        if (arr == NULL) {
            mizan_err_set(err, "out of memory");
            goto done;
        }
        for (size_t i = 0; i < nperms; i++) {
            if (perms[i] == NULL || !clean_cstring(perms[i]) ||
                json_array_append_new(arr, json_string(perms[i])) != 0) {
                mizan_err_set(err, "token perm %zu is missing, empty, not valid UTF-8 or holds a control character",
                              i);
                goto done;
            }
        }
        int rc = json_object_set_new(payload, "perms", arr);
        arr = NULL; /* stolen, even on failure */
        if (rc != 0) {
            mizan_err_set(err, "out of memory");
            goto done;
        }
    }

    htext = json_dumps(header, JSON_COMPACT);
    ptext = json_dumps(payload, JSON_COMPACT);
    if (htext == NULL || ptext == NULL) {
        mizan_err_set(err, "out of memory");
        goto done;
    }
    tok = mizan_token_sign(key, htext, strlen(htext), ptext, strlen(ptext), err);
    if (tok == NULL)
        goto done;
    if (strlen(tok) > MIZAN_TOKEN_MAX_LEN) {
        mizan_err_set(err, "token would be longer than %d bytes", MIZAN_TOKEN_MAX_LEN);
        goto done;
    }
    result = tok;
    tok = NULL;

done:
    free(tok);
    free(htext);
    free(ptext);
    json_decref(arr);
    json_decref(header);
    json_decref(payload);
    return result;
}

/* ------------------------------------------------------------------------
 * extraction from request headers
 * ------------------------------------------------------------------------ */

static bool is_blank(char c)
{
    return c == ' ' || c == '\t';
}

/* The token of a non-blank Authorization value, or NULL when it is not Bearer. */
static const char *bearer_token(const char *p, size_t *len)
{
    static const char scheme[] = "bearer";
    size_t n = sizeof(scheme) - 1;
    if (strncasecmp(p, scheme, n) != 0 || !is_blank(p[n]))
        return NULL;
    p += n;
    while (is_blank(*p))
        p++;
    const char *end = p + strlen(p);
    while (end > p && is_blank(end[-1]))
        end--;
    if (end == p)
        return NULL;
    *len = (size_t)(end - p);
    return p;
}

/* The value of the first non-empty cookie named name (n bytes), or NULL. */
static const char *cookie_value(const char *cookie, const char *name, size_t n, size_t *len)
{
    const char *p = cookie;
    while (*p != '\0') {
        const char *semi = strchr(p, ';');
        const char *end = semi ? semi : p + strlen(p);
        while (p < end && is_blank(*p))
            p++;
        const char *eq = memchr(p, '=', (size_t)(end - p));
        if (eq != NULL) {
            const char *name_end = eq;
            while (name_end > p && is_blank(name_end[-1]))
                name_end--;
            if ((size_t)(name_end - p) == n && memcmp(p, name, n) == 0) {
                const char *v = eq + 1;
                const char *vend = end;
                while (v < vend && is_blank(*v))
                    v++;
                while (vend > v && is_blank(vend[-1]))
                    vend--;
                if (vend - v >= 2 && v[0] == '"' && vend[-1] == '"') {
                    v++;
                    vend--;
                }
                if (vend > v) {
                    *len = (size_t)(vend - v);
                    return v;
                }
            }
        }
        p = semi ? semi + 1 : end;
    }
    return NULL;
}

const char *mizan_token_extract(const char *authorization, const char *cookie,
                                const char *cookie_name, size_t *len, bool *malformed)
{
    *len = 0;
    *malformed = false;
    if (authorization != NULL) {
        const char *p = authorization;
        while (is_blank(*p))
            p++;
        if (*p != '\0') {
            const char *t = bearer_token(p, len);
            if (t == NULL)
                *malformed = true;
            return t;
        }
    }
    if (cookie != NULL && cookie_name != NULL && cookie_name[0] != '\0')
        return cookie_value(cookie, cookie_name, strlen(cookie_name), len);
    return NULL;
}
