// Included by attention_gpu.comp (KV_F16 0) and attention_gpu_f16.comp (KV_F16 1): the GPU family's causal
// attention over the paged KV cache. The same three modes as attention.glsl, for prefill and decode alike:
//   0  one workgroup per (token, KV head) computes and merges its key chunks in turn;
//   1  one workgroup per (chunk, token, KV head) writes its chunk's softmax to `partials` (a token with a
//      single chunk writes its output right away, exactly as mode 0 would);
//   2  a workgroup per (token, query head), a lane per element, merges mode 1's chunks in order, as mode 0 does.
// Within a chunk the 64 lanes cooperate: lane j scores keys j, j + 64, ... for the GROUP query heads that share
// the KV head; the chunk's maximum (exact in any order) and then each key's weight follow, their total in a
// pairwise tree through shared memory; the weighted sum of values splits the keys into interleaved subsets (a
// lane per subset and 8 elements), whose sums are added in order. Every reduction has one order, fixed by the
// chunk's key count alone, so a token's output does not depend on how its sequence was scheduled.
layout(local_size_x = 64) in;
const uint LANES = 64;
#include "attention_inputs.glsl"
layout(constant_id = 2) const uint CHUNK_KEYS = 64; // keys per chunk: the decoder's (p.chunkKeys), a multiple of blockSize
layout(std430, binding = 6) writeonly buffer Output { float outputs[]; };
// Mode 1's chunks, attention.glsl's records: per (token, query head, chunk) (maximum, total, 0, 0), then the
// chunk's weighted sum of values (HEAD_DIM floats).
layout(std430, binding = 7) buffer Partials { float partials[]; };

uint recordOf(uint t, uint head, uint chunk) { return ((t * p.heads + head) * p.maxChunks + chunk) * (V + 1) * 4; }

// Keys per chunk rounded up to a power of two (the reduction trees' width; the padding holds -inf, then 0).
layout(constant_id = 3) const uint TREE = 64;
// The values' weighted sum splits a chunk's keys into SUBSETS interleaved subsets, one lane per (subset,
// 8-element texel) (lanes side by side read one value row: coalesced); the subsets' sums are then added in
// order. HEAD_DIM / 8 divides into 64 lanes for heads of up to 512 elements.
const uint TEXELS = HEAD_DIM / 8, SUBSETS = LANES / TEXELS;

shared vec4 query[GROUP * V];
shared float scores[GROUP * TREE];   // each key's score, then its weight exp(score - maximum)
shared float tree[GROUP * TREE];     // the maximum's and the total's reduction trees
shared uint slots[CHUNK_KEYS];
shared float subsetSums[GROUP * SUBSETS * HEAD_DIM];

void main() {
    uint lane = gl_LocalInvocationID.x;
    uint group = gl_WorkGroupID.x + gl_WorkGroupID.y * gl_NumWorkGroups.x;
    if (p.mode == 2u) {
        // Merge: a workgroup per (token, query head of the shard), a lane per element (d = lane, lane + 64, ...).
        uint shardQueryHeads = p.shardHeads * GROUP;
        if (group >= p.B * shardQueryHeads) return;
        uint t = group / shardQueryHeads, head = p.headStart * GROUP + group % shardQueryHeads;
        uint chunks = positions[t] / p.chunkKeys + 1;
        if (chunks == 1u) return;   // mode 1 wrote it
        for (uint d = lane; d < HEAD_DIM; d += LANES) {
            precise float M = -1.0 / 0.0, L = 0.0, ACC = 0.0;
            for (uint c = 0; c < chunks; ++c) {
                uint r = recordOf(t, head, c);
                precise float a, b;
                MERGE_WEIGHTS(M, partials[r], a, b)
                L = L * a + partials[r + 1] * b;
                ACC = ACC * a + partials[r + 4 + d] * b;
            }
            outputs[(t * p.heads + head) * HEAD_DIM + d] = ACC / L;
        }
        return;
    }
    // Modes 0 and 1: the whole workgroup returns together or not at all (it meets barriers below).
    uint t, shardHead, firstChunk, endChunk;
    if (p.mode == 0u) {
        if (group >= p.B * p.shardHeads) return;
        t = group / p.shardHeads; shardHead = group % p.shardHeads;
        firstChunk = 0; endChunk = positions[t] / CHUNK_KEYS + 1;
    } else {
        shardHead = group % p.shardHeads; t = (group / p.shardHeads) % p.B;
        uint chunk = group / (p.shardHeads * p.B);
        if (chunk * CHUNK_KEYS > positions[t]) return;   // past the token's last chunk (or past the dispatch)
        firstChunk = chunk; endChunk = chunk + 1;
    }
    uint kvHead = p.headStart + shardHead;
    uint kvWidth4 = p.shardHeads * V;
    uint qBase = (t * p.qkvWidth + kvHead * GROUP * HEAD_DIM) / 4;
    for (uint i = lane; i < GROUP * V; i += LANES) query[i] = texelFetch(qkv, int(qBase + i)) * p.scale;
    uint last = positions[t];
    bool single = last < CHUNK_KEYS;
    uint table = sequences[t] * p.maxBlocks;
    // This lane's running state: element d = lane + 64k of each group head's output (HEAD_DIM ≤ 256).
    const uint ELEMENTS = (HEAD_DIM + LANES - 1) / LANES;
    precise float M[GROUP], L[GROUP], ACC[GROUP * ELEMENTS];
    for (uint g = 0; g < GROUP; ++g) { M[g] = -1.0 / 0.0; L[g] = 0.0; }
    for (uint i = 0; i < GROUP * ELEMENTS; ++i) ACC[i] = 0.0;
    barrier();
    for (uint chunk = firstChunk; chunk < endChunk; ++chunk) {
        uint start = chunk * CHUNK_KEYS, count = min(last, start + CHUNK_KEYS - 1) - start + 1;
        // Scores: key j by lane j % 64, each q · k in element order (pairs of vec4 dot products). Keys past
        // the chunk's last pad the trees with -inf.
        for (uint j = lane; j < TREE; j += LANES) {
            if (j < count) {
                uint key = start + j;
                uint slot = (blockTables[table + key / p.blockSize] * p.blockSize + key % p.blockSize) * kvWidth4 + shardHead * V;
                slots[j] = slot;
                float s[GROUP];
                for (uint g = 0; g < GROUP; ++g) s[g] = 0.0;
                for (uint i = 0; i < V / 2; ++i) {
                    vec4 k0, k1;
                    fetchPair(keys, slot, i, k0, k1);
                    for (uint g = 0; g < GROUP; ++g) { s[g] += dot(query[g * V + 2 * i], k0); s[g] += dot(query[g * V + 2 * i + 1], k1); }
                }
                for (uint g = 0; g < GROUP; ++g) { scores[g * TREE + j] = s[g]; tree[g * TREE + j] = s[g]; }
            } else {
                for (uint g = 0; g < GROUP; ++g) { scores[g * TREE + j] = -1.0 / 0.0; tree[g * TREE + j] = -1.0 / 0.0; }
            }
        }
        barrier();
        // The chunk's maximum per head (exact whatever the order).
        for (uint w = TREE / 2; w > 0; w /= 2) {
            for (uint i = lane; i < w; i += LANES) {
                for (uint g = 0; g < GROUP; ++g) tree[g * TREE + i] = max(tree[g * TREE + i], tree[g * TREE + i + w]);
            }
            barrier();
        }
        float maximum[GROUP];
        for (uint g = 0; g < GROUP; ++g) maximum[g] = tree[g * TREE];
        barrier();
        // Each key's weight, and their total in a fixed pairwise tree (padding adds zeros).
        for (uint j = lane; j < TREE; j += LANES) {
            for (uint g = 0; g < GROUP; ++g) {
                float w = j < count ? exp(scores[g * TREE + j] - maximum[g]) : 0.0;
                scores[g * TREE + j] = w; tree[g * TREE + j] = w;
            }
        }
        barrier();
        for (uint w = TREE / 2; w > 0; w /= 2) {
            for (uint i = lane; i < w; i += LANES) {
                for (uint g = 0; g < GROUP; ++g) tree[g * TREE + i] = tree[g * TREE + i] + tree[g * TREE + i + w];
            }
            barrier();
        }
        // The weighted sum of values: lane (subset, texel) takes keys subset, subset + SUBSETS, ... in order.
        if (lane < SUBSETS * TEXELS) {
            uint subset = lane / TEXELS, texel = lane % TEXELS;
            precise vec4 a0[GROUP], a1[GROUP];
            for (uint g = 0; g < GROUP; ++g) { a0[g] = vec4(0.0); a1[g] = vec4(0.0); }
            for (uint j = subset; j < count; j += SUBSETS) {
                vec4 v0, v1;
                fetchPair(values, slots[j], texel, v0, v1);
                for (uint g = 0; g < GROUP; ++g) { float w = scores[g * TREE + j]; a0[g] += w * v0; a1[g] += w * v1; }
            }
            for (uint g = 0; g < GROUP; ++g) {
                uint at = (g * SUBSETS + subset) * HEAD_DIM + 8 * texel;
                for (uint k = 0; k < 4; ++k) { subsetSums[at + k] = a0[g][k]; subsetSums[at + 4 + k] = a1[g][k]; }
            }
        }
        barrier();
        for (uint g = 0; g < GROUP; ++g) {
            precise float total = tree[g * TREE];
            // Element d = lane + 64e of the chunk's weighted sum: the subsets' sums in order.
            precise float acc[ELEMENTS];
            for (uint e = 0; e < ELEMENTS; ++e) {
                uint d = lane + e * LANES;
                precise float sum = 0.0;
                if (d < HEAD_DIM) {
                    sum = subsetSums[g * SUBSETS * HEAD_DIM + d];
                    for (uint subset = 1; subset < SUBSETS; ++subset) sum += subsetSums[(g * SUBSETS + subset) * HEAD_DIM + d];
                }
                acc[e] = sum;
            }
            if (p.mode == 1u && !single) {
                uint r = recordOf(t, kvHead * GROUP + g, chunk);
                if (lane == 0u) { partials[r] = maximum[g]; partials[r + 1] = total; }
                for (uint e = 0; e < ELEMENTS; ++e) if (lane + e * LANES < HEAD_DIM) partials[r + 4 + lane + e * LANES] = acc[e];
                continue;
            }
            precise float a, b;
            MERGE_WEIGHTS(M[g], maximum[g], a, b)
            L[g] = L[g] * a + total * b;
            for (uint e = 0; e < ELEMENTS; ++e) ACC[g * ELEMENTS + e] = ACC[g * ELEMENTS + e] * a + acc[e] * b;
        }
        if (p.mode == 1u && !single) return;
        barrier();
    }
    for (uint g = 0; g < GROUP; ++g) {
        for (uint e = 0; e < ELEMENTS; ++e) {
            uint d = lane + e * LANES;
            if (d < HEAD_DIM) outputs[(t * p.heads + kvHead * GROUP + g) * HEAD_DIM + d] = ACC[g * ELEMENTS + e] / L[g];
        }
    }
}
