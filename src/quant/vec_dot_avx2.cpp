// AVX2 (+FMA, F16C) kernels of vec_dot.h. Every function carries a target attribute, so the
// rest of the build stays portable; they run only when the CPU reports AVX2, FMA and F16C.
#include "quant/tensor_type.h"
#include "quant/vec_dot_internal.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))

#include <immintrin.h>

#include <cstring>
#include <type_traits>

#include "quant/blocks.h"

#define LS_AVX2 __attribute__((target("avx2,fma,f16c")))

namespace lockstep::quant {
namespace {

LS_AVX2 inline float h2f(uint16_t h) {
  return _cvtsh_ss(h);
}

LS_AVX2 inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

LS_AVX2 inline __m256i loadu(const void* p) {
  return _mm256_loadu_si256(static_cast<const __m256i*>(p));
}

// Sum of u[i]*s[i] over each 4 bytes (u unsigned, s signed; u*s pair sums fit in int16).
LS_AVX2 inline __m256i dot_us8(__m256i u, __m256i s) {
  return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
}
// Same for two signed operands (x may hold -128; y must not).
LS_AVX2 inline __m256i dot_ss8(__m256i x, __m256i y) {
  return dot_us8(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x));
}

// 16 packed bytes -> 32 nibbles: low nibbles in bytes 0..15, high nibbles in bytes 16..31.
LS_AVX2 inline __m256i nibbles32(const uint8_t* p) {
  const __m128i t = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(t, 4), t), _mm256_set1_epi8(0x0F));
}

// 32 bits (little-endian) -> 32 bytes, 0xFF where the bit is set.
LS_AVX2 inline __m256i bits_to_bytes(const uint8_t* p) {
  uint32_t x;
  std::memcpy(&x, p, 4);
  const __m256i spread = _mm256_shuffle_epi8(
      _mm256_set1_epi32(int(x)),
      _mm256_setr_epi64x(0, 0x0101010101010101, 0x0202020202020202, 0x0303030303030303));
  const __m256i bit = _mm256_set1_epi64x(int64_t(0x8040201008040201ULL));
  return _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit);
}

// Mask for _mm256_shuffle_epi8 that broadcasts int16 element `lo` of each 128-bit lane to the
// whole low lane and element `hi` to the whole high lane.
LS_AVX2 inline __m256i pick16(int lo, int hi) {
  const int16_t l = int16_t((2 * lo) | ((2 * lo + 1) << 8));
  const int16_t h = int16_t((2 * hi) | ((2 * hi + 1) << 8));
  return _mm256_setr_m128i(_mm_set1_epi16(l), _mm_set1_epi16(h));
}

// ---- 32-block weights ----

LS_AVX2 inline __m256i load256(const void* p) {
  return loadu(p);
}

struct Q8Levels {
  LS_AVX2 __m256i operator()(const BlockQ8_0& b) const { return loadu(b.qs); }
};
template <class Block>
struct NibbleLevels {  // Q4_0 / Q4_1: 0..15
  LS_AVX2 __m256i operator()(const Block& b) const { return nibbles32(b.qs); }
};
template <class Block>
struct FiveBitLevels {  // Q5_0 / Q5_1: 0..31
  LS_AVX2 __m256i operator()(const Block& b) const {
    return _mm256_or_si256(nibbles32(b.qs),
                           _mm256_and_si256(bits_to_bytes(b.qh), _mm256_set1_epi8(0x10)));
  }
};

#define LS_TARGET LS_AVX2
#include "quant/dot32_impl.inc"
#undef LS_TARGET

LS_AVX2 float dot_q8_0(const void* w, const void* a, int64_t n) {
  return dot32<BlockQ8_0, Q8Levels, true, 0, false>(w, a, n);
}
LS_AVX2 float dot_q4_0(const void* w, const void* a, int64_t n) {
  return dot32<BlockQ4_0, NibbleLevels<BlockQ4_0>, false, 8, false>(w, a, n);
}
LS_AVX2 float dot_q4_1(const void* w, const void* a, int64_t n) {
  return dot32<BlockQ4_1, NibbleLevels<BlockQ4_1>, false, 0, true>(w, a, n);
}
LS_AVX2 float dot_q5_0(const void* w, const void* a, int64_t n) {
  return dot32<BlockQ5_0, FiveBitLevels<BlockQ5_0>, false, 16, false>(w, a, n);
}
LS_AVX2 float dot_q5_1(const void* w, const void* a, int64_t n) {
  return dot32<BlockQ5_1, FiveBitLevels<BlockQ5_1>, false, 0, true>(w, a, n);
}

// ---- K weights x Q8_K ----

LS_AVX2 inline float q8k_d(const BlockQ8_K& b) {
  float d;
  std::memcpy(&d, &b.d, 4);
  return d;
}

LS_AVX2 inline __m256i load_bsums(const BlockQ8_K& b) {
  return loadu(b.bsums);
}

LS_AVX2 float dot_q2_k(const void* wv, const void* av, int64_t n) {
  const auto* w = static_cast<const BlockQ2_K*>(wv);
  const auto* a = static_cast<const BlockQ8_K*>(av);
  __m256 acc = _mm256_setzero_ps();
  for (int64_t i = 0; i < n / kQKK; ++i) {
    const float da = q8k_d(a[i]);
    const __m128i sc8 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w[i].scales));
    const __m256i mins =
        _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(sc8, 4), _mm_set1_epi8(0xF)));
    const __m256i summ = _mm256_madd_epi16(mins, load_bsums(a[i]));
    // scales as int16, both lanes holding scales 0..7 / 8..15 for the two 128-element halves
    const __m256i sc16 = _mm256_cvtepu8_epi16(_mm_and_si128(sc8, _mm_set1_epi8(0xF)));
    __m256i sumi = _mm256_setzero_si256();
    const int8_t* q8 = a[i].qs;
    for (int half = 0; half < 2; ++half) {
      const __m256i q = loadu(w[i].qs + 32 * half);
      // this half's 8 scales in both 128-bit lanes
      const __m256i s = half == 0 ? _mm256_permute2x128_si256(sc16, sc16, 0x00)
                                  : _mm256_permute2x128_si256(sc16, sc16, 0x11);
      for (int k = 0; k < 4; ++k, q8 += 32) {
        const __m256i qk = _mm256_and_si256(_mm256_srli_epi16(q, 2 * k), _mm256_set1_epi8(3));
        const __m256i p = _mm256_maddubs_epi16(qk, loadu(q8));
        sumi = _mm256_add_epi32(
            sumi, _mm256_madd_epi16(p, _mm256_shuffle_epi8(s, pick16(2 * k, 2 * k + 1))));
      }
    }
    acc = _mm256_fmadd_ps(_mm256_set1_ps(h2f(w[i].d) * da), _mm256_cvtepi32_ps(sumi), acc);
    acc = _mm256_fmadd_ps(_mm256_set1_ps(-h2f(w[i].dmin) * da), _mm256_cvtepi32_ps(summ), acc);
  }
  return hsum(acc);
}

LS_AVX2 float dot_q3_k(const void* wv, const void* av, int64_t n) {
  const auto* w = static_cast<const BlockQ3_K*>(wv);
  const auto* a = static_cast<const BlockQ8_K*>(av);
  __m256 acc = _mm256_setzero_ps();
  for (int64_t i = 0; i < n / kQKK; ++i) {
    int8_t s8[16];
    q3k_scales(w[i].scales, s8);
    const __m256i sc16 =
        _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s8)));
    const __m256i hm = loadu(w[i].hmask);
    __m256i sumi = _mm256_setzero_si256();
    const int8_t* q8 = a[i].qs;
    for (int half = 0; half < 2; ++half) {
      const __m256i q = loadu(w[i].qs + 32 * half);
      const __m256i s = half == 0 ? _mm256_permute2x128_si256(sc16, sc16, 0x00)
                                  : _mm256_permute2x128_si256(sc16, sc16, 0x11);
      for (int k = 0; k < 4; ++k, q8 += 32) {
        const __m256i low = _mm256_and_si256(_mm256_srli_epi16(q, 2 * k), _mm256_set1_epi8(3));
        const __m256i bit = _mm256_set1_epi8(char(1 << (4 * half + k)));
        // 4 where the high bit is clear: level = low - 4
        const __m256i four =
            _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(hm, bit), _mm256_setzero_si256()),
                             _mm256_set1_epi8(4));
        const __m256i a8 = loadu(q8);
        const __m256i p =
            _mm256_sub_epi16(_mm256_maddubs_epi16(low, a8), _mm256_maddubs_epi16(four, a8));
        sumi = _mm256_add_epi32(
            sumi, _mm256_madd_epi16(p, _mm256_shuffle_epi8(s, pick16(2 * k, 2 * k + 1))));
      }
    }
    acc = _mm256_fmadd_ps(_mm256_set1_ps(h2f(w[i].d) * q8k_d(a[i])), _mm256_cvtepi32_ps(sumi), acc);
  }
  return hsum(acc);
}

// The 8 scales (bytes 0..7) and 8 mins (bytes 8..15) of a Q4_K/Q5_K block.
LS_AVX2 inline __m128i k4_scales_mins(const uint8_t* packed) {
  uint32_t u[4];
  std::memcpy(u, packed, 12);
  const uint32_t m6 = 0x3f3f3f3f, lo4 = 0x0f0f0f0f, top2 = 0x03030303;
  const uint32_t mins_hi = ((u[2] >> 4) & lo4) | (((u[1] >> 6) & top2) << 4);
  const uint32_t mins_lo = u[1] & m6;
  const uint32_t sc_hi = (u[2] & lo4) | (((u[0] >> 6) & top2) << 4);
  const uint32_t sc_lo = u[0] & m6;
  return _mm_setr_epi32(int(sc_lo), int(sc_hi), int(mins_lo), int(mins_hi));
}

// Shared by Q4_K and Q5_K: the mins term sum_j m_j * (bsum_2j + bsum_2j+1), as 8 int32 lanes.
LS_AVX2 inline __m256i k4_mins_term(__m128i sm, const BlockQ8_K& a) {
  const __m128i dup = _mm_shuffle_epi8(
      sm, _mm_setr_epi8(8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14, 15, 15));
  return _mm256_madd_epi16(_mm256_cvtepu8_epi16(dup), load_bsums(a));
}

template <bool kFive>
LS_AVX2 inline float dot_q45_k(const void* wv, const void* av, int64_t n) {
  using Block = std::conditional_t<kFive, BlockQ5_K, BlockQ4_K>;
  const auto* w = static_cast<const Block*>(wv);
  const auto* a = static_cast<const BlockQ8_K*>(av);
  __m256 acc = _mm256_setzero_ps(), accm = _mm256_setzero_ps();
  for (int64_t i = 0; i < n / kQKK; ++i) {
    const float da = q8k_d(a[i]);
    const __m128i sm = k4_scales_mins(w[i].scales);
    const __m256i summ = k4_mins_term(sm, a[i]);
    const __m256i s = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(sm));  // 8 scales, both lanes
    __m256i hb;
    if constexpr (kFive) hb = loadu(w[i].qh);
    __m256i sumi = _mm256_setzero_si256();
    const int8_t* q8 = a[i].qs;
    for (int j = 0; j < 4; ++j, q8 += 64) {
      const __m256i q = loadu(w[i].qs + 32 * j);
      __m256i lo = _mm256_and_si256(q, _mm256_set1_epi8(0xF));
      __m256i hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), _mm256_set1_epi8(0xF));
      if constexpr (kFive) {
        const __m256i one = _mm256_set1_epi8(1);
        lo = _mm256_or_si256(
            lo, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 2 * j), one), 4));
        hi = _mm256_or_si256(
            hi, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 2 * j + 1), one), 4));
      }
      const __m256i plo = _mm256_maddubs_epi16(lo, loadu(q8));
      const __m256i phi = _mm256_maddubs_epi16(hi, loadu(q8 + 32));
      sumi = _mm256_add_epi32(sumi,
                              _mm256_madd_epi16(plo, _mm256_shuffle_epi8(s, pick16(2 * j, 2 * j))));
      sumi = _mm256_add_epi32(
          sumi, _mm256_madd_epi16(phi, _mm256_shuffle_epi8(s, pick16(2 * j + 1, 2 * j + 1))));
    }
    acc = _mm256_fmadd_ps(_mm256_set1_ps(h2f(w[i].d) * da), _mm256_cvtepi32_ps(sumi), acc);
    accm = _mm256_fmadd_ps(_mm256_set1_ps(h2f(w[i].dmin) * da), _mm256_cvtepi32_ps(summ), accm);
  }
  return hsum(_mm256_sub_ps(acc, accm));
}

LS_AVX2 float dot_q4_k(const void* w, const void* a, int64_t n) {
  return dot_q45_k<false>(w, a, n);
}
LS_AVX2 float dot_q5_k(const void* w, const void* a, int64_t n) {
  return dot_q45_k<true>(w, a, n);
}

LS_AVX2 float dot_q6_k(const void* wv, const void* av, int64_t n) {
  const auto* w = static_cast<const BlockQ6_K*>(wv);
  const auto* a = static_cast<const BlockQ8_K*>(av);
  __m256 acc = _mm256_setzero_ps();
  const __m256i m4 = _mm256_set1_epi8(0xF), m30 = _mm256_set1_epi8(0x30);
  for (int64_t i = 0; i < n / kQKK; ++i) {
    const __m128i sc8 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w[i].scales));
    const __m256i sc16 = _mm256_cvtepi8_epi16(sc8);
    // levels are stored +32: subtract 32 * sum_g sc_g * bsum_g
    const __m256i offset = _mm256_slli_epi32(_mm256_madd_epi16(sc16, load_bsums(a[i])), 5);
    __m256i sumi = _mm256_setzero_si256();
    const int8_t* q8 = a[i].qs;
    for (int half = 0; half < 2; ++half, q8 += 128) {
      const uint8_t* ql = w[i].ql + 64 * half;
      const __m256i l0 = loadu(ql), l1 = loadu(ql + 32), h = loadu(w[i].qh + 32 * half);
      const __m256i s = half == 0 ? _mm256_permute2x128_si256(sc16, sc16, 0x00)
                                  : _mm256_permute2x128_si256(sc16, sc16, 0x11);
      const __m256i q1 =
          _mm256_or_si256(_mm256_and_si256(l0, m4), _mm256_and_si256(_mm256_slli_epi16(h, 4), m30));
      const __m256i q2 =
          _mm256_or_si256(_mm256_and_si256(l1, m4), _mm256_and_si256(_mm256_slli_epi16(h, 2), m30));
      const __m256i q3 =
          _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4), _mm256_and_si256(h, m30));
      const __m256i q4 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                                         _mm256_and_si256(_mm256_srli_epi16(h, 2), m30));
      const __m256i p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(q1, loadu(q8)),
                                           _mm256_shuffle_epi8(s, pick16(0, 1)));
      const __m256i p2 = _mm256_madd_epi16(_mm256_maddubs_epi16(q2, loadu(q8 + 32)),
                                           _mm256_shuffle_epi8(s, pick16(2, 3)));
      const __m256i p3 = _mm256_madd_epi16(_mm256_maddubs_epi16(q3, loadu(q8 + 64)),
                                           _mm256_shuffle_epi8(s, pick16(4, 5)));
      const __m256i p4 = _mm256_madd_epi16(_mm256_maddubs_epi16(q4, loadu(q8 + 96)),
                                           _mm256_shuffle_epi8(s, pick16(6, 7)));
      sumi = _mm256_add_epi32(sumi,
                              _mm256_add_epi32(_mm256_add_epi32(p1, p2), _mm256_add_epi32(p3, p4)));
    }
    sumi = _mm256_sub_epi32(sumi, offset);
    acc = _mm256_fmadd_ps(_mm256_set1_ps(h2f(w[i].d) * q8k_d(a[i])), _mm256_cvtepi32_ps(sumi), acc);
  }
  return hsum(acc);
}

// ---- float weights ----

LS_AVX2 inline float tail_f32(const float* w, const float* a, int64_t i, int64_t n) {
  float s = 0;
  for (; i < n; ++i) s += w[i] * a[i];
  return s;
}

LS_AVX2 float dot_f32(const void* wv, const void* av, int64_t n) {
  const auto* w = static_cast<const float*>(wv);
  const auto* a = static_cast<const float*>(av);
  __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(),
                   _mm256_setzero_ps()};
  int64_t i = 0;
  for (; i + 32 <= n; i += 32)
    for (int k = 0; k < 4; ++k)
      acc[k] =
          _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 8 * k), _mm256_loadu_ps(a + i + 8 * k), acc[k]);
  for (; i + 8 <= n; i += 8)
    acc[0] = _mm256_fmadd_ps(_mm256_loadu_ps(w + i), _mm256_loadu_ps(a + i), acc[0]);
  return hsum(_mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]))) +
         tail_f32(w, a, i, n);
}

template <bool kBf16>
LS_AVX2 inline __m256 load8_half(const uint8_t* p) {
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  if constexpr (kBf16) return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  return _mm256_cvtph_ps(h);
}

template <bool kBf16>
LS_AVX2 inline float dot_half(const void* wv, const void* av, int64_t n) {
  const auto* w = static_cast<const uint8_t*>(wv);
  const auto* a = static_cast<const float*>(av);
  __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(),
                   _mm256_setzero_ps()};
  int64_t i = 0;
  for (; i + 32 <= n; i += 32)
    for (int k = 0; k < 4; ++k)
      acc[k] = _mm256_fmadd_ps(load8_half<kBf16>(w + 2 * (i + 8 * k)),
                               _mm256_loadu_ps(a + i + 8 * k), acc[k]);
  for (; i + 8 <= n; i += 8)
    acc[0] = _mm256_fmadd_ps(load8_half<kBf16>(w + 2 * i), _mm256_loadu_ps(a + i), acc[0]);
  float s = hsum(_mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3])));
  for (; i < n; ++i) {
    uint16_t h;
    std::memcpy(&h, w + 2 * i, 2);
    s += (kBf16 ? _mm_cvtss_f32(_mm_castsi128_ps(_mm_cvtsi32_si128(int(uint32_t(h) << 16))))
                : h2f(h)) *
         a[i];
  }
  return s;
}

LS_AVX2 float dot_f16(const void* w, const void* a, int64_t n) {
  return dot_half<false>(w, a, n);
}
LS_AVX2 float dot_bf16(const void* w, const void* a, int64_t n) {
  return dot_half<true>(w, a, n);
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
