#version 450
// RMSNorm of row in_first + t of x into row t of y: y = x / sqrt(mean(x^2) + eps) * weight.
// One workgroup per row; the sum of squares is added per subgroup, then across subgroups. Rows
// of a multiple of 4 floats are read as vec4s, and each thread keeps its first kHeld vec4s in
// registers for the second pass, so a decode step's row (up to 4096 floats) is read from memory
// once, in one round of loads per thread: this dispatch sits between every pair of products.
#extension GL_KHR_shader_subgroup_arithmetic : require
#include "common.glsl"

layout(buffer_reference, std430, buffer_reference_align = 16) buffer Vec4Rows {
  vec4 v[];
};

layout(local_size_x = 256) in;
const uint kThreads = 256u, kHeld = 4u;

layout(push_constant) uniform Push {
  Floats x;
  Floats weight;
  Floats y;
  uint n;         // elements per row
  uint in_first;  // first input row
  float eps;
  uint vec4s;     // 1: n % 4 == 0 and x, weight and y 16-byte aligned
} pc;

shared float partial[kThreads];

float workgroup_sum(float s) {
  s = subgroupAdd(s);
  if (subgroupElect()) partial[gl_SubgroupID] = s;
  barrier();
  float total = 0.0;
  for (uint g = 0u; g < gl_NumSubgroups; ++g) total += partial[g];
  return total;
}

void main() {
  const uint t = gl_WorkGroupID.x;
  const uint tid = gl_LocalInvocationID.x;
  const uint xo = (pc.in_first + t) * pc.n;
  if (pc.vec4s != 0u) {  // uniform: every thread takes the same branch
    const uint nv = pc.n / 4u;
    Vec4Rows x = Vec4Rows(pc.x), w = Vec4Rows(pc.weight), y = Vec4Rows(pc.y);
    vec4 held[kHeld];
    float s = 0.0;
    for (uint h = 0u; h < kHeld; ++h) {
      const uint i = tid + h * kThreads;
      held[h] = i < nv ? x.v[xo / 4u + i] : vec4(0.0);
      s += dot(held[h], held[h]);
    }
    for (uint i = tid + kHeld * kThreads; i < nv; i += kThreads) {
      const vec4 a = x.v[xo / 4u + i];
      s += dot(a, a);
    }
    const float scale = 1.0 / sqrt(workgroup_sum(s) / float(pc.n) + pc.eps);
    for (uint h = 0u; h < kHeld; ++h) {
      const uint i = tid + h * kThreads;
      if (i < nv) y.v[t * nv + i] = (held[h] * scale) * w.v[i];
    }
    for (uint i = tid + kHeld * kThreads; i < nv; i += kThreads)
      y.v[t * nv + i] = (x.v[xo / 4u + i] * scale) * w.v[i];
    return;
  }
  float s = 0.0;
  for (uint i = tid; i < pc.n; i += kThreads) s += pc.x.f[xo + i] * pc.x.f[xo + i];
  const float scale = 1.0 / sqrt(workgroup_sum(s) / float(pc.n) + pc.eps);
  for (uint i = tid; i < pc.n; i += kThreads)
    pc.y.f[t * pc.n + i] = (pc.x.f[xo + i] * scale) * pc.weight.f[i];
}
