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

float blockDot(Block w, X_ARGS(x)) {
    float sum = (dot(bytes(w.a.x), x0) + dot(bytes(w.a.y), x1)) + (dot(bytes(w.a.z), x2) + dot(bytes(w.a.w), x3))
              + (dot(bytes(w.b.x), x4) + dot(bytes(w.b.y), x5)) + (dot(bytes(w.b.z), x6) + dot(bytes(w.b.w), x7));
    return w.d * sum;
}
