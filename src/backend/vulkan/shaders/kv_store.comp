#version 450
// Stores n_tok tokens' k and v rows (float, kv_dim each) into one layer's F16 caches at positions
// ids[0] + t. One thread per pair of values: a pair is one 32-bit word of the cache, so no two
// threads write the same word.
#include "common.glsl"

layout(local_size_x = 64) in;

layout(push_constant) uniform Push {
  Floats k;
  Floats v;
  Halves k_cache;  // this layer's cache: [position][kv_dim]
  Halves v_cache;
  Ints ids;
  uint kv_dim;
  uint n_tok;
} pc;

void main() {
  const uint p = gl_GlobalInvocationID.x;
  const uint t = gl_GlobalInvocationID.y;
  if (p >= pc.kv_dim / 2u || t >= pc.n_tok) return;
  const uint pos = uint(pc.ids.i[0]) + t;
  const uint src = t * pc.kv_dim + 2u * p;
  const uint dst = pos * (pc.kv_dim / 2u) + p;
  pc.k_cache.w[dst] = packHalf2x16(vec2(pc.k.f[src], pc.k.f[src + 1u]));
  pc.v_cache.w[dst] = packHalf2x16(vec2(pc.v.f[src], pc.v.f[src + 1u]));
}
