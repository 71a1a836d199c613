#version 450
// Top-k on the device: the K most likely tokens of each wanted logit row, in descending order (ties: lower
// id first, the host sampler's order), with the row's maximum and Σ exp(logit − maximum), so the host can
// sample under top-k and report log-probabilities from 2K + 2 numbers instead of the whole vocabulary.
//
// Two phases, one dispatch each. Phase 0: one invocation per (row, chunk of the vocabulary) keeps its
// chunk's K best and its chunk's maximum and exponential sum. Phase 1: one invocation per row merges the
// chunks' lists and sums in chunk order. The order of every reduction is fixed by the vocabulary size and
// the chunk count alone, so a row's result never depends on the other rows of its step.
//
// Record layout (32-bit words), both for a chunk's partial result and a row's final one:
// [0, K) scores, [K, 2K) token ids (0xFFFFFFFF: no token), 2K the maximum, 2K + 1 the exponential sum.

layout(local_size_x_id = 15, local_size_x = 8) in;  // 15: the lane width (ComputeKernel)
layout(constant_id = 0) const uint K = 64;
layout(push_constant) uniform Parameters { uint rows; uint vocabulary; uint chunks; uint phase; } p;

layout(std430, binding = 0) readonly buffer Logits { float logits[]; };
layout(std430, binding = 1) buffer Partial { uint partial[]; };
layout(std430, binding = 2) writeonly buffer Result { uint result[]; };

const uint none = 0xFFFFFFFFu;
#define negativeInfinity uintBitsToFloat(0xFF800000u)

float bestScore[K];
uint bestId[K];
uint kept;

// Whether (s, i) comes before (t, j) in the sampler's order.
bool before(float s, uint i, float t, uint j) { return s > t || (s == t && i < j); }

// Offers a candidate to the sorted list of the K best so far (NaN never enters).
void offer(float s, uint id) {
    if (isnan(s) || (kept == K && !before(s, id, bestScore[K - 1], bestId[K - 1]))) return;
    uint at = kept < K ? kept : K - 1;   // a free slot, or the worst one, which falls off
    if (kept < K) kept += 1;
    while (at > 0 && before(s, id, bestScore[at - 1], bestId[at - 1])) {
        bestScore[at] = bestScore[at - 1];
        bestId[at] = bestId[at - 1];
        at -= 1;
    }
    bestScore[at] = s;
    bestId[at] = id;
}

void store(uint base, float maximum, float sum, bool final) {
    for (uint j = 0; j < K; ++j) {
        uint s = floatBitsToUint(j < kept ? bestScore[j] : negativeInfinity);
        uint id = j < kept ? bestId[j] : none;
        if (final) { result[base + j] = s; result[base + K + j] = id; } else { partial[base + j] = s; partial[base + K + j] = id; }
    }
    if (final) {
        result[base + 2 * K] = floatBitsToUint(maximum); result[base + 2 * K + 1] = floatBitsToUint(sum);
    } else {
        partial[base + 2 * K] = floatBitsToUint(maximum); partial[base + 2 * K + 1] = floatBitsToUint(sum);
    }
}

void main() {
    uint g = gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    uint record = 2 * K + 2;
    kept = 0;
    if (p.phase == 0) {
        if (g >= p.rows * p.chunks) return;
        uint row = g / p.chunks, chunk = g % p.chunks;
        uint length = (p.vocabulary + p.chunks - 1) / p.chunks;
        uint start = min(chunk * length, p.vocabulary), end = min(start + length, p.vocabulary);
        uint base = row * p.vocabulary;
        float maximum = negativeInfinity;
        for (uint i = start; i < end; ++i) {
            float v = logits[base + i];
            if (v > maximum) maximum = v;
            offer(v, i);
        }
        float sum = 0.0;
        if (maximum != negativeInfinity) {
            for (uint i = start; i < end; ++i) {
                float v = logits[base + i];
                if (!isnan(v)) sum += exp(v - maximum);
            }
        }
        store(g * record, maximum, sum, false);
    } else {
        if (g >= p.rows) return;
        uint first = g * p.chunks;
        float maximum = negativeInfinity;
        for (uint c = 0; c < p.chunks; ++c) {
            uint base = (first + c) * record;
            maximum = max(maximum, uintBitsToFloat(partial[base + 2 * K]));
            for (uint j = 0; j < K; ++j) {
                uint id = partial[base + K + j];
                if (id == none) break;
                float s = uintBitsToFloat(partial[base + j]);
                // The chunk's list is sorted: once one misses the list, the rest of the chunk does too.
                if (kept == K && !before(s, id, bestScore[K - 1], bestId[K - 1])) break;
                offer(s, id);
            }
        }
        float sum = 0.0;
        for (uint c = 0; c < p.chunks; ++c) {
            uint base = (first + c) * record;
            float s = uintBitsToFloat(partial[base + 2 * K + 1]);
            if (s > 0.0) sum += s * exp(uintBitsToFloat(partial[base + 2 * K]) - maximum);
        }
        store(g * record, maximum, sum, true);
    }
}
