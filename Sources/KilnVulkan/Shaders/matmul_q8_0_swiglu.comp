#version 450
#extension GL_GOOGLE_include_directive : require
#define SWIGLU_EPILOGUE
// silu(gate) * up from the interleaved gate|up matrix (SWIGLU_EPILOGUE in matmul_args.glsl), Q8_0 weights, 8 rows × 4 columns per invocation (batches). Same reduction order as every other variant.
#include "matmul_args.glsl"
#include "weights_q8_0.glsl"
#include "matmul_main.glsl"
