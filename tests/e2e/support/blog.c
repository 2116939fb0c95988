/*
 * blog.c - the blog example's function and context names, as the contract
 * in BLOG_EXAMPLE.md lists them.
 */
#include "blog.h"

#include <stddef.h>

const char *const mz_blog_functions[] = {
    "ping",        "add",           "echo",        "sleep",       "slow_a",
    "slow_b",      "slow_c",        "slow_d",      "boom",        "get_post",
    "list_comments", "get_author",  "list_posts",  "whoami",      "list_drafts",
    "site_stats",  "create_post",   "update_post", "add_comment", "delete_post",
    "publish_post", NULL,
};

const char *const mz_blog_contexts[] = {"post", "feed", "me", "drafts", "fanout", NULL};

const char *const mz_blog_mutations[] = {
    "create_post", "update_post", "add_comment", "delete_post", "publish_post", NULL,
};
