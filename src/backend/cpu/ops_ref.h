// The math stages of the reference forward pass, one function per stage, named as the papers name
// them (RMSNorm, RoPE, scaled dot-product attention, SwiGLU). Plain loops over float32: this is
// the path the parity gate trusts, so each function is written to be checked, not to be clever.
//
// Numerics, chosen once for all stages:
//  * Activations are float32 and never quantized.
//  * Long dot products (matmul, attention scores) accumulate in float into 16 interleaved partial
//    sums (element i goes to sum i % 16), reduced by a fixed pairwise tree (lane_tiles.h). The 16
//    sums are one SIMD vector, so nothing is reassociated: the result does not depend on the
//    thread count, the batch size or which kernel computed it (on one machine; see
//    simd_level.h for FMA). The error bound is about (n/16 + 6) * 2^-24 * sum|a_i b_i|, 16x
//    tighter than one running sum; float64 would halve SIMD throughput for accuracy the parity
//    tolerances do not need.
//  * RMSNorm sums squares in double (cheap: n_embd values per token).
//  * RoPE angles are computed in double, so large positions keep their phase.
//  * Softmax is float with the maximum subtracted before exp.
#pragma once

#include <cstdint>

#include "backend/cpu/attention_scoring.h"
#include "model/hparams.h"

namespace lockstep::cpu_ref {

// sum a[i] * b[i], with the 16-partial-sum scheme above.
float dot(const float* a, const float* b, int64_t n);

// out[i] = x[i] / sqrt(mean(x^2) + eps) * weight[i]. out may alias x.
void rmsnorm(float* out, const float* x, const float* weight, int64_t n, float eps);

struct RopeParams {
  RopeType type = RopeType::Normal;  // Normal: pairs (2i, 2i+1) (llama); Neox: (i, i + rope_dim/2)
  int64_t head_dim = 0;
  int64_t rope_dim = 0;  // leading dimensions of each head that rotate; the rest pass through
  double freq_base = 10000.0;
  double freq_scale = 1.0;  // linear scaling: the position is multiplied by this
  // Llama 3.1+ frequency factors: pair i's frequency is divided by freq_factors[i]
  // (rope_dim / 2 values), or nullptr for none.
  const float* freq_factors = nullptr;
  // YaRN: pair i's angle is theta_interp * (1 - mix_i) + theta_extrap * mix_i, where
  // theta_extrap is the unscaled angle, theta_interp = freq_scale * theta_extrap, and mix_i is 1
  // for i <= yarn_low, 0 for i >= yarn_high, linear between; cos and sin are multiplied by
  // mscale. Off: every pair takes theta_interp, mscale 1.
  bool yarn = false;
  double yarn_low = 0, yarn_high = 0;
  double mscale = 1.0;
};
// Pair i's (cos, sin) at position pos: what rope() turns it by. The Vulkan backend's table is
// made of these, so both backends turn by the same floats.
struct RopeTurn {
  float c, s;
};
RopeTurn rope_turn(const RopeParams& p, int64_t pos, int64_t i);

// The rope of hp's global layers, or (sliding = true) of its sliding-window layers, which may
// have a base of their own (gemma3). freq_factors is left for the caller (they are a tensor).
RopeParams rope_params(const HParams& hp, bool sliding = false);

// Rotates n_heads consecutive heads of x (head_dim floats each) in place for position pos:
// pair i turns by the angle pos * freq_scale * freq_base^(-2i / rope_dim) / freq_factors[i]
// (YaRN: blended with the unscaled angle and the pair scaled by mscale, see RopeParams).
void rope(float* x, int64_t n_heads, int64_t pos, const RopeParams& p);

// One attention head for one query: softmax of the scores of q . k_j (attention_scoring.h: by
// default q . k_j / sqrt(head_dim)) over cache positions j in [0, n_kv), then the weighted sum
// of v_j. Key j starts at k + j * kv_stride (same for v). scores: n_kv floats of scratch.
void attention_head(float* out, const float* q, const float* k, const float* v, int64_t n_kv,
                    int64_t head_dim, int64_t kv_stride, float* scores,
                    const cpu::AttentionScoring& scoring = {});

struct AttentionShape {
  int64_t n_head = 0;
  int64_t n_head_kv =
      0;  // grouped-query attention: query head h reads KV head h / (n_head / n_head_kv)
  int64_t head_dim = 0;
  int64_t kv_stride = 0;  // floats from one cached position to the next (>= n_head_kv * head_dim)
};

// Causal grouped-query attention of one query position over the cached positions [0, n_kv)
// (n_kv = query position + 1): q and out are n_head * head_dim floats; k_cache/v_cache point at
// position 0 of this layer's cache. scores: n_kv floats of scratch.
void attention(float* out, const float* q, const float* k_cache, const float* v_cache, int64_t n_kv,
               const AttentionShape& shape, float* scores);

// silu(x) = x * sigmoid(x).
float silu(float x);
// SwiGLU: gate[i] = silu(gate[i]) * up[i], in place.
void swiglu(float* gate, const float* up, int64_t n);

// GELU in its tanh approximation (what Gemma uses, PyTorch's approximate="tanh"):
// x/2 * (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), computed in double.
float gelu_tanh(float x);
// GeGLU: gate[i] = gelu_tanh(gate[i]) * up[i], in place.
void geglu(float* gate, const float* up, int64_t n);

// x[i] = cap * tanh(x[i] / cap): soft-capping (gemma2's final logits).
void softcap(float* x, int64_t n, float cap);

// x[i] += y[i]: the residual connection.
void residual_add(float* x, const float* y, int64_t n);
// x[i] += bias[i].
void add_bias(float* x, const float* bias, int64_t n);

}  // namespace lockstep::cpu_ref
