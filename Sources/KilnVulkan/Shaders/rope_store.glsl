// Included by rope_store.comp (KV_F16 0) and rope_store_f16.comp (KV_F16 1).
// Rotary position embedding on the Q and K parts of the fused QKV output (adjacent pairs, GGUF's llama
// layout, or NeoX halves), then K and V written into the paged cache through the block table.
// One invocation per (token, head) (the GPU family: per (token, head, vec4), PER_VEC4) works on whole vec4s:
// the head is read through a texel view of the QKV
// buffer (a 16-byte gather; an SSBO load at a lane-varying address is a per-lane loop on lavapipe) and
// written back in place. cos/sin come from a host table, the same values the CPU reference uses.
// Needs headDim % 4 == 0 and ropeDim % 8 == 0 (checked by the decoder).

layout(local_size_x_id = 15, local_size_x = 8) in;  // 15: the lane width (ComputeKernel)
// A pool split by KV heads into shards (see attention.glsl) takes one dispatch per shard: each stores the KV
// heads headStart ..< headStart + shardHeads into its shard's buffers, and only the first (ropeQueries 1)
// also rotates the query heads. Unsplit: one dispatch, headStart 0, shardHeads = kvHeads, ropeQueries 1.
layout(push_constant) uniform Parameters {
    uint B; uint headDim; uint heads; uint kvHeads; uint ropeDim; uint neox; uint blockSize; uint maxBlocks;
    uint headStart; uint shardHeads; uint ropeQueries;
} p;

layout(binding = 0) uniform samplerBuffer qkvIn;                              // texel view of binding 7
layout(std430, binding = 1) readonly buffer Positions { uint positions[]; };   // per token
layout(std430, binding = 2) readonly buffer Sequences { uint sequences[]; };   // per token: its row in blockTables
layout(std430, binding = 3) readonly buffer BlockTables { uint blockTables[]; };
layout(binding = 4) uniform samplerBuffer rotation;                            // [position][ropeDim / 2]: (cos, sin), two pairs per texel
#if KV_F16
// The KV pool in float16: four halves (two uints) per vec4 slot.
layout(std430, binding = 5) writeonly buffer KeyCache { uvec2 keys[]; };
layout(std430, binding = 6) writeonly buffer ValueCache { uvec2 values[]; };
#include "half_rounding.glsl"
uvec2 stored(vec4 v) { return uvec2(packHalves(v.xy), packHalves(v.zw)); }
#else
layout(std430, binding = 5) writeonly buffer KeyCache { vec4 keys[]; };
layout(std430, binding = 6) writeonly buffer ValueCache { vec4 values[]; };
vec4 stored(vec4 v) { return v; }
#endif
layout(std430, binding = 7) writeonly buffer QKV { vec4 qkv[]; };

// Pairs (a.x, a.y) and (a.z, a.w) rotated by the two (cos, sin) pairs in cs.
// `precise`: no compiler may contract it into fused multiply-adds in one kernel and not in the other.
vec4 rotateAdjacent(vec4 a, vec4 cs) {
    precise vec4 r = vec4(a.x * cs.x - a.y * cs.y, a.x * cs.y + a.y * cs.x, a.z * cs.z - a.w * cs.w, a.z * cs.w + a.w * cs.z);
    return r;
}

void main() {
    uint id = (gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * gl_WorkGroupSize.x);
    uint queries = p.ropeQueries != 0u ? p.heads : 0u;
    uint perToken = queries + p.shardHeads;
#if PER_VEC4
    // The vec4s [mBegin, mEnd) of the head: one here, the whole head in the CPU family. Same arithmetic.
    uint mBegin = id % (p.headDim / 4), mEnd = mBegin + 1;
    id /= p.headDim / 4;
#else
    uint mBegin = 0, mEnd = p.headDim / 4;
#endif
    if (id >= p.B * perToken) return;
    uint t = id / perToken, local = id % perToken;
    // Which head of the token's QKV row: a query head, or KV head headStart + (local - queries).
    uint head = local < queries ? local : p.heads + p.headStart + (local - queries);
    uint head4 = p.headDim / 4, rope4 = p.ropeDim / 4;
    uint qWidth4 = p.heads * head4, kvWidth4 = p.kvHeads * head4;
    uint row4 = t * (qWidth4 + 2 * kvWidth4);
    uint base = head < p.heads ? row4 + head * head4 : row4 + qWidth4 + (head - p.heads) * head4;
    uint pos = positions[t];
    uint rot = pos * rope4;  // texel of pairs 0 and 1 at this position
    bool isKey = head >= p.heads;
    uint shardHead = head - p.heads - p.headStart;
    uint slot = 0;
    if (isKey) {
        uint block = blockTables[sequences[t] * p.maxBlocks + pos / p.blockSize];
        slot = ((block * p.blockSize + pos % p.blockSize) * p.shardHeads + shardHead) * head4;
    }
    if (p.neox == 0u) {
        for (uint m = mBegin; m < min(mEnd, rope4); ++m) {
            vec4 r = rotateAdjacent(texelFetch(qkvIn, int(base + m)), texelFetch(rotation, int(rot + m)));
            qkv[base + m] = r;
            if (isKey) keys[slot + m] = stored(r);
        }
    } else {
        uint half4 = rope4 / 2;
        for (uint m = mBegin; m < min(mEnd, half4); ++m) {
            // Elements i = 4m..4m+3 pair with i + ropeDim / 2; their (cos, sin) are pairs 4m..4m+3: two texels.
            vec4 a = texelFetch(qkvIn, int(base + m)), b = texelFetch(qkvIn, int(base + m + half4));
            vec4 c0 = texelFetch(rotation, int(rot + 2 * m)), c1 = texelFetch(rotation, int(rot + 2 * m + 1));
            vec4 cs = vec4(c0.x, c0.z, c1.x, c1.z), sn = vec4(c0.y, c0.w, c1.y, c1.w);
            vec4 ra = vec4(a.x * cs.x - b.x * sn.x, a.y * cs.y - b.y * sn.y, a.z * cs.z - b.z * sn.z, a.w * cs.w - b.w * sn.w);
            vec4 rb = vec4(a.x * sn.x + b.x * cs.x, a.y * sn.y + b.y * cs.y, a.z * sn.z + b.z * cs.z, a.w * sn.w + b.w * cs.w);
            qkv[base + m] = ra;
            qkv[base + m + half4] = rb;
            if (isKey) { keys[slot + m] = stored(ra); keys[slot + m + half4] = stored(rb); }
        }
    }
    if (isKey) {
        // The unrotated tail of K (heads wider than the rotated part), and all of V.
        for (uint m = max(mBegin, rope4); m < mEnd; ++m) keys[slot + m] = stored(texelFetch(qkvIn, int(base + m)));
        uint vBase = base + kvWidth4;
        for (uint m = mBegin; m < mEnd; ++m) values[slot + m] = stored(texelFetch(qkvIn, int(vBase + m)));
    }
}
