/*
 * jobs.c - an exchange's jobs (see jobs.h).
 */
#include "jobs.h"

#include <stdlib.h>
#include <string.h>


/* A job of ex is back (timed_out false) or its deadline passed (true). Loop thread. */
static void job_done(void *owner, mizan_job_t *job, bool timed_out)
{
    mizan_exchange_t *ex = owner;
    if (timed_out) {
        ex->jobs[job->slot] = NULL;
        if (ex->errors != NULL) {
            json_t *e = json_pack("{s:s, s:s, s:n}", "code", "TIMEOUT", "message", "function timed out", "details");
            json_object_set_new(ex->errors, job->fn->name, e);
        }
    }
    if (--ex->pending == 0)
        ex->done(ex);
}

int mizan_jobs_submit(mizan_exchange_t *ex)
{
    size_t n = 0;
    for (size_t i = 0; i < ex->njobs; i++) {
        mizan_job_t *job = ex->jobs[i];
        if (job == NULL)
            continue;
        job->owner = ex;
        job->on_done = job_done;
        job->slot = (int)i;
        memcpy(job->rid, ex->rid, sizeof(job->rid));
        n++;
    }
    /* Non-blocking functions run inside mizan_exec_submit() and report at
     * once: one extra count keeps the exchange from finishing before the
     * submission returns. */
    ex->pending = n + 1;
    size_t started = 0;
    if (mizan_exec_submit(&mizan_api_services(ex)->exec, ex->jobs, ex->njobs, &started) < 0) {
        for (size_t i = 0; i < ex->njobs; i++)
            if (ex->jobs[i] != NULL)
                ex->jobs[i]->owner = NULL;
        ex->pending = 0;
        return -1;
    }
    /* Those refused at their limit never report; then the extra count goes. */
    ex->pending -= n - started + 1;
    return 0;
}

void mizan_jobs_release(mizan_exchange_t *ex)
{
    for (size_t i = 0; i < ex->njobs; i++)
        mizan_exec_drop(ex->jobs[i]);
    free(ex->jobs);
    ex->jobs = NULL;
    ex->njobs = 0;
    mizan_cache_lookup_free(ex->lookup);
    ex->lookup = NULL;
    json_decref(ex->targets);
    json_decref(ex->params);
    json_decref(ex->data);
    json_decref(ex->errors);
    mizan_caller_unref(ex->caller);
}
