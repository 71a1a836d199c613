#version 450
// Rotary position embedding on the Q and K parts of the fused QKV output (adjacent pairs, GGUF's llama
// layout, or NeoX halves), then K and V written into the paged cache through the block table.
// One invocation per (token, pair-or-value slot). cos/sin come from a host table, the same values the CPU
// reference uses.

layout(local_size_x = 8) in;
layout(push_constant) uniform Parameters {
    uint B; uint headDim; uint heads; uint kvHeads; uint ropeDim; uint neox; uint blockSize; uint maxBlocks;
} p;

layout(std430, binding = 0) buffer QKV { float qkv[]; };
layout(std430, binding = 1) readonly buffer Positions { uint positions[]; };   // per token
layout(std430, binding = 2) readonly buffer Sequences { uint sequences[]; };   // per token: its row in blockTables
layout(std430, binding = 3) readonly buffer BlockTables { uint blockTables[]; };
layout(std430, binding = 4) readonly buffer Rotation { vec2 rotation[]; };     // [position][ropeDim / 2]: (cos, sin)
layout(std430, binding = 5) writeonly buffer KeyCache { float keys[]; };
layout(std430, binding = 6) writeonly buffer ValueCache { float values[]; };

void rotate(uint base, uint i, uint pos) {
    uint a = p.neox != 0u ? base + i : base + 2 * i;
    uint b = p.neox != 0u ? base + i + p.ropeDim / 2 : base + 2 * i + 1;
    vec2 cs = rotation[pos * (p.ropeDim / 2) + i];
    float x0 = qkv[a], x1 = qkv[b];
    qkv[a] = x0 * cs.x - x1 * cs.y;
    qkv[b] = x0 * cs.y + x1 * cs.x;
}

void main() {
    uint pairs = p.ropeDim / 2;
    uint qWidth = p.heads * p.headDim, kvWidth = p.kvHeads * p.headDim;
    uint width = qWidth + 2 * kvWidth;
    // Per token: (heads + kvHeads) * pairs rotations, then kvWidth K/V copies (after rotation, by the same lane).
    uint perToken = (p.heads + p.kvHeads) * pairs;
    uint id = (gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * gl_WorkGroupSize.x);
    if (id >= p.B * perToken) return;
    uint t = id / perToken, j = id % perToken;
    uint head = j / pairs, i = j % pairs;
    uint pos = positions[t];
    uint row = t * width;
    uint base = head < p.heads ? row + head * p.headDim : row + qWidth + (head - p.heads) * p.headDim;
    rotate(base, i, pos);
    if (head >= p.heads) {
        // This lane rotated pair i of a K head: it also stores that pair of K and of V (and, for heads wider
        // than the rotated part, the unrotated tail is stored by the lanes of the first pairs).
        uint kvHead = head - p.heads;
        uint block = blockTables[sequences[t] * p.maxBlocks + pos / p.blockSize];
        uint slot = (block * p.blockSize + pos % p.blockSize) * kvWidth + kvHead * p.headDim;
        uint kBase = row + qWidth + kvHead * p.headDim, vBase = row + qWidth + kvWidth + kvHead * p.headDim;
        uint a = p.neox != 0u ? i : 2 * i;
        uint b = p.neox != 0u ? i + p.ropeDim / 2 : 2 * i + 1;
        keys[slot + a] = qkv[kBase + a]; keys[slot + b] = qkv[kBase + b];
        values[slot + a] = qkv[vBase + a]; values[slot + b] = qkv[vBase + b];
        for (uint k = p.ropeDim + i; k < p.headDim; k += pairs) {
            keys[slot + k] = qkv[kBase + k];
            values[slot + k] = qkv[vBase + k];
        }
    }
}
