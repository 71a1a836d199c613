#version 450
#extension GL_GOOGLE_include_directive : require
// RoPE and the KV store, float32 KV pool.
#define KV_F16 0
#define PER_VEC4 0
#include "rope_store.glsl"
