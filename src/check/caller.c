/*
 * caller.c - the verified identity of a request (see caller.h).
 */
#include "caller.h"

#include <stdlib.h>
#include <string.h>

static mizan_caller_t anonymous = {.refs = 1};

mizan_caller_t *mizan_caller_anonymous(void)
{
    return &anonymous;
}

mizan_caller_t *mizan_caller_new(mizan_token_claims_t *claims)
{
    mizan_caller_t *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        mizan_token_claims_deinit(claims);
        return NULL;
    }
    atomic_init(&c->refs, 1);
    c->claims = *claims;
    memset(claims, 0, sizeof(*claims));
    mizan_token_claims_identity(&c->claims, &c->id);
    return c;
}

int mizan_caller_keep_token(mizan_caller_t *c, const char *token, size_t len)
{
    if (c == NULL || c == &anonymous)
        return -1;
    free(c->token);
    c->token = strndup(token, len);
    return c->token != NULL ? 0 : -1;
}

mizan_caller_t *mizan_caller_ref(mizan_caller_t *c)
{
    if (c != NULL && c != &anonymous)
        atomic_fetch_add(&c->refs, 1);
    return c;
}

void mizan_caller_unref(mizan_caller_t *c)
{
    if (c == NULL || c == &anonymous)
        return;
    if (atomic_fetch_sub(&c->refs, 1) == 1) {
        mizan_token_claims_deinit(&c->claims);
        if (c->token != NULL) {
            memset(c->token, 0, strlen(c->token));
            free(c->token);
        }
        free(c);
    }
}
