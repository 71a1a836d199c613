#version 450
#extension GL_GOOGLE_include_directive : require
// y = W · x, F16 weights, GPU family: 1 row x 1 column per lane, 64-lane workgroups. Same reduction order as every other variant.
#include "matmul_args.glsl"
#include "weights_f16.glsl"
#include "matmul_gpu_single.glsl"
