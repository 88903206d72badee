#version 450
// RMSNorm of row in_first + t of x into row t of y: y = x / sqrt(mean(x^2) + eps) * weight.
// One workgroup per row; the sum of squares is added per subgroup, then across subgroups.
#extension GL_KHR_shader_subgroup_arithmetic : require
#include "common.glsl"

layout(local_size_x = 256) in;
const uint kThreads = 256u;

layout(push_constant) uniform Push {
  Floats x;
  Floats weight;
  Floats y;
  uint n;         // elements per row
  uint in_first;  // first input row
  float eps;
} pc;

shared float partial[kThreads];

void main() {
  const uint t = gl_WorkGroupID.x;
  const uint tid = gl_LocalInvocationID.x;
  const uint xo = (pc.in_first + t) * pc.n;
  float s = 0.0;
  for (uint i = tid; i < pc.n; i += kThreads) s += pc.x.f[xo + i] * pc.x.f[xo + i];
  s = subgroupAdd(s);
  if (subgroupElect()) partial[gl_SubgroupID] = s;
  barrier();
  float total = 0.0;
  for (uint g = 0u; g < gl_NumSubgroups; ++g) total += partial[g];
  const float scale = 1.0 / sqrt(total / float(pc.n) + pc.eps);
  for (uint i = tid; i < pc.n; i += kThreads)
    pc.y.f[t * pc.n + i] = (pc.x.f[xo + i] * scale) * pc.weight.f[i];
}
