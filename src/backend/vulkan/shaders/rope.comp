#version 450
// RoPE of n_tok tokens' q (n_head heads) and k (n_head_kv heads), in place. Token t is at
// position ids[0] + t. The angles come from a table of cos and sin per (position, pair) that the
// host computes in double exactly as the CPU reference does (backend/cpu/ops_ref.cpp), so no
// phase is lost to float angles. Normal rope turns pairs (2i, 2i+1), neox (i, i + rope_dim/2).
#include "common.glsl"

layout(local_size_x = 64) in;

layout(push_constant) uniform Push {
  Floats q;
  Floats k;
  Floats table;  // [position][pair] -> (cos, sin)
  Ints ids;
  uint n_head;
  uint n_head_kv;
  uint head_dim;
  uint rope_dim;
  uint neox;
  uint n_tok;
} pc;

void main() {
  const uint half_dim = pc.rope_dim / 2u;
  const uint item = gl_GlobalInvocationID.x;  // (head, pair)
  const uint t = gl_GlobalInvocationID.y;
  const uint head = item / half_dim, i = item % half_dim;
  if (head >= pc.n_head + pc.n_head_kv || t >= pc.n_tok) return;
  const uint pos = uint(pc.ids.i[0]) + t;
  const float c = pc.table.f[2u * (pos * half_dim + i)];
  const float s = pc.table.f[2u * (pos * half_dim + i) + 1u];
  const uint i0 = pc.neox != 0u ? i : 2u * i;
  const uint i1 = pc.neox != 0u ? i + half_dim : 2u * i + 1u;
  if (head < pc.n_head) {
    const uint o = (t * pc.n_head + head) * pc.head_dim;
    const float a = pc.q.f[o + i0], b = pc.q.f[o + i1];
    pc.q.f[o + i0] = a * c - b * s;
    pc.q.f[o + i1] = a * s + b * c;
  } else {
    const uint o = (t * pc.n_head_kv + head - pc.n_head) * pc.head_dim;
    const float a = pc.k.f[o + i0], b = pc.k.f[o + i1];
    pc.k.f[o + i0] = a * c - b * s;
    pc.k.f[o + i1] = a * s + b * c;
  }
}
