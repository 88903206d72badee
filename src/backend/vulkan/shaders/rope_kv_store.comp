#version 450
// RoPE of n_tok tokens' q (n_head heads, in place) and k (n_head_kv heads), and the store of the
// turned k and of v into one layer's F16 caches at positions ids[0] + t: one dispatch where there
// were two, since on NVIDIA's driver each dispatch with the barrier after it costs about 5 us.
// Of a token's threads, the first n_head * rope_dim / 2 each turn one pair of q; each of the next
// kv_dim / 2 writes one 32-bit word (two halves) of the k cache and the same word of the v cache,
// so no two threads write one word. Each of a k word's two elements is turned from its own pair:
// neox pairs (i, i + rope_dim / 2) do not share a word. Normal rope turns pairs (2i, 2i+1). The
// angles come from a table of cos and sin per (position, pair) that the host computes in double
// exactly as the CPU reference does (backend/cpu/ops_ref.cpp), so no phase is lost to float
// angles.
#include "common.glsl"

layout(local_size_x = 64) in;

layout(push_constant) uniform Push {
  Floats q;
  Floats k;
  Floats v;
  Floats table;  // [position][pair] -> (cos, sin)
  Ints ids;
  Halves k_cache;  // this layer's caches: [position][kv_dim]
  Halves v_cache;
  uint n_head;
  uint n_head_kv;
  uint head_dim;
  uint rope_dim;
  uint neox;
  uint n_tok;
} pc;

// The two elements of pair i of a head (offsets within it).
uvec2 pair_elements(uint i) {
  return pc.neox != 0u ? uvec2(i, i + pc.rope_dim / 2u) : uvec2(2u * i, 2u * i + 1u);
}

vec2 angle(uint pos, uint i) {
  const uint at = 2u * (pos * (pc.rope_dim / 2u) + i);
  return vec2(pc.table.f[at], pc.table.f[at + 1u]);
}

// Element d of the k head that starts at o, turned.
float turned_k(uint o, uint d, uint pos) {
  if (d >= pc.rope_dim) return pc.k.f[o + d];
  const uint half_dim = pc.rope_dim / 2u;
  const uint i = pc.neox != 0u ? d % half_dim : d / 2u;
  const bool second = pc.neox != 0u ? d >= half_dim : (d & 1u) == 1u;
  const uvec2 e = pair_elements(i);
  const vec2 cs = angle(pos, i);
  const float a = pc.k.f[o + e.x], b = pc.k.f[o + e.y];
  return second ? a * cs.y + b * cs.x : a * cs.x - b * cs.y;
}

void main() {
  const uint item = gl_GlobalInvocationID.x;
  const uint t = gl_GlobalInvocationID.y;
  const uint half_dim = pc.rope_dim / 2u, kv_dim = pc.n_head_kv * pc.head_dim;
  const uint q_pairs = pc.n_head * half_dim;
  if (t >= pc.n_tok || item >= q_pairs + kv_dim / 2u) return;
  const uint pos = uint(pc.ids.i[0]) + t;
  if (item < q_pairs) {
    const uint head = item / half_dim, i = item % half_dim;
    const uint o = (t * pc.n_head + head) * pc.head_dim;
    const uvec2 e = pair_elements(i);
    const vec2 cs = angle(pos, i);
    const float a = pc.q.f[o + e.x], b = pc.q.f[o + e.y];
    pc.q.f[o + e.x] = a * cs.x - b * cs.y;
    pc.q.f[o + e.y] = a * cs.y + b * cs.x;
    return;
  }
  const uint p = item - q_pairs, d = (2u * p) % pc.head_dim;
  const uint o = t * kv_dim + (2u * p - d);  // the k head's first element
  const uint dst = pos * (kv_dim / 2u) + p;
  pc.k_cache.w[dst] = packHalf2x16(vec2(turned_k(o, d, pos), turned_k(o, d + 1u, pos)));
  const uint vo = t * kv_dim + 2u * p;
  pc.v_cache.w[dst] = packHalf2x16(vec2(pc.v.f[vo], pc.v.f[vo + 1u]));
}
