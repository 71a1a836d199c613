#version 450
#extension GL_GOOGLE_include_directive : require
#define QKV_EPILOGUE
// Q|K|V with RoPE and the KV-cache store in the epilogue (QKV_EPILOGUE: matmul_qkv_epilogue.glsl), F16 weights, 8 rows × 4 columns per invocation (batches). Same reduction order as every other variant.
#include "matmul_args.glsl"
#include "weights_f16.glsl"
#include "matmul_main.glsl"
