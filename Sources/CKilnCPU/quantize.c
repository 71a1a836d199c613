// Activations quantized per block of 32 (d = max|x| / 127), the form the integer dot products read.
#include <math.h>
#include <string.h>

#include "kernels.h"

size_t kiln_wtype_block_bytes(kiln_wtype type) {
    switch (type) {
    case KILN_W_Q4: return 24;
    case KILN_W_Q8: return 36;
    case KILN_W_Q8S: return 48;
    default: return 128;
    }
}

void kiln_quantize_rows(const float *x, int rows, int cols, kiln_q8_block *out) {
    int nb = cols / 32;
    for (int r = 0; r < rows; r++) {
        for (int b = 0; b < nb; b++) {
            const float *v = x + (size_t)r * cols + b * 32;
            kiln_q8_block *o = out + (size_t)r * nb + b;
            // Written so the compiler vectorizes it (this runs on the caller between the pool's jobs): a
            // comparison where fmaxf would be (the same for every input, NaN included, as amax starts at 0),
            // and rounding by adding and subtracting 1.5 · 2^23, which rounds to the nearest integer with
            // ties to even exactly as nearbyintf does for the |values| ≤ 127 that reach it. The same bytes as
            // the nearbyintf form on every input, NaN and infinities included.
            float amax = 0;
            for (int j = 0; j < 32; j++) {
                float a = fabsf(v[j]);
                amax = a > amax ? a : amax;
            }
            float d = amax / 127.0f;
            float id = amax > 0 ? 127.0f / amax : 0.0f;
            int8_t q[32];
            for (int j = 0; j < 32; j++) {
                float s = v[j] * id;
                s = s > -127.0f ? s : -127.0f;  // NaN (from a NaN or infinite input) to −127, as before
                s = s < 127.0f ? s : 127.0f;
                q[j] = (int8_t)(int)((s + 12582912.0f) - 12582912.0f);
            }
            int32_t s0 = 0, s1 = 0;
            for (int j = 0; j < 16; j++) s0 += q[j];
            for (int j = 16; j < 32; j++) s1 += q[j];
            memcpy(o->q, q, 32);
            o->d = d;
            o->sum0 = s0;
            o->sum1 = s1;
        }
    }
}
