/*
 * caller.h - who is asking: the verified identity of one request, shared by
 * the jobs it starts.
 *
 * DESIGN (threads): a caller is built on the I/O loop that verified the
 * token, then only read; its reference count is the one mutable field, so
 * workers and loops may hold and drop references concurrently.
 */
#ifndef MIZAN_CALLER_H
#define MIZAN_CALLER_H

#include <stdatomic.h>
#include <stddef.h>

#include "token.h"

/** A verified caller shared by the jobs of one request; refcounted. */
typedef struct mizan_caller {
    atomic_int refs;             /**< references; freed at zero (any thread) */
    mizan_token_claims_t claims; /**< owned strings; immutable */
    mizan_identity_t id;         /**< borrows from claims; immutable */
    char *token;                 /**< the bearer token as presented (owned, NULL if none): forwarded to
                                      upstreams that ask for it, never logged */
} mizan_caller_t;

/** The anonymous caller (static; ref/unref are no-ops on it). */
mizan_caller_t *mizan_caller_anonymous(void);

/** Wraps verified claims (stolen) in a new caller with one reference. */
mizan_caller_t *mizan_caller_new(mizan_token_claims_t *claims);

/** Keeps a copy of the presented token (len bytes) for forwarding. 0, or -1 when out of memory. */
int mizan_caller_keep_token(mizan_caller_t *c, const char *token, size_t len);

mizan_caller_t *mizan_caller_ref(mizan_caller_t *c);
void mizan_caller_unref(mizan_caller_t *c);

#endif /* MIZAN_CALLER_H */
