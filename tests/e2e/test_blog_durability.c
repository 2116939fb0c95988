/*
 * test_blog_durability.c - the blog module's "durability" setting: both
 * values serve and keep what was written across a restart on the same
 * file; any other value stops the gateway at start-up with the reason.
 */
#include <criterion/criterion.h>

#include <string.h>

#include "harness.h"

TestSuite(blog_durability, .init = mz_setup, .fini = mz_teardown, .timeout = 120);

static json_t *blog_config(const char *dir, const char *durability)
{
    return mz_json("{\"modules\": [{\"name\": \"blog\", \"config\": {\"db\": \"%s/blog.db\", \"durability\": %s}}]}",
                   dir, durability);
}

static void write_then_read_after_restart(const char *name)
{
    const char *durability = mz_fmt("\"%s\"", name);
    char *dir = mz_tmpdir();
    mz_gw_t *gw = mz_gw_start(blog_config(dir, durability));
    char *alice = mz_token(gw, "alice", NULL);
    const char *title = mz_fmt("kept with %s", name);
    mz_expect_mutation(mz_call(gw, "update_post", mz_fmt("{\"post_id\": 3, \"title\": \"%s\"}", title), alice));
    mz_gw_stop_ok(gw);
    gw = mz_gw_start(blog_config(dir, durability));
    json_t *post = mz_expect_result(mz_call(gw, "get_post", "{\"post_id\": 3}", NULL));
    cr_assert_str_eq(json_string_value(json_object_get(post, "title")), title, "%s", mz_dump(post));
    mz_gw_stop_ok(gw);
}

Test(blog_durability, normal_keeps_commits_across_a_restart)
{
    write_then_read_after_restart("normal");
}

Test(blog_durability, full_keeps_commits_across_a_restart)
{
    write_then_read_after_restart("full");
}

Test(blog_durability, another_value_is_refused_at_start_up)
{
    char *dir = mz_tmpdir();
    const char *bad[] = {"\"off\"", "1", "null", "\"FULL\""};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        json_t *cfg = mz_keep(mz_config_defaults(dir));
        mz_json_merge(cfg, blog_config(dir, bad[i]));
        char *path = mz_write_config(dir, "bad.json", cfg);
        const char *argv[] = {mz_env("MIZAN_TEST_BIN"), "--check-config", "--config", path, NULL};
        mz_run_t *run = mz_run(argv, dir, NULL, 30000);
        cr_assert_neq(run->status, 0, "durability %s was accepted", bad[i]);
        cr_assert(strstr(run->err, "\"durability\" must be \"normal\" or \"full\"") != NULL,
                  "durability %s: stderr does not give the reason:\n%s", bad[i], run->err);
    }
}
