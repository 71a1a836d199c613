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

float blockDot(Block w, X_ARGS(x)) {
    return (dot(w.w0, x0) + dot(w.w1, x1)) + (dot(w.w2, x2) + dot(w.w3, x3))
         + (dot(w.w4, x4) + dot(w.w5, x5)) + (dot(w.w6, x6) + dot(w.w7, x7));
}
