// Matrix products over the pool. A task is a chunk of one product's rows (whole groups of sixteen for the
// interleaved layouts), for every input column: each output element is one dot product computed by one
// thread, the same way whatever the chunking, so the results do not depend on the batch or the thread
// count. Columns go through in tiles that share each unpacked weight block; a row's dot product with a
// column is the same in a tile of any width.
#include "kernels.h"

/// Rows per task (a multiple of KILN_GROUP_ROWS): small enough to balance two to sixteen threads over a 576-row matrix.
#define ROWS_PER_TASK 32
#define MAX_PRODUCTS 8

typedef struct {
    const kiln_product *products;
    int count;
    int first_task[MAX_PRODUCTS + 1];
    const float *x;
    const kiln_q8_block *xq;
    int ncols;
    const kiln_kernels *k;
} matmul_job;

static int interleaved(const kiln_matrix *w) { return w->type == KILN_W_Q4 || w->type == KILN_W_Q8; }

/// out[c · 16 + j] = row (16·group + j) · column c for the interleaved layouts; out[c] = row `r` · column c
/// for the others.
static void tile(const kiln_kernels *k, const kiln_matrix *w, int r, const float *const *xs, const kiln_q8_block *const *qs,
                 int nc, float *out) {
    int nb = w->cols / 32;
    switch (w->type) {
    case KILN_W_Q4: k->dot_q4_group((const uint8_t *)w->data + (size_t)(r / KILN_GROUP_ROWS) * w->stride, nb, qs, nc, out); break;
    case KILN_W_Q8: k->dot_q8_group((const uint8_t *)w->data + (size_t)(r / KILN_GROUP_ROWS) * w->stride, nb, qs, nc, out); break;
    case KILN_W_Q8S: k->dot_q8s((const uint8_t *)w->data + (size_t)r * w->stride, nb, qs, nc, out); break;
    default: k->dot_f32((const float *)((const uint8_t *)w->data + (size_t)r * w->stride), w->cols, xs, nc, out); break;
    }
}

static void matmul_task(void *ctx, int index) {
    const matmul_job *job = ctx;
    int p = 0;
    while (index >= job->first_task[p + 1]) p++;
    const kiln_product *product = &job->products[p];
    const kiln_matrix *w = product->w;
    int r0 = (index - job->first_task[p]) * ROWS_PER_TASK;
    int r1 = r0 + ROWS_PER_TASK < w->rows ? r0 + ROWS_PER_TASK : w->rows;
    int nb = w->cols / 32, step = interleaved(w) ? KILN_GROUP_ROWS : 1;
    for (int c0 = 0; c0 < job->ncols; c0 += KILN_TILE_COLUMNS) {
        int nc = job->ncols - c0 < KILN_TILE_COLUMNS ? job->ncols - c0 : KILN_TILE_COLUMNS;
        const float *xs[KILN_TILE_COLUMNS];
        const kiln_q8_block *qs[KILN_TILE_COLUMNS];
        for (int c = 0; c < nc; c++) {
            xs[c] = job->x + (size_t)(c0 + c) * w->cols;
            qs[c] = job->xq ? job->xq + (size_t)(c0 + c) * nb : NULL;
        }
        for (int r = r0; r < r1; r += step) {
            float out[KILN_GROUP_ROWS * KILN_TILE_COLUMNS];
            tile(job->k, w, r, xs, qs, nc, out);
            for (int c = 0; c < nc; c++) {
                for (int j = 0; j < step && r + j < r1; j++) {
                    float v = out[c * step + j];
                    if (product->bias) v += product->bias[r + j];
                    product->y[(size_t)(c0 + c) * product->ldy + r + j] = v;
                }
            }
        }
    }
}

void kiln_matmul(kiln_pool *pool, const kiln_product *products, int count, const float *x, const kiln_q8_block *xq,
                 int ncols) {
    for (int start = 0; start < count; start += MAX_PRODUCTS) {
        matmul_job job = {.products = products + start, .count = count - start < MAX_PRODUCTS ? count - start : MAX_PRODUCTS,
                          .x = x, .xq = xq, .ncols = ncols, .k = kiln_current_kernels()};
        job.first_task[0] = 0;
        for (int p = 0; p < job.count; p++)
            job.first_task[p + 1] = job.first_task[p] + (job.products[p].w->rows + ROWS_PER_TASK - 1) / ROWS_PER_TASK;
        kiln_pool_run(pool, matmul_task, &job, job.first_task[job.count]);
    }
}

float kiln_dot_row(const kiln_matrix *w, int row, const float *x, const kiln_q8_block *xq) {
    float out[KILN_GROUP_ROWS * KILN_TILE_COLUMNS];
    tile(kiln_current_kernels(), w, row, &x, &xq, 1, out);
    return interleaved(w) ? out[row % KILN_GROUP_ROWS] : out[0];
}
