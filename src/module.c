/*
 * module.c - loading function modules (shared objects named in the config)
 * and the mizan_module_* half of the module API.
 *
 * Modules load on the main thread before any worker or loop exists; each
 * registers into the registry through registry.c. Unloading runs each
 * module's free_fn after the workers have stopped; the shared objects stay
 * mapped until exit (a handler's code must outlive every job).
 */
#include <dlfcn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "log.h"
#include "registry.h"

int mizan_module_abi(const mizan_module_t *m)
{
    (void)m;
    return MIZAN_ABI_VERSION;
}

/* The oldest module ABI still loaded: version 1 definitions lack max_concurrency, read as 0. */
#define OLDEST_ABI 1

const json_t *mizan_module_config(const mizan_module_t *m)
{
    return ((const mizan_modinst_t *)m)->config;
}

const char *mizan_module_config_dir(const mizan_module_t *m)
{
    return ((const mizan_modinst_t *)m)->config_dir;
}

int mizan_module_workers(const mizan_module_t *m)
{
    return ((const mizan_modinst_t *)m)->workers;
}

void mizan_module_set_data(mizan_module_t *m, void *data, void (*free_fn)(void *data))
{
    mizan_modinst_t *mod = (mizan_modinst_t *)m;
    mod->data = data;
    mod->free_fn = free_fn;
}

int mizan_module_fail(mizan_module_t *m, const char *fmt, ...)
{
    mizan_modinst_t *mod = (mizan_modinst_t *)m;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(mod->error, sizeof(mod->error), fmt, ap);
    va_end(ap);
    return -1;
}

int mizan_modules_load(mizan_registry_t *reg, const mizan_config_t *cfg, mizan_modinst_t **out, size_t *nout,
                       mizan_err_t *err)
{
    mizan_modinst_t *mods = calloc(cfg->nmodules + 1, sizeof(*mods));
    if (mods == NULL)
        return mizan_err_set(err, "out of memory");
    *out = mods;
    *nout = 0;
    for (size_t i = 0; i < cfg->nmodules; i++) {
        const mizan_module_conf_t *mc = &cfg->modules[i];
        mizan_modinst_t *mod = &mods[i];
        mod->name = mc->name;
        mod->path = mc->path;
        mod->config = mc->config;
        mod->config_dir = cfg->dir;
        mod->workers = cfg->workers;
        mod->reg = reg;
        mod->handle = dlopen(mc->path, RTLD_NOW | RTLD_LOCAL);
        if (mod->handle == NULL)
            return mizan_err_set(err,
                                 "%s: module \"%s\": cannot load %s: %s (build it, or fix \"modules[%zu]\": a bare "
                                 "name is looked up as <module_dir>/<name>.so)",
                                 cfg->file, mc->name, mc->path, dlerror(), i);
        *nout = i + 1;
        const int *abi = dlsym(mod->handle, MIZAN_MODULE_ABI_SYMBOL);
        mod->abi = abi != NULL ? *abi : OLDEST_ABI;
        if (mod->abi < OLDEST_ABI || mod->abi > MIZAN_ABI_VERSION)
            return mizan_err_set(err,
                                 "%s: module \"%s\" (%s) was built for module ABI %d; this gateway loads ABI %d to "
                                 "%d: rebuild the module against this gateway's include/mizan/mizan.h",
                                 cfg->file, mc->name, mc->path, mod->abi, OLDEST_ABI, MIZAN_ABI_VERSION);
        mizan_module_init_fn init;
        *(void **)&init = dlsym(mod->handle, MIZAN_MODULE_INIT_SYMBOL);
        if (init == NULL)
            return mizan_err_set(err, "%s: module \"%s\" (%s) does not export %s()", cfg->file, mc->name, mc->path,
                                 MIZAN_MODULE_INIT_SYMBOL);
        if (init((mizan_module_t *)mod) != 0)
            return mizan_err_set(err, "%s: module \"%s\" failed to start: %s", cfg->file, mc->name,
                                 mod->error[0] ? mod->error : "no reason given");
        mizan_log(MIZAN_LOG_DEBUG, "module %s loaded from %s", mc->name, mc->path);
    }
    return 0;
}

void mizan_modules_unload(mizan_modinst_t *mods, size_t nmods)
{
    if (mods == NULL)
        return;
    for (size_t i = 0; i < nmods; i++)
        if (mods[i].free_fn != NULL)
            mods[i].free_fn(mods[i].data);
    free(mods);
}
