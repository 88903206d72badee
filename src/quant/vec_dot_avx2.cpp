// AVX2 (+FMA, F16C) kernels of vec_dot.h: the shared ones of vec_dot_impl.inc and the K-type
// kernels, which only this file has (under AVX-512, Q2_K, Q3_K and Q5_K use them too). Every
// function carries a target attribute, so the rest of the build stays portable; they run only
// when the CPU reports AVX2, FMA and F16C.
#include "quant/tensor_type.h"
#include "quant/vec_dot_internal.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))

#include <immintrin.h>

#include <cstring>
#include <type_traits>

#include "quant/blocks.h"

#define LS_TARGET __attribute__((target("avx2,fma,f16c")))
#define LS_AVX512BW 0

namespace lockstep::quant {
namespace {

#include "quant/x86_bytes.inc"

struct FloatVec {  // 8 floats
  using V = __m256;
  static constexpr int kLanes = 8;
  static LS_TARGET V zero() { return _mm256_setzero_ps(); }
  static LS_TARGET V add(V x, V y) { return _mm256_add_ps(x, y); }
  static LS_TARGET V fmadd(V x, V y, V acc) { return _mm256_fmadd_ps(x, y, acc); }
  static LS_TARGET float sum(V v) { return hsum(v); }
  static LS_TARGET V f32(const void* p) { return _mm256_loadu_ps(static_cast<const float*>(p)); }
  static LS_TARGET V f16(const void* p) { return _mm256_cvtph_ps(load128(p)); }
  static LS_TARGET V bf16(const void* p) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(load128(p)), 16));
  }
};

#include "quant/vec_dot_impl.inc"

// Mask for _mm256_shuffle_epi8 that broadcasts int16 element `lo` of each 128-bit lane to the
// whole low lane and element `hi` to the whole high lane.
LS_TARGET inline __m256i pick16(int lo, int hi) {
  const int16_t l = int16_t((2 * lo) | ((2 * lo + 1) << 8));
  const int16_t h = int16_t((2 * hi) | ((2 * hi + 1) << 8));
  return _mm256_setr_m128i(_mm_set1_epi16(l), _mm_set1_epi16(h));
}

// ---- K weights x two-term Q8_K ----
// Each level vector meets both activation terms (two maddubs, two scale madds); the two integer
// sums of a block are combined in float (254 times the first would overflow int32).

LS_TARGET float dot_q2_k(const void* wv, const void* av, int64_t n) {
  const auto* w = static_cast<const BlockQ2_K*>(wv);
  const auto* a = static_cast<const BlockQ8_K*>(av);
  const Q8KTerm2* t2 = q8_k_term2(av, n / kQKK);
  __m256 acc = _mm256_setzero_ps();
  for (int64_t i = 0; i < n / kQKK; ++i) {
    const float da = q8k_d(a[i]);
    const __m128i sc8 = load128(w[i].scales);
    const __m256i mins =
        _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(sc8, 4), _mm_set1_epi8(0xF)));
    const __m256 summ = combine_terms(_mm256_madd_epi16(mins, load256(a[i].bsums)),
                                      _mm256_madd_epi16(mins, load256(t2[i].bsums)));
    // scales as int16, both lanes holding scales 0..7 / 8..15 for the two 128-element halves
    const __m256i sc16 = _mm256_cvtepu8_epi16(_mm_and_si128(sc8, _mm_set1_epi8(0xF)));
    __m256i sumi = _mm256_setzero_si256(), sumi2 = _mm256_setzero_si256();
    const int8_t* q8 = a[i].qs;
    const int8_t* r8 = t2[i].qs;
    for (int half = 0; half < 2; ++half) {
      const __m256i q = load256(w[i].qs + 32 * half);
      // this half's 8 scales in both 128-bit lanes
      const __m256i s = half == 0 ? _mm256_permute2x128_si256(sc16, sc16, 0x00)
                                  : _mm256_permute2x128_si256(sc16, sc16, 0x11);
      for (int k = 0; k < 4; ++k, q8 += 32, r8 += 32) {
        const __m256i qk = _mm256_and_si256(_mm256_srli_epi16(q, 2 * k), _mm256_set1_epi8(3));
        const __m256i sk = _mm256_shuffle_epi8(s, pick16(2 * k, 2 * k + 1));
        sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(_mm256_maddubs_epi16(qk, load256(q8)), sk));
        sumi2 =
            _mm256_add_epi32(sumi2, _mm256_madd_epi16(_mm256_maddubs_epi16(qk, load256(r8)), sk));
      }
    }
    acc = _mm256_fmadd_ps(_mm256_set1_ps(h2f(w[i].d) * da), combine_terms(sumi, sumi2), acc);
    acc = _mm256_fmadd_ps(_mm256_set1_ps(-h2f(w[i].dmin) * da), summ, acc);
  }
  return hsum(acc);
}

LS_TARGET float dot_q3_k(const void* wv, const void* av, int64_t n) {
  const auto* w = static_cast<const BlockQ3_K*>(wv);
  const auto* a = static_cast<const BlockQ8_K*>(av);
  const Q8KTerm2* t2 = q8_k_term2(av, n / kQKK);
  __m256 acc = _mm256_setzero_ps();
  for (int64_t i = 0; i < n / kQKK; ++i) {
    int8_t s8[16];
    q3k_scales(w[i].scales, s8);
    const __m256i sc16 = _mm256_cvtepi8_epi16(load128(s8));
    const __m256i hm = load256(w[i].hmask);
    __m256i sumi = _mm256_setzero_si256(), sumi2 = _mm256_setzero_si256();
    const int8_t* q8 = a[i].qs;
    const int8_t* r8 = t2[i].qs;
    for (int half = 0; half < 2; ++half) {
      const __m256i q = load256(w[i].qs + 32 * half);
      const __m256i s = half == 0 ? _mm256_permute2x128_si256(sc16, sc16, 0x00)
                                  : _mm256_permute2x128_si256(sc16, sc16, 0x11);
      for (int k = 0; k < 4; ++k, q8 += 32, r8 += 32) {
        const __m256i low = _mm256_and_si256(_mm256_srli_epi16(q, 2 * k), _mm256_set1_epi8(3));
        const __m256i bit = _mm256_set1_epi8(char(1 << (4 * half + k)));
        // 4 where the high bit is clear: level = low - 4
        const __m256i four =
            _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(hm, bit), _mm256_setzero_si256()),
                             _mm256_set1_epi8(4));
        const __m256i sk = _mm256_shuffle_epi8(s, pick16(2 * k, 2 * k + 1));
        const __m256i a8 = load256(q8), b8 = load256(r8);
        const __m256i p =
            _mm256_sub_epi16(_mm256_maddubs_epi16(low, a8), _mm256_maddubs_epi16(four, a8));
        const __m256i p2 =
            _mm256_sub_epi16(_mm256_maddubs_epi16(low, b8), _mm256_maddubs_epi16(four, b8));
        sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p, sk));
        sumi2 = _mm256_add_epi32(sumi2, _mm256_madd_epi16(p2, sk));
      }
    }
    acc =
        _mm256_fmadd_ps(_mm256_set1_ps(h2f(w[i].d) * q8k_d(a[i])), combine_terms(sumi, sumi2), acc);
  }
  return hsum(acc);
}

template <bool kFive>
LS_TARGET inline float dot_q45_k(const void* wv, const void* av, int64_t n) {
  using Block = std::conditional_t<kFive, BlockQ5_K, BlockQ4_K>;
  const auto* w = static_cast<const Block*>(wv);
  const auto* a = static_cast<const BlockQ8_K*>(av);
  const Q8KTerm2* t2 = q8_k_term2(av, n / kQKK);
  __m256 acc = _mm256_setzero_ps(), accm = _mm256_setzero_ps();
  for (int64_t i = 0; i < n / kQKK; ++i) {
    const float da = q8k_d(a[i]);
    const __m128i sm = k4_scales_mins(w[i].scales);
    const __m256 summ = k4_mins_terms(sm, a[i], t2[i]);
    const __m256i s = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(sm));  // 8 scales, both lanes
    __m256i hb;
    if constexpr (kFive) hb = load256(w[i].qh);
    __m256i sumi = _mm256_setzero_si256(), sumi2 = _mm256_setzero_si256();
    const int8_t* q8 = a[i].qs;
    const int8_t* r8 = t2[i].qs;
    for (int j = 0; j < 4; ++j, q8 += 64, r8 += 64) {
      const __m256i q = load256(w[i].qs + 32 * j);
      __m256i lo = _mm256_and_si256(q, _mm256_set1_epi8(0xF));
      __m256i hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), _mm256_set1_epi8(0xF));
      if constexpr (kFive) {
        const __m256i one = _mm256_set1_epi8(1);
        lo = _mm256_or_si256(
            lo, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 2 * j), one), 4));
        hi = _mm256_or_si256(
            hi, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 2 * j + 1), one), 4));
      }
      const __m256i slo = _mm256_shuffle_epi8(s, pick16(2 * j, 2 * j));
      const __m256i shi = _mm256_shuffle_epi8(s, pick16(2 * j + 1, 2 * j + 1));
      sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(_mm256_maddubs_epi16(lo, load256(q8)), slo));
      sumi = _mm256_add_epi32(sumi,
                              _mm256_madd_epi16(_mm256_maddubs_epi16(hi, load256(q8 + 32)), shi));
      sumi2 =
          _mm256_add_epi32(sumi2, _mm256_madd_epi16(_mm256_maddubs_epi16(lo, load256(r8)), slo));
      sumi2 = _mm256_add_epi32(sumi2,
                               _mm256_madd_epi16(_mm256_maddubs_epi16(hi, load256(r8 + 32)), shi));
    }
    acc = _mm256_fmadd_ps(_mm256_set1_ps(h2f(w[i].d) * da), combine_terms(sumi, sumi2), acc);
    accm = _mm256_fmadd_ps(_mm256_set1_ps(h2f(w[i].dmin) * da), summ, accm);
  }
  return hsum(_mm256_sub_ps(acc, accm));
}

LS_TARGET float dot_q4_k(const void* w, const void* a, int64_t n) {
  return dot_q45_k<false>(w, a, n);
}
LS_TARGET float dot_q5_k(const void* w, const void* a, int64_t n) {
  return dot_q45_k<true>(w, a, n);
}

LS_TARGET float dot_q6_k(const void* wv, const void* av, int64_t n) {
  const auto* w = static_cast<const BlockQ6_K*>(wv);
  const auto* a = static_cast<const BlockQ8_K*>(av);
  const Q8KTerm2* t2 = q8_k_term2(av, n / kQKK);
  float acc = 0;
  const __m256i m4 = _mm256_set1_epi8(0xF), m30 = _mm256_set1_epi8(0x30);
  for (int64_t i = 0; i < n / kQKK; ++i) {
    const __m128i sc8 = load128(w[i].scales);
    const __m256i sc16 = _mm256_cvtepi8_epi16(sc8);
    __m256i sumi = _mm256_sub_epi32(_mm256_setzero_si256(), q6k_offset(sc16, a[i].bsums));
    __m256i sumi2 = _mm256_sub_epi32(_mm256_setzero_si256(), q6k_offset(sc16, t2[i].bsums));
    for (int half = 0; half < 2; ++half) {
      const int8_t* q8 = a[i].qs + 128 * half;
      const int8_t* r8 = t2[i].qs + 128 * half;
      const uint8_t* ql = w[i].ql + 64 * half;
      const __m256i l0 = load256(ql), l1 = load256(ql + 32), h = load256(w[i].qh + 32 * half);
      const __m256i s = half == 0 ? _mm256_permute2x128_si256(sc16, sc16, 0x00)
                                  : _mm256_permute2x128_si256(sc16, sc16, 0x11);
      const __m256i q[4] = {
          _mm256_or_si256(_mm256_and_si256(l0, m4), _mm256_and_si256(_mm256_slli_epi16(h, 4), m30)),
          _mm256_or_si256(_mm256_and_si256(l1, m4), _mm256_and_si256(_mm256_slli_epi16(h, 2), m30)),
          _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4), _mm256_and_si256(h, m30)),
          _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                          _mm256_and_si256(_mm256_srli_epi16(h, 2), m30))};
      for (int k = 0; k < 4; ++k) {
        const __m256i sk = _mm256_shuffle_epi8(s, pick16(2 * k, 2 * k + 1));
        sumi = _mm256_add_epi32(
            sumi, _mm256_madd_epi16(_mm256_maddubs_epi16(q[k], load256(q8 + 32 * k)), sk));
        sumi2 = _mm256_add_epi32(
            sumi2, _mm256_madd_epi16(_mm256_maddubs_epi16(q[k], load256(r8 + 32 * k)), sk));
      }
    }
    // lanes summed exactly first: the +32 offset in them cancels only across lanes
    acc += (h2f(w[i].d) * q8k_d(a[i])) * joined_terms(hsum_epi32(sumi), hsum_epi32(sumi2));
  }
  return acc;
}

// ---- float weights ----

// F32 sums its tail (n % 8 elements) on its own and adds it to the vector sum, where F16/BF16
// (dot_float) add the tail to the running sum; the two orders round differently, and each
// kernel keeps its own so that results do not change.
LS_TARGET float dot_f32(const void* w, const void* a, int64_t n) {
  const int64_t body = n - n % FloatVec::kLanes;
  const float* wf = static_cast<const float*>(w) + body;
  const float* af = static_cast<const float*>(a) + body;
  float tail = 0;
  for (int64_t i = 0; i < n - body; ++i) tail += wf[i] * af[i];
  return dot_float<FloatVec, FloatWeights::F32>(w, a, body) + tail;
}

}  // namespace

void fill_avx2_kernels(DotKernels& k) {
  k.dot[int(TensorType::F32)] = dot_f32;
  k.dot[int(TensorType::F16)] = dot_f16;
  k.dot[int(TensorType::BF16)] = dot_bf16;
  k.dot[int(TensorType::Q4_0)] = dot_q4_0;
  k.dot[int(TensorType::Q4_1)] = dot_q4_1;
  k.dot[int(TensorType::Q5_0)] = dot_q5_0;
  k.dot[int(TensorType::Q5_1)] = dot_q5_1;
  k.dot[int(TensorType::Q8_0)] = dot_q8_0;
  k.dot[int(TensorType::Q2_K)] = dot_q2_k;
  k.dot[int(TensorType::Q3_K)] = dot_q3_k;
  k.dot[int(TensorType::Q4_K)] = dot_q4_k;
  k.dot[int(TensorType::Q5_K)] = dot_q5_k;
  k.dot[int(TensorType::Q6_K)] = dot_q6_k;
}

}  // namespace lockstep::quant

#else

namespace lockstep::quant {
void fill_avx2_kernels(DotKernels&) {}
}  // namespace lockstep::quant

#endif
