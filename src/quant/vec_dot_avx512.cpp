// AVX-512 (F, BW, VL, DQ) kernels of vec_dot.h: Q4_K, Q6_K, F16, F32 (512-bit), Q5_0, Q5_1
// (256-bit with AVX-512BW masks). The other types keep their AVX2 kernel: 512-bit versions of
// Q8_0/Q4_0 (two blocks per register) measured slower on Zen 4, which splits 512-bit operations.
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

#define LS_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")))

namespace lockstep::quant {
namespace {

LS_AVX512 inline float h2f(uint16_t h) {
  return _cvtsh_ss(h);
}

LS_AVX512 inline __m512i loadu512(const void* p) {
  return _mm512_loadu_si512(p);
}
LS_AVX512 inline __m256i loadu256(const void* p) {
  return _mm256_loadu_si256(static_cast<const __m256i*>(p));
}
// ---- 32-block weights: the AVX2 algorithm (512-bit pairs cost more shuffles than they save
// on this class of CPU), with AVX-512BW masks replacing the bit-to-byte expansion of Q5_0/Q5_1 ----

LS_AVX512 inline __m256i load256(const void* p) {
  return loadu256(p);
}
// 16 packed bytes -> 32 nibbles: low nibbles in bytes 0..15, high nibbles in bytes 16..31.
LS_AVX512 inline __m256i nibbles32(const uint8_t* p) {
  const __m128i t = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(t, 4), t), _mm256_set1_epi8(0x0F));
}
LS_AVX512 inline __m256i dot_ss8(__m256i x, __m256i y) {
  return _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x)),
                           _mm256_set1_epi16(1));
}
LS_AVX512 inline __m256i dot_us8(__m256i u, __m256i s) {
  return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
}
LS_AVX512 inline float hsum(__m256 v) {
  __m128 r = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  r = _mm_add_ps(r, _mm_movehl_ps(r, r));
  return _mm_cvtss_f32(_mm_add_ss(r, _mm_movehdup_ps(r)));
}

template <class Block>
struct FiveBitLevels {  // nibble + 16 where the fifth bit is set
  LS_AVX512 __m256i operator()(const Block& b) const {
    uint32_t h;
    std::memcpy(&h, b.qh, 4);
    const __m256i nib = nibbles32(b.qs);
    return _mm256_mask_add_epi8(nib, _cvtu32_mask32(h), nib, _mm256_set1_epi8(16));
  }
};

#define LS_TARGET LS_AVX512
#include "quant/dot32_impl.inc"
#undef LS_TARGET

LS_AVX512 float dot_q5_0(const void* w, const void* a, int64_t n) {
  return dot32<BlockQ5_0, FiveBitLevels<BlockQ5_0>, false, 16, false>(w, a, n);
}
LS_AVX512 float dot_q5_1(const void* w, const void* a, int64_t n) {
  return dot32<BlockQ5_1, FiveBitLevels<BlockQ5_1>, false, 0, true>(w, a, n);
}

// ---- K weights x Q8_K ----

LS_AVX512 inline float q8k_d(const BlockQ8_K& b) {
  float d;
  std::memcpy(&d, &b.d, 4);
  return d;
}

// int16 lane pattern for _mm512_permutexvar_epi16: 128-bit lane k gets element e[k].
LS_AVX512 inline __m512i lane_pick(int e0, int e1, int e2, int e3) {
  const int v0 = e0 * 0x10001, v1 = e1 * 0x10001, v2 = e2 * 0x10001, v3 = e3 * 0x10001;
  return _mm512_setr_epi32(v0, v0, v0, v0, v1, v1, v1, v1, v2, v2, v2, v2, v3, v3, v3, v3);
}

LS_AVX512 inline __m128i k4_scales_mins(const uint8_t* packed) {
  uint32_t u[4];
  std::memcpy(u, packed, 12);
  const uint32_t m6 = 0x3f3f3f3f, lo4 = 0x0f0f0f0f, top2 = 0x03030303;
  const uint32_t mins_hi = ((u[2] >> 4) & lo4) | (((u[1] >> 6) & top2) << 4);
  const uint32_t mins_lo = u[1] & m6;
  const uint32_t sc_hi = (u[2] & lo4) | (((u[0] >> 6) & top2) << 4);
  const uint32_t sc_lo = u[0] & m6;
  return _mm_setr_epi32(int(sc_lo), int(sc_hi), int(mins_lo), int(mins_hi));
}

LS_AVX512 float dot_q4_k(const void* wv, const void* av, int64_t n) {
  const auto* w = static_cast<const BlockQ4_K*>(wv);
  const auto* a = static_cast<const BlockQ8_K*>(av);
  __m512 acc = _mm512_setzero_ps();
  __m256 accm = _mm256_setzero_ps();
  const __m512i m4 = _mm512_set1_epi8(0x0F);
  for (int64_t i = 0; i < n / kQKK; ++i) {
    const float da = q8k_d(a[i]);
    const __m128i sm = k4_scales_mins(w[i].scales);
    const __m128i mins2 = _mm_shuffle_epi8(
        sm, _mm_setr_epi8(8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14, 15, 15));
    const __m256i summ = _mm256_madd_epi16(_mm256_cvtepu8_epi16(mins2), loadu256(a[i].bsums));
    const __m512i s = _mm512_zextsi256_si512(_mm256_cvtepu8_epi16(sm));  // scales at 0..7
    __m512i sumi = _mm512_setzero_si512();
    for (int c2 = 0; c2 < 2; ++c2) {  // 128 elements (two 64-chunks) per step
      const __m512i q = loadu512(w[i].qs + 64 * c2);
      const __m512i lo = _mm512_and_si512(q, m4);
      const __m512i hi = _mm512_and_si512(_mm512_srli_epi16(q, 4), m4);
      const __m512i x0 = _mm512_shuffle_i64x2(lo, hi, _MM_SHUFFLE(1, 0, 1, 0));  // chunk 2*c2
      const __m512i x1 = _mm512_shuffle_i64x2(lo, hi, _MM_SHUFFLE(3, 2, 3, 2));  // chunk 2*c2+1
      const int c = 2 * c2;
      const __m512i p0 = _mm512_maddubs_epi16(x0, loadu512(a[i].qs + 64 * c));
      const __m512i p1 = _mm512_maddubs_epi16(x1, loadu512(a[i].qs + 64 * c + 64));
      sumi = _mm512_add_epi32(
          sumi, _mm512_madd_epi16(p0, _mm512_permutexvar_epi16(
                                          lane_pick(2 * c, 2 * c, 2 * c + 1, 2 * c + 1), s)));
      sumi = _mm512_add_epi32(
          sumi,
          _mm512_madd_epi16(p1, _mm512_permutexvar_epi16(
                                    lane_pick(2 * c + 2, 2 * c + 2, 2 * c + 3, 2 * c + 3), s)));
    }
    acc = _mm512_fmadd_ps(_mm512_set1_ps(h2f(w[i].d) * da), _mm512_cvtepi32_ps(sumi), acc);
    accm = _mm256_fmadd_ps(_mm256_set1_ps(h2f(w[i].dmin) * da), _mm256_cvtepi32_ps(summ), accm);
  }
  return _mm512_reduce_add_ps(acc) - _mm512_reduce_add_ps(_mm512_zextps256_ps512(accm));
}

LS_AVX512 float dot_q6_k(const void* wv, const void* av, int64_t n) {
  const auto* w = static_cast<const BlockQ6_K*>(wv);
  const auto* a = static_cast<const BlockQ8_K*>(av);
  __m512 acc = _mm512_setzero_ps();
  const __m512i m4 = _mm512_set1_epi8(0x0F), m30 = _mm512_set1_epi8(0x30);
  // per 256-bit half: shift of the qh bits into bits 4..5
  const __m512i shl12 = _mm512_inserti64x4(_mm512_set1_epi16(4), _mm256_set1_epi16(2), 1);
  const __m512i shr34 = _mm512_inserti64x4(_mm512_set1_epi16(0), _mm256_set1_epi16(2), 1);
  for (int64_t i = 0; i < n / kQKK; ++i) {
    const __m256i sc16 =
        _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w[i].scales)));
    const __m256i offset = _mm256_slli_epi32(_mm256_madd_epi16(sc16, loadu256(a[i].bsums)), 5);
    const __m512i s = _mm512_zextsi256_si512(sc16);
    __m512i sumi = _mm512_zextsi256_si512(_mm256_sub_epi32(_mm256_setzero_si256(), offset));
    for (int h = 0; h < 2; ++h) {
      const __m512i ql = loadu512(w[i].ql + 64 * h);
      const __m512i qh = _mm512_broadcast_i64x4(loadu256(w[i].qh + 32 * h));
      const __m512i q12 = _mm512_or_si512(_mm512_and_si512(ql, m4),
                                          _mm512_and_si512(_mm512_sllv_epi16(qh, shl12), m30));
      const __m512i q34 = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(ql, 4), m4),
                                          _mm512_and_si512(_mm512_srlv_epi16(qh, shr34), m30));
      const int g = 8 * h;
      const __m512i p12 = _mm512_maddubs_epi16(q12, loadu512(a[i].qs + 128 * h));
      const __m512i p34 = _mm512_maddubs_epi16(q34, loadu512(a[i].qs + 128 * h + 64));
      sumi = _mm512_add_epi32(
          sumi,
          _mm512_madd_epi16(p12, _mm512_permutexvar_epi16(lane_pick(g, g + 1, g + 2, g + 3), s)));
      sumi = _mm512_add_epi32(
          sumi, _mm512_madd_epi16(
                    p34, _mm512_permutexvar_epi16(lane_pick(g + 4, g + 5, g + 6, g + 7), s)));
    }
    acc = _mm512_fmadd_ps(_mm512_set1_ps(h2f(w[i].d) * q8k_d(a[i])), _mm512_cvtepi32_ps(sumi), acc);
  }
  return _mm512_reduce_add_ps(acc);
}

// ---- float weights ----

template <bool kHalf>
LS_AVX512 inline float dot_float(const void* wv, const void* av, int64_t n) {
  const auto* a = static_cast<const float*>(av);
  const auto* wb = static_cast<const uint8_t*>(wv);
  auto load16 = [wb](int64_t i) LS_AVX512 {
    if constexpr (kHalf) return _mm512_cvtph_ps(loadu256(wb + 2 * i));
    return _mm512_loadu_ps(wb + 4 * i);
  };
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
  __m512 acc2 = _mm512_setzero_ps(), acc3 = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 64 <= n; i += 64) {
    acc0 = _mm512_fmadd_ps(load16(i), _mm512_loadu_ps(a + i), acc0);
    acc1 = _mm512_fmadd_ps(load16(i + 16), _mm512_loadu_ps(a + i + 16), acc1);
    acc2 = _mm512_fmadd_ps(load16(i + 32), _mm512_loadu_ps(a + i + 32), acc2);
    acc3 = _mm512_fmadd_ps(load16(i + 48), _mm512_loadu_ps(a + i + 48), acc3);
  }
  for (; i + 16 <= n; i += 16) acc0 = _mm512_fmadd_ps(load16(i), _mm512_loadu_ps(a + i), acc0);
  float s =
      _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(acc0, acc1), _mm512_add_ps(acc2, acc3)));
  for (; i < n; ++i) {
    float wi;
    if constexpr (kHalf) {
      uint16_t h;
      std::memcpy(&h, wb + 2 * i, 2);
      wi = h2f(h);
    } else {
      std::memcpy(&wi, wb + 4 * i, 4);
    }
    s += wi * a[i];
  }
  return s;
}

LS_AVX512 float dot_f16(const void* w, const void* a, int64_t n) {
  return dot_float<true>(w, a, n);
}
LS_AVX512 float dot_f32(const void* w, const void* a, int64_t n) {
  return dot_float<false>(w, a, n);
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
