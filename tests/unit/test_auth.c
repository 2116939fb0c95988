/*
 * test_auth.c - auth requirements: which declarations parse, how the schema
 * endpoint shows them, and the full allow / 401 / 403 matrix of PROTOCOL.md
 * section 4 for every kind of caller against every kind of requirement.
 */
#include <criterion/criterion.h>

#include <string.h>

#include "auth.h"
#include "token.h"

/* ---- parsing ----------------------------------------------------------- */

/* Parses JSON text and returns the result code; *a is filled either way. */
static int parse_text(const char *text, mizan_auth_t *a, mizan_err_t *err)
{
    json_error_t jerr;
    json_t *spec = json_loads(text, JSON_DECODE_ANY, &jerr);
    cr_assert_not_null(spec, "test spec '%s' is not JSON: %s", text, jerr.text);
    memset(a, 0x5a, sizeof(*a));
    int rc = mizan_auth_parse(spec, a, err);
    json_decref(spec);
    return rc;
}

static void expect_parse(const char *text, mizan_auth_kind_t kind, const char *perm)
{
    mizan_auth_t a;
    mizan_err_t err = {{0}};
    cr_assert_eq(parse_text(text, &a, &err), 0, "'%s' refused: %s", text, err.msg);
    cr_assert_eq(a.kind, kind, "'%s' parsed as kind %d", text, (int)a.kind);
    if (perm == NULL)
        cr_assert_null(a.perm);
    else
        cr_assert_str_eq(a.perm, perm);
    cr_assert_null(a.fn);
    cr_assert_null(a.fn_data);

    /* The schema endpoint shows exactly what was declared. */
    json_t *shown = mizan_auth_to_json(&a);
    json_t *declared = json_loads(text, JSON_DECODE_ANY, NULL);
    cr_assert_not_null(shown);
    cr_assert(json_equal(shown, declared), "'%s' shown differently", text);
    json_decref(shown);
    json_decref(declared);
    mizan_auth_deinit(&a);
    cr_assert_null(a.perm);
}

static void expect_refused(const char *text)
{
    mizan_auth_t a;
    mizan_err_t err = {{0}};
    cr_assert_eq(parse_text(text, &a, &err), -1, "'%s' accepted", text);
    cr_assert_not_null(strstr(err.msg, "false, true, \"staff\", \"superuser\""),
                       "'%s': message '%s' does not say what is allowed", text, err.msg);
    cr_assert_null(a.perm);
    cr_assert_eq(a.kind, MIZAN_AUTH_NONE);
    mizan_auth_deinit(&a);
}

Test(auth_parse, valid_specs)
{
    expect_parse("false", MIZAN_AUTH_NONE, NULL);
    expect_parse("true", MIZAN_AUTH_TOKEN, NULL);
    expect_parse("\"staff\"", MIZAN_AUTH_STAFF, NULL);
    expect_parse("\"superuser\"", MIZAN_AUTH_SUPERUSER, NULL);
    expect_parse("{\"perm\": \"blog.publish_post\"}", MIZAN_AUTH_PERM, "blog.publish_post");
    expect_parse("{\"perm\": \"x\"}", MIZAN_AUTH_PERM, "x");
}

Test(auth_parse, null_spec_is_the_default)
{
    mizan_auth_t a;
    mizan_err_t err = {{0}};
    memset(&a, 0x5a, sizeof(a));
    cr_assert_eq(mizan_auth_parse(NULL, &a, &err), 0);
    cr_assert_eq(a.kind, MIZAN_AUTH_NONE);
    cr_assert_null(a.perm);
    mizan_auth_deinit(&a);
}

Test(auth_parse, invalid_specs)
{
    const char *bad[] = {
        "\"Staff\"",  "\"STAFF\"",  "\"admin\"",       "\"\"",        "\"native\"",
        "\"staff \"", "0",          "1",               "1.5",         "null",
        "[]",         "[\"staff\"]", "{}",             "{\"perm\": \"\"}", "{\"perm\": 1}",
        "{\"perm\": null}",        "{\"perm\": [\"a\"]}", "{\"perms\": \"a\"}",
        "{\"perm\": \"a\", \"x\": 1}", "{\"perm\": \"a\\u0000b\"}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        /* \u0000 needs JSON_ALLOW_NUL to load at all; build that one by hand. */
        if (strstr(bad[i], "\\u0000") != NULL) {
            json_t *spec = json_object();
            cr_assert_eq(json_object_set_new(spec, "perm", json_stringn("a\0b", 3)), 0);
            mizan_auth_t a;
            mizan_err_t err = {{0}};
            cr_assert_eq(mizan_auth_parse(spec, &a, &err), -1);
            cr_assert_null(a.perm);
            json_decref(spec);
            continue;
        }
        expect_refused(bad[i]);
    }
}

Test(auth_json, native_and_deinit)
{
    mizan_auth_t a = {.kind = MIZAN_AUTH_NATIVE};
    json_t *j = mizan_auth_to_json(&a);
    cr_assert(json_is_string(j));
    cr_assert_str_eq(json_string_value(j), "native");
    json_decref(j);
    cr_assert_null(mizan_auth_to_json(NULL));
    mizan_auth_deinit(&a);
    mizan_auth_deinit(NULL);
}

/* ---- the decision matrix ----------------------------------------------- */

static const char *const publish_perms[] = {"blog.add_post", "blog.publish_post"};
static const char *const other_perms[] = {"blog.publish", "blog.publish_post_x", "BLOG.PUBLISH_POST"};

enum { ANON_NULL, ANON, PLAIN, STAFF, SUPER, WITH_PERM, STAFF_OTHER_PERMS, NCALLERS };

static const char *const caller_names[NCALLERS] = {
    "anonymous (NULL identity)", "anonymous", "plain token", "staff",
    "superuser", "with perm",  "staff with other perms",
};

static mizan_identity_t caller(int which)
{
    mizan_identity_t id = {0};
    switch (which) {
    case ANON_NULL:
    case ANON:
        break;
    case PLAIN:
        id.sub = "pat";
        break;
    case STAFF:
        id.sub = "sam";
        id.staff = true;
        break;
    case SUPER:
        id.sub = "root"; /* superuser without staff: still satisfies "staff" */
        id.superuser = true;
        break;
    case WITH_PERM:
        id.sub = "pia";
        id.perms = publish_perms;
        id.nperms = 2;
        break;
    case STAFF_OTHER_PERMS:
        id.sub = "sol";
        id.staff = true;
        id.perms = other_perms;
        id.nperms = 3;
        break;
    }
    return id;
}

static mizan_code_t check(const mizan_auth_t *a, int which)
{
    mizan_identity_t id = caller(which);
    return mizan_auth_check(a, which == ANON_NULL ? NULL : &id);
}

/* Counts predicate calls and remembers what it saw. */
typedef struct probe {
    int calls;
    bool answer;       /* what the predicate returns */
    bool saw_sub;      /* the last call had a subject */
    bool saw_nonnull;  /* the last call had a non-NULL identity */
} probe_t;

static bool predicate(const mizan_identity_t *id, void *data)
{
    probe_t *p = data;
    p->calls++;
    p->saw_nonnull = id != NULL;
    p->saw_sub = id != NULL && id->sub != NULL;
    return p->answer;
}

#define OK MIZAN_OK
#define U401 MIZAN_UNAUTHORIZED
#define F403 MIZAN_FORBIDDEN

Test(auth_check, declarative_matrix)
{
    mizan_auth_t req[5] = {
        {.kind = MIZAN_AUTH_NONE},
        {.kind = MIZAN_AUTH_TOKEN},
        {.kind = MIZAN_AUTH_STAFF},
        {.kind = MIZAN_AUTH_SUPERUSER},
        {.kind = MIZAN_AUTH_PERM, .perm = (char *)"blog.publish_post"},
    };
    static const char *const req_names[5] = {"false", "true", "staff", "superuser", "perm"};
    /* rows: callers; columns: false, true, "staff", "superuser", {"perm"} */
    static const mizan_code_t want[NCALLERS][5] = {
        [ANON_NULL] = {OK, U401, U401, U401, U401},
        [ANON] = {OK, U401, U401, U401, U401},
        [PLAIN] = {OK, OK, F403, F403, F403},
        [STAFF] = {OK, OK, OK, F403, F403},
        [SUPER] = {OK, OK, OK, OK, OK},
        [WITH_PERM] = {OK, OK, F403, F403, OK},
        [STAFF_OTHER_PERMS] = {OK, OK, OK, F403, F403},
    };
    for (int c = 0; c < NCALLERS; c++)
        for (int r = 0; r < 5; r++)
            cr_expect_eq(check(&req[r], c), want[c][r], "%s vs %s: got %s, want %s",
                         caller_names[c], req_names[r], mizan_code_name(check(&req[r], c)),
                         mizan_code_name(want[c][r]));
}

Test(auth_check, native_matrix)
{
    probe_t no = {.answer = false};
    probe_t yes = {.answer = true};
    mizan_auth_t refuse = {.kind = MIZAN_AUTH_NATIVE, .fn = predicate, .fn_data = &no};
    mizan_auth_t admit = {.kind = MIZAN_AUTH_NATIVE, .fn = predicate, .fn_data = &yes};
    mizan_auth_t missing = {.kind = MIZAN_AUTH_NATIVE};
    /* columns: refusing predicate, admitting predicate, no predicate */
    static const mizan_code_t want[NCALLERS][3] = {
        [ANON_NULL] = {U401, OK, U401},
        [ANON] = {U401, OK, U401},
        [PLAIN] = {F403, OK, F403},
        [STAFF] = {F403, OK, F403},
        [SUPER] = {OK, OK, OK},
        [WITH_PERM] = {F403, OK, F403},
        [STAFF_OTHER_PERMS] = {F403, OK, F403},
    };
    for (int c = 0; c < NCALLERS; c++) {
        cr_expect_eq(check(&refuse, c), want[c][0], "%s vs refusing predicate", caller_names[c]);
        cr_expect_eq(check(&admit, c), want[c][1], "%s vs admitting predicate", caller_names[c]);
        cr_expect_eq(check(&missing, c), want[c][2], "%s vs no predicate", caller_names[c]);
    }
}

Test(auth_check, predicate_calls)
{
    probe_t p = {.answer = true};
    mizan_auth_t a = {.kind = MIZAN_AUTH_NATIVE, .fn = predicate, .fn_data = &p};

    /* A superuser is admitted without asking the module. */
    cr_assert_eq(check(&a, SUPER), OK);
    cr_assert_eq(p.calls, 0);

    /* Anonymous callers are shown to the predicate, never as a NULL identity. */
    cr_assert_eq(check(&a, ANON_NULL), OK);
    cr_assert_eq(p.calls, 1);
    cr_assert(p.saw_nonnull);
    cr_assert_not(p.saw_sub);

    cr_assert_eq(check(&a, PLAIN), OK);
    cr_assert_eq(p.calls, 2);
    cr_assert(p.saw_sub);
}

Test(auth_check, fails_closed)
{
    mizan_auth_t unknown = {.kind = (mizan_auth_kind_t)99};
    mizan_auth_t perm_null = {.kind = MIZAN_AUTH_PERM};
    for (int c = 0; c < NCALLERS; c++) {
        mizan_code_t want = c == ANON || c == ANON_NULL ? U401 : c == SUPER ? OK : F403;
        cr_expect_eq(check(&unknown, c), want, "%s vs unknown kind", caller_names[c]);
        cr_expect_eq(check(NULL, c), want, "%s vs NULL requirement", caller_names[c]);
        cr_expect_eq(check(&perm_null, c), want, "%s vs perm without name", caller_names[c]);
    }
}

/* ---- mizan_identity_has_perm ------------------------------------------- */

Test(identity, has_perm)
{
    const char *const perms[] = {"a.b", NULL, "c.d"};
    mizan_identity_t id = {.sub = "x", .perms = perms, .nperms = 3};
    cr_assert(mizan_identity_has_perm(&id, "a.b"));
    cr_assert(mizan_identity_has_perm(&id, "c.d"));
    cr_assert_not(mizan_identity_has_perm(&id, "a"));
    cr_assert_not(mizan_identity_has_perm(&id, "a.b.c"));
    cr_assert_not(mizan_identity_has_perm(&id, "A.B"));
    cr_assert_not(mizan_identity_has_perm(&id, ""));
    cr_assert_not(mizan_identity_has_perm(&id, NULL));
    cr_assert_not(mizan_identity_has_perm(NULL, "a.b"));
    id.nperms = 1; /* only the first entry counts */
    cr_assert_not(mizan_identity_has_perm(&id, "c.d"));
    mizan_identity_t none = {.sub = "x"};
    cr_assert_not(mizan_identity_has_perm(&none, "a.b"));
    /* Containment only: a superuser has no perms it was not given. */
    mizan_identity_t su = {.sub = "x", .superuser = true};
    cr_assert_not(mizan_identity_has_perm(&su, "a.b"));
}

/* ---- from a verified token to a decision ------------------------------- */

Test(auth_check, protocol_vector_caller)
{
    /* The PROTOCOL.md vector: alice, staff, perms ["blog.add_post"]. */
    mizan_token_keys_t ks;
    memset(&ks, 0, sizeof(ks));
    strcpy(ks.keys[0].kid, "main");
    ks.keys[0].secret_len = strlen("mizan-token-secret-0123456789abcd");
    memcpy(ks.keys[0].secret, "mizan-token-secret-0123456789abcd", ks.keys[0].secret_len);
    ks.nkeys = 1;
    const char *t = "eyJhbGciOiJIUzI1NiIsInR5cCI6Ik1XVCJ9."
                    "eyJzdWIiOiJhbGljZSIsImV4cCI6NDEwMjQ0NDgwMCwic3RhZmYiOnRydWUsInBlcm1zIjpbImJsb2cu"
                    "YWRkX3Bvc3QiXX0.8ZNtHZnN0nAQpS6CUizlZOqMoP2oFuNmePKbCffP-Tc";
    mizan_token_claims_t c;
    mizan_err_t err = {{0}};
    cr_assert_eq(mizan_token_verify(&ks, t, strlen(t), 1700000000, &c, &err), 0, "%s", err.msg);
    mizan_identity_t id;
    mizan_token_claims_identity(&c, &id);

    mizan_auth_t add = {.kind = MIZAN_AUTH_PERM, .perm = (char *)"blog.add_post"};
    mizan_auth_t publish = {.kind = MIZAN_AUTH_PERM, .perm = (char *)"blog.publish_post"};
    mizan_auth_t staff = {.kind = MIZAN_AUTH_STAFF};
    mizan_auth_t super = {.kind = MIZAN_AUTH_SUPERUSER};
    cr_assert_eq(mizan_auth_check(&add, &id), OK);
    cr_assert_eq(mizan_auth_check(&publish, &id), F403);
    cr_assert_eq(mizan_auth_check(&staff, &id), OK);
    cr_assert_eq(mizan_auth_check(&super, &id), F403);
    mizan_token_claims_deinit(&c);
}
