#version 450
// y[t][r] (+)= W[r] . x[t] (+ bias[r]) for prompts: a shared-memory tiled matrix product. A
// workgroup of 256 threads computes a tile of 64 rows x 64 tokens. For each 32 columns it
// dequantizes the tile's 64 x 32 weights (dequant.glsl: a quarter chunk, 8 elements, per thread)
// and loads the 64 x 32 inputs into shared memory; then every thread accumulates its 4 rows x 4
// tokens from there. So each weight is read from device memory and dequantized once per 64 tokens
// (matvec.comp's 8-token variant: once per 8), and each value loaded from shared memory serves
// four products. The next 32 columns are fetched into registers while the current ones are used.
//
// A thread's outputs are rows ty + 16 i and tokens tx + 16 j (i, j < 4; tx = tid % 16,
// ty = tid / 16): a warp's reads of the weight tile are then broadcasts (two rows) and its reads
// of the input tile hit distinct banks (rows 36 floats apart). Each output sums its 32-column
// steps in column order, four columns at a time (dot), so a token's row does not depend on which
// other tokens share its tile, but it differs in rounding from matvec.comp's order: vk_ops.cpp
// uses this shader only for chunks of at least ProductTuning::gemm_min_tokens tokens.
// Inputs are float vec4s (x 16-byte aligned, x_stride a multiple of 4); rows of a multiple of 32.
#include "dequant.glsl"

layout(local_size_x = 256) in;
const uint kTileRows = 64u, kTileTokens = 64u;
const uint kStride = 9u;  // vec4s per tile row: 8 of data and one of padding (bank spread)

layout(buffer_reference, std430, buffer_reference_align = 16) readonly buffer InputVec4s {
  vec4 v[];
};

layout(push_constant) uniform Push {
  Words w;
  InputVec4s x;
  Floats y;
  Floats bias;
  uint rows;
  uint cols;
  uint row_bytes;
  uint n_tok;
  uint x_stride;  // floats between consecutive tokens' inputs (a multiple of 4)
  uint y_stride;  // floats between consecutive tokens' outputs
  uint flags;     // 1: accumulate into y; 2: add bias
} pc;

shared vec4 w_tile[kTileRows * kStride];
shared vec4 x_tile[kTileTokens * kStride];

// Per thread: its share of the next chunk's weights and inputs, fetched into registers while
// the current chunk is used.
float g_w[8];
vec4 g_x[2];

// Chunk c's share of thread tid (zero past the matrix's rows and the tokens): the quarter tid % 4
// of row tid / 4's chunk, and vec4 tid % 8 of tokens tid / 8 and tid / 8 + 32 (eight threads
// read a token's 128 contiguous bytes).
void fetch(uint c, uint row0, uint tok0) {
  const uint tid = gl_LocalInvocationID.x;
  const uint row = row0 + tid / 4u;
  if (row < pc.rows) {
    dequant_part(pc.w, row * pc.row_bytes, c, tid % 4u, 32u, g_w);
  } else {
    for (uint i = 0u; i < 8u; ++i) g_w[i] = 0.0;
  }
  for (uint h = 0u; h < 2u; ++h) {
    const uint t = tok0 + tid / 8u + 32u * h;
    g_x[h] = t < pc.n_tok ? pc.x.v[t * (pc.x_stride / 4u) + 8u * c + tid % 8u] : vec4(0.0);
  }
}

void main() {
  const uint tid = gl_LocalInvocationID.x;
  const uint row0 = gl_WorkGroupID.x * kTileRows, tok0 = gl_WorkGroupID.y * kTileTokens;
  const uint load_row = tid / 4u, part = tid % 4u, load_tok = tid / 8u, piece = tid % 8u;
  const uint tx = tid % 16u, ty = tid / 16u;
  float acc[4][4];
  for (uint i = 0u; i < 4u; ++i)
    for (uint j = 0u; j < 4u; ++j) acc[i][j] = 0.0;

  const uint n_chunks = pc.cols / 32u;
  fetch(0u, row0, tok0);
  for (uint c = 0u; c < n_chunks; ++c) {
    w_tile[load_row * kStride + 2u * part] = vec4(g_w[0], g_w[1], g_w[2], g_w[3]);
    w_tile[load_row * kStride + 2u * part + 1u] = vec4(g_w[4], g_w[5], g_w[6], g_w[7]);
    for (uint h = 0u; h < 2u; ++h) x_tile[(load_tok + 32u * h) * kStride + piece] = g_x[h];
    barrier();
    if (c + 1u < n_chunks) fetch(c + 1u, row0, tok0);
    for (uint k = 0u; k < 8u; ++k) {
      vec4 a[4], b[4];
      for (uint i = 0u; i < 4u; ++i) a[i] = w_tile[(ty + 16u * i) * kStride + k];
      for (uint j = 0u; j < 4u; ++j) b[j] = x_tile[(tx + 16u * j) * kStride + k];
      for (uint i = 0u; i < 4u; ++i)
        for (uint j = 0u; j < 4u; ++j) acc[i][j] += dot(a[i], b[j]);
    }
    barrier();  // every thread is done with the tiles before they are written again
  }

  for (uint i = 0u; i < 4u; ++i) {
    const uint row = row0 + ty + 16u * i;
    if (row >= pc.rows) continue;
    for (uint j = 0u; j < 4u; ++j) {
      const uint t = tok0 + tx + 16u * j;
      if (t >= pc.n_tok) continue;
      float r = acc[i][j];
      if ((pc.flags & 2u) != 0u) r += pc.bias.f[row];
      const uint yo = t * pc.y_stride + row;
      if ((pc.flags & 1u) != 0u) r += pc.y.f[yo];
      pc.y.f[yo] = r;
    }
  }
}
