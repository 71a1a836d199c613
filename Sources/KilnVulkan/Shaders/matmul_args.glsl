// Shared by the matrix kernels: push constants, the activation and output bindings, the weight layout, and
// the loading of a block of 32 activations as eight vec4s plus their sum (no arrays: see Tools/matmul_frames.py).

layout(push_constant) uniform Parameters {
    uint K;        // input width (a multiple of 32)
    uint N;        // output rows
    uint B;        // batch columns
    uint xStride;  // floats between columns of x
    uint yStride;  // floats between columns of y
    uint flags;    // 1: y += W·x (the residual); 2, 4: RMSNorm folded in (NORM_IN, NORM_OUT below); 8: float16 KV pool
    uint rowOffset; // where row 0 of this (slice of the) matrix lands in y
    float epsilon;  // NORM_IN: the RMSNorm epsilon
    // The QKV epilogue's shape (QKV_EPILOGUE only).
    uint headDim; uint qWidth; uint kvWidth; uint ropeDim; uint blockSize; uint maxBlocks;
} p;

layout(binding = 2) uniform samplerBuffer x;
layout(std430, binding = 3) buffer OutputY { float y[]; };

#include "weight_layout.glsl"
uint blockIndex(uint row, uint block) { return weightBlockIndex(row, block, p.K / 32); }

// Loads block `block` of column `column` of x as eight vec4s s0..s7 (elements 4k..4k+3 in sk) and their sum.
#define LOAD_X(s, column, block) \
    vec4 s##0, s##1, s##2, s##3, s##4, s##5, s##6, s##7; float s##Sum; { \
        uint xb = ((column) * p.xStride) / 4 + (block) * 8; \
        s##0 = texelFetch(x, int(xb)); s##1 = texelFetch(x, int(xb + 1)); s##2 = texelFetch(x, int(xb + 2)); s##3 = texelFetch(x, int(xb + 3)); \
        s##4 = texelFetch(x, int(xb + 4)); s##5 = texelFetch(x, int(xb + 5)); s##6 = texelFetch(x, int(xb + 6)); s##7 = texelFetch(x, int(xb + 7)); \
        vec4 s4 = ((s##0 + s##1) + (s##2 + s##3)) + ((s##4 + s##5) + (s##6 + s##7)); \
        s##Sum = (s4.x + s4.y) + (s4.z + s4.w); }

#define STORE(acc, row, column) \
    if ((row) < p.N && (column) < p.B) { \
        uint at = (column) * p.yStride + p.rowOffset + (row); \
        y[at] = (p.flags & 1u) != 0u ? y[at] + acc : acc; \
    }

// RMSNorm folded into the matrix kernels (the CPU family's 8-row frames), so that a layer needs no norm
// dispatch of its own (each dispatch costs tens of µs on lavapipe's thread pool):
// - NORM_OUT (flags & 4), in the kernels that write the residual stream h (output and down projections):
//   besides h they write h ∘ g (g: the next RMSNorm's weight) to `normed`, and per column the sum of the
//   squares of each 8 rows of h to `sumSquaresOut` (the rows of an invocation, so every partial sum is
//   one invocation's and the frames agree bit for bit).
// - NORM_IN (flags & 2), in the kernels that read the norm's output (QKV, gate|up, the vocabulary
//   projection): x is h ∘ g, and each result is scaled by 1 / sqrt(mean(h²) + ε), from the column's partial
//   sums (`sumSquaresIn`) added in a fixed order. W·(h ∘ g)·r equals W·(h·r ∘ g) up to rounding.
const uint NORM_IN = 2u, NORM_OUT = 4u, KV_F16 = 8u;
layout(binding = 4) uniform samplerBuffer normWeight;
layout(std430, binding = 5) writeonly buffer Normed { float normed[]; };
layout(std430, binding = 6) writeonly buffer SumSquaresOut { float sumSquaresOut[]; };
layout(binding = 7) uniform samplerBuffer sumSquaresIn;

// The RMSNorm scale of column `column` of x: its K / 8 partial sums (K / 32 texels), added in order.
float normScale(uint column) {
    uint texels = p.K / 32u, base = column * texels;
    vec4 s = vec4(0.0);
    for (uint i = 0u; i < texels; ++i) s += texelFetch(sumSquaresIn, int(base + i));
    precise float total = (s.x + s.y) + (s.z + s.w);
    return 1.0 / sqrt(total / float(p.K) + p.epsilon);
}

// Writes rows row ..< row + 8 of one column (lo: the first four, hi: the last four), NORM_OUT's extra
// outputs too. NORM_OUT needs all 8 rows to exist and rowOffset % 8 == 0: it runs on the output and down
// projections, whose rows (the model width) VulkanDecoder requires to be a multiple of 32, and DeviceMatrix
// slices start at 64-row groups.
void storeRows8(vec4 lo, vec4 hi, uint row, uint column) {
    if ((p.flags & NORM_OUT) == 0u) {
        STORE(lo.x, row + 0u, column) STORE(lo.y, row + 1u, column) STORE(lo.z, row + 2u, column) STORE(lo.w, row + 3u, column)
        STORE(hi.x, row + 4u, column) STORE(hi.y, row + 5u, column) STORE(hi.z, row + 6u, column) STORE(hi.w, row + 7u, column)
        return;
    }
    if (column >= p.B) return;
    uint first = p.rowOffset + row, at = column * p.yStride + first;
    if ((p.flags & 1u) != 0u) {
        lo += vec4(y[at], y[at + 1u], y[at + 2u], y[at + 3u]);
        hi += vec4(y[at + 4u], y[at + 5u], y[at + 6u], y[at + 7u]);
    }
    y[at] = lo.x; y[at + 1u] = lo.y; y[at + 2u] = lo.z; y[at + 3u] = lo.w;
    y[at + 4u] = hi.x; y[at + 5u] = hi.y; y[at + 6u] = hi.z; y[at + 7u] = hi.w;
    vec4 glo = lo * texelFetch(normWeight, int(first / 4u)), ghi = hi * texelFetch(normWeight, int(first / 4u + 1u));
    normed[at] = glo.x; normed[at + 1u] = glo.y; normed[at + 2u] = glo.z; normed[at + 3u] = glo.w;
    normed[at + 4u] = ghi.x; normed[at + 5u] = ghi.y; normed[at + 6u] = ghi.z; normed[at + 7u] = ghi.w;
    precise vec4 squares = lo * lo, squaresHi = hi * hi;
    precise float sum = ((squares.x + squares.y) + (squares.z + squares.w)) + ((squaresHi.x + squaresHi.y) + (squaresHi.z + squaresHi.w));
    sumSquaresOut[column * (p.yStride / 8u) + first / 8u] = sum;
}

#if defined(SWIGLU_EPILOGUE)
// The gate|up matrix with its rows interleaved by DeviceMatrix (stored rows 8j..8j+3: gate rows 4j..4j+3,
// 8j+4..8j+7: up rows 4j..4j+3), so an invocation's 8 rows are 4 (gate, up) pairs: it writes
// silu(gate) * up for elements row0/2 .. row0/2 + 3 (y is the feed-forward activation, yStride its width),
// with swiglu.comp's expression, instead of 8 outputs that a separate SwiGLU dispatch would combine.
float swiglu(float g, float u) { return g / (1.0 + exp(-g)) * u; }
void epilogue8(vec4 lo, vec4 hi, uint row, uint column) {
    if (column >= p.B) return;
    uint at = column * p.yStride + (p.rowOffset + row) / 2u;
    y[at] = swiglu(lo.x, hi.x); y[at + 1u] = swiglu(lo.y, hi.y); y[at + 2u] = swiglu(lo.z, hi.z); y[at + 3u] = swiglu(lo.w, hi.w);
}
#elif defined(QKV_EPILOGUE)
#include "matmul_qkv_epilogue.glsl"
#else
void epilogue8(vec4 lo, vec4 hi, uint row, uint column) { storeRows8(lo, hi, row, column); }
#endif

#define STORE8(a0, a1, a2, a3, a4, a5, a6, a7, row, column) { \
        vec4 lo_ = vec4(a0, a1, a2, a3), hi_ = vec4(a4, a5, a6, a7); \
        if ((p.flags & NORM_IN) != 0u && (column) < p.B) { float r_ = normScale(column); lo_ *= r_; hi_ *= r_; } \
        epilogue8(lo_, hi_, row, column); }
