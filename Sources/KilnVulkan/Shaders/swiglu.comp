#version 450
// SwiGLU on the fused gate|up output: h = silu(gate) * up, per element.

layout(local_size_x = 8) in;
layout(push_constant) uniform Parameters { uint B; uint width; } p;  // width: feed-forward width

layout(std430, binding = 0) readonly buffer GateUp { float gateUp[]; };
layout(std430, binding = 1) writeonly buffer Hidden { float hidden[]; };

void main() {
    uint id = (gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * gl_WorkGroupSize.x);
    if (id >= p.B * p.width) return;
    uint t = id / p.width, i = id % p.width;
    float g = gateUp[t * 2 * p.width + i], u = gateUp[t * 2 * p.width + p.width + i];
    hidden[id] = g / (1.0 + exp(-g)) * u;
}
