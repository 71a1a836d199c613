// The AVX-512 VNNI kernel family: the AVX2 family with vpdpbusd (one instruction for four byte products
// and their sum, on 256-bit vectors through AVX-512 VL). Same integers, same float operations: the same
// results as AVX2, faster.
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
#include "kernels_x86.inc"
#pragma clang attribute pop
#endif
