#include "backend/cpu/ops_ref.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numbers>

#include "backend/cpu/lane_tiles.h"
#include "backend/cpu/simd_level.h"

namespace lockstep::cpu_ref {

namespace {

float dot_baseline(const float* a, const float* b, int64_t n) {
  float out;
  dot_tile<1, 1>(a, 0, b, 0, n, &out, 0);
  return out;
}

#if LOCKSTEP_X86_KERNELS
LOCKSTEP_TARGET_AVX2 float dot_avx2(const float* a, const float* b, int64_t n) {
  float out;
  dot_tile<1, 1>(a, 0, b, 0, n, &out, 0);
  return out;
}

LOCKSTEP_TARGET_AVX512 float dot_avx512(const float* a, const float* b, int64_t n) {
  float out;
  dot_tile<1, 1>(a, 0, b, 0, n, &out, 0);
  return out;
}
#endif

}  // namespace

float dot(const float* a, const float* b, int64_t n) {
#if LOCKSTEP_X86_KERNELS
  switch (active_simd_level()) {
    case SimdLevel::Avx512:
      return dot_avx512(a, b, n);
    case SimdLevel::Avx2:
      return dot_avx2(a, b, n);
    case SimdLevel::Baseline:
      break;
  }
#endif
  return dot_baseline(a, b, n);
}

void rmsnorm(float* out, const float* x, const float* weight, int64_t n, float eps) {
  double sum_sq = 0;
  for (int64_t i = 0; i < n; ++i) sum_sq += double(x[i]) * double(x[i]);
  const float scale = float(1.0 / std::sqrt(sum_sq / double(n) + double(eps)));
  for (int64_t i = 0; i < n; ++i) out[i] = (x[i] * scale) * weight[i];
}

RopeParams rope_params(const HParams& hp, bool sliding) {
  RopeParams p;
  p.type = hp.rope_type;
  p.head_dim = hp.head_dim;
  p.rope_dim = hp.rope_dim;
  p.freq_base = sliding ? hp.rope_freq_base_swa : hp.rope_freq_base;
  p.freq_scale = sliding ? hp.rope_freq_scale_swa : hp.rope_freq_scale;
  if (hp.rope_yarn && !sliding) {
    // The pair index at which a pair turns `rotations` times over the original context: pair i
    // has wavelength 2 pi base^(2i/d), so i = d ln(ctx / (2 pi rotations)) / (2 ln base). The
    // band is widened to whole pairs and clipped to the rotated ones.
    const double d = double(hp.rope_dim), base = double(hp.rope_freq_base);
    auto pair_turning = [&](double rotations) {
      return d * std::log(double(hp.rope_yarn_orig_ctx) / (2 * std::numbers::pi * rotations)) /
             (2 * std::log(base));
    };
    p.yarn = true;
    p.yarn_low = std::max(0.0, std::floor(pair_turning(hp.rope_yarn_beta_fast)));
    p.yarn_high = std::min(d - 1, std::ceil(pair_turning(hp.rope_yarn_beta_slow)));
    // The YaRN paper's attention temperature, sqrt(1/t) = 0.1 ln(s) + 1, applied to q and k.
    p.mscale = double(hp.rope_attn_factor) * (1 + 0.1 * std::log(1 / double(hp.rope_freq_scale)));
  }
  return p;
}

RopeTurn rope_turn(const RopeParams& p, int64_t pos, int64_t i) {
  double theta_extrap = double(pos) * std::pow(p.freq_base, -2.0 * double(i) / double(p.rope_dim));
  if (p.freq_factors) theta_extrap /= double(p.freq_factors[i]);
  double theta = theta_extrap * p.freq_scale;
  if (p.yarn) {
    const double ramp = (double(i) - p.yarn_low) / std::max(0.001, p.yarn_high - p.yarn_low);
    const double mix = 1 - std::clamp(ramp, 0.0, 1.0);
    theta = theta * (1 - mix) + theta_extrap * mix;
  }
  return {float(std::cos(theta) * p.mscale), float(std::sin(theta) * p.mscale)};
}

void rope(float* x, int64_t n_heads, int64_t pos, const RopeParams& p) {
  const int64_t half = p.rope_dim / 2;
  for (int64_t i = 0; i < half; ++i) {
    const auto [c, s] = rope_turn(p, pos, i);
    const int64_t i0 = p.type == RopeType::Normal ? 2 * i : i;
    const int64_t i1 = p.type == RopeType::Normal ? 2 * i + 1 : i + half;
    for (int64_t h = 0; h < n_heads; ++h) {
      float* head = x + h * p.head_dim;
      const float a = head[i0];
      const float b = head[i1];
      head[i0] = a * c - b * s;
      head[i1] = a * s + b * c;
    }
  }
}

void attention_head(float* out, const float* q, const float* k, const float* v, int64_t n_kv,
                    int64_t head_dim, int64_t kv_stride, float* scores,
                    const cpu::AttentionScoring& scoring) {
  const float scale = scoring.scale_for(head_dim);
  float max_score = -std::numeric_limits<float>::infinity();
  for (int64_t j = 0; j < n_kv; ++j) {
    scores[j] = scoring.cap(dot(q, k + j * kv_stride, head_dim) * scale);
    max_score = std::max(max_score, scores[j]);
  }
  // The sum of exponentials runs over up to n_ctx terms; double keeps it exact enough for free.
  double sum = 0;
  for (int64_t j = 0; j < n_kv; ++j) {
    scores[j] = std::exp(scores[j] - max_score);
    sum += scores[j];
  }
  const float inv_sum = float(1.0 / sum);
  std::fill(out, out + head_dim, 0.0f);
  for (int64_t j = 0; j < n_kv; ++j) {
    const float weight = scores[j] * inv_sum;
    const float* vj = v + j * kv_stride;
    for (int64_t d = 0; d < head_dim; ++d) out[d] += weight * vj[d];
  }
}

void attention(float* out, const float* q, const float* k_cache, const float* v_cache, int64_t n_kv,
               const AttentionShape& shape, float* scores) {
  const int64_t group = shape.n_head / shape.n_head_kv;
  for (int64_t h = 0; h < shape.n_head; ++h) {
    const int64_t kv_offset = (h / group) * shape.head_dim;
    attention_head(out + h * shape.head_dim, q + h * shape.head_dim, k_cache + kv_offset,
                   v_cache + kv_offset, n_kv, shape.head_dim, shape.kv_stride, scores);
  }
}

float silu(float x) {
  return x / (1.0f + std::exp(-x));
}

void swiglu(float* gate, const float* up, int64_t n) {
  for (int64_t i = 0; i < n; ++i) gate[i] = silu(gate[i]) * up[i];
}

float gelu_tanh(float x) {
  const double v = x;
  const double c = std::sqrt(2.0 / 3.14159265358979323846);
  return float(0.5 * v * (1.0 + std::tanh(c * (v + 0.044715 * v * v * v))));
}

void geglu(float* gate, const float* up, int64_t n) {
  for (int64_t i = 0; i < n; ++i) gate[i] = gelu_tanh(gate[i]) * up[i];
}

void softcap(float* x, int64_t n, float cap) {
  for (int64_t i = 0; i < n; ++i) x[i] = float(double(cap) * std::tanh(double(x[i]) / cap));
}

void residual_add(float* x, const float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] += y[i];
}

void add_bias(float* x, const float* bias, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] += bias[i];
}

}  // namespace lockstep::cpu_ref
