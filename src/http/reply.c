/*
 * reply.c - the one place every response goes through: the protocol's
 * headers (Cache-Control, Content-Type, X-Request-Id), the error envelope
 * of PROTOCOL.md section 3, and flush accounting for graceful shutdown.
 */
#include <stdio.h>
#include <sys/time.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/http_struct.h>

#include "compress.h"
#include "conn.h"
#include "cors.h"
#include "envelope.h"
#include "exchange.h"
#include "jsontext.h"
#include "reply.h"
#include "log.h"

static void on_flushed(struct evhttp_request *req, void *arg)
{
    mizan_loop_t *loop = arg;
    atomic_fetch_sub(&loop->unsent, 1);
    mizan_conns_reply_flushed(loop, req);
}

void mizan_reply_header(mizan_exchange_t *ex, const char *name, const char *value)
{
    if (ex->req != NULL)
        evhttp_add_header(evhttp_request_get_output_headers(ex->req), name, value);
}

/*
 * The Date value of this second (RFC 7231 IMF-fixdate, as evhttp writes
 * it), formatted once per second per loop instead of once per answer.
 */
static const char *http_date(mizan_loop_t *loop)
{
    static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                       "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    struct timeval tv;
    if (event_base_gettimeofday_cached(loop->base, &tv) < 0)
        gettimeofday(&tv, NULL);
    if (loop->date[0] != '\0' && (long long)tv.tv_sec == loop->date_sec)
        return loop->date;
    time_t t = tv.tv_sec;
    struct tm tm;
    gmtime_r(&t, &tm);
    /* "Sun, 06 Nov 1994 08:49:37 GMT": fixed width, written digit by digit. */
    char *d = loop->date;
    int year = 1900 + tm.tm_year;
    memcpy(d, days[tm.tm_wday % 7], 3);
    memcpy(d + 3, ", ", 2);
    d[5] = (char)('0' + tm.tm_mday / 10 % 10);
    d[6] = (char)('0' + tm.tm_mday % 10);
    d[7] = ' ';
    memcpy(d + 8, months[tm.tm_mon % 12], 3);
    d[11] = ' ';
    d[12] = (char)('0' + year / 1000 % 10);
    d[13] = (char)('0' + year / 100 % 10);
    d[14] = (char)('0' + year / 10 % 10);
    d[15] = (char)('0' + year % 10);
    d[16] = ' ';
    d[17] = (char)('0' + tm.tm_hour / 10 % 10);
    d[18] = (char)('0' + tm.tm_hour % 10);
    d[19] = ':';
    d[20] = (char)('0' + tm.tm_min / 10 % 10);
    d[21] = (char)('0' + tm.tm_min % 10);
    d[22] = ':';
    d[23] = (char)('0' + tm.tm_sec / 10 % 10);
    d[24] = (char)('0' + tm.tm_sec % 10);
    memcpy(d + 25, " GMT", 5);
    loop->date_sec = (long long)tv.tv_sec;
    return loop->date;
}

/* Decimal text of n into out (at least 21 bytes); returns out. */
static char *decimal(size_t n, char *out)
{
    char tmp[21];
    size_t i = 0;
    do {
        tmp[i++] = (char)('0' + n % 10);
        n /= 10;
    } while (n > 0);
    for (size_t j = 0; j < i; j++)
        out[j] = tmp[i - 1 - j];
    out[i] = '\0';
    return out;
}

static const char *reason_phrase(int status)
{
    switch (status) {
    case 200: return "OK";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 413: return "Payload Too Large";
    case 422: return "Unprocessable Entity";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return "Status";
    }
}

void mizan_reply_text(mizan_exchange_t *ex, int status, const char *body, size_t len)
{
    struct evhttp_request *req = ex->req;
    if (req == NULL)
        return;
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    if (evhttp_find_header(h, "Content-Type") == NULL && status != 204)
        evhttp_add_header(h, "Content-Type", "application/json");
    evhttp_add_header(h, "Cache-Control", "no-store");
    evhttp_add_header(h, "X-Request-Id", ex->rid);
    mizan_cors_headers(&ex->loop->cfg->cors, req);
    if (atomic_load(ex->loop->draining))
        evhttp_add_header(h, "Connection", "close");
    /* The body goes straight into the request's own output buffer. */
    struct evbuffer *buf = evhttp_request_get_output_buffer(req);
    const mizan_config_t *cfg = ex->loop->cfg;
    /* A HEAD answer carries no body (evhttp would send it after the head). */
    bool head = evhttp_request_get_command(req) == EVHTTP_REQ_HEAD;
    if (buf != NULL && len > 0 && !head &&
        !mizan_compress_body(req, cfg->compress_min_bytes, cfg->compress_level, body, len, buf))
        evbuffer_add(buf, body, len);
    char n[24];
    if (evhttp_request_get_command(req) == EVHTTP_REQ_CONNECT) {
        /* evhttp frames no body for CONNECT (a tunnel's): frame the answer here. */
        evhttp_add_header(h, "Content-Length", decimal(buf != NULL ? evbuffer_get_length(buf) : 0, n));
    } else if (req->major == 1 && req->minor >= 1) {
        /* What evhttp adds to an HTTP/1.1 answer, written here without its
         * per-answer formatting: the Date of this second and, when the
         * answer carries a body, its length. */
        evhttp_add_header(h, "Date", http_date(ex->loop));
        if (!head && status >= 200 && status != 204 && status != 304)
            evhttp_add_header(h, "Content-Length", decimal(buf != NULL ? evbuffer_get_length(buf) : 0, n));
    }
    mizan_conns_reply_sending(ex->loop, req);
    if (evhttp_request_get_connection(req) != NULL) {
        atomic_fetch_add(&ex->loop->unsent, 1);
        evhttp_request_set_on_complete_cb(req, on_flushed, ex->loop);
    }
    /* Sends (or, if the client is gone, frees) the request. */
    evhttp_send_reply(req, status, reason_phrase(status), NULL);
    ex->req = NULL;
    mizan_exchange_finish(ex, status);
}

void mizan_reply_json(mizan_exchange_t *ex, json_t *body)
{
    size_t len = 0;
    char *owned = NULL;
    const char *text = mizan_jsontext_render(body, JSON_COMPACT | JSON_PRESERVE_ORDER, &len, &owned);
    json_decref(body);
    if (text == NULL) {
        mizan_reply_error(ex, MIZAN_INTERNAL_ERROR, "cannot render the response", NULL);
        return;
    }
    mizan_reply_text(ex, 200, text, len);
    free(owned);
}

void mizan_reply_error(mizan_exchange_t *ex, mizan_code_t code, const char *message, json_t *details)
{
    if (code == MIZAN_OK)
        code = MIZAN_INTERNAL_ERROR;
    if (code == MIZAN_INTERNAL_ERROR) {
        /* The real reason is for operators only. */
        json_t *f = json_pack("{s:s, s:s}", "request_id", ex->rid, "reason", message ? message : "unspecified");
        if (f != NULL && ex->target[0] != '\0')
            json_object_set_new(f, "target", json_string(ex->target));
        mizan_log_fields(MIZAN_LOG_ERROR, "internal error", f);
        json_decref(f);
        /* What a mutation that may have run invalidated stays listed. */
        json_t *inv = json_incref(json_object_get(details, "invalidate"));
        json_decref(details);
        message = "internal error";
        details = json_pack("{s:s}", "request_id", ex->rid);
        if (details != NULL && inv != NULL)
            json_object_set(details, "invalidate", inv);
        json_decref(inv);
    }
    char *text = mizan_envelope_render(code, message, details);
    static const char fallback[] =
        "{\"error\":{\"code\":\"INTERNAL_ERROR\",\"message\":\"internal error\",\"details\":null}}";
    if (text == NULL) {
        mizan_reply_text(ex, 500, fallback, sizeof(fallback) - 1);
        return;
    }
    mizan_reply_text(ex, mizan_code_status(code), text, strlen(text));
    free(text);
}

void mizan_reply_unavailable(mizan_exchange_t *ex)
{
    mizan_reply_header(ex, "Retry-After", "1");
    mizan_reply_error(ex, MIZAN_UNAVAILABLE,
                      atomic_load(ex->loop->draining) ? "the gateway is shutting down"
                                                           : "the gateway is overloaded; retry shortly",
                      NULL);
}

void mizan_reply_invalid(mizan_exchange_t *ex, json_t *errors)
{
    size_t n = json_array_size(errors);
    char msg[64];
    snprintf(msg, sizeof(msg), "%zu validation error%s", n, n == 1 ? "" : "s");
    mizan_reply_error(ex, MIZAN_VALIDATION_FAILED, msg, errors);
}
