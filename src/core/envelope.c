/*
 * envelope.c - the protocol's error envelope (see envelope.h).
 */
#include "envelope.h"

#include "log.h"

const char *mizan_envelope_message(mizan_code_t code)
{
    switch (code) {
    case MIZAN_BAD_REQUEST: return "bad request";
    case MIZAN_UNAUTHORIZED: return "authentication required";
    case MIZAN_FORBIDDEN: return "permission denied";
    case MIZAN_NOT_FOUND: return "not found";
    case MIZAN_METHOD_NOT_ALLOWED: return "method not allowed";
    case MIZAN_PAYLOAD_TOO_LARGE: return "request body too large";
    case MIZAN_VALIDATION_FAILED: return "validation failed";
    case MIZAN_NOT_IMPLEMENTED: return "not implemented";
    case MIZAN_UNAVAILABLE: return "service unavailable";
    case MIZAN_TIMEOUT: return "function timed out";
    default: return "internal error";
    }
}

char *mizan_envelope_render(mizan_code_t code, const char *message, json_t *details)
{
    json_t *env = json_pack("{s:{s:s, s:s, s:o}}", "error", "code", mizan_code_name(code), "message",
                            message != NULL ? message : mizan_envelope_message(code), "details",
                            details != NULL ? details : json_null());
    char *text = env != NULL ? json_dumps(env, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(env);
    return text;
}

json_t *mizan_envelope_failure(mizan_code_t code, const char *message, const json_t *details, const char *rid,
                               const char *function)
{
    if (code == MIZAN_OK)
        code = MIZAN_INTERNAL_ERROR;
    if (code == MIZAN_INTERNAL_ERROR) {
        json_t *f = json_pack("{s:s, s:s, s:s}", "request_id", rid, "function", function, "reason",
                              message != NULL ? message : "unspecified");
        mizan_log_fields(MIZAN_LOG_ERROR, "function failed", f);
        json_decref(f);
        return json_pack("{s:s, s:s, s:{s:s}}", "code", "INTERNAL_ERROR", "message", "internal error", "details",
                         "request_id", rid);
    }
    return json_pack("{s:s, s:s, s:O}", "code", mizan_code_name(code), "message",
                     message != NULL ? message : mizan_code_name(code), "details",
                     details != NULL ? (json_t *)details : json_null());
}
