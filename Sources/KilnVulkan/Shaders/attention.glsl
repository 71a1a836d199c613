// Included by attention.comp (KV_F16 0) and attention_f16.comp (KV_F16 1).
// Causal attention over the paged KV cache, for prefill and decode alike: one invocation per (token, KV
// head) walks that token's keys 0...position in order through its sequence's block table, with an online
// softmax for each of the GROUP query heads that share the KV head. Each K/V texel fetch (a gather on
// lavapipe, the cost that dominates here) thus serves the whole group. Prefill, chunked prefill and decode
// reduce in the same order, so a token's output does not depend on how its sequence was scheduled.

layout(local_size_x = 8) in;
layout(constant_id = 0) const uint HEAD_DIM = 64;
layout(constant_id = 1) const uint GROUP = 1;  // query heads per KV head
// A pool too large for one buffer is split by KV heads into shards (see VulkanDecoder): a dispatch covers
// the KV heads headStart ..< headStart + shardHeads, whose keys and values its bindings hold, laid out like
// an unsplit pool of shardHeads heads. Unsplit: headStart 0, shardHeads = kvHeads.
layout(push_constant) uniform Parameters {
    uint B; uint heads; uint kvHeads; uint blockSize; uint maxBlocks; uint qkvWidth; float scale; uint headStart; uint shardHeads;
} p;

layout(binding = 0) uniform samplerBuffer qkv;
layout(std430, binding = 1) readonly buffer Positions { uint positions[]; };
layout(std430, binding = 2) readonly buffer Sequences { uint sequences[]; };
layout(std430, binding = 3) readonly buffer BlockTables { uint blockTables[]; };
// The KV pool is read through texel views: a texel fetch is a gather on lavapipe, an SSBO load a loop.
// HEAD_DIM is a multiple of 8 (two vec4 slots per pair of fetches).
#if KV_F16
// Float16 pool: one texel holds two vec4 slots (8 halves), so a head takes half the fetches.
layout(binding = 4) uniform usamplerBuffer keys;
layout(binding = 5) uniform usamplerBuffer values;
void fetchPair(usamplerBuffer pool, uint slot, uint i2, out vec4 a, out vec4 b) {
    uvec4 t = texelFetch(pool, int(slot / 2 + i2));
    a = vec4(unpackHalf2x16(t.x), unpackHalf2x16(t.y));
    b = vec4(unpackHalf2x16(t.z), unpackHalf2x16(t.w));
}
#else
layout(binding = 4) uniform samplerBuffer keys;
layout(binding = 5) uniform samplerBuffer values;
void fetchPair(samplerBuffer pool, uint slot, uint i2, out vec4 a, out vec4 b) {
    a = texelFetch(pool, int(slot + 2 * i2));
    b = texelFetch(pool, int(slot + 2 * i2 + 1));
}
#endif
layout(std430, binding = 6) writeonly buffer Output { vec4 outputs[]; };

const uint V = HEAD_DIM / 4;

void main() {
    uint id = (gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * gl_WorkGroupSize.x);
    if (id >= p.B * p.shardHeads) return;
    uint t = id / p.shardHeads, shardHead = id % p.shardHeads, kvHead = p.headStart + shardHead;
    uint kvWidth4 = p.shardHeads * V;
    vec4 q[GROUP * V];
    uint qBase = (t * p.qkvWidth + kvHead * GROUP * HEAD_DIM) / 4;
    [[unroll]] for (uint i = 0; i < GROUP * V; ++i) q[i] = texelFetch(qkv, int(qBase + i)) * p.scale;
    vec4 acc[GROUP * V];
    [[unroll]] for (uint i = 0; i < GROUP * V; ++i) acc[i] = vec4(0.0);
    float maximum[GROUP], total[GROUP];
    [[unroll]] for (uint g = 0; g < GROUP; ++g) { maximum[g] = -1.0 / 0.0; total[g] = 0.0; }
    uint last = positions[t];
    uint table = sequences[t] * p.maxBlocks;
    // Keys in order, a block at a time: the block-table entry (an SSBO load, a per-lane loop) once per block.
    for (uint j0 = 0; j0 <= last; j0 += p.blockSize) {
      uint block = blockTables[table + j0 / p.blockSize];
      uint end = min(last, j0 + p.blockSize - 1);
      for (uint j = j0; j <= end; ++j) {
        uint slot = (block * p.blockSize + (j - j0)) * kvWidth4 + shardHead * V;
        float s[GROUP];
        [[unroll]] for (uint g = 0; g < GROUP; ++g) s[g] = 0.0;
        [[unroll]] for (uint i2 = 0; i2 < V / 2; ++i2) {
            vec4 k0, k1;
            fetchPair(keys, slot, i2, k0, k1);
            [[unroll]] for (uint g = 0; g < GROUP; ++g) { s[g] += dot(q[g * V + 2 * i2], k0); s[g] += dot(q[g * V + 2 * i2 + 1], k1); }
        }
        float correction[GROUP], w[GROUP];
        [[unroll]] for (uint g = 0; g < GROUP; ++g) {
            float newMaximum = max(maximum[g], s[g]);
            correction[g] = exp(maximum[g] - newMaximum);
            w[g] = exp(s[g] - newMaximum);
            total[g] = total[g] * correction[g] + w[g];
            maximum[g] = newMaximum;
        }
        [[unroll]] for (uint i2 = 0; i2 < V / 2; ++i2) {
            vec4 v0, v1;
            fetchPair(values, slot, i2, v0, v1);
            [[unroll]] for (uint g = 0; g < GROUP; ++g) {
                acc[g * V + 2 * i2] = acc[g * V + 2 * i2] * correction[g] + w[g] * v0;
                acc[g * V + 2 * i2 + 1] = acc[g * V + 2 * i2 + 1] * correction[g] + w[g] * v1;
            }
        }
      }
    }
    [[unroll]] for (uint g = 0; g < GROUP; ++g) {
        uint outBase = (t * p.heads + kvHead * GROUP + g) * V;
        [[unroll]] for (uint i = 0; i < V; ++i) outputs[outBase + i] = acc[g * V + i] / total[g];
    }
}
