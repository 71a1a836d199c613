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

float blockDot(Block w, X_ARGS(x)) {
    float sum = (dot(low(w.q.x), x0) + dot(high(w.q.x), x4)) + (dot(low(w.q.y), x1) + dot(high(w.q.y), x5))
              + (dot(low(w.q.z), x2) + dot(high(w.q.z), x6)) + (dot(low(w.q.w), x3) + dot(high(w.q.w), x7));
    return w.s.x * sum + w.s.y * xSum;
}
