// Shared by the matrix kernels: push constants, the activation and output bindings, and a block of 32
// activations as eight vec4s plus their sum, passed without arrays (see matmul_main.glsl).

layout(push_constant) uniform Parameters {
    uint K;        // input width (a multiple of 32)
    uint N;        // output rows
    uint B;        // batch columns
    uint xStride;  // floats between columns of x
    uint yStride;  // floats between columns of y
    uint flags;    // 1: y += W·x (the residual)
} p;

layout(binding = 2) uniform samplerBuffer x;

// Where block `block` of weight row `row` is stored, in blocks: rows come in groups of 64 (a workgroup's
// 8 lanes x 8 rows) with block b of all 64 side by side, so a workgroup streams one contiguous run per step
// (DeviceMatrix.blockIndex writes the same layout).
uint blockIndex(uint row, uint block) { return ((row >> 6) * (p.K / 32) + block) * 64u + (row & 63u); }
layout(std430, binding = 3) buffer OutputY { float y[]; };

#define X_ARGS(s) vec4 s##0, vec4 s##1, vec4 s##2, vec4 s##3, vec4 s##4, vec4 s##5, vec4 s##6, vec4 s##7, float s##Sum


#define LOAD_X(s, column) \
    vec4 s##0 = vec4(0), s##1 = vec4(0), s##2 = vec4(0), s##3 = vec4(0), s##4 = vec4(0), s##5 = vec4(0), s##6 = vec4(0), s##7 = vec4(0); \
    float s##Sum = 0.0; \
    if ((column) < p.B) { \
        uint xb = ((column) * p.xStride) / 4 + b * 8; \
        s##0 = texelFetch(x, int(xb)); s##1 = texelFetch(x, int(xb + 1)); s##2 = texelFetch(x, int(xb + 2)); s##3 = texelFetch(x, int(xb + 3)); \
        s##4 = texelFetch(x, int(xb + 4)); s##5 = texelFetch(x, int(xb + 5)); s##6 = texelFetch(x, int(xb + 6)); s##7 = texelFetch(x, int(xb + 7)); \
        vec4 s4 = ((s##0 + s##1) + (s##2 + s##3)) + ((s##4 + s##5) + (s##6 + s##7)); \
        s##Sum = (s4.x + s4.y) + (s4.z + s4.w); \
    }
#define PASS(s) s##0, s##1, s##2, s##3, s##4, s##5, s##6, s##7, s##Sum

#define STORE(acc, row, column) \
    if ((row) < p.N && (column) < p.B) { \
        uint at = (column) * p.yStride + (row); \
        y[at] = (p.flags & 1u) != 0u ? y[at] + acc : acc; \
    }

