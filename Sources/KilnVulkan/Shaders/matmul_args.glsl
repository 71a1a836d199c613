// A block of 32 activations as eight vec4s plus their sum, passed without arrays (see matmul_main.glsl).
#define X_ARGS(s) vec4 s##0, vec4 s##1, vec4 s##2, vec4 s##3, vec4 s##4, vec4 s##5, vec4 s##6, vec4 s##7, float s##Sum

