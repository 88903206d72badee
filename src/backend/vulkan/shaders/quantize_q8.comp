#version 450
// The input of the int8 products (dot_unit.glsl with -DQ8_INPUTS) from float rows: each group of
// 32 elements as two int8 terms with one scale, dx = max|v| / 127, q = roundEven(v / dx) and
// q2 = roundEven((v / dx - q) * 254), so v = dx * (q + q2 / 254) to within dx / 508 (plus float
// rounding): one term alone (llama.cpp's Q8_1 input) moves whole logit rows of random-weight
// models by cosine 1e-3; two keep them at the float products' level for one more integer dot
// product per 4 weights. With `norm`, v is RMSNorm's output (x * scale) * weight: the norm then
// costs no dispatch of its own. A group holding a NaN or infinity gets dx = NaN (its float sum,
// which any NaN or infinity reaches, is tested), so non-finite inputs still reach the output.
//
// Layout of token t's row of n elements, in 32-bit words from out + t * (9 n / 16) words:
//   q  [n / 4]   four int8 each, element order
//   q2 [n / 4]
//   dx [n / 32]  floats
//   xs [n / 32]  floats: each group's sum of v (Q4_K's min term), in element order
// One thread per group; the grid's y is the token. Every workgroup of a token computes the
// norm's scale itself, in the same order, so all agree to the bit.
#extension GL_KHR_shader_subgroup_arithmetic : require
#include "common.glsl"

layout(buffer_reference, std430, buffer_reference_align = 16) readonly buffer Vec4Rows {
  vec4 v[];
};
layout(buffer_reference, std430, buffer_reference_align = 4) writeonly buffer OutWords {
  uint w[];
};

layout(local_size_x = 64) in;
const uint kThreads = 64u;

layout(push_constant) uniform Push {
  Vec4Rows x;
  Vec4Rows norm_w;  // with flags & 1
  OutWords out_;
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

uint pack4(ivec4 q) {
  const uvec4 b = uvec4(q) & 0xFFu;
  return b.x | (b.y << 8) | (b.z << 16) | (b.w << 24);
}

void main() {
  const uint t = gl_WorkGroupID.y, n_groups = pc.n / 32u;
  const uint xv = t * (pc.x_stride / 4u);
  const bool norm = (pc.flags & 1u) != 0u;
  const float scale = norm ? norm_scale(xv) : 1.0;  // uniform: every thread reaches the barrier
  const uint g = gl_WorkGroupID.x * kThreads + gl_LocalInvocationID.x;
  if (g >= n_groups) return;
  vec4 v[8];
  float amax = 0.0, sum = 0.0;
  for (uint i = 0u; i < 8u; ++i) {
    v[i] = pc.x.v[xv + 8u * g + i];
    if (norm) v[i] = (v[i] * scale) * pc.norm_w.v[8u * g + i];
    for (uint c = 0u; c < 4u; ++c) {
      const float a = abs(v[i][c]);
      amax = a > amax ? a : amax;  // a NaN compares false: counts as 0 (dx below carries it)
      sum += v[i][c];
    }
  }
  const float inv = amax > 0.0 ? 127.0 / amax : 0.0;
  const uint base = t * (9u * pc.n / 16u), n4 = pc.n / 4u;
  for (uint i = 0u; i < 8u; ++i) {
    const vec4 s = v[i] * inv;
    const ivec4 q = clamp(ivec4(roundEven(s)), -127, 127);
    const ivec4 q2 = clamp(ivec4(roundEven((s - vec4(q)) * 254.0)), -127, 127);
    pc.out_.w[base + 8u * g + i] = pack4(q);
    pc.out_.w[base + n4 + 8u * g + i] = pack4(q2);
  }
  const bool finite = !isnan(sum) && !isinf(sum) && !isinf(amax);
  pc.out_.w[base + 2u * n4 + g] = finite ? floatBitsToUint(amax / 127.0) : 0x7FC00000u;
  pc.out_.w[base + 2u * n4 + n_groups + g] = floatBitsToUint(sum);
}
