// A persistent thread pool. `run` publishes a job by bumping a generation counter; workers spin on it
// briefly (a decode step dispatches hundreds of small jobs back to back) and then sleep on a futex. Tasks
// are shared out in contiguous runs, one per thread, and a thread that finishes its own helps with the
// others': which thread runs a task varies, which is why a task's result must not depend on it.
#define _GNU_SOURCE
#include <linux/futex.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>
#if defined(__x86_64__)
#include <immintrin.h>
#define CPU_RELAX() _mm_pause()
#else
#define CPU_RELAX() ((void)0)
#endif

#include "kiln_cpu.h"

/// Spins before sleeping: about 50–100 µs on current x86 cores.
#define SPIN_ROUNDS 4000

/// One thread's share of a job's tasks, on a cache line of its own.
typedef struct {
    _Alignas(64) _Atomic int next;
    int end;
} kiln_share;

struct kiln_pool {
    // The job, written by the caller before it bumps `generation`.
    int threads;
    pthread_t *workers;
    void (*task)(void *, int);
    void *ctx;
    kiln_share *shares;  // one per thread
    _Atomic int stop;
    // Each counter on a cache line of its own: the workers spin reading `generation` while the caller and
    // the workers write `busy`, and a line shared between them would bounce between cores on every write.
    _Alignas(64) _Atomic uint32_t generation;
    _Atomic int sleepers;  // workers asleep (or about to be) on `generation`: only then is a wake needed
    _Alignas(64) _Atomic uint32_t busy;  // workers still in the current job
    _Atomic int waiting;  // the caller asleep (or about to be) on `busy`
};

static void futex_wait(_Atomic uint32_t *word, uint32_t expected) {
    syscall(SYS_futex, (uint32_t *)word, FUTEX_WAIT_PRIVATE, expected, NULL, NULL, 0);
}

static void futex_wake(_Atomic uint32_t *word) {
    syscall(SYS_futex, (uint32_t *)word, FUTEX_WAKE_PRIVATE, INT32_MAX, NULL, NULL, 0);
}

/// Thread `k` (the caller is 0) runs its own contiguous share of the tasks through its own counter, then
/// helps with what is left of the others' shares. One counter shared by all threads cost more than the
/// tasks: on two vCPUs a 1536×576 product took 1.5× as long on two threads as on one.
static void run_share(kiln_pool *pool, int k) {
    int i, n = pool->threads;
    for (int j = 0; j < n; j++) {
        kiln_share *share = &pool->shares[(k + j) % n];
        while ((i = atomic_fetch_add_explicit(&share->next, 1, memory_order_relaxed)) < share->end) pool->task(pool->ctx, i);
    }
}

typedef struct {
    kiln_pool *pool;
    int index;
} worker_start;

static void *worker_main(void *arg) {
    worker_start start = *(worker_start *)arg;
    free(arg);
    kiln_pool *pool = start.pool;
    uint32_t seen = 0;
    for (;;) {
        uint32_t g;
        int spins = 0;
        while ((g = atomic_load_explicit(&pool->generation, memory_order_acquire)) == seen) {
            if (++spins < SPIN_ROUNDS) {
                CPU_RELAX();
            } else {
                // Counted before the wait: `run` bumps the generation and then reads the count, so either
                // it wakes us or the futex sees the new generation and does not sleep.
                atomic_fetch_add(&pool->sleepers, 1);
                futex_wait(&pool->generation, seen);
                atomic_fetch_sub(&pool->sleepers, 1);
            }
        }
        seen = g;
        if (atomic_load(&pool->stop)) return NULL;
        run_share(pool, start.index);
        if (atomic_fetch_sub(&pool->busy, 1) == 1 && atomic_load(&pool->waiting)) futex_wake(&pool->busy);
    }
}

kiln_pool *kiln_pool_create(int threads) {
    kiln_pool *pool = calloc(1, sizeof *pool);
    if (!pool) return NULL;
    pool->threads = threads < 1 ? 1 : threads;
    pool->workers = calloc((size_t)pool->threads, sizeof(pthread_t));
    pool->shares = aligned_alloc(64, (size_t)pool->threads * sizeof(kiln_share));
    if (!pool->workers || !pool->shares) {
        free(pool->workers);
        free(pool->shares);
        free(pool);
        return NULL;
    }
    for (int i = 0; i < pool->threads - 1; i++) {
        worker_start *start = malloc(sizeof *start);
        if (start) *start = (worker_start){pool, i + 1};
        if (!start || pthread_create(&pool->workers[i], NULL, worker_main, start) != 0) {
            free(start);
            pool->threads = i + 1;  // run with the workers that started
            break;
        }
    }
    return pool;
}

void kiln_pool_destroy(kiln_pool *pool) {
    if (!pool) return;
    atomic_store(&pool->stop, 1);
    atomic_fetch_add_explicit(&pool->generation, 1, memory_order_release);
    futex_wake(&pool->generation);
    for (int i = 0; i < pool->threads - 1; i++) pthread_join(pool->workers[i], NULL);
    free(pool->workers);
    free(pool->shares);
    free(pool);
}

int kiln_pool_threads(const kiln_pool *pool) { return pool->threads; }

void kiln_pool_run(kiln_pool *pool, void (*task)(void *, int), void *ctx, int count) {
    if (count <= 0) return;
    if (pool->threads == 1 || count == 1) {
        for (int i = 0; i < count; i++) task(ctx, i);
        return;
    }
    pool->task = task;
    pool->ctx = ctx;
    for (int k = 0; k < pool->threads; k++) {
        atomic_store_explicit(&pool->shares[k].next, (int)((long)count * k / pool->threads), memory_order_relaxed);
        pool->shares[k].end = (int)((long)count * (k + 1) / pool->threads);
    }
    atomic_store_explicit(&pool->busy, (uint32_t)(pool->threads - 1), memory_order_relaxed);
    atomic_fetch_add(&pool->generation, 1);
    if (atomic_load(&pool->sleepers) > 0) futex_wake(&pool->generation);
    run_share(pool, 0);
    int spins = 0;
    uint32_t b;
    while ((b = atomic_load_explicit(&pool->busy, memory_order_acquire)) != 0) {
        if (++spins < SPIN_ROUNDS) {
            CPU_RELAX();
        } else {
            atomic_store(&pool->waiting, 1);
            futex_wait(&pool->busy, b);
        }
    }
    atomic_store(&pool->waiting, 0);
}
