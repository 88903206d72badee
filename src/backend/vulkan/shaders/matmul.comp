#version 450
// y[t][r] (+)= sum_c W[r][c] x[t][c] (+ bias[r]) for up to kTile tokens per workgroup: the weight
// row is dequantized once per 32-element chunk and dotted with every token of the tile, so a
// batch of n tokens reads the weights ceil(n / kTile) times. One workgroup per (row, token tile);
// its 64 threads take the row's chunks in turn; their partial sums are added per subgroup
// (subgroupAdd) and then across the workgroup's subgroups, in a fixed order.
// With n = 1 this is the decode matrix-vector product.
#extension GL_KHR_shader_subgroup_arithmetic : require
#include "dequant.glsl"

layout(local_size_x = 64) in;
const uint kThreads = 64u;
const uint kTile = 8u;
const uint kRowsPerGridX = 32768u;  // rows beyond this go to the grid's y dimension

layout(push_constant) uniform Push {
  Words w;
  Floats x;
  Floats y;
  Floats bias;
  uint rows;
  uint cols;
  uint row_bytes;
  uint n_tok;
  uint x_stride;  // floats between consecutive tokens' inputs
  uint y_stride;  // floats between consecutive tokens' outputs
  uint flags;     // 1: accumulate into y; 2: add bias
} pc;

shared float partial[kTile][kThreads];  // [token][subgroup]: at most kThreads subgroups

void main() {
  const uint row = gl_WorkGroupID.x + gl_WorkGroupID.y * kRowsPerGridX;
  if (row >= pc.rows) return;  // the whole workgroup leaves together
  const uint t0 = gl_WorkGroupID.z * kTile;
  const uint n = min(kTile, pc.n_tok - t0);
  const uint tid = gl_LocalInvocationID.x;
  const uint row_offset = row * pc.row_bytes;

  float acc[kTile];
  for (uint t = 0u; t < kTile; ++t) acc[t] = 0.0;
  float v[32];
  for (uint c = tid; c < (pc.cols + 31u) / 32u; c += kThreads) {
    const uint valid = min(32u, pc.cols - 32u * c);
    dequant_chunk(pc.w, row_offset, c, valid, v);
    for (uint t = 0u; t < n; ++t) {
      const uint xo = (t0 + t) * pc.x_stride + 32u * c;
      float s = 0.0;
      for (uint i = 0u; i < valid; ++i) s += v[i] * pc.x.f[xo + i];
      acc[t] += s;
    }
  }
  for (uint t = 0u; t < n; ++t) {  // n is the same in the whole workgroup: uniform control flow
    const float s = subgroupAdd(acc[t]);
    if (subgroupElect()) partial[t][gl_SubgroupID] = s;
  }
  barrier();
  if (tid < n) {
    float r = 0.0;
    for (uint g = 0u; g < gl_NumSubgroups; ++g) r += partial[tid][g];
    if ((pc.flags & 2u) != 0u) r += pc.bias.f[row];
    const uint yo = (t0 + tid) * pc.y_stride + row;
    if ((pc.flags & 1u) != 0u) r += pc.y.f[yo];
    pc.y.f[yo] = r;
  }
}
