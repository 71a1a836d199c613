#version 450
#extension GL_GOOGLE_include_directive : require
// The GPU family's attention over a float16 KV pool.
#define KV_F16 1
#include "attention_gpu.glsl"
