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
