#version 450
// Greedy sampling on the device: the index of the largest logit of each wanted row (the lowest index on
// ties, like the host's argmax), so a step reads back one integer per sequence instead of the vocabulary.
// Two phases, one dispatch each, like top_candidates.comp: phase 0 finds each (row, vocabulary chunk)'s best,
// phase 1 each row's best of its chunks'.

layout(local_size_x_id = 15, local_size_x = 8) in;  // 15: the lane width (ComputeKernel)
layout(push_constant) uniform Parameters { uint rows; uint vocabulary; uint chunks; uint phase; } p;

layout(std430, binding = 0) readonly buffer Logits { float logits[]; };
layout(std430, binding = 1) buffer Partial { uint partial[]; };   // per (row, chunk): score bits, index
layout(std430, binding = 2) writeonly buffer Chosen { uint chosen[]; };

const uint none = 0xFFFFFFFFu;

void main() {
    uint g = gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    uint best = none;
    float bestValue = 0.0;
    if (p.phase == 0) {
        if (g >= p.rows * p.chunks) return;
        uint row = g / p.chunks, chunk = g % p.chunks;
        uint length = (p.vocabulary + p.chunks - 1) / p.chunks;
        uint start = min(chunk * length, p.vocabulary), end = min(start + length, p.vocabulary);
        uint base = row * p.vocabulary;
        for (uint i = start; i < end; ++i) {
            float v = logits[base + i];
            if (!isnan(v) && (best == none || v > bestValue)) { bestValue = v; best = i; }
        }
        partial[2 * g] = floatBitsToUint(bestValue);
        partial[2 * g + 1] = best;
    } else {
        if (g >= p.rows) return;
        // Chunks in index order, and only a strictly larger value replaces the best: the first maximum wins.
        for (uint c = 0; c < p.chunks; ++c) {
            uint at = 2 * (g * p.chunks + c);
            float v = uintBitsToFloat(partial[at]);
            if (partial[at + 1] != none && (best == none || v > bestValue)) { bestValue = v; best = partial[at + 1]; }
        }
        chosen[g] = best == none ? 0u : best;
    }
}
