/*
 * fuzz.h - what the fuzz targets of tests/fuzz share.
 *
 * Every target defines LLVMFuzzerTestOneInput(). Built with clang and
 * -fsanitize=fuzzer it is driven by libFuzzer (scripts/fuzz, and the short
 * `fuzz.*` ctest runs); built with any other compiler it is linked with
 * replay_main.c, which feeds it every saved input of its corpus as a
 * regression test.
 *
 * A target checks properties, not just "does not crash": FUZZ_CHECK()
 * prints which property broke and aborts, so libFuzzer saves the input as a
 * crash and the replay runner fails, exactly as for a sanitizer report.
 * The checks never use assert(): a build with NDEBUG must still check.
 */
#ifndef MIZAN_FUZZ_H
#define MIZAN_FUZZ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <jansson.h>

/** The libFuzzer entry point: one input, data[0..size), owned by the caller. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Reports a broken property and aborts (so the input is kept as a crash). */
static inline void fuzz_fail(const char *file, int line, const char *cond, const char *what)
{
    fprintf(stderr, "fuzz check failed at %s:%d: %s (%s)\n", file, line, what, cond);
    fflush(stderr);
    abort();
}

/** Checks a property of the code under test; what says it in words. */
#define FUZZ_CHECK(cond, what) ((cond) ? (void)0 : fuzz_fail(__FILE__, __LINE__, #cond, what))

/*
 * Once per process: a fixed jansson hash seed, so object iteration order
 * (and therefore which of several problems is reported first) is the same
 * on every run and a saved input reproduces exactly.
 */
static inline void fuzz_init(void)
{
    static bool done;
    if (!done) {
        json_object_seed(1);
        done = true;
    }
}

/*
 * Nesting of containers in v (borrowed): 0 for a scalar, 1 for a container
 * holding only scalars (or nothing), and so on. Recursion is bounded by
 * jansson's own parser depth limit for values that came from text.
 */
static inline int fuzz_nesting(const json_t *v)
{
    int deepest = 0;
    if (json_is_object(v)) {
        const char *key;
        json_t *child;
        json_object_foreach((json_t *)v, key, child)
        {
            (void)key;
            int d = fuzz_nesting(child);
            if (d > deepest)
                deepest = d;
        }
        return deepest + 1;
    }
    if (json_is_array(v)) {
        size_t i;
        json_t *child;
        json_array_foreach(v, i, child)
        {
            int d = fuzz_nesting(child);
            if (d > deepest)
                deepest = d;
        }
        return deepest + 1;
    }
    return 0;
}

#endif /* MIZAN_FUZZ_H */
