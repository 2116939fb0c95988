/*
 * test_codegen.c - end-to-end tests of `mizand codegen`: the file written
 * from a running gateway's /api/mizan/schema/ URL is byte-identical to the
 * one written from its config, both carry every blog function and context,
 * --out and --import work, and bad invocations (no or two sources, another
 * language, an unreachable URL, a URL that is no schema document) fail
 * with a message and write nothing.
 */
#include <criterion/criterion.h>

#include <string.h>
#include <unistd.h>

#include "blog.h"
#include "harness.h"

TestSuite(codegen, .init = mz_setup, .fini = mz_teardown, .timeout = 180);

/* Runs mizand codegen with the given arguments (NULL-terminated) in dir. */
static mz_run_t *codegen(const char *dir, const char *const *args)
{
    const char *argv[16] = {mz_env("MIZAN_TEST_BIN"), "codegen"};
    size_t n = 2;
    for (; args[n - 2] != NULL && n < 15; n++)
        argv[n] = args[n - 2];
    argv[n] = NULL;
    const char *env[] = {mz_fmt("MIZAN_BLOG_DB=%s/codegen.db", dir), NULL};
    return mz_run(argv, dir, env, 30000);
}

Test(codegen, url_and_config_give_the_same_file)
{
    mz_gw_t *gw = mz_gw_start(NULL);
    char *dir = mz_tmpdir();
    char *url = mz_fmt("http://127.0.0.1:%d/api/mizan/schema/", gw->port);
    mz_run_t *from_url = codegen(dir, (const char *const[]){"--url", url, "--lang", "ts", NULL});
    cr_assert_eq(from_url->status, 0, "codegen --url exited %d: %s", from_url->status, from_url->err);
    char *out = mz_fmt("%s/client.ts", dir);
    mz_run_t *from_cfg = codegen(
        dir, (const char *const[]){"--config", gw->config_path, "--lang", "ts", "--out", out, NULL});
    cr_assert_eq(from_cfg->status, 0, "codegen --config exited %d: %s", from_cfg->status, from_cfg->err);
    char *file = mz_read_file(out);
    cr_assert_not_null(file);
    cr_assert_str_eq(from_url->out, file, "the URL and the config gave different files");
    for (const char *const *f = mz_blog_functions; *f; f++)
        cr_assert(strstr(file, mz_fmt("\n  %s: { kind: \"", *f)) != NULL, "no Functions entry for %s", *f);
    for (const char *const *c = mz_blog_contexts; *c; c++)
        cr_assert(strstr(file, mz_fmt("\n  %s: { params: ", *c)) != NULL, "no Contexts entry for %s", *c);
    cr_assert(strstr(file, "from \"@mizan/client\";") != NULL, "default import specifier: %s", file);
    cr_assert(strstr(file, "export interface PostData {\n  get_post: GetPostResult;\n  list_comments: "
                           "ListCommentsResult;\n  get_author: GetAuthorResult;\n}") != NULL,
              "%s", file);
    /* The checked-in blog client is what the running gateway describes. */
    char *checked_in = mz_read_file(mz_fmt("%s/examples/blog/web/blog-client.ts", mz_env("MIZAN_TEST_SOURCE_DIR")));
    cr_assert_not_null(checked_in);
    cr_assert_str_eq(checked_in, from_url->out, "examples/blog/web/blog-client.ts differs from the gateway's");

    mz_run_t *spec = codegen(dir, (const char *const[]){"--url", url, "--lang", "ts", "--import",
                                                        "../../clients/typescript/dist/index.js", NULL});
    cr_assert_eq(spec->status, 0, "%s", spec->err);
    cr_assert(strstr(spec->out, "from \"../../clients/typescript/dist/index.js\";") != NULL, "%s", spec->out);
    mz_gw_stop_ok(gw);
}

/* Runs codegen with args and expects a failure naming needle, with nothing on stdout. */
static void expect_fail(const char *dir, const char *const *args, const char *needle)
{
    mz_run_t *run = codegen(dir, args);
    cr_assert(run->status != 0 && run->status != -1, "codegen %s should fail; exited %d", args[0], run->status);
    cr_assert(strstr(run->err, needle) != NULL, "stderr should mention \"%s\":\n%s", needle, run->err);
    cr_assert_str_eq(run->out, "", "nothing may be written on failure:\n%s", run->out);
}

Test(codegen, bad_invocations)
{
    mz_gw_t *gw = mz_gw_start(NULL);
    char *dir = mz_tmpdir();
    int dead = mz_free_port();
    expect_fail(dir, (const char *const[]){"--lang", "ts", NULL}, "exactly one of --config");
    expect_fail(dir, (const char *const[]){"--config", gw->config_path, "--url", "http://127.0.0.1:1/", "--lang", "ts", NULL},
                "exactly one of --config");
    expect_fail(dir, (const char *const[]){"--config", gw->config_path, "--lang", "python", NULL}, "--lang ts");
    expect_fail(dir, (const char *const[]){"--config", gw->config_path, NULL}, "--lang ts");
    expect_fail(dir, (const char *const[]){"--config", mz_fmt("%s/missing.json", dir), "--lang", "ts", NULL},
                "missing.json");
    expect_fail(dir, (const char *const[]){"--url", mz_fmt("http://127.0.0.1:%d/api/mizan/schema/", dead), "--lang", "ts",
                                           NULL},
                "no answer");
    expect_fail(dir, (const char *const[]){"--url", mz_fmt("http://127.0.0.1:%d/api/mizan/nothing/", gw->port), "--lang",
                                           "ts", NULL},
                "HTTP status 404");
    expect_fail(dir, (const char *const[]){"--url", mz_fmt("http://127.0.0.1:%d/healthz", gw->port), "--lang", "ts", NULL},
                "no \"version\"");
    expect_fail(dir, (const char *const[]){"--url", mz_fmt("http://127.0.0.1:%d/metrics", gw->port), "--lang", "ts", NULL},
                "not JSON");
    expect_fail(dir, (const char *const[]){"--url", "https://127.0.0.1/api/mizan/schema/", "--lang", "ts", NULL},
                "only http://");
    expect_fail(dir, (const char *const[]){"--url", "not a url", "--lang", "ts", NULL}, "not a URL");
    /* --out is not created when generation fails. */
    char *out = mz_fmt("%s/never.ts", dir);
    mz_run_t *run = codegen(dir, (const char *const[]){"--url", mz_fmt("http://127.0.0.1:%d/healthz", gw->port), "--lang",
                                                       "ts", "--out", out, NULL});
    cr_assert_neq(run->status, 0);
    cr_assert(access(out, F_OK) != 0, "%s was written by a failed run", out);
    mz_gw_stop_ok(gw);
}
