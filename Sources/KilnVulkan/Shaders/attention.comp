#version 450
#extension GL_EXT_control_flow_attributes : require
// Causal attention over the paged KV cache, for prefill and decode alike: one invocation per (token, head)
// walks that token's keys 0...position in order through its sequence's block table, with an online
// softmax. Prefill, chunked prefill and decode reduce in the same order, so a token's output does not
// depend on how its sequence was scheduled.

layout(local_size_x = 8) in;
layout(constant_id = 0) const uint HEAD_DIM = 64;
layout(push_constant) uniform Parameters {
    uint B; uint heads; uint kvHeads; uint blockSize; uint maxBlocks; uint qkvWidth; float scale;
} p;

layout(std430, binding = 0) readonly buffer QKV { float qkv[]; };
layout(std430, binding = 1) readonly buffer Positions { uint positions[]; };
layout(std430, binding = 2) readonly buffer Sequences { uint sequences[]; };
layout(std430, binding = 3) readonly buffer BlockTables { uint blockTables[]; };
// The KV pool is read through texel views: a texel fetch is a gather on lavapipe, an SSBO load a loop.
layout(binding = 4) uniform samplerBuffer keys;
layout(binding = 5) uniform samplerBuffer values;
layout(std430, binding = 6) writeonly buffer Output { vec4 outputs[]; };

const uint V = HEAD_DIM / 4;

void main() {
    uint id = (gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * gl_WorkGroupSize.x);
    if (id >= p.B * p.heads) return;
    uint t = id / p.heads, head = id % p.heads;
    uint kvHead = head / (p.heads / p.kvHeads);
    uint kvWidth4 = p.kvHeads * V;
    vec4 q[V];
    uint qBase = t * p.qkvWidth + head * HEAD_DIM;
    [[unroll]] for (uint i = 0; i < V; ++i) {
        q[i] = vec4(qkv[qBase + 4 * i], qkv[qBase + 4 * i + 1], qkv[qBase + 4 * i + 2], qkv[qBase + 4 * i + 3]) * p.scale;
    }
    vec4 acc[V];
    [[unroll]] for (uint i = 0; i < V; ++i) acc[i] = vec4(0.0);
    float maximum = -1.0 / 0.0, total = 0.0;
    uint last = positions[t];
    uint table = sequences[t] * p.maxBlocks;
    for (uint j = 0; j <= last; ++j) {
        uint block = blockTables[table + j / p.blockSize];
        uint slot = (block * p.blockSize + j % p.blockSize) * kvWidth4 + kvHead * V;
        float s = 0.0;
        [[unroll]] for (uint i = 0; i < V; ++i) s += dot(q[i], texelFetch(keys, int(slot + i)));
        float newMaximum = max(maximum, s);
        float correction = exp(maximum - newMaximum);
        float w = exp(s - newMaximum);
        total = total * correction + w;
        [[unroll]] for (uint i = 0; i < V; ++i) acc[i] = acc[i] * correction + w * texelFetch(values, int(slot + i));
        maximum = newMaximum;
    }
    uint outBase = (t * p.heads + head) * V;
    [[unroll]] for (uint i = 0; i < V; ++i) outputs[outBase + i] = acc[i] / total;
}
