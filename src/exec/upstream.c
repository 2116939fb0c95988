/*
 * upstream.c - upstream functions at start-up: reading and checking the
 * config's "upstreams", "functions" and "contexts" sections, registering
 * them into the registry through an internal module named "config", and
 * RFC 6901 JSON Pointers (which part of an upstream's answer becomes the
 * result). The run-time client is upstream_client.c; the format is
 * documented in docs/upstream.md.
 *
 * Every check here names the config file and the field, like config.c, so
 * a typo stops start-up with a message that says where and how to fix it.
 * Everything built here is immutable once the loops run, apart from the
 * per-upstream atomics (breaker, counters).
 */
#include "upstream.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include <event2/http.h>

#include "auth.h"
#include "log.h"

/* The internal module every config declaration belongs to (registry errors
 * name it, e.g. "registered twice (modules blog and config)"). */
static char config_module_name[] = "config";

/* Headers the gateway writes itself; a configured header may not set them. */
static const char *const reserved_headers[] = {
    "Host",    "Content-Length", "Content-Type", "Transfer-Encoding", "Connection", "Keep-Alive",
    "Upgrade", "TE",             "Trailer",      "Proxy-Connection",  "Expect",     NULL,
};

/* ---- JSON Pointer (RFC 6901) -------------------------------------------- */

void mizan_json_pointer_deinit(mizan_json_pointer_t *p)
{
    if (p == NULL)
        return;
    for (size_t i = 0; i < p->ntokens; i++)
        free(p->tokens[i]);
    free(p->tokens);
    free(p->lens);
    memset(p, 0, sizeof(*p));
}

int mizan_json_pointer_parse(const char *text, size_t len, mizan_json_pointer_t *out, mizan_err_t *err)
{
    memset(out, 0, sizeof(*out));
    if (len == 0)
        return 0;
    if (text[0] != '/')
        return mizan_err_set(err, "a JSON Pointer is empty (the whole document) or starts with '/'");
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        n += text[i] == '/';
    out->tokens = calloc(n, sizeof(*out->tokens));
    out->lens = calloc(n, sizeof(*out->lens));
    if (out->tokens == NULL || out->lens == NULL) {
        mizan_json_pointer_deinit(out);
        return mizan_err_set(err, "out of memory");
    }
    size_t pos = 1;
    for (size_t t = 0; t < n; t++) {
        size_t end = pos;
        while (end < len && text[end] != '/')
            end++;
        char *tok = malloc(end - pos + 1);
        if (tok == NULL) {
            mizan_json_pointer_deinit(out);
            return mizan_err_set(err, "out of memory");
        }
        out->tokens[t] = tok;
        out->ntokens = t + 1;
        size_t k = 0;
        for (size_t i = pos; i < end; i++) {
            if (text[i] != '~') {
                tok[k++] = text[i];
                continue;
            }
            if (i + 1 < end && (text[i + 1] == '0' || text[i + 1] == '1')) {
                tok[k++] = text[i + 1] == '0' ? '~' : '/';
                i++;
                continue;
            }
            mizan_json_pointer_deinit(out);
            return mizan_err_set(err, "in a JSON Pointer '~' must be followed by 0 (for '~') or 1 (for '/')");
        }
        tok[k] = '\0';
        out->lens[t] = k;
        pos = end + 1;
    }
    return 0;
}

/* An array index token: "0" or digits without a leading zero, within size. */
static bool array_index(const char *tok, size_t len, size_t size, size_t *index)
{
    if (len == 0 || len > 19 || (len > 1 && tok[0] == '0'))
        return false;
    unsigned long long v = 0;
    for (size_t i = 0; i < len; i++) {
        if (tok[i] < '0' || tok[i] > '9')
            return false;
        v = v * 10 + (unsigned long long)(tok[i] - '0');
    }
    if (v >= size)
        return false;
    *index = (size_t)v;
    return true;
}

json_t *mizan_json_pointer_get(const mizan_json_pointer_t *p, const json_t *doc)
{
    json_t *cur = (json_t *)doc;
    for (size_t i = 0; cur != NULL && i < p->ntokens; i++) {
        size_t index;
        if (json_is_object(cur))
            cur = json_object_getn(cur, p->tokens[i], p->lens[i]);
        else if (json_is_array(cur) && array_index(p->tokens[i], p->lens[i], json_array_size(cur), &index))
            cur = json_array_get(cur, index);
        else
            cur = NULL;
    }
    return cur;
}

/* ---- small checks --------------------------------------------------------- */

static bool in_list(const char *name, const char *const *list)
{
    for (; *list != NULL; list++)
        if (strcmp(*list, name) == 0)
            return true;
    return false;
}

/* Rejects members of obj (borrowed) not named in allowed (NULL-terminated). */
static int check_members(const char *file, const char *where, const json_t *obj, const char *const *allowed,
                         mizan_err_t *err)
{
    const char *key;
    json_t *value;
    json_object_foreach((json_t *)obj, key, value)
    {
        (void)value;
        if (!in_list(key, allowed))
            return mizan_err_set(err, "%s: unknown field \"%s%s\" (check the spelling; see docs/upstream.md)", file,
                                 where, key);
    }
    return 0;
}

/* Reads an optional integer member of obj (borrowed) within [min, max] (dflt when absent). */
static int read_int(const char *file, const char *where, const json_t *obj, const char *key, long long min,
                    long long max, long long dflt, long long *out, mizan_err_t *err)
{
    json_t *v = json_object_get(obj, key);
    if (v == NULL) {
        *out = dflt;
        return 0;
    }
    if (!json_is_integer(v) || json_integer_value(v) < min || json_integer_value(v) > max)
        return mizan_err_set(err, "%s: field \"%s%s\" must be an integer in %lld..%lld", file, where, key, min, max);
    *out = json_integer_value(v);
    return 0;
}

static bool valid_header_name(const char *s)
{
    if (s == NULL || s[0] == '\0' || strlen(s) > 128)
        return false;
    for (const char *p = s; *p; p++)
        if (!(isalnum((unsigned char)*p) || strchr("!#$%&'*+-.^_`|~", *p) != NULL))
            return false;
    return true;
}

static bool valid_header_value(const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if ((*p < 0x20 && *p != '\t') || *p == 0x7f)
            return false;
    return true;
}

static bool valid_arg_name(const char *s, size_t n)
{
    if (n == 0 || !(isalpha((unsigned char)s[0]) || s[0] == '_'))
        return false;
    for (size_t i = 1; i < n; i++)
        if (!(isalnum((unsigned char)s[i]) || s[i] == '_'))
            return false;
    return true;
}

/* A character allowed literally in a path template (RFC 3986 pchar or '/'). */
static bool path_char(char c)
{
    return isalnum((unsigned char)c) || strchr("-._~!$&'()*+,;=:@/%", c) != NULL;
}

static void free_headers(mizan_upstream_header_t *h, size_t n)
{
    for (size_t i = 0; h != NULL && i < n; i++) {
        free(h[i].name);
        free(h[i].value);
    }
    free(h);
}

static void free_strv(char **v, size_t n)
{
    for (size_t i = 0; v != NULL && i < n; i++)
        free(v[i]);
    free(v);
}

/* ---- upstreams -------------------------------------------------------------- */

/* True when name is one of up's identity headers or (with forward_token) Authorization. */
static bool identity_header(const mizan_upstream_t *up, const char *name)
{
    const char *ids[] = {up->sub_header, up->staff_header, up->superuser_header, up->perms_header};
    for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++)
        if (ids[i] != NULL && strcasecmp(ids[i], name) == 0)
            return true;
    return up->forward_token && strcasecmp(name, "Authorization") == 0;
}

/*
 * Reads a "headers" object into a new array. up (may be NULL while the
 * upstream's own identity names are not known yet) refuses its identity
 * header names.
 */
static int read_headers(const char *file, const char *where, const json_t *obj, const mizan_upstream_t *up,
                        mizan_upstream_header_t **out, size_t *nout, mizan_err_t *err)
{
    *out = NULL;
    *nout = 0;
    if (obj == NULL)
        return 0;
    if (!json_is_object(obj))
        return mizan_err_set(err, "%s: field \"%s\" must be an object of header names to string values", file,
                             where);
    mizan_upstream_header_t *h = calloc(json_object_size(obj) + 1, sizeof(*h));
    if (h == NULL)
        return mizan_err_set(err, "out of memory");
    *out = h;
    const char *key;
    json_t *value;
    json_object_foreach((json_t *)obj, key, value)
    {
        if (!valid_header_name(key))
            return mizan_err_set(err, "%s: field \"%s\": \"%s\" is not a valid header name", file, where, key);
        for (size_t i = 0; reserved_headers[i] != NULL; i++)
            if (strcasecmp(reserved_headers[i], key) == 0)
                return mizan_err_set(err, "%s: field \"%s\": header \"%s\" is set by the gateway itself", file,
                                     where, key);
        if (up != NULL && identity_header(up, key))
            return mizan_err_set(err,
                                 "%s: field \"%s\": header \"%s\" carries the caller's identity and cannot be set "
                                 "in the config",
                                 file, where, key);
        if (!json_is_string(value) || !valid_header_value(json_string_value(value)))
            return mizan_err_set(err, "%s: field \"%s.%s\" must be a string without control characters", file,
                                 where, key);
        h[*nout].name = strdup(key);
        h[*nout].value = strdup(json_string_value(value));
        (*nout)++;
        if (h[*nout - 1].name == NULL || h[*nout - 1].value == NULL)
            return mizan_err_set(err, "out of memory");
    }
    return 0;
}

/* One identity header name: member key of "identity" (ident borrowed; absent: dflt; false or
 * null: not sent). */
static int identity_name(const char *file, const char *where, const json_t *ident, const char *key,
                         const char *dflt, char **out, mizan_err_t *err)
{
    json_t *v = json_is_object(ident) ? json_object_get(ident, key) : NULL;
    const char *name = dflt;
    if (json_is_false(ident)) {
        name = NULL;
    } else if (v != NULL) {
        if (json_is_false(v) || json_is_null(v))
            name = NULL;
        else if (json_is_string(v) && valid_header_name(json_string_value(v)))
            name = json_string_value(v);
        else
            return mizan_err_set(err, "%s: field \"%sidentity.%s\" must be a header name, or false to not send it",
                                 file, where, key);
    }
    if (name != NULL) {
        for (size_t i = 0; reserved_headers[i] != NULL; i++)
            if (strcasecmp(reserved_headers[i], name) == 0 || strcasecmp(name, "Authorization") == 0)
                return mizan_err_set(err, "%s: field \"%sidentity.%s\": \"%s\" cannot carry the identity", file,
                                     where, key, name);
        if ((*out = strdup(name)) == NULL)
            return mizan_err_set(err, "out of memory");
    }
    return 0;
}

/* Resolves host to a numeric address (IPv4 preferred), once, at start-up. */
static int resolve(const char *file, const char *where, const char *host, char **out, mizan_err_t *err)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(host, NULL, &hints, &res);
    if (rc != 0)
        return mizan_err_set(err, "%s: field \"%surl\": cannot resolve \"%s\": %s", file, where, host,
                             gai_strerror(rc));
    const struct addrinfo *pick = NULL;
    for (const struct addrinfo *a = res; a != NULL; a = a->ai_next)
        if (a->ai_family == AF_INET && pick == NULL)
            pick = a;
    for (const struct addrinfo *a = res; a != NULL && pick == NULL; a = a->ai_next)
        if (a->ai_family == AF_INET6)
            pick = a;
    char buf[INET6_ADDRSTRLEN] = "";
    if (pick != NULL) {
        const void *addr = pick->ai_family == AF_INET
                               ? (const void *)&((const struct sockaddr_in *)pick->ai_addr)->sin_addr
                               : (const void *)&((const struct sockaddr_in6 *)pick->ai_addr)->sin6_addr;
        inet_ntop(pick->ai_family, addr, buf, sizeof(buf));
    }
    freeaddrinfo(res);
    if (buf[0] == '\0')
        return mizan_err_set(err, "%s: field \"%surl\": \"%s\" has no IPv4 or IPv6 address", file, where, host);
    if ((*out = strdup(buf)) == NULL)
        return mizan_err_set(err, "out of memory");
    return 0;
}

/* Parses "http://host[:port][/base]" (v borrowed) into up. */
static int read_url(const char *file, const char *where, const json_t *v, mizan_upstream_t *up, mizan_err_t *err)
{
    if (!json_is_string(v))
        return mizan_err_set(err, "%s: field \"%surl\" is required: the service's base URL, e.g. "
                                  "\"http://127.0.0.1:8081\"",
                             file, where);
    const char *text = json_string_value(v);
    struct evhttp_uri *uri = evhttp_uri_parse_with_flags(text, 0);
    int rc = -1;
    if (uri == NULL) {
        mizan_err_set(err, "%s: field \"%surl\": \"%s\" is not a valid URL", file, where, text);
        goto done;
    }
    const char *scheme = evhttp_uri_get_scheme(uri), *host = evhttp_uri_get_host(uri);
    const char *path = evhttp_uri_get_path(uri);
    if (scheme != NULL && strcasecmp(scheme, "https") == 0) {
        mizan_err_set(err, "%s: field \"%surl\": https upstreams are not supported; reach the service over plain "
                           "http on a private network, or through a local TLS-terminating proxy",
                      file, where);
        goto done;
    }
    if (scheme == NULL || strcasecmp(scheme, "http") != 0 || host == NULL || host[0] == '\0' ||
        evhttp_uri_get_userinfo(uri) != NULL || evhttp_uri_get_query(uri) != NULL ||
        evhttp_uri_get_fragment(uri) != NULL) {
        mizan_err_set(err, "%s: field \"%surl\" must be http://host[:port][/base/path] without user, query or "
                           "fragment (got \"%s\")",
                      file, where, text);
        goto done;
    }
    int port = evhttp_uri_get_port(uri);
    if (port == 0 || port > 65535) {
        mizan_err_set(err, "%s: field \"%surl\": port must be 1..65535", file, where);
        goto done;
    }
    up->port = port > 0 ? port : 80;
    int n = port > 0 && port != 80 ? asprintf(&up->host_header, "%s:%d", host, port)
                                   : asprintf(&up->host_header, "%s", host);
    if (n < 0) {
        up->host_header = NULL;
        mizan_err_set(err, "out of memory");
        goto done;
    }
    size_t hlen = strlen(host);
    char *bare = host[0] == '[' && hlen >= 2 ? strndup(host + 1, hlen - 2) : strdup(host);
    if (bare == NULL) {
        mizan_err_set(err, "out of memory");
        goto done;
    }
    int r = resolve(file, where, bare, &up->address, err);
    free(bare);
    if (r < 0)
        goto done;
    size_t plen = path != NULL ? strlen(path) : 0;
    while (plen > 0 && path[plen - 1] == '/')
        plen--;
    for (size_t i = 0; i < plen; i++)
        if (!path_char(path[i])) {
            mizan_err_set(err, "%s: field \"%surl\": the base path holds a character that must be percent-encoded",
                          file, where);
            goto done;
        }
    if ((up->base_path = strndup(plen > 0 ? path : "", plen)) == NULL) {
        mizan_err_set(err, "out of memory");
        goto done;
    }
    rc = 0;
done:
    if (uri != NULL)
        evhttp_uri_free(uri);
    return rc;
}

static void upstream_free(mizan_upstream_t *up)
{
    if (up == NULL)
        return;
    free(up->name);
    free(up->address);
    free(up->host_header);
    free(up->base_path);
    free_headers(up->headers, up->nheaders);
    free(up->sub_header);
    free(up->staff_header);
    free(up->superuser_header);
    free(up->perms_header);
    free(up);
}

static int read_upstream(const mizan_config_t *cfg, const char *name, const json_t *obj, mizan_upstream_t *up,
                         mizan_err_t *err)
{
    static const char *const allowed[] = {"url",      "timeout_ms",     "connect_timeout_ms", "idle_timeout_ms",
                                          "pool_size", "queue_size",    "retries",            "retry_backoff_ms",
                                          "max_response_bytes", "headers", "identity",        "forward_token",
                                          "breaker",  NULL};
    static const char *const breaker_allowed[] = {"failures", "cooldown_ms", NULL};
    const char *file = cfg->file;
    char where[192];
    snprintf(where, sizeof(where), "upstreams.%s.", name);
    if (!json_is_object(obj))
        return mizan_err_set(err, "%s: field \"upstreams.%s\" must be an object with at least \"url\"", file, name);
    if (!mizan_registry_valid_name(name) || strchr(name, '.') != NULL)
        return mizan_err_set(err, "%s: upstream name \"%s\" is invalid (allowed: [A-Za-z_][A-Za-z0-9_]*)", file,
                             name);
    if (check_members(file, where, obj, allowed, err) < 0)
        return -1;
    if ((up->name = strdup(name)) == NULL)
        return mizan_err_set(err, "out of memory");
    long long v = 0;
    if (read_url(file, where, json_object_get(obj, "url"), up, err) < 0)
        return -1;
    if (read_int(file, where, obj, "timeout_ms", 1, 3600000, cfg->function_timeout_ms, &v, err) < 0)
        return -1;
    up->timeout_ms = (int)v;
    if (read_int(file, where, obj, "connect_timeout_ms", 1, 600000, 1000, &v, err) < 0)
        return -1;
    up->connect_timeout_ms = (int)v;
    if (read_int(file, where, obj, "idle_timeout_ms", 1000, 3600000, 30000, &v, err) < 0)
        return -1;
    up->idle_timeout_ms = (int)v;
    if (read_int(file, where, obj, "pool_size", 1, 4096, 16, &v, err) < 0)
        return -1;
    up->pool_size = (int)v;
    if (read_int(file, where, obj, "queue_size", 0, 1 << 20, 256, &v, err) < 0)
        return -1;
    up->queue_size = (int)v;
    if (read_int(file, where, obj, "retries", 0, 10, 1, &v, err) < 0)
        return -1;
    up->retries = (int)v;
    if (read_int(file, where, obj, "retry_backoff_ms", 0, 60000, 25, &v, err) < 0)
        return -1;
    up->retry_backoff_ms = (int)v;
    if (read_int(file, where, obj, "max_response_bytes", 1024, 1LL << 30, 8LL << 20, &v, err) < 0)
        return -1;
    up->max_response_bytes = (size_t)v;
    json_t *ft = json_object_get(obj, "forward_token");
    if (ft != NULL && !json_is_boolean(ft))
        return mizan_err_set(err, "%s: field \"%sforward_token\" must be true or false", file, where);
    up->forward_token = json_is_true(ft);
    json_t *ident = json_object_get(obj, "identity");
    if (ident != NULL && !json_is_boolean(ident) && !json_is_object(ident))
        return mizan_err_set(err,
                             "%s: field \"%sidentity\" must be true (default header names), false (send none) or "
                             "{\"sub\", \"staff\", \"superuser\", \"perms\"} header names",
                             file, where);
    if (json_is_object(ident)) {
        static const char *const ident_allowed[] = {"sub", "staff", "superuser", "perms", NULL};
        char iw[224];
        snprintf(iw, sizeof(iw), "%sidentity.", where);
        if (check_members(file, iw, ident, ident_allowed, err) < 0)
            return -1;
    }
    if (identity_name(file, where, ident, "sub", MIZAN_UPSTREAM_SUB_HEADER, &up->sub_header, err) < 0 ||
        identity_name(file, where, ident, "staff", MIZAN_UPSTREAM_STAFF_HEADER, &up->staff_header, err) < 0 ||
        identity_name(file, where, ident, "superuser", MIZAN_UPSTREAM_SUPERUSER_HEADER, &up->superuser_header,
                      err) < 0 ||
        identity_name(file, where, ident, "perms", MIZAN_UPSTREAM_PERMS_HEADER, &up->perms_header, err) < 0)
        return -1;
    char hw[288];
    snprintf(hw, sizeof(hw), "%sheaders", where);
    if (read_headers(file, hw, json_object_get(obj, "headers"), up, &up->headers, &up->nheaders, err) < 0)
        return -1;
    json_t *br = json_object_get(obj, "breaker");
    if (br != NULL && !json_is_object(br))
        return mizan_err_set(err, "%s: field \"%sbreaker\" must be {\"failures\": n, \"cooldown_ms\": ms}", file,
                             where);
    char bw[224];
    snprintf(bw, sizeof(bw), "%sbreaker.", where);
    if (br != NULL && check_members(file, bw, br, breaker_allowed, err) < 0)
        return -1;
    if (read_int(file, bw, br, "failures", 0, 1000000, 5, &v, err) < 0)
        return -1;
    up->breaker_failures = (int)v;
    if (read_int(file, bw, br, "cooldown_ms", 1, 3600000, 10000, &v, err) < 0)
        return -1;
    up->breaker_cooldown_ms = (int)v;
    atomic_init(&up->failures, 0);
    atomic_init(&up->open_until, 0);
    atomic_init(&up->probing, false);
    return 0;
}

static int read_upstreams(const mizan_config_t *cfg, mizan_upstreams_t *ups, mizan_err_t *err)
{
    const json_t *obj = cfg->upstreams;
    if (obj == NULL)
        return 0;
    if (!json_is_object(obj))
        return mizan_err_set(err, "%s: field \"upstreams\" must be an object of name -> {\"url\": ...}", cfg->file);
    ups->ups = calloc(json_object_size(obj) + 1, sizeof(*ups->ups));
    if (ups->ups == NULL)
        return mizan_err_set(err, "out of memory");
    const char *name;
    json_t *value;
    json_object_foreach((json_t *)obj, name, value)
    {
        mizan_upstream_t *up = calloc(1, sizeof(*up));
        if (up == NULL)
            return mizan_err_set(err, "out of memory");
        up->index = ups->nups;
        ups->ups[ups->nups++] = up;
        if (read_upstream(cfg, name, value, up, err) < 0)
            return -1;
    }
    return 0;
}

static mizan_upstream_t *find_upstream(const mizan_upstreams_t *ups, const char *name)
{
    for (size_t i = 0; i < ups->nups; i++)
        if (strcmp(ups->ups[i]->name, name) == 0)
            return ups->ups[i];
    return NULL;
}

/* ---- functions ---------------------------------------------------------- */

static void upstream_fn_free(mizan_upstream_fn_t *s)
{
    if (s == NULL)
        return;
    for (size_t i = 0; s->segs != NULL && i < s->nsegs; i++)
        free(s->segs[i].text);
    free(s->segs);
    free_strv(s->query, s->nquery);
    free_strv(s->body, s->nbody);
    free_headers(s->headers, s->nheaders);
    mizan_json_pointer_deinit(&s->result);
    free(s->result_text);
    free(s->head);
    free(s);
}

/* True when hs[0..i) holds no header named name (case-insensitively). */
static bool first_named(const mizan_upstream_header_t *hs, size_t i, const char *name)
{
    for (size_t k = 0; k < i; k++)
        if (strcasecmp(hs[k].name, name) == 0)
            return false;
    return true;
}

/*
 * Prints the fixed part of s's request head once: " HTTP/1.1", Host,
 * Accept, then the upstream's headers and the function's own, a later
 * header replacing an earlier one of the same name (so a function's header
 * overrides its upstream's, and either may override Accept). The client
 * sends "METHOD target" + this + the per-call headers.
 */
static int build_head(mizan_upstream_fn_t *s, mizan_err_t *err)
{
    const mizan_upstream_t *up = s->up;
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (f == NULL)
        return mizan_err_set(err, "out of memory");
    fprintf(f, " HTTP/1.1\r\nHost: %s\r\n", up->host_header);
    bool accept_set = false;
    for (size_t i = 0; i < up->nheaders; i++)
        accept_set = accept_set || strcasecmp(up->headers[i].name, "Accept") == 0;
    for (size_t i = 0; i < s->nheaders; i++)
        accept_set = accept_set || strcasecmp(s->headers[i].name, "Accept") == 0;
    if (!accept_set)
        fputs("Accept: application/json\r\n", f);
    for (size_t i = 0; i < up->nheaders; i++) {
        const char *name = up->headers[i].name;
        bool later = !first_named(up->headers + i + 1, up->nheaders - i - 1, name) ||
                     !first_named(s->headers, s->nheaders, name);
        if (!later)
            fprintf(f, "%s: %s\r\n", name, up->headers[i].value);
    }
    for (size_t i = 0; i < s->nheaders; i++)
        if (first_named(s->headers + i + 1, s->nheaders - i - 1, s->headers[i].name))
            fprintf(f, "%s: %s\r\n", s->headers[i].name, s->headers[i].value);
    if (fclose(f) != 0) {
        free(text);
        return mizan_err_set(err, "out of memory");
    }
    s->head = text;
    s->head_len = len;
    return 0;
}

/* The declared properties of an input schema (borrowed; returns a borrowed object or NULL). */
static const json_t *schema_props(const json_t *schema)
{
    const json_t *p = json_is_object(schema) ? json_object_get(schema, "properties") : NULL;
    return json_is_object(p) ? p : NULL;
}

/* True when the schema (borrowed) requires name or gives it a default. */
static bool always_present(const json_t *schema, const char *name)
{
    const json_t *req = json_object_get(schema, "required");
    size_t i;
    json_t *item;
    json_array_foreach(req, i, item)
    {
        if (json_is_string(item) && strcmp(json_string_value(item), name) == 0)
            return true;
    }
    const json_t *prop = json_object_get(schema_props(schema), name);
    return json_object_get(prop, "default") != NULL;
}

static int add_seg(mizan_upstream_fn_t *s, const char *text, size_t len, bool is_arg, mizan_err_t *err)
{
    mizan_upstream_seg_t *segs = realloc(s->segs, (s->nsegs + 1) * sizeof(*segs));
    if (segs == NULL)
        return mizan_err_set(err, "out of memory");
    s->segs = segs;
    if ((segs[s->nsegs].text = strndup(text, len)) == NULL)
        return mizan_err_set(err, "out of memory");
    segs[s->nsegs++].is_arg = is_arg;
    return 0;
}

/* Splits a path template "/posts/{post_id}/comments" (v and schema borrowed) into segments. */
static int read_path(const char *file, const char *where, const json_t *v, const json_t *schema,
                     mizan_upstream_fn_t *s, mizan_err_t *err)
{
    if (!json_is_string(v) || json_string_value(v)[0] != '/')
        return mizan_err_set(err, "%s: field \"%spath\" is required: a path template starting with '/', e.g. "
                                  "\"/posts/{post_id}\"",
                             file, where);
    const char *p = json_string_value(v);
    const char *lit = p;
    while (*p != '\0') {
        if (*p == '{') {
            const char *close = strchr(p, '}');
            if (close == NULL)
                return mizan_err_set(err, "%s: field \"%spath\": '{' without a closing '}'", file, where);
            size_t n = (size_t)(close - p - 1);
            if (!valid_arg_name(p + 1, n))
                return mizan_err_set(err, "%s: field \"%spath\": \"%.*s\" is not an argument name", file, where,
                                     (int)(close - p + 1), p);
            char name[160];
            snprintf(name, sizeof(name), "%.*s", (int)n, p + 1);
            if (json_object_get(schema_props(schema), name) == NULL)
                return mizan_err_set(err,
                                     "%s: field \"%spath\": {%s} is not a property of the function's input_schema",
                                     file, where, name);
            if (!always_present(schema, name))
                return mizan_err_set(err,
                                     "%s: field \"%spath\": {%s} must be \"required\" (or have a \"default\") in the "
                                     "function's input_schema",
                                     file, where, name);
            if ((p > lit && add_seg(s, lit, (size_t)(p - lit), false, err) < 0) ||
                add_seg(s, name, strlen(name), true, err) < 0)
                return -1;
            p = close + 1;
            lit = p;
            continue;
        }
        if (*p == '}' || !path_char(*p))
            return mizan_err_set(err, "%s: field \"%spath\": character '%c' is not allowed in a path template (put "
                                      "query arguments in \"query\")",
                                 file, where, *p);
        if (*p == '%' && !(isxdigit((unsigned char)p[1]) && isxdigit((unsigned char)p[2])))
            return mizan_err_set(err, "%s: field \"%spath\": '%%' must start a %%XX escape", file, where);
        p++;
    }
    if (p > lit && add_seg(s, lit, (size_t)(p - lit), false, err) < 0)
        return -1;
    return 0;
}

/* Reads "query" or "body" (v, schema borrowed): true (rest), false (none), or a list of declared
 * argument names. */
static int read_place(const char *file, const char *where, const char *key, const json_t *v, const json_t *schema,
                      char ***list, size_t *n, bool *rest, mizan_err_t *err)
{
    *rest = json_is_true(v);
    if (v == NULL || json_is_boolean(v))
        return 0;
    if (!json_is_array(v))
        return mizan_err_set(err, "%s: field \"%s%s\" must be true, false or a list of argument names", file, where,
                             key);
    *list = calloc(json_array_size(v) + 1, sizeof(**list));
    if (*list == NULL)
        return mizan_err_set(err, "out of memory");
    size_t i;
    json_t *item;
    json_array_foreach(v, i, item)
    {
        const char *name = json_string_value(item);
        if (name == NULL || json_object_get(schema_props(schema), name) == NULL)
            return mizan_err_set(err, "%s: field \"%s%s[%zu]\" must name a property of the function's input_schema",
                                 file, where, key, i);
        for (size_t j = 0; j < *n; j++)
            if (strcmp((*list)[j], name) == 0)
                return mizan_err_set(err, "%s: field \"%s%s\" lists \"%s\" twice", file, where, key, name);
        if (((*list)[*n] = strdup(name)) == NULL)
            return mizan_err_set(err, "out of memory");
        (*n)++;
    }
    return 0;
}

static const struct {
    const char *name;
    enum evhttp_cmd_type type;
    bool body;
} methods[] = {
    {"GET", EVHTTP_REQ_GET, false},    {"DELETE", EVHTTP_REQ_DELETE, false}, {"POST", EVHTTP_REQ_POST, true},
    {"PUT", EVHTTP_REQ_PUT, true},     {"PATCH", EVHTTP_REQ_PATCH, true},
};

static int read_fn_upstream(const mizan_config_t *cfg, const mizan_upstreams_t *ups, const char *where,
                            const json_t *obj, const json_t *schema, mizan_upstream_fn_t *s, mizan_err_t *err)
{
    static const char *const allowed[] = {"service", "method", "path",   "query",    "body",
                                          "headers", "result", "identity", NULL};
    const char *file = cfg->file;
    if (!json_is_object(obj))
        return mizan_err_set(err,
                             "%s: field \"%s\" is required: {\"service\": <name in \"upstreams\">, \"path\": "
                             "\"/...\", ...}",
                             file, where);
    char w[224];
    snprintf(w, sizeof(w), "%s.", where);
    if (check_members(file, w, obj, allowed, err) < 0)
        return -1;
    const char *service = json_string_value(json_object_get(obj, "service"));
    if (service == NULL || (s->up = find_upstream(ups, service)) == NULL)
        return mizan_err_set(err, "%s: field \"%sservice\" must name an entry of \"upstreams\"%s%s%s", file, w,
                             service != NULL ? " (no upstream \"" : "", service != NULL ? service : "",
                             service != NULL ? "\")" : "");
    json_t *m = json_object_get(obj, "method");
    const char *mname = m != NULL ? json_string_value(m) : "GET";
    size_t mi = 0;
    while (mname != NULL && mi < sizeof(methods) / sizeof(methods[0]) && strcmp(methods[mi].name, mname) != 0)
        mi++;
    if (mname == NULL || mi == sizeof(methods) / sizeof(methods[0]))
        return mizan_err_set(err, "%s: field \"%smethod\" must be \"GET\", \"POST\", \"PUT\", \"PATCH\" or \"DELETE\"",
                             file, w);
    s->method_name = methods[mi].name;
    s->method = (int)methods[mi].type;
    if (read_path(file, w, json_object_get(obj, "path"), schema, s, err) < 0)
        return -1;
    json_t *q = json_object_get(obj, "query"), *b = json_object_get(obj, "body");
    bool qrest = false, brest = false;
    if (read_place(file, w, "query", q, schema, &s->query, &s->nquery, &qrest, err) < 0 ||
        read_place(file, w, "body", b, schema, &s->body, &s->nbody, &brest, err) < 0)
        return -1;
    if (!methods[mi].body && (brest || s->nbody > 0))
        return mizan_err_set(err, "%s: field \"%sbody\": a %s request carries no body (use \"query\")", file, w,
                             mname);
    if (qrest && brest)
        return mizan_err_set(err, "%s: fields \"%squery\" and \"%sbody\" cannot both be true", file, w, w);
    for (size_t i = 0; i < s->nquery; i++)
        for (size_t j = 0; j < s->nbody; j++)
            if (strcmp(s->query[i], s->body[j]) == 0)
                return mizan_err_set(err, "%s: argument \"%s\" is listed in both \"%squery\" and \"%sbody\"", file,
                                     s->query[i], w, w);
    /* Unlisted arguments follow the method's habit unless a list or a
     * boolean says otherwise. */
    if (qrest)
        s->rest = MIZAN_UPSTREAM_QUERY;
    else if (brest)
        s->rest = MIZAN_UPSTREAM_BODY;
    else if (q == NULL && b == NULL)
        s->rest = methods[mi].body ? MIZAN_UPSTREAM_BODY : MIZAN_UPSTREAM_QUERY;
    else
        s->rest = MIZAN_UPSTREAM_NOWHERE;
    s->has_body = s->rest == MIZAN_UPSTREAM_BODY || s->nbody > 0;
    char hw[288];
    snprintf(hw, sizeof(hw), "%sheaders", w);
    if (read_headers(file, hw, json_object_get(obj, "headers"), s->up, &s->headers, &s->nheaders, err) < 0)
        return -1;
    json_t *ident = json_object_get(obj, "identity");
    if (ident != NULL && !json_is_false(ident))
        return mizan_err_set(err,
                             "%s: field \"%sidentity\" can only be false (this function sends no identity headers "
                             "nor token; leave it out to send what the service's \"identity\" says)",
                             file, w);
    s->no_identity = ident != NULL;
    json_t *r = json_object_get(obj, "result");
    if (r != NULL && !json_is_string(r))
        return mizan_err_set(err, "%s: field \"%sresult\" must be a JSON Pointer string (\"\" for the whole body)",
                             file, w);
    const char *rtext = r != NULL ? json_string_value(r) : "";
    size_t rlen = r != NULL ? json_string_length(r) : 0;
    mizan_err_t perr = {{0}};
    if (mizan_json_pointer_parse(rtext, rlen, &s->result, &perr) < 0)
        return mizan_err_set(err, "%s: field \"%sresult\": %s", file, w, perr.msg);
    if ((s->result_text = strndup(rtext, rlen)) == NULL)
        return mizan_err_set(err, "out of memory");
    return 0;
}

/* The registry's latest registration problem (borrowed), or NULL. */
static const char *last_pending(const mizan_registry_t *reg)
{
    size_t n = json_array_size(reg->pending_errors);
    return n > 0 ? json_string_value(json_array_get(reg->pending_errors, n - 1)) : NULL;
}

/* An upstream function never runs on a worker: loop.c starts it on its
 * loop. This handler only marks it as implemented in the schema endpoint. */
static int served_by_upstream(mizan_req_t *req)
{
    return mizan_req_error(req, MIZAN_INTERNAL_ERROR, "an upstream function reached the worker pool", NULL);
}

/* A JSON value (borrowed) as compact text for a definition (new string). */
static char *dump(const json_t *v)
{
    return json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
}

/* A NULL-terminated array (new) of the strings of a JSON array (borrowed; so are the strings). */
static const char **string_list(const json_t *arr)
{
    const char **out = calloc(json_array_size(arr) + 1, sizeof(*out));
    if (out == NULL)
        return NULL;
    size_t i;
    json_t *item;
    json_array_foreach(arr, i, item) out[i] = json_string_value(item);
    return out;
}

static int read_function(const mizan_config_t *cfg, mizan_upstreams_t *ups, mizan_registry_t *reg, size_t i,
                         const json_t *obj, mizan_err_t *err)
{
    static const char *const allowed[] = {"name",        "kind",        "input_schema", "auth",
                                          "invalidates", "timeout_ms",  "description",  "upstream",
                                          "max_concurrency", "output_schema", NULL};
    const char *file = cfg->file;
    char where[64];
    snprintf(where, sizeof(where), "functions[%zu].", i);
    if (!json_is_object(obj))
        return mizan_err_set(err, "%s: field \"functions[%zu]\" must be an object", file, i);
    if (check_members(file, where, obj, allowed, err) < 0)
        return -1;
    const char *name = json_string_value(json_object_get(obj, "name"));
    if (name == NULL || !mizan_registry_valid_name(name))
        return mizan_err_set(err, "%s: field \"%sname\" must be a function name ([A-Za-z_][A-Za-z0-9_.]*)", file,
                             where);
    json_t *kind = json_object_get(obj, "kind");
    const char *ks = kind != NULL ? json_string_value(kind) : "query";
    if (ks == NULL || (strcmp(ks, "query") != 0 && strcmp(ks, "mutation") != 0))
        return mizan_err_set(err, "%s: field \"%skind\" must be \"query\" or \"mutation\"", file, where);
    json_t *schema = json_object_get(obj, "input_schema");
    if (schema != NULL && !json_is_object(schema) && !json_is_boolean(schema))
        return mizan_err_set(err, "%s: field \"%sinput_schema\" must be a JSON Schema object", file, where);
    json_t *output = json_object_get(obj, "output_schema");
    if (output != NULL && !json_is_object(output) && !json_is_boolean(output))
        return mizan_err_set(err, "%s: field \"%soutput_schema\" must be a JSON Schema (an object or a boolean)", file,
                             where);
    json_t *auth = json_object_get(obj, "auth");
    mizan_auth_t a;
    mizan_err_t aerr = {{0}};
    if (mizan_auth_parse(auth, &a, &aerr) < 0)
        return mizan_err_set(err, "%s: field \"%sauth\": %s", file, where, aerr.msg);
    mizan_auth_deinit(&a);
    json_t *inv = json_object_get(obj, "invalidates");
    size_t k;
    json_t *item;
    if (inv != NULL && !json_is_array(inv))
        return mizan_err_set(err, "%s: field \"%sinvalidates\" must be a list of context names", file, where);
    json_array_foreach(inv, k, item)
    {
        if (!json_is_string(item))
            return mizan_err_set(err, "%s: field \"%sinvalidates[%zu]\" must be a context name", file, where, k);
    }
    json_t *desc = json_object_get(obj, "description");
    if (desc != NULL && !json_is_string(desc))
        return mizan_err_set(err, "%s: field \"%sdescription\" must be a string", file, where);

    mizan_upstream_fn_t *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return mizan_err_set(err, "out of memory");
    ups->fns[ups->nfns++] = s;
    char uw[96];
    snprintf(uw, sizeof(uw), "%supstream", where);
    if (read_fn_upstream(cfg, ups, uw, json_object_get(obj, "upstream"), schema, s, err) < 0 ||
        build_head(s, err) < 0)
        return -1;
    long long timeout = 0;
    if (read_int(file, where, obj, "timeout_ms", 1, 3600000, s->up->timeout_ms, &timeout, err) < 0)
        return -1;
    long long maxc = 0;
    if (read_int(file, where, obj, "max_concurrency", 0, 1000000, 0, &maxc, err) < 0)
        return -1;

    char *schema_text = schema != NULL ? dump(schema) : NULL;
    char *output_text = output != NULL ? dump(output) : NULL;
    char *auth_text = auth != NULL ? dump(auth) : NULL;
    const char **invalidates = string_list(inv);
    int rc = -1;
    if ((schema != NULL && schema_text == NULL) || (output != NULL && output_text == NULL) || (auth != NULL && auth_text == NULL) || invalidates == NULL) {
        mizan_err_set(err, "out of memory");
        goto done;
    }
    mizan_function_def_t def = {
        .name = name,
        .kind = strcmp(ks, "mutation") == 0 ? MIZAN_MUTATION : MIZAN_QUERY,
        .input_schema = schema_text,
        .auth = auth_text,
        .invalidates = invalidates,
        .handler = served_by_upstream,
        .timeout_ms = (int)timeout,
        .description = json_string_value(desc),
        .max_concurrency = (int)maxc,
        .output_schema = output_text,
    };
    size_t before = reg->nfns;
    if (mizan_module_add_function((mizan_module_t *)&ups->mod, &def) < 0 || reg->nfns != before + 1) {
        /* The registry recorded why; surface it now, with the field. */
        const char *why = last_pending(reg);
        mizan_err_set(err, "%s: field \"functions[%zu]\": %s", file, i, why != NULL ? why : "cannot register");
        goto done;
    }
    reg->fns[before]->upstream = s;
    const mizan_upstream_t *up = s->up;
    reg->fns[before]->forwards_identity =
        !s->no_identity && (up->sub_header != NULL || up->staff_header != NULL || up->superuser_header != NULL ||
                            up->perms_header != NULL || up->forward_token);
    rc = 0;
done:
    free(schema_text);
    free(output_text);
    free(auth_text);
    free(invalidates);
    return rc;
}

/* ---- contexts -------------------------------------------------------------- */

static int read_context(const mizan_config_t *cfg, mizan_upstreams_t *ups, mizan_registry_t *reg, size_t i,
                        const json_t *obj, mizan_err_t *err)
{
    static const char *const allowed[] = {"name", "params_schema", "functions", "ttl", "stale_s", "scope", "description",
                                          NULL};
    const char *file = cfg->file;
    char where[64];
    snprintf(where, sizeof(where), "contexts[%zu].", i);
    if (!json_is_object(obj))
        return mizan_err_set(err, "%s: field \"contexts[%zu]\" must be an object", file, i);
    if (check_members(file, where, obj, allowed, err) < 0)
        return -1;
    const char *name = json_string_value(json_object_get(obj, "name"));
    if (name == NULL || !mizan_registry_valid_name(name))
        return mizan_err_set(err, "%s: field \"%sname\" must be a context name ([A-Za-z_][A-Za-z0-9_.]*)", file,
                             where);
    json_t *ps = json_object_get(obj, "params_schema");
    if (ps != NULL && !json_is_object(ps))
        return mizan_err_set(err, "%s: field \"%sparams_schema\" must be a JSON Schema object", file, where);
    json_t *fns = json_object_get(obj, "functions");
    size_t k;
    json_t *item;
    if (!json_is_array(fns) || json_array_size(fns) == 0)
        return mizan_err_set(err, "%s: field \"%sfunctions\" is required: a non-empty list of function names", file,
                             where);
    json_array_foreach(fns, k, item)
    {
        if (!json_is_string(item))
            return mizan_err_set(err, "%s: field \"%sfunctions[%zu]\" must be a function name", file, where, k);
    }
    long long ttl = 0;
    if (read_int(file, where, obj, "ttl", 0, 31536000, 0, &ttl, err) < 0)
        return -1;
    long long stale_s = 0;
    if (read_int(file, where, obj, "stale_s", 0, 31536000, 0, &stale_s, err) < 0)
        return -1;
    json_t *scope = json_object_get(obj, "scope");
    const char *ss = scope != NULL ? json_string_value(scope) : "public";
    mizan_scope_t sc;
    if (ss != NULL && strcmp(ss, "public") == 0)
        sc = MIZAN_SCOPE_PUBLIC;
    else if (ss != NULL && strcmp(ss, "user") == 0)
        sc = MIZAN_SCOPE_USER;
    else if (ss != NULL && strcmp(ss, "perms") == 0)
        sc = MIZAN_SCOPE_PERMS;
    else
        return mizan_err_set(err, "%s: field \"%sscope\" must be \"public\", \"user\" or \"perms\"", file, where);
    json_t *desc = json_object_get(obj, "description");
    if (desc != NULL && !json_is_string(desc))
        return mizan_err_set(err, "%s: field \"%sdescription\" must be a string", file, where);
    char *ps_text = ps != NULL ? dump(ps) : NULL;
    const char **names = string_list(fns);
    int rc = -1;
    if ((ps != NULL && ps_text == NULL) || names == NULL) {
        mizan_err_set(err, "out of memory");
        goto done;
    }
    mizan_context_def_t def = {
        .name = name,
        .params_schema = ps_text,
        .functions = names,
        .ttl = (int)ttl,
        .scope = sc,
        .description = json_string_value(desc),
        .stale_s = (int)stale_s,
    };
    size_t before = reg->nctxs;
    if (mizan_module_add_context((mizan_module_t *)&ups->mod, &def) < 0 || reg->nctxs != before + 1) {
        const char *why = last_pending(reg);
        mizan_err_set(err, "%s: field \"contexts[%zu]\": %s", file, i, why != NULL ? why : "cannot register");
        goto done;
    }
    rc = 0;
done:
    free(ps_text);
    free(names);
    return rc;
}

/* ---- entry points ------------------------------------------------------------ */

int mizan_upstream_register(const mizan_config_t *cfg, mizan_registry_t *reg, mizan_upstreams_t **out,
                            mizan_err_t *err)
{
    if (cfg->upstreams == NULL && cfg->functions == NULL && cfg->contexts == NULL)
        return 0;
    mizan_upstreams_t *ups = calloc(1, sizeof(*ups));
    if (ups == NULL)
        return mizan_err_set(err, "out of memory");
    *out = ups;
    ups->mod.name = config_module_name;
    ups->mod.path = config_module_name;
    ups->mod.config_dir = cfg->dir;
    ups->mod.workers = cfg->workers;
    ups->mod.reg = reg;
    if (read_upstreams(cfg, ups, err) < 0)
        return -1;
    const json_t *fns = cfg->functions, *ctxs = cfg->contexts;
    if (fns != NULL && !json_is_array(fns))
        return mizan_err_set(err, "%s: field \"functions\" must be a list of function declarations", cfg->file);
    if (ctxs != NULL && !json_is_array(ctxs))
        return mizan_err_set(err, "%s: field \"contexts\" must be a list of context declarations", cfg->file);
    ups->fns = calloc(json_array_size(fns) + 1, sizeof(*ups->fns));
    if (ups->fns == NULL)
        return mizan_err_set(err, "out of memory");
    size_t i;
    json_t *item;
    json_array_foreach(fns, i, item)
    {
        if (read_function(cfg, ups, reg, i, item, err) < 0)
            return -1;
    }
    json_array_foreach(ctxs, i, item)
    {
        if (read_context(cfg, ups, reg, i, item, err) < 0)
            return -1;
    }
    for (i = 0; i < ups->nups; i++) {
        const mizan_upstream_t *up = ups->ups[i];
        json_t *f = json_pack("{s:s, s:s, s:i, s:i, s:i, s:i}", "upstream", up->name, "address", up->address,
                              "port", up->port, "pool_size", up->pool_size, "retries", up->retries,
                              "breaker_failures", up->breaker_failures);
        mizan_log_fields(MIZAN_LOG_DEBUG, "upstream configured", f);
        json_decref(f);
    }
    return 0;
}

void mizan_upstream_deinit(mizan_upstreams_t *ups)
{
    if (ups == NULL)
        return;
    for (size_t i = 0; i < ups->nfns; i++)
        upstream_fn_free(ups->fns[i]);
    free(ups->fns);
    for (size_t i = 0; i < ups->nups; i++)
        upstream_free(ups->ups[i]);
    free(ups->ups);
    free(ups);
}
