/*
 * metrics_page.h - GET /metrics.
 */
#ifndef MIZAN_METRICS_PAGE_H
#define MIZAN_METRICS_PAGE_H

#include "services.h"

/** Renders the /metrics exposition (new malloc'd text; NULL when out of memory). */
char *mizan_metrics_render(const mizan_api_t *api);

#endif /* MIZAN_METRICS_PAGE_H */
