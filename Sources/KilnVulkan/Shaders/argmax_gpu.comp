#version 450
// The GPU family's greedy sampling on the device: argmax.comp's two phases, with phase 0 cooperative. One
// 64-lane workgroup per (row, vocabulary chunk): each lane keeps the best of every 64th logit of the chunk,
// and the lanes' bests meet in shared memory. The result is argmax.comp's exactly: the largest value, the
// lowest index on ties, NaN skipped (the maximum is the same whatever order it is found in).

layout(local_size_x = 64) in;
layout(push_constant) uniform Parameters { uint rows; uint vocabulary; uint chunks; uint phase; } p;

layout(std430, binding = 0) readonly buffer Logits { float logits[]; };
layout(std430, binding = 1) buffer Partial { uint partial[]; };   // per (row, chunk): score bits, index
layout(std430, binding = 2) writeonly buffer Chosen { uint chosen[]; };

const uint none = 0xFFFFFFFFu;
shared float bestValues[64];
shared uint bestIndices[64];

// Whether (v, i) beats (bestValue, best): larger, or equal with a lower index; `none` loses to anything.
bool beats(float v, uint i, float bestValue, uint best) {
    return i != none && (best == none || v > bestValue || (v == bestValue && i < best));
}

void main() {
    uint lane = gl_LocalInvocationID.x;
    uint group = gl_WorkGroupID.x + gl_WorkGroupID.y * gl_NumWorkGroups.x;
    uint best = none;
    float bestValue = 0.0;
    if (p.phase == 0) {
        if (group >= p.rows * p.chunks) return;   // the whole workgroup
        uint row = group / p.chunks, chunk = group % p.chunks;
        uint length = (p.vocabulary + p.chunks - 1) / p.chunks;
        uint start = min(chunk * length, p.vocabulary), end = min(start + length, p.vocabulary);
        uint base = row * p.vocabulary;
        for (uint i = start + lane; i < end; i += 64) {
            float v = logits[base + i];
            if (!isnan(v) && (best == none || v > bestValue)) { bestValue = v; best = i; }
        }
        bestValues[lane] = bestValue; bestIndices[lane] = best;
        barrier();
        for (uint w = 32; w > 0; w /= 2) {
            if (lane < w && beats(bestValues[lane + w], bestIndices[lane + w], bestValues[lane], bestIndices[lane])) {
                bestValues[lane] = bestValues[lane + w]; bestIndices[lane] = bestIndices[lane + w];
            }
            barrier();
        }
        if (lane == 0) {
            partial[2 * group] = floatBitsToUint(bestIndices[0] == none ? 0.0 : bestValues[0]);
            partial[2 * group + 1] = bestIndices[0];
        }
    } else {
        // Phase 1: a workgroup per row (so that every dispatch of this kernel counts items of 64 lanes), whose
        // first lane walks the row's few chunk results.
        uint g = group;
        if (g >= p.rows || lane != 0u) return;
        // Chunks in index order, and only a strictly larger value replaces the best: the first maximum wins.
        for (uint c = 0; c < p.chunks; ++c) {
            uint at = 2 * (g * p.chunks + c);
            float v = uintBitsToFloat(partial[at]);
            if (partial[at + 1] != none && (best == none || v > bestValue)) { bestValue = v; best = partial[at + 1]; }
        }
        chosen[g] = best == none ? 0u : best;
    }
}
