#version 450
// Copies the rows whose logits are wanted (e.g. each sequence's last token) into a dense matrix, so the
// vocabulary projection runs only on them.

layout(local_size_x_id = 15, local_size_x = 8) in;  // 15: the lane width (ComputeKernel)
layout(push_constant) uniform Parameters { uint rows; uint width4; } p;  // width in vec4s

layout(std430, binding = 0) readonly buffer Rows { uint rowIndex[]; };
layout(std430, binding = 1) readonly buffer Input { vec4 x[]; };
layout(std430, binding = 2) writeonly buffer Output { vec4 y[]; };

void main() {
    uint id = (gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * gl_WorkGroupSize.x);
    if (id >= p.rows * p.width4) return;
    uint r = id / p.width4, i = id % p.width4;
    y[id] = x[rowIndex[r] * p.width4 + i];
}
