/*
 * auth.c - per-function auth requirements: parsing, the schema endpoint's
 * view of them, the allow/401/403 decision, and the module API's
 * mizan_identity_has_perm().
 *
 * Decisions fail closed: a requirement the code does not recognise, or a
 * native one without its predicate, admits only superusers.
 */
#include "auth.h"

#include <stdlib.h>
#include <string.h>

static const char allowed_specs[] =
    "auth must be false, true, \"staff\", \"superuser\" or {\"perm\": \"<non-empty string>\"}";

/* True when v (borrowed) is a JSON string equal to the C string s (length included). */
static bool string_is(const json_t *v, const char *s)
{
    size_t n = strlen(s);
    return json_is_string(v) && json_string_length(v) == n && memcmp(json_string_value(v), s, n) == 0;
}

int mizan_auth_parse(const json_t *spec, mizan_auth_t *out, mizan_err_t *err)
{
    memset(out, 0, sizeof(*out));
    if (spec == NULL || json_is_false(spec)) {
        out->kind = MIZAN_AUTH_NONE;
        return 0;
    }
    if (json_is_true(spec)) {
        out->kind = MIZAN_AUTH_TOKEN;
        return 0;
    }
    if (string_is(spec, "staff")) {
        out->kind = MIZAN_AUTH_STAFF;
        return 0;
    }
    if (string_is(spec, "superuser")) {
        out->kind = MIZAN_AUTH_SUPERUSER;
        return 0;
    }
    if (json_is_object(spec)) {
        const json_t *perm = json_object_get(spec, "perm");
        if (json_object_size(spec) != 1 || perm == NULL)
            return mizan_err_set(err, "%s (an object must have exactly the member \"perm\")",
                                 allowed_specs);
        if (!json_is_string(perm) || json_string_length(perm) == 0 ||
            strlen(json_string_value(perm)) != json_string_length(perm))
            return mizan_err_set(err, "%s (\"perm\" must be a non-empty string)", allowed_specs);
        out->perm = strdup(json_string_value(perm));
        if (out->perm == NULL)
            return mizan_err_set(err, "out of memory");
        out->kind = MIZAN_AUTH_PERM;
        return 0;
    }
    return mizan_err_set(err, "%s", allowed_specs);
}

void mizan_auth_deinit(mizan_auth_t *a)
{
    if (a == NULL)
        return;
    free(a->perm);
    memset(a, 0, sizeof(*a));
}

json_t *mizan_auth_to_json(const mizan_auth_t *a)
{
    if (a == NULL)
        return NULL;
    switch (a->kind) {
    case MIZAN_AUTH_NONE:
        return json_false();
    case MIZAN_AUTH_TOKEN:
        return json_true();
    case MIZAN_AUTH_STAFF:
        return json_string("staff");
    case MIZAN_AUTH_SUPERUSER:
        return json_string("superuser");
    case MIZAN_AUTH_PERM:
        return json_pack("{s:s}", "perm", a->perm ? a->perm : "");
    case MIZAN_AUTH_NATIVE:
        return json_string("native");
    }
    return NULL;
}

mizan_code_t mizan_auth_check(const mizan_auth_t *a, const mizan_identity_t *id)
{
    bool anonymous = id == NULL || id->sub == NULL;
    mizan_code_t refused = anonymous ? MIZAN_UNAUTHORIZED : MIZAN_FORBIDDEN;

    if (a != NULL && a->kind == MIZAN_AUTH_NONE)
        return MIZAN_OK;
    /* Native predicates may admit anonymous callers, so they see them too. */
    if (a != NULL && a->kind == MIZAN_AUTH_NATIVE && anonymous) {
        static const mizan_identity_t nobody = {0};
        if (a->fn == NULL)
            return refused;
        return a->fn(id ? id : &nobody, a->fn_data) ? MIZAN_OK : refused;
    }
    if (anonymous)
        return MIZAN_UNAUTHORIZED;
    if (id->superuser)
        return MIZAN_OK;
    if (a == NULL)
        return refused;

    switch (a->kind) {
    case MIZAN_AUTH_NONE:
    case MIZAN_AUTH_TOKEN:
        return MIZAN_OK;
    case MIZAN_AUTH_STAFF:
        return id->staff ? MIZAN_OK : MIZAN_FORBIDDEN;
    case MIZAN_AUTH_SUPERUSER:
        return MIZAN_FORBIDDEN;
    case MIZAN_AUTH_PERM:
        return a->perm != NULL && mizan_identity_has_perm(id, a->perm) ? MIZAN_OK
                                                                      : MIZAN_FORBIDDEN;
    case MIZAN_AUTH_NATIVE:
        return a->fn != NULL && a->fn(id, a->fn_data) ? MIZAN_OK : MIZAN_FORBIDDEN;
    }
    return refused;
}

bool mizan_identity_has_perm(const mizan_identity_t *id, const char *perm)
{
    if (id == NULL || perm == NULL || id->perms == NULL)
        return false;
    for (size_t i = 0; i < id->nperms; i++) {
        if (id->perms[i] != NULL && strcmp(id->perms[i], perm) == 0)
            return true;
    }
    return false;
}
