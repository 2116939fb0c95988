/*
 * fuzz_upstream_parse.c - fuzz target for the upstream answer reader
 * (upstream_parse.c), which reads every byte an upstream service sends.
 *
 * The input is read as the bytes of one connection, fed at once, one byte
 * at a time and in pieces of 7 bytes, then the connection ends. Properties
 * checked beyond "no memory error":
 *   - no feed reports more bytes used than it was given;
 *   - the verdict (complete, refused, incomplete), the status, the body,
 *     the bytes left after the answer and the reason not to reuse the
 *     connection are the same however the bytes are cut;
 *   - a body is never longer than the limit and is NUL-terminated;
 *   - a refusal has a reason; a status is 100..599.
 */
#include <string.h>

#include "fuzz.h"
#include "upstream_parse.h"

#define MAX_BODY 512

typedef struct verdict {
    int rc;
    int status;
    size_t left;
    const char *doubt;
    bool violation;
    char *body;
    size_t body_len;
} verdict_t;

static verdict_t follow(mizan_upstream_parse_t *p, const uint8_t *data, size_t size, size_t step)
{
    verdict_t v = {.rc = MIZAN_UPARSE_MORE};
    char *buf = malloc(size + 1);
    size_t have = 0, given = 0;
    mizan_upstream_parse_begin(p);
    p->max_head = 256;
    p->max_body = MAX_BODY;
    while (v.rc == MIZAN_UPARSE_MORE && given < size) {
        size_t n = step == 0 || step > size - given ? size - given : step;
        memcpy(buf + have, data + given, n);
        have += n;
        given += n;
        size_t used = 0;
        v.rc = mizan_upstream_parse_feed(p, buf, have, &used);
        FUZZ_CHECK(used <= have, "no more bytes used than given");
        memmove(buf, buf + used, have - used);
        have -= used;
    }
    if (v.rc == MIZAN_UPARSE_MORE)
        v.rc = mizan_upstream_parse_eof(p);
    free(buf);
    v.left = have + (size - given);
    v.status = p->status;
    v.doubt = p->doubt;
    v.violation = p->violation;
    if (v.rc == MIZAN_UPARSE_BAD)
        FUZZ_CHECK(p->error != NULL && p->error[0] != '\0', "a refusal has a reason");
    if (v.rc == MIZAN_UPARSE_DONE) {
        FUZZ_CHECK(p->status >= 100 && p->status <= 599, "a status is 100..599");
        FUZZ_CHECK(p->body_len <= MAX_BODY, "the body is within the limit");
        FUZZ_CHECK(p->body != NULL && p->body[p->body_len] == '\0', "the body is NUL-terminated");
        v.body = malloc(p->body_len + 1);
        memcpy(v.body, p->body, p->body_len + 1);
        v.body_len = p->body_len;
    }
    return v;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_init();
    mizan_upstream_parse_t p;
    memset(&p, 0, sizeof(p));
    verdict_t whole = follow(&p, data, size, 0);
    const size_t steps[] = {1, 7};
    for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
        verdict_t cut = follow(&p, data, size, steps[i]);
        FUZZ_CHECK(cut.rc == whole.rc, "the same verdict however the bytes are cut");
        if (whole.rc == MIZAN_UPARSE_DONE) {
            FUZZ_CHECK(cut.status == whole.status, "the same status");
            FUZZ_CHECK(cut.left == whole.left, "the same bytes left after the answer");
            FUZZ_CHECK(cut.doubt == whole.doubt && cut.violation == whole.violation, "the same doubt");
            FUZZ_CHECK(cut.body_len == whole.body_len && memcmp(cut.body, whole.body, whole.body_len) == 0,
                       "the same body");
        }
        free(cut.body);
    }
    free(whole.body);
    mizan_upstream_parse_deinit(&p);
    return 0;
}
