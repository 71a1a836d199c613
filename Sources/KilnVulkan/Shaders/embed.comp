#version 450
#extension GL_EXT_control_flow_attributes : require
#extension GL_GOOGLE_include_directive : require
// Gathers embedding rows for a batch of tokens into x (float32), from a table in any of DeviceMatrix's layouts:
// one invocation per (token, block of 32). A table split into row slices is gathered one slice per dispatch:
// each writes the tokens whose rows fall in rowStart ..< rowStart + rowCount.

layout(local_size_x = 8) in;
#include "weight_layout.glsl"
layout(push_constant) uniform Parameters { uint K; uint B; uint format; uint rowStart; uint rowCount; } p;  // format 0: f32, 1: q8_0, 2: q4_1, 3: q8_sub16, 4: f16, 5: bf16

layout(std430, binding = 0) readonly buffer Quants { uvec4 quants[]; };
layout(std430, binding = 1) readonly buffer Scales { float scales[]; };
layout(std430, binding = 2) readonly buffer Tokens { uint tokens[]; };
layout(std430, binding = 3) writeonly buffer Output { vec4 x[]; };

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
    if (p.format == 0u) {
        [[unroll]] for (uint k = 0; k < 8; ++k) x[out0 + k] = uintBitsToFloat(quants[i * 8 + k]);
    } else if (p.format == 1u) {
        float d = scales[i];
        [[unroll]] for (uint k = 0; k < 4; ++k) {
            x[out0 + k] = d * vec4(ivec4(uvec4(quants[2 * i][k])) << ivec4(24, 16, 8, 0) >> 24);
            x[out0 + 4 + k] = d * vec4(ivec4(uvec4(quants[2 * i + 1][k])) << ivec4(24, 16, 8, 0) >> 24);
        }
    } else if (p.format == 4u || p.format == 5u) {
        [[unroll]] for (uint k = 0; k < 4; ++k) {
            uvec4 v = quants[i * 4 + k];
            if (p.format == 4u) {
                x[out0 + 2 * k] = vec4(unpackHalf2x16(v.x), unpackHalf2x16(v.y));
                x[out0 + 2 * k + 1] = vec4(unpackHalf2x16(v.z), unpackHalf2x16(v.w));
            } else {
                x[out0 + 2 * k] = uintBitsToFloat(uvec4(v.x << 16, v.x & 0xFFFF0000u, v.y << 16, v.y & 0xFFFF0000u));
                x[out0 + 2 * k + 1] = uintBitsToFloat(uvec4(v.z << 16, v.z & 0xFFFF0000u, v.w << 16, v.w & 0xFFFF0000u));
            }
        }
    } else if (p.format == 3u) {
        vec4 s = vec4(scales[4 * i], scales[4 * i + 1], scales[4 * i + 2], scales[4 * i + 3]);
        [[unroll]] for (uint k = 0; k < 4; ++k) {
            x[out0 + k] = vec4(ivec4(uvec4(quants[2 * i][k])) << ivec4(24, 16, 8, 0) >> 24) * s.x + s.y;
            x[out0 + 4 + k] = vec4(ivec4(uvec4(quants[2 * i + 1][k])) << ivec4(24, 16, 8, 0) >> 24) * s.z + s.w;
        }
    } else {
        vec2 s = vec2(scales[2 * i], scales[2 * i + 1]);
        [[unroll]] for (uint k = 0; k < 4; ++k) {
            ivec4 word = ivec4(uvec4(quants[i][k]));
            x[out0 + k] = s.x * vec4((word >> ivec4(0, 8, 16, 24)) & 0xF) + s.y;
            x[out0 + 4 + k] = s.x * vec4((word >> ivec4(4, 12, 20, 28)) & 0xF) + s.y;
        }
    }
}
