// The element-wise operations of a layer, the KV cache's stores, and attention over the pool.
#include <math.h>

#include "kernels.h"

void kiln_rms_norm(const float *x, const float *weight, int rows, int width, float eps, float *out) {
    for (int r = 0; r < rows; r++) {
        const float *v = x + (size_t)r * width;
        float *o = out + (size_t)r * width;
        float sum = 0;
        for (int i = 0; i < width; i++) sum += v[i] * v[i];
        float scale = 1.0f / sqrtf(sum / (float)width + eps);
        for (int i = 0; i < width; i++) o[i] = v[i] * scale * weight[i];
    }
}

void kiln_add(float *x, const float *y, size_t count) {
    for (size_t i = 0; i < count; i++) x[i] += y[i];
}

typedef struct {
    float *gate;
    const float *up;
    size_t count;
    const kiln_kernels *k;
} swiglu_job;

/// Elements per task: a few microseconds of work each.
#define SWIGLU_CHUNK 2048

static void swiglu_task(void *ctx, int index) {
    const swiglu_job *job = ctx;
    size_t start = (size_t)index * SWIGLU_CHUNK, n = job->count - start < SWIGLU_CHUNK ? job->count - start : SWIGLU_CHUNK;
    job->k->swiglu(job->gate + start, job->up + start, n);
}

void kiln_swiglu(kiln_pool *pool, float *gate, const float *up, size_t count) {
    swiglu_job job = {gate, up, count, kiln_current_kernels()};
    kiln_pool_run(pool, swiglu_task, &job, (int)((count + SWIGLU_CHUNK - 1) / SWIGLU_CHUNK));
}

typedef struct {
    const float *x;
    int cols;
    kiln_q8_block *out;
} quantize_job;

static void quantize_task(void *ctx, int row) {
    const quantize_job *job = ctx;
    kiln_quantize_rows(job->x + (size_t)row * job->cols, 1, job->cols, job->out + (size_t)row * (job->cols / 32));
}

void kiln_quantize(kiln_pool *pool, const float *x, int rows, int cols, kiln_q8_block *out) {
    quantize_job job = {x, cols, out};
    kiln_pool_run(pool, quantize_task, &job, rows);
}

void kiln_rope(float *x, const int32_t *positions, int rows, int heads, int head_dim, int dims, float base, int neox) {
    for (int t = 0; t < rows; t++) {
        double pos = (double)positions[t];
        for (int i = 0; i < dims / 2; i++) {
            // The reference decoder's expression, in double, so both rotate by the same floats.
            double theta = pos * pow((double)base, -2.0 * (double)i / (double)dims);
            float c = (float)cos(theta), s = (float)sin(theta);
            for (int h = 0; h < heads; h++) {
                float *v = x + ((size_t)t * heads + h) * head_dim;
                int a = neox ? i : 2 * i, b = neox ? i + dims / 2 : 2 * i + 1;
                float x0 = v[a], x1 = v[b];
                v[a] = x0 * c - x1 * s;
                v[b] = x0 * s + x1 * c;
            }
        }
    }
}

void kiln_kv_store(uint16_t *keys, uint16_t *values, const float *k, const float *v, const int32_t *slots, int rows,
                   int kv_width) {
    for (int t = 0; t < rows; t++) {
        uint16_t *kd = keys + (size_t)slots[t] * kv_width, *vd = values + (size_t)slots[t] * kv_width;
        const float *ks = k + (size_t)t * kv_width, *vs = v + (size_t)t * kv_width;
        for (int i = 0; i < kv_width; i++) {
            kd[i] = kiln_float_to_half(ks[i]);
            vd[i] = kiln_float_to_half(vs[i]);
        }
    }
}

typedef struct {
    const kiln_attention_args *args;
    const kiln_kernels *k;
} attention_job;

static void attention_task(void *ctx, int index) {
    const attention_job *job = ctx;
    job->k->attend(job->args, index / job->args->heads, index % job->args->heads);
}

void kiln_attention(kiln_pool *pool, const kiln_attention_args *args) {
    attention_job job = {args, kiln_current_kernels()};
    // A task per (token, query head): at batch 1 that is nine tasks a layer for SmolLM2, not three (its KV
    // heads), which two or more threads share far more evenly.
    kiln_pool_run(pool, attention_task, &job, args->rows * args->heads);
}
