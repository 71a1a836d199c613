#version 450
#extension GL_GOOGLE_include_directive : require
// For the tests only: half_rounding.glsl's halfBits over an array, so KernelTests can hold the float16 KV pool's
// rounding against Swift's Float16 on ties, subnormals, overflow, infinities and NaN.
layout(local_size_x_id = 15, local_size_x = 8) in;  // 15: the lane width (ComputeKernel)
layout(push_constant) uniform Parameters { uint count; } p;
layout(std430, binding = 0) readonly buffer Input { float x[]; };
layout(std430, binding = 1) writeonly buffer Output { uint bits[]; };
#include "half_rounding.glsl"

void main() {
    uint i = gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    if (i < p.count) bits[i] = halfBits(x[i]);
}
