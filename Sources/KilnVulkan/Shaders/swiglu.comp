#version 450
// SwiGLU on the stacked gate|up output: h = silu(gate) * up, four elements per invocation (the GPU family, and
// the CPU family with KILN_VULKAN_FUSE_SWIGLU=0; otherwise the gate|up kernel does this itself, SWIGLU_EPILOGUE
// in matmul_args.glsl, with the same expression). The input is read
// through a texel view: a 16-byte gather, where an SSBO load at a lane-varying address is a per-lane loop on
// lavapipe (one element per lane with SSBO loads took 9.6 ms per layer on a 512-token step; this, 2.1 ms).

layout(local_size_x_id = 15, local_size_x = 8) in;  // 15: the lane width (ComputeKernel)
layout(push_constant) uniform Parameters { uint B; uint width; } p;  // width: feed-forward width (a multiple of 4)

layout(binding = 0) uniform samplerBuffer gateUp;
layout(std430, binding = 1) writeonly buffer Hidden { vec4 hidden[]; };

void main() {
    uint id = (gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * gl_WorkGroupSize.x);
    uint width4 = p.width / 4;
    if (id >= p.B * width4) return;
    uint t = id / width4, i = id % width4;
    vec4 g = texelFetch(gateUp, int(t * 2 * width4 + i)), u = texelFetch(gateUp, int(t * 2 * width4 + width4 + i));
    hidden[id] = g / (1.0 + exp(-g)) * u;
}
