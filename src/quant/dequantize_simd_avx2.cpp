// AVX2 (+F16C) dequantizers of dequantize_simd.h. Bit-identical to the scalar code: the same
// float operations on the same operands in the same order. The target attribute deliberately
// leaves FMA out and contraction is switched off, so no multiply-add can be fused.
#include "quant/dequantize_simd.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))

#include <immintrin.h>

#include <cstring>

#include "quant/blocks.h"
#include "quant/fp16.h"

#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#else
#pragma GCC optimize("fp-contract=off")
#endif

#define LS_DQ_AVX2 __attribute__((target("avx2,f16c")))

namespace lockstep::quant {
namespace {

// Exact, like fp16_to_fp32, except that a signalling NaN comes back quiet; every use below
// multiplies it, which quiets it anyway, so the outputs match the scalar code bit for bit.
LS_DQ_AVX2 inline float h2f(uint16_t h) {
  return _cvtsh_ss(h);
}

LS_DQ_AVX2 inline __m256i load256(const void* p) {
  return _mm256_loadu_si256(static_cast<const __m256i*>(p));
}
LS_DQ_AVX2 inline __m128i load128(const void* p) {
  return _mm_loadu_si128(static_cast<const __m128i*>(p));
}
LS_DQ_AVX2 inline __m128i load64(const void* p) {
  return _mm_loadl_epi64(static_cast<const __m128i*>(p));
}

// Low 8 signed / unsigned bytes of b as floats.
LS_DQ_AVX2 inline __m256 i8_to_ps(__m128i b) {
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b));
}
LS_DQ_AVX2 inline __m256 u8_to_ps(__m128i b) {
  return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(b));
}

// y[0..16) = s * q[0..16) for 16 signed bytes q (the order of Q6_K's (d * sc) * q).
LS_DQ_AVX2 inline void scale16_i8(float* y, __m128i q, float s) {
  const __m256 sv = _mm256_set1_ps(s);
  _mm256_storeu_ps(y, _mm256_mul_ps(sv, i8_to_ps(q)));
  _mm256_storeu_ps(y + 8, _mm256_mul_ps(sv, i8_to_ps(_mm_unpackhi_epi64(q, q))));
}

// y[0..32) = q[0..32) * d for 32 signed bytes q (the order of the 32-block types' q * d).
LS_DQ_AVX2 inline void times_d32(float* y, __m256i q, __m256 d) {
  const __m128i lo = _mm256_castsi256_si128(q), hi = _mm256_extracti128_si256(q, 1);
  _mm256_storeu_ps(y, _mm256_mul_ps(i8_to_ps(lo), d));
  _mm256_storeu_ps(y + 8, _mm256_mul_ps(i8_to_ps(_mm_unpackhi_epi64(lo, lo)), d));
  _mm256_storeu_ps(y + 16, _mm256_mul_ps(i8_to_ps(hi), d));
  _mm256_storeu_ps(y + 24, _mm256_mul_ps(i8_to_ps(_mm_unpackhi_epi64(hi, hi)), d));
}

// y[0..32) = dl * q[0..32) - ml for 32 unsigned bytes q (Q4_K/Q5_K: d1 * q - m1).
LS_DQ_AVX2 inline void affine32_u8(float* y, __m256i q, float dl, float ml) {
  const __m256 dv = _mm256_set1_ps(dl), mv = _mm256_set1_ps(ml);
  const __m128i lo = _mm256_castsi256_si128(q), hi = _mm256_extracti128_si256(q, 1);
  _mm256_storeu_ps(y, _mm256_sub_ps(_mm256_mul_ps(dv, u8_to_ps(lo)), mv));
  _mm256_storeu_ps(y + 8,
                   _mm256_sub_ps(_mm256_mul_ps(dv, u8_to_ps(_mm_unpackhi_epi64(lo, lo))), mv));
  _mm256_storeu_ps(y + 16, _mm256_sub_ps(_mm256_mul_ps(dv, u8_to_ps(hi)), mv));
  _mm256_storeu_ps(y + 24,
                   _mm256_sub_ps(_mm256_mul_ps(dv, u8_to_ps(_mm_unpackhi_epi64(hi, hi))), mv));
}

// The 8 six-bit scales and 8 six-bit mins of a Q4_K/Q5_K block (k4_scale_min for j = 0..7),
// as d * sc[j] and dmin * m[j].
LS_DQ_AVX2 inline void k4_scales(const uint8_t* q, float d, float dmin, float* ds, float* ms) {
  uint32_t a, b, c;
  std::memcpy(&a, q, 4);
  std::memcpy(&b, q + 4, 4);
  std::memcpy(&c, q + 8, 4);
  const uint32_t sc_lo = a & 0x3f3f3f3f, m_lo = b & 0x3f3f3f3f;
  const uint32_t sc_hi = (c & 0x0f0f0f0f) | ((a >> 2) & 0x30303030);
  const uint32_t m_hi = ((c >> 4) & 0x0f0f0f0f) | ((b >> 2) & 0x30303030);
  const __m128i sc = _mm_cvtsi64_si128(int64_t(uint64_t(sc_lo) | uint64_t(sc_hi) << 32));
  const __m128i m = _mm_cvtsi64_si128(int64_t(uint64_t(m_lo) | uint64_t(m_hi) << 32));
  _mm256_storeu_ps(ds, _mm256_mul_ps(_mm256_set1_ps(d), u8_to_ps(sc)));
  _mm256_storeu_ps(ms, _mm256_mul_ps(_mm256_set1_ps(dmin), u8_to_ps(m)));
}

// ---- 32-element blocks ----

LS_DQ_AVX2 void dq_q4_0(const void* src, float* y, int64_t nb) {
  const auto* x = static_cast<const BlockQ4_0*>(src);
  const __m128i m4 = _mm_set1_epi8(0x0F), k8 = _mm_set1_epi8(8);
  for (int64_t i = 0; i < nb; ++i, y += kQK) {
    const __m256 d = _mm256_set1_ps(h2f(x[i].d));
    const __m128i qs = load128(x[i].qs);
    const __m128i lo = _mm_sub_epi8(_mm_and_si128(qs, m4), k8);
    const __m128i hi = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(qs, 4), m4), k8);
    times_d32(y, _mm256_set_m128i(hi, lo), d);
  }
}

LS_DQ_AVX2 void dq_q5_0(const void* src, float* y, int64_t nb) {
  const auto* x = static_cast<const BlockQ5_0*>(src);
  const __m128i m4 = _mm_set1_epi8(0x0F);
  const __m256i k16 = _mm256_set1_epi8(16);
  // Byte e of the block takes bit e of qh: broadcast qh byte e / 8, test bit e % 8.
  const __m256i spread = _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202,
                                           0x0101010101010101, 0x0000000000000000);
  const __m256i bit = _mm256_set1_epi64x(int64_t(0x8040201008040201));
  for (int64_t i = 0; i < nb; ++i, y += kQK) {
    const __m256 d = _mm256_set1_ps(h2f(x[i].d));
    uint32_t qh;
    std::memcpy(&qh, x[i].qh, 4);
    const __m256i qhb = _mm256_shuffle_epi8(_mm256_set1_epi32(int(qh)), spread);
    const __m256i h = _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(qhb, bit), bit), k16);
    const __m128i qs = load128(x[i].qs);
    const __m256i nib =
        _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(qs, 4), m4), _mm_and_si128(qs, m4));
    times_d32(y, _mm256_sub_epi8(_mm256_or_si256(nib, h), k16), d);
  }
}

LS_DQ_AVX2 void dq_q8_0(const void* src, float* y, int64_t nb) {
  const auto* x = static_cast<const BlockQ8_0*>(src);
  for (int64_t i = 0; i < nb; ++i, y += kQK) {
    const __m256 d = _mm256_set1_ps(h2f(x[i].d));
    _mm256_storeu_ps(y, _mm256_mul_ps(i8_to_ps(load64(x[i].qs)), d));
    _mm256_storeu_ps(y + 8, _mm256_mul_ps(i8_to_ps(load64(x[i].qs + 8)), d));
    _mm256_storeu_ps(y + 16, _mm256_mul_ps(i8_to_ps(load64(x[i].qs + 16)), d));
    _mm256_storeu_ps(y + 24, _mm256_mul_ps(i8_to_ps(load64(x[i].qs + 24)), d));
  }
}

// ---- K types ----

LS_DQ_AVX2 void dq_q4_k(const void* src, float* y, int64_t nb) {
  const auto* x = static_cast<const BlockQ4_K*>(src);
  const __m256i m4 = _mm256_set1_epi8(0x0F);
  for (int64_t i = 0; i < nb; ++i) {
    alignas(32) float ds[8], ms[8];
    k4_scales(x[i].scales, h2f(x[i].d), h2f(x[i].dmin), ds, ms);
    for (int j = 0; j < 4; ++j, y += 64) {
      const __m256i q = load256(x[i].qs + 32 * j);
      affine32_u8(y, _mm256_and_si256(q, m4), ds[2 * j], ms[2 * j]);
      affine32_u8(y + 32, _mm256_and_si256(_mm256_srli_epi16(q, 4), m4), ds[2 * j + 1],
                  ms[2 * j + 1]);
    }
  }
}

LS_DQ_AVX2 void dq_q5_k(const void* src, float* y, int64_t nb) {
  const auto* x = static_cast<const BlockQ5_K*>(src);
  const __m256i m4 = _mm256_set1_epi8(0x0F), k16 = _mm256_set1_epi8(16);
  for (int64_t i = 0; i < nb; ++i) {
    alignas(32) float ds[8], ms[8];
    k4_scales(x[i].scales, h2f(x[i].d), h2f(x[i].dmin), ds, ms);
    __m256i qh = load256(x[i].qh);  // bits 0, 1 of each byte: the high bits of chunk j
    for (int j = 0; j < 4; ++j, y += 64, qh = _mm256_srli_epi16(qh, 2)) {
      const __m256i q = load256(x[i].qs + 32 * j);
      const __m256i h1 = _mm256_and_si256(_mm256_slli_epi16(qh, 4), k16);
      const __m256i h2 = _mm256_and_si256(_mm256_slli_epi16(qh, 3), k16);
      affine32_u8(y, _mm256_or_si256(_mm256_and_si256(q, m4), h1), ds[2 * j], ms[2 * j]);
      affine32_u8(y + 32, _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q, 4), m4), h2),
                  ds[2 * j + 1], ms[2 * j + 1]);
    }
  }
}

LS_DQ_AVX2 void dq_q6_k(const void* src, float* y, int64_t nb) {
  const auto* x = static_cast<const BlockQ6_K*>(src);
  const __m256i m4 = _mm256_set1_epi8(0x0F), m30 = _mm256_set1_epi8(0x30);
  const __m256i k32 = _mm256_set1_epi8(32);
  for (int64_t i = 0; i < nb; ++i) {
    // Output group g (16 elements) uses scales[g]: ds[g] = d * scales[g].
    alignas(32) float ds[16];
    const __m256 d = _mm256_set1_ps(h2f(x[i].d));
    const __m128i sc = load128(x[i].scales);
    _mm256_store_ps(ds, _mm256_mul_ps(d, i8_to_ps(sc)));
    _mm256_store_ps(ds + 8, _mm256_mul_ps(d, i8_to_ps(_mm_unpackhi_epi64(sc, sc))));
    for (int h = 0; h < 2; ++h, y += 128) {
      const __m256i ql0 = load256(x[i].ql + 64 * h), ql1 = load256(x[i].ql + 64 * h + 32);
      const __m256i qh = load256(x[i].qh + 32 * h);
      const __m256i q[4] = {
          _mm256_or_si256(_mm256_and_si256(ql0, m4),
                          _mm256_and_si256(_mm256_slli_epi16(qh, 4), m30)),
          _mm256_or_si256(_mm256_and_si256(ql1, m4),
                          _mm256_and_si256(_mm256_slli_epi16(qh, 2), m30)),
          _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4),
                          _mm256_and_si256(qh, m30)),
          _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4),
                          _mm256_and_si256(_mm256_srli_epi16(qh, 2), m30)),
      };
      const float* s = ds + 8 * h;
      for (int k = 0; k < 4; ++k) {
        const __m256i v = _mm256_sub_epi8(q[k], k32);
        scale16_i8(y + 32 * k, _mm256_castsi256_si128(v), s[2 * k]);
        scale16_i8(y + 32 * k + 16, _mm256_extracti128_si256(v, 1), s[2 * k + 1]);
      }
    }
  }
}

// ---- plain 16-bit types ----

// Exact conversion of 8 halves, NaNs included: vcvtph2ps quiets a signalling NaN, the scalar
// code keeps its bits, so NaN lanes are rebuilt from the half's bits (rare path).
LS_DQ_AVX2 inline __m256 f16x8(__m128i h) {
  const __m256 f = _mm256_cvtph_ps(h);
  const __m256 nan = _mm256_cmp_ps(f, f, _CMP_UNORD_Q);
  if (_mm256_testz_ps(nan, nan)) return f;
  const __m256i x = _mm256_cvtepu16_epi32(h);
  const __m256i bits = _mm256_or_si256(
      _mm256_or_si256(_mm256_slli_epi32(_mm256_and_si256(x, _mm256_set1_epi32(0x7fff)), 13),
                      _mm256_set1_epi32(0x70000000)),
      _mm256_slli_epi32(_mm256_and_si256(x, _mm256_set1_epi32(0x8000)), 16));
  return _mm256_blendv_ps(f, _mm256_castsi256_ps(bits), nan);
}

LS_DQ_AVX2 void dq_f16(const void* src, float* y, int64_t n) {
  const auto* h = static_cast<const uint8_t*>(src);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    _mm256_storeu_ps(y + i, f16x8(load128(h + 2 * i)));
    _mm256_storeu_ps(y + i + 8, f16x8(load128(h + 2 * i + 16)));
  }
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, f16x8(load128(h + 2 * i)));
  for (; i < n; ++i) {
    uint16_t v;
    std::memcpy(&v, h + 2 * i, 2);
    y[i] = fp16_to_fp32(v);
  }
}

LS_DQ_AVX2 void dq_bf16(const void* src, float* y, int64_t n) {
  const auto* h = static_cast<const uint8_t*>(src);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256i a = _mm256_cvtepu16_epi32(load128(h + 2 * i));
    const __m256i b = _mm256_cvtepu16_epi32(load128(h + 2 * i + 16));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(y + i), _mm256_slli_epi32(a, 16));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(y + i + 8), _mm256_slli_epi32(b, 16));
  }
  for (; i < n; ++i) {
    uint16_t v;
    std::memcpy(&v, h + 2 * i, 2);
    y[i] = bf16_to_fp32(v);
  }
}

}  // namespace

void fill_dequant_avx2(DequantKernels& k) {
  k.fn[int(TensorType::Q4_0)] = dq_q4_0;
  k.fn[int(TensorType::Q5_0)] = dq_q5_0;
  k.fn[int(TensorType::Q8_0)] = dq_q8_0;
  k.fn[int(TensorType::Q4_K)] = dq_q4_k;
  k.fn[int(TensorType::Q5_K)] = dq_q5_k;
  k.fn[int(TensorType::Q6_K)] = dq_q6_k;
  k.fn[int(TensorType::F16)] = dq_f16;
  k.fn[int(TensorType::BF16)] = dq_bf16;
}

}  // namespace lockstep::quant

#else

namespace lockstep::quant {
void fill_dequant_avx2(DequantKernels&) {}
}  // namespace lockstep::quant

#endif
