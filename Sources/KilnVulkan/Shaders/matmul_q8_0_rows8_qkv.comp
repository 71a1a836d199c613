#version 450
#extension GL_GOOGLE_include_directive : require
#define QKV_EPILOGUE
// Q|K|V with RoPE and the KV-cache store in the epilogue (QKV_EPILOGUE: matmul_qkv_epilogue.glsl), Q8_0 weights, 8 rows × 1 column per invocation (single-token decode). Same reduction order as every other variant.
#include "matmul_args.glsl"
#include "weights_q8_0.glsl"
#include "matmul_rows8.glsl"
