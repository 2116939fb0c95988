/*
 * invalidate.c - invalidation targets of mutations (see invalidate.h).
 */
#include "invalidate.h"

#include <stdbool.h>
#include <string.h>

#include "params.h"

/* Appends target to list unless an equal one is there; steals target. */
static int append_unique(json_t *list, json_t *target)
{
    if (target == NULL)
        return -1;
    size_t i;
    json_t *t;
    json_array_foreach(list, i, t) if (json_equal(t, target))
    {
        json_decref(target);
        return 0;
    }
    return json_array_append_new(list, target);
}

/* True when the context's params schema requires every declared param. */
static bool all_required(const mizan_context_t *c)
{
    const json_t *req = json_object_get(c->params_src, "required");
    for (size_t i = 0; i < c->nparams; i++) {
        bool found = false;
        size_t k;
        json_t *r;
        json_array_foreach(req, k, r)
        {
            if (json_is_string(r) && strcmp(json_string_value(r), c->param_names[i]) == 0) {
                found = true;
                break;
            }
        }
        if (!found)
            return false;
    }
    return true;
}

/*
 * The target for context c given candidate values (borrowed object; NULL:
 * none). Scoped only when it names exactly the bundles a query string could
 * have keyed (PROTOCOL.md section 5): every param of c is required, present
 * in values, and has exactly one canonical reading by c's declared types;
 * and the canonical params validate. Anything else could miss a bundle
 * (an optional param the bundle was keyed without, a value the query
 * string reads as another type), so the whole context is the target.
 */
static json_t *scoped_target(const mizan_context_t *c, const json_t *values)
{
    json_t *target = json_pack("{s:s}", "context", c->name);
    if (target == NULL || c->nparams == 0 || !json_is_object(values) || !all_required(c))
        return target;
    json_t *params = json_object();
    for (size_t i = 0; params != NULL && i < c->nparams; i++) {
        json_t *canon = mizan_params_canonical(c->param_types[i], json_object_get(values, c->param_names[i]));
        if (canon == NULL || json_object_set_new(params, c->param_names[i], canon) < 0) {
            json_decref(params);
            return target;
        }
    }
    json_t *errors = json_array();
    if (params != NULL && errors != NULL && mizan_schema_validate(c->params, params, "params", errors) == 0)
        json_object_set(target, "params", params);
    /* Values that are not valid params cannot name one bundle: whole context. */
    json_decref(errors);
    json_decref(params);
    return target;
}

json_t *mizan_invalidate_targets(const mizan_function_t *fn, const json_t *args, const json_t *runtime)
{
    json_t *list = json_array();
    if (list == NULL)
        return NULL;
    for (size_t i = 0; i < fn->ninvalidates; i++)
        if (append_unique(list, scoped_target(fn->inv[i], args)) < 0)
            goto fail;
    size_t i;
    json_t *t;
    const mizan_registry_t *reg = fn->module != NULL ? fn->module->reg : NULL;
    json_array_foreach(runtime, i, t)
    {
        const mizan_context_t *c = reg != NULL ? mizan_registry_context(reg, json_string_value(json_object_get(t, "context"))) : NULL;
        if (c == NULL)
            continue;
        json_t *params = json_object_get(t, "params");
        json_t *target = params != NULL ? scoped_target(c, params) : json_pack("{s:s}", "context", c->name);
        if (append_unique(list, target) < 0)
            goto fail;
    }
    return list;
fail:
    json_decref(list);
    return NULL;
}
