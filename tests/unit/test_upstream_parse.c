/*
 * test_upstream_parse.c - the upstream answer reader (upstream_parse.c):
 * Content-Length, chunked (extensions, trailers) and close-delimited bodies
 * fed whole and split at every byte boundary, the reasons a connection must
 * not be reused, and every refusal; and the fast JSON reader (jsonread.c),
 * which must agree with jansson on what it reads.
 */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jsonread.h"
#include "upstream_parse.h"

typedef struct outcome {
    int rc;            /* DONE, BAD, or MORE when the bytes ran out */
    int status;
    char body[512];
    size_t body_len;
    size_t left;       /* bytes after the answer's end */
    const char *doubt;
    bool violation;
    const char *error;
} outcome_t;

/*
 * Feeds text to a fresh reader in pieces of step bytes (0: at once), keeping
 * unused bytes like the client does; eof: the connection then closes.
 */
static outcome_t run(mizan_upstream_parse_t *p, const char *text, size_t len, size_t step, bool eof)
{
    outcome_t o = {.rc = MIZAN_UPARSE_MORE};
    char *buf = malloc(len + 1);
    size_t have = 0, given = 0;
    mizan_upstream_parse_begin(p);
    p->max_head = 1024;
    p->max_body = 256;
    while (o.rc == MIZAN_UPARSE_MORE && given < len) {
        size_t n = step == 0 || step > len - given ? len - given : step;
        memcpy(buf + have, text + given, n);
        have += n;
        given += n;
        size_t used = 0;
        o.rc = mizan_upstream_parse_feed(p, buf, have, &used);
        cr_assert_leq(used, have);
        memmove(buf, buf + used, have - used);
        have -= used;
    }
    if (o.rc == MIZAN_UPARSE_MORE && eof)
        o.rc = mizan_upstream_parse_eof(p);
    o.left = have + (len - given);
    o.status = p->status;
    o.doubt = p->doubt;
    o.violation = p->violation;
    o.error = p->error;
    if (o.rc == MIZAN_UPARSE_DONE) {
        cr_assert_lt(p->body_len, sizeof(o.body));
        memcpy(o.body, p->body, p->body_len);
        cr_assert_eq(p->body[p->body_len], '\0', "the body is NUL-terminated");
        o.body_len = p->body_len;
    }
    free(buf);
    return o;
}

/* Checks one answer at once and split at every byte boundary (pieces of 1..len bytes). */
static void expect_answer(const char *text, bool eof, int status, const char *body, size_t left, const char *doubt,
                          bool violation)
{
    mizan_upstream_parse_t p = {0};
    size_t len = strlen(text);
    for (size_t step = 0; step <= len; step++) {
        outcome_t o = run(&p, text, len, step, eof);
        cr_assert_eq(o.rc, MIZAN_UPARSE_DONE, "step %zu: rc %d (%s) for: %s", step, o.rc,
                     o.error != NULL ? o.error : "-", text);
        cr_assert_eq(o.status, status, "step %zu: status %d", step, o.status);
        cr_assert_eq(o.body_len, strlen(body), "step %zu: body length %zu for: %s", step, o.body_len, text);
        cr_assert(memcmp(o.body, body, o.body_len) == 0, "step %zu: body '%s'", step, o.body);
        cr_assert_eq(o.left, left, "step %zu: %zu bytes left, expected %zu", step, o.left, left);
        if (doubt == NULL)
            cr_assert_null(o.doubt, "step %zu: unexpected doubt '%s'", step, o.doubt);
        else
            cr_assert(o.doubt != NULL && strstr(o.doubt, doubt) != NULL, "step %zu: doubt '%s' lacks '%s'", step,
                      o.doubt != NULL ? o.doubt : "(none)", doubt);
        cr_assert_eq(o.violation, violation, "step %zu: violation flag", step);
    }
    mizan_upstream_parse_deinit(&p);
}

/* Checks that text is refused, whole and split at every byte boundary. */
static void expect_bad(const char *text, bool eof, const char *why)
{
    mizan_upstream_parse_t p = {0};
    size_t len = strlen(text);
    for (size_t step = 0; step <= len; step++) {
        outcome_t o = run(&p, text, len, step, eof);
        cr_assert_eq(o.rc, MIZAN_UPARSE_BAD, "step %zu: rc %d for: %s", step, o.rc, text);
        cr_assert(o.error != NULL && strstr(o.error, why) != NULL, "step %zu: error '%s' lacks '%s'", step,
                  o.error != NULL ? o.error : "(none)", why);
    }
    mizan_upstream_parse_deinit(&p);
}

Test(upstream_parse, content_length_answers)
{
    expect_answer("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"a\": true}",
                  false, 200, "{\"a\": true}", 0, NULL, false);
    /* Bare LF line ends, no reason phrase, header case and spacing. */
    expect_answer("HTTP/1.1 404\ncontent-length:  2 \n\n{}", false, 404, "{}", 0, NULL, false);
    expect_answer("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", false, 200, "", 0, NULL, false);
    /* A folded header other than the framing ones is harmless. */
    expect_answer("HTTP/1.1 200 OK\r\nX-Long: a\r\n  b\r\nContent-Length: 1\r\n\r\n7", false, 200, "7", 0, NULL,
                  false);
}

Test(upstream_parse, chunked_answers_with_extensions_and_trailers)
{
    expect_answer("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                  "4\r\n{\"a\"\r\n3;name=value;x=\"q\"\r\n: 1\r\nB \r\n, \"b\": [2]}\r\n0\r\n\r\n",
                  false, 200, "{\"a\": 1, \"b\": [2]}", 0, NULL, false);
    expect_answer("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n"
                  "2\r\nok\r\n0;last\r\nX-Checksum: 1\r\nX-Other: 2\r\n\r\n",
                  false, 200, "ok", 0, NULL, false);
    expect_answer("HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n1\nx\n0\n\n", false, 200, "x", 0, NULL, false);
}

Test(upstream_parse, bodies_without_framing_end_with_the_connection)
{
    expect_answer("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n[1,2]", true, 200, "[1,2]", 0,
                  "ends with the connection", false);
    expect_answer("HTTP/1.0 200 OK\r\n\r\n\"s\"", true, 200, "\"s\"", 0, "other than HTTP/1.1", false);
    /* An unknown transfer coding leaves the end of the connection as the only framing. */
    expect_answer("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nzz", true, 200, "zz", 0, "ends with the connection",
                  false);
    /* Without the close, it is incomplete. */
    mizan_upstream_parse_t p = {0};
    const char *t = "HTTP/1.1 200 OK\r\n\r\n[1]";
    outcome_t o = run(&p, t, strlen(t), 0, false);
    cr_assert_eq(o.rc, MIZAN_UPARSE_MORE);
    mizan_upstream_parse_deinit(&p);
}

Test(upstream_parse, what_ends_a_connection_without_a_violation)
{
    expect_answer("HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\nContent-Length: 2\r\n\r\n{}", false, 200, "{}",
                  0, "asked to close", false);
    expect_answer("HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n{}", false, 200, "{}", 0, "other than HTTP/1.1", false);
}

Test(upstream_parse, framing_violations_keep_the_answer_but_not_the_connection)
{
    /* Bytes past Content-Length: the answer is read, the rest left over. */
    expect_answer("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}HTTP/1.1 200 OK\r\n", false, 200, "{}", 17, NULL,
                  false);
    /* Bytes after a chunked body's end. */
    expect_answer("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\nXYZ", false, 200, "{}", 3,
                  NULL, false);
    /* Duplicate Content-Length (same value): readable, but in doubt. */
    expect_answer("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n{}", false, 200, "{}", 0,
                  "duplicate or conflicting", true);
    /* Content-Length and Transfer-Encoding together: chunked wins, in doubt. */
    expect_answer("HTTP/1.1 200 OK\r\nContent-Length: 99\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
                  false, 200, "{}", 0, "duplicate or conflicting", true);
    expect_answer("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", false,
                  200, "", 0, "duplicate or conflicting", true);
    /* A body on a 204, a 304 or a 1xx: no body is read; the announced bytes stay. */
    expect_answer("HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 200 OK", false, 204, "", 15, NULL, false);
    expect_answer("HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nhello", false, 204, "", 5, "1xx, 204 or 304",
                  true);
    expect_answer("HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n", false, 304, "", 0,
                  "1xx, 204 or 304", true);
    expect_answer("HTTP/1.1 100 Continue\r\nContent-Length: 0\r\n\r\n", false, 100, "", 0, NULL, false);
}

Test(upstream_parse, refusals)
{
    expect_bad("HTTP/2 200 OK\r\n\r\n", false, "status line");
    expect_bad("HTTP/1.1 20 OK\r\n\r\n", false, "status line");
    expect_bad("HTTP/1.1 600 Odd\r\n\r\n", false, "status line");
    expect_bad("HTTP/1.1 200OK\r\n\r\n", false, "status line");
    expect_bad("\r\n\r\n", false, "status line");
    expect_bad("HTTP/1.1 200 OK\r\nNo colon here\r\n\r\n", false, "header line");
    expect_bad("HTTP/1.1 200 OK\r\n: empty name\r\n\r\n", false, "header line");
    expect_bad("HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n", false, "header line");
    expect_bad("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n 2\r\n\r\n", false, "folded framing");
    expect_bad("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", false, "invalid Content-Length");
    expect_bad("HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\n", false, "invalid Content-Length");
    expect_bad("HTTP/1.1 200 OK\r\nContent-Length:\r\n\r\n", false, "invalid Content-Length");
    expect_bad("HTTP/1.1 200 OK\r\nContent-Length: 1234567890123456789\r\n\r\n", false, "invalid Content-Length");
    expect_bad("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n", false, "conflicting");
    expect_bad("HTTP/1.1 200 OK\r\nContent-Length: 257\r\n\r\n", false, "max_response_bytes");
    expect_bad("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n101\r\n", false, "max_response_bytes");
    expect_bad("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", false, "chunk size");
    expect_bad("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\r\n", false, "chunk size");
    expect_bad("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2 x\r\n", false, "chunk size");
    expect_bad("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000000\r\n", false, "chunk size");
    expect_bad("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2;a\x01\r\n", false, "control character");
    expect_bad("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabX\r\n", false, "not followed by CRLF");
    expect_bad("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\rX", false, "not followed by CRLF");
    /* Close-delimited bodies are bounded too. */
    char big[600];
    int n = snprintf(big, sizeof(big), "HTTP/1.1 200 OK\r\n\r\n");
    memset(big + n, 'x', 300);
    big[n + 300] = '\0';
    expect_bad(big, true, "max_response_bytes");
    /* Truncated answers, at the end of the connection. */
    expect_bad("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nabc", true, "closed before");
    expect_bad("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n", true, "closed before");
    expect_bad("HTTP/1.1 200 OK\r\nContent-Le", true, "closed before");
}

Test(upstream_parse, head_and_chunk_lines_are_bounded)
{
    char head[1200];
    int n = snprintf(head, sizeof(head), "HTTP/1.1 200 OK\r\nX-Big: ");
    memset(head + n, 'a', 1100);
    head[n + 1100] = '\0';
    expect_bad(head, false, "head over");
    char chunk[5000];
    n = snprintf(chunk, sizeof(chunk), "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1;");
    memset(chunk + n, 'e', 4500);
    chunk[n + 4500] = '\0';
    mizan_upstream_parse_t p = {0};
    outcome_t o = run(&p, chunk, strlen(chunk), 0, false);
    cr_assert_eq(o.rc, MIZAN_UPARSE_BAD);
    cr_assert(strstr(o.error, "chunk-size line") != NULL, "%s", o.error);
    char trailers[1400];
    n = snprintf(trailers, sizeof(trailers), "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-T: ");
    memset(trailers + n, 't', 1200);
    trailers[n + 1200] = '\0';
    o = run(&p, trailers, strlen(trailers), 0, false);
    cr_assert_eq(o.rc, MIZAN_UPARSE_BAD);
    cr_assert(strstr(o.error, "trailers") != NULL, "%s", o.error);
    mizan_upstream_parse_deinit(&p);
}

Test(upstream_parse, the_body_buffer_is_reused_across_answers)
{
    mizan_upstream_parse_t p = {0};
    const char *a = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc";
    const char *b = "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nz";
    outcome_t o = run(&p, a, strlen(a), 0, false);
    cr_assert_eq(o.rc, MIZAN_UPARSE_DONE);
    char *buf = p.body;
    o = run(&p, b, strlen(b), 0, false);
    cr_assert_eq(o.rc, MIZAN_UPARSE_DONE);
    cr_assert_eq(p.body, buf, "the second answer reused the body buffer");
    cr_assert_str_eq(p.body, "z");
    mizan_upstream_parse_deinit(&p);
}

/* ---- the fast JSON reader ---------------------------------------------- */

/* The fast reader reads text (it must not decline) and agrees with jansson. */
static void expect_fast(const char *text)
{
    json_t *fast = mizan_json_read_fast(text, strlen(text));
    cr_assert_not_null(fast, "the fast reader declined: %s", text);
    json_error_t err;
    json_t *ref = json_loadb(text, strlen(text), JSON_DECODE_ANY, &err);
    cr_assert_not_null(ref, "jansson refused: %s (%s)", text, err.text);
    cr_assert(json_equal(fast, ref), "the readers disagree on: %s", text);
    char *a = json_dumps(fast, JSON_COMPACT | JSON_ENCODE_ANY), *b = json_dumps(ref, JSON_COMPACT | JSON_ENCODE_ANY);
    cr_assert_str_eq(a, b, "same text, same key order: %s", text);
    cr_assert_eq(json_typeof(fast), json_typeof(ref), "same type: %s", text);
    free(a);
    free(b);
    json_decref(fast);
    json_decref(ref);
}

/* The fast reader declines text; mizan_json_read then says what jansson says. */
static void expect_declined(const char *text, size_t len)
{
    json_t *fast = mizan_json_read_fast(text, len);
    cr_assert_null(fast, "the fast reader accepted: %.*s", (int)len, text);
    json_error_t err;
    json_t *ref = json_loadb(text, len, JSON_DECODE_ANY, &err);
    json_t *got = mizan_json_read(text, len);
    cr_assert_eq(got == NULL, ref == NULL, "mizan_json_read and jansson disagree on: %.*s", (int)len, text);
    if (got != NULL)
        cr_assert(json_equal(got, ref));
    json_decref(got);
    json_decref(ref);
}

Test(jsonread, reads_what_jansson_reads)
{
    expect_fast("{\"ok\":true,\"server\":\"ceiling\",\"uri\":\"/a\"}");
    expect_fast(" \t\r\n{ \"a\" : [ 1 , -2 , 0 , -0 , 3.25 , -1e3 , 2E-2 , 1.5e+10 ] , \"b\" : { } , \"c\" : [ ] } \n");
    expect_fast("\"a\\\"b\\\\c\\/d\\b\\f\\n\\r\\te\\u0041\\u00e9\\u20ac\"");
    expect_fast("{\"k\\u00e9y\":1,\"k\":2,\"k\":3}"); /* duplicate keys: the last wins, in the first one's place */
    expect_fast("123456789012345678");
    expect_fast("-123456789012345678");
    expect_fast("true");
    expect_fast("false");
    expect_fast("null");
    expect_fast("0.1");
    expect_fast("[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]");
    expect_fast("{\"a\":{\"b\":{\"c\":[null,true,false,\"\"]}}}");
}

Test(jsonread, declines_the_rest_and_jansson_decides)
{
    const char *texts[] = {
        "",          " ",          "{",           "}",           "[1,]",         "{\"a\":1,}",      "{\"a\" 1}",
        "{1:2}",     "01",         "-",           "1.",          "1e",           ".5",              "+1",
        "1 2",       "tru",        "nul",         "\"abc",       "\"a\\x\"",     "\"\\u12\"",       "\"\\u0000\"",
        "\"\\ud83d\\ude00\"",      "\"\\ud83d\"", "\"caf\xc3\xa9\"", "\"\xff\"", "1234567890123456789",
        "99999999999999999999",    "1e400",       "1e-400",      "[1]x",         "\"a\tb\"",        "NaN",
    };
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++)
        expect_declined(texts[i], strlen(texts[i]));
    expect_declined("{\"a\":1}\0", 8);
    expect_declined("\"a\0b\"", 5);
    /* Deeper than the fast reader goes: jansson reads it. */
    char deep[200];
    memset(deep, '[', 80);
    memset(deep + 80, ']', 80);
    expect_declined(deep, 160);
    json_t *v = mizan_json_read(deep, 160);
    cr_assert(json_is_array(v));
    json_decref(v);
}
