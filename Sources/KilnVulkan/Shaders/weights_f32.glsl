// Included by matmul_f32*.comp: how this format is stored, loaded and multiplied.
// y = W · x with W in float32 (also the form other formats are expanded to at load).

layout(binding = 0) uniform samplerBuffer weights;
layout(binding = 1) uniform samplerBuffer unused;

struct Block { vec4 w0; vec4 w1; vec4 w2; vec4 w3; vec4 w4; vec4 w5; vec4 w6; vec4 w7; };



Block loadBlock(uint row, uint block) {
    uint i = blockIndex(row, block) * 8;
    return Block(texelFetch(weights, int(i)), texelFetch(weights, int(i + 1)), texelFetch(weights, int(i + 2)), texelFetch(weights, int(i + 3)),
                 texelFetch(weights, int(i + 4)), texelFetch(weights, int(i + 5)), texelFetch(weights, int(i + 6)), texelFetch(weights, int(i + 7)));
}

// Part k of a block: the 4 weights that meet x elements 4k..4k+3 (k is a constant after inlining).
// One scale texel per row (or none): nothing for the CPU frames' 8 rows to share.
struct Scales8 { float unused; };
Scales8 loadScales8(uint row0, uint block) { return Scales8(0.0); }
Block loadBlock8(Scales8 s, uint row, uint block, const int k) { return loadBlock(row, block); }

vec4 part(Block w, const int k) {
    return k == 0 ? w.w0 : k == 1 ? w.w1 : k == 2 ? w.w2 : k == 3 ? w.w3 : k == 4 ? w.w4 : k == 5 ? w.w5 : k == 6 ? w.w6 : w.w7;
}
float finish(Block w, float s, float xSum) { return s; }
