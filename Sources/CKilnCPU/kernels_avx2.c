// The AVX2 kernel family (AVX2, FMA, F16C): integer dot products with vpmaddubsw + vpmaddwd.
#if defined(__x86_64__)
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "kernels.h"

#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)
#define KX(name) name##_avx2
#define KILN_DOT_U8S8(u, s) _mm256_madd_epi16(_mm256_maddubs_epi16((u), (s)), _mm256_set1_epi16(1))
#define KILN_DOT_ACC(acc, u, s) _mm256_add_epi32((acc), KILN_DOT_U8S8((u), (s)))
#define kernels_avx2 kiln_kernels_avx2
#include "kernels_x86.inc"
#pragma clang attribute pop
#endif
