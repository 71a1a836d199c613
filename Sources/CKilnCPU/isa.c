// Which kernel family runs: the best the CPU has, unless a test or benchmark asks for a lower one.
#define _GNU_SOURCE
#include <cpuid.h>
#include <sched.h>
#include <unistd.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "kernels.h"

static int xgetbv_has(unsigned mask) {
    unsigned eax, edx;
    __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
    return (eax & mask) == mask;
}

static kiln_isa detect(void) {
#if defined(__x86_64__)
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return KILN_ISA_PORTABLE;
    int osxsave = (c >> 27) & 1, fma = (c >> 12) & 1, f16c = (c >> 29) & 1, avx = (c >> 28) & 1;
    if (!osxsave || !avx || !fma || !f16c || !xgetbv_has(0x6)) return KILN_ISA_PORTABLE;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return KILN_ISA_PORTABLE;
    int avx2 = (b >> 5) & 1;
    if (!avx2) return KILN_ISA_PORTABLE;
    int avx512f = (b >> 16) & 1, avx512bw = (b >> 30) & 1, avx512vl = (b >> 31) & 1, vnni = (c >> 11) & 1;
    if (avx512f && avx512bw && avx512vl && vnni && xgetbv_has(0xE6)) return KILN_ISA_AVX512;
    return KILN_ISA_AVX2;
#else
    return KILN_ISA_PORTABLE;
#endif
}

static _Atomic int best = -1;
static _Atomic int current = -1;

kiln_isa kiln_cpu_best_isa(void) {
    int b = atomic_load(&best);
    if (b < 0) {
        b = (int)detect();
        atomic_store(&best, b);
    }
    return (kiln_isa)b;
}

kiln_isa kiln_cpu_isa(void) {
    int c = atomic_load(&current);
    if (c < 0) {
        c = (int)kiln_cpu_best_isa();
        atomic_store(&current, c);
    }
    return (kiln_isa)c;
}

int kiln_cpu_set_isa(kiln_isa isa) {
    if ((int)isa < 0 || isa > kiln_cpu_best_isa()) return -1;
    atomic_store(&current, (int)isa);
    return 0;
}

const char *kiln_cpu_isa_name(kiln_isa isa) {
    switch (isa) {
    case KILN_ISA_AVX2: return "avx2";
    case KILN_ISA_AVX512: return "avx512-vnni";
    default: return "portable";
    }
}

const kiln_kernels *kiln_current_kernels(void) {
    switch (kiln_cpu_isa()) {
#if defined(__x86_64__)
    case KILN_ISA_AVX512: return &kiln_kernels_avx512;
    case KILN_ISA_AVX2: return &kiln_kernels_avx2;
#endif
    default: return &kiln_kernels_portable;
    }
}

static _Thread_local float *scratch;
static _Thread_local size_t scratch_count;

float *kiln_thread_scratch(size_t count) {
    if (count > scratch_count) {
        free(scratch);
        scratch_count = count < 4096 ? 4096 : count;
        scratch = aligned_alloc(64, (scratch_count * sizeof(float) + 63) / 64 * 64);
        if (!scratch) abort();  // out of memory for a few KB: nothing sensible is left to do
    }
    return scratch;
}

uint16_t kiln_f32_to_f16(float x) { return kiln_float_to_half(x); }
float kiln_f16_to_f32(uint16_t h) { return kiln_half_to_float(h); }

int kiln_cpu_count(void) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0) return CPU_COUNT(&set);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}
