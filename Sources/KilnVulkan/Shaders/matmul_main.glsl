// The frame shared by the matrix kernels of the CPU-shaped ("lavapipe") family: y = W · x for a batch of
// columns, optionally adding into y (the residual).
//
// Lanes never cooperate: no shared memory, no barriers, no
// subgroup operations (each is a coroutine switch or a scalar loop on a CPU). Every output element is
// reduced over K in the same order whatever the batch size: results are batch-invariant, bit for bit.
//
// The including shader defines: struct Block; Block loadBlock(uint row, uint block);
// float blockDot(Block w, X_ARGS(x)) (X_ARGS: a block of x as eight vec4s, and its sum).

layout(local_size_x = 8) in;

// No local arrays: on lavapipe an array that is not fully unrolled lives in per-lane scratch memory, and
// every access becomes a scatter/gather. Rows, columns and activation blocks are plain variables: each
// invocation computes a tile of 8 rows × 4 columns, so a weight block is loaded once per 4 columns and an
// activation block once per 8 rows. (Generated shape; see the Python snippet in the commit history.)
void main() {
    uint row0 = (gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * gl_WorkGroupSize.x) * 8;
    if (row0 >= p.N) return;
    uint blocks = p.K / 32;
    uint last = p.N - 1;
    uint r0 = min(row0 + 0, last), r1 = min(row0 + 1, last), r2 = min(row0 + 2, last), r3 = min(row0 + 3, last), r4 = min(row0 + 4, last), r5 = min(row0 + 5, last), r6 = min(row0 + 6, last), r7 = min(row0 + 7, last);
    for (uint c = 0; c < p.B; c += 4) {
        float a00 = 0.0, a01 = 0.0, a02 = 0.0, a03 = 0.0;
        float a10 = 0.0, a11 = 0.0, a12 = 0.0, a13 = 0.0;
        float a20 = 0.0, a21 = 0.0, a22 = 0.0, a23 = 0.0;
        float a30 = 0.0, a31 = 0.0, a32 = 0.0, a33 = 0.0;
        float a40 = 0.0, a41 = 0.0, a42 = 0.0, a43 = 0.0;
        float a50 = 0.0, a51 = 0.0, a52 = 0.0, a53 = 0.0;
        float a60 = 0.0, a61 = 0.0, a62 = 0.0, a63 = 0.0;
        float a70 = 0.0, a71 = 0.0, a72 = 0.0, a73 = 0.0;
        for (uint b = 0; b < blocks; ++b) {
            Block w0 = loadBlock(r0, b), w1 = loadBlock(r1, b), w2 = loadBlock(r2, b), w3 = loadBlock(r3, b), w4 = loadBlock(r4, b), w5 = loadBlock(r5, b), w6 = loadBlock(r6, b), w7 = loadBlock(r7, b);
            if (c < p.B) {
                LOAD_X(x, c)
                a00 += blockDot(w0, PASS(x)); a10 += blockDot(w1, PASS(x)); a20 += blockDot(w2, PASS(x)); a30 += blockDot(w3, PASS(x)); a40 += blockDot(w4, PASS(x)); a50 += blockDot(w5, PASS(x)); a60 += blockDot(w6, PASS(x)); a70 += blockDot(w7, PASS(x));
            }
            if (c + 1 < p.B) {
                LOAD_X(x, c + 1)
                a01 += blockDot(w0, PASS(x)); a11 += blockDot(w1, PASS(x)); a21 += blockDot(w2, PASS(x)); a31 += blockDot(w3, PASS(x)); a41 += blockDot(w4, PASS(x)); a51 += blockDot(w5, PASS(x)); a61 += blockDot(w6, PASS(x)); a71 += blockDot(w7, PASS(x));
            }
            if (c + 2 < p.B) {
                LOAD_X(x, c + 2)
                a02 += blockDot(w0, PASS(x)); a12 += blockDot(w1, PASS(x)); a22 += blockDot(w2, PASS(x)); a32 += blockDot(w3, PASS(x)); a42 += blockDot(w4, PASS(x)); a52 += blockDot(w5, PASS(x)); a62 += blockDot(w6, PASS(x)); a72 += blockDot(w7, PASS(x));
            }
            if (c + 3 < p.B) {
                LOAD_X(x, c + 3)
                a03 += blockDot(w0, PASS(x)); a13 += blockDot(w1, PASS(x)); a23 += blockDot(w2, PASS(x)); a33 += blockDot(w3, PASS(x)); a43 += blockDot(w4, PASS(x)); a53 += blockDot(w5, PASS(x)); a63 += blockDot(w6, PASS(x)); a73 += blockDot(w7, PASS(x));
            }
        }
        STORE(a00, row0 + 0, c) STORE(a10, row0 + 1, c) STORE(a20, row0 + 2, c) STORE(a30, row0 + 3, c) STORE(a40, row0 + 4, c) STORE(a50, row0 + 5, c) STORE(a60, row0 + 6, c) STORE(a70, row0 + 7, c)
        STORE(a01, row0 + 0, c + 1) STORE(a11, row0 + 1, c + 1) STORE(a21, row0 + 2, c + 1) STORE(a31, row0 + 3, c + 1) STORE(a41, row0 + 4, c + 1) STORE(a51, row0 + 5, c + 1) STORE(a61, row0 + 6, c + 1) STORE(a71, row0 + 7, c + 1)
        STORE(a02, row0 + 0, c + 2) STORE(a12, row0 + 1, c + 2) STORE(a22, row0 + 2, c + 2) STORE(a32, row0 + 3, c + 2) STORE(a42, row0 + 4, c + 2) STORE(a52, row0 + 5, c + 2) STORE(a62, row0 + 6, c + 2) STORE(a72, row0 + 7, c + 2)
        STORE(a03, row0 + 0, c + 3) STORE(a13, row0 + 1, c + 3) STORE(a23, row0 + 2, c + 3) STORE(a33, row0 + 3, c + 3) STORE(a43, row0 + 4, c + 3) STORE(a53, row0 + 5, c + 3) STORE(a63, row0 + 6, c + 3) STORE(a73, row0 + 7, c + 3)
    }
}
