/*
 * cors.c - cross-origin browsers (PROTOCOL.md section 8): the `cors` config
 * object, the OPTIONS preflight, and the Access-Control-* headers that
 * reply.c and the event streams add to every answer to an allowed origin.
 *
 * The allowed origin is always echoed back as itself, never as "*", so the
 * same answer is right whether or not credentials are allowed; `Vary:
 * Origin` tells shared caches that the answer depends on the header.
 */
#include "cors.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/http.h>

/* What an allowed origin may read of an answer beyond the safelisted headers. */
#define EXPOSE_HEADERS "X-Mizan-Cache, X-Request-Id"
/* What a cross-origin request may send beyond the safelisted headers. */
#define ALLOW_HEADERS "Authorization, Content-Type, X-Request-Id"
/* Longest origin accepted (scheme, host and port). */
#define MAX_ORIGIN 256

/*
 * Whether s is a serialised origin: scheme "://" host [":" port], nothing
 * after (no path, no trailing slash), printable ASCII without spaces.
 */
static bool origin_syntax(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > MAX_ORIGIN || !isalpha((unsigned char)s[0]))
        return false;
    const char *sep = strstr(s, "://");
    if (sep == NULL || sep[3] == '\0')
        return false;
    for (const char *p = s; p < sep; p++)
        if (!isalnum((unsigned char)*p) && *p != '+' && *p != '-' && *p != '.')
            return false;
    for (const char *p = sep + 3; *p; p++)
        if (*p <= ' ' || *p >= 0x7f || *p == '/' || *p == '?' || *p == '#' || *p == ',' || *p == '\\')
            return false;
    return true;
}

int mizan_cors_parse(mizan_cors_t *c, const json_t *obj, const char *file, mizan_err_t *err)
{
    static const char *const allowed[] = {"origins", "credentials", "max_age_s", NULL};
    memset(c, 0, sizeof(*c));
    c->max_age_s = 600;
    if (obj == NULL || json_is_null(obj))
        return 0;
    if (!json_is_object(obj))
        return mizan_err_set(err, "%s: field \"cors\" must be an object {\"origins\": [...], \"credentials\": false, "
                                  "\"max_age_s\": 600}",
                             file);
    const char *key;
    json_t *value;
    json_object_foreach((json_t *)obj, key, value)
    {
        bool known = false;
        for (size_t i = 0; allowed[i] != NULL; i++)
            known = known || strcmp(allowed[i], key) == 0;
        if (!known)
            return mizan_err_set(err, "%s: unknown field \"cors.%s\" (check the spelling; see docs/configuration.md)",
                                 file, key);
    }
    json_t *list = json_object_get(obj, "origins");
    if (list != NULL && !json_is_array(list))
        return mizan_err_set(err, "%s: field \"cors.origins\" must be a list of origins like \"https://app.example.com\"",
                             file);
    c->origins = calloc(json_array_size(list) + 1, sizeof(*c->origins));
    if (c->origins == NULL)
        return mizan_err_set(err, "out of memory");
    size_t i;
    json_t *item;
    json_array_foreach(list, i, item)
    {
        const char *o = json_string_value(item);
        if (o != NULL && strcmp(o, "*") == 0) {
            c->any = true;
            continue;
        }
        if (o == NULL || !origin_syntax(o))
            return mizan_err_set(err,
                                 "%s: field \"cors.origins[%zu]\" must be \"*\" or an origin scheme://host[:port] "
                                 "without path or trailing slash, e.g. \"http://localhost:5173\"",
                                 file, i);
        char *copy = strdup(o);
        if (copy == NULL)
            return mizan_err_set(err, "out of memory");
        for (char *p = copy; *p; p++)
            *p = (char)tolower((unsigned char)*p);
        c->origins[c->norigins++] = copy;
    }
    json_t *cred = json_object_get(obj, "credentials");
    if (cred != NULL && !json_is_boolean(cred))
        return mizan_err_set(err, "%s: field \"cors.credentials\" must be true or false", file);
    c->credentials = json_is_true(cred);
    if (c->credentials && c->any)
        return mizan_err_set(err,
                             "%s: \"cors.credentials\": true with \"*\" in \"cors.origins\" would let every site act "
                             "with a user's cookie; list the origins instead",
                             file);
    json_t *age = json_object_get(obj, "max_age_s");
    if (age != NULL && (!json_is_integer(age) || json_integer_value(age) < 0 || json_integer_value(age) > 86400))
        return mizan_err_set(err, "%s: field \"cors.max_age_s\" must be an integer in 0..86400", file);
    if (age != NULL)
        c->max_age_s = (int)json_integer_value(age);
    return 0;
}

void mizan_cors_deinit(mizan_cors_t *c)
{
    for (size_t i = 0; i < c->norigins; i++)
        free(c->origins[i]);
    free(c->origins);
    memset(c, 0, sizeof(*c));
}

bool mizan_cors_allowed(const mizan_cors_t *c, const char *origin)
{
    if (origin == NULL || !origin_syntax(origin))
        return false;
    if (c->any)
        return true;
    for (size_t i = 0; i < c->norigins; i++)
        if (strcasecmp(c->origins[i], origin) == 0)
            return true;
    return false;
}

void mizan_cors_headers(const mizan_cors_t *c, struct evhttp_request *req)
{
    if (req == NULL || (c->norigins == 0 && !c->any))
        return;
    struct evkeyvalq *out = evhttp_request_get_output_headers(req);
    const char *origin = evhttp_find_header(evhttp_request_get_input_headers(req), "Origin");
    evhttp_add_header(out, "Vary", "Origin");
    if (!mizan_cors_allowed(c, origin))
        return;
    evhttp_add_header(out, "Access-Control-Allow-Origin", origin);
    if (c->credentials)
        evhttp_add_header(out, "Access-Control-Allow-Credentials", "true");
    evhttp_add_header(out, "Access-Control-Expose-Headers", EXPOSE_HEADERS);
}

void mizan_cors_header_lines(const mizan_cors_t *c, const char *origin, char *out, size_t len)
{
    if (len > 0)
        out[0] = '\0';
    if (c->norigins == 0 && !c->any)
        return;
    if (!mizan_cors_allowed(c, origin)) {
        snprintf(out, len, "Vary: Origin\r\n");
        return;
    }
    snprintf(out, len, "Vary: Origin\r\nAccess-Control-Allow-Origin: %s\r\n%sAccess-Control-Expose-Headers: %s\r\n",
             origin, c->credentials ? "Access-Control-Allow-Credentials: true\r\n" : "", EXPOSE_HEADERS);
}

int mizan_cors_preflight(const mizan_cors_t *c, struct evhttp_request *req, const char *methods)
{
    struct evkeyvalq *out = evhttp_request_get_output_headers(req);
    const char *origin = evhttp_find_header(evhttp_request_get_input_headers(req), "Origin");
    evhttp_add_header(out, "Allow", methods);
    if (origin == NULL)
        return 0;
    if (!mizan_cors_allowed(c, origin))
        return -1;
    char age[16];
    snprintf(age, sizeof(age), "%d", c->max_age_s);
    evhttp_add_header(out, "Access-Control-Allow-Methods", methods);
    evhttp_add_header(out, "Access-Control-Allow-Headers", ALLOW_HEADERS);
    evhttp_add_header(out, "Access-Control-Max-Age", age);
    return 0;
}
