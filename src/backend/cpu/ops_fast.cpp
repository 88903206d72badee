#include "backend/cpu/ops_fast.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "quant/fp16.h"
#include "quant/vec_dot.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
// GCC 12's AVX-512 headers trip -Wuninitialized on their own _mm512_undefined_*() idiom.
#pragma GCC diagnostic ignored "-Wuninitialized"
#if !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>
#define LS_FAST_X86 1
#define LS_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")))
#define LS_AVX2 __attribute__((target("avx2,fma,f16c")))
#else
#define LS_FAST_X86 0
#endif

namespace lockstep::cpu_fast {

namespace {

// exp(x) = 2^n * exp(r), n = round(x / ln 2), r = x - n ln 2 in [-ln2/2, ln2/2] (ln 2 split in a
// part exact in float and a correction), exp(r) by a degree-7 polynomial whose coefficients are
// the classic Cephes expf minimax fit. x is clamped to [kExpLo, kExpHi] so that 2^n stays a
// normal float.
constexpr float kExpHi = 88.3762626647949f;
constexpr float kExpLo = -87.3365447504019f;
constexpr float kLog2e = 1.44269504088896341f;
constexpr float kLn2Hi = 0.693359375f;
constexpr float kLn2Lo = -2.12194440e-4f;
constexpr float kP0 = 1.9875691500e-4f;
constexpr float kP1 = 1.3981999507e-3f;
constexpr float kP2 = 8.3334519073e-3f;
constexpr float kP3 = 4.1665795894e-2f;
constexpr float kP4 = 1.6666665459e-1f;
constexpr float kP5 = 5.0000001201e-1f;

float exp_poly(float x) {
  if (std::isnan(x)) return x;
  x = std::clamp(x, kExpLo, kExpHi);
  const float n = std::nearbyint(x * kLog2e);
  float r = std::fma(n, -kLn2Hi, x);
  r = std::fma(n, -kLn2Lo, r);
  float y = kP0;
  y = std::fma(y, r, kP1);
  y = std::fma(y, r, kP2);
  y = std::fma(y, r, kP3);
  y = std::fma(y, r, kP4);
  y = std::fma(y, r, kP5);
  y = std::fma(y, r * r, r) + 1.0f;
  return y * fp32_from_bits(uint32_t(int32_t(n) + 127) << 23);
}

void attention_scalar(float* out, const float* q, const uint16_t* k, const uint16_t* v,
                      int64_t n_kv, int64_t hd, int64_t stride, float* scores,
                      const cpu::AttentionScoring& sc) {
  const float scale = sc.scale_for(hd);
  float max_score = -std::numeric_limits<float>::infinity();
  for (int64_t j = 0; j < n_kv; ++j) {
    const uint16_t* kj = k + j * stride;
    float s = 0;
    for (int64_t d = 0; d < hd; ++d) s += q[d] * fp16_to_fp32(kj[d]);
    scores[j] = sc.cap(s * scale);
    max_score = std::max(max_score, scores[j]);
  }
  float sum = 0;
  for (int64_t j = 0; j < n_kv; ++j) {
    scores[j] = exp_poly(scores[j] - max_score);
    sum += scores[j];
  }
  const float inv_sum = 1.0f / sum;
  std::fill(out, out + hd, 0.0f);
  for (int64_t j = 0; j < n_kv; ++j) {
    const float w = scores[j] * inv_sum;
    const uint16_t* vj = v + j * stride;
    for (int64_t d = 0; d < hd; ++d) out[d] += w * fp16_to_fp32(vj[d]);
  }
}

void swiglu_scalar(float* gate, const float* up, int64_t n) {
  for (int64_t i = 0; i < n; ++i) gate[i] = gate[i] / (1.0f + exp_poly(-gate[i])) * up[i];
}

// gelu_tanh(x) = x * (1 + tanh(u)) / 2 with u = sqrt(2/pi) (x + 0.044715 x^3), and
// (1 + tanh(u)) / 2 = 1 / (1 + exp(-2u)): the SiLU form with -2u in place of -x.
constexpr float kGeluA = 0.044715f;
constexpr float kGeluMinus2C = -1.5957691216057308f;  // -2 sqrt(2/pi)

void geglu_scalar(float* gate, const float* up, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float x = gate[i];
    const float e = exp_poly(kGeluMinus2C * (x + kGeluA * x * x * x));
    gate[i] = x / (1.0f + e) * up[i];
  }
}

#if LS_FAST_X86

// ---- AVX-512 ------------------------------------------------------------------------------------

LS_AVX512 inline __m512 exp512(__m512 x) {
  // max/min return their second operand when one is NaN: a NaN input stays NaN.
  x = _mm512_max_ps(_mm512_set1_ps(kExpLo), x);
  x = _mm512_min_ps(_mm512_set1_ps(kExpHi), x);
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(kLog2e)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(kLn2Hi), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(kLn2Lo), r);
  __m512 y = _mm512_set1_ps(kP0);
  y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(kP1));
  y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(kP2));
  y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(kP3));
  y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(kP4));
  y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(kP5));
  y = _mm512_add_ps(_mm512_fmadd_ps(y, _mm512_mul_ps(r, r), r), _mm512_set1_ps(1.0f));
  const __m512i e =
      _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
  return _mm512_mul_ps(y, _mm512_castsi512_ps(e));
}

LS_AVX512 inline __m512 load_half16(const uint16_t* p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}

// scores[j] = exp(scores[j] - max) for j < n; returns their sum.
LS_AVX512 float softmax_numerators_avx512(float* scores, int64_t n, float max_score) {
  const __m512 m = _mm512_set1_ps(max_score);
  __m512 vsum = _mm512_setzero_ps();
  int64_t j = 0;
  for (; j + 16 <= n; j += 16) {
    const __m512 e = exp512(_mm512_sub_ps(_mm512_loadu_ps(scores + j), m));
    _mm512_storeu_ps(scores + j, e);
    vsum = _mm512_add_ps(vsum, e);
  }
  float sum = _mm512_reduce_add_ps(vsum);
  for (; j < n; ++j) {
    scores[j] = exp_poly(scores[j] - max_score);
    sum += scores[j];
  }
  return sum;
}

// head_dim a multiple of 16, at most 256.
LS_AVX512 void attention_avx512(float* out, const float* q, const uint16_t* k, const uint16_t* v,
                                int64_t n_kv, int64_t hd, int64_t stride, float* scores,
                                const cpu::AttentionScoring& sc) {
  const int64_t nc = hd / 16;
  const float scale = sc.scale_for(hd);
  __m512 qv[16];
  for (int64_t c = 0; c < nc; ++c) qv[c] = _mm512_loadu_ps(q + 16 * c);
  float max_score = -std::numeric_limits<float>::infinity();
  for (int64_t j = 0; j < n_kv; ++j) {
    const uint16_t* kj = k + j * stride;
    __m512 acc = _mm512_mul_ps(qv[0], load_half16(kj));
    for (int64_t c = 1; c < nc; ++c) acc = _mm512_fmadd_ps(qv[c], load_half16(kj + 16 * c), acc);
    const float s = sc.cap(_mm512_reduce_add_ps(acc) * scale);
    scores[j] = s;
    max_score = std::max(max_score, s);
  }
  const float inv_sum = 1.0f / softmax_numerators_avx512(scores, n_kv, max_score);
  __m512 acc[16];
  for (int64_t c = 0; c < nc; ++c) acc[c] = _mm512_setzero_ps();
  for (int64_t j = 0; j < n_kv; ++j) {
    const __m512 w = _mm512_set1_ps(scores[j] * inv_sum);
    const uint16_t* vj = v + j * stride;
    for (int64_t c = 0; c < nc; ++c) acc[c] = _mm512_fmadd_ps(w, load_half16(vj + 16 * c), acc[c]);
  }
  for (int64_t c = 0; c < nc; ++c) _mm512_storeu_ps(out + 16 * c, acc[c]);
}

LS_AVX512 void swiglu_avx512(float* gate, const float* up, int64_t n) {
  const __m512 one = _mm512_set1_ps(1.0f);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 g = _mm512_loadu_ps(gate + i);
    const __m512 e = exp512(_mm512_sub_ps(_mm512_setzero_ps(), g));
    const __m512 silu = _mm512_div_ps(g, _mm512_add_ps(one, e));
    _mm512_storeu_ps(gate + i, _mm512_mul_ps(silu, _mm512_loadu_ps(up + i)));
  }
  swiglu_scalar(gate + i, up + i, n - i);
}

LS_AVX512 void geglu_avx512(float* gate, const float* up, int64_t n) {
  const __m512 one = _mm512_set1_ps(1.0f);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 x = _mm512_loadu_ps(gate + i);
    const __m512 x3 = _mm512_mul_ps(_mm512_mul_ps(x, x), x);
    const __m512 u = _mm512_fmadd_ps(_mm512_set1_ps(kGeluA), x3, x);
    const __m512 e = exp512(_mm512_mul_ps(_mm512_set1_ps(kGeluMinus2C), u));
    const __m512 gelu = _mm512_div_ps(x, _mm512_add_ps(one, e));
    _mm512_storeu_ps(gate + i, _mm512_mul_ps(gelu, _mm512_loadu_ps(up + i)));
  }
  geglu_scalar(gate + i, up + i, n - i);
}

// ---- AVX2 ---------------------------------------------------------------------------------------

LS_AVX2 inline __m256 exp256(__m256 x) {
  x = _mm256_max_ps(_mm256_set1_ps(kExpLo), x);
  x = _mm256_min_ps(_mm256_set1_ps(kExpHi), x);
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(kLog2e)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(kLn2Hi), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(kLn2Lo), r);
  __m256 y = _mm256_set1_ps(kP0);
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(kP1));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(kP2));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(kP3));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(kP4));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(kP5));
  y = _mm256_add_ps(_mm256_fmadd_ps(y, _mm256_mul_ps(r, r), r), _mm256_set1_ps(1.0f));
  const __m256i e =
      _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}

LS_AVX2 inline float hsum256(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

LS_AVX2 inline __m256 load_half8(const uint16_t* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

LS_AVX2 float softmax_numerators_avx2(float* scores, int64_t n, float max_score) {
  const __m256 m = _mm256_set1_ps(max_score);
  __m256 vsum = _mm256_setzero_ps();
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    const __m256 e = exp256(_mm256_sub_ps(_mm256_loadu_ps(scores + j), m));
    _mm256_storeu_ps(scores + j, e);
    vsum = _mm256_add_ps(vsum, e);
  }
  float sum = hsum256(vsum);
  for (; j < n; ++j) {
    scores[j] = exp_poly(scores[j] - max_score);
    sum += scores[j];
  }
  return sum;
}

// head_dim a multiple of 8, at most 128.
LS_AVX2 void attention_avx2(float* out, const float* q, const uint16_t* k, const uint16_t* v,
                            int64_t n_kv, int64_t hd, int64_t stride, float* scores,
                            const cpu::AttentionScoring& sc) {
  const int64_t nc = hd / 8;
  const float scale = sc.scale_for(hd);
  __m256 qv[16];
  for (int64_t c = 0; c < nc; ++c) qv[c] = _mm256_loadu_ps(q + 8 * c);
  float max_score = -std::numeric_limits<float>::infinity();
  for (int64_t j = 0; j < n_kv; ++j) {
    const uint16_t* kj = k + j * stride;
    __m256 acc = _mm256_mul_ps(qv[0], load_half8(kj));
    for (int64_t c = 1; c < nc; ++c) acc = _mm256_fmadd_ps(qv[c], load_half8(kj + 8 * c), acc);
    const float s = sc.cap(hsum256(acc) * scale);
    scores[j] = s;
    max_score = std::max(max_score, s);
  }
  const float inv_sum = 1.0f / softmax_numerators_avx2(scores, n_kv, max_score);
  __m256 acc[16];
  for (int64_t c = 0; c < nc; ++c) acc[c] = _mm256_setzero_ps();
  for (int64_t j = 0; j < n_kv; ++j) {
    const __m256 w = _mm256_set1_ps(scores[j] * inv_sum);
    const uint16_t* vj = v + j * stride;
    for (int64_t c = 0; c < nc; ++c) acc[c] = _mm256_fmadd_ps(w, load_half8(vj + 8 * c), acc[c]);
  }
  for (int64_t c = 0; c < nc; ++c) _mm256_storeu_ps(out + 8 * c, acc[c]);
}

LS_AVX2 void swiglu_avx2(float* gate, const float* up, int64_t n) {
  const __m256 one = _mm256_set1_ps(1.0f);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 g = _mm256_loadu_ps(gate + i);
    const __m256 e = exp256(_mm256_sub_ps(_mm256_setzero_ps(), g));
    const __m256 silu = _mm256_div_ps(g, _mm256_add_ps(one, e));
    _mm256_storeu_ps(gate + i, _mm256_mul_ps(silu, _mm256_loadu_ps(up + i)));
  }
  swiglu_scalar(gate + i, up + i, n - i);
}

LS_AVX2 void geglu_avx2(float* gate, const float* up, int64_t n) {
  const __m256 one = _mm256_set1_ps(1.0f);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 x = _mm256_loadu_ps(gate + i);
    const __m256 x3 = _mm256_mul_ps(_mm256_mul_ps(x, x), x);
    const __m256 u = _mm256_fmadd_ps(_mm256_set1_ps(kGeluA), x3, x);
    const __m256 e = exp256(_mm256_mul_ps(_mm256_set1_ps(kGeluMinus2C), u));
    const __m256 gelu = _mm256_div_ps(x, _mm256_add_ps(one, e));
    _mm256_storeu_ps(gate + i, _mm256_mul_ps(gelu, _mm256_loadu_ps(up + i)));
  }
  geglu_scalar(gate + i, up + i, n - i);
}

LS_AVX512 void exp_avx512(float* x, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(x + i, exp512(_mm512_loadu_ps(x + i)));
  for (; i < n; ++i) x[i] = exp_poly(x[i]);
}

LS_AVX2 void exp_avx2(float* x, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, exp256(_mm256_loadu_ps(x + i)));
  for (; i < n; ++i) x[i] = exp_poly(x[i]);
}

#endif  // LS_FAST_X86

}  // namespace

void attention_head_f16(float* out, const float* q, const uint16_t* k, const uint16_t* v,
                        int64_t n_kv, int64_t head_dim, int64_t kv_stride, float* scores,
                        const cpu::AttentionScoring& scoring) {
#if LS_FAST_X86
  const Isa isa = active_isa();
  if (isa == Isa::Avx512 && head_dim % 16 == 0 && head_dim <= 256)
    return attention_avx512(out, q, k, v, n_kv, head_dim, kv_stride, scores, scoring);
  if (isa != Isa::Scalar && head_dim % 8 == 0 && head_dim <= 128)
    return attention_avx2(out, q, k, v, n_kv, head_dim, kv_stride, scores, scoring);
#endif
  attention_scalar(out, q, k, v, n_kv, head_dim, kv_stride, scores, scoring);
}

void exp_inplace(float* x, int64_t n) {
#if LS_FAST_X86
  switch (active_isa()) {
    case Isa::Avx512:
      return exp_avx512(x, n);
    case Isa::Avx2:
      return exp_avx2(x, n);
    case Isa::Scalar:
      break;
  }
#endif
  for (int64_t i = 0; i < n; ++i) x[i] = exp_poly(x[i]);
}

void swiglu(float* gate, const float* up, int64_t n) {
#if LS_FAST_X86
  switch (active_isa()) {
    case Isa::Avx512:
      return swiglu_avx512(gate, up, n);
    case Isa::Avx2:
      return swiglu_avx2(gate, up, n);
    case Isa::Scalar:
      break;
  }
#endif
  swiglu_scalar(gate, up, n);
}

void geglu(float* gate, const float* up, int64_t n) {
#if LS_FAST_X86
  switch (active_isa()) {
    case Isa::Avx512:
      return geglu_avx512(gate, up, n);
    case Isa::Avx2:
      return geglu_avx2(gate, up, n);
    case Isa::Scalar:
      break;
  }
#endif
  geglu_scalar(gate, up, n);
}

}  // namespace lockstep::cpu_fast
