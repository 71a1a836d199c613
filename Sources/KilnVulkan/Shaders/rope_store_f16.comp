#version 450
#extension GL_GOOGLE_include_directive : require
// RoPE and the KV store, float16 KV pool (the default).
#define KV_F16 1
#define PER_VEC4 0
#include "rope_store.glsl"
