// The kernel table each instruction-set family fills (internal to CKilnCPU).
#ifndef KILN_CPU_KERNELS_H
#define KILN_CPU_KERNELS_H

#include "kiln_cpu.h"

/// Tiles of up to this many input columns share each unpacked weight block.
#define KILN_TILE_COLUMNS 4
/// Rows per group of the interleaved layouts, and bytes per group and block of 32.
#define KILN_GROUP_ROWS 16
#define KILN_Q4_GROUP_BLOCK (KILN_GROUP_ROWS * 24)
#define KILN_Q8_GROUP_BLOCK (KILN_GROUP_ROWS * 36)

typedef struct {
    /// Interleaved layouts: out[16·c + j] = row j of the group · column c for c < ncols (≤ KILN_TILE_COLUMNS);
    /// `nb` blocks of 32. Each result is computed by the same operations whatever ncols is.
    void (*dot_q4_group)(const uint8_t *group, int nb, const kiln_q8_block *const *cols, int ncols, float *out);
    void (*dot_q8_group)(const uint8_t *group, int nb, const kiln_q8_block *const *cols, int ncols, float *out);
    /// Row layouts: out[c] = row · column c, likewise.
    void (*dot_q8s)(const uint8_t *row, int nb, const kiln_q8_block *const *cols, int ncols, float *out);
    void (*dot_f32)(const float *row, int n, const float *const *cols, int ncols, float *out);
    /// Attention of one token's query head `head`.
    void (*attend)(const kiln_attention_args *args, int row, int head);
    void (*swiglu)(float *gate, const float *up, size_t count);
} kiln_kernels;

extern const kiln_kernels kiln_kernels_portable;
extern const kiln_kernels kiln_kernels_avx2;
extern const kiln_kernels kiln_kernels_avx512;

const kiln_kernels *kiln_current_kernels(void);

/// Scratch floats for the calling thread, at least `count` of them (kept between calls).
float *kiln_thread_scratch(size_t count);

static inline float kiln_half_to_float(uint16_t h) {
    _Float16 v;
    __builtin_memcpy(&v, &h, 2);
    return (float)v;
}

static inline uint16_t kiln_float_to_half(float f) {
    _Float16 v = (_Float16)f;
    uint16_t h;
    __builtin_memcpy(&h, &v, 2);
    return h;
}

#endif
