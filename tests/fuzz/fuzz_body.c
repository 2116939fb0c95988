/*
 * fuzz_body.c - fuzz target for mizan_request_parse_json() (request.c),
 * the parser of every request body, with the default depth limit of 64.
 *
 * Properties checked beyond "no memory error":
 *   - a refusal always carries a reason;
 *   - an accepted body never nests containers deeper than the limit (the
 *     linear pre-scan is what protects everything recursive downstream);
 *   - the pre-scan is exact: the same body is accepted with a limit equal
 *     to its nesting and refused with one less;
 *   - round trip: the value dumped by jansson and parsed again is equal.
 */
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "fuzz.h"
#include "request.h"

#define MAX_DEPTH 64

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_init();
    mizan_err_t err = {{0}};
    json_t *v = mizan_request_parse_json((const char *)data, size, MAX_DEPTH, &err);
    json_t *again = NULL, *tight = NULL, *loose = NULL;
    char *text = NULL;
    if (v == NULL) {
        FUZZ_CHECK(err.msg[0] != '\0', "a refused body has a reason");
        goto done;
    }
    int nesting = fuzz_nesting(v);
    FUZZ_CHECK(nesting <= MAX_DEPTH, "an accepted body nests no deeper than the limit");

    if (nesting >= 1) {
        mizan_err_t e1 = {{0}}, e2 = {{0}};
        loose = mizan_request_parse_json((const char *)data, size, nesting, &e1);
        FUZZ_CHECK(loose != NULL, "a body is accepted with a limit equal to its nesting");
        tight = mizan_request_parse_json((const char *)data, size, nesting - 1, &e2);
        FUZZ_CHECK(tight == NULL, "a body is refused with a limit below its nesting");
    }

    text = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
    if (text == NULL)
        goto done;
    mizan_err_t err2 = {{0}};
    again = mizan_request_parse_json(text, strlen(text), MAX_DEPTH, &err2);
    FUZZ_CHECK(again != NULL, "jansson's rendering of an accepted body is accepted");
    FUZZ_CHECK(json_equal(v, again), "parse(dump(v)) equals v");

done:
    free(text);
    json_decref(again);
    json_decref(tight);
    json_decref(loose);
    json_decref(v);
    return 0;
}
