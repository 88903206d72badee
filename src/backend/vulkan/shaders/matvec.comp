#version 450
// y[t][r] (+)= W[r] . x[t] (+ bias[r]), or an FFN's silu(W[r] . x[t]) * (W2[r] . x[t]), for the
// tokens t of the grid's layer z: kTok of them (-DTOKENS=N; 1 for decode, where vk_ops.cpp puts
// each token in its own layer).
// Each row's units (dot_unit.glsl) are shared by a team of kTeam threads (4 to 32, a power of
// two) that take them in turn, so neighbouring threads read neighbouring pieces of the row; each
// thread does that for kRowsPerThread rows (1, 2 or 4) at once, so the inputs it loads for a
// unit (unit_inputs) serve every one of them (the inputs, 32-bit floats, are several times the
// bytes of the quants), as they serve both the gate and the up row of an FFN.
// Both are specialization constants, not push constants: with the loop's stride and the row
// count known when the pipeline is built, NVIDIA's compiler unrolls the unit loop and keeps more
// loads in flight (7B decode 184 -> 202 tok/s on an H100, bench/NOTES.md).
// vk_ops.cpp picks both from the matrix's shape alone, never from the token count, so a token's
// arithmetic is the same whatever kTok and whichever tokens share its workgroup: a row computed
// in a prompt chunk has the bits it gets in a decode step (backend_vulkan_test checks it), where
// the chunk is too short for gemm.comp (vk::ProductTuning::gemm_min_tokens).
// A team's partial sums are added in a fixed order: a butterfly of subgroup shuffles within a
// subgroup, then, where a team spans several subgroups (lavapipe's are 8 wide), through shared
// memory. Subgroups are taken to be runs of consecutive invocations, as every driver lays out a
// one-dimensional workgroup; the op tests would see rows mixed otherwise.
// Inputs are read as vec4s: vk_ops.cpp routes here only 16-byte aligned x with rows of a
// multiple of 4 floats and weight rows of whole units; or, with -DQ8_INPUTS (Q4_K and Q6_K),
// as the int8 form quantize_q8.comp writes (dot_unit.glsl).
#extension GL_KHR_shader_subgroup_shuffle : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#include "dot_unit.glsl"

const uint kThreads = 128u, kTok = TOKENS;
layout(local_size_x = 128) in;
layout(constant_id = 0) const uint kTeam = 32u;          // threads per row: 4, 8, 16 or 32
layout(constant_id = 1) const uint kRowsPerThread = 1u;  // 1, 2 or 4
// Accumulators per token: the thread's rows, or the gate and up rows of the SwiGLU pair. Arrays
// hold kMaxRows (glslang cannot size them by a specialization constant's expression); the loops
// run to kAccRows, which the driver knows when it builds the pipeline.
const uint kMaxRows = 4u;
const uint kAccRows = kRowsPerThread > 2u ? kRowsPerThread : 2u;
const uint kGroupsPerGridX = 32768u;  // row groups beyond this go to the grid's y dimension

layout(push_constant) uniform Push {
  Words w;
#if defined(Q8_INPUTS)
  Words x;  // quantize_q8.comp's int8 form; x_stride: its words per token
#else
  Vec4s x;
#endif
  Floats y;
  Floats bias;
  uint rows;
  uint cols;
  uint row_bytes;
  uint n_tok;
  uint x_stride;  // floats between consecutive tokens' inputs: a multiple of 4 (-DQ8_INPUTS: words)
  uint y_stride;  // floats between consecutive tokens' outputs
  uint flags;     // 1: accumulate into y; 2: add bias; 4: swiglu; 8: RMSNorm first (below)
  // flags & 4: the up matrix of an FFN (w's shape; kRowsPerThread is 1). The thread's second row
  // is row0 of w2, and y[row0] = silu(w[row0] . x) * (w2[row0] . x), as swiglu.comp computes it.
  Words w2;
  // flags & 8: x is RMSNorm's input, not its output: the workgroup computes each token's
  // 1 / sqrt(mean(x^2) + norm_eps) and every input vec4 is (x * scale) * norm_w, the formula of
  // rmsnorm.comp, so the norm costs no dispatch of its own.
  Vec4s norm_w;
  float norm_eps;
} pc;

// Per token of the workgroup's layer: RMSNorm's scale (flags & 8), and the running sums of
// squares of the subgroups that give it.
shared float norm_scale[kTok];
shared float norm_partial[kThreads];
uint g_token_base;  // vec4 index in x of the token whose inputs unit_inputs is loading
float g_norm_scale;

vec4 input_vec4(Vec4s x, uint i) {
  const vec4 v = x.v[i];
  if ((pc.flags & 8u) == 0u) return v;
  return (v * g_norm_scale) * pc.norm_w.v[i - g_token_base];
}

// norm_scale[t] for this layer's tokens: every thread of the workgroup takes part, in a fixed
// order (per thread, per subgroup, then the subgroups in turn), the same for any kTok.
void compute_norm_scales(uint t0, uint n) {
#if !defined(Q8_INPUTS)  // the int8 form takes the norm in when it is made (quantize_q8.comp)
  const uint tid = gl_LocalInvocationID.x, nv = pc.cols / 4u;
  for (uint t = 0u; t < kTok; ++t) {
    float s = 0.0;
    if (t < n)
      for (uint i = tid; i < nv; i += kThreads) {
        const vec4 a = pc.x.v[(t0 + t) * (pc.x_stride / 4u) + i];
        s += dot(a, a);
      }
    s = subgroupAdd(s);
    if (subgroupElect()) norm_partial[gl_SubgroupID] = s;
    barrier();
    if (tid == 0u) {
      float total = 0.0;
      for (uint g = 0u; g < gl_NumSubgroups; ++g) total += norm_partial[g];
      norm_scale[t] = 1.0 / sqrt(total / float(pc.cols) + pc.norm_eps);
    }
    barrier();
  }
#endif
}

// Partial sums of subgroups, where a team spans several: [token][row of the thread][subgroup].
shared float partial[kTok][kMaxRows][kThreads / 4u];

// The rows of row group `group` (kThreads / kTeam * kRowsPerThread rows) for this layer's tokens.
void row_group(uint group) {
  const uint tid = gl_LocalInvocationID.x, lane = tid % kTeam, team = tid / kTeam;
  const uint R = kRowsPerThread;
  const bool swiglu = (pc.flags & 4u) != 0u;
  // This thread's rows: row0, row0 + stride, ... (the workgroup's teams interleave).
  const uint stride = kThreads / kTeam;
  const uint row0 = group * stride * R + team;
  const uint t0 = gl_WorkGroupID.z * kTok;
  const uint n = min(kTok, pc.n_tok - t0);

  float acc[kTok][kMaxRows];
  for (uint t = 0u; t < kTok; ++t)
    for (uint r = 0u; r < kAccRows; ++r) acc[t][r] = 0.0;
  const uint n_units = (pc.cols / kBlockElems) * kUnitsPerBlock;
  for (uint u = lane; u < n_units; u += kTeam) {
    const uint b = u / kUnitsPerBlock, unit = u % kUnitsPerBlock;
    for (uint t = 0u; t < kTok; ++t) {
      if (t >= n) continue;
#if defined(Q8_INPUTS)
      const uint base = (t0 + t) * pc.x_stride;
#else
      const uint base = (t0 + t) * (pc.x_stride / 4u);
      g_token_base = base;
      if ((pc.flags & 8u) != 0u) g_norm_scale = norm_scale[t];
#endif
      const UnitInputs in_ = unit_inputs(pc.x, base, pc.cols, b, unit);
      for (uint r = 0u; r < kAccRows; ++r) {
        const uint row = row0 + r * stride;
        if (r < R && row < pc.rows)
          acc[t][r] += unit_dot(pc.w, row * pc.row_bytes + b * kBlockBytes, unit, in_);
      }
      if (swiglu && row0 < pc.rows)
        acc[t][1] += unit_dot(pc.w2, row0 * pc.row_bytes + b * kBlockBytes, unit, in_);
    }
  }

  // The team's sums. Every thread reaches the shuffles and the barrier (uniform control flow).
  const uint width = min(kTeam, gl_SubgroupSize);  // lanes of a team within one subgroup
  for (uint t = 0u; t < kTok; ++t)
    for (uint r = 0u; r < kAccRows; ++r)
      for (uint o = width / 2u; o > 0u; o >>= 1) acc[t][r] += subgroupShuffleXor(acc[t][r], o);
  if (kTeam > gl_SubgroupSize) {
    if (gl_SubgroupInvocationID == 0u)
      for (uint t = 0u; t < kTok; ++t)
        for (uint r = 0u; r < kAccRows; ++r) partial[t][r][gl_SubgroupID] = acc[t][r];
    barrier();
    const uint per_team = kTeam / gl_SubgroupSize, first = team * per_team;
    for (uint t = 0u; t < kTok; ++t)
      for (uint r = 0u; r < kAccRows; ++r) {
        acc[t][r] = partial[t][r][first];
        for (uint g = 1u; g < per_team; ++g) acc[t][r] += partial[t][r][first + g];
      }
    barrier();  // every team has read `partial` before the next row group writes it
  }
  if (lane != 0u) return;
  for (uint r = 0u; r < R; ++r) {
    const uint row = row0 + r * stride;
    if (row >= pc.rows) break;
    for (uint t = 0u; t < n; ++t) {
      float v = acc[t][r];
      if (swiglu) v = v / (1.0 + exp(-v)) * acc[t][1];
      if ((pc.flags & 2u) != 0u) v += pc.bias.f[row];
      const uint yo = (t0 + t) * pc.y_stride + row;
      if ((pc.flags & 1u) != 0u) v += pc.y.f[yo];
      pc.y.f[yo] = v;
    }
  }
}

void main() {
  // One row group per workgroup, or, where vk_ops.cpp caps the grid
  // (LOCKSTEP_VULKAN_MATVEC_GROUPS), each workgroup takes every n-th group in turn: a group's
  // arithmetic is the same either way.
  const uint rows_per_group = kThreads / kTeam * kRowsPerThread;
  const uint n_groups = (pc.rows + rows_per_group - 1u) / rows_per_group;
  const uint grid = gl_NumWorkGroups.x * gl_NumWorkGroups.y;
  const uint t0 = gl_WorkGroupID.z * kTok;
  if ((pc.flags & 8u) != 0u) compute_norm_scales(t0, min(kTok, pc.n_tok - t0));
  for (uint g = gl_WorkGroupID.x + gl_WorkGroupID.y * kGroupsPerGridX; g < n_groups; g += grid)
    row_group(g);
}
