#version 450
// The GPU family's RMSNorm: one 64-lane workgroup per token. Lane l adds the squares of elements 4l..4l+3,
// 4(l + 64).., ... in turn; the 64 sums meet in a fixed pairwise tree through shared memory, so a token's
// scale never depends on the other tokens of its step. (rmsnorm.comp walks a whole row in one lane: fine on
// a CPU, one busy lane of thousands on a GPU.)

layout(local_size_x = 64) in;
layout(push_constant) uniform Parameters { uint B; uint width4; float epsilon; } p;

layout(binding = 0) uniform samplerBuffer x;
layout(binding = 1) uniform samplerBuffer weight;
layout(std430, binding = 2) writeonly buffer Output { vec4 y[]; };

shared float sums[64];

void main() {
    uint lane = gl_LocalInvocationID.x;
    uint t = gl_WorkGroupID.x + gl_WorkGroupID.y * gl_NumWorkGroups.x;
    if (t >= p.B) return;   // the whole workgroup
    precise float sum = 0.0;
    for (uint i = lane; i < p.width4; i += 64) {
        vec4 v = texelFetch(x, int(t * p.width4 + i));
        sum += (v.x * v.x + v.y * v.y) + (v.z * v.z + v.w * v.w);
    }
    sums[lane] = sum;
    barrier();
    for (uint w = 32; w > 0; w /= 2) {
        if (lane < w) sums[lane] = sums[lane] + sums[lane + w];
        barrier();
    }
    float scale = 1.0 / sqrt(sums[0] / float(p.width4 * 4) + p.epsilon);
    for (uint i = lane; i < p.width4; i += 64) y[t * p.width4 + i] = texelFetch(x, int(t * p.width4 + i)) * scale * texelFetch(weight, int(i));
}
