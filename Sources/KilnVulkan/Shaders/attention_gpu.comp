#version 450
#extension GL_GOOGLE_include_directive : require
// The GPU family's attention over a float32 KV pool.
#define KV_F16 0
#include "attention_gpu.glsl"
