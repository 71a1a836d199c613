// Included by matmul_f16*.comp and matmul_bf16*.comp: how these formats are stored, loaded and multiplied.
// y = W · x with W in float16 (or bfloat16 when BF16 is defined) as stored in the GGUF file: 32 values per
// block as four uvec4 of two values each (the lower 16 bits first). Widening to float32 is exact, so these
// kernels give the float32 kernel's results bit for bit at half (or less) of its memory.

layout(binding = 0) uniform usamplerBuffer weights;
layout(binding = 1) uniform samplerBuffer unused;

struct Block { uvec4 q0; uvec4 q1; uvec4 q2; uvec4 q3; };

Block loadBlock(uint row, uint block) {
    uint i = blockIndex(row, block) * 4;
    return Block(texelFetch(weights, int(i)), texelFetch(weights, int(i + 1)), texelFetch(weights, int(i + 2)), texelFetch(weights, int(i + 3)));
}

// One scale texel per row (or none): nothing for the CPU frames' 8 rows to share.
struct Scales8 { float unused; };
Scales8 loadScales8(uint row0, uint block) { return Scales8(0.0); }
Block loadBlock8(Scales8 s, uint row, uint block, const int k) { return loadBlock(row, block); }

vec2 widen(uint w) {
#ifdef BF16
    return vec2(uintBitsToFloat(w << 16), uintBitsToFloat(w & 0xFFFF0000u));
#else
    return unpackHalf2x16(w);
#endif
}

// Part k of a block: the 4 weights that meet x elements 4k..4k+3 (k is a constant after inlining).
vec4 part(Block w, const int k) {
    uvec4 v = k < 2 ? w.q0 : k < 4 ? w.q1 : k < 6 ? w.q2 : w.q3;
    return (k & 1) == 0 ? vec4(widen(v.x), widen(v.y)) : vec4(widen(v.z), widen(v.w));
}
float finish(Block w, float s, float xSum) { return s; }
