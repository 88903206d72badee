#version 450
// Token embeddings: out[t] = row ids[1 + t] of the embedding table, dequantized. ids[0] holds the
// first token's position (shared with the other shaders of a step); ids[1 ..] the tokens.
#include "dequant.glsl"

layout(local_size_x = 64) in;

layout(push_constant) uniform Push {
  Words w;
  Ints ids;
  Floats out_rows;
  uint cols;
  uint row_bytes;
  uint n_tok;
} pc;

void main() {
  const uint c = gl_GlobalInvocationID.x;
  const uint t = gl_GlobalInvocationID.y;
  if (c >= (pc.cols + 31u) / 32u || t >= pc.n_tok) return;
  const uint token = uint(pc.ids.i[1u + t]);
  const uint valid = min(32u, pc.cols - 32u * c);
  float v[32];
  dequant_chunk(pc.w, token * pc.row_bytes, c, valid, v);
  for (uint i = 0u; i < valid; ++i) pc.out_rows.f[t * pc.cols + 32u * c + i] = v[i];
}
