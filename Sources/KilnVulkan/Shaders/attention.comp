#version 450
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
// Attention over a float32 KV pool.
#define KV_F16 0
#include "attention.glsl"
