/*
 * main.c - the mizand command line: serve, --check-config, token minting,
 * client code generation.
 */
#include <errno.h>
#include <getopt.h>
#include <libgen.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/thread.h>
#include <jansson.h>

#include "codegen.h"
#include "gateway.h"
#include "log.h"
#include "token.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: mizand --config FILE            serve the functions of FILE's modules\n"
            "       mizand --check-config --config FILE\n"
            "                                       load modules, validate, print the registry, exit\n"
            "       mizand token --config FILE --sub NAME [--staff] [--superuser] [--perm P]...\n"
            "                    [--ttl SECONDS] [--kid K]\n"
            "                                       print a token signed with the configured key\n"
            "       mizand codegen (--config FILE | --url URL) --lang ts [--out FILE] [--import SPEC]\n"
            "                                       write a typed TypeScript client for the registry of FILE's\n"
            "                                       modules, or of a running gateway's /api/mizan/schema/ URL\n"
            "       mizand --version | --help\n"
            "\n"
            "Environment overrides: MIZAN_LISTEN, MIZAN_WORKERS, MIZAN_TOKEN_SECRET, MIZAN_CACHE_SECRET,\n"
            "MIZAN_REDIS_URL; modules read their own (the blog example: MIZAN_BLOG_DB).\n"
            "See docs/configuration.md for every field and its default.\n");
}

/* Directory of the running executable, for the default module directory. */
static void exe_dir(char *out, size_t len)
{
    char path[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", path, sizeof(path) - 1);
    if (n <= 0) {
        snprintf(out, len, ".");
        return;
    }
    path[n] = '\0';
    snprintf(out, len, "%s", dirname(path));
}

static int cmd_token(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'}, {"sub", required_argument, NULL, 's'},
        {"staff", no_argument, NULL, 'S'},        {"superuser", no_argument, NULL, 'U'},
        {"perm", required_argument, NULL, 'p'},   {"ttl", required_argument, NULL, 't'},
        {"kid", required_argument, NULL, 'k'},    {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    const char *config = NULL, *sub = NULL, *kid = NULL;
    bool staff = false, superuser = false;
    const char *perms[256];
    size_t nperms = 0;
    long long ttl = 3600;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'c': config = optarg; break;
        case 's': sub = optarg; break;
        case 'S': staff = true; break;
        case 'U': superuser = true; break;
        case 'k': kid = optarg; break;
        case 'p':
            if (nperms == sizeof(perms) / sizeof(perms[0])) {
                fprintf(stderr, "mizand token: at most 256 --perm\n");
                return 2;
            }
            perms[nperms++] = optarg;
            break;
        case 't': {
            char *end;
            errno = 0;
            ttl = strtoll(optarg, &end, 10);
            if (*end != '\0' || errno != 0 || ttl <= 0 || ttl > 10LL * 365 * 86400) {
                fprintf(stderr, "mizand token: --ttl must be a positive number of seconds\n");
                return 2;
            }
            break;
        }
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (config == NULL || sub == NULL || sub[0] == '\0') {
        fprintf(stderr, "mizand token: --config FILE and --sub NAME are required\n");
        return 2;
    }
    char dir[PATH_MAX];
    exe_dir(dir, sizeof(dir));
    mizan_config_t cfg;
    mizan_err_t err = {{0}};
    if (mizan_config_load(&cfg, config, dir, &err) < 0) {
        fprintf(stderr, "mizand: %s\n", err.msg);
        mizan_config_deinit(&cfg);
        return 1;
    }
    int rc = 1;
    if (cfg.token_secret_generated) {
        fprintf(stderr, "mizand token: %s configures no token secret (set token.secret or MIZAN_TOKEN_SECRET)\n",
                config);
        goto done;
    }
    char *tok = mizan_token_mint(&cfg.tokens, kid, sub, staff, superuser, perms, nperms, ttl, (long long)time(NULL),
                                 &err);
    if (tok == NULL) {
        fprintf(stderr, "mizand token: %s\n", err.msg);
        goto done;
    }
    printf("%s\n", tok);
    free(tok);
    rc = 0;
done:
    mizan_config_deinit(&cfg);
    return rc;
}

/* Writes text to path through a temporary file and a rename, so a reader never sees half a file. */
static int write_file(const char *path, const char *text)
{
    char *tmp = NULL;
    if (asprintf(&tmp, "%s.tmp.%ld", path, (long)getpid()) < 0)
        return -1;
    FILE *f = fopen(tmp, "w");
    int rc = -1;
    if (f != NULL) {
        size_t len = strlen(text);
        bool ok = fwrite(text, 1, len, f) == len;
        ok = fclose(f) == 0 && ok;
        rc = ok && rename(tmp, path) == 0 ? 0 : -1;
        if (rc < 0)
            unlink(tmp);
    }
    free(tmp);
    return rc;
}

static int cmd_codegen(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'}, {"url", required_argument, NULL, 'u'},
        {"lang", required_argument, NULL, 'l'},   {"out", required_argument, NULL, 'o'},
        {"import", required_argument, NULL, 'i'}, {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    const char *config = NULL, *url = NULL, *lang = NULL, *out = NULL, *import = NULL;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'c': config = optarg; break;
        case 'u': url = optarg; break;
        case 'l': lang = optarg; break;
        case 'o': out = optarg; break;
        case 'i': import = optarg; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc || (config == NULL) == (url == NULL)) {
        fprintf(stderr, "mizand codegen: give exactly one of --config FILE and --url URL\n");
        return 2;
    }
    if (lang == NULL || strcmp(lang, "ts") != 0) {
        fprintf(stderr, "mizand codegen: --lang ts is required (TypeScript is the one language supported)\n");
        return 2;
    }
    if (import != NULL && (import[0] == '\0' || strpbrk(import, "\"\n\r\\") != NULL)) {
        fprintf(stderr, "mizand codegen: --import must be a module specifier such as @mizan/client\n");
        return 2;
    }
    mizan_err_t err = {{0}};
    json_t *doc = NULL;
    int rc = 1;
    if (config != NULL) {
        /* The same document the schema endpoint serves, from the same bytes. */
        char dir[PATH_MAX];
        exe_dir(dir, sizeof(dir));
        mizan_gateway_t *gw = calloc(1, sizeof(*gw));
        if (gw == NULL || mizan_gateway_init(gw, config, dir, &err) < 0) {
            fprintf(stderr, "mizand: %s\n", gw != NULL ? err.msg : "out of memory");
            if (gw != NULL)
                mizan_gateway_deinit(gw);
            free(gw);
            return 1;
        }
        json_error_t jerr;
        doc = json_loads(gw->reg.schema_json, 0, &jerr);
        mizan_gateway_deinit(gw);
        free(gw);
        if (doc == NULL) {
            fprintf(stderr, "mizand codegen: cannot read the schema document: %s\n", jerr.text);
            return 1;
        }
    } else if ((doc = mizan_codegen_fetch(url, 10000, &err)) == NULL) {
        fprintf(stderr, "mizand codegen: %s\n", err.msg);
        return 1;
    }
    char *text = mizan_codegen_ts(doc, import, &err);
    json_decref(doc);
    if (text == NULL) {
        fprintf(stderr, "mizand codegen: %s\n", err.msg);
        return 1;
    }
    if (out == NULL) {
        rc = fputs(text, stdout) >= 0 && fflush(stdout) == 0 ? 0 : 1;
    } else if (write_file(out, text) < 0) {
        fprintf(stderr, "mizand codegen: cannot write %s: %s\n", out, strerror(errno));
    } else {
        rc = 0;
    }
    free(text);
    return rc;
}

int main(int argc, char **argv)
{
    /* Before any base, thread or JSON object exists. */
    evthread_use_pthreads();
    json_object_seed(0);

    if (argc > 1 && strcmp(argv[1], "token") == 0)
        return cmd_token(argc - 1, argv + 1);
    if (argc > 1 && strcmp(argv[1], "codegen") == 0) {
        int rc = cmd_codegen(argc - 1, argv + 1);
        libevent_global_shutdown();
        return rc;
    }

    static const struct option opts[] = {{"config", required_argument, NULL, 'c'},
                                         {"check-config", no_argument, NULL, 'C'},
                                         {"version", no_argument, NULL, 'v'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *config = NULL;
    bool check = false;
    int c;
    while ((c = getopt_long(argc, argv, "c:hv", opts, NULL)) != -1) {
        switch (c) {
        case 'c': config = optarg; break;
        case 'C': check = true; break;
        case 'v': printf("mizand %s (protocol 1)\n", MIZAN_VERSION); return 0;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc || config == NULL) {
        fprintf(stderr, optind < argc ? "mizand: unexpected argument \"%s\"\n" : "mizand: --config FILE is required%s\n",
                optind < argc ? argv[optind] : "");
        usage(stderr);
        return 2;
    }

    /* Signals are taken by sigwait() below; no other thread sees them. */
    signal(SIGPIPE, SIG_IGN);
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);

    char dir[PATH_MAX];
    exe_dir(dir, sizeof(dir));
    static mizan_gateway_t gw;
    mizan_err_t err = {{0}};
    int rc = 1;
    if (mizan_gateway_init(&gw, config, dir, &err) < 0) {
        fprintf(stderr, "mizand: %s\n", err.msg);
        goto done;
    }
    if (check) {
        json_t *doc = mizan_registry_to_json(&gw.reg);
        json_object_set_new(doc, "modules", json_array());
        for (size_t i = 0; i < gw.cfg.nmodules; i++)
            json_array_append_new(json_object_get(doc, "modules"),
                                  json_pack("{s:s, s:s}", "name", gw.cfg.modules[i].name, "path", gw.cfg.modules[i].path));
        json_dumpf(doc, stdout, JSON_INDENT(2) | JSON_SORT_KEYS);
        printf("\nmizand: %s is valid (%zu functions, %zu contexts)\n", config, gw.reg.nfns, gw.reg.nctxs);
        json_decref(doc);
        rc = 0;
        goto done;
    }
    if (mizan_gateway_start(&gw, &err) < 0) {
        fprintf(stderr, "mizand: %s\n", err.msg);
        mizan_log(MIZAN_LOG_ERROR, "start-up failed: %s", err.msg);
        mizan_gateway_stop(&gw);
        goto done;
    }
    int sig = 0;
    sigwait(&sigs, &sig);
    mizan_log(MIZAN_LOG_INFO, "received %s: draining", sig == SIGINT ? "SIGINT" : "SIGTERM");
    mizan_gateway_stop(&gw);
    rc = 0;
done:
    mizan_gateway_deinit(&gw);
    libevent_global_shutdown();
    return rc;
}
