// Included by matmul_q8_0*.comp: how this format is stored, loaded and multiplied.
// y = W · x with W in Q8_0, repacked at load: 32 signed bytes per block as two uvec4, the scale as float32.

layout(binding = 0) uniform usamplerBuffer quants;
layout(binding = 1) uniform samplerBuffer scales;  // four blocks' scales per texel

struct Block { uvec4 a; uvec4 b; float d; };



Block loadBlock(uint row, uint block) {
    uint i = blockIndex(row, block);
    return Block(texelFetch(quants, int(2 * i)), texelFetch(quants, int(2 * i + 1)), texelFetch(scales, int(i >> 2))[i & 3u]);
}

// The CPU frames' 8 rows row0 ..< row0 + 8 (row0 a multiple of 8, so their blocks lie side by side): their
// scales in 2 fetches, not one per row (a texel fetch is a ~45-instruction gather on lavapipe). Rows the
// kernel clamps to the last one take a padding row's scale here: their results are never stored.
struct Scales8 { vec4 s0123; vec4 s4567; };
Scales8 loadScales8(uint row0, uint block) {
    int i = int(blockIndex(row0, block) >> 2);
    return Scales8(texelFetch(scales, i), texelFetch(scales, i + 1));
}
// Row k of the eight (`row` is row0 + k, or the last row where that is past it).
Block loadBlock8(Scales8 s, uint row, uint block, const int k) {
    uint i = blockIndex(row, block);
    return Block(texelFetch(quants, int(2 * i)), texelFetch(quants, int(2 * i + 1)), k < 4 ? s.s0123[k] : s.s4567[k - 4]);
}

// Sign-extends each byte of w: shift it to the top, then arithmetic-shift it back down.
vec4 bytes(uint w) { return vec4(ivec4(w) << ivec4(24, 16, 8, 0) >> 24); }

// Part k of a block: the 4 weights that meet x elements 4k..4k+3.
vec4 part(Block w, const int k) { return k < 4 ? bytes(w.a[k]) : bytes(w.b[k - 4]); }
float finish(Block w, float s, float xSum) { return w.d * s; }
