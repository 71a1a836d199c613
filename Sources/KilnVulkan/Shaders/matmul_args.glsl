// Shared by the matrix kernels: push constants, the activation and output bindings, the weight layout, and
// the loading of a block of 32 activations as eight vec4s plus their sum (no arrays: see Tools/matmul_frames.py).

layout(push_constant) uniform Parameters {
    uint K;        // input width (a multiple of 32)
    uint N;        // output rows
    uint B;        // batch columns
    uint xStride;  // floats between columns of x
    uint yStride;  // floats between columns of y
    uint flags;    // 1: y += W·x (the residual)
    uint rowOffset; // where row 0 of this (slice of the) matrix lands in y
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

#ifdef SWIGLU_EPILOGUE
// The gate|up matrix with its rows interleaved by DeviceMatrix (stored rows 8j..8j+3: gate rows 4j..4j+3,
// 8j+4..8j+7: up rows 4j..4j+3), so an invocation's 8 rows are 4 (gate, up) pairs: it writes
// silu(gate) * up for elements row0/2 .. row0/2 + 3 (y is the feed-forward activation, yStride its width),
// with swiglu.comp's expression, instead of 8 outputs that a separate SwiGLU dispatch would combine.
float swiglu(float g, float u) { return g / (1.0 + exp(-g)) * u; }
#define STORE8(a0, a1, a2, a3, a4, a5, a6, a7, row, column) \
    if ((column) < p.B) { \
        uint at = (column) * p.yStride + (p.rowOffset + (row)) / 2u; \
        y[at] = swiglu(a0, a4); y[at + 1u] = swiglu(a1, a5); y[at + 2u] = swiglu(a2, a6); y[at + 3u] = swiglu(a3, a7); \
    }
#else
#define STORE8(a0, a1, a2, a3, a4, a5, a6, a7, row, column) \
    STORE(a0, (row) + 0u, column) STORE(a1, (row) + 1u, column) STORE(a2, (row) + 2u, column) STORE(a3, (row) + 3u, column) \
    STORE(a4, (row) + 4u, column) STORE(a5, (row) + 5u, column) STORE(a6, (row) + 6u, column) STORE(a7, (row) + 7u, column)
#endif

