#version 450
// The input of the int8 products (dot_unit.glsl with -DQ8_INPUTS) from float rows, in the form
// q8_form.glsl describes: token t's row from word t * (9 n / 16) of out. With `norm`, the
// elements are RMSNorm's output (x * scale) * weight: the norm then costs no dispatch of its own.
// One thread per group; the grid's y is the token. Every workgroup of a token computes the
// norm's scale itself, in the same order, so all agree to the bit.
#extension GL_KHR_shader_subgroup_arithmetic : require
#include "common.glsl"
#include "q8_form.glsl"

layout(buffer_reference, std430, buffer_reference_align = 16) readonly buffer Vec4Rows {
  vec4 v[];
};

layout(local_size_x = 64) in;
const uint kThreads = 64u;

layout(push_constant) uniform Push {
  Vec4Rows x;
  Vec4Rows norm_w;  // with flags & 1
  Q8Words out_;
  uint n;         // elements per row: a multiple of 32
  uint x_stride;  // floats between consecutive tokens' rows: a multiple of 4
  float eps;
  uint flags;     // 1: RMSNorm first
} pc;

shared float partial[kThreads];

float norm_scale(uint xv) {
  const uint nv = pc.n / 4u, tid = gl_LocalInvocationID.x;
  float s = 0.0;
  for (uint i = tid; i < nv; i += kThreads) {
    const vec4 a = pc.x.v[xv + i];
    s += dot(a, a);
  }
  s = subgroupAdd(s);
  if (subgroupElect()) partial[gl_SubgroupID] = s;
  barrier();
  float total = 0.0;
  for (uint g = 0u; g < gl_NumSubgroups; ++g) total += partial[g];
  return 1.0 / sqrt(total / float(pc.n) + pc.eps);
}

void main() {
  const uint t = gl_WorkGroupID.y, n_groups = pc.n / 32u;
  const uint xv = t * (pc.x_stride / 4u);
  const bool norm = (pc.flags & 1u) != 0u;
  const float scale = norm ? norm_scale(xv) : 1.0;  // uniform: every thread reaches the barrier
  const uint g = gl_WorkGroupID.x * kThreads + gl_LocalInvocationID.x;
  if (g >= n_groups) return;
  vec4 v[8];
  for (uint i = 0u; i < 8u; ++i) {
    v[i] = pc.x.v[xv + 8u * g + i];
    if (norm) v[i] = (v[i] * scale) * pc.norm_w.v[8u * g + i];
  }
  write_q8_group(pc.out_, t * (9u * pc.n / 16u), pc.n, g, v);
}
