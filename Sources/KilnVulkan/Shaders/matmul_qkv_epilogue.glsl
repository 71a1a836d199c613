// Included by matmul_args.glsl for the QKV kernels (QKV_EPILOGUE): the stacked Q|K|V matrix's results get
// rope_store.comp's work done in the matrix kernel itself, one dispatch per layer fewer. An invocation's 8
// rows lie in one head (headDim % 8 == 0): rotary embedding on Q and K rows (adjacent pairs, GGUF's llama
// layout, with rope_store's table and expression, so the values are the same bit for bit), all rows
// written to y (attention reads Q there), and K and V rows also into the paged cache through the block
// table. The decoder uses it only where rope_store would run once: an unsplit pool, no NeoX pairs.

layout(std430, binding = 8) readonly buffer Positions { uint positions[]; };   // per token
layout(std430, binding = 9) readonly buffer Sequences { uint sequences[]; };   // per token: its row in blockTables
layout(std430, binding = 10) readonly buffer BlockTables { uint blockTables[]; };
layout(binding = 11) uniform samplerBuffer rotation;                            // [position][ropeDim / 2]: (cos, sin), two pairs per texel
// The pool as 16-byte words: 8 halves (float16) or 4 floats per word.
layout(std430, binding = 12) writeonly buffer KeyCache { uvec4 keys[]; };
layout(std430, binding = 13) writeonly buffer ValueCache { uvec4 values[]; };

#include "half_rounding.glsl"

// Pairs (a.x, a.y) and (a.z, a.w) rotated by the two (cos, sin) pairs in cs (rope_store.glsl's expression).
// `precise`: no compiler may contract it into fused multiply-adds in one kernel and not in the other.
vec4 rotateAdjacent(vec4 a, vec4 cs) {
    precise vec4 r = vec4(a.x * cs.x - a.y * cs.y, a.x * cs.y + a.y * cs.x, a.z * cs.z - a.w * cs.w, a.z * cs.w + a.w * cs.z);
    return r;
}

void epilogue8(vec4 lo, vec4 hi, uint row, uint column) {
    if (column >= p.B) return;
    uint first = p.rowOffset + row;                     // row of the whole Q|K|V output
    uint inHead = first % p.headDim;
    bool isValue = first >= p.qWidth + p.kvWidth;
    uint pos = positions[column];
    if (!isValue && inHead < p.ropeDim) {
        uint texel = pos * (p.ropeDim / 4u) + inHead / 4u;
        lo = rotateAdjacent(lo, texelFetch(rotation, int(texel)));
        hi = rotateAdjacent(hi, texelFetch(rotation, int(texel + 1u)));
    }
    uint at = column * p.yStride + first;
    y[at] = lo.x; y[at + 1u] = lo.y; y[at + 2u] = lo.z; y[at + 3u] = lo.w;
    y[at + 4u] = hi.x; y[at + 5u] = hi.y; y[at + 6u] = hi.z; y[at + 7u] = hi.w;
    if (first < p.qWidth) return;
    uint kvHead = ((first - p.qWidth) % p.kvWidth) / p.headDim;
    uint block = blockTables[sequences[column] * p.maxBlocks + pos / p.blockSize];
    uint element = ((block * p.blockSize + pos % p.blockSize) * (p.kvWidth / p.headDim) + kvHead) * p.headDim + inHead;
    if ((p.flags & KV_F16) != 0u) {
        uvec4 word = uvec4(packHalves(lo.xy), packHalves(lo.zw), packHalves(hi.xy), packHalves(hi.zw));
        if (isValue) values[element / 8u] = word; else keys[element / 8u] = word;
    } else {
        if (isValue) { values[element / 4u] = floatBitsToUint(lo); values[element / 4u + 1u] = floatBitsToUint(hi); }
        else { keys[element / 4u] = floatBitsToUint(lo); keys[element / 4u + 1u] = floatBitsToUint(hi); }
    }
}
