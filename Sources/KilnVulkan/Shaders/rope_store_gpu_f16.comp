#version 450
#extension GL_GOOGLE_include_directive : require
// RoPE and the KV store, float16 KV pool, GPU family: one lane per (token, head, vec4).
#define KV_F16 1
#define PER_VEC4 1
#include "rope_store.glsl"
