/*
 * jsontext.c - JSON text without the heap when it fits (see jsontext.h).
 */
#include "jsontext.h"

#include <string.h>

/* Big enough for every bundle and result of ordinary size. */
#define SCRATCH_SIZE 16384

static _Thread_local char scratch[SCRATCH_SIZE];

const char *mizan_jsontext_render(const json_t *v, size_t flags, size_t *len, char **owned)
{
    *owned = NULL;
    *len = 0;
    if (v == NULL)
        return NULL;
    size_t n = json_dumpb(v, scratch, sizeof(scratch), flags);
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
