/*
 * log.c - structured JSON-lines logging to stderr (see log.h).
 */
#include "log.h"

#include <stdarg.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Written once at start-up, read by every thread afterwards. */
static mizan_log_level_t min_level = MIZAN_LOG_INFO;
static char instance_id[64] = "mizan";

static const char *level_names[] = {"debug", "info", "warn", "error"};

void mizan_log_setup(mizan_log_level_t level, const char *instance)
{
    min_level = level;
    if (instance != NULL)
        snprintf(instance_id, sizeof(instance_id), "%s", instance);
}

int mizan_log_level_parse(const char *name)
{
    for (int i = 0; i < 4; i++)
        if (strcmp(name, level_names[i]) == 0)
            return i;
    return -1;
}

bool mizan_log_enabled(mizan_log_level_t level)
{
    return level >= min_level;
}

static void format_ts(char *out, size_t len)
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    snprintf(out, len, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ts.tv_nsec / 1000000L) % 1000);
}

/* Writes all of buf, retrying on short writes; a failing stderr is ignored. */
static void write_all(const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(STDERR_FILENO, buf, len);
        if (n <= 0)
            return;
        buf += n;
        len -= (size_t)n;
    }
}

void mizan_log_fields(mizan_log_level_t level, const char *msg, const json_t *fields)
{
    if (!mizan_log_enabled(level))
        return;
    if ((int)level < 0 || level > MIZAN_LOG_ERROR)
        level = MIZAN_LOG_ERROR;
    char ts[80];
    format_ts(ts, sizeof(ts));
    json_t *line = json_object();
    if (line == NULL)
        return;
    json_object_set_new(line, "ts", json_string(ts));
    json_object_set_new(line, "level", json_string(level_names[level]));
    json_object_set_new(line, "msg", json_string(msg != NULL ? msg : ""));
    json_object_set_new(line, "instance", json_string(instance_id));
    if (fields != NULL && json_is_object(fields)) {
        const char *key;
        json_t *value;
        json_object_foreach((json_t *)fields, key, value) json_object_set(line, key, value);
    }
    char *text = json_dumps(line, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENSURE_ASCII);
    json_decref(line);
    if (text == NULL)
        return;
    size_t n = strlen(text);
    text[n] = '\n';
    write_all(text, n + 1);
    text[n] = '\0';
    free(text);
}

/* A line being formatted; `failed` once it no longer fits. */
typedef struct line {
    char buf[4096];
    size_t len;
    bool failed;
} line_t;

static void put(line_t *l, const char *s, size_t n)
{
    if (l->failed || n > sizeof(l->buf) - 1 - l->len) {
        l->failed = true;
        return;
    }
    memcpy(l->buf + l->len, s, n);
    l->len += n;
}

/* The code point of the UTF-8 sequence at s (n bytes left) and its length; 0 when invalid. */
static size_t utf8_next(const unsigned char *s, size_t n, unsigned *cp)
{
    if (s[0] < 0x80) {
        *cp = s[0];
        return 1;
    }
    size_t len = (s[0] & 0xE0) == 0xC0 ? 2 : (s[0] & 0xF0) == 0xE0 ? 3 : (s[0] & 0xF8) == 0xF0 ? 4 : 0;
    if (len == 0 || len > n)
        return 0;
    unsigned v = s[0] & (0x7F >> len);
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        v = (v << 6) | (s[i] & 0x3F);
    }
    static const unsigned min[] = {0, 0, 0x80, 0x800, 0x10000};
    if (v < min[len] || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF))
        return 0;
    *cp = v;
    return len;
}

/* True when s is valid UTF-8 (as json_string() requires). */
static bool utf8_valid(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t n = strlen(s);
    unsigned cp;
    for (size_t i = 0, k; i < n; i += k)
        if ((k = utf8_next(p + i, n - i, &cp)) == 0)
            return false;
    return true;
}

/* Appends s as a JSON string, escaped as JSON_ENSURE_ASCII escapes it (s is valid UTF-8). */
static void put_string(line_t *l, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    const unsigned char *p = (const unsigned char *)s;
    size_t n = strlen(s);
    put(l, "\"", 1);
    for (size_t i = 0, k; i < n; i += k) {
        unsigned cp = 0;
        k = utf8_next(p + i, n - i, &cp);
        if (k == 0)
            k = 1; /* not reached: checked by the caller */
        char e[12];
        switch (cp) {
        case '"': put(l, "\\\"", 2); continue;
        case '\\': put(l, "\\\\", 2); continue;
        case '\b': put(l, "\\b", 2); continue;
        case '\f': put(l, "\\f", 2); continue;
        case '\n': put(l, "\\n", 2); continue;
        case '\r': put(l, "\\r", 2); continue;
        case '\t': put(l, "\\t", 2); continue;
        default: break;
        }
        if (cp >= 0x20 && cp <= 0x7F) {
            char c = (char)cp;
            put(l, &c, 1);
            continue;
        }
        unsigned units[2] = {cp, 0};
        int nunits = 1;
        if (cp >= 0x10000) {
            units[0] = 0xD800 + ((cp - 0x10000) >> 10);
            units[1] = 0xDC00 + ((cp - 0x10000) & 0x3FF);
            nunits = 2;
        }
        for (int u = 0; u < nunits; u++) {
            e[0] = '\\';
            e[1] = 'u';
            e[2] = hex[(units[u] >> 12) & 0xF];
            e[3] = hex[(units[u] >> 8) & 0xF];
            e[4] = hex[(units[u] >> 4) & 0xF];
            e[5] = hex[units[u] & 0xF];
            put(l, e, 6);
        }
    }
    put(l, "\"", 1);
}

static void put_key(line_t *l, const char *key)
{
    put(l, ",\"", 2);
    put(l, key, strlen(key));
    put(l, "\":", 2);
}

void mizan_log_line(mizan_log_level_t level, const char *msg, const mizan_log_field_t *fields, size_t n)
{
    if (!mizan_log_enabled(level))
        return;
    if ((int)level < 0 || level > MIZAN_LOG_ERROR)
        level = MIZAN_LOG_ERROR;
    if (msg == NULL || !utf8_valid(msg))
        msg = "";
    line_t *l = &(line_t){.len = 0, .failed = false};
    char ts[80];
    format_ts(ts, sizeof(ts));
    put(l, "{\"ts\":\"", 7);
    put(l, ts, strlen(ts));
    put(l, "\",\"level\":\"", 11);
    put(l, level_names[level], strlen(level_names[level]));
    put(l, "\",\"msg\":", 8);
    put_string(l, msg);
    put(l, ",\"instance\":", 12);
    put_string(l, utf8_valid(instance_id) ? instance_id : "");
    for (size_t i = 0; i < n; i++) {
        if (fields[i].str != NULL) {
            if (!utf8_valid(fields[i].str))
                continue;
            put_key(l, fields[i].key);
            put_string(l, fields[i].str);
        } else {
            char num[32];
            put_key(l, fields[i].key);
            put(l, num, (size_t)snprintf(num, sizeof(num), "%lld", fields[i].num));
        }
    }
    put(l, "}\n", 2);
    if (!l->failed) {
        write_all(l->buf, l->len);
        return;
    }
    /* Longer than the buffer: the general path. */
    json_t *f = json_object();
    for (size_t i = 0; f != NULL && i < n; i++)
        json_object_set_new(f, fields[i].key, fields[i].str != NULL ? json_string(fields[i].str)
                                                                   : json_integer(fields[i].num));
    mizan_log_fields(level, msg, f);
    json_decref(f);
}

void mizan_log(mizan_log_level_t level, const char *fmt, ...)
{
    if (!mizan_log_enabled(level))
        return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    mizan_log_fields(level, msg, NULL);
}
