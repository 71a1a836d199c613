// The portable kernel family: plain C, for CPUs without AVX2 and as the tests' second opinion.
#include <math.h>

#include "kernels.h"

static void dot_q4_group(const uint8_t *group, int nb, const kiln_q8_block *const *cols, int ncols, float *out) {
    for (int c = 0; c < ncols; c++) {
        float acc[KILN_GROUP_ROWS] = {0};
        for (int b = 0; b < nb; b++) {
            const uint8_t *g = group + (size_t)b * KILN_Q4_GROUP_BLOCK;
            float d[KILN_GROUP_ROWS], m[KILN_GROUP_ROWS];
            __builtin_memcpy(d, g, sizeof d);
            __builtin_memcpy(m, g + 64, sizeof m);
            const kiln_q8_block *a = cols[c] + b;
            for (int j = 0; j < KILN_GROUP_ROWS; j++) {
                int32_t s = 0;
                for (int v = 0; v < 4; v++) {
                    for (int k = 0; k < 4; k++) {
                        uint8_t byte = g[128 + 64 * v + 4 * j + k];
                        s += (byte & 15) * a->q[4 * v + k] + (byte >> 4) * a->q[16 + 4 * v + k];
                    }
                }
                acc[j] += (float)s * (d[j] * a->d) + m[j] * (a->d * (float)(a->sum0 + a->sum1));
            }
        }
        for (int j = 0; j < KILN_GROUP_ROWS; j++) out[KILN_GROUP_ROWS * c + j] = acc[j];
    }
}

static void dot_q8_group(const uint8_t *group, int nb, const kiln_q8_block *const *cols, int ncols, float *out) {
    for (int c = 0; c < ncols; c++) {
        float acc[KILN_GROUP_ROWS] = {0};
        for (int b = 0; b < nb; b++) {
            const uint8_t *g = group + (size_t)b * KILN_Q8_GROUP_BLOCK;
            float d[KILN_GROUP_ROWS];
            __builtin_memcpy(d, g, sizeof d);
            const kiln_q8_block *a = cols[c] + b;
            for (int j = 0; j < KILN_GROUP_ROWS; j++) {
                int32_t s = 0;
                for (int t = 0; t < 8; t++)
                    for (int k = 0; k < 4; k++) s += (int8_t)(g[64 + 64 * t + 4 * j + k] ^ 0x80) * a->q[4 * t + k];
                acc[j] += (float)s * (d[j] * a->d);
            }
        }
        for (int j = 0; j < KILN_GROUP_ROWS; j++) out[KILN_GROUP_ROWS * c + j] = acc[j];
    }
}

static void dot_q8s(const uint8_t *row, int nb, const kiln_q8_block *const *cols, int ncols, float *out) {
    for (int c = 0; c < ncols; c++) {
        float acc = 0;
        for (int b = 0; b < nb; b++) {
            const uint8_t *w = row + (size_t)b * 48;
            float sm[4];
            __builtin_memcpy(sm, w, 16);
            const int8_t *q = (const int8_t *)(w + 16);
            const kiln_q8_block *a = cols[c] + b;
            int32_t s0 = 0, s1 = 0;
            for (int j = 0; j < 16; j++) s0 += q[j] * a->q[j];
            for (int j = 16; j < 32; j++) s1 += q[j] * a->q[j];
            acc += sm[0] * a->d * (float)s0 + sm[1] * a->d * (float)s1
                 + (sm[2] * a->d * (float)a->sum0 + sm[3] * a->d * (float)a->sum1);
        }
        out[c] = acc;
    }
}

static void dot_f32(const float *row, int n, const float *const *cols, int ncols, float *out) {
    for (int c = 0; c < ncols; c++) {
        float acc = 0;
        for (int i = 0; i < n; i++) acc += row[i] * cols[c][i];
        out[c] = acc;
    }
}

static void attend(const kiln_attention_args *a, int t, int h) {
    int hd = a->head_dim, visible = a->positions[t] + 1, g = h / (a->heads / a->kv_heads);
    const int32_t *table = a->tables + a->table_offsets[t];
    float scale = 1.0f / sqrtf((float)hd);
    float *scores = kiln_thread_scratch((size_t)visible);
    const float *q = a->q + ((size_t)t * a->heads + h) * hd;
    float *out = a->out + ((size_t)t * a->heads + h) * hd;
    float maximum = -INFINITY;
    for (int p = 0; p < visible; p++) {
        size_t slot = (size_t)table[p / a->block_size] * a->block_size + p % a->block_size;
        const uint16_t *k = a->keys + (slot * a->kv_heads + g) * hd;
        float s = 0;
        for (int i = 0; i < hd; i++) s += q[i] * kiln_half_to_float(k[i]);
        scores[p] = s * scale;
        maximum = fmaxf(maximum, scores[p]);
    }
    float total = 0;
    for (int p = 0; p < visible; p++) {
        scores[p] = expf(scores[p] - maximum);
        total += scores[p];
    }
    for (int i = 0; i < hd; i++) out[i] = 0;
    for (int p = 0; p < visible; p++) {
        size_t slot = (size_t)table[p / a->block_size] * a->block_size + p % a->block_size;
        const uint16_t *v = a->values + (slot * a->kv_heads + g) * hd;
        for (int i = 0; i < hd; i++) out[i] += scores[p] * kiln_half_to_float(v[i]);
    }
    float inv = 1.0f / total;
    for (int i = 0; i < hd; i++) out[i] *= inv;
}

static void swiglu(float *gate, const float *up, size_t count) {
    for (size_t i = 0; i < count; i++) gate[i] = gate[i] / (1.0f + expf(-gate[i])) * up[i];
}

const kiln_kernels kiln_kernels_portable = {dot_q4_group, dot_q8_group, dot_q8s, dot_f32, attend, swiglu};
