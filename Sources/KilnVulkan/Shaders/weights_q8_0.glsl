// Included by matmul_q8_0*.comp: how this format is stored, loaded and multiplied.
// y = W · x with W in Q8_0, repacked at load: 32 signed bytes per block as two uvec4, the scale as float32.

layout(binding = 0) uniform usamplerBuffer quants;
layout(binding = 1) uniform samplerBuffer scales;  // four blocks' scales per texel

struct Block { uvec4 a; uvec4 b; float d; };



Block loadBlock(uint row, uint block) {
    uint i = blockIndex(row, block);
    return Block(texelFetch(quants, int(2 * i)), texelFetch(quants, int(2 * i + 1)), texelFetch(scales, int(i >> 2))[i & 3u]);
}

// Sign-extends each byte of w: shift it to the top, then arithmetic-shift it back down.
vec4 bytes(uint w) { return vec4(ivec4(w) << ivec4(24, 16, 8, 0) >> 24); }

// Part k of a block: the 4 weights that meet x elements 4k..4k+3.
vec4 part(Block w, const int k) { return k < 4 ? bytes(w.a[k]) : bytes(w.b[k - 4]); }
float finish(Block w, float s, float xSum) { return w.d * s; }
