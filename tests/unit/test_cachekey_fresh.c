/*
 * test_cachekey_fresh.c - stored values of contexts with stale_s
 * (src/store/cachekey.c): the doc carries its freshness deadline,
 * {"v":2,"rev":[..],"fresh":<unix ms>,"bundle":..}, under the same mac;
 * the plain doc (PROTOCOL.md section 6's vector) still opens, with no
 * deadline; a deadline cannot be added, changed or removed without the mac
 * failing.
 */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cachekey.h"

#define SECRET "mizan-test-secret-0123456789abcdef"
#define POST5_KEY "mizan:ctx:{post}:609fa05978b34ce85e89ca31370427d12c3b0afbc8f4bf0c491c023bcd5d63ba"
#define BUNDLE "{\"context\":\"post\",\"params\":{\"post_id\":5},\"data\":{},\"errors\":{}}"
#define PLAIN_DOC "{\"v\":2,\"rev\":[3,1],\"bundle\":" BUNDLE "}"
#define PLAIN_MAC "4a547b80a40dda85403df1aab92a673df20233bbe6cffa38a8bbd1bb996dbeb0"

static mizan_cachekey_t key;

static void setup_key(void)
{
    mizan_err_t err = {""};
    cr_assert_eq(mizan_cachekey_init(&key, (const unsigned char *)SECRET, strlen(SECRET), NULL, &err), 0, "%s",
                 err.msg);
}

static void teardown_key(void)
{
    mizan_cachekey_deinit(&key);
}

TestSuite(cachekey_fresh, .init = setup_key, .fini = teardown_key);

Test(cachekey_fresh, sealed_with_a_deadline_and_opened)
{
    long long rev[2] = {3, 1};
    size_t len = 0;
    mizan_err_t err = {""};
    char *v = mizan_cachekey_value_seal_fresh(&key, POST5_KEY, rev, 1767225600123LL, BUNDLE, strlen(BUNDLE), &len,
                                              &err);
    cr_assert_not_null(v, "%s", err.msg);
    const char *doc = strchr(v, '\n');
    cr_assert_not_null(doc);
    cr_assert_str_eq(doc + 1, "{\"v\":2,\"rev\":[3,1],\"fresh\":1767225600123,\"bundle\":" BUNDLE "}");
    /* The mac covers the deadline like the rest of the doc. */
    char mac[MIZAN_DIGEST_HEX_LEN + 1];
    cr_assert_eq(mizan_cachekey_value_mac(&key, POST5_KEY, doc + 1, strlen(doc + 1), mac, &err), 0);
    cr_assert_eq(strncmp(v, mac, MIZAN_DIGEST_HEX_LEN), 0);
    long long got[2] = {0, 0}, fresh = 0;
    const char *body = NULL;
    size_t blen = 0;
    cr_assert_eq(mizan_cachekey_value_open_fresh(&key, POST5_KEY, v, len, got, &fresh, &body, &blen, &err), 0, "%s",
                 err.msg);
    cr_assert_eq(got[0], 3);
    cr_assert_eq(got[1], 1);
    cr_assert_eq(fresh, 1767225600123LL);
    cr_assert_eq(blen, strlen(BUNDLE));
    cr_assert_eq(memcmp(body, BUNDLE, blen), 0);
    /* The plain opener reads it too (the deadline is skipped). */
    cr_assert_eq(mizan_cachekey_value_open(&key, POST5_KEY, v, len, got, &body, &blen, &err), 0, "%s", err.msg);
    free(v);
}

Test(cachekey_fresh, the_protocol_vector_opens_without_a_deadline)
{
    long long rev[2] = {3, 1};
    size_t len = 0;
    mizan_err_t err = {""};
    /* Deadline 0 writes the plain doc, byte for byte the vector. */
    char *v = mizan_cachekey_value_seal_fresh(&key, POST5_KEY, rev, 0, BUNDLE, strlen(BUNDLE), &len, &err);
    cr_assert_not_null(v, "%s", err.msg);
    cr_assert_str_eq(v, PLAIN_MAC "\n" PLAIN_DOC);
    long long got[2], fresh = -1;
    const char *body;
    size_t blen;
    cr_assert_eq(mizan_cachekey_value_open_fresh(&key, POST5_KEY, v, len, got, &fresh, &body, &blen, &err), 0, "%s",
                 err.msg);
    cr_assert_eq(fresh, 0);
    free(v);
}

/* Re-macs a doc (as a holder of the secret could), to check the shape rules behind the mac. */
static char *sealed_doc(const char *doc)
{
    char mac[MIZAN_DIGEST_HEX_LEN + 1];
    mizan_err_t err = {""};
    cr_assert_eq(mizan_cachekey_value_mac(&key, POST5_KEY, doc, strlen(doc), mac, &err), 0);
    char *v = NULL;
    cr_assert_geq(asprintf(&v, "%s\n%s", mac, doc), 0);
    return v;
}

Test(cachekey_fresh, tampering_and_bad_shapes_are_refused)
{
    long long rev[2] = {3, 1};
    size_t len = 0;
    mizan_err_t err = {""};
    char *v = mizan_cachekey_value_seal_fresh(&key, POST5_KEY, rev, 1000, BUNDLE, strlen(BUNDLE), &len, &err);
    cr_assert_not_null(v);
    long long got[2], fresh;
    const char *body;
    size_t blen;
    /* Moving the deadline (one digit) breaks the mac. */
    char *moved = strdup(v);
    char *p = strstr(moved, "\"fresh\":1000");
    cr_assert_not_null(p);
    p[8] = '9';
    cr_assert_eq(mizan_cachekey_value_open_fresh(&key, POST5_KEY, moved, len, got, &fresh, &body, &blen, &err), -1);
    /* So does removing it (the plain doc under the fresh doc's mac). */
    char *removed = NULL;
    cr_assert_geq(asprintf(&removed, "%.*s\n%s", MIZAN_DIGEST_HEX_LEN, v, PLAIN_DOC), 0);
    cr_assert_eq(
        mizan_cachekey_value_open_fresh(&key, POST5_KEY, removed, strlen(removed), got, &fresh, &body, &blen, &err),
        -1);
    /* Authentic but malformed deadlines are refused. */
    static const char *const bad[] = {
        "{\"v\":2,\"rev\":[3,1],\"fresh\":0,\"bundle\":" BUNDLE "}",
        "{\"v\":2,\"rev\":[3,1],\"fresh\":-5,\"bundle\":" BUNDLE "}",
        "{\"v\":2,\"rev\":[3,1],\"fresh\":,\"bundle\":" BUNDLE "}",
        "{\"v\":2,\"rev\":[3,1],\"fresh\":12\"bundle\":" BUNDLE "}",
        "{\"v\":2,\"rev\":[3,1],\"fresh\":99999999999999999999999,\"bundle\":" BUNDLE "}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char *s = sealed_doc(bad[i]);
        cr_assert_eq(mizan_cachekey_value_open_fresh(&key, POST5_KEY, s, strlen(s), got, &fresh, &body, &blen, &err),
                     -1, "accepted %s", bad[i]);
        free(s);
    }
    free(removed);
    free(moved);
    free(v);
}
