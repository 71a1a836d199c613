// Kiln's native CPU kernels: quantized matrix × vector/matrix products, the element-wise operations of a
// llama-family layer, attention over a paged f16 KV cache, and the thread pool they run on.
//
// Written from the GGUF formats' definitions. Every output element is computed by one thread with one
// sequence of operations that depends only on its inputs (never on the batch, the chunking or the thread
// count), so results are bit-identical however a step is split.
#ifndef KILN_CPU_H
#define KILN_CPU_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// ---------------------------------------------------------------------------------------------------------
// Instruction sets

/// The kernel families, best last. A machine runs every family up to the best it supports.
typedef enum {
    KILN_ISA_PORTABLE = 0,  ///< plain C
    KILN_ISA_AVX2 = 1,      ///< AVX2 + FMA + F16C
    KILN_ISA_AVX512 = 2,    ///< AVX-512 F/BW/VL + VNNI (integer dot products with vpdpbusd)
} kiln_isa;

/// The best family this CPU supports.
kiln_isa kiln_cpu_best_isa(void);
/// The family the kernels use now (the best, unless set lower).
kiln_isa kiln_cpu_isa(void);
/// Uses `isa` from now on (for tests and benchmarks); returns 0, or -1 when the CPU lacks it.
int kiln_cpu_set_isa(kiln_isa isa);
/// The cores this process may run on (its affinity mask).
int kiln_cpu_count(void);
/// "portable", "avx2" or "avx512-vnni".
const char *kiln_cpu_isa_name(kiln_isa isa);

// ---------------------------------------------------------------------------------------------------------
// Weights, repacked at load. Every layout holds blocks of 32 values of one row; a row's blocks are contiguous.

typedef enum {
    /// Rows interleaved by sixteen. Per group of sixteen rows and block of 32: the rows' scales d (16 × f32),
    /// mins m (16 × f32), then four 64-byte vectors whose byte 4j + k holds, for row j, value 4v + k in its low
    /// nibble and value 16 + 4v + k in its high one (vector v); value = d·q + m. GGUF's Q4_1, and Q4_0 with
    /// m = −8·d. 384 bytes per group and block.
    KILN_W_Q4 = 0,
    /// Rows interleaved by sixteen: per group and block, sixteen f32 scales, then eight 64-byte vectors whose
    /// byte 4j + k is row j's value 4t + k (vector t) plus 128; value = d·q. GGUF's Q8_0. 576 bytes per group
    /// and block.
    KILN_W_Q8 = 1,
    /// 48 bytes per row and block: f32 s0, s1, m0, m1, 32 signed bytes; value j = q_j·s_h + m_h with h = j / 16.
    /// Every other integer format (Q5_0, Q5_1, Q4_K, Q5_K, Q6_K) through the scales and mins ggml folds.
    KILN_W_Q8S = 2,
    /// f32 values (F32, F16 and BF16 tensors; activations stay f32 for these).
    KILN_W_F32 = 3,
} kiln_wtype;

/// Bytes of one row's 32-value block of `type` (4 per value for KILN_W_F32: 128; a group's block over 8 for the
/// interleaved layouts).
size_t kiln_wtype_block_bytes(kiln_wtype type);

/// A weight matrix: `rows` outputs, each `cols` inputs (cols a multiple of 32).
typedef struct {
    const void *data;
    int32_t type;  // kiln_wtype
    int32_t rows;
    int32_t cols;
    /// Bytes from one row to the next, or from one group of sixteen rows to the next (KILN_W_Q4, KILN_W_Q8).
    size_t stride;
} kiln_matrix;

// ---------------------------------------------------------------------------------------------------------
// Activations quantized per block of 32 for integer dot products.

/// 44 bytes: d = max|x| / 127, q = round(x / d), and the sums of q over values 0..15 and 16..31.
typedef struct {
    float d;
    int32_t sum0;
    int32_t sum1;
    int8_t q[32];
} kiln_q8_block;

/// Quantizes `rows` rows of `cols` floats (cols a multiple of 32) into `out` (rows · cols/32 blocks).
void kiln_quantize_rows(const float *x, int rows, int cols, kiln_q8_block *out);

// ---------------------------------------------------------------------------------------------------------
// Threads

typedef struct kiln_pool kiln_pool;
/// A pool of `threads` − 1 workers (the caller is the last thread); at least 1.
kiln_pool *kiln_pool_create(int threads);
void kiln_pool_destroy(kiln_pool *pool);
int kiln_pool_threads(const kiln_pool *pool);
/// Runs task(ctx, i) for every i in 0..<count, spread over the pool's threads; returns when all are done.
/// Tasks must not depend on which thread runs them. One `run` at a time per pool.
void kiln_pool_run(kiln_pool *pool, void (*task)(void *ctx, int index), void *ctx, int count);

/// kiln_quantize_rows with the rows spread over the pool.
void kiln_quantize(kiln_pool *pool, const float *x, int rows, int cols, kiln_q8_block *out);

// ---------------------------------------------------------------------------------------------------------
// Matrix products

/// One product of a fused group: y[c · ldy + r] = w[r] · x[c] (+ bias[r]) for every row r and column c.
typedef struct {
    const kiln_matrix *w;
    const float *bias;  // or NULL
    float *y;
    int32_t ldy;
} kiln_product;

/// Runs `count` products that share their input, as one pass over the pool: `x` (ncols rows of `cols`
/// floats) and its quantization `xq` (NULL when every matrix is KILN_W_F32).
void kiln_matmul(kiln_pool *pool, const kiln_product *products, int count, const float *x, const kiln_q8_block *xq,
                 int ncols);

/// One dot product of weight row `row` and one input column, as the matrix products compute it (for tests).
float kiln_dot_row(const kiln_matrix *w, int row, const float *x, const kiln_q8_block *xq);

// ---------------------------------------------------------------------------------------------------------
// Element-wise operations (rows of `width`)

/// out = x / sqrt(mean(x²) + eps) ⊙ weight, per row.
void kiln_rms_norm(const float *x, const float *weight, int rows, int width, float eps, float *out);
/// x += y.
void kiln_add(float *x, const float *y, size_t count);
/// gate = silu(gate) ⊙ up, in chunks over the pool (element-wise: the same result however it is split).
void kiln_swiglu(kiln_pool *pool, float *gate, const float *up, size_t count);
/// Rotary embedding in place on `heads` heads of `head_dim` per row, `dims` of each rotated, at each row's
/// position. `neox` pairs i with i + dims/2 (qwen2), else adjacent pairs (GGUF llama).
void kiln_rope(float *x, const int32_t *positions, int rows, int heads, int head_dim, int dims, float base, int neox);

// ---------------------------------------------------------------------------------------------------------
// The paged KV cache (f16), and attention over it

/// Stores each row's keys and values (kv_width floats each) at its slot of a layer's pool
/// (slot = block · block_size + offset; a slot holds kv_width halves).
void kiln_kv_store(uint16_t *keys, uint16_t *values, const float *k, const float *v, const int32_t *slots, int rows,
                   int kv_width);

/// Causal grouped-query attention for `rows` tokens: token t sees positions 0 ... positions[t] of its
/// sequence, whose slots come from the block table at tables + table_offsets[t]. q: rows × heads × head_dim;
/// out: the same shape.
typedef struct {
    const float *q;
    const uint16_t *keys;
    const uint16_t *values;
    const int32_t *positions;
    const int32_t *table_offsets;
    const int32_t *tables;
    float *out;
    int32_t rows;
    int32_t heads;
    int32_t kv_heads;
    int32_t head_dim;
    int32_t block_size;
} kiln_attention_args;

void kiln_attention(kiln_pool *pool, const kiln_attention_args *args);

/// Bytes per second the pool's threads read from memory together: each sums its share of a `bytes` buffer
/// (much larger than the caches), best of `rounds`. For the batch-1 decode bound.
double kiln_read_bandwidth(kiln_pool *pool, size_t bytes, int rounds);

/// f32 → f16 (round to nearest even) and back, as the cache stores them.
uint16_t kiln_f32_to_f16(float x);
float kiln_f16_to_f32(uint16_t h);

#ifdef __cplusplus
}
#endif

#endif
