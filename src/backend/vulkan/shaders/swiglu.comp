#version 450
// SwiGLU: gate[i] = silu(gate[i]) * up[i], in place; silu(x) = x / (1 + exp(-x)).
#include "common.glsl"

layout(local_size_x = 256) in;

layout(push_constant) uniform Push {
  Floats gate;
  Floats up;
  uint n;
} pc;

void main() {
  const uint i = gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * 65535u * 256u;
  if (i >= pc.n) return;
  const float g = pc.gate.f[i];
  pc.gate.f[i] = g / (1.0 + exp(-g)) * pc.up.f[i];
}
