// Included by matmul_q4_1*.comp: how this format is stored, loaded and multiplied.
// y = W · x with W in Q4_1, repacked at load: 16 bytes of nibbles per block (byte j: element j low,
// element j + 16 high) and (d, m) as float32 pairs.

layout(binding = 0) uniform usamplerBuffer quants;
layout(binding = 1) uniform samplerBuffer scales;  // (d, m) of two blocks per texel

struct Block { uvec4 q; vec2 s; };



Block loadBlock(uint row, uint block) {
    uint i = blockIndex(row, block);
    vec4 s = texelFetch(scales, int(i >> 1));
    return Block(texelFetch(quants, int(i)), (i & 1u) != 0u ? s.zw : s.xy);
}

// The CPU frames' 8 rows row0 ..< row0 + 8 (row0 a multiple of 8, so their blocks lie side by side): their
// scales in 4 fetches, not one per row (a texel fetch is a ~45-instruction gather on lavapipe). Rows the
// kernel clamps to the last one take a padding row's scale here: their results are never stored.
struct Scales8 { vec4 s01; vec4 s23; vec4 s45; vec4 s67; };
Scales8 loadScales8(uint row0, uint block) {
    int i = int(blockIndex(row0, block) >> 1);
    return Scales8(texelFetch(scales, i), texelFetch(scales, i + 1), texelFetch(scales, i + 2), texelFetch(scales, i + 3));
}
// Row k of the eight (`row` is row0 + k, or the last row where that is past it).
Block loadBlock8(Scales8 s, uint row, uint block, const int k) {
    vec4 t = k < 2 ? s.s01 : k < 4 ? s.s23 : k < 6 ? s.s45 : s.s67;
    return Block(texelFetch(quants, int(blockIndex(row, block))), (k & 1) != 0 ? t.zw : t.xy);
}

vec4 low(uint w) { return vec4((ivec4(w) >> ivec4(0, 8, 16, 24)) & 0xF); }
vec4 high(uint w) { return vec4((ivec4(w) >> ivec4(4, 12, 20, 28)) & 0xF); }

// Part k of a block: the 4 weights that meet x elements 4k..4k+3 (low nibbles of word k, then high nibbles).
vec4 part(Block w, const int k) { return k < 4 ? low(w.q[k]) : high(w.q[k - 4]); }
float finish(Block w, float s, float xSum) { return w.s.x * s + w.s.y * xSum; }
