/*
 * cachekey.c - HMAC-SHA256 derivation of cache and revision keys
 * (PROTOCOL.md section 6; the formulas are repeated in cachekey.h).
 *
 * The messages are fed to the MAC piece by piece rather than concatenated,
 * so nothing but the canonical params text is allocated. The HMAC algorithm
 * object is fetched from OpenSSL once and shared: an EVP_MAC is immutable
 * and reference counted, and fetching it on every call costs a lookup under
 * OpenSSL's store lock on a path every context request takes.
 *
 * Keying HMAC (hashing the padded key, fetching the digest) costs far more
 * than a short message: each thread keeps one HMAC context keyed with the
 * secret of the last mizan_cachekey_t it served (known by its `id`) and
 * restarts it per MAC (EVP_MAC_init with no key keeps the key). The
 * context is freed when its thread exits.
 */
#include "cachekey.h"

#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include "jcs.h"

/* Domain labels; sizeof counts the trailing NUL, which is the "\0" the
 * formulas put after each label. */
static const char params_label[] = "mizan/v1/params";
static const char perms_label[] = "mizan/v1/perms";
static const char bundle_label[] = "mizan/v1/bundle";
static const char value_label[] = "mizan/v1/value";

/* The doc of a stored value: head, the two revisions, mid, the bundle, "}". */
static const char doc_head[] = "{\"v\":2,\"rev\":[";
static const char doc_mid[] = "],\"bundle\":";
/* Values of contexts with stale_s carry their freshness deadline (unix ms):
 * {"v":2,"rev":[..],"fresh":<ms>,"bundle":..}. */
static const char doc_fresh[] = "],\"fresh\":";
static const char doc_fresh_mid[] = ",\"bundle\":";

/* The shared HMAC algorithm: NULL until the first successful fetch. */
static _Atomic(EVP_MAC *) shared_mac;

/* One HMAC computation in progress. */
struct mac {
    EVP_MAC_CTX *ctx; /* NULL once finished */
    int failed;       /* an update failed; reported by mac_finish */
    bool owned;       /* ctx is this computation's (else the thread's keyed one) */
};

/* A thread's keyed HMAC context. */
typedef struct keyed {
    EVP_MAC_CTX *ctx;  /* keyed with the secret of key `id`, or NULL */
    unsigned long id;  /* mizan_cachekey_t.id it was keyed for */
    bool busy;         /* a computation is using it */
} keyed_t;

static pthread_key_t keyed_slot;
static pthread_once_t keyed_once = PTHREAD_ONCE_INIT;
static bool keyed_ok;
/* The same pointer as the slot's, where the leak checker sees it while the thread lives. */
static _Thread_local keyed_t *thread_keyed;
/* Ids handed to mizan_cachekey_init(); 0 is never one. */
static atomic_ulong next_id = 1;

static void keyed_free(void *p)
{
    keyed_t *t = p;
    EVP_MAC_CTX_free(t->ctx);
    free(t);
}

static void keyed_setup(void)
{
    keyed_ok = pthread_key_create(&keyed_slot, keyed_free) == 0;
}

/* ------------------------------------------------------------------------ */
/* HMAC                                                                     */
/* ------------------------------------------------------------------------ */

/* The shared HMAC algorithm, fetched on first use. NULL when OpenSSL cannot
 * provide it (out of memory); a later call tries again. */
static EVP_MAC *hmac_algorithm(void)
{
    EVP_MAC *mac = atomic_load_explicit(&shared_mac, memory_order_acquire);
    if (mac != NULL)
        return mac;
    EVP_MAC *fresh = EVP_MAC_fetch(NULL, OSSL_MAC_NAME_HMAC, NULL);
    if (fresh == NULL)
        return NULL;
    EVP_MAC *expected = NULL;
    if (atomic_compare_exchange_strong_explicit(&shared_mac, &expected, fresh,
                                                memory_order_acq_rel, memory_order_acquire))
        return fresh;
    /* Another thread published one first; use it and drop ours. */
    EVP_MAC_free(fresh);
    return expected;
}

/* A new HMAC-SHA256 context keyed with k's secret, or NULL. */
static EVP_MAC_CTX *keyed_new(const mizan_cachekey_t *k)
{
    EVP_MAC *alg = hmac_algorithm();
    EVP_MAC_CTX *ctx = alg != NULL ? EVP_MAC_CTX_new(alg) : NULL;
    if (ctx == NULL)
        return NULL;
    char digest[] = "SHA256";
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
        OSSL_PARAM_construct_end(),
    };
    if (EVP_MAC_init(ctx, k->secret, k->secret_len, params) != 1) {
        EVP_MAC_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

/* The calling thread's context keyed for k, restarted; NULL when there is none to lend. */
static EVP_MAC_CTX *keyed_take(const mizan_cachekey_t *k)
{
    pthread_once(&keyed_once, keyed_setup);
    if (!keyed_ok || k->id == 0)
        return NULL;
    keyed_t *t = thread_keyed;
    if (t == NULL) {
        if ((t = calloc(1, sizeof(*t))) == NULL)
            return NULL;
        if (pthread_setspecific(keyed_slot, t) != 0) {
            free(t);
            return NULL;
        }
        thread_keyed = t;
    }
    if (t->busy)
        return NULL;
    if (t->ctx != NULL && t->id == k->id && EVP_MAC_init(t->ctx, NULL, 0, NULL) == 1) {
        t->busy = true;
        return t->ctx;
    }
    EVP_MAC_CTX_free(t->ctx);
    t->ctx = keyed_new(k);
    t->id = t->ctx != NULL ? k->id : 0;
    if (t->ctx == NULL)
        return NULL;
    t->busy = true;
    return t->ctx;
}

static int mac_begin(struct mac *m, const mizan_cachekey_t *k, mizan_err_t *err)
{
    m->failed = 0;
    m->owned = false;
    if ((m->ctx = keyed_take(k)) != NULL)
        return 0;
    m->owned = true;
    if ((m->ctx = keyed_new(k)) == NULL)
        return mizan_err_set(err, "cache key: HMAC-SHA256 initialization failed");
    return 0;
}

/* Lets go of m's context. */
static void mac_release(struct mac *m)
{
    if (m->owned)
        EVP_MAC_CTX_free(m->ctx);
    else if (thread_keyed != NULL)
        thread_keyed->busy = false;
    m->ctx = NULL;
}

static void mac_update(struct mac *m, const void *p, size_t n)
{
    if (!m->failed && n > 0 && EVP_MAC_update(m->ctx, p, n) != 1)
        m->failed = 1;
}

static void mac_update_str(struct mac *m, const char *s)
{
    mac_update(m, s, strlen(s));
}

/* Finishes the MAC into 64 lowercase hex digits and a NUL; frees the
 * context whatever happens. */
static int mac_finish(struct mac *m, char out[MIZAN_DIGEST_HEX_LEN + 1], mizan_err_t *err)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char md[EVP_MAX_MD_SIZE];
    size_t md_len = 0;
    int ok = !m->failed && EVP_MAC_final(m->ctx, md, &md_len, sizeof(md)) == 1 &&
             md_len * 2 == MIZAN_DIGEST_HEX_LEN;
    mac_release(m);
    if (!ok)
        return mizan_err_set(err, "cache key: HMAC-SHA256 failed");
    for (size_t i = 0; i < md_len; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 0xF];
    }
    out[MIZAN_DIGEST_HEX_LEN] = '\0';
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Helpers                                                                  */
/* ------------------------------------------------------------------------ */

/*
 * A context name goes inside the Redis Cluster hash tag "{C}", so it must
 * be non-empty and free of braces for the tag to cover exactly it. Names
 * the registry accepts always qualify; this guards against misuse.
 */
static int check_context(const char *context, mizan_err_t *err)
{
    if (context == NULL || context[0] == '\0')
        return mizan_err_set(err, "cache key: empty context name");
    if (strpbrk(context, "{}") != NULL)
        return mizan_err_set(err, "cache key: context name contains a brace");
    return 0;
}

/* snprintf into out, failing when the text does not fit. */
__attribute__((format(printf, 4, 5))) static int put(char *out, size_t outlen, mizan_err_t *err,
                                                     const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out, outlen, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= outlen) {
        if (outlen > 0)
            out[0] = '\0';
        return mizan_err_set(err, "cache key: output buffer too small (%d bytes needed)", n + 1);
    }
    return 0;
}

/* qsort comparator for perms: bytewise, as strcmp compares unsigned chars. */
static int perm_cmp(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* HMAC(K, label "\0" C "\0" jcs(P) [ "\0" scope ]) as hex: the params digest
 * when scope is NULL, the bundle digest otherwise. */
static int params_mac(const mizan_cachekey_t *k, const char *label, size_t label_size,
                      const char *context, const json_t *params, const char *scope,
                      char out[MIZAN_DIGEST_HEX_LEN + 1], mizan_err_t *err)
{
    int rc = -1;
    struct mac m = {NULL, 0, false};
    size_t text_len = 0;
    char *text = NULL;

    if (check_context(context, err) < 0)
        goto done;
    text = mizan_jcs_dump(params, &text_len, err);
    if (text == NULL)
        goto done;
    if (mac_begin(&m, k, err) < 0)
        goto done;
    mac_update(&m, label, label_size);
    mac_update(&m, context, strlen(context) + 1); /* with its NUL: the "\0" after C */
    mac_update(&m, text, text_len);
    if (scope != NULL) {
        mac_update(&m, "", 1); /* the "\0" before the scope */
        mac_update_str(&m, scope);
    }
    rc = mac_finish(&m, out, err);
done:
    free(text);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Public functions                                                         */
/* ------------------------------------------------------------------------ */

int mizan_cachekey_init(mizan_cachekey_t *k, const unsigned char *secret, size_t len,
                        const char *prefix, mizan_err_t *err)
{
    memset(k, 0, sizeof(*k));
    if (prefix == NULL)
        prefix = MIZAN_CACHEKEY_DEFAULT_PREFIX;
    if (secret == NULL || len < MIZAN_CACHEKEY_SECRET_MIN)
        return mizan_err_set(err, "cache key secret must be at least %d bytes (got %zu)",
                             MIZAN_CACHEKEY_SECRET_MIN, secret == NULL ? (size_t)0 : len);
    if (len > MIZAN_CACHEKEY_SECRET_MAX)
        return mizan_err_set(err, "cache key secret must be at most %d bytes (got %zu)",
                             MIZAN_CACHEKEY_SECRET_MAX, len);
    size_t plen = strlen(prefix);
    if (plen > MIZAN_CACHEKEY_PREFIX_MAX)
        return mizan_err_set(err, "cache key prefix must be at most %d bytes (got %zu)",
                             MIZAN_CACHEKEY_PREFIX_MAX, plen);
    memcpy(k->secret, secret, len);
    k->secret_len = len;
    memcpy(k->prefix, prefix, plen + 1);
    k->id = atomic_fetch_add(&next_id, 1);
    return 0;
}

void mizan_cachekey_deinit(mizan_cachekey_t *k)
{
    if (k != NULL)
        OPENSSL_cleanse(k, sizeof(*k));
}

int mizan_cachekey_params_digest(const mizan_cachekey_t *k, const char *context,
                                 const json_t *params, char out[MIZAN_DIGEST_HEX_LEN + 1],
                                 mizan_err_t *err)
{
    return params_mac(k, params_label, sizeof(params_label), context, params, NULL, out, err);
}

int mizan_cachekey_perm_key(const mizan_cachekey_t *k, bool staff, bool superuser,
                            const char *const *perms, size_t nperms,
                            char out[MIZAN_DIGEST_HEX_LEN + 1], mizan_err_t *err)
{
    int rc = -1;
    struct mac m = {NULL, 0, false};
    const char **sorted = NULL;

    if (nperms > 0) {
        if (perms == NULL) {
            mizan_err_set(err, "perm key: no perms array");
            goto done;
        }
        sorted = malloc(nperms * sizeof(*sorted));
        if (sorted == NULL) {
            mizan_err_set(err, "perm key: out of memory");
            goto done;
        }
        for (size_t i = 0; i < nperms; i++) {
            if (perms[i] == NULL) {
                mizan_err_set(err, "perm key: perm %zu is missing", i);
                goto done;
            }
            if (strchr(perms[i], '\n') != NULL) {
                mizan_err_set(err, "perm key: perm %zu contains a newline", i);
                goto done;
            }
            sorted[i] = perms[i];
        }
        qsort(sorted, nperms, sizeof(*sorted), perm_cmp);
    }

    if (mac_begin(&m, k, err) < 0)
        goto done;
    mac_update(&m, perms_label, sizeof(perms_label));
    mac_update_str(&m, staff ? "staff=1\n" : "staff=0\n");
    mac_update_str(&m, superuser ? "superuser=1\n" : "superuser=0\n");
    for (size_t i = 0; i < nperms; i++) {
        if (i > 0 && strcmp(sorted[i], sorted[i - 1]) == 0)
            continue;
        mac_update_str(&m, sorted[i]);
        mac_update(&m, "\n", 1);
    }
    rc = mac_finish(&m, out, err);
done:
    free(sorted);
    return rc;
}

int mizan_cachekey_scope(const mizan_cachekey_t *k, mizan_scope_t scope,
                         const mizan_identity_t *id, char *out, size_t outlen, mizan_err_t *err)
{
    char pk[MIZAN_DIGEST_HEX_LEN + 1];
    switch (scope) {
    case MIZAN_SCOPE_PUBLIC:
        if (outlen < sizeof("public"))
            return put(out, outlen, err, "public");
        memcpy(out, "public", sizeof("public"));
        return 0;
    case MIZAN_SCOPE_USER:
        /* One sub AND one permission set: a down-scoped token of the same
         * sub must not be served what a fuller token computed. */
        if (id == NULL || id->sub == NULL || id->sub[0] == '\0')
            return mizan_err_set(err, "cache scope: user scope needs an authenticated caller");
        if (mizan_cachekey_perm_key(k, id->staff, id->superuser, id->perms, id->nperms, pk, err) < 0)
            return -1;
        return put(out, outlen, err, "user:%s:%s", id->sub, pk);
    case MIZAN_SCOPE_PERMS:
        if (id == NULL) {
            /* An anonymous caller: no staff, no superuser, no perms. */
            if (mizan_cachekey_perm_key(k, false, false, NULL, 0, pk, err) < 0)
                return -1;
        } else if (mizan_cachekey_perm_key(k, id->staff, id->superuser, id->perms, id->nperms, pk,
                                           err) < 0) {
            return -1;
        }
        return put(out, outlen, err, "perms:%s", pk);
    }
    return mizan_err_set(err, "cache scope: unknown scope %d", (int)scope);
}

int mizan_cachekey_bundle(const mizan_cachekey_t *k, const char *context, const json_t *params,
                          const char *scope, char *out, size_t outlen, mizan_err_t *err)
{
    char digest[MIZAN_DIGEST_HEX_LEN + 1];
    if (scope == NULL)
        return mizan_err_set(err, "cache key: missing scope");
    if (params_mac(k, bundle_label, sizeof(bundle_label), context, params, scope, digest, err) < 0)
        return -1;
    return put(out, outlen, err, "%sctx:{%s}:%s", k->prefix, context, digest);
}

int mizan_cachekey_context_rev(const mizan_cachekey_t *k, const char *context, char *out,
                               size_t outlen, mizan_err_t *err)
{
    if (check_context(context, err) < 0)
        return -1;
    return put(out, outlen, err, "%srev:{%s}", k->prefix, context);
}

int mizan_cachekey_scoped_rev(const mizan_cachekey_t *k, const char *context,
                              const json_t *params, char *out, size_t outlen, mizan_err_t *err)
{
    char digest[MIZAN_DIGEST_HEX_LEN + 1];
    if (mizan_cachekey_params_digest(k, context, params, digest, err) < 0)
        return -1;
    return put(out, outlen, err, "%srev:{%s}:%s", k->prefix, context, digest);
}

/* ------------------------------------------------------------------------ */
/* Stored values                                                            */
/* ------------------------------------------------------------------------ */

int mizan_cachekey_value_mac(const mizan_cachekey_t *k, const char *bundle_key, const char *doc,
                             size_t doc_len, char out[MIZAN_DIGEST_HEX_LEN + 1], mizan_err_t *err)
{
    struct mac m = {NULL, 0, false};
    if (bundle_key == NULL || doc == NULL)
        return mizan_err_set(err, "cache value: missing key or doc");
    if (mac_begin(&m, k, err) < 0)
        return -1;
    mac_update(&m, value_label, sizeof(value_label));
    mac_update(&m, bundle_key, strlen(bundle_key) + 1); /* with its NUL: the "\0" after the key */
    mac_update(&m, doc, doc_len);
    return mac_finish(&m, out, err);
}

char *mizan_cachekey_value_seal(const mizan_cachekey_t *k, const char *bundle_key, const long long rev[2],
                                const char *body, size_t body_len, size_t *len, mizan_err_t *err)
{
    return mizan_cachekey_value_seal_fresh(k, bundle_key, rev, 0, body, body_len, len, err);
}

char *mizan_cachekey_value_seal_fresh(const mizan_cachekey_t *k, const char *bundle_key, const long long rev[2],
                                      long long fresh_until_ms, const char *body, size_t body_len, size_t *len,
                                      mizan_err_t *err)
{
    /* revs is what goes between "rev":[ and "bundle": (the fresh field
     * included), doc_mid what follows it. */
    char revs[96];
    int rlen = fresh_until_ms > 0 ? snprintf(revs, sizeof(revs), "%lld,%lld%s%lld", rev[0], rev[1], doc_fresh,
                                             fresh_until_ms)
                                  : snprintf(revs, sizeof(revs), "%lld,%lld", rev[0], rev[1]);
    if (rlen < 0 || (size_t)rlen >= sizeof(revs)) {
        mizan_err_set(err, "cache value: bad revisions");
        return NULL;
    }
    const char *mid = fresh_until_ms > 0 ? doc_fresh_mid : doc_mid;
    size_t mid_len = strlen(mid);
    size_t doc_len = sizeof(doc_head) - 1 + (size_t)rlen + mid_len + body_len + 1;
    size_t total = MIZAN_DIGEST_HEX_LEN + 1 + doc_len;
    char *v = malloc(total + 1);
    if (v == NULL) {
        mizan_err_set(err, "cache value: out of memory");
        return NULL;
    }
    char *doc = v + MIZAN_DIGEST_HEX_LEN + 1, *p = doc;
    memcpy(p, doc_head, sizeof(doc_head) - 1);
    p += sizeof(doc_head) - 1;
    memcpy(p, revs, (size_t)rlen);
    p += rlen;
    memcpy(p, mid, mid_len);
    p += mid_len;
    memcpy(p, body, body_len);
    p += body_len;
    *p++ = '}';
    *p = '\0';
    char mac[MIZAN_DIGEST_HEX_LEN + 1];
    if (mizan_cachekey_value_mac(k, bundle_key, doc, doc_len, mac, err) < 0) {
        free(v);
        return NULL;
    }
    memcpy(v, mac, MIZAN_DIGEST_HEX_LEN);
    v[MIZAN_DIGEST_HEX_LEN] = '\n';
    if (len != NULL)
        *len = total;
    return v;
}

/* A revision in the doc as "%lld" prints it (a revision key someone set by
 * hand may have gone negative). */
static const char *parse_rev(const char *p, const char *end, long long *out)
{
    long long n = 0;
    bool neg = p < end && *p == '-';
    if (neg)
        p++;
    const char *start = p;
    while (p < end && *p >= '0' && *p <= '9') {
        if (n > (LLONG_MAX - (*p - '0')) / 10)
            return NULL;
        n = n * 10 + (*p - '0');
        p++;
    }
    if (p == start || (p - start > 1 && *start == '0'))
        return NULL;
    *out = neg ? -n : n;
    return p;
}

int mizan_cachekey_value_open(const mizan_cachekey_t *k, const char *bundle_key, const char *value, size_t len,
                              long long rev[2], const char **body, size_t *body_len, mizan_err_t *err)
{
    return mizan_cachekey_value_open_fresh(k, bundle_key, value, len, rev, NULL, body, body_len, err);
}

int mizan_cachekey_value_open_fresh(const mizan_cachekey_t *k, const char *bundle_key, const char *value, size_t len,
                                    long long rev[2], long long *fresh_until_ms, const char **body, size_t *body_len,
                                    mizan_err_t *err)
{
    if (fresh_until_ms != NULL)
        *fresh_until_ms = 0;
    if (value == NULL || len < MIZAN_DIGEST_HEX_LEN + 1 || value[MIZAN_DIGEST_HEX_LEN] != '\n')
        return mizan_err_set(err, "cache value: not an authenticated value");
    const char *doc = value + MIZAN_DIGEST_HEX_LEN + 1;
    size_t doc_len = len - MIZAN_DIGEST_HEX_LEN - 1;
    char mac[MIZAN_DIGEST_HEX_LEN + 1];
    if (mizan_cachekey_value_mac(k, bundle_key, doc, doc_len, mac, err) < 0)
        return -1;
    /* Constant time: how much of a forged mac matched must not leak. */
    if (CRYPTO_memcmp(mac, value, MIZAN_DIGEST_HEX_LEN) != 0)
        return mizan_err_set(err, "cache value: mac does not verify");
    return mizan_cachekey_value_read_fresh(value, len, rev, fresh_until_ms, body, body_len, err);
}

int mizan_cachekey_value_read_fresh(const char *value, size_t len, long long rev[2], long long *fresh_until_ms,
                                    const char **body, size_t *body_len, mizan_err_t *err)
{
    if (fresh_until_ms != NULL)
        *fresh_until_ms = 0;
    if (value == NULL || len < MIZAN_DIGEST_HEX_LEN + 1 || value[MIZAN_DIGEST_HEX_LEN] != '\n')
        return mizan_err_set(err, "cache value: not an authenticated value");
    const char *doc = value + MIZAN_DIGEST_HEX_LEN + 1;
    size_t doc_len = len - MIZAN_DIGEST_HEX_LEN - 1;
    /* The gateway wrote exactly this shape, so it is read without a JSON
     * parse (after a verified mac, a mismatch is a bug, not an attack). */
    const char *end = doc + doc_len, *p = doc;
    if (doc_len < sizeof(doc_head) + sizeof(doc_mid) || memcmp(p, doc_head, sizeof(doc_head) - 1) != 0 ||
        end[-1] != '}')
        return mizan_err_set(err, "cache value: unknown doc shape");
    p += sizeof(doc_head) - 1;
    if ((p = parse_rev(p, end, &rev[0])) == NULL || p >= end || *p++ != ',' ||
        (p = parse_rev(p, end, &rev[1])) == NULL)
        return mizan_err_set(err, "cache value: unknown doc shape");
    long long fresh = 0;
    if ((size_t)(end - p) >= sizeof(doc_fresh) && memcmp(p, doc_fresh, sizeof(doc_fresh) - 1) == 0) {
        p += sizeof(doc_fresh) - 1;
        if ((p = parse_rev(p, end, &fresh)) == NULL || fresh <= 0 || (size_t)(end - p) < sizeof(doc_fresh_mid) ||
            memcmp(p, doc_fresh_mid, sizeof(doc_fresh_mid) - 1) != 0)
            return mizan_err_set(err, "cache value: unknown doc shape");
        p += sizeof(doc_fresh_mid) - 1;
    } else {
        if ((size_t)(end - p) < sizeof(doc_mid) || memcmp(p, doc_mid, sizeof(doc_mid) - 1) != 0)
            return mizan_err_set(err, "cache value: unknown doc shape");
        p += sizeof(doc_mid) - 1;
    }
    if (fresh_until_ms != NULL)
        *fresh_until_ms = fresh;
    if (p >= end - 1 || *p != '{')
        return mizan_err_set(err, "cache value: unknown doc shape");
    *body = p;
    *body_len = (size_t)(end - 1 - p);
    return 0;
}
