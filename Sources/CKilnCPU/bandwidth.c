// Memory read bandwidth over the pool, for the benchmark's batch-1 decode bound (model bytes ÷ bandwidth).
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kiln_cpu.h"

typedef struct {
    const uint64_t *data;
    size_t words;
    int parts;
    uint64_t sums[256];
} read_job;

static void read_task(void *ctx, int index) {
    read_job *job = ctx;
    size_t start = job->words * (size_t)index / (size_t)job->parts, end = job->words * (size_t)(index + 1) / (size_t)job->parts;
    uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    for (size_t i = start; i + 4 <= end; i += 4) {
        s0 += job->data[i];
        s1 += job->data[i + 1];
        s2 += job->data[i + 2];
        s3 += job->data[i + 3];
    }
    job->sums[index % 256] = s0 + s1 + s2 + s3;
}

double kiln_read_bandwidth(kiln_pool *pool, size_t bytes, int rounds) {
    size_t words = bytes / 8;
    uint64_t *data = malloc(words * 8);
    if (!data) return 0;
    memset(data, 1, words * 8);  // touch every page
    read_job job = {.data = data, .words = words, .parts = kiln_pool_threads(pool) * 4};
    if (job.parts > 256) job.parts = 256;
    double best = 0;
    for (int r = 0; r < rounds; r++) {
        struct timespec a, b;
        clock_gettime(CLOCK_MONOTONIC, &a);
        kiln_pool_run(pool, read_task, &job, job.parts);
        clock_gettime(CLOCK_MONOTONIC, &b);
        double seconds = (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) * 1e-9;
        if (seconds > 0 && (double)bytes / seconds > best) best = (double)bytes / seconds;
    }
    free(data);
    return best;
}
