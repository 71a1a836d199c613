// Included by attention.comp (KV_F16 0) and attention_f16.comp (KV_F16 1).
// Causal attention over the paged KV cache, for prefill and decode alike. A token's keys 0...position are
// taken in chunks of chunkKeys (a multiple of the block size, fixed per decoder): each chunk gets a softmax of
// its own, for each of the GROUP query heads that share a KV head (each K/V texel fetch, a gather on lavapipe,
// thus serves the whole group), and the chunks are merged in order. Three modes, one code path for the
// arithmetic whatever the mode, so a token's output does not depend on how its sequence was scheduled:
//   0  one invocation per (token, KV head) computes and merges its chunks in turn (many tokens: prefill);
//   1  one invocation per (chunk, token, KV head) writes its chunk's softmax to `partials`; a token with a
//      single chunk writes its output right away, exactly as mode 0 would (few tokens, long contexts:
//      the chunks run side by side instead of one lane walking them all);
//   2  one invocation per (token, query head) merges mode 1's chunks in order, as mode 0 merges them.
layout(local_size_x_id = 15, local_size_x = 8) in;  // 15: the lane width (ComputeKernel)
#include "attention_inputs.glsl"
layout(std430, binding = 6) writeonly buffer Output { vec4 outputs[]; };
// Mode 1's chunks: per (token, query head, chunk) a record of 1 + V vec4s: (maximum, total, 0, 0), then the
// chunk's weighted sum of values.
layout(std430, binding = 7) buffer Partials { vec4 partials[]; };

uint recordOf(uint t, uint head, uint chunk) { return ((t * p.heads + head) * p.maxChunks + chunk) * (V + 1); }


void main() {
    uint id = (gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * gl_WorkGroupSize.x);
    if (p.mode == 2u) {
        // Merge: one (token, query head) of the shard.
        uint shardQueryHeads = p.shardHeads * GROUP;
        if (id >= p.B * shardQueryHeads) return;
        uint t = id / shardQueryHeads, head = p.headStart * GROUP + id % shardQueryHeads;
        uint chunks = positions[t] / p.chunkKeys + 1;
        if (chunks == 1u) return;   // mode 1 wrote it
        precise float M = -1.0 / 0.0, L = 0.0;
        precise vec4 ACC[V];
        [[unroll]] for (uint i = 0; i < V; ++i) ACC[i] = vec4(0.0);
        for (uint c = 0; c < chunks; ++c) {
            uint r = recordOf(t, head, c);
            vec4 header = partials[r];
            precise float a, b;
            MERGE_WEIGHTS(M, header.x, a, b)
            L = L * a + header.y * b;
            [[unroll]] for (uint i = 0; i < V; ++i) ACC[i] = ACC[i] * a + partials[r + 1 + i] * b;
        }
        [[unroll]] for (uint i = 0; i < V; ++i) outputs[(t * p.heads + head) * V + i] = ACC[i] / L;
        return;
    }
    uint t, shardHead, firstChunk, endChunk;
    if (p.mode == 0u) {
        if (id >= p.B * p.shardHeads) return;
        t = id / p.shardHeads; shardHead = id % p.shardHeads;
        firstChunk = 0; endChunk = positions[t] / p.chunkKeys + 1;
    } else {
        // Chunk slowest, so the 8 lanes of a workgroup share a chunk and do about the same work.
        shardHead = id % p.shardHeads; t = (id / p.shardHeads) % p.B;
        uint chunk = id / (p.shardHeads * p.B);
        if (chunk * p.chunkKeys > positions[t]) return;   // past the token's last chunk (or past the dispatch)
        firstChunk = chunk; endChunk = chunk + 1;
    }
    uint kvHead = p.headStart + shardHead;
    uint kvWidth4 = p.shardHeads * V;
    vec4 q[GROUP * V];
    uint qBase = (t * p.qkvWidth + kvHead * GROUP * HEAD_DIM) / 4;
    [[unroll]] for (uint i = 0; i < GROUP * V; ++i) q[i] = texelFetch(qkv, int(qBase + i)) * p.scale;
    uint last = positions[t];
    bool single = last < p.chunkKeys;
    uint table = sequences[t] * p.maxBlocks;
    precise float M[GROUP], L[GROUP];
    precise vec4 ACC[GROUP * V];
    [[unroll]] for (uint g = 0; g < GROUP; ++g) { M[g] = -1.0 / 0.0; L[g] = 0.0; }
    [[unroll]] for (uint i = 0; i < GROUP * V; ++i) ACC[i] = vec4(0.0);
    for (uint chunk = firstChunk; chunk < endChunk; ++chunk) {
        // The chunk's own online softmax over its keys in order.
        vec4 acc[GROUP * V];
        [[unroll]] for (uint i = 0; i < GROUP * V; ++i) acc[i] = vec4(0.0);
        float maximum[GROUP], total[GROUP];
        [[unroll]] for (uint g = 0; g < GROUP; ++g) { maximum[g] = -1.0 / 0.0; total[g] = 0.0; }
        uint chunkEnd = min(last, (chunk + 1) * p.chunkKeys - 1);
        // A block at a time: the block-table entry (an SSBO load, a per-lane loop) once per block.
        for (uint j0 = chunk * p.chunkKeys; j0 <= chunkEnd; j0 += p.blockSize) {
            uint block = blockTables[table + j0 / p.blockSize];
            uint end = min(chunkEnd, j0 + p.blockSize - 1);
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
        if (p.mode == 1u && !single) {
            [[unroll]] for (uint g = 0; g < GROUP; ++g) {
                uint r = recordOf(t, kvHead * GROUP + g, chunk);
                partials[r] = vec4(maximum[g], total[g], 0.0, 0.0);
                [[unroll]] for (uint i = 0; i < V; ++i) partials[r + 1 + i] = acc[g * V + i];
            }
            return;
        }
        [[unroll]] for (uint g = 0; g < GROUP; ++g) {
            precise float a, b;
            MERGE_WEIGHTS(M[g], maximum[g], a, b)
            L[g] = L[g] * a + total[g] * b;
            [[unroll]] for (uint i = 0; i < V; ++i) ACC[g * V + i] = ACC[g * V + i] * a + acc[g * V + i] * b;
        }
    }
    [[unroll]] for (uint g = 0; g < GROUP; ++g) {
        uint outBase = (t * p.heads + kvHead * GROUP + g) * V;
        [[unroll]] for (uint i = 0; i < V; ++i) outputs[outBase + i] = ACC[g * V + i] / L[g];
    }
}
