#version 450
// Greedy sampling on the device: the index of the largest logit of each wanted row (the first on ties),
// so a step reads back one integer per sequence instead of the whole vocabulary.

layout(local_size_x = 8) in;
layout(push_constant) uniform Parameters { uint rows; uint vocabulary; } p;

layout(std430, binding = 0) readonly buffer Logits { float logits[]; };
layout(std430, binding = 1) writeonly buffer Chosen { uint chosen[]; };

void main() {
    uint r = (gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * gl_WorkGroupSize.x);
    if (r >= p.rows) return;
    uint base = r * p.vocabulary;
    uint best = 0;
    float bestValue = logits[base];
    for (uint i = 1; i < p.vocabulary; ++i) {
        float v = logits[base + i];
        if (v > bestValue) { bestValue = v; best = i; }
    }
    chosen[r] = best;
}
