#version 450
// The GPU family's top-k on the device: top_candidates.comp's two phases and records, with the lanes of a
// 64-lane workgroup sharing the work. Phase 0: one workgroup per (row, vocabulary chunk) sorts the chunk in
// shared memory (a bitonic sort: score descending, lower id first on ties, NaN last as (-inf, no token)) and
// keeps its K best, with the chunk's maximum and Σ exp(logit − maximum) (each lane's strided share in order,
// then the lanes' sums in a fixed pairwise tree). Phase 1: one workgroup per row sorts the chunks' K-lists
// together the same way. The order is total, so the candidates are top_candidates.comp's exactly; the sum's
// order is fixed by the vocabulary and chunk count alone (it differs from top_candidates.comp's by rounding).

layout(local_size_x = 64) in;
layout(constant_id = 0) const uint K = 64;
// Sorted entries in shared memory: a power of two ≥ a chunk's length and ≥ chunks × K (32 KiB at 4,096).
layout(constant_id = 1) const uint SORT = 4096;
layout(push_constant) uniform Parameters { uint rows; uint vocabulary; uint chunks; uint phase; } p;

layout(std430, binding = 0) readonly buffer Logits { float logits[]; };
layout(std430, binding = 1) buffer Partial { uint partial[]; };
layout(std430, binding = 2) writeonly buffer Result { uint result[]; };

const uint none = 0xFFFFFFFFu;
#define negativeInfinity uintBitsToFloat(0xFF800000u)

shared float scores[SORT];
shared uint ids[SORT];

// Whether (s, i) sorts before (t, j): higher score first, then lower id.
bool before(float s, uint i, float t, uint j) { return s > t || (s == t && i < j); }

// Sorts entries [0, n) (n a power of two) into the order `before`, whatever their count of lanes.
void sortShared(uint lane, uint n) {
    for (uint k = 2; k <= n; k <<= 1) {
        for (uint j = k >> 1; j > 0; j >>= 1) {
            for (uint i = lane; i < n; i += 64) {
                uint l = i ^ j;
                if (l > i) {
                    float a = scores[i], b = scores[l];
                    uint ia = ids[i], ib = ids[l];
                    bool swap = (i & k) == 0 ? before(b, ib, a, ia) : before(a, ia, b, ib);
                    if (swap) { scores[i] = b; scores[l] = a; ids[i] = ib; ids[l] = ia; }
                }
            }
            barrier();
        }
    }
}

// The 64 lanes' partial sums (in `scores`) added in a fixed pairwise tree; the total is scores[0].
float treeSum(uint lane, float mine) {
    scores[lane] = mine;
    barrier();
    for (uint w = 32; w > 0; w >>= 1) {
        if (lane < w) scores[lane] = scores[lane] + scores[lane + w];
        barrier();
    }
    float total = scores[0];
    barrier();
    return total;
}

uint powerOfTwoAtLeast(uint n) { uint m = 1; while (m < n) m <<= 1; return m; }

void main() {
    uint lane = gl_LocalInvocationID.x;
    uint group = gl_WorkGroupID.x + gl_WorkGroupID.y * gl_NumWorkGroups.x;
    uint record = 2 * K + 2;
    uint base, n;
    float maximum = negativeInfinity, sum;
    if (p.phase == 0) {
        if (group >= p.rows * p.chunks) return;   // the whole workgroup
        uint row = group / p.chunks, chunk = group % p.chunks;
        uint length = (p.vocabulary + p.chunks - 1) / p.chunks;
        uint start = min(chunk * length, p.vocabulary), end = min(start + length, p.vocabulary);
        uint first = row * p.vocabulary;
        n = powerOfTwoAtLeast(max(end - start, 1u));
        for (uint i = start + lane; i < end; i += 64) { float v = logits[first + i]; if (v > maximum) maximum = v; }
        // The chunk's maximum (exact in any order): through the sort's arrays before they hold the chunk.
        scores[lane] = maximum;
        barrier();
        for (uint w = 32; w > 0; w >>= 1) { if (lane < w) scores[lane] = max(scores[lane], scores[lane + w]); barrier(); }
        maximum = scores[0];
        barrier();
        precise float mine = 0.0;
        if (maximum != negativeInfinity) {
            for (uint i = start + lane; i < end; i += 64) { float v = logits[first + i]; if (!isnan(v)) mine += exp(v - maximum); }
        }
        sum = treeSum(lane, mine);
        for (uint i = lane; i < n; i += 64) {
            float v = start + i < end ? logits[first + start + i] : negativeInfinity;
            bool real = start + i < end && !isnan(v);
            scores[i] = real ? v : negativeInfinity; ids[i] = real ? start + i : none;
        }
        base = group * record;
    } else {
        if (group >= p.rows) return;
        uint first = group * p.chunks;
        n = powerOfTwoAtLeast(p.chunks * K);
        // The row's maximum: the chunks' maxima (exact); then Σ s_c · exp(m_c − maximum) over the chunks.
        for (uint c = 0; c < p.chunks; ++c) maximum = max(maximum, uintBitsToFloat(partial[(first + c) * record + 2 * K]));
        precise float mine = 0.0;
        for (uint c = lane; c < p.chunks; c += 64) {
            uint at = (first + c) * record;
            float s = uintBitsToFloat(partial[at + 2 * K + 1]);
            if (s > 0.0) mine += s * exp(uintBitsToFloat(partial[at + 2 * K]) - maximum);
        }
        sum = treeSum(lane, mine);
        for (uint i = lane; i < n; i += 64) {
            uint c = i / K, j = i % K;
            bool real = c < p.chunks;
            scores[i] = real ? uintBitsToFloat(partial[(first + c) * record + j]) : negativeInfinity;
            ids[i] = real ? partial[(first + c) * record + K + j] : none;
        }
        base = group * record;
    }
    barrier();
    sortShared(lane, n);
    for (uint j = lane; j < K; j += 64) {
        uint s = floatBitsToUint(j < n ? scores[j] : negativeInfinity), id = j < n ? ids[j] : none;
        if (id == none) s = floatBitsToUint(negativeInfinity);
        if (p.phase == 0) { partial[base + j] = s; partial[base + K + j] = id; } else { result[base + j] = s; result[base + K + j] = id; }
    }
    if (lane == 0) {
        if (p.phase == 0) { partial[base + 2 * K] = floatBitsToUint(maximum); partial[base + 2 * K + 1] = floatBitsToUint(sum); }
        else { result[base + 2 * K] = floatBitsToUint(maximum); result[base + 2 * K + 1] = floatBitsToUint(sum); }
    }
}
