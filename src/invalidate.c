/*
 * invalidate.c - invalidation targets of mutations (see invalidate.h).
 */
#include "invalidate.h"

#include <string.h>

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

/* The target for context c given candidate values (borrowed object). */
static json_t *scoped_target(const mizan_context_t *c, const json_t *values)
{
    json_t *target = json_pack("{s:s}", "context", c->name);
    if (target == NULL || c->nparams == 0 || values == NULL)
        return target;
    json_t *params = json_object();
    for (size_t i = 0; params != NULL && i < c->nparams; i++) {
        json_t *v = json_object_get(values, c->param_names[i]);
        if (v == NULL) {
            /* Not every param is known: the whole context is stale. */
            json_decref(params);
            return target;
        }
        json_object_set_new(params, c->param_names[i], json_deep_copy(v));
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
