/*
 * blog.h - the names the blog example module declares (BLOG_EXAMPLE.md),
 * for tests that check listings (schema endpoint, --check-config output).
 */
#ifndef MZ_BLOG_H
#define MZ_BLOG_H

/** Every blog function name, NULL-terminated. */
extern const char *const mz_blog_functions[];

/** Every blog context name, NULL-terminated. */
extern const char *const mz_blog_contexts[];

/** Every blog mutation name, NULL-terminated. */
extern const char *const mz_blog_mutations[];

#endif /* MZ_BLOG_H */
