// Included by attention.glsl and attention_gpu.glsl (one per kernel family): what both attention kernels read
// (push constants, the step's tables, the KV pool and how a pair of its vec4 slots is fetched) and how both
// merge one key chunk's softmax into the running one.
layout(constant_id = 0) const uint HEAD_DIM = 64;
layout(constant_id = 1) const uint GROUP = 1;  // query heads per KV head
// A pool too large for one buffer is split by KV heads into shards (see VulkanDecoder): a dispatch covers
// the KV heads headStart ..< headStart + shardHeads, whose keys and values its bindings hold, laid out like
// an unsplit pool of shardHeads heads. Unsplit: headStart 0, shardHeads = kvHeads.
layout(push_constant) uniform Parameters {
    uint B; uint heads; uint kvHeads; uint blockSize; uint maxBlocks; uint qkvWidth; float scale; uint headStart; uint shardHeads;
    uint chunkKeys;   // keys per chunk (a multiple of blockSize)
    uint maxChunks;   // chunks of the step's longest token: records per (token, query head) in `partials`
    uint mode;
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

const uint V = HEAD_DIM / 4;

// Merges a chunk's (maximum m, total l, sum acc) into the running (M, L, ACC): the weights of both
// sides, then L = L·a + l·b and ACC = ACC·a + acc·b. Modes 0 and 2 merge with this same code; `precise`
// keeps any compiler from contracting it differently in the two places.
#define MERGE_WEIGHTS(M, m, a, b) { precise float merged_ = max(M, m); a = exp(M - merged_); b = exp(m - merged_); M = merged_; }
