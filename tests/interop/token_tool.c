/*
 * token_tool.c - a command-line face of the gateway's MWT code, for the
 * interoperability test with PyJWT (jwt_interop.py).
 *
 *   mizan_token_tool verify <secret> <token> [--kid K] [--key KID=SECRET]...
 *                           [--now T] [--leeway S]
 *       Verifies with <secret> as the primary key (named K, default "") plus
 *       any extra keys. Prints the claims as one line of JSON (sorted keys)
 *       and exits 0, or prints "error: <reason>" and exits 1.
 *
 *   mizan_token_tool mint <secret> <sub> [--staff] [--superuser]
 *                         [--perm P]... [--ttl N] [--kid K] [--now T]
 *       Prints a token signed with <secret> (header kid K when given);
 *       ttl defaults to 3600 s and now to the current time. Exits 0, or 1
 *       with "error: <reason>".
 *
 * Usage errors exit 2.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "token.h"

static int usage(void)
{
    fprintf(stderr,
            "usage: mizan_token_tool verify <secret> <token> [--kid K] [--key KID=SECRET]...\n"
            "                               [--now T] [--leeway S]\n"
            "       mizan_token_tool mint <secret> <sub> [--staff] [--superuser] [--perm P]...\n"
            "                             [--ttl N] [--kid K] [--now T]\n");
    return 2;
}

/* Parses a decimal integer argument; 0 or -1. */
static int parse_ll(const char *s, long long *out)
{
    char *end = NULL;
    if (s == NULL || *s == '\0')
        return -1;
    long long v = strtoll(s, &end, 10);
    if (*end != '\0')
        return -1;
    *out = v;
    return 0;
}

/* Appends a key to ks; 0 or -1 when it does not fit. */
static int add_key(mizan_token_keys_t *ks, const char *kid, size_t kid_len, const char *secret)
{
    size_t slen = strlen(secret);
    if (ks->nkeys >= MIZAN_TOKEN_MAX_KEYS || kid_len >= sizeof(ks->keys[0].kid) || slen == 0 ||
        slen > sizeof(ks->keys[0].secret))
        return -1;
    mizan_token_key_t *k = &ks->keys[ks->nkeys++];
    memcpy(k->kid, kid, kid_len);
    k->kid[kid_len] = '\0';
    memcpy(k->secret, secret, slen);
    k->secret_len = slen;
    return 0;
}

/* The claims as a JSON object (new reference, NULL when out of memory). */
static json_t *claims_json(const mizan_token_claims_t *c)
{
    json_t *perms = json_array();
    json_t *o = json_pack("{s:s, s:I, s:b, s:b, s:o}", "sub", c->sub, "exp", (json_int_t)c->exp,
                          "staff", c->staff, "superuser", c->superuser, "perms", perms);
    if (o == NULL)
        return NULL;
    for (size_t i = 0; i < c->nperms; i++)
        if (json_array_append_new(perms, json_string(c->perms[i])) != 0)
            goto fail;
    if (c->has_nbf && json_object_set_new(o, "nbf", json_integer(c->nbf)) != 0)
        goto fail;
    if (c->has_iat && json_object_set_new(o, "iat", json_integer(c->iat)) != 0)
        goto fail;
    return o;
fail:
    json_decref(o);
    return NULL;
}

static int cmd_verify(int argc, char **argv)
{
    static mizan_token_keys_t ks; /* large: not on the stack */
    const char *extra[MIZAN_TOKEN_MAX_KEYS];
    size_t nextra = 0;
    const char *kid = "";
    long long now = (long long)time(NULL);
    long long leeway = 0;
    if (argc < 4)
        return usage();
    for (int i = 4; i < argc; i++) {
        if (strcmp(argv[i], "--kid") == 0 && i + 1 < argc) {
            kid = argv[++i];
        } else if (strcmp(argv[i], "--now") == 0 && i + 1 < argc) {
            if (parse_ll(argv[++i], &now) != 0)
                return usage();
        } else if (strcmp(argv[i], "--leeway") == 0 && i + 1 < argc) {
            if (parse_ll(argv[++i], &leeway) != 0)
                return usage();
        } else if (strcmp(argv[i], "--key") == 0 && i + 1 < argc &&
                   nextra < MIZAN_TOKEN_MAX_KEYS - 1) {
            extra[nextra++] = argv[++i];
        } else {
            return usage();
        }
    }
    /* The primary key first, then the extra ones in order. */
    if (add_key(&ks, kid, strlen(kid), argv[2]) != 0)
        return usage();
    for (size_t i = 0; i < nextra; i++) {
        const char *eq = strchr(extra[i], '=');
        if (eq == NULL || add_key(&ks, extra[i], (size_t)(eq - extra[i]), eq + 1) != 0)
            return usage();
    }
    ks.primary = 0;
    ks.leeway_s = (long)leeway;

    mizan_token_claims_t c;
    mizan_err_t err = {{0}};
    if (mizan_token_verify(&ks, argv[3], strlen(argv[3]), now, &c, &err) != 0) {
        printf("error: %s\n", err.msg);
        return 1;
    }
    json_t *o = claims_json(&c);
    char *text = o ? json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    int rc = 1;
    if (text != NULL) {
        printf("%s\n", text);
        rc = 0;
    } else {
        printf("error: out of memory\n");
    }
    free(text);
    json_decref(o);
    mizan_token_claims_deinit(&c);
    return rc;
}

static int cmd_mint(int argc, char **argv)
{
    static mizan_token_keys_t ks;
    static const char *perms[MIZAN_TOKEN_MAX_PERMS];
    size_t nperms = 0;
    const char *kid = NULL;
    bool staff = false;
    bool superuser = false;
    long long ttl = 3600;
    long long now = (long long)time(NULL);
    if (argc < 4)
        return usage();
    for (int i = 4; i < argc; i++) {
        if (strcmp(argv[i], "--staff") == 0) {
            staff = true;
        } else if (strcmp(argv[i], "--superuser") == 0) {
            superuser = true;
        } else if (strcmp(argv[i], "--perm") == 0 && i + 1 < argc) {
            if (nperms == MIZAN_TOKEN_MAX_PERMS)
                return usage();
            perms[nperms++] = argv[++i];
        } else if (strcmp(argv[i], "--ttl") == 0 && i + 1 < argc) {
            if (parse_ll(argv[++i], &ttl) != 0)
                return usage();
        } else if (strcmp(argv[i], "--now") == 0 && i + 1 < argc) {
            if (parse_ll(argv[++i], &now) != 0)
                return usage();
        } else if (strcmp(argv[i], "--kid") == 0 && i + 1 < argc) {
            kid = argv[++i];
        } else {
            return usage();
        }
    }
    if (add_key(&ks, kid ? kid : "", kid ? strlen(kid) : 0, argv[2]) != 0)
        return usage();
    ks.primary = 0;

    mizan_err_t err = {{0}};
    char *tok = mizan_token_mint(&ks, kid, argv[3], staff, superuser, perms, nperms, ttl, now,
                                 &err);
    if (tok == NULL) {
        printf("error: %s\n", err.msg);
        return 1;
    }
    printf("%s\n", tok);
    free(tok);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "verify") == 0)
        return cmd_verify(argc, argv);
    if (argc >= 2 && strcmp(argv[1], "mint") == 0)
        return cmd_mint(argc, argv);
    return usage();
}
