/*
 * fuzz_framing.c - fuzz target for the request framing rules (framing.c),
 * which see every byte a client sends before evhttp does.
 *
 * The input is used twice: whole, as a request head for
 * mizan_framing_check_head() (body limit 1024), and as a chunked body for
 * mizan_framing_chunked(), fed at once and one byte at a time. Properties
 * checked beyond "no memory error":
 *   - a head verdict is 0, 400 or 413; a refusal has a reason; an accepted
 *     head's declared length is within the limit and says a body only for
 *     POST, PUT or PATCH; the same input gives the same verdict twice;
 *   - the chunked follower agrees with itself however the bytes are cut:
 *     the same end of body or the same refusal status; it never reports
 *     more bytes than it was given; an accepted body ends with LF.
 */
#include <string.h>

#include "framing.h"
#include "fuzz.h"

#define LIMIT 1024

/* Feeds data in pieces of step bytes (0: at once). Returns bytes used, or -1 with *status. */
static long follow(const uint8_t *data, size_t size, size_t step, bool *done, int *status)
{
    mizan_chunked_t st;
    memset(&st, 0, sizeof(st));
    char why[112];
    size_t used = 0;
    *done = false;
    *status = 0;
    while (used < size && !*done) {
        size_t n = step == 0 || step > size - used ? size - used : step;
        why[0] = '\0';
        long r = mizan_framing_chunked(&st, (const char *)data + used, n, LIMIT, done, status, why, sizeof(why));
        if (r < 0) {
            FUZZ_CHECK(*status == 400 || *status == 413, "a refused chunked body is 400 or 413");
            FUZZ_CHECK(why[0] != '\0', "a refused chunked body has a reason");
            return -1;
        }
        FUZZ_CHECK((size_t)r <= n, "no more bytes used than given");
        FUZZ_CHECK(*done || (size_t)r == n, "every byte is used until the body ends");
        used += (size_t)r;
    }
    return (long)used;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_init();
    mizan_head_t a, b;
    mizan_framing_check_head((const char *)data, size, LIMIT, &a);
    mizan_framing_check_head((const char *)data, size, LIMIT, &b);
    FUZZ_CHECK(a.status == 0 || a.status == 400 || a.status == 413, "a head verdict is 0, 400 or 413");
    FUZZ_CHECK(a.status == b.status && a.body == b.body && a.length == b.length, "the verdict is deterministic");
    if (a.status != 0) {
        FUZZ_CHECK(a.reason[0] != '\0', "a refused head has a reason");
    } else {
        FUZZ_CHECK(a.length <= LIMIT, "an accepted head declares a body within the limit");
        FUZZ_CHECK((a.body == MIZAN_BODY_LENGTH) == (a.length > 0), "a length is declared exactly for a body");
        bool body_method = (size >= 5 && memcmp(data, "POST ", 5) == 0) || (size >= 4 && memcmp(data, "PUT ", 4) == 0) ||
                           (size >= 6 && memcmp(data, "PATCH ", 6) == 0);
        FUZZ_CHECK(a.body == MIZAN_BODY_NONE || body_method, "only POST, PUT and PATCH carry a body");
        FUZZ_CHECK(strlen(a.rid) <= 128, "a kept request id is at most 128 bytes");
    }

    bool done1 = false, done2 = false;
    int st1 = 0, st2 = 0;
    long u1 = follow(data, size, 0, &done1, &st1);
    long u2 = follow(data, size, 1, &done2, &st2);
    FUZZ_CHECK(u1 == u2 && done1 == done2 && st1 == st2, "the chunked follower does not depend on how bytes are cut");
    if (done1)
        FUZZ_CHECK(u1 > 0 && data[u1 - 1] == '\n', "a chunked body ends with LF");
    return 0;
}
