/*
 * jobs.h - an exchange's jobs: submitted to the loop's executor and
 * gathered back, and the release of the handler's part of an exchange.
 * Loop thread.
 */
#ifndef MIZAN_JOBS_H
#define MIZAN_JOBS_H

#include "services.h"

/**
 * Submits ex's jobs (ex->jobs, ex->njobs) to the loop's executor and sets
 * ex->pending; ex->done runs on the loop once they are all back or timed
 * out. A job refused at its function's concurrency limit comes back at
 * once as UNAVAILABLE (pending may then be 0: the caller finishes the
 * exchange itself). -1 when the work queue is full.
 */
int mizan_jobs_submit(mizan_exchange_t *ex);

/** Frees the handler's part of an exchange (its release hook). */
void mizan_jobs_release(mizan_exchange_t *ex);

#endif /* MIZAN_JOBS_H */
