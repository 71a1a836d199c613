#version 450
#extension GL_GOOGLE_include_directive : require
#include "matmul_args.glsl"
// y = W · x with W in float32 (also the form other formats are expanded to at load).

layout(std430, binding = 0) readonly buffer Quants { vec4 weights[]; };
layout(std430, binding = 1) readonly buffer Scales { float unused[]; };

struct Block { vec4 w0; vec4 w1; vec4 w2; vec4 w3; vec4 w4; vec4 w5; vec4 w6; vec4 w7; };
Block loadBlock(uint row, uint block);
float blockDot(Block w, X_ARGS(x));

#include "matmul_main.glsl"

Block loadBlock(uint row, uint block) {
    uint i = row * (p.K / 4) + block * 8;
    return Block(weights[i], weights[i + 1], weights[i + 2], weights[i + 3], weights[i + 4], weights[i + 5], weights[i + 6], weights[i + 7]);
}

float blockDot(Block w, X_ARGS(x)) {
    return (dot(w.w0, x0) + dot(w.w1, x1)) + (dot(w.w2, x2) + dot(w.w3, x3))
         + (dot(w.w4, x4) + dot(w.w5, x5)) + (dot(w.w6, x6) + dot(w.w7, x7));
}
