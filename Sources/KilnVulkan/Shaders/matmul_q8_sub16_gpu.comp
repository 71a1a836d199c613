#version 450
#extension GL_GOOGLE_include_directive : require
// y = W · x, Q8_SUB16 weights, GPU family: 1 row x 4 columns per lane, 64-lane workgroups. Same reduction order as every other variant.
#include "matmul_args.glsl"
#include "weights_q8_sub16.glsl"
#include "matmul_gpu_main.glsl"
