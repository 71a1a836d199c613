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
// invocation computes a tile of 4 rows × 4 columns, so a weight block is loaded once per 4 columns and an
// activation block once per 4 rows.
void main() {
    uint row0 = gl_GlobalInvocationID.x * 4;
    if (row0 >= p.N) return;
    uint blocks = p.K / 32;
    uint last = p.N - 1;
    uint r0 = row0, r1 = min(row0 + 1, last), r2 = min(row0 + 2, last), r3 = min(row0 + 3, last);
    for (uint c = 0; c < p.B; c += 4) {
        float a00 = 0.0, a01 = 0.0, a02 = 0.0, a03 = 0.0, a10 = 0.0, a11 = 0.0, a12 = 0.0, a13 = 0.0;
        float a20 = 0.0, a21 = 0.0, a22 = 0.0, a23 = 0.0, a30 = 0.0, a31 = 0.0, a32 = 0.0, a33 = 0.0;
        for (uint b = 0; b < blocks; ++b) {
            Block w0 = loadBlock(r0, b), w1 = loadBlock(r1, b), w2 = loadBlock(r2, b), w3 = loadBlock(r3, b);
            {
                LOAD_X(x, c)
                a00 += blockDot(w0, PASS(x)); a10 += blockDot(w1, PASS(x)); a20 += blockDot(w2, PASS(x)); a30 += blockDot(w3, PASS(x));
            }
            if (c + 1 < p.B) {
                LOAD_X(x, c + 1)
                a01 += blockDot(w0, PASS(x)); a11 += blockDot(w1, PASS(x)); a21 += blockDot(w2, PASS(x)); a31 += blockDot(w3, PASS(x));
            }
            if (c + 2 < p.B) {
                LOAD_X(x, c + 2)
                a02 += blockDot(w0, PASS(x)); a12 += blockDot(w1, PASS(x)); a22 += blockDot(w2, PASS(x)); a32 += blockDot(w3, PASS(x));
            }
            if (c + 3 < p.B) {
                LOAD_X(x, c + 3)
                a03 += blockDot(w0, PASS(x)); a13 += blockDot(w1, PASS(x)); a23 += blockDot(w2, PASS(x)); a33 += blockDot(w3, PASS(x));
            }
        }
        STORE(a00, row0, c) STORE(a10, row0 + 1, c) STORE(a20, row0 + 2, c) STORE(a30, row0 + 3, c)
        STORE(a01, row0, c + 1) STORE(a11, row0 + 1, c + 1) STORE(a21, row0 + 2, c + 1) STORE(a31, row0 + 3, c + 1)
        STORE(a02, row0, c + 2) STORE(a12, row0 + 1, c + 2) STORE(a22, row0 + 2, c + 2) STORE(a32, row0 + 3, c + 2)
        STORE(a03, row0, c + 3) STORE(a13, row0 + 1, c + 3) STORE(a23, row0 + 2, c + 3) STORE(a33, row0 + 3, c + 3)
    }
}
