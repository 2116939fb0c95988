/*
 * test_token.c - Mizan Web Tokens: the PROTOCOL.md test vector (verified and
 * reproduced byte for byte), every way a token is refused, key rotation,
 * the clock window and its boundaries, minting, and finding the token in
 * the Authorization and Cookie headers.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <criterion/criterion.h>

#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "token.h"

#define VECTOR_KEY "mizan-token-secret-0123456789abcd"
#define VECTOR_HEADER "{\"alg\":\"HS256\",\"typ\":\"MWT\"}"
#define VECTOR_PAYLOAD \
    "{\"sub\":\"alice\",\"exp\":4102444800,\"staff\":true,\"perms\":[\"blog.add_post\"]}"
#define VECTOR_TOKEN                                                                       \
    "eyJhbGciOiJIUzI1NiIsInR5cCI6Ik1XVCJ9."                                                \
    "eyJzdWIiOiJhbGljZSIsImV4cCI6NDEwMjQ0NDgwMCwic3RhZmYiOnRydWUsInBlcm1zIjpbImJsb2cuYWRk" \
    "X3Bvc3QiXX0.8ZNtHZnN0nAQpS6CUizlZOqMoP2oFuNmePKbCffP-Tc"

/* A time well inside every test token's window unless a test says otherwise. */
#define NOW 1700000000LL

/* ---- helpers ----------------------------------------------------------- */

static void set_key(mizan_token_key_t *k, const char *kid, const char *secret)
{
    memset(k, 0, sizeof(*k));
    snprintf(k->kid, sizeof(k->kid), "%s", kid);
    k->secret_len = strlen(secret);
    memcpy(k->secret, secret, k->secret_len);
}

/* One key, the PROTOCOL test vector's, named "main". */
static mizan_token_keys_t one_key(void)
{
    mizan_token_keys_t ks;
    memset(&ks, 0, sizeof(ks));
    set_key(&ks.keys[0], "main", VECTOR_KEY);
    ks.nkeys = 1;
    ks.primary = 0;
    return ks;
}

/* Signs exact header and payload texts; the caller frees. */
static char *sign_with(const mizan_token_key_t *k, const char *header, const char *payload)
{
    mizan_err_t err = {{0}};
    char *t = mizan_token_sign(k, header, strlen(header), payload, strlen(payload), &err);
    cr_assert_not_null(t, "sign failed: %s", err.msg);
    return t;
}

static char *sign_vec(const char *header, const char *payload)
{
    mizan_token_keys_t ks = one_key();
    return sign_with(&ks.keys[0], header, payload);
}

/* No 8-byte window of the token may appear in a failure message. */
static void assert_no_echo(const char *msg, const char *token)
{
    size_t n = strlen(token);
    for (size_t i = 0; i + 8 <= n; i++)
        cr_assert_null(memmem(msg, strlen(msg), token + i, 8),
                       "message '%s' quotes the token at offset %zu", msg, i);
}

static int verify_at(const mizan_token_keys_t *ks, const char *t, long long now,
                     mizan_token_claims_t *c, mizan_err_t *err)
{
    return mizan_token_verify(ks, t, strlen(t), now, c, err);
}

/* Asserts that t is refused at now with a message containing want. */
static void expect_fail_at(const mizan_token_keys_t *ks, const char *t, long long now,
                           const char *want)
{
    mizan_token_claims_t c;
    mizan_err_t err = {{0}};
    memset(&c, 0xa5, sizeof(c)); /* must be zeroed on failure */
    int rc = verify_at(ks, t, now, &c, &err);
    cr_assert_eq(rc, -1, "token verified but should fail with '%s'", want);
    cr_assert_not_null(strstr(err.msg, want), "message '%s' lacks '%s'", err.msg, want);
    cr_assert_null(c.sub);
    cr_assert_null(c.perms);
    cr_assert_eq(c.nperms, 0);
    assert_no_echo(err.msg, t);
}

static void expect_fail(const char *t, const char *want)
{
    mizan_token_keys_t ks = one_key();
    expect_fail_at(&ks, t, NOW, want);
}

/* Signs with the vector key and asserts the token is refused with want. */
static void expect_signed_fail(const char *header, const char *payload, const char *want)
{
    char *t = sign_vec(header, payload);
    expect_fail(t, want);
    free(t);
}

static void expect_ok_at(const mizan_token_keys_t *ks, const char *t, long long now)
{
    mizan_token_claims_t c;
    mizan_err_t err = {{0}};
    cr_assert_eq(verify_at(ks, t, now, &c, &err), 0, "refused at %lld: %s", now, err.msg);
    mizan_token_claims_deinit(&c);
}

/* Part i (0..2) of a compact token as a new string. */
static char *part(const char *t, int i)
{
    const char *p = t;
    for (int k = 0; k < i; k++) {
        p = strchr(p, '.');
        cr_assert_not_null(p);
        p++;
    }
    const char *e = strchr(p, '.');
    size_t n = e ? (size_t)(e - p) : strlen(p);
    char *s = strndup(p, n);
    cr_assert_not_null(s);
    return s;
}

static char *join3(const char *a, const char *b, const char *c)
{
    char *s = NULL;
    cr_assert_neq(asprintf(&s, "%s.%s.%s", a, b, c), -1);
    return s;
}

/* ---- the PROTOCOL test vector ----------------------------------------- */

Test(token_vector, verifies_and_claims_are_read)
{
    mizan_token_keys_t ks = one_key();
    mizan_token_claims_t c;
    mizan_err_t err = {{0}};
    cr_assert_eq(verify_at(&ks, VECTOR_TOKEN, NOW, &c, &err), 0, "%s", err.msg);
    cr_assert_str_eq(c.sub, "alice");
    cr_assert_eq(c.exp, 4102444800LL);
    cr_assert(c.staff);
    cr_assert_not(c.superuser);
    cr_assert_eq(c.nperms, 1);
    cr_assert_str_eq(c.perms[0], "blog.add_post");
    cr_assert_not(c.has_nbf);
    cr_assert_not(c.has_iat);

    mizan_identity_t id;
    mizan_token_claims_identity(&c, &id);
    cr_assert_eq(id.sub, c.sub);
    cr_assert(id.staff);
    cr_assert_not(id.superuser);
    cr_assert_eq(id.nperms, 1);
    cr_assert_str_eq(id.perms[0], "blog.add_post");

    mizan_token_claims_deinit(&c);
    cr_assert_null(c.sub);
    cr_assert_null(c.perms);
    mizan_token_claims_deinit(&c); /* twice is harmless */
}

Test(token_vector, signature_is_reproduced_byte_for_byte)
{
    char *t = sign_vec(VECTOR_HEADER, VECTOR_PAYLOAD);
    cr_assert_str_eq(t, VECTOR_TOKEN);
    free(t);
}

Test(token_vector, verifies_from_an_unterminated_buffer)
{
    mizan_token_keys_t ks = one_key();
    size_t n = strlen(VECTOR_TOKEN);
    char *buf = malloc(n);
    cr_assert_not_null(buf);
    memcpy(buf, VECTOR_TOKEN, n); /* no NUL: ASan catches a read past n */
    mizan_token_claims_t c;
    mizan_err_t err = {{0}};
    cr_assert_eq(mizan_token_verify(&ks, buf, n, NOW, &c, &err), 0, "%s", err.msg);
    mizan_token_claims_deinit(&c);
    /* One byte short cuts the signature: refused. */
    cr_assert_eq(mizan_token_verify(&ks, buf, n - 1, NOW, &c, &err), -1);
    free(buf);
}

Test(token_vector, wrong_key_is_refused)
{
    mizan_token_keys_t ks = one_key();
    set_key(&ks.keys[0], "main", "mizan-token-secret-0123456789abce");
    expect_fail_at(&ks, VECTOR_TOKEN, NOW, "token signature is invalid");
}

/* ---- shape and encoding ------------------------------------------------ */

Test(token_shape, wrong_number_of_parts)
{
    expect_fail("", "token is malformed");
    expect_fail("eyJhbGciOiJIUzI1NiJ9", "token is malformed");
    expect_fail("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0", "token is malformed");
    char *four = NULL;
    cr_assert_neq(asprintf(&four, "%s.AAAA", VECTOR_TOKEN), -1);
    expect_fail(four, "token is malformed");
    free(four);
    char *h = part(VECTOR_TOKEN, 0), *p = part(VECTOR_TOKEN, 1), *s = part(VECTOR_TOKEN, 2);
    char *t1 = join3("", p, s), *t2 = join3(h, "", s), *t3 = join3(h, p, "");
    expect_fail(t1, "token is malformed");
    expect_fail(t2, "token is malformed");
    expect_fail(t3, "token is malformed");
    free(t1), free(t2), free(t3), free(h), free(p), free(s);
}

/* A payload of exactly n bytes: {"sub":"a","exp":4102444800,"x":"xxx..."}. */
static char *payload_of_len(size_t n)
{
    static const char head[] = "{\"sub\":\"a\",\"exp\":4102444800,\"x\":\"";
    size_t h = sizeof(head) - 1;
    cr_assert_gt(n, h + 2);
    char *s = malloc(n + 1);
    cr_assert_not_null(s);
    memcpy(s, head, h);
    memset(s + h, 'x', n - h - 2);
    memcpy(s + n - 2, "\"}", 3);
    return s;
}

Test(token_shape, length_limit)
{
    /* 36 characters of header, 43 of signature, two dots: a 6083-byte
     * payload (8111 characters) makes exactly MIZAN_TOKEN_MAX_LEN. */
    mizan_token_keys_t ks = one_key();
    char *p = payload_of_len(6083);
    char *t = sign_vec(VECTOR_HEADER, p);
    cr_assert_eq(strlen(t), MIZAN_TOKEN_MAX_LEN);
    expect_ok_at(&ks, t, NOW);
    free(p), free(t);
    p = payload_of_len(6084);
    t = sign_vec(VECTOR_HEADER, p);
    cr_assert_eq(strlen(t), MIZAN_TOKEN_MAX_LEN + 1);
    expect_fail(t, "token is malformed");
    free(p), free(t);
}

Test(token_shape, bad_base64url_characters)
{
    /* Standard base64's '+' and '/', whitespace and '=' anywhere. */
    const char *bad[] = {"+", "/", " ", "=", "\n", "*"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        for (int where = 0; where < 3; where++) {
            char *t = strdup(VECTOR_TOKEN);
            cr_assert_not_null(t);
            char *p = t;
            for (int k = 0; k < where; k++)
                p = strchr(p, '.') + 1;
            p[4] = bad[i][0];
            expect_fail(t, "token is malformed");
            free(t);
        }
    }
}

Test(token_shape, padding_is_refused)
{
    /* The vector's header "...In0" would be "...In0=" padded; its 43-char
     * signature would end in "=". Both are refused even if re-signed. */
    char *h = part(VECTOR_TOKEN, 0), *p = part(VECTOR_TOKEN, 1), *s = part(VECTOR_TOKEN, 2);
    char *sig_padded = NULL, *pay_padded = NULL;
    cr_assert_neq(asprintf(&sig_padded, "%s.%s.%s=", h, p, s), -1);
    cr_assert_neq(asprintf(&pay_padded, "%s.%s==.%s", h, p, s), -1);
    expect_fail(sig_padded, "token is malformed");
    expect_fail(pay_padded, "token is malformed");
    free(sig_padded), free(pay_padded), free(h), free(p), free(s);
}

Test(token_shape, impossible_length_and_non_canonical_bits)
{
    char *h = part(VECTOR_TOKEN, 0), *p = part(VECTOR_TOKEN, 1), *s = part(VECTOR_TOKEN, 2);
    /* 4n+1 characters cannot be base64. */
    char *sig5 = NULL;
    cr_assert_neq(asprintf(&sig5, "%s.%s.AAAAA", h, p), -1);
    expect_fail(sig5, "token is malformed");
    free(sig5);
    /* The signature ends in 'c' (value 28, low two bits 00); 'd' encodes the
     * same 32 bytes with a non-zero unused bit: a second spelling of one
     * signature, refused. */
    size_t n = strlen(s);
    cr_assert_eq(s[n - 1], 'c');
    s[n - 1] = 'd';
    char *t = join3(h, p, s);
    expect_fail(t, "token is malformed");
    free(t), free(h), free(p), free(s);
}

Test(token_shape, header_and_payload_must_be_json_objects)
{
    expect_signed_fail("not json", "{\"sub\":\"a\",\"exp\":4102444800}", "token is malformed");
    expect_signed_fail("[\"HS256\"]", "{\"sub\":\"a\",\"exp\":4102444800}", "token is malformed");
    expect_signed_fail("\"HS256\"", "{\"sub\":\"a\",\"exp\":4102444800}", "token is malformed");
    expect_signed_fail(VECTOR_HEADER "x", "{\"sub\":\"a\",\"exp\":4102444800}",
                       "token is malformed");
    expect_signed_fail(VECTOR_HEADER, "sub=alice", "token is malformed");
    expect_signed_fail(VECTOR_HEADER, "[{\"sub\":\"a\",\"exp\":4102444800}]",
                       "token is malformed");
    expect_signed_fail(VECTOR_HEADER, "{\"sub\":\"a\",\"exp\":4102444800", "token is malformed");
    expect_signed_fail(VECTOR_HEADER, "", "token is malformed");
}

Test(token_shape, duplicate_members_are_refused)
{
    expect_signed_fail("{\"alg\":\"HS256\",\"alg\":\"none\"}",
                       "{\"sub\":\"a\",\"exp\":4102444800}", "token is malformed");
    expect_signed_fail(VECTOR_HEADER, "{\"sub\":\"a\",\"sub\":\"root\",\"exp\":4102444800}",
                       "token is malformed");
}

/* ---- header ------------------------------------------------------------ */

#define PAYLOAD_OK "{\"sub\":\"a\",\"exp\":4102444800}"

Test(token_header, alg_must_be_exactly_hs256)
{
    const char *m = "token algorithm must be HS256";
    expect_signed_fail("{\"alg\":\"none\",\"typ\":\"MWT\"}", PAYLOAD_OK, m);
    expect_signed_fail("{\"alg\":\"HS512\",\"typ\":\"MWT\"}", PAYLOAD_OK, m);
    expect_signed_fail("{\"alg\":\"HS384\"}", PAYLOAD_OK, m);
    expect_signed_fail("{\"alg\":\"RS256\"}", PAYLOAD_OK, m);
    expect_signed_fail("{\"alg\":\"hs256\"}", PAYLOAD_OK, m);
    expect_signed_fail("{\"alg\":\"HS256 \"}", PAYLOAD_OK, m);
    expect_signed_fail("{\"alg\":256}", PAYLOAD_OK, m);
    expect_signed_fail("{\"alg\":null}", PAYLOAD_OK, m);
    expect_signed_fail("{\"typ\":\"MWT\"}", PAYLOAD_OK, m);
    expect_signed_fail("{}", PAYLOAD_OK, m);
}

Test(token_header, alg_none_with_empty_signature_is_refused)
{
    char *t = sign_vec("{\"alg\":\"none\"}", PAYLOAD_OK);
    *strrchr(t, '.') = '\0';
    char *unsigned_tok = NULL;
    cr_assert_neq(asprintf(&unsigned_tok, "%s.", t), -1);
    expect_fail(unsigned_tok, "token is malformed");
    free(unsigned_tok);
    free(t);
}

Test(token_header, typ_must_be_mwt_or_jwt)
{
    mizan_token_keys_t ks = one_key();
    const char *ok[] = {"{\"alg\":\"HS256\",\"typ\":\"MWT\"}", "{\"alg\":\"HS256\",\"typ\":\"JWT\"}",
                        "{\"alg\":\"HS256\"}", "{\"typ\":\"JWT\",\"alg\":\"HS256\"}"};
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        char *t = sign_vec(ok[i], PAYLOAD_OK);
        expect_ok_at(&ks, t, NOW);
        free(t);
    }
    const char *m = "token type must be MWT or JWT";
    expect_signed_fail("{\"alg\":\"HS256\",\"typ\":\"JOSE\"}", PAYLOAD_OK, m);
    expect_signed_fail("{\"alg\":\"HS256\",\"typ\":\"mwt\"}", PAYLOAD_OK, m);
    expect_signed_fail("{\"alg\":\"HS256\",\"typ\":\"\"}", PAYLOAD_OK, m);
    expect_signed_fail("{\"alg\":\"HS256\",\"typ\":1}", PAYLOAD_OK, m);
    expect_signed_fail("{\"alg\":\"HS256\",\"typ\":null}", PAYLOAD_OK, m);
}

Test(token_header, crit_is_refused)
{
    expect_signed_fail("{\"alg\":\"HS256\",\"crit\":[\"exp\"],\"exp\":1}", PAYLOAD_OK,
                       "token is malformed");
}

/* ---- keys and rotation ------------------------------------------------- */

#define SECRET_OLD "old-secret-old-secret-old-secret-0001"
#define SECRET_NEW "new-secret-new-secret-new-secret-0002"

/* Primary "new" (index 0), retired "old" (index 1). */
static mizan_token_keys_t two_keys(void)
{
    mizan_token_keys_t ks;
    memset(&ks, 0, sizeof(ks));
    set_key(&ks.keys[0], "new", SECRET_NEW);
    set_key(&ks.keys[1], "old", SECRET_OLD);
    ks.nkeys = 2;
    ks.primary = 0;
    return ks;
}

Test(token_keys, kid_selects_the_key)
{
    mizan_token_keys_t ks = two_keys();
    char *t_old = sign_with(&ks.keys[1], "{\"alg\":\"HS256\",\"kid\":\"old\"}", PAYLOAD_OK);
    char *t_new = sign_with(&ks.keys[0], "{\"alg\":\"HS256\",\"kid\":\"new\"}", PAYLOAD_OK);
    char *t_none = sign_with(&ks.keys[0], "{\"alg\":\"HS256\"}", PAYLOAD_OK);
    expect_ok_at(&ks, t_old, NOW);  /* secondary key, named */
    expect_ok_at(&ks, t_new, NOW);  /* primary key, named */
    expect_ok_at(&ks, t_none, NOW); /* no kid: the primary */
    free(t_old), free(t_new), free(t_none);
}

Test(token_keys, wrong_key_for_kid_fails)
{
    mizan_token_keys_t ks = two_keys();
    /* Signed with the secondary key but no kid: checked against the primary. */
    char *a = sign_with(&ks.keys[1], "{\"alg\":\"HS256\"}", PAYLOAD_OK);
    /* Claims kid "old" but signed with the primary key. */
    char *b = sign_with(&ks.keys[0], "{\"alg\":\"HS256\",\"kid\":\"old\"}", PAYLOAD_OK);
    expect_fail_at(&ks, a, NOW, "token signature is invalid");
    expect_fail_at(&ks, b, NOW, "token signature is invalid");
    /* With the secondary made primary, the kid-less one verifies. */
    ks.primary = 1;
    expect_ok_at(&ks, a, NOW);
    free(a), free(b);
}

Test(token_keys, unknown_or_bad_kid)
{
    mizan_token_keys_t ks = two_keys();
    char *a = sign_with(&ks.keys[0], "{\"alg\":\"HS256\",\"kid\":\"SECRETKIDMARKER\"}", PAYLOAD_OK);
    expect_fail_at(&ks, a, NOW, "token key id is unknown");
    mizan_token_claims_t c;
    mizan_err_t err = {{0}};
    cr_assert_eq(verify_at(&ks, a, NOW, &c, &err), -1);
    cr_assert_null(strstr(err.msg, "SECRETKIDMARKER"), "message echoes the kid: %s", err.msg);
    char *b = sign_with(&ks.keys[0], "{\"alg\":\"HS256\",\"kid\":\"ne\"}", PAYLOAD_OK);
    expect_fail_at(&ks, b, NOW, "token key id is unknown"); /* no prefix match */
    char *c2 = sign_with(&ks.keys[0], "{\"alg\":\"HS256\",\"kid\":7}", PAYLOAD_OK);
    expect_fail_at(&ks, c2, NOW, "token is malformed");
    free(a), free(b), free(c2);
}

Test(token_keys, no_keys_configured)
{
    mizan_token_keys_t ks;
    memset(&ks, 0, sizeof(ks));
    expect_fail_at(&ks, VECTOR_TOKEN, NOW, "token keys are not configured");
    mizan_token_keys_t bad = one_key();
    bad.primary = 3;
    expect_fail_at(&bad, VECTOR_TOKEN, NOW, "token keys are not configured");
    mizan_token_keys_t empty = one_key();
    empty.keys[0].secret_len = 0;
    expect_fail_at(&empty, VECTOR_TOKEN, NOW, "token keys are not configured");
    mizan_token_claims_t c;
    mizan_err_t err = {{0}};
    cr_assert_eq(mizan_token_verify(NULL, VECTOR_TOKEN, strlen(VECTOR_TOKEN), NOW, &c, &err), -1);
}

/* ---- signature --------------------------------------------------------- */

Test(token_signature, tampered_payload_fails)
{
    /* The vector's header and signature around a payload that promotes alice. */
    char *other = sign_vec(VECTOR_HEADER,
                           "{\"sub\":\"alice\",\"exp\":4102444800,\"staff\":true,"
                           "\"superuser\":true,\"perms\":[\"blog.add_post\"]}");
    char *h = part(VECTOR_TOKEN, 0), *p = part(other, 1), *s = part(VECTOR_TOKEN, 2);
    char *t = join3(h, p, s);
    expect_fail(t, "token signature is invalid");
    free(t), free(h), free(p), free(s), free(other);
}

Test(token_signature, tampered_signature_fails)
{
    char *t = strdup(VECTOR_TOKEN);
    cr_assert_not_null(t);
    char *s = strrchr(t, '.') + 1;
    s[0] = s[0] == 'A' ? 'B' : 'A';
    expect_fail(t, "token signature is invalid");
    free(t);
}

Test(token_signature, wrong_length_fails)
{
    char *h = part(VECTOR_TOKEN, 0), *p = part(VECTOR_TOKEN, 1), *s = part(VECTOR_TOKEN, 2);
    /* 31 and 33 zero bytes (42 and 44 'A's), and the real signature
     * truncated to 30 bytes (40 characters), all valid base64url. */
    char s31[43], s33[45];
    memset(s31, 'A', 42), s31[42] = '\0';
    memset(s33, 'A', 44), s33[44] = '\0';
    char *t31 = join3(h, p, s31), *t33 = join3(h, p, s33);
    s[40] = '\0';
    char *t30 = join3(h, p, s);
    expect_fail(t31, "token signature is invalid");
    expect_fail(t33, "token signature is invalid");
    expect_fail(t30, "token signature is invalid");
    free(t31), free(t33), free(t30), free(h), free(p), free(s);
}

/* ---- claims ------------------------------------------------------------ */

Test(token_claims, subject_is_required)
{
    expect_signed_fail(VECTOR_HEADER, "{\"exp\":4102444800}", "token has no subject");
    expect_signed_fail(VECTOR_HEADER, "{\"sub\":\"\",\"exp\":4102444800}", "token has no subject");
    expect_signed_fail(VECTOR_HEADER, "{\"sub\":42,\"exp\":4102444800}", "token is malformed");
    expect_signed_fail(VECTOR_HEADER, "{\"sub\":null,\"exp\":4102444800}", "token is malformed");
    expect_signed_fail(VECTOR_HEADER, "{\"sub\":\"a\\u0000b\",\"exp\":4102444800}",
                       "token is malformed");
}

Test(token_claims, exp_is_a_required_integer)
{
    expect_signed_fail(VECTOR_HEADER, "{\"sub\":\"a\"}", "token has no expiry");
    expect_signed_fail(VECTOR_HEADER, "{\"sub\":\"a\",\"exp\":\"4102444800\"}",
                       "token is malformed");
    expect_signed_fail(VECTOR_HEADER, "{\"sub\":\"a\",\"exp\":4102444800.0}",
                       "token is malformed");
    expect_signed_fail(VECTOR_HEADER, "{\"sub\":\"a\",\"exp\":4.1e9}", "token is malformed");
    expect_signed_fail(VECTOR_HEADER, "{\"sub\":\"a\",\"exp\":null}", "token is malformed");
    expect_signed_fail(VECTOR_HEADER, "{\"sub\":\"a\",\"exp\":true}", "token is malformed");
    expect_signed_fail(VECTOR_HEADER, "{\"sub\":\"a\",\"exp\":99999999999999999999999}",
                       "token is malformed");
}

Test(token_claims, optional_claims_have_types)
{
    expect_signed_fail(VECTOR_HEADER, "{\"sub\":\"a\",\"exp\":4102444800,\"nbf\":\"1\"}",
                       "token is malformed");
    expect_signed_fail(VECTOR_HEADER, "{\"sub\":\"a\",\"exp\":4102444800,\"iat\":1.5}",
                       "token is malformed");
    expect_signed_fail(VECTOR_HEADER, "{\"sub\":\"a\",\"exp\":4102444800,\"staff\":\"true\"}",
                       "token is malformed");
    expect_signed_fail(VECTOR_HEADER, "{\"sub\":\"a\",\"exp\":4102444800,\"staff\":1}",
                       "token is malformed");
    expect_signed_fail(VECTOR_HEADER, "{\"sub\":\"a\",\"exp\":4102444800,\"superuser\":null}",
                       "token is malformed");
}

Test(token_claims, perms_must_be_an_array_of_strings)
{
    const char *m = "token is malformed";
    expect_signed_fail(VECTOR_HEADER, "{\"sub\":\"a\",\"exp\":4102444800,\"perms\":\"x\"}", m);
    expect_signed_fail(VECTOR_HEADER, "{\"sub\":\"a\",\"exp\":4102444800,\"perms\":[1]}", m);
    expect_signed_fail(VECTOR_HEADER, "{\"sub\":\"a\",\"exp\":4102444800,\"perms\":[\"a\",null]}",
                       m);
    expect_signed_fail(VECTOR_HEADER, "{\"sub\":\"a\",\"exp\":4102444800,\"perms\":{\"a\":1}}", m);
    expect_signed_fail(VECTOR_HEADER, "{\"sub\":\"a\",\"exp\":4102444800,\"perms\":[[\"a\"]]}", m);
}

/* A payload with n perms "p0".."p{n-1}"; the caller frees. */
static char *payload_with_perms(size_t n)
{
    size_t cap = 64 + n * 16;
    char *s = malloc(cap);
    cr_assert_not_null(s);
    size_t off = (size_t)snprintf(s, cap, "{\"sub\":\"a\",\"exp\":4102444800,\"perms\":[");
    for (size_t i = 0; i < n; i++)
        off += (size_t)snprintf(s + off, cap - off, "%s\"p%zu\"", i ? "," : "", i);
    snprintf(s + off, cap - off, "]}");
    return s;
}

Test(token_claims, perms_count_is_bounded)
{
    mizan_token_keys_t ks = one_key();
    char *p256 = payload_with_perms(MIZAN_TOKEN_MAX_PERMS);
    char *p257 = payload_with_perms(MIZAN_TOKEN_MAX_PERMS + 1);
    char *t256 = sign_vec(VECTOR_HEADER, p256);
    mizan_token_claims_t c;
    mizan_err_t err = {{0}};
    cr_assert_eq(verify_at(&ks, t256, NOW, &c, &err), 0, "%s", err.msg);
    cr_assert_eq(c.nperms, MIZAN_TOKEN_MAX_PERMS);
    cr_assert_str_eq(c.perms[255], "p255");
    mizan_token_claims_deinit(&c);
    expect_signed_fail(VECTOR_HEADER, p257, "token is malformed");
    free(p256), free(p257), free(t256);
}

Test(token_claims, other_claims_are_ignored_and_optional_ones_read)
{
    mizan_token_keys_t ks = one_key();
    char *t = sign_vec("{\"alg\":\"HS256\",\"typ\":\"JWT\",\"cty\":\"x\"}",
                       "{\"iss\":\"me\",\"aud\":[\"x\"],\"sub\":\"zo\\u00eb\",\"exp\":4102444800,"
                       "\"nbf\":1600000000,\"iat\":1600000001,\"superuser\":true,"
                       "\"staff\":false,\"perms\":[],\"extra\":{\"deep\":[1,2]}}");
    mizan_token_claims_t c;
    mizan_err_t err = {{0}};
    cr_assert_eq(verify_at(&ks, t, NOW, &c, &err), 0, "%s", err.msg);
    cr_assert_str_eq(c.sub, "zo\xc3\xab");
    cr_assert(c.superuser);
    cr_assert_not(c.staff);
    cr_assert_eq(c.nperms, 0);
    cr_assert_null(c.perms);
    cr_assert(c.has_nbf);
    cr_assert_eq(c.nbf, 1600000000LL);
    cr_assert(c.has_iat);
    cr_assert_eq(c.iat, 1600000001LL);
    mizan_token_claims_deinit(&c);
    free(t);
}

/* ---- the clock window -------------------------------------------------- */

Test(token_time, exp_boundary)
{
    /* Rule: expired when now >= exp + leeway. */
    mizan_token_keys_t ks = one_key();
    char *t = sign_vec(VECTOR_HEADER, "{\"sub\":\"a\",\"exp\":1000}");
    expect_ok_at(&ks, t, 999);
    expect_fail_at(&ks, t, 1000, "token has expired");
    expect_fail_at(&ks, t, 5000, "token has expired");
    ks.leeway_s = 5;
    expect_ok_at(&ks, t, 1004);
    expect_fail_at(&ks, t, 1005, "token has expired");
    ks.leeway_s = -100; /* negative leeway counts as none */
    expect_ok_at(&ks, t, 999);
    expect_fail_at(&ks, t, 1000, "token has expired");
    free(t);
}

Test(token_time, nbf_boundary)
{
    /* Rule: not yet valid when now + leeway < nbf. */
    mizan_token_keys_t ks = one_key();
    char *t = sign_vec(VECTOR_HEADER, "{\"sub\":\"a\",\"exp\":3000,\"nbf\":2000}");
    expect_fail_at(&ks, t, 1999, "token is not valid yet");
    expect_ok_at(&ks, t, 2000);
    ks.leeway_s = 5;
    expect_ok_at(&ks, t, 1995);
    expect_fail_at(&ks, t, 1994, "token is not valid yet");
    free(t);
}

Test(token_time, leeway_makes_both_pass)
{
    mizan_token_keys_t ks = one_key();
    char *t = sign_vec(VECTOR_HEADER, "{\"sub\":\"a\",\"exp\":1000,\"nbf\":990}");
    expect_fail_at(&ks, t, 1002, "token has expired");
    expect_fail_at(&ks, t, 985, "token is not valid yet");
    ks.leeway_s = 5;
    expect_ok_at(&ks, t, 1002);
    expect_ok_at(&ks, t, 985);
    free(t);
}

Test(token_time, extreme_values_do_not_overflow)
{
    mizan_token_keys_t ks = one_key();
    ks.leeway_s = 60;
    char *far = NULL;
    cr_assert_neq(asprintf(&far, "{\"sub\":\"a\",\"exp\":%lld,\"nbf\":%lld}", LLONG_MAX,
                           LLONG_MIN),
                  -1);
    char *t = sign_vec(VECTOR_HEADER, far);
    expect_ok_at(&ks, t, NOW);
    expect_ok_at(&ks, t, LLONG_MAX - 1);
    free(t), free(far);
    char *t2 = sign_vec(VECTOR_HEADER, "{\"sub\":\"a\",\"exp\":-5}");
    expect_fail_at(&ks, t2, NOW, "token has expired");
    free(t2);
}

/* ---- messages ---------------------------------------------------------- */

Test(token_messages, never_echo_the_token)
{
    mizan_token_keys_t ks = one_key();
    mizan_token_claims_t c;
    mizan_err_t err;
    /* Distinctive text in the raw token, in a decoded header, and in a
     * decoded payload of an expired token. */
    const char *raw = "ZZDISTINCTIVEZZ!.eyJ9.abc";
    memset(&err, 0, sizeof(err));
    cr_assert_eq(verify_at(&ks, raw, NOW, &c, &err), -1);
    cr_assert_null(strstr(err.msg, "DISTINCTIVE"), "%s", err.msg);

    char *t = sign_vec("{\"alg\":\"HS256\",\"typ\":\"QQMARKERQQ\"}", PAYLOAD_OK);
    memset(&err, 0, sizeof(err));
    cr_assert_eq(verify_at(&ks, t, NOW, &c, &err), -1);
    cr_assert_null(strstr(err.msg, "QQMARKERQQ"), "%s", err.msg);
    assert_no_echo(err.msg, t);
    free(t);

    t = sign_vec("{\"alg\":\"HS256\"}", "{\"sub\":\"QQMARKERQQ\",\"exp\":1}");
    memset(&err, 0, sizeof(err));
    cr_assert_eq(verify_at(&ks, t, NOW, &c, &err), -1);
    cr_assert_str_eq(err.msg, "token has expired");
    free(t);

    /* jansson's parse errors quote the text "near ..."; they must not leak. */
    t = sign_vec("{\"alg\":QQMARKERQQ}", PAYLOAD_OK);
    memset(&err, 0, sizeof(err));
    cr_assert_eq(verify_at(&ks, t, NOW, &c, &err), -1);
    cr_assert_null(strstr(err.msg, "QQMARKER"), "%s", err.msg);
    cr_assert_null(strstr(err.msg, "near"), "%s", err.msg);
    free(t);
}

/* ---- minting ----------------------------------------------------------- */

Test(token_mint, round_trip_with_every_claim)
{
    mizan_token_keys_t ks = two_keys();
    const char *perms[] = {"blog.add_post", "blog.publish_post"};
    mizan_err_t err = {{0}};
    char *t = mizan_token_mint(&ks, "old", "carol", true, true, perms, 2, 3600, NOW, &err);
    cr_assert_not_null(t, "%s", err.msg);
    mizan_token_claims_t c;
    cr_assert_eq(verify_at(&ks, t, NOW, &c, &err), 0, "%s", err.msg);
    cr_assert_str_eq(c.sub, "carol");
    cr_assert(c.staff);
    cr_assert(c.superuser);
    cr_assert_eq(c.nperms, 2);
    cr_assert_str_eq(c.perms[0], "blog.add_post");
    cr_assert_str_eq(c.perms[1], "blog.publish_post");
    cr_assert_eq(c.exp, NOW + 3600);
    cr_assert(c.has_iat);
    cr_assert_eq(c.iat, NOW);
    cr_assert_not(c.has_nbf);
    mizan_token_claims_deinit(&c);
    expect_fail_at(&ks, t, NOW + 3600, "token has expired");
    /* Signed with "old": a key set without it refuses the kid. */
    mizan_token_keys_t only_new = ks;
    only_new.nkeys = 1;
    expect_fail_at(&only_new, t, NOW, "token key id is unknown");
    free(t);
}

Test(token_mint, exact_texts)
{
    /* Minimal: no kid, no staff/superuser/perms members at all. */
    mizan_token_keys_t ks = one_key();
    mizan_err_t err = {{0}};
    char *t = mizan_token_mint(&ks, NULL, "bob", false, false, NULL, 0, 60, 1000, &err);
    cr_assert_not_null(t, "%s", err.msg);
    char *want = sign_vec(VECTOR_HEADER, "{\"sub\":\"bob\",\"exp\":1060,\"iat\":1000}");
    cr_assert_str_eq(t, want);
    free(t), free(want);

    const char *perms[] = {"x.y"};
    t = mizan_token_mint(&ks, "main", "bob", true, false, perms, 1, 60, 1000, &err);
    cr_assert_not_null(t, "%s", err.msg);
    want = sign_vec("{\"alg\":\"HS256\",\"typ\":\"MWT\",\"kid\":\"main\"}",
                    "{\"sub\":\"bob\",\"exp\":1060,\"iat\":1000,\"staff\":true,\"perms\":[\"x.y\"]}");
    cr_assert_str_eq(t, want);
    free(t), free(want);
}

Test(token_mint, uses_the_primary_key_without_kid)
{
    mizan_token_keys_t ks = two_keys();
    ks.primary = 1;
    mizan_err_t err = {{0}};
    char *t = mizan_token_mint(&ks, NULL, "dave", false, false, NULL, 0, 60, NOW, &err);
    cr_assert_not_null(t, "%s", err.msg);
    expect_ok_at(&ks, t, NOW);
    ks.primary = 0;
    expect_fail_at(&ks, t, NOW, "token signature is invalid");
    free(t);
}

Test(token_mint, refusals)
{
    mizan_token_keys_t ks = one_key();
    mizan_err_t err = {{0}};
    const char *perms[] = {"a", NULL};
    cr_assert_null(mizan_token_mint(&ks, "nope", "bob", false, false, NULL, 0, 60, NOW, &err));
    cr_assert_str_eq(err.msg, "token key id is unknown");
    cr_assert_null(mizan_token_mint(&ks, NULL, "", false, false, NULL, 0, 60, NOW, &err));
    cr_assert_null(mizan_token_mint(&ks, NULL, NULL, false, false, NULL, 0, 60, NOW, &err));
    cr_assert_null(mizan_token_mint(&ks, NULL, "bob", false, false, NULL, 0, 0, NOW, &err));
    cr_assert_null(mizan_token_mint(&ks, NULL, "bob", false, false, NULL, 0, -1, NOW, &err));
    cr_assert_null(mizan_token_mint(&ks, NULL, "bob", false, false, NULL, 0, LLONG_MAX, NOW, &err));
    cr_assert_null(mizan_token_mint(&ks, NULL, "bad\xff", false, false, NULL, 0, 60, NOW, &err));
    cr_assert_null(mizan_token_mint(&ks, NULL, "bob", false, false, perms, 2, 60, NOW, &err));
    cr_assert_null(mizan_token_mint(&ks, NULL, "bob", false, false, NULL, 1, 60, NOW, &err));
    cr_assert_null(mizan_token_mint(&ks, NULL, "bob", false, false, perms,
                                    MIZAN_TOKEN_MAX_PERMS + 1, 60, NOW, &err));
    mizan_token_keys_t none;
    memset(&none, 0, sizeof(none));
    cr_assert_null(mizan_token_mint(&none, NULL, "bob", false, false, NULL, 0, 60, NOW, &err));
    cr_assert_str_eq(err.msg, "token keys are not configured");
}

Test(token_mint, oversized_token_is_refused)
{
    mizan_token_keys_t ks = one_key();
    char big[1200];
    memset(big, 'p', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    const char *perms[8];
    for (size_t i = 0; i < 8; i++)
        perms[i] = big;
    mizan_err_t err = {{0}};
    char *t = mizan_token_mint(&ks, NULL, "bob", false, false, perms, 8, 60, NOW, &err);
    cr_assert_null(t);
    cr_assert_not_null(strstr(err.msg, "longer than"), "%s", err.msg);
}

/* ---- concurrency ------------------------------------------------------- */

static void *verify_loop(void *arg)
{
    const mizan_token_keys_t *ks = arg;
    for (int i = 0; i < 2000; i++) {
        mizan_token_claims_t c;
        mizan_err_t err;
        if (mizan_token_verify(ks, VECTOR_TOKEN, strlen(VECTOR_TOKEN), NOW, &c, &err) != 0)
            return (void *)1;
        bool ok = strcmp(c.sub, "alice") == 0;
        mizan_token_claims_deinit(&c);
        if (!ok)
            return (void *)1;
    }
    return NULL;
}

Test(token_threads, concurrent_verification)
{
    mizan_token_keys_t ks = one_key();
    pthread_t th[8];
    for (int i = 0; i < 8; i++)
        cr_assert_eq(pthread_create(&th[i], NULL, verify_loop, &ks), 0);
    for (int i = 0; i < 8; i++) {
        void *r = NULL;
        pthread_join(th[i], &r);
        cr_assert_null(r, "thread %d failed", i);
    }
}

/* ---- extraction from headers ------------------------------------------ */

static void expect_extract(const char *auth, const char *cookie, const char *name,
                           const char *want, bool want_malformed)
{
    size_t len = 99;
    bool malformed = !want_malformed;
    const char *t = mizan_token_extract(auth, cookie, name, &len, &malformed);
    cr_assert_eq(malformed, want_malformed, "auth '%s' cookie '%s': malformed %d", auth ? auth : "(null)",
                 cookie ? cookie : "(null)", malformed);
    if (want == NULL) {
        cr_assert_null(t, "auth '%s' cookie '%s': found '%.*s'", auth ? auth : "(null)",
                       cookie ? cookie : "(null)", (int)len, t);
        cr_assert_eq(len, 0);
        return;
    }
    cr_assert_not_null(t, "auth '%s' cookie '%s': nothing found", auth ? auth : "(null)",
                       cookie ? cookie : "(null)");
    cr_assert_eq(len, strlen(want), "found '%.*s', want '%s'", (int)len, t, want);
    cr_assert_eq(memcmp(t, want, len), 0, "found '%.*s', want '%s'", (int)len, t, want);
    /* It points into the given strings, not a copy. */
    const char *src = auth != NULL && t >= auth && t < auth + strlen(auth) ? auth : cookie;
    cr_assert(t >= src && t + len <= src + strlen(src));
}

Test(token_extract, bearer)
{
    expect_extract("Bearer abc.def.ghi", NULL, "mwt", "abc.def.ghi", false);
    expect_extract("bearer abc.def.ghi", NULL, "mwt", "abc.def.ghi", false);
    expect_extract("BEARER\tabc", NULL, "mwt", "abc", false);
    expect_extract("  Bearer    abc   ", NULL, "mwt", "abc", false);
    expect_extract("Bearer abc", "mwt=cookie", "mwt", "abc", false); /* bearer wins */
}

Test(token_extract, malformed_authorization)
{
    expect_extract("Basic dXNlcjpwYXNz", NULL, "mwt", NULL, true);
    expect_extract("Basic dXNlcjpwYXNz", "mwt=tok", "mwt", NULL, true);
    expect_extract("Bearer", NULL, "mwt", NULL, true);
    expect_extract("Bearer   ", NULL, "mwt", NULL, true);
    expect_extract("Bearerabc", NULL, "mwt", NULL, true);
    expect_extract("Token abc", NULL, "mwt", NULL, true);
    expect_extract("abc.def.ghi", NULL, "mwt", NULL, true);
}

Test(token_extract, blank_authorization_counts_as_absent)
{
    expect_extract("", "mwt=tok", "mwt", "tok", false);
    expect_extract("  ", NULL, "mwt", NULL, false);
}

Test(token_extract, cookie)
{
    expect_extract(NULL, "mwt=tok", "mwt", "tok", false);
    expect_extract(NULL, "a=1; mwt=tok123; b=2", "mwt", "tok123", false);
    expect_extract(NULL, "a=1;mwt=tok123;b=2", "mwt", "tok123", false);
    expect_extract(NULL, "a=1; b=2; mwt=last", "mwt", "last", false);
    expect_extract(NULL, " mwt = spaced ; x=y", "mwt", "spaced", false);
    expect_extract(NULL, "mwt=\"quoted\"", "mwt", "quoted", false);
    expect_extract(NULL, "mwt=a=b", "mwt", "a=b", false);
    expect_extract(NULL, "mwt=; mwt=second", "mwt", "second", false);
    expect_extract(NULL, "session=abc", "session", "abc", false);
}

Test(token_extract, cookie_name_confusion)
{
    expect_extract(NULL, "xmwt=evil", "mwt", NULL, false);
    expect_extract(NULL, "mwtx=evil", "mwt", NULL, false);
    expect_extract(NULL, "xmwt=evil; mwt=good", "mwt", "good", false);
    expect_extract(NULL, "a=mwt=evil", "mwt", NULL, false);
    expect_extract(NULL, "MWT=evil", "mwt", NULL, false);
    expect_extract(NULL, "mwt", "mwt", NULL, false);
    expect_extract(NULL, "mwt=", "mwt", NULL, false);
}

Test(token_extract, nothing)
{
    expect_extract(NULL, NULL, "mwt", NULL, false);
    expect_extract(NULL, "", "mwt", NULL, false);
    expect_extract(NULL, "mwt=tok", NULL, NULL, false);
    expect_extract(NULL, "mwt=tok", "", NULL, false);
    expect_extract(NULL, ";;; ;", "mwt", NULL, false);
}

/* ---- rev 2: empty kid, control characters in sub and perms ------------- */

Test(token_rev2, empty_kid_never_selects_a_key)
{
    /* The config's `secret` key has no kid (""): an empty kid must not pick it. */
    mizan_token_keys_t ks;
    memset(&ks, 0, sizeof(ks));
    set_key(&ks.keys[0], "", VECTOR_KEY);
    set_key(&ks.keys[1], "old", SECRET_OLD);
    ks.nkeys = 2;
    char *empty = sign_with(&ks.keys[0], "{\"alg\":\"HS256\",\"kid\":\"\"}", PAYLOAD_OK);
    char *none = sign_with(&ks.keys[0], "{\"alg\":\"HS256\"}", PAYLOAD_OK);
    char *old = sign_with(&ks.keys[1], "{\"alg\":\"HS256\",\"kid\":\"old\"}", PAYLOAD_OK);
    expect_fail_at(&ks, empty, NOW, "kid must not be empty");
    expect_ok_at(&ks, none, NOW);
    expect_ok_at(&ks, old, NOW);
    /* The same with a named primary key. */
    mizan_token_keys_t one = one_key();
    char *e2 = sign_with(&one.keys[0], "{\"alg\":\"HS256\",\"kid\":\"\"}", PAYLOAD_OK);
    expect_fail_at(&one, e2, NOW, "token is malformed");
    free(empty), free(none), free(old), free(e2);
}

Test(token_rev2, subject_without_control_characters)
{
    const char *bad[] = {"a\\nb", "a\\rb", "\\tadmin", "x\\u001f", "x\\u007f", "\\u0000", "a\\u0000b", NULL};
    for (size_t i = 0; bad[i] != NULL; i++) {
        char *p = NULL;
        cr_assert_neq(asprintf(&p, "{\"sub\":\"%s\",\"exp\":4102444800}", bad[i]), -1);
        /* \u0000 is refused by the JSON reader already; the rest by the claim check. */
        expect_signed_fail(VECTOR_HEADER, p, "token is malformed");
        free(p);
    }
    /* Printable and non-ASCII subjects stay valid (U+0080 and up are not controls here). */
    char *t = sign_vec(VECTOR_HEADER, "{\"sub\":\"Ali ce \\u00e9~\",\"exp\":4102444800}");
    mizan_token_keys_t ks = one_key();
    mizan_token_claims_t c;
    mizan_err_t err = {{0}};
    cr_assert_eq(verify_at(&ks, t, NOW, &c, &err), 0, "%s", err.msg);
    cr_assert_str_eq(c.sub, "Ali ce \xc3\xa9~");
    mizan_token_claims_deinit(&c);
    free(t);
}

Test(token_rev2, perms_are_non_empty_without_control_characters)
{
    const char *bad[] = {"[\"a\\nb\"]", "[\"\"]", "[\"ok\",\"\"]", "[\"a\\u0000b\"]", "[\"ok\",\"x\\u007f\"]",
                         "[\"\\r\"]", NULL};
    for (size_t i = 0; bad[i] != NULL; i++) {
        char *p = NULL;
        cr_assert_neq(asprintf(&p, "{\"sub\":\"a\",\"exp\":4102444800,\"perms\":%s}", bad[i]), -1);
        expect_signed_fail(VECTOR_HEADER, p, "token is malformed");
        free(p);
    }
    /* ["a","b"] stays two distinct perms. */
    char *t = sign_vec(VECTOR_HEADER, "{\"sub\":\"a\",\"exp\":4102444800,\"perms\":[\"a\",\"b\"]}");
    mizan_token_keys_t ks = one_key();
    mizan_token_claims_t c;
    mizan_err_t err = {{0}};
    cr_assert_eq(verify_at(&ks, t, NOW, &c, &err), 0, "%s", err.msg);
    cr_assert_eq(c.nperms, 2);
    cr_assert_str_eq(c.perms[0], "a");
    cr_assert_str_eq(c.perms[1], "b");
    mizan_token_claims_deinit(&c);
    free(t);
}

Test(token_rev2, minting_refuses_what_verification_would)
{
    mizan_token_keys_t ks = one_key();
    mizan_err_t err = {{0}};
    cr_assert_null(mizan_token_mint(&ks, NULL, "a\nb", false, false, NULL, 0, 60, NOW, &err));
    const char *perms[] = {"a\nb"};
    cr_assert_null(mizan_token_mint(&ks, NULL, "alice", false, false, perms, 1, 60, NOW, &err));
    const char *empty[] = {""};
    cr_assert_null(mizan_token_mint(&ks, NULL, "alice", false, false, empty, 1, 60, NOW, &err));
    cr_assert_null(mizan_token_mint(&ks, "", "alice", false, false, NULL, 0, 60, NOW, &err));
}
