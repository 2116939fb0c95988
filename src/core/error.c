/*
 * error.c - the internal error report and the protocol's error-code table
 * (name and HTTP status of each mizan_code_t).
 */
#include "error.h"

#include <stdarg.h>
#include <stdio.h>

int mizan_err_set(mizan_err_t *err, const char *fmt, ...)
{
    if (err == NULL)
        return -1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
    va_end(ap);
    return -1;
}

/* One row per code: the protocol name and its HTTP status. */
static const struct {
    const char *name;
    int status;
} code_table[] = {
    [MIZAN_OK] = {"OK", 200},
    [MIZAN_BAD_REQUEST] = {"BAD_REQUEST", 400},
    [MIZAN_UNAUTHORIZED] = {"UNAUTHORIZED", 401},
    [MIZAN_FORBIDDEN] = {"FORBIDDEN", 403},
    [MIZAN_NOT_FOUND] = {"NOT_FOUND", 404},
    [MIZAN_METHOD_NOT_ALLOWED] = {"METHOD_NOT_ALLOWED", 405},
    [MIZAN_PAYLOAD_TOO_LARGE] = {"PAYLOAD_TOO_LARGE", 413},
    [MIZAN_VALIDATION_FAILED] = {"VALIDATION_FAILED", 422},
    [MIZAN_INTERNAL_ERROR] = {"INTERNAL_ERROR", 500},
    [MIZAN_NOT_IMPLEMENTED] = {"NOT_IMPLEMENTED", 501},
    [MIZAN_UNAVAILABLE] = {"UNAVAILABLE", 503},
    [MIZAN_TIMEOUT] = {"TIMEOUT", 504},
};

static int code_valid(mizan_code_t code)
{
    return (int)code >= 0 && (size_t)code < sizeof(code_table) / sizeof(code_table[0]);
}

const char *mizan_code_name(mizan_code_t code)
{
    return code_valid(code) ? code_table[code].name : "INTERNAL_ERROR";
}

int mizan_code_status(mizan_code_t code)
{
    return code_valid(code) ? code_table[code].status : 500;
}
