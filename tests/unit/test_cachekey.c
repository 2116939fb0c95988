/*
 * test_cachekey.c - cache key derivation (src/cachekey.c) against every
 * test vector of PROTOCOL.md section 6, cross-checked with the OpenSSL
 * command line, plus the refusals (short secret, long prefix, anonymous
 * user scope, small buffers) and concurrent use.
 */
#include <criterion/criterion.h>

#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cachekey.h"

#define SECRET "mizan-test-secret-0123456789abcdef"

#define PERM_KEY_STAFF "7fb395021657b7031b7eaad9b7a377eadb3c1a750518083eb5531ee32ec406b7"
#define PERM_KEY_NONE "6f250f2a4599d67141bc29cdc33f9542a3b1a7d41aa752efc8a0c12ab13d90c2"
#define POST_DIGEST "82d21d6a3238fa1479ed6567c287c214b50cabfe4d4ed7c7e0c1bfab5d37e17e"
#define SEARCH_DIGEST "4130766662be562a422e368ca39f9433d22f602da6066ee8fdaf1927309db597"

/* The search vector's params value: q is `café "x"` newline U+0001. */
#define SEARCH_Q "caf\xc3\xa9 \"x\"\n\x01"

static mizan_cachekey_t key;

static void setup_key(void)
{
    mizan_err_t err = {""};
    int rc = mizan_cachekey_init(&key, (const unsigned char *)SECRET, strlen(SECRET), NULL, &err);
    cr_assert_eq(rc, 0, "init: %s", err.msg);
}

static void teardown_key(void)
{
    mizan_cachekey_deinit(&key);
}

TestSuite(cachekey, .init = setup_key, .fini = teardown_key);

/* Parses params from JSON text; the caller decrefs. */
static json_t *params(const char *text)
{
    json_error_t jerr;
    json_t *p = json_loads(text, 0, &jerr);
    cr_assert_not_null(p, "bad test params %s: %s", text, jerr.text);
    return p;
}

static json_t *search_params(void)
{
    json_t *p = json_pack("{s:s, s:n}", "q", SEARCH_Q, "lang");
    cr_assert_not_null(p);
    return p;
}

static void expect_bundle(const char *context, json_t *p, const char *scope, const char *expect)
{
    char out[MIZAN_CACHEKEY_KEY_SIZE(32)];
    mizan_err_t err = {""};
    int rc = mizan_cachekey_bundle(&key, context, p, scope, out, sizeof(out), &err);
    json_decref(p);
    cr_assert_eq(rc, 0, "bundle key of %s: %s", context, err.msg);
    cr_assert_str_eq(out, expect, "bundle key of %s/%s", context, scope);
}

static void expect_digest(const char *context, json_t *p, const char *expect)
{
    char out[MIZAN_DIGEST_HEX_LEN + 1];
    mizan_err_t err = {""};
    int rc = mizan_cachekey_params_digest(&key, context, p, out, &err);
    json_decref(p);
    cr_assert_eq(rc, 0, "params digest of %s: %s", context, err.msg);
    cr_assert_str_eq(out, expect, "params digest of %s", context);
}

/* ------------------------------------------------------------------------ */
/* The vectors of PROTOCOL.md section 6                                     */
/* ------------------------------------------------------------------------ */

Test(cachekey, vector_post_params_digest)
{
    expect_digest("post", params("{\"post_id\":5}"), POST_DIGEST);
}

Test(cachekey, vector_post_public)
{
    expect_bundle("post", params("{\"post_id\": 5}"), "public",
                  "mizan:ctx:{post}:609fa05978b34ce85e89ca31370427d12c3b0afbc8f4bf0c491c023bcd5d63ba");
}

Test(cachekey, vector_feed_public)
{
    expect_bundle("feed", params("{}"), "public",
                  "mizan:ctx:{feed}:db93c64f7a52713920064bfc20ec4851dd65b1bcdebcab0ce10a00153061d096");
}

static void openssl_hmac(const void *msg, size_t n, char out[MIZAN_DIGEST_HEX_LEN + 1]);

/* The user scope of a caller (rev 2: "user:" sub ":" perm_key). */
static char *user_scope(const mizan_identity_t *id)
{
    static char scope[MIZAN_CACHEKEY_SCOPE_SIZE(16)];
    mizan_err_t err = {""};
    cr_assert_eq(mizan_cachekey_scope(&key, MIZAN_SCOPE_USER, id, scope, sizeof(scope), &err), 0, "%s", err.msg);
    return scope;
}

Test(cachekey, vector_inbox_user_alice)
{
    mizan_identity_t alice = {.sub = "alice"};
    cr_assert_str_eq(user_scope(&alice), "user:alice:" PERM_KEY_NONE);
    /* Members given out of order: the canonical text sorts them. */
    expect_bundle("inbox", params("{\"unread\":true,\"page\":2,\"folder\":\"spam\"}"), user_scope(&alice),
                  "mizan:ctx:{inbox}:67c89b2bede14a59e0d25f1c6a68641c11ea900f7f339cadbf461ec1cbb67789");
}

Test(cachekey, vector_inbox_user_alice_staff_with_perms)
{
    const char *perms[] = {"blog.change_post", "blog.add_post"};
    mizan_identity_t alice = {.sub = "alice", .staff = true, .perms = perms, .nperms = 2};
    cr_assert_str_eq(user_scope(&alice), "user:alice:" PERM_KEY_STAFF);
    expect_bundle("inbox", params("{\"folder\":\"spam\",\"page\":2,\"unread\":true}"), user_scope(&alice),
                  "mizan:ctx:{inbox}:bca496e706505bff0f5d1c040669dec519a8538ddb848827486e42148f052e69");
}

Test(cachekey, user_scope_differs_by_permission_set)
{
    /* Same sub, a superuser token and a down-scoped one: two bundles. */
    const char *perms[] = {"blog.view_drafts"};
    mizan_identity_t full = {.sub = "alice", .superuser = true};
    mizan_identity_t down = {.sub = "alice"};
    mizan_identity_t some = {.sub = "alice", .perms = perms, .nperms = 1};
    char a[MIZAN_CACHEKEY_SCOPE_SIZE(5)], b[MIZAN_CACHEKEY_SCOPE_SIZE(5)];
    snprintf(a, sizeof(a), "%s", user_scope(&full));
    snprintf(b, sizeof(b), "%s", user_scope(&down));
    cr_assert_str_neq(a, b);
    cr_assert_str_neq(user_scope(&some), a);
    cr_assert_str_neq(user_scope(&some), b);
    /* The buffer size macro is exact for the longest scope. */
    mizan_err_t err = {""};
    char tight[MIZAN_CACHEKEY_SCOPE_SIZE(5)];
    cr_assert_eq(mizan_cachekey_scope(&key, MIZAN_SCOPE_USER, &full, tight, sizeof(tight), &err), 0);
    cr_assert_eq(strlen(tight) + 1, sizeof(tight));
    cr_assert_eq(mizan_cachekey_scope(&key, MIZAN_SCOPE_USER, &full, tight, sizeof(tight) - 1, &err), -1);
}

/* ------------------------------------------------------------------------ */
/* Authenticated values (PROTOCOL.md section 6 rev 2)                        */
/* ------------------------------------------------------------------------ */

#define POST5_KEY "mizan:ctx:{post}:609fa05978b34ce85e89ca31370427d12c3b0afbc8f4bf0c491c023bcd5d63ba"
#define VALUE_BUNDLE "{\"context\":\"post\",\"params\":{\"post_id\":5},\"data\":{},\"errors\":{}}"
#define VALUE_DOC "{\"v\":2,\"rev\":[3,1],\"bundle\":" VALUE_BUNDLE "}"
#define VALUE_MAC "4a547b80a40dda85403df1aab92a673df20233bbe6cffa38a8bbd1bb996dbeb0"

Test(cachekey, vector_value_mac)
{
    char mac[MIZAN_DIGEST_HEX_LEN + 1];
    mizan_err_t err = {""};
    cr_assert_eq(mizan_cachekey_value_mac(&key, POST5_KEY, VALUE_DOC, strlen(VALUE_DOC), mac, &err), 0, "%s",
                 err.msg);
    cr_assert_str_eq(mac, VALUE_MAC);
    /* The sealed value is mac "\n" doc, byte for byte. */
    long long rev[2] = {3, 1};
    size_t len = 0;
    char *v = mizan_cachekey_value_seal(&key, POST5_KEY, rev, VALUE_BUNDLE, strlen(VALUE_BUNDLE), &len, &err);
    cr_assert_not_null(v, "%s", err.msg);
    cr_assert_str_eq(v, VALUE_MAC "\n" VALUE_DOC);
    cr_assert_eq(len, strlen(v));
    /* And it opens to the same revisions and bundle bytes. */
    long long got[2] = {0, 0};
    const char *body = NULL;
    size_t blen = 0;
    cr_assert_eq(mizan_cachekey_value_open(&key, POST5_KEY, v, len, got, &body, &blen, &err), 0, "%s", err.msg);
    cr_assert_eq(got[0], 3);
    cr_assert_eq(got[1], 1);
    cr_assert_eq(blen, strlen(VALUE_BUNDLE));
    cr_assert_eq(memcmp(body, VALUE_BUNDLE, blen), 0);
    free(v);
}

Test(cachekey, value_mac_cross_checked_with_openssl)
{
    static const char msg[] = "mizan/v1/value\0" POST5_KEY "\0" VALUE_DOC;
    char cli[MIZAN_DIGEST_HEX_LEN + 1];
    openssl_hmac(msg, sizeof(msg) - 1, cli);
    cr_assert_str_eq(cli, VALUE_MAC);
}

/* Asserts value (NUL-terminated) does not open under bundle_key. */
static void expect_refused(const char *bundle_key, const char *value, const char *why)
{
    long long rev[2];
    const char *body = NULL;
    size_t blen = 0;
    mizan_err_t err = {""};
    cr_assert_eq(mizan_cachekey_value_open(&key, bundle_key, value, strlen(value), rev, &body, &blen, &err), -1,
                 "%s was accepted", why);
    cr_assert_neq(err.msg[0], '\0');
}

Test(cachekey, values_that_do_not_verify_are_refused)
{
    long long rev[2] = {3, 1};
    size_t len = 0;
    mizan_err_t err = {""};
    char *v = mizan_cachekey_value_seal(&key, POST5_KEY, rev, VALUE_BUNDLE, strlen(VALUE_BUNDLE), &len, &err);
    cr_assert_not_null(v);
    /* Moved to another key (the feed bundle key of the vectors). */
    expect_refused("mizan:ctx:{feed}:db93c64f7a52713920064bfc20ec4851dd65b1bcdebcab0ce10a00153061d096", v,
                   "a value copied from another key");
    /* One byte of the doc changed (the revision, then the bundle). */
    char *t = strdup(v);
    t[MIZAN_DIGEST_HEX_LEN + 1 + strlen("{\"v\":2,\"rev\":[")] = '4';
    expect_refused(POST5_KEY, t, "an altered revision");
    free(t);
    t = strdup(v);
    t[len - 3] = ' ';
    expect_refused(POST5_KEY, t, "an altered bundle");
    free(t);
    /* One hex digit of the mac changed, upper case, truncated. */
    t = strdup(v);
    t[0] = t[0] == '0' ? '1' : '0';
    expect_refused(POST5_KEY, t, "an altered mac");
    free(t);
    t = strdup(v);
    for (int i = 0; i < MIZAN_DIGEST_HEX_LEN; i++)
        if (t[i] >= 'a' && t[i] <= 'f')
            t[i] = (char)(t[i] - 'a' + 'A');
    expect_refused(POST5_KEY, t, "an upper-case mac");
    free(t);
    expect_refused(POST5_KEY, v + 1, "a truncated mac");
    free(v);
    /* A revision-1 value, a bare doc, garbage, a mac under another secret. */
    expect_refused(POST5_KEY, "{\"v\":1,\"rev\":[3,1],\"bundle\":" VALUE_BUNDLE "}", "a revision-1 value");
    expect_refused(POST5_KEY, VALUE_DOC, "a doc without mac");
    expect_refused(POST5_KEY, "", "an empty value");
    expect_refused(POST5_KEY, VALUE_MAC, "a mac alone");
    expect_refused(POST5_KEY, "0000000000000000000000000000000000000000000000000000000000000000\n" VALUE_DOC,
                   "a forged mac");
}

Test(cachekey, sealed_values_round_trip_any_revisions)
{
    long long cases[][2] = {{0, 0}, {123456789012345LL, 7}, {-4, 0}, {LLONG_MAX, LLONG_MIN + 1}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t len = 0;
        mizan_err_t err = {""};
        char *v = mizan_cachekey_value_seal(&key, POST5_KEY, cases[i], "{}", 2, &len, &err);
        cr_assert_not_null(v, "%s", err.msg);
        long long got[2];
        const char *body;
        size_t blen;
        cr_assert_eq(mizan_cachekey_value_open(&key, POST5_KEY, v, len, got, &body, &blen, &err), 0, "%s: %s", v,
                     err.msg);
        cr_assert_eq(got[0], cases[i][0]);
        cr_assert_eq(got[1], cases[i][1]);
        cr_assert_eq(blen, 2);
        free(v);
    }
}

Test(cachekey, vector_search_params_digest)
{
    expect_digest("search", search_params(), SEARCH_DIGEST);
}

Test(cachekey, vector_search_public)
{
    expect_bundle("search", search_params(), "public",
                  "mizan:ctx:{search}:ea35e942feeedca42bdab9123ba7c02211273beb5c30a1b90cec71df51c8cbb4");
}

Test(cachekey, vector_perm_keys)
{
    const char *perms[] = {"blog.change_post", "blog.add_post", "blog.add_post"};
    char out[MIZAN_DIGEST_HEX_LEN + 1];
    mizan_err_t err = {""};
    cr_assert_eq(mizan_cachekey_perm_key(&key, true, false, perms, 3, out, &err), 0, "%s",
                 err.msg);
    cr_assert_str_eq(out, PERM_KEY_STAFF);
    /* The input is left as it was. */
    cr_assert_str_eq(perms[0], "blog.change_post");
    cr_assert_str_eq(perms[1], "blog.add_post");
    cr_assert_str_eq(perms[2], "blog.add_post");

    cr_assert_eq(mizan_cachekey_perm_key(&key, false, false, NULL, 0, out, &err), 0, "%s",
                 err.msg);
    cr_assert_str_eq(out, PERM_KEY_NONE);
}

Test(cachekey, vector_dashboard_perms)
{
    const char *perms[] = {"blog.add_post", "blog.change_post", "blog.add_post"};
    mizan_identity_t id = {.sub = "bob", .staff = true, .perms = perms, .nperms = 3};
    char scope[MIZAN_CACHEKEY_PERMS_SCOPE_SIZE];
    mizan_err_t err = {""};
    cr_assert_eq(mizan_cachekey_scope(&key, MIZAN_SCOPE_PERMS, &id, scope, sizeof(scope), &err),
                 0, "%s", err.msg);
    cr_assert_str_eq(scope, "perms:" PERM_KEY_STAFF);
    expect_bundle("dashboard", params("{}"), scope,
                  "mizan:ctx:{dashboard}:d8a08ff9e4b0eb23b759670d263131c1e3bce920ead79a574110d55e6bf33bc7");
}

Test(cachekey, revision_keys)
{
    char out[MIZAN_CACHEKEY_KEY_SIZE(8)];
    mizan_err_t err = {""};
    cr_assert_eq(mizan_cachekey_context_rev(&key, "post", out, sizeof(out), &err), 0, "%s",
                 err.msg);
    cr_assert_str_eq(out, "mizan:rev:{post}");

    json_t *p = params("{\"post_id\":5}");
    cr_assert_eq(mizan_cachekey_scoped_rev(&key, "post", p, out, sizeof(out), &err), 0, "%s",
                 err.msg);
    json_decref(p);
    cr_assert_str_eq(out, "mizan:rev:{post}:" POST_DIGEST);

    p = search_params();
    cr_assert_eq(mizan_cachekey_scoped_rev(&key, "search", p, out, sizeof(out), &err), 0, "%s",
                 err.msg);
    json_decref(p);
    cr_assert_str_eq(out, "mizan:rev:{search}:" SEARCH_DIGEST);
}

/* ------------------------------------------------------------------------ */
/* Cross-check with the OpenSSL command line                                */
/* ------------------------------------------------------------------------ */

/* Runs cmd and extracts the 64 hex digits openssl dgst prints after "= ". */
static void run_openssl(const char *cmd, char out[MIZAN_DIGEST_HEX_LEN + 1])
{
    FILE *probe = popen("openssl version >/dev/null 2>&1", "r");
    cr_assert_not_null(probe, "popen failed");
    int status = pclose(probe);
    cr_assert_eq(status, 0,
                 "the openssl command line is missing (install the openssl package); "
                 "it is needed to cross-check digests");

    FILE *f = popen(cmd, "r");
    cr_assert_not_null(f, "popen failed");
    char line[512] = "";
    char *got = fgets(line, sizeof(line), f);
    status = pclose(f);
    cr_assert_not_null(got, "no output from: %s", cmd);
    cr_assert_eq(status, 0, "command failed: %s", cmd);
    const char *hex = strstr(line, "= ");
    cr_assert_not_null(hex, "unexpected openssl output: %s", line);
    hex += 2;
    cr_assert(strspn(hex, "0123456789abcdef") == MIZAN_DIGEST_HEX_LEN,
              "unexpected openssl output: %s", line);
    memcpy(out, hex, MIZAN_DIGEST_HEX_LEN);
    out[MIZAN_DIGEST_HEX_LEN] = '\0';
}

/* HMAC of the n bytes msg by the openssl CLI: every byte goes through the
 * printf format as an octal escape, which POSIX printf understands and
 * which needs no shell quoting. */
static void openssl_hmac(const void *msg, size_t n, char out[MIZAN_DIGEST_HEX_LEN + 1])
{
    static const char tail[] = "' | openssl dgst -sha256 -hmac " SECRET;
    char cmd[2048];
    cr_assert_lt(sizeof("printf '") + 4 * n + sizeof(tail), sizeof(cmd), "test message too long");
    size_t len = (size_t)snprintf(cmd, sizeof(cmd), "printf '");
    for (size_t i = 0; i < n; i++)
        len += (size_t)snprintf(cmd + len, sizeof(cmd) - len, "\\%03o",
                                ((const unsigned char *)msg)[i]);
    snprintf(cmd + len, sizeof(cmd) - len, "%s", tail);
    run_openssl(cmd, out);
}

Test(cachekey, openssl_cli_literal_command)
{
    /* The command PROTOCOL.md shows, with \000 for each zero byte. */
    char cli[MIZAN_DIGEST_HEX_LEN + 1];
    run_openssl("printf 'mizan/v1/params\\000post\\000{\"post_id\":5}' | "
                "openssl dgst -sha256 -hmac " SECRET,
                cli);
    cr_assert_str_eq(cli, POST_DIGEST);
    expect_digest("post", params("{\"post_id\":5}"), cli);
}

Test(cachekey, openssl_cli_agrees)
{
    char cli[MIZAN_DIGEST_HEX_LEN + 1];
    char lib[MIZAN_DIGEST_HEX_LEN + 1];
    mizan_err_t err = {""};

    /* Search params digest: the message holds the jcs bytes with escapes. */
    static const char search_msg[] = "mizan/v1/params\0search\0{\"lang\":null,\"q\":\"caf\xc3\xa9 "
                                     "\\\"x\\\"\\n\\u0001\"}";
    openssl_hmac(search_msg, sizeof(search_msg) - 1, cli);
    json_t *p = search_params();
    cr_assert_eq(mizan_cachekey_params_digest(&key, "search", p, lib, &err), 0, "%s", err.msg);
    json_decref(p);
    cr_assert_str_eq(lib, cli);

    /* A bundle digest: three zero-byte separators. */
    static const char bundle_msg[] = "mizan/v1/bundle\0inbox\0"
                                     "{\"folder\":\"spam\",\"page\":2,\"unread\":true}\0user:alice";
    openssl_hmac(bundle_msg, sizeof(bundle_msg) - 1, cli);
    char bundle[MIZAN_CACHEKEY_KEY_SIZE(8)];
    p = params("{\"folder\":\"spam\",\"page\":2,\"unread\":true}");
    cr_assert_eq(mizan_cachekey_bundle(&key, "inbox", p, "user:alice", bundle, sizeof(bundle), &err),
                 0, "%s", err.msg);
    json_decref(p);
    cr_assert_str_eq(bundle + strlen("mizan:ctx:{inbox}:"), cli);

    /* A perm key: newline-terminated lines after the label. */
    static const char perms_msg[] = "mizan/v1/perms\0staff=1\nsuperuser=0\n"
                                    "blog.add_post\nblog.change_post\n";
    openssl_hmac(perms_msg, sizeof(perms_msg) - 1, cli);
    cr_assert_str_eq(cli, PERM_KEY_STAFF);
    static const char super_msg[] = "mizan/v1/perms\0staff=0\nsuperuser=1\nz\n";
    openssl_hmac(super_msg, sizeof(super_msg) - 1, cli);
    const char *z[] = {"z"};
    cr_assert_eq(mizan_cachekey_perm_key(&key, false, true, z, 1, lib, &err), 0, "%s", err.msg);
    cr_assert_str_eq(lib, cli);
}

/* ------------------------------------------------------------------------ */
/* Initialization                                                           */
/* ------------------------------------------------------------------------ */

Test(cachekey, short_secret_refused)
{
    mizan_cachekey_t k;
    mizan_err_t err = {""};
    static const unsigned char secret[300] = {1};
    cr_assert_eq(mizan_cachekey_init(&k, secret, 31, NULL, &err), -1);
    cr_assert(strstr(err.msg, "32") != NULL, "err: %s", err.msg);
    cr_assert_eq(mizan_cachekey_init(&k, secret, 0, NULL, &err), -1);
    cr_assert_eq(mizan_cachekey_init(&k, NULL, 40, NULL, &err), -1);
    cr_assert_eq(mizan_cachekey_init(&k, secret, 257, NULL, &err), -1);
    cr_assert_eq(mizan_cachekey_init(&k, secret, 32, NULL, &err), 0, "%s", err.msg);
    cr_assert_str_eq(k.prefix, "mizan:");
    cr_assert_eq(k.secret_len, 32);
    cr_assert_eq(mizan_cachekey_init(&k, secret, 256, "", &err), 0, "%s", err.msg);
    cr_assert_str_eq(k.prefix, "");
    mizan_cachekey_deinit(&k);
    cr_assert_eq(k.secret_len, 0);
}

Test(cachekey, long_prefix_refused)
{
    mizan_cachekey_t k;
    mizan_err_t err = {""};
    char prefix[65];
    memset(prefix, 'p', 64);
    prefix[64] = '\0';
    cr_assert_eq(mizan_cachekey_init(&k, (const unsigned char *)SECRET, strlen(SECRET), prefix,
                                     &err),
                 -1);
    prefix[63] = '\0';
    cr_assert_eq(mizan_cachekey_init(&k, (const unsigned char *)SECRET, strlen(SECRET), prefix,
                                     &err),
                 0, "%s", err.msg);

    /* The longest prefix and a context fit the documented size. */
    char out[MIZAN_CACHEKEY_KEY_SIZE(4)];
    json_t *p = params("{\"post_id\":5}");
    cr_assert_eq(mizan_cachekey_bundle(&k, "post", p, "public", out, sizeof(out), &err), 0, "%s",
                 err.msg);
    cr_assert_eq(strlen(out), sizeof(out) - 1);
    cr_assert_eq(mizan_cachekey_scoped_rev(&k, "post", p, out, sizeof(out), &err), 0, "%s",
                 err.msg);
    json_decref(p);
    mizan_cachekey_deinit(&k);
}

Test(cachekey, prefix_changes_keys_not_digests)
{
    mizan_cachekey_t k;
    mizan_err_t err = {""};
    cr_assert_eq(mizan_cachekey_init(&k, (const unsigned char *)SECRET, strlen(SECRET), "app1:",
                                     &err),
                 0);
    char out[MIZAN_CACHEKEY_KEY_SIZE(4)];
    json_t *p = params("{\"post_id\":5}");
    cr_assert_eq(mizan_cachekey_bundle(&k, "post", p, "public", out, sizeof(out), &err), 0);
    cr_assert_str_eq(out,
                     "app1:ctx:{post}:609fa05978b34ce85e89ca31370427d12c3b0afbc8f4bf0c491c023bcd5d63ba");
    cr_assert_eq(mizan_cachekey_context_rev(&k, "post", out, sizeof(out), &err), 0);
    cr_assert_str_eq(out, "app1:rev:{post}");
    json_decref(p);
    mizan_cachekey_deinit(&k);
}

Test(cachekey, other_secret_other_keys)
{
    mizan_cachekey_t k;
    mizan_err_t err = {""};
    static const char other[] = "mizan-test-secret-0123456789abcdeF";
    cr_assert_eq(mizan_cachekey_init(&k, (const unsigned char *)other, strlen(other), NULL, &err),
                 0);
    char out[MIZAN_DIGEST_HEX_LEN + 1];
    json_t *p = params("{\"post_id\":5}");
    cr_assert_eq(mizan_cachekey_params_digest(&k, "post", p, out, &err), 0);
    json_decref(p);
    cr_assert_str_neq(out, POST_DIGEST);
    mizan_cachekey_deinit(&k);
}

/* ------------------------------------------------------------------------ */
/* Scopes and perm keys                                                     */
/* ------------------------------------------------------------------------ */

Test(cachekey, user_scope_needs_a_subject)
{
    char out[64];
    mizan_err_t err = {""};
    mizan_identity_t anon = {.sub = NULL};
    mizan_identity_t empty = {.sub = ""};
    cr_assert_eq(mizan_cachekey_scope(&key, MIZAN_SCOPE_USER, &anon, out, sizeof(out), &err), -1);
    cr_assert_neq(err.msg[0], '\0');
    cr_assert_eq(mizan_cachekey_scope(&key, MIZAN_SCOPE_USER, &empty, out, sizeof(out), &err), -1);
    cr_assert_eq(mizan_cachekey_scope(&key, MIZAN_SCOPE_USER, NULL, out, sizeof(out), &err), -1);
    /* Public needs nobody. */
    cr_assert_eq(mizan_cachekey_scope(&key, MIZAN_SCOPE_PUBLIC, NULL, out, sizeof(out), &err), 0);
    cr_assert_str_eq(out, "public");
    cr_assert_eq(mizan_cachekey_scope(&key, MIZAN_SCOPE_PUBLIC, &anon, out, sizeof(out), &err), 0);
    cr_assert_str_eq(out, "public");
}

Test(cachekey, perms_scope_of_anonymous_is_the_empty_set)
{
    char out[MIZAN_CACHEKEY_PERMS_SCOPE_SIZE];
    mizan_err_t err = {""};
    mizan_identity_t anon = {.sub = NULL};
    cr_assert_eq(mizan_cachekey_scope(&key, MIZAN_SCOPE_PERMS, &anon, out, sizeof(out), &err), 0);
    cr_assert_str_eq(out, "perms:" PERM_KEY_NONE);
    cr_assert_eq(mizan_cachekey_scope(&key, MIZAN_SCOPE_PERMS, NULL, out, sizeof(out), &err), 0);
    cr_assert_str_eq(out, "perms:" PERM_KEY_NONE);
}

Test(cachekey, perm_key_sorting_and_flags)
{
    char a[MIZAN_DIGEST_HEX_LEN + 1], b[MIZAN_DIGEST_HEX_LEN + 1];
    mizan_err_t err = {""};
    const char *p1[] = {"b", "a", "B", "a", "b"};
    const char *p2[] = {"B", "a", "b"};
    cr_assert_eq(mizan_cachekey_perm_key(&key, false, false, p1, 5, a, &err), 0);
    cr_assert_eq(mizan_cachekey_perm_key(&key, false, false, p2, 3, b, &err), 0);
    cr_assert_str_eq(a, b);
    /* Each flag matters, and so does every perm. */
    cr_assert_eq(mizan_cachekey_perm_key(&key, false, true, p2, 3, b, &err), 0);
    cr_assert_str_neq(a, b);
    cr_assert_eq(mizan_cachekey_perm_key(&key, true, false, p2, 3, b, &err), 0);
    cr_assert_str_neq(a, b);
    cr_assert_eq(mizan_cachekey_perm_key(&key, false, false, p2, 2, b, &err), 0);
    cr_assert_str_neq(a, b);
    /* A newline would let {"a\nb"} pose as {"a","b"}: refused. */
    const char *bad[] = {"a\nb"};
    cr_assert_eq(mizan_cachekey_perm_key(&key, false, false, bad, 1, b, &err), -1);
    cr_assert(strstr(err.msg, "newline") != NULL, "err: %s", err.msg);
}

/* ------------------------------------------------------------------------ */
/* Refusals                                                                 */
/* ------------------------------------------------------------------------ */

Test(cachekey, small_buffers_refused)
{
    mizan_err_t err = {""};
    json_t *p = params("{\"post_id\":5}");
    char out[MIZAN_CACHEKEY_KEY_SIZE(4)];
    size_t need = strlen("mizan:ctx:{post}:") + MIZAN_DIGEST_HEX_LEN + 1;
    cr_assert_eq(mizan_cachekey_bundle(&key, "post", p, "public", out, need - 1, &err), -1);
    cr_assert_eq(out[0], '\0');
    cr_assert_eq(mizan_cachekey_bundle(&key, "post", p, "public", out, need, &err), 0, "%s",
                 err.msg);
    cr_assert_eq(mizan_cachekey_context_rev(&key, "post", out, 10, &err), -1);
    cr_assert_eq(mizan_cachekey_scoped_rev(&key, "post", p, out, 20, &err), -1);
    char small[10];
    mizan_identity_t id = {.sub = "a-rather-long-subject"};
    cr_assert_eq(mizan_cachekey_scope(&key, MIZAN_SCOPE_USER, &id, small, sizeof(small), &err),
                 -1);
    cr_assert_eq(mizan_cachekey_scope(&key, MIZAN_SCOPE_PERMS, &id, small, sizeof(small), &err),
                 -1);
    json_decref(p);
}

Test(cachekey, bad_context_or_params_refused)
{
    mizan_err_t err = {""};
    char out[MIZAN_CACHEKEY_KEY_SIZE(16)];
    json_t *p = params("{}");
    cr_assert_eq(mizan_cachekey_bundle(&key, "", p, "public", out, sizeof(out), &err), -1);
    cr_assert_eq(mizan_cachekey_bundle(&key, "a}b", p, "public", out, sizeof(out), &err), -1);
    cr_assert_eq(mizan_cachekey_bundle(&key, "post", p, NULL, out, sizeof(out), &err), -1);
    cr_assert_eq(mizan_cachekey_context_rev(&key, NULL, out, sizeof(out), &err), -1);
    json_decref(p);
    cr_assert_eq(mizan_cachekey_bundle(&key, "post", NULL, "public", out, sizeof(out), &err), -1);
    json_t *bad = json_stringn_nocheck("\xff", 1);
    cr_assert_eq(mizan_cachekey_scoped_rev(&key, "post", bad, out, sizeof(out), &err), -1);
    json_decref(bad);
}

Test(cachekey, separators_keep_parts_apart)
{
    /* Moving bytes between the context and the scope changes the key. */
    char a[MIZAN_CACHEKEY_KEY_SIZE(8)], b[MIZAN_CACHEKEY_KEY_SIZE(8)];
    mizan_err_t err = {""};
    json_t *p = params("{}");
    cr_assert_eq(mizan_cachekey_bundle(&key, "feed", p, "public", a, sizeof(a), &err), 0);
    cr_assert_eq(mizan_cachekey_bundle(&key, "feed", p, "user:public", b, sizeof(b), &err), 0);
    cr_assert_str_neq(a, b);
    json_decref(p);
}

/* ------------------------------------------------------------------------ */
/* Concurrency                                                              */
/* ------------------------------------------------------------------------ */

static void *derive_many(void *arg)
{
    (void)arg;
    mizan_err_t err = {""};
    json_t *p = json_pack("{s:i}", "post_id", 5);
    char out[MIZAN_CACHEKEY_KEY_SIZE(4)];
    long bad = 0;
    for (int i = 0; i < 500; i++) {
        if (mizan_cachekey_bundle(&key, "post", p, "public", out, sizeof(out), &err) < 0 ||
            strcmp(out, "mizan:ctx:{post}:"
                        "609fa05978b34ce85e89ca31370427d12c3b0afbc8f4bf0c491c023bcd5d63ba") != 0)
            bad++;
    }
    json_decref(p);
    return (void *)bad;
}

Test(cachekey, concurrent_derivation)
{
    pthread_t t[8];
    for (int i = 0; i < 8; i++)
        cr_assert_eq(pthread_create(&t[i], NULL, derive_many, NULL), 0);
    for (int i = 0; i < 8; i++) {
        void *bad = NULL;
        pthread_join(t[i], &bad);
        cr_assert_null(bad, "thread %d derived %ld wrong keys", i, (long)bad);
    }
}
