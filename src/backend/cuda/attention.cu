// Attention over the KV cache (F16 or F32 elements, converted to float on load).
//
// Decode (one query token): flash-decoding. The positions 0..pos are cut into chunks of
// kAttnSplit; a thread block per (KV head, group of up to 4 query heads, chunk) computes the
// scores of its chunk for all query heads that share the KV head (GQA: K and V are read once per
// group), a chunk-local softmax and the weighted sum of V; a second kernel merges the chunks with
// their maxima and sums. The grid covers the whole context and chunks past pos exit at once, so
// the launch configuration never changes and the decode step can be replayed as a CUDA graph.
//
// Prefill (many query tokens): over an F16 cache with head sizes that are multiples of 16, the
// tensor-core kernel of attention_flash.cu. Otherwise (F32 cache, other head sizes, or
// CudaKernelTuning::flash_prefill off) a flash-attention style kernel in FP32 on CUDA cores: a
// block takes 32 query rows of one head and walks key tiles of 64, keeping a running max and sum
// per row (online softmax), so the n_tok x n_kv score matrix is never materialised.
//
// Both take gemma2's score soft-cap (cap * tanh(score / cap), before the mask) and a sliding
// window (AttentionParams::window: a query at p sees p - window + 1 .. p): decode chunks wholly
// before the window exit and are left out of the merge, positions before it in the first chunk
// are masked; prefill tiles start at the first tile any of the block's queries sees.
#include <cmath>
#include <type_traits>

#include "backend/cuda/cuda_common.cuh"
#include "backend/cuda/cuda_ops.h"

namespace lockstep::cuda_ops {

using namespace lockstep::cuda;

namespace {

// Decode blocks are small so that short contexts still spread over many SMs: a block takes
// kAttnSplit = 32 positions (cuda_ops.h) of up to kGqaChunk query heads, with 64 threads: two per
// position for the scores (each half of the head dimensions), one per pair of dimensions for V.
constexpr int kGqaChunk = 4;  // query heads per decode block
constexpr int kAttnThreads = 64;
static_assert(kAttnThreads == 2 * kAttnSplit, "two threads per position in the score loop");
constexpr int kMergeThreads = 128, kMergeCached = 1024;  // merge: weights of up to 1024 chunks

int n_splits_for(int max_ctx) {
  return int(ceil_div(max_ctx, kAttnSplit));
}

template <typename KV>
__global__ void __launch_bounds__(kAttnThreads)
    attn_decode_split_kernel(const float* __restrict__ q, const KV* __restrict__ k_cache,
                             const KV* __restrict__ v_cache, float* __restrict__ part_o,
                             float* __restrict__ part_ml, const int32_t* __restrict__ pos,
                             const int32_t* __restrict__ tok_seq, int64_t seq_rows,
                             int64_t part_stride, int n_head, int n_head_kv, int hd, float scale,
                             int n_splits, int n_gchunk, float softcap, int window) {
  pdl_wait();
  // Token blockIdx.z of a batch (TokenRows): its query row, position, sequence and partials.
  {
    const int tok = blockIdx.z;
    q += int64_t(tok) * n_head * hd;
    pos += tok;
    const int64_t row0 = tok_seq ? int64_t(tok_seq[tok]) * seq_rows : 0;
    k_cache += row0 * n_head_kv * hd, v_cache += row0 * n_head_kv * hd;
    part_o += tok * part_stride;
    part_ml += tok * part_stride;
  }
  extern __shared__ float smem[];
  float* qs = smem;                          // [kGqaChunk][hd]
  float* sc = qs + kGqaChunk * hd;           // [kGqaChunk][kAttnSplit]
  float* sc2 = sc + kGqaChunk * kAttnSplit;  // [kGqaChunk][kAttnSplit], second halves
  float* ml = sc2 + kGqaChunk * kAttnSplit;  // [kGqaChunk][2]

  const int kvh = blockIdx.x / n_gchunk, gc = blockIdx.x % n_gchunk;
  const int gqa = n_head / n_head_kv;
  const int g0 = gc * kGqaChunk, ng = min(kGqaChunk, gqa - g0);
  const int head0 = kvh * gqa + g0;
  const int split = blockIdx.y;
  const int n_kv = *pos + 1;
  const int first = window > 0 ? max(0, n_kv - window) : 0;  // first position in the window
  const int p0 = split * kAttnSplit;
  if (p0 >= n_kv || p0 + kAttnSplit <= first) return;
  const int np = min(kAttnSplit, n_kv - p0);
  const int64_t kv_dim = int64_t(n_head_kv) * hd;
  const int tid = threadIdx.x;

  for (int i = tid; i < ng * hd; i += blockDim.x) qs[i] = q[int64_t(head0) * hd + i] * scale;
  __syncthreads();

  // Scores: thread (half, pi) dots dimensions [half * hd/2, (half + 1) * hd/2) of position
  // p0 + pi with every query head of the group; the halves meet in shared memory.
  {
    const int pi = tid % kAttnSplit, half = tid / kAttnSplit, hd2 = hd / 2, d0 = half * hd2;
    float acc[kGqaChunk];
#pragma unroll
    for (int g = 0; g < kGqaChunk; ++g) acc[g] = 0.0f;
    if (pi < np) {
      const KV* kr = k_cache + int64_t(p0 + pi) * kv_dim + int64_t(kvh) * hd + d0;
      for (int d = 0; d < hd2; d += 2) {
        const float2 kf = load_kv2(kr + d);
#pragma unroll
        for (int g = 0; g < kGqaChunk; ++g)
          if (g < ng)
            acc[g] = fmaf(qs[g * hd + d0 + d], kf.x, fmaf(qs[g * hd + d0 + d + 1], kf.y, acc[g]));
      }
    }
    float* dst = half ? sc2 : sc;
#pragma unroll
    for (int g = 0; g < kGqaChunk; ++g)
      if (g < ng) dst[g * kAttnSplit + pi] = acc[g];
  }
  __syncthreads();

  // Chunk-local softmax numerators, one warp per query head.
  const int warp = tid >> 5, lane = tid & 31, n_warps = blockDim.x >> 5;
  for (int g = warp; g < ng; g += n_warps) {
    float m = -INFINITY;
    for (int i = lane; i < np; i += 32) {
      float v = sc[g * kAttnSplit + i] + sc2[g * kAttnSplit + i];
      if (softcap > 0.0f) v = softcap * tanhf(v / softcap);
      if (p0 + i < first) v = -INFINITY;  // the chunk holding `first` has a visible position
      sc[g * kAttnSplit + i] = v;
      m = fmaxf(m, v);
    }
    m = warp_max(m);
    float l = 0.0f;
    for (int i = lane; i < np; i += 32) {
      const float e = expf(sc[g * kAttnSplit + i] - m);
      sc[g * kAttnSplit + i] = e;
      l += e;
    }
    l = warp_sum(l);
    if (lane == 0) ml[2 * g] = m, ml[2 * g + 1] = l;
  }
  __syncthreads();

  // Weighted sum of V: two dimensions per thread.
  for (int d2 = tid; d2 < hd / 2; d2 += blockDim.x) {
    float2 o[kGqaChunk];
#pragma unroll
    for (int g = 0; g < kGqaChunk; ++g) o[g] = make_float2(0.0f, 0.0f);
    const KV* vr = v_cache + int64_t(p0) * kv_dim + int64_t(kvh) * hd + 2 * d2;
    for (int i = 0; i < np; ++i) {
      const float2 vf = load_kv2(vr + i * kv_dim);
#pragma unroll
      for (int g = 0; g < kGqaChunk; ++g)
        if (g < ng) {
          const float p = sc[g * kAttnSplit + i];
          o[g].x = fmaf(p, vf.x, o[g].x);
          o[g].y = fmaf(p, vf.y, o[g].y);
        }
    }
#pragma unroll
    for (int g = 0; g < kGqaChunk; ++g)
      if (g < ng) {
        float* dst = part_o + (int64_t(head0 + g) * n_splits + split) * hd + 2 * d2;
        dst[0] = o[g].x;
        dst[1] = o[g].y;
      }
  }
  if (tid < ng) {
    float* dst = part_ml + (int64_t(head0 + tid) * n_splits + split) * 2;
    dst[0] = ml[2 * tid];
    dst[1] = ml[2 * tid + 1];
  }
}

// One block per query head: out = sum_s e_s * o_s / sum_s e_s * l_s with e_s = exp(m_s - m) over
// the chunks in use. The block finds m and the weights e_s together (cached in shared memory for
// up to kMergeCached chunks, recomputed beyond), then each thread sums its dimensions.
__global__ void __launch_bounds__(kMergeThreads)
    attn_decode_merge_kernel(const float* __restrict__ part_o, const float* __restrict__ part_ml,
                             const int32_t* __restrict__ pos, float* __restrict__ out, int hd,
                             int n_splits, int64_t part_stride, int n_head, int window) {
  pdl_wait();
  {  // token blockIdx.y of a batch
    const int tok = blockIdx.y;
    pos += tok;
    part_o += tok * part_stride;
    part_ml += tok * part_stride;
    out += int64_t(tok) * n_head * hd;
  }
  __shared__ float e_cache[kMergeCached];
  __shared__ float red[kMergeThreads / 32];
  const int h = blockIdx.x, tid = threadIdx.x;
  const int n_used = int(ceil_div(int64_t(*pos) + 1, kAttnSplit));
  // The first chunk the split kernel wrote: the one holding the window's first position.
  const int s0 = window > 0 ? max(0, *pos + 1 - window) / kAttnSplit : 0;
  const float* ml = part_ml + int64_t(h) * n_splits * 2;

  float m = -INFINITY;
  for (int s = s0 + tid; s < n_used; s += kMergeThreads) m = fmaxf(m, ml[2 * s]);
  m = warp_max(m);
  if ((tid & 31) == 0) red[tid >> 5] = m;
  __syncthreads();
  m = red[0];
#pragma unroll
  for (int w = 1; w < kMergeThreads / 32; ++w) m = fmaxf(m, red[w]);
  float l = 0.0f;
  for (int s = s0 + tid; s < n_used; s += kMergeThreads) {
    const float e = expf(ml[2 * s] - m);
    if (s < kMergeCached) e_cache[s] = e;
    l += e * ml[2 * s + 1];
  }
  l = block_sum(l, red);  // its first barrier also publishes e_cache
  const float inv_l = 1.0f / l;
  for (int d = tid; d < hd; d += kMergeThreads) {
    float o = 0.0f;
    for (int s = s0; s < n_used; ++s) {
      const float e = s < kMergeCached ? e_cache[s] : expf(ml[2 * s] - m);
      o = fmaf(e, part_o[(int64_t(h) * n_splits + s) * hd + d], o);
    }
    out[int64_t(h) * hd + d] = o * inv_l;
  }
}

// ---- prefill ------------------------------------------------------------------------------

constexpr int kBQ = 32, kBK = 64, kPrefillThreads = 128;

size_t prefill_smem_floats(int hd) {
  const int ld = hd + 4;
  return size_t(kBQ) * ld + size_t(kBK) * ld + size_t(kBK) * hd + size_t(kBQ) * (kBK + 1);
}

// Thread layout: 4 threads per query row (row = tid/4, sub = tid%4). For scores, thread sub takes
// keys sub, sub+4, ...; for the output it owns the float4 chunks sub, sub+4, ... of the head.
template <int HD_MAX, typename KV>
__global__ void __launch_bounds__(kPrefillThreads)
    attn_prefill_kernel(const float* __restrict__ q, const KV* __restrict__ k_cache,
                        const KV* __restrict__ v_cache, float* __restrict__ out, int n_tok,
                        const int32_t* __restrict__ pos0p, int n_head, int n_head_kv, int hd,
                        float scale, float softcap, int window) {
  extern __shared__ float4 smem4[];
  float* smem = reinterpret_cast<float*>(smem4);
  const int ld = hd + 4;  // row stride of Qs and Ks: keeps float4 alignment, spreads banks
  float* Qs = smem;
  float* Ks = Qs + kBQ * ld;
  float* Vs = Ks + kBK * ld;
  float* Ps = Vs + kBK * hd;
  constexpr int kPld = kBK + 1;
  constexpr int kChunks = HD_MAX / 16;  // float4 chunks per thread

  const int tid = threadIdx.x, row = tid >> 2, sub = tid & 3;
  const int h = blockIdx.y, kvh = h / (n_head / n_head_kv);
  const int q0 = blockIdx.x * kBQ;
  const int pos0 = *pos0p;
  const int64_t q_stride = int64_t(n_head) * hd, kv_dim = int64_t(n_head_kv) * hd;

  for (int i = tid; i < kBQ * hd; i += kPrefillThreads) {
    const int r = i / hd, d = i % hd;
    Qs[r * ld + d] =
        q0 + r < n_tok ? q[int64_t(q0 + r) * q_stride + int64_t(h) * hd + d] * scale : 0.0f;
  }
  const int qpos = pos0 + min(q0 + row, n_tok - 1);
  const int k_end = pos0 + min(q0 + kBQ, n_tok);  // keys [0, k_end) are visible to this tile

  // The first key tile any query of the block sees (its first query is at pos0 + q0).
  const int kt_begin = window > 0 ? max(0, pos0 + q0 + 1 - window) / kBK * kBK : 0;

  float m = -INFINITY, l = 0.0f;
  float4 acc[kChunks];
#pragma unroll
  for (int j = 0; j < kChunks; ++j) acc[j] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);

  for (int kt = kt_begin; kt < k_end; kt += kBK) {
    __syncthreads();  // the previous tile is no longer read
    for (int i = tid; i < kBK * (hd / 2); i += kPrefillThreads) {
      const int kk = i / (hd / 2), d = 2 * (i % (hd / 2));
      float2 kf = make_float2(0.0f, 0.0f), vf = kf;
      if (kt + kk < k_end) {
        const int64_t off = int64_t(kt + kk) * kv_dim + int64_t(kvh) * hd + d;
        kf = load_kv2(k_cache + off);
        vf = load_kv2(v_cache + off);
      }
      Ks[kk * ld + d] = kf.x, Ks[kk * ld + d + 1] = kf.y;
      Vs[kk * hd + d] = vf.x, Vs[kk * hd + d + 1] = vf.y;
    }
    __syncthreads();

    float s[kBK / 4];
#pragma unroll
    for (int i = 0; i < kBK / 4; ++i) s[i] = 0.0f;
    for (int d = 0; d < hd; d += 4) {
      const float4 qv = *reinterpret_cast<const float4*>(Qs + row * ld + d);
#pragma unroll
      for (int i = 0; i < kBK / 4; ++i) {
        const float4 kv = *reinterpret_cast<const float4*>(Ks + (sub + 4 * i) * ld + d);
        s[i] = fmaf(qv.x, kv.x, fmaf(qv.y, kv.y, fmaf(qv.z, kv.z, fmaf(qv.w, kv.w, s[i]))));
      }
    }
    float tmax = -INFINITY;
#pragma unroll
    for (int i = 0; i < kBK / 4; ++i) {
      if (softcap > 0.0f) s[i] = softcap * tanhf(s[i] / softcap);
      const int kpos = kt + sub + 4 * i;
      if (kpos > qpos || kpos >= k_end || (window > 0 && kpos <= qpos - window)) s[i] = -INFINITY;
      tmax = fmaxf(tmax, s[i]);
    }
    tmax = fmaxf(tmax, __shfl_xor_sync(0xffffffffu, tmax, 1));
    tmax = fmaxf(tmax, __shfl_xor_sync(0xffffffffu, tmax, 2));
    // Without a window m_new is finite (key 0 is in the first tile and visible to all); with one,
    // a row may see nothing of a tile yet: exponents against 0 then give 0 (never NaN).
    const float m_new = fmaxf(m, tmax);
    const float m_ref = m_new == -INFINITY ? 0.0f : m_new;
    const float alpha = expf(m - m_ref);
    float lsum = 0.0f;
#pragma unroll
    for (int i = 0; i < kBK / 4; ++i) {
      const float p = expf(s[i] - m_ref);
      Ps[row * kPld + sub + 4 * i] = p;
      lsum += p;
    }
    l = l * alpha + lsum;
    m = m_new;
    __syncwarp();  // a row's 4 threads are in the same warp
#pragma unroll
    for (int j = 0; j < kChunks; ++j) {
      acc[j].x *= alpha, acc[j].y *= alpha, acc[j].z *= alpha, acc[j].w *= alpha;
    }
    const int kk_end = min(kBK, k_end - kt);
    for (int kk = 0; kk < kk_end; ++kk) {
      const float p = Ps[row * kPld + kk];
#pragma unroll
      for (int j = 0; j < kChunks; ++j) {
        const int c = sub + 4 * j;
        if (4 * c < hd) {
          const float4 vv = *reinterpret_cast<const float4*>(Vs + kk * hd + 4 * c);
          acc[j].x = fmaf(p, vv.x, acc[j].x);
          acc[j].y = fmaf(p, vv.y, acc[j].y);
          acc[j].z = fmaf(p, vv.z, acc[j].z);
          acc[j].w = fmaf(p, vv.w, acc[j].w);
        }
      }
    }
    __syncwarp();  // Ps is rewritten by the next tile
  }

  l += __shfl_xor_sync(0xffffffffu, l, 1);
  l += __shfl_xor_sync(0xffffffffu, l, 2);
  if (q0 + row < n_tok) {
    float* dst = out + int64_t(q0 + row) * q_stride + int64_t(h) * hd;
    const float inv = 1.0f / l;
#pragma unroll
    for (int j = 0; j < kChunks; ++j) {
      const int c = sub + 4 * j;
      if (4 * c < hd)
        *reinterpret_cast<float4*>(dst + 4 * c) =
            make_float4(acc[j].x * inv, acc[j].y * inv, acc[j].z * inv, acc[j].w * inv);
    }
  }
}

template <int HD_MAX, typename KV>
void launch_prefill(const float* q, const KV* kc, const KV* vc, float* out, int64_t n_tok,
                    const int32_t* pos0, const AttentionParams& p, cudaStream_t stream) {
  const size_t smem = prefill_smem_floats(p.head_dim) * sizeof(float);
  CUDA_CHECK(cudaFuncSetAttribute(attn_prefill_kernel<HD_MAX, KV>,
                                  cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  const dim3 grid(unsigned(ceil_div(n_tok, kBQ)), unsigned(p.n_head));
  attn_prefill_kernel<HD_MAX, KV><<<grid, kPrefillThreads, smem, stream>>>(
      q, kc, vc, out, int(n_tok), pos0, p.n_head, p.n_head_kv, p.head_dim, p.scale, p.softcap,
      p.window);
  CUDA_CHECK_LAUNCH("attn_prefill_kernel");
}

void check_params(const AttentionParams& p, const char* op) {
  if (p.n_head <= 0 || p.n_head_kv <= 0 || p.n_head % p.n_head_kv != 0 || p.head_dim <= 0 ||
      p.head_dim % 4 != 0 || p.head_dim > 256)
    throw Error(std::string("cuda ") + op + ": unsupported heads " + std::to_string(p.n_head) +
                "/" + std::to_string(p.n_head_kv) + " of size " + std::to_string(p.head_dim) +
                " (head size must be a multiple of 4, at most 256)");
}

}  // namespace

size_t attention_decode_scratch_floats(int max_ctx, const AttentionParams& p) {
  return size_t(p.n_head) * size_t(n_splits_for(max_ctx)) * size_t(p.head_dim + 2);
}

namespace {

void launch_decode(const float* q, const void* k_cache, const void* v_cache, KvType kv, float* out,
                   float* partials, size_t part_stride, int64_t n_tok, const int32_t* pos,
                   const int32_t* tok_seq, int64_t seq_rows, int max_ctx, const AttentionParams& p,
                   void* stream_v) {
  check_params(p, "attention_decode");
  if (n_tok <= 0) return;
  cudaStream_t stream = as_stream(stream_v);
  const int n_splits = n_splits_for(max_ctx);
  const int gqa = p.n_head / p.n_head_kv;
  const int n_gchunk = int(ceil_div(gqa, kGqaChunk));
  float* part_o = partials;
  float* part_ml = partials + size_t(p.n_head) * n_splits * p.head_dim;
  const size_t smem =
      (size_t(kGqaChunk) * p.head_dim + 2 * kGqaChunk * kAttnSplit + 2 * kGqaChunk) * sizeof(float);
  const dim3 grid(unsigned(p.n_head_kv * n_gchunk), unsigned(n_splits), unsigned(n_tok));
  auto launch = [&](const auto* kc, const auto* vc) {
    using KV = std::remove_cv_t<std::remove_pointer_t<decltype(kc)>>;
    launch_pdl("attn_decode_split_kernel", attn_decode_split_kernel<KV>, grid, kAttnThreads, smem,
               stream, q, kc, vc, part_o, part_ml, pos, tok_seq, seq_rows, int64_t(part_stride),
               p.n_head, p.n_head_kv, p.head_dim, p.scale, n_splits, n_gchunk, p.softcap, p.window);
  };
  if (kv == KvType::F16)
    launch(static_cast<const __half*>(k_cache), static_cast<const __half*>(v_cache));
  else
    launch(static_cast<const float*>(k_cache), static_cast<const float*>(v_cache));
  launch_pdl("attn_decode_merge_kernel", attn_decode_merge_kernel,
             dim3(unsigned(p.n_head), unsigned(n_tok)), kMergeThreads, 0, stream, part_o, part_ml,
             pos, out, p.head_dim, n_splits, int64_t(part_stride), p.n_head, p.window);
}

}  // namespace

void attention_decode(const float* q, const void* k_cache, const void* v_cache, KvType kv,
                      float* out, float* partials, const int32_t* pos, int max_ctx,
                      const AttentionParams& p, void* stream) {
  launch_decode(q, k_cache, v_cache, kv, out, partials, 0, 1, pos, nullptr, 0, max_ctx, p, stream);
}

// The partials of one token are laid out for max_ctx = the split count of this call, which is at
// most the per-token stride the caller sized for its cache.
void attention_decode_rows(const float* q, const void* k_cache, const void* v_cache, KvType kv,
                           float* out, float* partials, size_t partials_per_token, int64_t n_tok,
                           const TokenRows& rows, int max_ctx, const AttentionParams& p,
                           void* stream) {
  if (!rows.pos || !rows.seq)
    throw Error("cuda attention: token rows without positions or sequences");
  if (attention_decode_scratch_floats(max_ctx, p) > partials_per_token)
    throw Error("cuda attention: " + std::to_string(max_ctx) +
                " positions need more partials than the caller holds per token");
  launch_decode(q, k_cache, v_cache, kv, out, partials, partials_per_token, n_tok, rows.pos,
                rows.seq, rows.seq_rows, max_ctx, p, stream);
}

void attention_prefill(const float* q, const void* k_cache, const void* v_cache, KvType kv,
                       float* out, int64_t n_tok, const int32_t* pos0, const AttentionParams& p,
                       void* stream_v) {
  check_params(p, "attention_prefill");
  if (n_tok <= 0) return;
  if (attention_prefill_uses_flash(kv, p)) {
    attention_prefill_flash(q, k_cache, v_cache, out, n_tok, pos0, p, stream_v);
    return;
  }
  cudaStream_t stream = as_stream(stream_v);
  auto by_head_size = [&](const auto* kc, const auto* vc) {
    if (p.head_dim <= 64)
      launch_prefill<64>(q, kc, vc, out, n_tok, pos0, p, stream);
    else if (p.head_dim <= 128)
      launch_prefill<128>(q, kc, vc, out, n_tok, pos0, p, stream);
    else
      launch_prefill<256>(q, kc, vc, out, n_tok, pos0, p, stream);
  };
  if (kv == KvType::F16)
    by_head_size(static_cast<const __half*>(k_cache), static_cast<const __half*>(v_cache));
  else
    by_head_size(static_cast<const float*>(k_cache), static_cast<const float*>(v_cache));
}

}  // namespace lockstep::cuda_ops
