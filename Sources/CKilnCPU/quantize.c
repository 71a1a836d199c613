// Activations quantized per block of 32 (d = max|x| / 127), the form the integer dot products read.
#include <math.h>

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
            float amax = 0;
            for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(v[j]));
            float d = amax / 127.0f;
            float id = amax > 0 ? 127.0f / amax : 0.0f;
            int32_t s0 = 0, s1 = 0;
            for (int j = 0; j < 32; j++) {
                float q = nearbyintf(v[j] * id);
                q = fminf(127.0f, fmaxf(-127.0f, q));
                o->q[j] = (int8_t)q;
                if (j < 16) s0 += o->q[j]; else s1 += o->q[j];
            }
            o->d = d;
            o->sum0 = s0;
            o->sum1 = s1;
        }
    }
}
