/*
 * jsontext.c - JSON text without the heap when it fits (see jsontext.h),
 * written by jsonwrite.c where it can (the same bytes jansson writes).
 */
#include "jsontext.h"

#include <string.h>

#include "jsonwrite.h"

/* Big enough for every bundle and result of ordinary size. */
#define SCRATCH_SIZE 16384

static _Thread_local char scratch[SCRATCH_SIZE];

const char *mizan_jsontext_render(const json_t *v, size_t flags, size_t *len, char **owned)
{
    *owned = NULL;
    *len = 0;
    if (v == NULL)
        return NULL;
    size_t n = 0;
    mizan_json_write_rc_t rc = mizan_json_write(v, flags, scratch, sizeof(scratch), &n);
    if (rc == MIZAN_JSONW_OK) {
        *len = n;
        return scratch;
    }
    if (rc == MIZAN_JSONW_DECLINED)
        n = json_dumpb(v, scratch, sizeof(scratch), flags);
    else
        n = sizeof(scratch) + 1; /* too long for the scratch buffer */
    if (n == 0)
        return NULL;
    if (n <= sizeof(scratch)) {
        *len = n;
        return scratch;
    }
    char *text = json_dumps(v, flags);
    if (text == NULL)
        return NULL;
    *owned = text;
    *len = strlen(text);
    return text;
}
