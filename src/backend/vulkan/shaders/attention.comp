#version 450
// Causal grouped-query attention over one layer's F16 cache: one workgroup per (query head,
// token). Token t (position ids[0] + t) sees cache positions 0 .. its own. Three passes through a
// scores row in device memory (n_ctx floats per (token, head)): scores q.k_j * scale and their
// maximum; exp(score - max) and their sum; then weight_j * v_j summed over j, each output pair
// of dimensions by several threads that split the keys. Query head h reads KV head
// h / (n_head / n_head_kv). With flags & 1, the workgroup also writes its head's outputs in the
// int8 form (q8_form.glsl; head_dim a multiple of 32) of the row the output product reads, so
// that form costs no dispatch of its own (quantize_q8.comp would write the same bits).
#extension GL_KHR_shader_subgroup_arithmetic : require
#include "common.glsl"
#include "q8_form.glsl"

layout(local_size_x = 128) in;
const uint kThreads = 128u;

layout(push_constant) uniform Push {
  Floats q;
  Halves k_cache;
  Halves v_cache;
  Floats out_rows;
  Floats scores;  // [token][head][n_ctx]
  Ints ids;
  uint n_head;
  uint n_head_kv;
  uint head_dim;  // even, <= 2 * kThreads
  uint n_ctx;
  float scale;
  uint flags;  // 1: write q8_out too
  Q8Words q8_out;
} pc;

shared float q_row[2u * kThreads];
shared float partial[kThreads];
shared vec2 slice_sums[kThreads];

// Workgroup reductions: per subgroup, then across the subgroups in a fixed order. The barrier
// at the end lets `partial` be reused by the next reduction.
float reduce_max(float v) {
  v = subgroupMax(v);
  if (subgroupElect()) partial[gl_SubgroupID] = v;
  barrier();
  float r = partial[0];
  for (uint g = 1u; g < gl_NumSubgroups; ++g) r = max(r, partial[g]);
  barrier();
  return r;
}

float reduce_sum(float v) {
  v = subgroupAdd(v);
  if (subgroupElect()) partial[gl_SubgroupID] = v;
  barrier();
  float r = 0.0;
  for (uint g = 0u; g < gl_NumSubgroups; ++g) r += partial[g];
  barrier();
  return r;
}

void main() {
  const uint h = gl_WorkGroupID.x, t = gl_WorkGroupID.y;
  const uint tid = gl_LocalInvocationID.x;
  const uint hd = pc.head_dim, kv_dim = pc.n_head_kv * hd;
  const uint kv_head = h / (pc.n_head / pc.n_head_kv);
  const uint n_kv = uint(pc.ids.i[0]) + t + 1u;
  const uint qo = (t * pc.n_head + h) * hd;
  const uint so = (t * pc.n_head + h) * pc.n_ctx;
  for (uint d = tid; d < hd; d += kThreads) q_row[d] = pc.q.f[qo + d];
  barrier();

  // Scores: a thread per key. Its words of k are loaded 8 at a time before any is used, so 8
  // loads are in flight at once instead of one (a dependent load a pair left the decode step
  // waiting on memory latency 64 times per key at head_dim 128).
  const uint pairs = hd / 2u;
  float m = -1.0 / 0.0;
  for (uint j = tid; j < n_kv; j += kThreads) {
    const uint ko = (j * kv_dim + kv_head * hd) / 2u;
    float s = 0.0;
    for (uint d = 0u; d < pairs; d += 8u) {
      uint kw[8];
      for (uint c = 0u; c < 8u; ++c) kw[c] = d + c < pairs ? pc.k_cache.w[ko + d + c] : 0u;
      for (uint c = 0u; c < 8u; ++c) {
        const vec2 k = unpackHalf2x16(kw[c]);
        if (d + c < pairs) s += q_row[2u * (d + c)] * k.x + q_row[2u * (d + c) + 1u] * k.y;
      }
    }
    s *= pc.scale;
    pc.scores.f[so + j] = s;
    m = max(m, s);
  }
  m = reduce_max(m);

  float sum = 0.0;
  for (uint j = tid; j < n_kv; j += kThreads) {
    const float e = exp(pc.scores.f[so + j] - m);
    pc.scores.f[so + j] = e;
    sum += e;
  }
  sum = reduce_sum(sum);  // its barriers also make every thread's weights visible

  // The weighted sum of V: thread (pair p, slice s) adds the keys j = s, s + n_slices, ... of
  // output pair p (head_dim <= 2 kThreads, so there is at least one slice); then the slices'
  // sums meet in shared memory in slice order. A short head keeps every thread busy this way
  // instead of leaving all but head_dim / 2 of them idle through the whole key loop.
  const uint n_slices = kThreads / pairs;
  const uint p = tid % pairs, slice = tid / pairs;
  const uint vo = kv_head * hd / 2u + p;  // this pair's word in a cache row
  const uint vs = kv_dim / 2u;            // words per cache row
  vec2 acc = vec2(0.0);
  if (slice < n_slices) {
    // Four keys' weights and words loaded before they are added (in key order), as above.
    uint j = slice;
    for (; j + 3u * n_slices < n_kv; j += 4u * n_slices) {
      float wt[4];
      uint vw[4];
      for (uint c = 0u; c < 4u; ++c) {
        wt[c] = pc.scores.f[so + j + c * n_slices];
        vw[c] = pc.v_cache.w[(j + c * n_slices) * vs + vo];
      }
      for (uint c = 0u; c < 4u; ++c) acc += wt[c] * unpackHalf2x16(vw[c]);
    }
    for (; j < n_kv; j += n_slices)
      acc += pc.scores.f[so + j] * unpackHalf2x16(pc.v_cache.w[j * vs + vo]);
  }
  slice_sums[tid] = acc;
  barrier();
  if (tid < pairs) {
    for (uint s = 1u; s < n_slices; ++s) acc += slice_sums[s * pairs + tid];
    const vec2 o = acc / sum;
    pc.out_rows.f[qo + 2u * tid] = o.x;
    pc.out_rows.f[qo + 2u * tid + 1u] = o.y;
    q_row[2u * tid] = o.x;  // the query row is no longer read: it holds the output now
    q_row[2u * tid + 1u] = o.y;
  }
  if ((pc.flags & 1u) == 0u) return;
  barrier();  // uniform: flags is a push constant
  if (tid < hd / 32u) {
    vec4 v[8];
    for (uint i = 0u; i < 8u; ++i) {
      const uint e = 32u * tid + 4u * i;
      v[i] = vec4(q_row[e], q_row[e + 1u], q_row[e + 2u], q_row[e + 3u]);
    }
    const uint n = pc.n_head * hd;
    write_q8_group(pc.q8_out, t * (9u * n / 16u), n, h * hd / 32u + tid, v);
  }
}
