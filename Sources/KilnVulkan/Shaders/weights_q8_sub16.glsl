// Included by matmul_q8_sub16*.comp: how this format is stored, loaded and multiplied.
// y = W · x with W in Kiln's Q8_SUB16 layout (DeviceMatrix, IntegerBlocks): 32 signed bytes per block as two
// uvec4, and (scale, min) for values 0..15 and 16..31 as one vec4. Q5_0, Q5_1, Q5_K and Q6_K (and stacks of
// mixed formats) are repacked into it at load without loss: value j = q[j] * scale + min, exactly the
// float operations of the CPU reference's dequantization.

layout(binding = 0) uniform usamplerBuffer quants;
layout(binding = 1) uniform samplerBuffer scales;  // (scale0, min0, scale1, min1) per block

struct Block { uvec4 a; uvec4 b; vec4 s; };

Block loadBlock(uint row, uint block) {
    uint i = blockIndex(row, block);
    return Block(texelFetch(quants, int(2 * i)), texelFetch(quants, int(2 * i + 1)), texelFetch(scales, int(i)));
}

// Sign-extends each byte of w: shift it to the top, then arithmetic-shift it back down.
// One scale texel per row (or none): nothing for the CPU frames' 8 rows to share.
struct Scales8 { float unused; };
Scales8 loadScales8(uint row0, uint block) { return Scales8(0.0); }
Block loadBlock8(Scales8 s, uint row, uint block, const int k) { return loadBlock(row, block); }

vec4 bytes(uint w) { return vec4(ivec4(w) << ivec4(24, 16, 8, 0) >> 24); }

// Part k of a block, dequantized: the 4 weights that meet x elements 4k..4k+3 (parts 0-3 use the first
// half's scale and min, parts 4-7 the second's). The block's partial sum then needs no scaling.
vec4 part(Block w, const int k) { return k < 4 ? bytes(w.a[k]) * w.s.x + w.s.y : bytes(w.b[k - 4]) * w.s.z + w.s.w; }
float finish(Block w, float s, float xSum) { return s; }
