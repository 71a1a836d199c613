#version 450
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
// Attention over a float16 KV pool (the default).
#define KV_F16 1
#include "attention.glsl"
