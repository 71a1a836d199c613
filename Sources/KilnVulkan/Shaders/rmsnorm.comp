#version 450
// RMSNorm of each token's row times the learned weight: one invocation per row, summing in order (the
// CPU reference's order), so the kernels after it read a plain activation. Input and weight are read through
// texel views (16-byte gathers; SSBO loads at lane-varying addresses are per-lane loops on lavapipe).

layout(local_size_x_id = 15, local_size_x = 8) in;  // 15: the lane width (ComputeKernel)
layout(push_constant) uniform Parameters { uint B; uint width4; float epsilon; } p;

layout(binding = 0) uniform samplerBuffer x;
layout(binding = 1) uniform samplerBuffer weight;
layout(std430, binding = 2) writeonly buffer Output { vec4 y[]; };

void main() {
    uint t = (gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * gl_WorkGroupSize.x);
    if (t >= p.B) return;
    float sum = 0.0;
    for (uint i = 0; i < p.width4; ++i) {
        vec4 v = texelFetch(x, int(t * p.width4 + i));
        sum += v.x * v.x; sum += v.y * v.y; sum += v.z * v.z; sum += v.w * v.w;
    }
    float scale = 1.0 / sqrt(sum / float(p.width4 * 4) + p.epsilon);
    for (uint i = 0; i < p.width4; ++i) y[t * p.width4 + i] = texelFetch(x, int(t * p.width4 + i)) * scale * texelFetch(weight, int(i));
}
