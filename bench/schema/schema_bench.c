/*
 * schema_bench.c - validation cost micro-benchmark: compiles a schema,
 * validates fresh copies of one instance against it `rounds` times, and
 * prints the verdict. run.sh builds it twice, against the current
 * validator and against the keyword-subset validator it replaced, and
 * compares the instructions validate_all() executes under callgrind (a
 * count that does not depend on the machine's load).
 *
 * usage: schema_bench SCHEMA.json INSTANCE.json ROUNDS
 */
#include <stdio.h>
#include <stdlib.h>

#include <jansson.h>

#include "schema.h"

/* Validates every copy; the function callgrind counts (kept out of line). */
__attribute__((noinline)) int validate_all(const mizan_schema_t *s, json_t **copies, json_t **errors, int rounds)
{
    int bad = 0;
    for (int i = 0; i < rounds; i++)
        bad += mizan_schema_validate(s, copies[i], "args", errors[i]) != 0;
    return bad;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: %s SCHEMA.json INSTANCE.json ROUNDS\n", argv[0]);
        return 2;
    }
    int rounds = atoi(argv[3]);
    json_error_t jerr;
    json_t *schema = json_load_file(argv[1], 0, &jerr);
    json_t *instance = json_load_file(argv[2], 0, &jerr);
    if (schema == NULL || instance == NULL || rounds < 1) {
        fprintf(stderr, "cannot read the inputs: %s\n", jerr.text);
        return 2;
    }
    mizan_err_t err = {{0}};
    mizan_schema_t *s = mizan_schema_compile(schema, &err);
    if (s == NULL) {
        fprintf(stderr, "%s: %s\n", argv[1], err.msg);
        return 1;
    }
    json_t **copies = calloc((size_t)rounds, sizeof(*copies));
    json_t **errors = calloc((size_t)rounds, sizeof(*errors));
    for (int i = 0; i < rounds; i++) {
        copies[i] = json_deep_copy(instance);
        errors[i] = json_array();
    }
    int bad = validate_all(s, copies, errors, rounds);
    char *dump = json_dumps(errors[0], JSON_COMPACT);
    printf("%s: %d of %d invalid; first errors %s\n", argv[1], bad, rounds, dump);
    free(dump);
    for (int i = 0; i < rounds; i++) {
        json_decref(copies[i]);
        json_decref(errors[i]);
    }
    free(copies);
    free(errors);
    mizan_schema_free(s);
    json_decref(schema);
    json_decref(instance);
    return bad != 0;
}
