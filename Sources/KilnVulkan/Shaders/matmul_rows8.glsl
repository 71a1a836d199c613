// The single-column frame: each invocation owns 8 output rows of one column (decode steps, B = 1 per
// sequence column), so each activation block is loaded once per 8 rows. No local arrays (see
// matmul_main.glsl); each element is reduced over K in the same order as in the tiled frame, so the two
// frames give bit-identical results.

layout(local_size_x = 8) in;

void main() {
    uint row0 = (gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * gl_WorkGroupSize.x) * 8;
    if (row0 >= p.N) return;
    uint blocks = p.K / 32;
    uint last = p.N - 1;
    uint i0 = row0, i1 = min(row0 + 1, last), i2 = min(row0 + 2, last), i3 = min(row0 + 3, last);
    uint i4 = min(row0 + 4, last), i5 = min(row0 + 5, last), i6 = min(row0 + 6, last), i7 = min(row0 + 7, last);
    for (uint c = 0; c < p.B; ++c) {
        float a0 = 0.0, a1 = 0.0, a2 = 0.0, a3 = 0.0, a4 = 0.0, a5 = 0.0, a6 = 0.0, a7 = 0.0;
        for (uint b = 0; b < blocks; ++b) {
            LOAD_X(x, c)
            a0 += blockDot(loadBlock(i0, b), PASS(x)); a1 += blockDot(loadBlock(i1, b), PASS(x));
            a2 += blockDot(loadBlock(i2, b), PASS(x)); a3 += blockDot(loadBlock(i3, b), PASS(x));
            a4 += blockDot(loadBlock(i4, b), PASS(x)); a5 += blockDot(loadBlock(i5, b), PASS(x));
            a6 += blockDot(loadBlock(i6, b), PASS(x)); a7 += blockDot(loadBlock(i7, b), PASS(x));
        }
        STORE(a0, row0, c) STORE(a1, row0 + 1, c) STORE(a2, row0 + 2, c) STORE(a3, row0 + 3, c)
        STORE(a4, row0 + 4, c) STORE(a5, row0 + 5, c) STORE(a6, row0 + 6, c) STORE(a7, row0 + 7, c)
    }
}
