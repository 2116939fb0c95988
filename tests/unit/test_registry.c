/*
 * test_registry.c - the registry and the module half of the module API
 * (src/registry.c, src/module.c): definitions registered through
 * mizan_module_add_function / add_context on a module instance built in the
 * test, then mizan_registry_finish: a consistent registry resolves and looks
 * up (sorted, binary search); every inconsistency is refused with a message
 * naming the module, the definition and the fix; derived data (arg names,
 * open args, params, resolved pointers) and the schema endpoint's JSON.
 * Loading shared objects: the failure messages, and the blog example when
 * the build's module directory is given (MIZAN_TEST_MODULE_DIR).
 */
#include <criterion/criterion.h>

#include <dlfcn.h>
#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "config.h"
#include "registry.h"

/* A NULL-terminated list of names. */
#define FNS(...) ((const char *const[]){__VA_ARGS__, NULL})

/* ---- fixture ------------------------------------------------------------ */

static mizan_registry_t reg;
static mizan_modinst_t mod;  /* "testmod" */
static mizan_modinst_t mod2; /* "othermod" */
static json_t *mod_config;

static void setup(void)
{
    mizan_registry_init(&reg, 5000);
    mod_config = json_pack("{s:s}", "db", "x.db");
    memset(&mod, 0, sizeof(mod));
    mod.name = "testmod";
    mod.path = "/nowhere/testmod.so";
    mod.config = mod_config;
    mod.config_dir = "/etc/mizan";
    mod.workers = 12;
    mod.reg = &reg;
    memset(&mod2, 0, sizeof(mod2));
    mod2.name = "othermod";
    mod2.reg = &reg;
}

static void teardown(void)
{
    mizan_registry_deinit(&reg);
    json_decref(mod_config);
}

TestSuite(registry, .init = setup, .fini = teardown);
TestSuite(module_api, .init = setup, .fini = teardown);

static mizan_module_t *M(mizan_modinst_t *m)
{
    return (mizan_module_t *)m;
}

static int handler_ok(mizan_req_t *req)
{
    (void)req;
    return 0;
}

static bool allow_all(const mizan_identity_t *id, void *data)
{
    (void)id;
    (void)data;
    return true;
}

/* Registers a function on m; returns what add_function returned. */
static int add_fn_on(mizan_modinst_t *m, const char *name, mizan_kind_t kind, const char *schema,
                     const char *const *invalidates)
{
    mizan_function_def_t def = {
        .name = name, .kind = kind, .input_schema = schema, .invalidates = invalidates, .handler = handler_ok};
    return mizan_module_add_function(M(m), &def);
}

static int add_query(const char *name, const char *schema)
{
    return add_fn_on(&mod, name, MIZAN_QUERY, schema, NULL);
}

static int add_mutation(const char *name, const char *schema, const char *const *invalidates)
{
    return add_fn_on(&mod, name, MIZAN_MUTATION, schema, invalidates);
}

static int add_ctx_on(mizan_modinst_t *m, const char *name, const char *params, const char *const *fns)
{
    mizan_context_def_t def = {.name = name, .params_schema = params, .functions = fns, .ttl = 30};
    return mizan_module_add_context(M(m), &def);
}

static int add_ctx(const char *name, const char *params, const char *const *fns)
{
    return add_ctx_on(&mod, name, params, fns);
}

/*
 * Registers query "filler" and context "filler_ctx" over it, so a test
 * about something else has at least one function and one context (a
 * registry with none of either is its own test).
 */
static void add_filler(void)
{
    cr_assert_eq(add_query("filler", NULL), 0);
    cr_assert_eq(add_ctx("filler_ctx", NULL, FNS("filler")), 0);
}

static void finish_ok(void)
{
    mizan_err_t err = {{0}};
    int rc = mizan_registry_finish(&reg, &err);
    cr_assert_eq(rc, 0, "finish refused a consistent registry: %s", err.msg);
    cr_assert_not_null(reg.schema_json);
}

/* Finishes and asserts refusal with exactly the message want. */
static void finish_refused(const char *want)
{
    mizan_err_t err = {{0}};
    int rc = mizan_registry_finish(&reg, &err);
    cr_assert_eq(rc, -1, "finish accepted (expected '%s')", want);
    cr_assert(strcmp(err.msg, want) == 0, "\n got  '%s'\n want '%s'", err.msg, want);
}

/* Finishes and asserts refusal with a message starting with prefix. */
static void finish_refused_prefix(const char *prefix)
{
    mizan_err_t err = {{0}};
    int rc = mizan_registry_finish(&reg, &err);
    cr_assert_eq(rc, -1, "finish accepted (expected '%s...')", prefix);
    cr_assert(strncmp(err.msg, prefix, strlen(prefix)) == 0, "\n got  '%s'\n want '%s...'", err.msg, prefix);
}

#define PARAMS_POST "{\"type\": \"object\", \"properties\": {\"post_id\": {\"type\": \"integer\"}}, " \
                    "\"required\": [\"post_id\"], \"additionalProperties\": false}"

/* ---- names ---------------------------------------------------------------- */

Test(registry, valid_names)
{
    const char *ok[] = {"a", "A", "_", "get_post", "blog.get_post", "a1", "_x.y.z", "Z9_.", NULL};
    for (size_t i = 0; ok[i] != NULL; i++)
        cr_assert(mizan_registry_valid_name(ok[i]), "'%s' refused", ok[i]);
    const char *bad[] = {"", "1a", ".a", "a-b", "a b", "a/b", "caf\xc3\xa9", "a\tb", "$x", NULL};
    for (size_t i = 0; bad[i] != NULL; i++)
        cr_assert(!mizan_registry_valid_name(bad[i]), "'%s' accepted", bad[i]);
    cr_assert(!mizan_registry_valid_name(NULL));
    char name[131];
    memset(name, 'n', 130);
    name[128] = '\0';
    cr_assert(mizan_registry_valid_name(name), "128 characters refused");
    name[128] = 'n';
    name[129] = '\0';
    cr_assert(!mizan_registry_valid_name(name), "129 characters accepted");
}

Test(registry, invalid_function_name)
{
    cr_assert_eq(add_query("1abc", NULL), -1);
    finish_refused("module \"testmod\": function name \"1abc\" is invalid (allowed: [A-Za-z_][A-Za-z0-9_.]*)");
}

Test(registry, null_function_name_and_def)
{
    cr_assert_eq(add_query(NULL, NULL), -1);
    cr_assert_eq(mizan_module_add_function(M(&mod), NULL), -1);
    finish_refused("module \"testmod\": function name \"(null)\" is invalid (allowed: [A-Za-z_][A-Za-z0-9_.]*)");
}

Test(registry, invalid_context_name)
{
    cr_assert_eq(add_query("q", NULL), 0);
    cr_assert_eq(add_ctx("a-b", NULL, FNS("q")), -1);
    cr_assert_eq(mizan_module_add_context(M(&mod), NULL), -1);
    finish_refused("module \"testmod\": context name \"a-b\" is invalid (allowed: [A-Za-z_][A-Za-z0-9_.]*)");
}

Test(registry, first_registration_error_is_reported)
{
    cr_assert_eq(add_query("ok", NULL), 0);
    cr_assert_eq(add_fn_on(&mod2, "bad name", MIZAN_QUERY, NULL, NULL), -1);
    cr_assert_eq(add_query("9", NULL), -1);
    finish_refused("module \"othermod\": function name \"bad name\" is invalid (allowed: [A-Za-z_][A-Za-z0-9_.]*)");
}

/* ---- a consistent registry ----------------------------------------------------- */

Test(registry, consistent_registry_finishes_and_resolves)
{
    cr_assert_eq(add_query("get_post", PARAMS_POST), 0);
    cr_assert_eq(add_query("list_comments", NULL), 0);
    cr_assert_eq(add_query("list_posts", NULL), 0);
    cr_assert_eq(add_mutation("update_post", NULL, FNS("post", "feed")), 0);
    cr_assert_eq(add_ctx("post", PARAMS_POST, FNS("get_post", "list_comments")), 0);
    cr_assert_eq(add_ctx("feed", NULL, FNS("list_posts")), 0);
    finish_ok();

    cr_assert_eq(reg.nfns, 4);
    cr_assert_eq(reg.nctxs, 2);
    const mizan_function_t *gp = mizan_registry_function(&reg, "get_post");
    const mizan_function_t *lc = mizan_registry_function(&reg, "list_comments");
    const mizan_function_t *lp = mizan_registry_function(&reg, "list_posts");
    const mizan_function_t *up = mizan_registry_function(&reg, "update_post");
    cr_assert_not_null(gp);
    cr_assert_not_null(lc);
    cr_assert_not_null(lp);
    cr_assert_not_null(up);
    cr_assert_str_eq(gp->name, "get_post");
    cr_assert_eq(gp->kind, MIZAN_QUERY);
    cr_assert_eq(up->kind, MIZAN_MUTATION);
    cr_assert_eq(gp->module, &mod);
    cr_assert_eq(gp->handler, handler_ok);
    cr_assert_not_null(gp->schema);

    const mizan_context_t *post = mizan_registry_context(&reg, "post");
    const mizan_context_t *feed = mizan_registry_context(&reg, "feed");
    cr_assert_not_null(post);
    cr_assert_not_null(feed);
    cr_assert_eq(post->nfns, 2);
    cr_assert_eq(post->fns[0], gp);
    cr_assert_eq(post->fns[1], lc);
    cr_assert_eq(feed->fns[0], lp);
    cr_assert_eq(post->ttl, 30);
    cr_assert_eq(post->scope, MIZAN_SCOPE_PUBLIC);
    cr_assert_eq(post->module, &mod);

    /* Invalidates resolve in declaration order. */
    cr_assert_eq(up->ninvalidates, 2);
    cr_assert_eq(up->inv[0], post);
    cr_assert_eq(up->inv[1], feed);
    cr_assert_eq(gp->ninvalidates, 0);

    /* Unknown names, prefixes and the empty name are not found. */
    cr_assert_null(mizan_registry_function(&reg, "get"));
    cr_assert_null(mizan_registry_function(&reg, "get_posts"));
    cr_assert_null(mizan_registry_function(&reg, ""));
    cr_assert_null(mizan_registry_function(&reg, "post"));
    cr_assert_null(mizan_registry_context(&reg, "get_post"));
    cr_assert_null(mizan_registry_context(&reg, "fee"));
}

Test(registry, empty_registry_finishes)
{
    finish_ok();
    cr_assert_null(mizan_registry_function(&reg, "x"));
    cr_assert_null(mizan_registry_context(&reg, "x"));
    cr_assert_str_eq(reg.schema_json, "{\"contexts\":{},\"functions\":{},\"protocol\":1,\"version\":1}");
}

Test(registry, registry_without_contexts_finishes)
{
    /* A module may serve functions only (the arrays of contexts stay
     * unallocated). */
    cr_assert_eq(add_query("q", NULL), 0);
    cr_assert_eq(add_mutation("m", NULL, NULL), 0);
    finish_ok();
    cr_assert_not_null(mizan_registry_function(&reg, "q"));
    cr_assert_not_null(mizan_registry_function(&reg, "m"));
    cr_assert_null(mizan_registry_context(&reg, "q"));
}

Test(registry, many_names_sorted_and_found)
{
    /* Registered in a scrambled order across two modules (past the
     * initial capacity of the arrays). */
    enum { N = 300 };
    char name[32];
    for (int i = 0; i < N; i++) {
        int k = (i * 7919) % N;
        snprintf(name, sizeof(name), "fn_%03d", k);
        cr_assert_eq(add_fn_on(k % 2 ? &mod : &mod2, name, MIZAN_QUERY, NULL, NULL), 0);
        snprintf(name, sizeof(name), "ctx_%03d", k);
        char fn[32];
        snprintf(fn, sizeof(fn), "fn_%03d", k);
        cr_assert_eq(add_ctx(name, NULL, FNS(fn)), 0);
    }
    finish_ok();
    cr_assert_eq(reg.nfns, N);
    cr_assert_eq(reg.nctxs, N);
    for (size_t i = 1; i < reg.nfns; i++)
        cr_assert_lt(strcmp(reg.fns[i - 1]->name, reg.fns[i]->name), 0, "functions not sorted at %zu", i);
    for (size_t i = 1; i < reg.nctxs; i++)
        cr_assert_lt(strcmp(reg.ctxs[i - 1]->name, reg.ctxs[i]->name), 0, "contexts not sorted at %zu", i);
    for (int k = 0; k < N; k++) {
        snprintf(name, sizeof(name), "fn_%03d", k);
        const mizan_function_t *f = mizan_registry_function(&reg, name);
        cr_assert_not_null(f, "%s not found", name);
        cr_assert_str_eq(f->name, name);
        cr_assert_eq(f->module, k % 2 ? &mod : &mod2);
        snprintf(name, sizeof(name), "ctx_%03d", k);
        const mizan_context_t *c = mizan_registry_context(&reg, name);
        cr_assert_not_null(c, "%s not found", name);
        cr_assert_eq(c->fns[0], f);
    }
    cr_assert_null(mizan_registry_function(&reg, "fn_300"));
    cr_assert_null(mizan_registry_function(&reg, "fn_"));
    cr_assert_null(mizan_registry_function(&reg, "a"));
    cr_assert_null(mizan_registry_function(&reg, "zzz"));
}

Test(registry, definitions_are_copied)
{
    /* The module's definitions live in buffers it reuses afterwards. */
    char name[32], schema[128], desc[32], inv[32], cname[32], cfn[32], params[128];
    snprintf(name, sizeof(name), "upd");
    snprintf(schema, sizeof(schema), "{\"type\": \"object\", \"properties\": {\"k\": {\"type\": \"string\"}}}");
    snprintf(desc, sizeof(desc), "updates");
    snprintf(inv, sizeof(inv), "c");
    const char *invs[] = {inv, NULL};
    mizan_function_def_t def = {.name = name,
                                .kind = MIZAN_MUTATION,
                                .input_schema = schema,
                                .auth = "\"staff\"",
                                .invalidates = invs,
                                .handler = handler_ok,
                                .timeout_ms = 250,
                                .description = desc};
    cr_assert_eq(mizan_module_add_function(M(&mod), &def), 0);
    snprintf(name, sizeof(name), "get");
    snprintf(desc, sizeof(desc), "reads");
    def.kind = MIZAN_QUERY;
    def.invalidates = NULL;
    def.timeout_ms = 0;
    def.auth = NULL;
    cr_assert_eq(mizan_module_add_function(M(&mod), &def), 0);
    snprintf(cname, sizeof(cname), "c");
    snprintf(cfn, sizeof(cfn), "get");
    snprintf(params, sizeof(params), "{\"type\": \"object\", \"additionalProperties\": false}");
    const char *cfns[] = {cfn, NULL};
    mizan_context_def_t cdef = {.name = cname,
                                .params_schema = params,
                                .functions = cfns,
                                .ttl = 60,
                                .scope = MIZAN_SCOPE_PERMS,
                                .description = desc};
    cr_assert_eq(mizan_module_add_context(M(&mod), &cdef), 0);
    memset(name, 'x', sizeof(name) - 1);
    memset(schema, 'x', sizeof(schema) - 1);
    memset(desc, 'x', sizeof(desc) - 1);
    memset(inv, 'x', sizeof(inv) - 1);
    memset(cname, 'x', sizeof(cname) - 1);
    memset(cfn, 'x', sizeof(cfn) - 1);
    memset(params, 'x', sizeof(params) - 1);
    finish_ok();

    const mizan_function_t *upd = mizan_registry_function(&reg, "upd");
    const mizan_function_t *get = mizan_registry_function(&reg, "get");
    const mizan_context_t *c = mizan_registry_context(&reg, "c");
    cr_assert_not_null(upd);
    cr_assert_not_null(get);
    cr_assert_not_null(c);
    cr_assert_str_eq(upd->description, "updates");
    cr_assert_str_eq(get->description, "reads");
    cr_assert_eq(upd->timeout_ms, 250);
    cr_assert_eq(get->timeout_ms, 5000, "timeout 0 takes the registry default");
    cr_assert_eq(upd->auth.kind, MIZAN_AUTH_STAFF);
    cr_assert_eq(get->auth.kind, MIZAN_AUTH_NONE, "auth NULL is false");
    cr_assert_eq(upd->nargs, 1);
    cr_assert_str_eq(upd->arg_names[0], "k");
    cr_assert_eq(upd->inv[0], c);
    cr_assert_eq(c->ttl, 60);
    cr_assert_eq(c->scope, MIZAN_SCOPE_PERMS);
    cr_assert_str_eq(c->description, "reads");
    cr_assert_eq(c->fns[0], get);
}

/* ---- refusals ------------------------------------------------------------------- */

Test(registry, invalid_kind)
{
    mizan_function_def_t def = {.name = "f", .kind = (mizan_kind_t)7};
    cr_assert_eq(mizan_module_add_function(M(&mod), &def), -1);
    finish_refused("module \"testmod\": function \"f\": kind must be MIZAN_QUERY or MIZAN_MUTATION");
}

Test(registry, negative_timeout)
{
    mizan_function_def_t def = {.name = "f", .timeout_ms = -1};
    cr_assert_eq(mizan_module_add_function(M(&mod), &def), -1);
    finish_refused("module \"testmod\": function \"f\": timeout_ms must be >= 0");
}

Test(registry, auth_and_auth_fn_together)
{
    mizan_function_def_t def = {.name = "f", .auth = "true", .auth_fn = allow_all};
    cr_assert_eq(mizan_module_add_function(M(&mod), &def), -1);
    finish_refused("module \"testmod\": function \"f\": set either auth or auth_fn, not both");
}

Test(registry, invalid_auth_spec)
{
    mizan_function_def_t def = {.name = "f", .auth = "\"admin\""};
    cr_assert_eq(mizan_module_add_function(M(&mod), &def), -1);
    finish_refused("module \"testmod\": function \"f\": auth: auth must be false, true, \"staff\", \"superuser\" or "
                   "{\"perm\": \"<non-empty string>\"}");
}

Test(registry, invalid_auth_perm)
{
    mizan_function_def_t def = {.name = "f", .auth = "{\"perm\": \"\"}"};
    cr_assert_eq(mizan_module_add_function(M(&mod), &def), -1);
    finish_refused("module \"testmod\": function \"f\": auth: auth must be false, true, \"staff\", \"superuser\" or "
                   "{\"perm\": \"<non-empty string>\"} (\"perm\" must be a non-empty string)");
}

Test(registry, auth_not_json)
{
    mizan_function_def_t def = {.name = "f", .auth = "staff"};
    cr_assert_eq(mizan_module_add_function(M(&mod), &def), -1);
    finish_refused_prefix("module \"testmod\": function \"f\": auth: invalid JSON at 1:");
}

Test(registry, negative_ttl)
{
    cr_assert_eq(add_query("q", NULL), 0);
    mizan_context_def_t def = {.name = "c", .functions = FNS("q"), .ttl = -1};
    cr_assert_eq(mizan_module_add_context(M(&mod), &def), -1);
    finish_refused("module \"testmod\": context \"c\": ttl must be >= 0 seconds");
}

Test(registry, stale_s)
{
    cr_assert_eq(add_query("q", NULL), 0);
    mizan_context_def_t def = {.name = "c", .functions = FNS("q"), .ttl = 5, .stale_s = 30};
    cr_assert_eq(mizan_module_add_context(M(&mod), &def), 0);
    /* Without a TTL nothing is stored, so nothing can be served stale. */
    mizan_context_def_t uncached = {.name = "d", .functions = FNS("q"), .ttl = 0, .stale_s = 30};
    cr_assert_eq(mizan_module_add_context(M(&mod), &uncached), 0);
    finish_ok();
    cr_assert_eq(mizan_registry_context(&reg, "c")->stale_s, 30);
    cr_assert_eq(mizan_registry_context(&reg, "d")->stale_s, 0);
}

Test(registry, negative_stale_s)
{
    cr_assert_eq(add_query("q", NULL), 0);
    mizan_context_def_t def = {.name = "c", .functions = FNS("q"), .ttl = 5, .stale_s = -1};
    cr_assert_eq(mizan_module_add_context(M(&mod), &def), -1);
    finish_refused("module \"testmod\": context \"c\": stale_s must be 0..31536000 seconds");
}

Test(registry, abi_1_contexts_get_no_stale_s)
{
    /* A module built for ABI 1 has no stale_s member: whatever lies there is not read. */
    mod.abi = 1;
    cr_assert_eq(add_query("q", NULL), 0);
    mizan_context_def_t def = {.name = "c", .functions = FNS("q"), .ttl = 5, .stale_s = 30};
    cr_assert_eq(mizan_module_add_context(M(&mod), &def), 0);
    finish_ok();
    cr_assert_eq(mizan_registry_context(&reg, "c")->stale_s, 0);
}

Test(registry, invalid_scope)
{
    cr_assert_eq(add_query("q", NULL), 0);
    mizan_context_def_t def = {.name = "c", .functions = FNS("q"), .scope = (mizan_scope_t)9};
    cr_assert_eq(mizan_module_add_context(M(&mod), &def), -1);
    finish_refused("module \"testmod\": context \"c\": scope must be public, user or perms");
}

Test(registry, duplicate_function_in_one_module)
{
    add_filler();
    cr_assert_eq(add_query("f", NULL), 0);
    cr_assert_eq(add_query("f", NULL), 0);
    finish_refused("function \"f\" is registered twice (modules \"testmod\" and \"testmod\")");
}

Test(registry, duplicate_function_across_modules)
{
    add_filler();
    cr_assert_eq(add_query("f", NULL), 0);
    cr_assert_eq(add_fn_on(&mod2, "f", MIZAN_QUERY, NULL, NULL), 0);
    mizan_err_t err = {{0}};
    cr_assert_eq(mizan_registry_finish(&reg, &err), -1);
    cr_assert(strcmp(err.msg, "function \"f\" is registered twice (modules \"testmod\" and \"othermod\")") == 0 ||
                  strcmp(err.msg, "function \"f\" is registered twice (modules \"othermod\" and \"testmod\")") == 0,
              "%s", err.msg);
}

Test(registry, duplicate_context)
{
    cr_assert_eq(add_query("q", NULL), 0);
    cr_assert_eq(add_ctx("c", NULL, FNS("q")), 0);
    cr_assert_eq(add_ctx_on(&mod2, "c", NULL, FNS("q")), 0);
    mizan_err_t err = {{0}};
    cr_assert_eq(mizan_registry_finish(&reg, &err), -1);
    cr_assert(strcmp(err.msg, "context \"c\" is registered twice (modules \"testmod\" and \"othermod\")") == 0 ||
                  strcmp(err.msg, "context \"c\" is registered twice (modules \"othermod\" and \"testmod\")") == 0,
              "%s", err.msg);
}

Test(registry, a_function_and_a_context_may_share_a_name)
{
    cr_assert_eq(add_query("post", NULL), 0);
    cr_assert_eq(add_ctx("post", NULL, FNS("post")), 0);
    finish_ok();
    cr_assert_not_null(mizan_registry_function(&reg, "post"));
    cr_assert_not_null(mizan_registry_context(&reg, "post"));
}

Test(registry, context_names_unknown_function)
{
    cr_assert_eq(add_query("q", NULL), 0);
    cr_assert_eq(add_ctx("c", NULL, FNS("q", "nope")), 0);
    finish_refused("context \"c\" names unknown function \"nope\"");
}

Test(registry, context_lists_a_mutation)
{
    cr_assert_eq(add_query("q", NULL), 0);
    cr_assert_eq(add_mutation("m", NULL, NULL), 0);
    cr_assert_eq(add_ctx("c", NULL, FNS("q", "m")), 0);
    finish_refused("context \"c\": function \"m\" is a mutation; contexts hold queries only");
}

Test(registry, context_lists_a_function_twice)
{
    cr_assert_eq(add_query("q", NULL), 0);
    cr_assert_eq(add_ctx("c", NULL, FNS("q", "q")), 0);
    finish_refused("context \"c\" lists function \"q\" twice");
}

Test(registry, context_without_functions)
{
    add_filler();
    cr_assert_eq(add_ctx("c", NULL, NULL), 0);
    finish_refused("context \"c\" has no functions");
}

Test(registry, context_may_reference_a_function_of_another_module)
{
    cr_assert_eq(add_fn_on(&mod2, "q", MIZAN_QUERY, NULL, NULL), 0);
    cr_assert_eq(add_ctx("c", NULL, FNS("q")), 0);
    finish_ok();
    cr_assert_eq(mizan_registry_context(&reg, "c")->fns[0]->module, &mod2);
}

Test(registry, mutation_invalidates_unknown_context)
{
    add_filler();
    cr_assert_eq(add_mutation("m", NULL, FNS("nope")), 0);
    finish_refused("function \"m\" invalidates unknown context \"nope\"");
}

Test(registry, mutation_invalidates_a_context_twice)
{
    cr_assert_eq(add_query("q", NULL), 0);
    cr_assert_eq(add_ctx("c", NULL, FNS("q")), 0);
    cr_assert_eq(add_mutation("m", NULL, FNS("c", "c")), 0);
    finish_refused("function \"m\" lists context \"c\" twice in invalidates");
}

/* ---- scope by construction (PROTOCOL section 4, rev 2) ------------------------------------- */

/* Registers query fn with auth (JSON text, or NULL with a native predicate) and context c of scope sc over it. */
static void add_scoped(const char *fn, const char *auth, bool native, const char *c, mizan_scope_t sc)
{
    mizan_function_def_t def = {.name = fn, .kind = MIZAN_QUERY, .auth = auth, .handler = handler_ok};
    if (native)
        def.auth_fn = allow_all;
    cr_assert_eq(mizan_module_add_function(M(&mod), &def), 0);
    mizan_context_def_t cd = {.name = c, .functions = FNS("filler", fn), .ttl = 30, .scope = sc};
    cr_assert_eq(add_query("filler", NULL), 0);
    cr_assert_eq(mizan_module_add_context(M(&mod), &cd), 0);
}

Test(registry, public_context_with_a_token_function_refused)
{
    add_scoped("whoami", "true", false, "me", MIZAN_SCOPE_PUBLIC);
    finish_refused("context \"me\" is public-scoped but its function \"whoami\" requires a token (auth true), so "
                   "its answer may depend on who calls: one caller's bundle would be served to callers who could "
                   "not compute it; set the context's scope to \"user\"");
}

Test(registry, perms_context_with_a_token_function_refused)
{
    add_scoped("whoami", "true", false, "me", MIZAN_SCOPE_PERMS);
    finish_refused_prefix("context \"me\" is perms-scoped but its function \"whoami\" requires a token");
}

Test(registry, public_or_perms_context_with_a_native_predicate_refused)
{
    add_scoped("nat", NULL, true, "natc", MIZAN_SCOPE_PERMS);
    finish_refused_prefix("context \"natc\" is perms-scoped but its function \"nat\" has a native auth predicate");
}

Test(registry, public_context_with_a_native_predicate_refused)
{
    add_scoped("nat", NULL, true, "natc", MIZAN_SCOPE_PUBLIC);
    finish_refused_prefix("context \"natc\" is public-scoped but its function \"nat\" has a native auth predicate");
}

Test(registry, public_context_with_staff_superuser_or_perm_refused)
{
    const char *auths[] = {"\"staff\"", "\"superuser\"", "{\"perm\": \"blog.view_drafts\"}"};
    for (size_t i = 0; i < 3; i++) {
        mizan_registry_deinit(&reg);
        mizan_registry_init(&reg, 5000);
        add_scoped("restricted", auths[i], false, "drafts", MIZAN_SCOPE_PUBLIC);
        finish_refused("context \"drafts\" is public-scoped but its function \"restricted\" requires staff, "
                       "superuser or a permission: one caller's bundle would be served to callers who could not "
                       "compute it; set the context's scope to \"perms\" or \"user\"");
    }
}

Test(registry, perms_and_user_scopes_accept_what_their_callers_can_see)
{
    const char *auths[] = {"\"staff\"", "\"superuser\"", "{\"perm\": \"blog.view_drafts\"}"};
    for (size_t i = 0; i < 3; i++)
        for (int user = 0; user < 2; user++) {
            mizan_registry_deinit(&reg);
            mizan_registry_init(&reg, 5000);
            add_scoped("restricted", auths[i], false, "drafts", user ? MIZAN_SCOPE_USER : MIZAN_SCOPE_PERMS);
            finish_ok();
        }
    mizan_registry_deinit(&reg);
    mizan_registry_init(&reg, 5000);
    add_scoped("whoami", "true", false, "me", MIZAN_SCOPE_USER);
    mizan_function_def_t nat = {.name = "nat", .kind = MIZAN_QUERY, .auth_fn = allow_all, .handler = handler_ok};
    cr_assert_eq(mizan_module_add_function(M(&mod), &nat), 0);
    mizan_context_def_t nc = {.name = "natc", .functions = FNS("nat", "whoami"), .scope = MIZAN_SCOPE_USER};
    cr_assert_eq(mizan_module_add_context(M(&mod), &nc), 0);
    finish_ok();
}

Test(registry, public_context_of_anonymous_functions_accepted)
{
    add_scoped("get_post", "false", false, "post", MIZAN_SCOPE_PUBLIC);
    finish_ok();
}

Test(registry, function_forwarding_identity_needs_a_user_context)
{
    /* What upstream.c sets for an upstream function that sends the caller's identity on. */
    add_scoped("up_get", "false", false, "upc", MIZAN_SCOPE_PERMS);
    for (size_t i = 0; i < reg.nfns; i++)
        if (strcmp(reg.fns[i]->name, "up_get") == 0)
            reg.fns[i]->forwards_identity = true;
    finish_refused("context \"upc\" is perms-scoped but its function \"up_get\" forwards the caller's identity to "
                   "its upstream: one caller's bundle would be served to callers who could not compute it; set the "
                   "context's scope to \"user\"");
}

Test(registry, query_with_invalidates)
{
    cr_assert_eq(add_query("q", NULL), 0);
    cr_assert_eq(add_ctx("c", NULL, FNS("q")), 0);
    cr_assert_eq(add_fn_on(&mod, "q2", MIZAN_QUERY, NULL, FNS("c")), 0);
    finish_refused("function \"q2\": only mutations invalidate contexts (it is a query)");
}

Test(registry, mutation_with_empty_invalidates)
{
    add_filler();
    cr_assert_eq(add_mutation("m", NULL, NULL), 0);
    finish_ok();
    const mizan_function_t *m = mizan_registry_function(&reg, "m");
    cr_assert_eq(m->ninvalidates, 0);
    cr_assert_not_null(m->inv);
}

/* ---- params schemas --------------------------------------------------------------- */

/* Registers context "c" over query "q" with the params schema text. */
static void ctx_with_params(const char *params)
{
    cr_assert_eq(add_query("q", NULL), 0);
    cr_assert_eq(add_ctx("c", params, FNS("q")), 0);
}

#define TYPE_MSG(p) \
    "context \"c\": param \"" p "\" must declare \"type\" as string, integer, boolean or null (or an array of those)"

Test(registry, param_types_allowed)
{
    ctx_with_params("{\"type\": \"object\", \"additionalProperties\": false, \"properties\": {"
                    "\"s\": {\"type\": \"string\"}, \"i\": {\"type\": \"integer\", \"minimum\": 1},"
                    " \"b\": {\"type\": \"boolean\"}, \"n\": {\"type\": \"null\"},"
                    " \"o\": {\"type\": [\"integer\", \"null\"]}}}");
    finish_ok();
    const mizan_context_t *c = mizan_registry_context(&reg, "c");
    cr_assert_eq(c->nparams, 5);
    const char *sorted[] = {"b", "i", "n", "o", "s"};
    const char *types[] = {"boolean", "integer", "null", NULL, "string"};
    for (size_t i = 0; i < 5; i++) {
        cr_assert_str_eq(c->param_names[i], sorted[i]);
        cr_assert_not_null(c->param_types[i]);
        if (types[i] != NULL)
            cr_assert_str_eq(json_string_value(c->param_types[i]), types[i]);
        else
            cr_assert(json_is_array(c->param_types[i]));
        /* Borrowed from the declared schema. */
        json_t *declared = json_object_get(json_object_get(json_object_get(c->params_src, "properties"), sorted[i]),
                                           "type");
        cr_assert_eq(c->param_types[i], declared);
    }
    cr_assert_not_null(c->params);
}

Test(registry, param_type_number_refused)
{
    ctx_with_params("{\"type\": \"object\", \"additionalProperties\": false, "
                    "\"properties\": {\"x\": {\"type\": \"number\"}}}");
    finish_refused(TYPE_MSG("x"));
}

Test(registry, param_type_object_refused)
{
    ctx_with_params("{\"type\": \"object\", \"additionalProperties\": false, "
                    "\"properties\": {\"a\": {\"type\": \"integer\"}, \"x\": {\"type\": \"object\"}}}");
    finish_refused(TYPE_MSG("x"));
}

Test(registry, param_type_array_refused)
{
    ctx_with_params("{\"type\": \"object\", \"additionalProperties\": false, "
                    "\"properties\": {\"x\": {\"type\": \"array\", \"items\": {\"type\": \"integer\"}}}}");
    finish_refused(TYPE_MSG("x"));
}

Test(registry, param_without_type_refused)
{
    ctx_with_params("{\"type\": \"object\", \"additionalProperties\": false, "
                    "\"properties\": {\"x\": {\"minimum\": 1}}}");
    finish_refused(TYPE_MSG("x"));
}

Test(registry, param_boolean_schema_refused)
{
    ctx_with_params("{\"type\": \"object\", \"additionalProperties\": false, \"properties\": {\"x\": true}}");
    finish_refused(TYPE_MSG("x"));
}

Test(registry, param_type_list_with_a_disallowed_member_refused)
{
    ctx_with_params("{\"type\": \"object\", \"additionalProperties\": false, "
                    "\"properties\": {\"x\": {\"type\": [\"integer\", \"number\"]}}}");
    finish_refused(TYPE_MSG("x"));
}

Test(registry, param_empty_type_list_refused)
{
    /* The schema compiler refuses an empty type list first. */
    ctx_with_params("{\"type\": \"object\", \"additionalProperties\": false, "
                    "\"properties\": {\"x\": {\"type\": []}}}");
    finish_refused("context \"c\": params schema: /properties/x/type: must be a type name or a non-empty array of "
                   "distinct type names");
}

#define EXTRA_MSG                                                                                                 \
    "context \"c\": params schema must set \"additionalProperties\": false (an undeclared param must never mint " \
    "a new cache entry)"

Test(registry, params_without_additional_properties_false_refused)
{
    ctx_with_params("{\"type\": \"object\", \"properties\": {\"x\": {\"type\": \"integer\"}}}");
    finish_refused(EXTRA_MSG);
}

Test(registry, params_with_additional_properties_true_refused)
{
    ctx_with_params("{\"type\": \"object\", \"additionalProperties\": true}");
    finish_refused(EXTRA_MSG);
}

Test(registry, params_with_additional_properties_schema_refused)
{
    ctx_with_params("{\"type\": \"object\", \"additionalProperties\": {\"type\": \"string\"}}");
    finish_refused(EXTRA_MSG);
}

Test(registry, params_schema_not_an_object_refused)
{
    ctx_with_params("true");
    finish_refused("context \"c\": params schema must be a JSON object");
}

Test(registry, params_schema_of_another_type_refused)
{
    ctx_with_params("{\"type\": \"array\", \"additionalProperties\": false}");
    finish_refused("context \"c\": params schema must describe an object");
}

Test(registry, params_schema_unknown_keyword)
{
    ctx_with_params("{\"type\": \"object\", \"additionalProperties\": false, "
                    "\"properties\": {\"x\": {\"type\": \"integer\", \"minimun\": 1}}}");
    finish_refused("context \"c\": params schema: /properties/x/minimun: unknown keyword");
}

Test(registry, params_schema_not_json)
{
    cr_assert_eq(add_query("q", NULL), 0);
    cr_assert_eq(add_ctx("c", "{\"type\": ", FNS("q")), -1);
    finish_refused_prefix("module \"testmod\": context \"c\": params_schema: invalid JSON at 1:");
}

Test(registry, context_without_params_schema)
{
    ctx_with_params(NULL);
    finish_ok();
    const mizan_context_t *c = mizan_registry_context(&reg, "c");
    cr_assert_eq(c->nparams, 0);
    json_t *want = json_loads("{\"type\": \"object\", \"additionalProperties\": false}", 0, NULL);
    cr_assert(json_equal(c->params_src, want));
    json_decref(want);
}

/* ---- input schemas ------------------------------------------------------------------ */

Test(registry, input_schema_unknown_keyword_names_function_and_keyword)
{
    add_filler();
    cr_assert_eq(add_query("add_post",
                           "{\"type\": \"object\", \"properties\": {\"title\": {\"type\": \"string\", "
                           "\"minLenght\": 1}}}"),
                 0);
    finish_refused("function \"add_post\": input schema: /properties/title/minLenght: unknown keyword");
}

Test(registry, input_schema_unknown_keyword)
{
    add_filler();
    cr_assert_eq(add_query("f", "{\"type\": \"object\", \"allOff\": [{}]}"), 0);
    finish_refused("function \"f\": input schema: /allOff: unknown keyword");
}

Test(registry, input_schema_must_describe_an_object)
{
    add_filler();
    cr_assert_eq(add_query("f", "{\"type\": \"string\"}"), 0);
    finish_refused("function \"f\": input schema must describe an object (\"type\": \"object\")");
}

Test(registry, input_schema_type_list_refused)
{
    add_filler();
    cr_assert_eq(add_query("f", "{\"type\": [\"object\", \"null\"]}"), 0);
    finish_refused("function \"f\": input schema must describe an object (\"type\": \"object\")");
}

Test(registry, input_schema_not_an_object)
{
    add_filler();
    cr_assert_eq(add_query("f", "[1]"), 0);
    finish_refused("function \"f\": input schema must be a JSON object");
}

Test(registry, input_schema_not_json)
{
    cr_assert_eq(add_query("f", "{\"type\": \"object\",}"), -1);
    finish_refused_prefix("module \"testmod\": function \"f\": input_schema: invalid JSON at 1:");
}

Test(registry, input_schema_duplicate_member)
{
    cr_assert_eq(add_query("f", "{\"type\": \"object\", \"type\": \"object\"}"), -1);
    finish_refused_prefix("module \"testmod\": function \"f\": input_schema: invalid JSON at 1:");
}

/* ---- derived argument data -------------------------------------------------------------- */

Test(registry, arg_names_and_open_args)
{
    add_filler();
    cr_assert_eq(add_query("none", NULL), 0);
    cr_assert_eq(add_query("closed", "{\"type\": \"object\", \"additionalProperties\": false, \"properties\": "
                                     "{\"c\": {}, \"a\": {}, \"b\": {\"type\": \"integer\"}}}"),
                 0);
    cr_assert_eq(add_query("open", "{\"type\": \"object\", \"properties\": {\"z\": {}, \"y\": {}}}"), 0);
    cr_assert_eq(add_query("typed_extra", "{\"type\": \"object\", \"properties\": {\"a\": {}}, "
                                          "\"additionalProperties\": {\"type\": \"string\"}}"),
                 0);
    cr_assert_eq(add_query("explicit_true", "{\"additionalProperties\": true}"), 0);
    cr_assert_eq(add_query("boolean", "true"), 0);
    finish_ok();

    const mizan_function_t *f = mizan_registry_function(&reg, "none");
    cr_assert_eq(f->nargs, 0);
    cr_assert_not_null(f->arg_names);
    cr_assert(f->open_args);
    json_t *want = json_loads("{\"type\": \"object\"}", 0, NULL);
    cr_assert(json_equal(f->schema_src, want), "NULL input schema is {\"type\": \"object\"}");
    json_decref(want);

    f = mizan_registry_function(&reg, "closed");
    cr_assert_eq(f->nargs, 3);
    cr_assert_str_eq(f->arg_names[0], "a");
    cr_assert_str_eq(f->arg_names[1], "b");
    cr_assert_str_eq(f->arg_names[2], "c");
    cr_assert(!f->open_args);

    f = mizan_registry_function(&reg, "open");
    cr_assert_eq(f->nargs, 2);
    cr_assert_str_eq(f->arg_names[0], "y");
    cr_assert_str_eq(f->arg_names[1], "z");
    cr_assert(f->open_args);

    f = mizan_registry_function(&reg, "typed_extra");
    cr_assert_eq(f->nargs, 1);
    cr_assert(f->open_args);

    f = mizan_registry_function(&reg, "explicit_true");
    cr_assert_eq(f->nargs, 0);
    cr_assert(f->open_args);

    f = mizan_registry_function(&reg, "boolean");
    cr_assert_eq(f->nargs, 0);
    cr_assert(f->open_args);
}

Test(registry, native_auth_gets_the_module_data)
{
    add_filler();
    static int data;
    mizan_module_set_data(M(&mod), &data, NULL);
    mizan_function_def_t def = {.name = "f", .auth_fn = allow_all, .handler = handler_ok};
    cr_assert_eq(mizan_module_add_function(M(&mod), &def), 0);
    finish_ok();
    const mizan_function_t *f = mizan_registry_function(&reg, "f");
    cr_assert_eq(f->auth.kind, MIZAN_AUTH_NATIVE);
    cr_assert_eq(f->auth.fn, allow_all);
    cr_assert_eq(f->auth.fn_data, &data);
}

/* ---- the schema endpoint's JSON ----------------------------------------------------------- */

Test(registry, to_json_shape)
{
    mizan_function_def_t get = {.name = "get_post",
                                .kind = MIZAN_QUERY,
                                .input_schema = PARAMS_POST,
                                .handler = handler_ok,
                                .description = "One post."};
    mizan_function_def_t feed = {.name = "list_posts", .kind = MIZAN_QUERY, .handler = handler_ok, .auth = "true"};
    mizan_function_def_t upd = {.name = "update_post",
                                .kind = MIZAN_MUTATION,
                                .auth = "{\"perm\": \"blog.edit\"}",
                                .invalidates = FNS("post", "feed"),
                                .timeout_ms = 250};
    mizan_function_def_t plain = {.name = "ping", .kind = MIZAN_MUTATION, .auth = "\"superuser\""};
    mizan_function_def_t native = {.name = "nat", .kind = MIZAN_QUERY, .auth_fn = allow_all, .handler = handler_ok};
    mizan_context_def_t post = {.name = "post",
                                .params_schema = PARAMS_POST,
                                .functions = FNS("get_post", "list_posts"),
                                .ttl = 60,
                                .scope = MIZAN_SCOPE_USER,
                                .description = "A post page."};
    mizan_context_def_t feedc = {.name = "feed", .functions = FNS("list_posts"), .ttl = 0, .scope = MIZAN_SCOPE_USER};
    mizan_context_def_t drafts = {.name = "drafts", .functions = FNS("nat"), .ttl = 5, .scope = MIZAN_SCOPE_USER};
    cr_assert_eq(mizan_module_add_function(M(&mod), &get), 0);
    cr_assert_eq(mizan_module_add_function(M(&mod), &feed), 0);
    cr_assert_eq(mizan_module_add_function(M(&mod), &upd), 0);
    cr_assert_eq(mizan_module_add_function(M(&mod), &plain), 0);
    cr_assert_eq(mizan_module_add_function(M(&mod), &native), 0);
    cr_assert_eq(mizan_module_add_context(M(&mod), &post), 0);
    cr_assert_eq(mizan_module_add_context(M(&mod), &feedc), 0);
    cr_assert_eq(mizan_module_add_context(M(&mod), &drafts), 0);
    finish_ok();

    json_t *doc = mizan_registry_to_json(&reg);
    cr_assert_not_null(doc);
    json_error_t jerr;
    json_t *want = json_loads(
        "{\"version\": 1, \"protocol\": 1,"
        " \"functions\": {"
        "  \"get_post\": {\"kind\": \"query\", \"input_schema\": " PARAMS_POST ", \"auth\": false,"
        "   \"contexts\": [\"post\"], \"implemented\": true, \"timeout_ms\": 5000, \"output_schema\": null, \"description\": \"One post.\"},"
        "  \"list_posts\": {\"kind\": \"query\", \"input_schema\": {\"type\": \"object\"}, \"auth\": true,"
        "   \"contexts\": [\"feed\", \"post\"], \"implemented\": true, \"timeout_ms\": 5000, \"output_schema\": null},"
        "  \"nat\": {\"kind\": \"query\", \"input_schema\": {\"type\": \"object\"}, \"auth\": \"native\","
        "   \"contexts\": [\"drafts\"], \"implemented\": true, \"timeout_ms\": 5000, \"output_schema\": null},"
        "  \"ping\": {\"kind\": \"mutation\", \"input_schema\": {\"type\": \"object\"}, \"auth\": \"superuser\","
        "   \"contexts\": [], \"implemented\": false, \"timeout_ms\": 5000, \"output_schema\": null, \"invalidates\": []},"
        "  \"update_post\": {\"kind\": \"mutation\", \"input_schema\": {\"type\": \"object\"},"
        "   \"auth\": {\"perm\": \"blog.edit\"}, \"contexts\": [], \"implemented\": false, \"timeout_ms\": 250, \"output_schema\": null,"
        "   \"invalidates\": [\"post\", \"feed\"]}},"
        " \"contexts\": {"
        "  \"drafts\": {\"params_schema\": {\"type\": \"object\", \"additionalProperties\": false},"
        "   \"functions\": [\"nat\"], \"ttl\": 5, \"scope\": \"user\"},"
        "  \"feed\": {\"params_schema\": {\"type\": \"object\", \"additionalProperties\": false},"
        "   \"functions\": [\"list_posts\"], \"ttl\": 0, \"scope\": \"user\"},"
        "  \"post\": {\"params_schema\": " PARAMS_POST ", \"functions\": [\"get_post\", \"list_posts\"],"
        "   \"ttl\": 60, \"scope\": \"user\", \"description\": \"A post page.\"}}}",
        0, &jerr);
    cr_assert_not_null(want, "test error: %s at %d:%d", jerr.text, jerr.line, jerr.column);
    char *got = json_dumps(doc, JSON_SORT_KEYS | JSON_INDENT(1));
    cr_assert(json_equal(doc, want), "schema document differs:\n%s", got);
    free(got);

    /* The endpoint's body is the same document, compact with sorted keys. */
    char *text = json_dumps(doc, JSON_COMPACT | JSON_SORT_KEYS);
    cr_assert_str_eq(reg.schema_json, text);
    free(text);
    json_decref(doc);
    json_decref(want);
}

/* ---- the module API ------------------------------------------------------------------------- */

static int freed_count;
static void count_free(void *data)
{
    (void)data;
    freed_count++;
}

Test(module_api, accessors)
{
    cr_assert_eq(mizan_module_abi(M(&mod)), MIZAN_ABI_VERSION);
    cr_assert_eq(mizan_module_config(M(&mod)), mod_config);
    cr_assert_str_eq(mizan_module_config_dir(M(&mod)), "/etc/mizan");
    cr_assert_eq(mizan_module_workers(M(&mod)), 12);
    static int data;
    mizan_module_set_data(M(&mod), &data, count_free);
    cr_assert_eq(mod.data, &data);
    cr_assert_eq(mod.free_fn, count_free);
}

Test(module_api, fail_records_the_message)
{
    cr_assert_eq(mizan_module_fail(M(&mod), "cannot open %s: %d", "blog.db", 13), -1);
    cr_assert_str_eq(mod.error, "cannot open blog.db: 13");
    char longmsg[1000];
    memset(longmsg, 'm', sizeof(longmsg) - 1);
    longmsg[sizeof(longmsg) - 1] = '\0';
    cr_assert_eq(mizan_module_fail(M(&mod), "%s", longmsg), -1);
    cr_assert_eq(strlen(mod.error), sizeof(mod.error) - 1);
}

Test(module_api, unload_runs_each_free_fn_once)
{
    mizan_modinst_t *mods = calloc(3, sizeof(*mods));
    cr_assert_not_null(mods);
    static int a, b;
    mods[0].data = &a;
    mods[0].free_fn = count_free;
    mods[2].data = &b;
    mods[2].free_fn = count_free;
    freed_count = 0;
    mizan_modules_unload(mods, 3);
    cr_assert_eq(freed_count, 2);
    mizan_modules_unload(NULL, 0);
}

/* A one-module config (only the fields mizan_modules_load reads). */
static void one_module_config(mizan_config_t *cfg, mizan_module_conf_t *mc, const char *name, const char *path,
                              json_t *config)
{
    memset(cfg, 0, sizeof(*cfg));
    memset(mc, 0, sizeof(*mc));
    cfg->file = "/etc/mizan/mizan.json";
    cfg->dir = "/etc/mizan";
    cfg->workers = 3;
    mc->name = (char *)name;
    mc->path = (char *)path;
    mc->config = config;
    cfg->modules = mc;
    cfg->nmodules = 1;
}

Test(module_api, load_missing_shared_object)
{
    mizan_config_t cfg;
    mizan_module_conf_t mc;
    json_t *config = json_object();
    one_module_config(&cfg, &mc, "ghost", "/nonexistent/ghost.so", config);
    mizan_modinst_t *mods = NULL;
    size_t nmods = 99;
    mizan_err_t err = {{0}};
    int rc = mizan_modules_load(&reg, &cfg, &mods, &nmods, &err);
    cr_assert_eq(rc, -1);
    cr_assert_not_null(mods);
    cr_assert_eq(nmods, 0);
    const char *prefix = "/etc/mizan/mizan.json: module \"ghost\": cannot load /nonexistent/ghost.so: ";
    cr_assert(strncmp(err.msg, prefix, strlen(prefix)) == 0, "%s", err.msg);
    const char *suffix = " (build it, or fix \"modules[0]\": a bare name is looked up as <module_dir>/<name>.so)";
    size_t n = strlen(err.msg), s = strlen(suffix);
    cr_assert(n > s && strcmp(err.msg + n - s, suffix) == 0, "%s", err.msg);
    mizan_modules_unload(mods, nmods);
    json_decref(config);
}

Test(module_api, load_shared_object_without_entry_point)
{
    /* Any shared object that does not export mizan_module_init: jansson. */
    Dl_info info;
    json_t *(*fn)(void) = json_object;
    void *addr;
    memcpy(&addr, &fn, sizeof(addr));
    cr_assert_neq(dladdr(addr, &info), 0);
    cr_assert_not_null(info.dli_fname);
    mizan_config_t cfg;
    mizan_module_conf_t mc;
    json_t *config = json_object();
    one_module_config(&cfg, &mc, "plain", info.dli_fname, config);
    mizan_modinst_t *mods = NULL;
    size_t nmods = 0;
    mizan_err_t err = {{0}};
    cr_assert_eq(mizan_modules_load(&reg, &cfg, &mods, &nmods, &err), -1);
    char want[1024];
    snprintf(want, sizeof(want), "/etc/mizan/mizan.json: module \"plain\" (%s) does not export mizan_module_init()",
             info.dli_fname);
    cr_assert_str_eq(err.msg, want);
    cr_assert_eq(nmods, 1);
    cr_assert_str_eq(mods[0].name, "plain");
    cr_assert_eq(mods[0].config, config);
    cr_assert_str_eq(mods[0].config_dir, "/etc/mizan");
    cr_assert_eq(mods[0].workers, 3);
    cr_assert_eq(mods[0].reg, &reg);
    mizan_modules_unload(mods, nmods);
    json_decref(config);
}

/* The blog example's shared object in the build tree, or NULL. */
static const char *blog_so(char *buf, size_t cap)
{
    const char *dir = getenv("MIZAN_TEST_MODULE_DIR");
    if (dir == NULL || dir[0] == '\0')
        return NULL;
    snprintf(buf, cap, "%s/blog.so", dir);
    return access(buf, R_OK) == 0 ? buf : NULL;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

Test(module_api, load_the_blog_module)
{
    char so[PATH_MAX];
    if (blog_so(so, sizeof(so)) == NULL)
        cr_assert_fail("MIZAN_TEST_MODULE_DIR/blog.so is not built (the unit tests depend on the blog module)");
    char dir[] = "/tmp/mizan-test-registry-XXXXXX";
    cr_assert_not_null(mkdtemp(dir), "mkdtemp: %s", strerror(errno));
    char db[PATH_MAX];
    snprintf(db, sizeof(db), "%s/blog.db", dir);
    unsetenv("MIZAN_BLOG_DB");
    mizan_config_t cfg;
    mizan_module_conf_t mc;
    json_t *config = json_pack("{s:s}", "db", db);
    one_module_config(&cfg, &mc, "blog", so, config);
    cfg.dir = dir;
    mizan_modinst_t *mods = NULL;
    size_t nmods = 0;
    mizan_err_t err = {{0}};
    int rc = mizan_modules_load(&reg, &cfg, &mods, &nmods, &err);
    cr_assert_eq(rc, 0, "%s", err.msg);
    cr_assert_eq(nmods, 1);
    mizan_err_t ferr = {{0}};
    cr_assert_eq(mizan_registry_finish(&reg, &ferr), 0, "%s", ferr.msg);
    static const char *fns[] = {"ping", "add", "echo", "get_post", "list_comments", "get_author", "list_posts",
                                "whoami", "create_post", "update_post", "add_comment", "delete_post", NULL};
    for (size_t i = 0; fns[i] != NULL; i++) {
        const mizan_function_t *f = mizan_registry_function(&reg, fns[i]);
        cr_assert_not_null(f, "blog function %s missing", fns[i]);
        cr_assert_eq(f->module, &mods[0]);
    }
    const mizan_function_t *upd = mizan_registry_function(&reg, "update_post");
    cr_assert_eq(upd->kind, MIZAN_MUTATION);
    const mizan_context_t *post = mizan_registry_context(&reg, "post");
    cr_assert_not_null(post);
    cr_assert_eq(post->nparams, 1);
    cr_assert_str_eq(post->param_names[0], "post_id");
    cr_assert_eq(post->ttl, 60);
    cr_assert_eq(mizan_registry_context(&reg, "me")->scope, MIZAN_SCOPE_USER);
    cr_assert_eq(mizan_registry_context(&reg, "drafts")->scope, MIZAN_SCOPE_PERMS);
    /* Built for this gateway's ABI; its open slow functions run at most 4 at a time. */
    cr_assert_eq(mods[0].abi, MIZAN_ABI_VERSION);
    static const char *slow[] = {"sleep", "slow_a", "slow_b", "slow_c", "slow_d"};
    for (size_t i = 0; i < 5; i++)
        cr_assert_eq(mizan_registry_function(&reg, slow[i])->max_concurrency, 4, "%s", slow[i]);
    cr_assert_eq(mizan_registry_function(&reg, "ping")->max_concurrency, 0);
    mizan_modules_unload(mods, nmods);
    json_decref(config);
    nftw(dir, remove_entry, 8, FTW_DEPTH | FTW_PHYS);
}

Test(module_api, blog_module_refusing_its_config)
{
    char so[PATH_MAX];
    if (blog_so(so, sizeof(so)) == NULL)
        cr_assert_fail("MIZAN_TEST_MODULE_DIR/blog.so is not built (the unit tests depend on the blog module)");
    mizan_config_t cfg;
    mizan_module_conf_t mc;
    json_t *config = json_pack("{s:s}", "bogus", "x");
    one_module_config(&cfg, &mc, "blog", so, config);
    mizan_modinst_t *mods = NULL;
    size_t nmods = 0;
    mizan_err_t err = {{0}};
    cr_assert_eq(mizan_modules_load(&reg, &cfg, &mods, &nmods, &err), -1);
    const char *prefix = "/etc/mizan/mizan.json: module \"blog\" failed to start: unknown config key \"bogus\"";
    cr_assert(strncmp(err.msg, prefix, strlen(prefix)) == 0, "%s", err.msg);
    mizan_modules_unload(mods, nmods);
    json_decref(config);
}

/* ---- concurrency limits and module ABI versions ------------------------------------------------ */

Test(registry, max_concurrency_is_copied_and_enforced)
{
    mizan_function_def_t def = {.name = "slow", .kind = MIZAN_QUERY, .handler = handler_ok, .max_concurrency = 2};
    cr_assert_eq(mizan_module_add_function(M(&mod), &def), 0);
    add_filler();
    finish_ok();
    const mizan_function_t *f = mizan_registry_function(&reg, "slow");
    cr_assert_eq(f->max_concurrency, 2);
    cr_assert(mizan_function_acquire(f));
    cr_assert(mizan_function_acquire(f));
    cr_assert_not(mizan_function_acquire(f), "a third run past a limit of 2 was let through");
    mizan_function_release(f);
    cr_assert(mizan_function_acquire(f), "a released slot is not reusable");
    /* Unlimited functions always pass. */
    const mizan_function_t *filler = mizan_registry_function(&reg, "filler");
    for (int i = 0; i < 100; i++)
        cr_assert(mizan_function_acquire(filler));
}

Test(registry, negative_max_concurrency_refused)
{
    mizan_function_def_t def = {.name = "slow", .kind = MIZAN_QUERY, .handler = handler_ok, .max_concurrency = -1};
    cr_assert_eq(mizan_module_add_function(M(&mod), &def), -1);
    finish_refused("module \"testmod\": function \"slow\": max_concurrency must be >= 0 (0: unlimited)");
}

Test(registry, abi_1_definitions_get_no_limit)
{
    /* A module built for ABI 1 has no max_concurrency member: whatever lies there is not read. */
    mod.abi = 1;
    mizan_function_def_t def = {.name = "slow", .kind = MIZAN_QUERY, .handler = handler_ok, .max_concurrency = 7};
    cr_assert_eq(mizan_module_add_function(M(&mod), &def), 0);
    add_filler();
    finish_ok();
    cr_assert_eq(mizan_registry_function(&reg, "slow")->max_concurrency, 0);
}

Test(registry, config_overrides_limits)
{
    mizan_function_def_t def = {.name = "slow", .kind = MIZAN_QUERY, .handler = handler_ok, .max_concurrency = 4};
    cr_assert_eq(mizan_module_add_function(M(&mod), &def), 0);
    add_filler();
    finish_ok();
    mizan_err_t err = {{0}};
    json_t *ok = json_pack("{s:i, s:i}", "slow", 0, "filler", 3);
    cr_assert_eq(mizan_registry_limits(&reg, ok, "m.json", &err), 0, "%s", err.msg);
    cr_assert_eq(mizan_registry_function(&reg, "slow")->max_concurrency, 0);
    cr_assert_eq(mizan_registry_function(&reg, "filler")->max_concurrency, 3);
    json_decref(ok);
    json_t *unknown = json_pack("{s:i}", "nope", 1);
    cr_assert_eq(mizan_registry_limits(&reg, unknown, "m.json", &err), -1);
    cr_assert_str_eq(err.msg, "m.json: field \"max_concurrency.nope\": no function \"nope\" is registered");
    json_decref(unknown);
    json_t *neg = json_pack("{s:i}", "slow", -2);
    cr_assert_eq(mizan_registry_limits(&reg, neg, "m.json", &err), -1);
    cr_assert_str_eq(err.msg, "m.json: field \"max_concurrency.slow\" must be an integer from 0 (unlimited) to 1000000");
    json_decref(neg);
    json_t *notobj = json_pack("[i]", 1);
    cr_assert_eq(mizan_registry_limits(&reg, notobj, "m.json", &err), -1);
    json_decref(notobj);
    cr_assert_eq(mizan_registry_limits(&reg, NULL, "m.json", &err), 0);
}

/*
 * Compiles a module from source text into dir/name.so with the system C
 * compiler against this tree's include/ (no sanitizer: like a module built
 * elsewhere). Returns the path in buf.
 */
static const char *build_module(const char *dir, const char *name, const char *source, char *buf, size_t cap)
{
    const char *src_dir = getenv("MIZAN_TEST_SOURCE_DIR");
    cr_assert(src_dir != NULL && src_dir[0] != '\0', "MIZAN_TEST_SOURCE_DIR is not set");
    char c_path[PATH_MAX], cmd[4 * PATH_MAX];
    snprintf(c_path, sizeof(c_path), "%s/%s.c", dir, name);
    snprintf(buf, cap, "%s/%s.so", dir, name);
    FILE *f = fopen(c_path, "w");
    cr_assert_not_null(f);
    fputs(source, f);
    fclose(f);
    snprintf(cmd, sizeof(cmd), "cc -std=c17 -fPIC -shared -I'%s/include' -o '%s' '%s' 2>&1", src_dir, buf, c_path);
    cr_assert_eq(system(cmd), 0, "cannot build a test module: %s", cmd);
    return buf;
}

static const char ABI_99_MODULE[] =
    "#include <mizan/mizan.h>\n"
    "__attribute__((visibility(\"default\"))) const int mizan_module_abi_version = 99;\n"
    "MIZAN_EXPORT int mizan_module_init(mizan_module_t *m) { (void)m; return 0; }\n";

/* An ABI 1 module: the definition struct as it was, allocated to its exact size. */
static const char ABI_1_MODULE[] =
    "#include <stdlib.h>\n"
    "#include <mizan/mizan.h>\n"
    "typedef struct { const char *name; mizan_kind_t kind; const char *input_schema; const char *auth;\n"
    "  mizan_auth_fn auth_fn; const char *const *invalidates; mizan_handler_fn handler; int timeout_ms;\n"
    "  const char *description; } def_v1_t;\n"
    "static int h(mizan_req_t *r) { (void)r; return 0; }\n"
    "MIZAN_EXPORT int mizan_module_init(mizan_module_t *m) {\n"
    "  def_v1_t *d = calloc(1, sizeof(*d));\n"
    "  if (d == NULL) return -1;\n"
    "  d->name = \"old_fn\"; d->kind = MIZAN_QUERY; d->handler = h;\n"
    "  int rc = mizan_module_add_function(m, (const mizan_function_def_t *)d);\n"
    "  free(d);\n"
    "  return rc;\n"
    "}\n";

Test(module_api, modules_built_for_another_abi)
{
    char dir[] = "/tmp/mizan-test-abi-XXXXXX";
    cr_assert_not_null(mkdtemp(dir), "mkdtemp: %s", strerror(errno));
    char so[PATH_MAX];
    json_t *config = json_object();
    mizan_config_t cfg;
    mizan_module_conf_t mc;

    /* A version this gateway does not implement is refused before its entry point runs. */
    one_module_config(&cfg, &mc, "future", build_module(dir, "future", ABI_99_MODULE, so, sizeof(so)), config);
    mizan_modinst_t *mods = NULL;
    size_t nmods = 0;
    mizan_err_t err = {{0}};
    cr_assert_eq(mizan_modules_load(&reg, &cfg, &mods, &nmods, &err), -1);
    char want[2 * PATH_MAX];
    snprintf(want, sizeof(want),
             "/etc/mizan/mizan.json: module \"future\" (%s) was built for module ABI 99; this gateway loads ABI 1 to "
             "2: rebuild the module against this gateway's include/mizan/mizan.h",
             so);
    cr_assert_str_eq(err.msg, want);
    mizan_modules_unload(mods, nmods);

    /* A module without the symbol is ABI 1: it loads, its definition read in the old layout. */
    one_module_config(&cfg, &mc, "old", build_module(dir, "old", ABI_1_MODULE, so, sizeof(so)), config);
    mods = NULL;
    nmods = 0;
    cr_assert_eq(mizan_modules_load(&reg, &cfg, &mods, &nmods, &err), 0, "%s", err.msg);
    cr_assert_eq(mods[0].abi, 1);
    mizan_err_t ferr = {{0}};
    cr_assert_eq(mizan_registry_finish(&reg, &ferr), 0, "%s", ferr.msg);
    const mizan_function_t *f = mizan_registry_function(&reg, "old_fn");
    cr_assert_not_null(f);
    cr_assert_eq(f->max_concurrency, 0);
    mizan_modules_unload(mods, nmods);
    json_decref(config);
    nftw(dir, remove_entry, 8, FTW_DEPTH | FTW_PHYS);
}
