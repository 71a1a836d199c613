#version 450
#extension GL_EXT_control_flow_attributes : require
#extension GL_GOOGLE_include_directive : require
// Gathers embedding rows for a batch of tokens into x (float32), from a table in any of DeviceMatrix's layouts:
// one invocation per (token, block of 32). A table split into row slices is gathered one slice per dispatch:
// each writes the tokens whose rows fall in rowStart ..< rowStart + rowCount.
// With flags & 1 it also writes what the first layer's QKV kernel reads when the RMSNorm is folded into the
// matrix kernels (NORM_OUT in matmul_args.glsl): x ∘ g and the sums of squares of each 8 elements.

layout(local_size_x_id = 15, local_size_x = 8) in;  // 15: the lane width (ComputeKernel)
#include "weight_layout.glsl"
layout(push_constant) uniform Parameters { uint K; uint B; uint format; uint rowStart; uint rowCount; uint flags; } p;  // format 0: f32, 1: q8_0, 2: q4_1, 3: q8_sub16, 4: f16, 5: bf16

layout(std430, binding = 0) readonly buffer Quants { uvec4 quants[]; };
layout(std430, binding = 1) readonly buffer Scales { float scales[]; };
layout(std430, binding = 2) readonly buffer Tokens { uint tokens[]; };
layout(std430, binding = 3) writeonly buffer Output { vec4 x[]; };
layout(std430, binding = 4) readonly buffer NormWeight { vec4 normWeight[]; };
layout(std430, binding = 5) writeonly buffer Normed { vec4 normed[]; };
layout(std430, binding = 6) writeonly buffer SumSquares { float sumSquares[]; };

void main() {
    uint blocks = p.K / 32;
    uint id = (gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * gl_WorkGroupSize.x);
    if (id >= p.B * blocks) return;
    uint t = id / blocks, b = id % blocks;
    uint row = tokens[t];
    if (row < p.rowStart || row - p.rowStart >= p.rowCount) return;
    row -= p.rowStart;
    uint i = weightBlockIndex(row, b, blocks);
    uint out0 = t * (p.K / 4) + b * 8;
    vec4 v[8];
    if (p.format == 0u) {
        [[unroll]] for (uint k = 0; k < 8; ++k) v[k] = uintBitsToFloat(quants[i * 8 + k]);
    } else if (p.format == 1u) {
        float d = scales[i];
        [[unroll]] for (uint k = 0; k < 4; ++k) {
            v[k] = d * vec4(ivec4(uvec4(quants[2 * i][k])) << ivec4(24, 16, 8, 0) >> 24);
            v[4 + k] = d * vec4(ivec4(uvec4(quants[2 * i + 1][k])) << ivec4(24, 16, 8, 0) >> 24);
        }
    } else if (p.format == 4u || p.format == 5u) {
        [[unroll]] for (uint k = 0; k < 4; ++k) {
            uvec4 w = quants[i * 4 + k];
            if (p.format == 4u) {
                v[2 * k] = vec4(unpackHalf2x16(w.x), unpackHalf2x16(w.y));
                v[2 * k + 1] = vec4(unpackHalf2x16(w.z), unpackHalf2x16(w.w));
            } else {
                v[2 * k] = uintBitsToFloat(uvec4(w.x << 16, w.x & 0xFFFF0000u, w.y << 16, w.y & 0xFFFF0000u));
                v[2 * k + 1] = uintBitsToFloat(uvec4(w.z << 16, w.z & 0xFFFF0000u, w.w << 16, w.w & 0xFFFF0000u));
            }
        }
    } else if (p.format == 3u) {
        vec4 s = vec4(scales[4 * i], scales[4 * i + 1], scales[4 * i + 2], scales[4 * i + 3]);
        [[unroll]] for (uint k = 0; k < 4; ++k) {
            v[k] = vec4(ivec4(uvec4(quants[2 * i][k])) << ivec4(24, 16, 8, 0) >> 24) * s.x + s.y;
            v[4 + k] = vec4(ivec4(uvec4(quants[2 * i + 1][k])) << ivec4(24, 16, 8, 0) >> 24) * s.z + s.w;
        }
    } else {
        vec2 s = vec2(scales[2 * i], scales[2 * i + 1]);
        [[unroll]] for (uint k = 0; k < 4; ++k) {
            ivec4 word = ivec4(uvec4(quants[i][k]));
            v[k] = s.x * vec4((word >> ivec4(0, 8, 16, 24)) & 0xF) + s.y;
            v[4 + k] = s.x * vec4((word >> ivec4(4, 12, 20, 28)) & 0xF) + s.y;
        }
    }
    [[unroll]] for (uint k = 0; k < 8; ++k) x[out0 + k] = v[k];
    if ((p.flags & 1u) == 0u) return;
    [[unroll]] for (uint k = 0; k < 8; ++k) normed[out0 + k] = v[k] * normWeight[b * 8 + k];
    // matmul_args.glsl's storeRows8 expression, per 8 elements.
    [[unroll]] for (uint k = 0; k < 4; ++k) {
        precise vec4 lo = v[2 * k] * v[2 * k], hi = v[2 * k + 1] * v[2 * k + 1];
        precise float sum = ((lo.x + lo.y) + (lo.z + lo.w)) + ((hi.x + hi.y) + (hi.z + hi.w));
        sumSquares[t * (p.K / 8) + b * 4 + k] = sum;
    }
}
