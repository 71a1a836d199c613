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

vec4 low(uint w) { return vec4((ivec4(w) >> ivec4(0, 8, 16, 24)) & 0xF); }
vec4 high(uint w) { return vec4((ivec4(w) >> ivec4(4, 12, 20, 28)) & 0xF); }

// Part k of a block: the 4 weights that meet x elements 4k..4k+3 (low nibbles of word k, then high nibbles).
vec4 part(Block w, const int k) { return k < 4 ? low(w.q[k]) : high(w.q[k - 4]); }
float finish(Block w, float s, float xSum) { return w.s.x * s + w.s.y * xSum; }
