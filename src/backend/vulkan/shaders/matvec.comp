#version 450
// y[t][r] (+)= W[r] . x[t] (+ bias[r]) for the tokens t of the grid's layer z: kTok of them
// (-DTOKENS=N; 1 for decode, where vk_ops.cpp puts each token in its own layer). A workgroup
// takes kRows rows; each row a team of kTeam threads that take the row's units (dot_unit.glsl)
// in turn, so neighbouring threads read neighbouring pieces of the row; with several tokens a
// thread dots each unit it loads with every token's input. The team's partial sums are added in a
// fixed order: per subgroup (subgroupAdd) where subgroups are no wider than a team (NVIDIA's 32,
// lavapipe's 4 to 16), through shared memory otherwise. A token's arithmetic is the same whatever
// kTok and whichever tokens share its workgroup, so a row computed in a prompt chunk has the
// bits it gets in a decode step (backend_vulkan_test checks it).
// Subgroups are taken to be runs of consecutive invocations, as every driver lays out a
// one-dimensional workgroup; the op tests would see a row mixed with its neighbour otherwise.
// Inputs are read as vec4s: vk_ops.cpp routes here only 16-byte aligned x with rows of a
// multiple of 4 floats and weight rows of whole units.
#extension GL_KHR_shader_subgroup_arithmetic : require
#include "dot_unit.glsl"

const uint kTeam = 32u, kRows = 4u, kThreads = kTeam * kRows, kTok = TOKENS;
layout(local_size_x = 128) in;
const uint kGroupsPerGridX = 32768u;  // row groups beyond this go to the grid's y dimension

layout(push_constant) uniform Push {
  Words w;
  Vec4s x;
  Floats y;
  Floats bias;
  uint rows;
  uint cols;
  uint row_bytes;
  uint n_tok;
  uint x_stride;  // floats between consecutive tokens' inputs: a multiple of 4
  uint y_stride;  // floats between consecutive tokens' outputs
  uint flags;     // 1: accumulate into y; 2: add bias
} pc;

shared float partial[kTok][kThreads];

void main() {
  const uint tid = gl_LocalInvocationID.x, team = tid / kTeam, lane = tid % kTeam;
  const uint row = (gl_WorkGroupID.x + gl_WorkGroupID.y * kGroupsPerGridX) * kRows + team;
  const uint t0 = gl_WorkGroupID.z * kTok;
  const uint n = min(kTok, pc.n_tok - t0);

  float acc[kTok];
  for (uint t = 0u; t < kTok; ++t) acc[t] = 0.0;
  if (row < pc.rows) {
    const uint n_units = (pc.cols / kBlockElems) * kUnitsPerBlock;
    const uint row_byte = row * pc.row_bytes;
    for (uint u = lane; u < n_units; u += kTeam) {
      const uint b = u / kUnitsPerBlock;
      for (uint t = 0u; t < kTok; ++t) {
        if (t < n)
          acc[t] += unit_dot(pc.w, row_byte + b * kBlockBytes, u % kUnitsPerBlock, pc.x,
                             (t0 + t) * (pc.x_stride / 4u) + b * (kBlockElems / 4u));
      }
    }
  }

  // Every thread reaches the barriers, rows past the end included.
  float sum[kTok];
  if (gl_SubgroupSize <= kTeam) {
    for (uint t = 0u; t < kTok; ++t) {
      const float s = subgroupAdd(acc[t]);
      if (subgroupElect()) partial[t][gl_SubgroupID] = s;
    }
    barrier();
    const uint per_team = kTeam / gl_SubgroupSize;
    for (uint t = 0u; t < kTok; ++t) {
      sum[t] = 0.0;
      for (uint g = team * per_team; g < (team + 1u) * per_team; ++g) sum[t] += partial[t][g];
    }
  } else {
    for (uint t = 0u; t < kTok; ++t) partial[t][tid] = acc[t];
    barrier();
    for (uint s = kTeam / 2u; s > 0u; s >>= 1) {
      if (lane < s)
        for (uint t = 0u; t < kTok; ++t) partial[t][tid] += partial[t][tid + s];
      barrier();
    }
    for (uint t = 0u; t < kTok; ++t) sum[t] = partial[t][team * kTeam];
  }
  if (lane != 0u || row >= pc.rows) return;
  for (uint t = 0u; t < n; ++t) {
    float r = sum[t];
    if ((pc.flags & 2u) != 0u) r += pc.bias.f[row];
    const uint yo = (t0 + t) * pc.y_stride + row;
    if ((pc.flags & 1u) != 0u) r += pc.y.f[yo];
    pc.y.f[yo] = r;
  }
}
