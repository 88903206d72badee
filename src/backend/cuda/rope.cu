// Rotary position embedding, fused with the write of K and V into the cache (F16 or F32).
// Angles are computed in float64 (theta = pos * freq_scale * base^(-2i/rope_dim), sin and cos in
// float64, then rounded), so the GPU agrees with a float64 reference to float32 rounding even at
// positions in the tens of thousands; the rotation itself is done in float32 as ggml does it.
// Llama 3.1's frequency factors and YaRN change only the angles (and YaRN's magnitude), computed
// as the CPU reference's rope() computes them (backend/cpu/ops_ref.cpp); without either, the
// plain expression above runs unchanged.
#include <cmath>
#include <type_traits>
#include <vector>

#include "backend/cuda/cuda_common.cuh"
#include "backend/cuda/cuda_ops.h"

namespace lockstep::cuda_ops {

using namespace lockstep::cuda;

namespace {

// A thread block per (token, group of kRopeHeads heads of Q then K): it computes the rope_dim/2
// angles of its position once into shared memory, so its heads share them, then rotates its
// heads' pairs; the blocks of K heads also store the head's V row and K's unrotated tail in the
// cache. Several blocks per token keep the GPU busy at decode, where there is one token.
constexpr int kRopeThreads = 128, kRopeHeads = 4, kMaxRopeHalf = 128;

template <typename KV>
__global__ void __launch_bounds__(kRopeThreads)
    rope_store_kernel(float* __restrict__ q, const float* __restrict__ k,
                      const float* __restrict__ v, KV* __restrict__ k_cache,
                      KV* __restrict__ v_cache, const int32_t* __restrict__ pos0,
                      const int32_t* __restrict__ tok_pos, const int32_t* __restrict__ tok_seq,
                      int64_t seq_rows, int n_head, int n_head_kv, int hd, int rope_dim, bool neox,
                      float freq_scale, const double* __restrict__ inv_freq,
                      const float* __restrict__ freq_factors, bool yarn, double yarn_low,
                      double yarn_high, double mscale) {
  pdl_wait();
  __shared__ float2 cos_sin[kMaxRopeHalf];
  const int tok = blockIdx.x;
  // Consecutive positions from *pos0, or each token's own position and sequence (TokenRows).
  const int64_t pos = tok_pos ? int64_t(tok_pos[tok]) : int64_t(*pos0) + tok;
  const int64_t cache_row = (tok_seq ? int64_t(tok_seq[tok]) * seq_rows : 0) + pos;
  const int half_dim = rope_dim / 2;
  const int q_dim = n_head * hd, kv_dim = n_head_kv * hd;
  float* qr = q + int64_t(tok) * q_dim;
  const float* kr = k + int64_t(tok) * kv_dim;
  const float* vr = v + int64_t(tok) * kv_dim;
  KV* kc = k_cache + cache_row * kv_dim;
  KV* vc = v_cache + cache_row * kv_dim;

  for (int i = threadIdx.x; i < half_dim; i += blockDim.x) {
    double s, c;
    if (!freq_factors && !yarn) {
      sincos(double(pos) * double(freq_scale) * inv_freq[i], &s, &c);
      cos_sin[i] = make_float2(float(c), float(s));
      continue;
    }
    double theta_extrap = double(pos) * inv_freq[i];
    if (freq_factors) theta_extrap /= double(freq_factors[i]);
    double theta = theta_extrap * double(freq_scale);
    if (yarn) {
      const double ramp = (double(i) - yarn_low) / fmax(0.001, yarn_high - yarn_low);
      const double mix = 1.0 - fmin(fmax(ramp, 0.0), 1.0);
      theta = theta * (1.0 - mix) + theta_extrap * mix;
    }
    sincos(theta, &s, &c);
    cos_sin[i] = make_float2(float(c * mscale), float(s * mscale));
  }
  __syncthreads();

  const int h0 = blockIdx.y * kRopeHeads, h1 = min(h0 + kRopeHeads, n_head + n_head_kv);
  for (int idx = threadIdx.x; idx < (h1 - h0) * half_dim; idx += blockDim.x) {
    const int i = idx % half_dim, h = h0 + idx / half_dim;
    const float cs = cos_sin[i].x, sn = cos_sin[i].y;
    const int a = neox ? i : 2 * i, b = neox ? i + half_dim : 2 * i + 1;
    if (h < n_head) {
      float* x = qr + h * hd;
      const float x0 = x[a], x1 = x[b];
      x[a] = x0 * cs - x1 * sn;
      x[b] = x0 * sn + x1 * cs;
    } else {
      const int kh = h - n_head;
      const float x0 = kr[kh * hd + a], x1 = kr[kh * hd + b];
      store_kv(kc + kh * hd + a, x0 * cs - x1 * sn);
      store_kv(kc + kh * hd + b, x0 * sn + x1 * cs);
    }
  }
  for (int h = max(h0, n_head); h < h1; ++h) {
    const int kh = h - n_head;
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
      if (d >= rope_dim) store_kv(kc + kh * hd + d, kr[kh * hd + d]);
      store_kv(vc + kh * hd + d, vr[kh * hd + d]);
    }
  }
}

}  // namespace

double* make_rope_table(float freq_base, int rope_dim) {
  std::vector<double> t(size_t(rope_dim / 2));
  for (size_t i = 0; i < t.size(); ++i)
    t[i] = std::pow(double(freq_base), -2.0 * double(i) / double(rope_dim));
  auto* d = static_cast<double*>(device_alloc(t.size() * sizeof(double)));
  copy_to_device(d, t.data(), t.size() * sizeof(double));
  return d;
}

namespace {

void launch_rope(float* q, const float* k, const float* v, void* k_cache, void* v_cache, KvType kv,
                 int64_t n_tok, const int32_t* pos0, const TokenRows* rows, const RopeParams& p,
                 void* stream) {
  if (n_tok <= 0) return;
  if (p.head_dim % 2 != 0 || p.rope_dim % 2 != 0 || p.rope_dim > p.head_dim ||
      p.rope_dim / 2 > kMaxRopeHalf || !p.inv_freq)
    throw Error("cuda rope: unsupported head_dim " + std::to_string(p.head_dim) + " / rope_dim " +
                std::to_string(p.rope_dim));
  const dim3 grid(unsigned(n_tok), unsigned(ceil_div(p.n_head + p.n_head_kv, kRopeHeads)));
  const int32_t* tok_pos = rows ? rows->pos : nullptr;
  const int32_t* tok_seq = rows ? rows->seq : nullptr;
  const int64_t seq_rows = rows ? rows->seq_rows : 0;
  auto launch = [&](auto* kc, auto* vc) {
    using KV = std::remove_pointer_t<decltype(kc)>;
    launch_pdl("rope_store_kernel", rope_store_kernel<KV>, grid, kRopeThreads, 0, as_stream(stream),
               q, k, v, kc, vc, pos0, tok_pos, tok_seq, seq_rows, p.n_head, p.n_head_kv, p.head_dim,
               p.rope_dim, p.type == RopeType::Neox, p.freq_scale, p.inv_freq, p.freq_factors,
               p.yarn, p.yarn_low, p.yarn_high, p.mscale);
  };
  if (kv == KvType::F16)
    launch(static_cast<__half*>(k_cache), static_cast<__half*>(v_cache));
  else
    launch(static_cast<float*>(k_cache), static_cast<float*>(v_cache));
}

}  // namespace

void rope_and_store_kv(float* q, const float* k, const float* v, void* k_cache, void* v_cache,
                       KvType kv, int64_t n_tok, const int32_t* pos0, const RopeParams& p,
                       void* stream) {
  launch_rope(q, k, v, k_cache, v_cache, kv, n_tok, pos0, nullptr, p, stream);
}

void rope_and_store_kv_rows(float* q, const float* k, const float* v, void* k_cache, void* v_cache,
                            KvType kv, int64_t n_tok, const TokenRows& rows, const RopeParams& p,
                            void* stream) {
  if (!rows.pos || !rows.seq) throw Error("cuda rope: token rows without positions or sequences");
  launch_rope(q, k, v, k_cache, v_cache, kv, n_tok, nullptr, &rows, p, stream);
}

}  // namespace lockstep::cuda_ops
