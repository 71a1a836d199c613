#version 450
#extension GL_GOOGLE_include_directive : require
#define SWIGLU_EPILOGUE
// silu(gate) * up from the interleaved gate|up matrix (SWIGLU_EPILOGUE in matmul_args.glsl), BF16 weights, 8 rows × 4 columns per invocation (batches). Same reduction order as every other variant.
#include "matmul_args.glsl"
#define BF16
#include "weights_f16.glsl"
#include "matmul_main.glsl"
