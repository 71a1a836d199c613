// The AVX-512 VNNI kernel family: the AVX2 family with vpdpbusd (one instruction for four byte products
// and their sum: on 512-bit vectors for the interleaved layouts' sixteen rows, on 256-bit ones through
// AVX-512 VL elsewhere). Same integers, same float operations per lane: the same results as AVX2, faster.
#if defined(__x86_64__)
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "kernels.h"

#pragma clang attribute push(__attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni"))), apply_to = function)
#define KX(name) name##_avx512
#define KILN_DOT_U8S8(u, s) _mm256_dpbusd_epi32(_mm256_setzero_si256(), (u), (s))
#define KILN_DOT_ACC(acc, u, s) _mm256_dpbusd_epi32((acc), (u), (s))
#define kernels_avx512 kiln_kernels_avx512
#define KILN_ZMM_GROUPS 1

// A group of sixteen rows at once: one 512-bit vpdpbusd per four products of all sixteen.
static inline __m512i bcast4_512(const int8_t *q) {
    int32_t v;
    memcpy(&v, q, 4);
    return _mm512_set1_epi32(v);
}

static inline __attribute__((always_inline)) void q4_group_tile_avx512(const uint8_t *group, int nb, const kiln_q8_block *const *cols,
                                                                       const int nc, float *out) {
    const __m512i mask = _mm512_set1_epi8(15);
    __m512 acc[KILN_TILE_COLUMNS];
    for (int c = 0; c < nc; c++) acc[c] = _mm512_setzero_ps();
    for (int b = 0; b < nb; b++) {
        const uint8_t *g = group + (size_t)b * KILN_Q4_GROUP_BLOCK;
        __m512 d = _mm512_loadu_ps((const float *)g), m = _mm512_loadu_ps((const float *)(g + 64));
        __m512i lo[4], hi[4];
        for (int v = 0; v < 4; v++) {
            __m512i raw = _mm512_loadu_si512((const void *)(g + 128 + 64 * v));
            lo[v] = _mm512_and_si512(raw, mask);
            hi[v] = _mm512_and_si512(_mm512_srli_epi16(raw, 4), mask);
        }
        for (int c = 0; c < nc; c++) {
            const kiln_q8_block *a = cols[c] + b;
            __m512i s0 = _mm512_setzero_si512(), s1 = s0, s2 = s0, s3 = s0;
            s0 = _mm512_dpbusd_epi32(s0, lo[0], bcast4_512(a->q + 0));
            s1 = _mm512_dpbusd_epi32(s1, lo[1], bcast4_512(a->q + 4));
            s2 = _mm512_dpbusd_epi32(s2, lo[2], bcast4_512(a->q + 8));
            s3 = _mm512_dpbusd_epi32(s3, lo[3], bcast4_512(a->q + 12));
            s0 = _mm512_dpbusd_epi32(s0, hi[0], bcast4_512(a->q + 16));
            s1 = _mm512_dpbusd_epi32(s1, hi[1], bcast4_512(a->q + 20));
            s2 = _mm512_dpbusd_epi32(s2, hi[2], bcast4_512(a->q + 24));
            s3 = _mm512_dpbusd_epi32(s3, hi[3], bcast4_512(a->q + 28));
            __m512i s = _mm512_add_epi32(_mm512_add_epi32(s0, s1), _mm512_add_epi32(s2, s3));
            acc[c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_mul_ps(d, _mm512_set1_ps(a->d)), acc[c]);
            acc[c] = _mm512_fmadd_ps(m, _mm512_set1_ps(a->d * (float)(a->sum0 + a->sum1)), acc[c]);
        }
    }
    for (int c = 0; c < nc; c++) _mm512_storeu_ps(out + KILN_GROUP_ROWS * c, acc[c]);
}

static inline __attribute__((always_inline)) void q8_group_tile_avx512(const uint8_t *group, int nb, const kiln_q8_block *const *cols,
                                                                       const int nc, float *out) {
    __m512 acc[KILN_TILE_COLUMNS];
    for (int c = 0; c < nc; c++) acc[c] = _mm512_setzero_ps();
    for (int b = 0; b < nb; b++) {
        const uint8_t *g = group + (size_t)b * KILN_Q8_GROUP_BLOCK;
        __m512 d = _mm512_loadu_ps((const float *)g);
        __m512i u[8];
        for (int t = 0; t < 8; t++) u[t] = _mm512_loadu_si512((const void *)(g + 64 + 64 * t));
        for (int c = 0; c < nc; c++) {
            const kiln_q8_block *a = cols[c] + b;
            // Stored as q + 128: Σ (q + 128)·a − 128·Σa = Σ q·a, exactly.
            __m512i s0 = _mm512_setzero_si512(), s1 = s0, s2 = s0, s3 = s0;
            for (int t = 0; t < 8; t += 4) {
                s0 = _mm512_dpbusd_epi32(s0, u[t], bcast4_512(a->q + 4 * t));
                s1 = _mm512_dpbusd_epi32(s1, u[t + 1], bcast4_512(a->q + 4 * t + 4));
                s2 = _mm512_dpbusd_epi32(s2, u[t + 2], bcast4_512(a->q + 4 * t + 8));
                s3 = _mm512_dpbusd_epi32(s3, u[t + 3], bcast4_512(a->q + 4 * t + 12));
            }
            __m512i s = _mm512_add_epi32(_mm512_add_epi32(s0, s1), _mm512_add_epi32(s2, s3));
            s = _mm512_sub_epi32(s, _mm512_set1_epi32(128 * (a->sum0 + a->sum1)));
            acc[c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_mul_ps(d, _mm512_set1_ps(a->d)), acc[c]);
        }
    }
    for (int c = 0; c < nc; c++) _mm512_storeu_ps(out + KILN_GROUP_ROWS * c, acc[c]);
}
#include "kernels_x86.inc"
#pragma clang attribute pop
#endif
