// AVX-512 (F, BW, VL, DQ) kernels of vec_dot.h. Q5_0 and Q5_1 are the shared 256-bit kernels of
// vec_dot_impl.inc, where AVX-512BW masks give the fifth bits; F16 and F32 are the shared float
// kernels with 16-float registers; Q4_K and Q6_K have their own 512-bit kernels below. The other
// types keep their AVX2 kernel: 512-bit versions of Q8_0/Q4_0 (two blocks per register) measured
// slower on Zen 4, which splits 512-bit operations.
// Every function carries a target attribute; they run only when the CPU reports AVX-512.
#include "quant/tensor_type.h"
#include "quant/vec_dot_internal.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))

// GCC 12's AVX-512 headers trip -Wuninitialized on their own _mm512_undefined_*() idiom.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include <cstring>

#include "quant/blocks.h"

#define LS_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")))
#define LS_AVX512BW 1

namespace lockstep::quant {
namespace {

#include "quant/x86_bytes.inc"

LS_TARGET inline __m512i load512(const void* p) {
  return _mm512_loadu_si512(p);
}

struct FloatVec {  // 16 floats
  using V = __m512;
  static constexpr int kLanes = 16;
  static LS_TARGET V zero() { return _mm512_setzero_ps(); }
  static LS_TARGET V add(V x, V y) { return _mm512_add_ps(x, y); }
  static LS_TARGET V fmadd(V x, V y, V acc) { return _mm512_fmadd_ps(x, y, acc); }
  static LS_TARGET float sum(V v) { return _mm512_reduce_add_ps(v); }
  static LS_TARGET V f32(const void* p) { return _mm512_loadu_ps(p); }
  static LS_TARGET V f16(const void* p) { return _mm512_cvtph_ps(load256(p)); }
  static LS_TARGET V bf16(const void* p) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(load256(p)), 16));
  }
};

#include "quant/vec_dot_impl.inc"

// ---- K weights x Q8_K ----
// Their own algorithm rather than the AVX2 one widened: one 512-bit step covers 64 levels of
// two or four scale groups, and a cross-lane 16-bit permute (lane_pick, AVX-512BW) gives each
// 128-bit lane its own scale, where AVX2 needs an in-lane byte shuffle (pick16) per group pair.

// int16 lane pattern for _mm512_permutexvar_epi16: 128-bit lane k gets element e[k].
LS_TARGET inline __m512i lane_pick(int e0, int e1, int e2, int e3) {
  const int v0 = e0 * 0x10001, v1 = e1 * 0x10001, v2 = e2 * 0x10001, v3 = e3 * 0x10001;
  return _mm512_setr_epi32(v0, v0, v0, v0, v1, v1, v1, v1, v2, v2, v2, v2, v3, v3, v3, v3);
}

// A block's two integer sums (one per activation term) as floats in units of the first term.
LS_TARGET inline __m512 combine_terms512(__m512i sum1, __m512i sum2) {
  return _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum2), _mm512_set1_ps(kInvTerm2Scale),
                         _mm512_cvtepi32_ps(sum1));
}

LS_TARGET float dot_q4_k(const void* wv, const void* av, int64_t n) {
  const auto* w = static_cast<const BlockQ4_K*>(wv);
  const auto* a = static_cast<const BlockQ8_K*>(av);
  const Q8KTerm2* t2 = q8_k_term2(av, n / kQKK);
  __m512 acc = _mm512_setzero_ps();
  __m256 accm = _mm256_setzero_ps();
  const __m512i m4 = _mm512_set1_epi8(0x0F);
  for (int64_t i = 0; i < n / kQKK; ++i) {
    const float da = q8k_d(a[i]);
    const __m128i sm = k4_scales_mins(w[i].scales);
    const __m256 summ = k4_mins_terms(sm, a[i], t2[i]);
    const __m512i s = _mm512_zextsi256_si512(_mm256_cvtepu8_epi16(sm));  // scales at 0..7
    __m512i sumi = _mm512_setzero_si512(), sumi2 = _mm512_setzero_si512();
    for (int c2 = 0; c2 < 2; ++c2) {  // 128 elements (two 64-chunks) per step
      const __m512i q = load512(w[i].qs + 64 * c2);
      const __m512i lo = _mm512_and_si512(q, m4);
      const __m512i hi = _mm512_and_si512(_mm512_srli_epi16(q, 4), m4);
      const __m512i x0 = _mm512_shuffle_i64x2(lo, hi, _MM_SHUFFLE(1, 0, 1, 0));  // chunk 2*c2
      const __m512i x1 = _mm512_shuffle_i64x2(lo, hi, _MM_SHUFFLE(3, 2, 3, 2));  // chunk 2*c2+1
      const int c = 2 * c2;
      const __m512i s0 = _mm512_permutexvar_epi16(lane_pick(2 * c, 2 * c, 2 * c + 1, 2 * c + 1), s);
      const __m512i s1 =
          _mm512_permutexvar_epi16(lane_pick(2 * c + 2, 2 * c + 2, 2 * c + 3, 2 * c + 3), s);
      sumi = _mm512_add_epi32(
          sumi, _mm512_madd_epi16(_mm512_maddubs_epi16(x0, load512(a[i].qs + 64 * c)), s0));
      sumi = _mm512_add_epi32(
          sumi, _mm512_madd_epi16(_mm512_maddubs_epi16(x1, load512(a[i].qs + 64 * c + 64)), s1));
      sumi2 = _mm512_add_epi32(
          sumi2, _mm512_madd_epi16(_mm512_maddubs_epi16(x0, load512(t2[i].qs + 64 * c)), s0));
      sumi2 = _mm512_add_epi32(
          sumi2, _mm512_madd_epi16(_mm512_maddubs_epi16(x1, load512(t2[i].qs + 64 * c + 64)), s1));
    }
    acc = _mm512_fmadd_ps(_mm512_set1_ps(h2f(w[i].d) * da), combine_terms512(sumi, sumi2), acc);
    accm = _mm256_fmadd_ps(_mm256_set1_ps(h2f(w[i].dmin) * da), summ, accm);
  }
  return _mm512_reduce_add_ps(acc) - _mm512_reduce_add_ps(_mm512_zextps256_ps512(accm));
}

LS_TARGET float dot_q6_k(const void* wv, const void* av, int64_t n) {
  const auto* w = static_cast<const BlockQ6_K*>(wv);
  const auto* a = static_cast<const BlockQ8_K*>(av);
  const Q8KTerm2* t2 = q8_k_term2(av, n / kQKK);
  float acc = 0;
  const __m512i m4 = _mm512_set1_epi8(0x0F), m30 = _mm512_set1_epi8(0x30);
  // per 256-bit half: shift of the qh bits into bits 4..5
  const __m512i shl12 = _mm512_inserti64x4(_mm512_set1_epi16(4), _mm256_set1_epi16(2), 1);
  const __m512i shr34 = _mm512_inserti64x4(_mm512_set1_epi16(0), _mm256_set1_epi16(2), 1);
  for (int64_t i = 0; i < n / kQKK; ++i) {
    const __m256i sc16 = _mm256_cvtepi8_epi16(load128(w[i].scales));
    const __m512i s = _mm512_zextsi256_si512(sc16);
    __m512i sumi = _mm512_zextsi256_si512(
        _mm256_sub_epi32(_mm256_setzero_si256(), q6k_offset(sc16, a[i].bsums)));
    __m512i sumi2 = _mm512_zextsi256_si512(
        _mm256_sub_epi32(_mm256_setzero_si256(), q6k_offset(sc16, t2[i].bsums)));
    for (int h = 0; h < 2; ++h) {
      const __m512i ql = load512(w[i].ql + 64 * h);
      const __m512i qh = _mm512_broadcast_i64x4(load256(w[i].qh + 32 * h));
      const __m512i q12 = _mm512_or_si512(_mm512_and_si512(ql, m4),
                                          _mm512_and_si512(_mm512_sllv_epi16(qh, shl12), m30));
      const __m512i q34 = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(ql, 4), m4),
                                          _mm512_and_si512(_mm512_srlv_epi16(qh, shr34), m30));
      const int g = 8 * h;
      const __m512i s12 = _mm512_permutexvar_epi16(lane_pick(g, g + 1, g + 2, g + 3), s);
      const __m512i s34 = _mm512_permutexvar_epi16(lane_pick(g + 4, g + 5, g + 6, g + 7), s);
      sumi = _mm512_add_epi32(
          sumi, _mm512_madd_epi16(_mm512_maddubs_epi16(q12, load512(a[i].qs + 128 * h)), s12));
      sumi = _mm512_add_epi32(
          sumi, _mm512_madd_epi16(_mm512_maddubs_epi16(q34, load512(a[i].qs + 128 * h + 64)), s34));
      sumi2 = _mm512_add_epi32(
          sumi2, _mm512_madd_epi16(_mm512_maddubs_epi16(q12, load512(t2[i].qs + 128 * h)), s12));
      sumi2 = _mm512_add_epi32(
          sumi2,
          _mm512_madd_epi16(_mm512_maddubs_epi16(q34, load512(t2[i].qs + 128 * h + 64)), s34));
    }
    // lanes summed exactly first: the +32 offset in them cancels only across lanes
    acc += (h2f(w[i].d) * q8k_d(a[i])) *
           joined_terms(_mm512_reduce_add_epi32(sumi), _mm512_reduce_add_epi32(sumi2));
  }
  return acc;
}

LS_TARGET float dot_f32(const void* w, const void* a, int64_t n) {
  return dot_float<FloatVec, FloatWeights::F32>(w, a, n);
}

}  // namespace

void fill_avx512_kernels(DotKernels& k) {
  k.dot[int(TensorType::Q5_0)] = dot_q5_0;
  k.dot[int(TensorType::Q5_1)] = dot_q5_1;
  k.dot[int(TensorType::Q4_K)] = dot_q4_k;
  k.dot[int(TensorType::Q6_K)] = dot_q6_k;
  k.dot[int(TensorType::F16)] = dot_f16;
  k.dot[int(TensorType::F32)] = dot_f32;
}

}  // namespace lockstep::quant

#else

namespace lockstep::quant {
void fill_avx512_kernels(DotKernels&) {}
}  // namespace lockstep::quant

#endif
