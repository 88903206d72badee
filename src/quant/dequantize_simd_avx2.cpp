// AVX2 (+F16C) dequantizers of dequantize_simd.h: the block types of dequantize_simd_impl.inc
// with 8-float registers, and F16/BF16. Bit-identical to the scalar code: the same float
// operations on the same operands in the same order. The target attribute deliberately leaves
// FMA out and contraction is switched off, so no multiply-add can be fused.
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

#define LS_TARGET __attribute__((target("avx2,f16c")))
#define LS_AVX512BW 0

namespace lockstep::quant {
namespace {

#include "quant/x86_bytes.inc"

// Low 8 signed bytes of b as floats.
LS_TARGET inline __m256 i8x8_to_ps(__m128i b) {
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b));
}

LS_TARGET inline void store_i8_scaled(float* y, __m128i q, float s) {
  const __m256 sv = _mm256_set1_ps(s);
  _mm256_storeu_ps(y, _mm256_mul_ps(i8x8_to_ps(q), sv));
  _mm256_storeu_ps(y + 8, _mm256_mul_ps(i8x8_to_ps(_mm_unpackhi_epi64(q, q)), sv));
}

LS_TARGET inline void store_u8_affine(float* y, __m128i q, float d, float m) {
  const __m256 dv = _mm256_set1_ps(d), mv = _mm256_set1_ps(m);
  const __m256 lo = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(q));
  const __m256 hi = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_unpackhi_epi64(q, q)));
  _mm256_storeu_ps(y, _mm256_sub_ps(_mm256_mul_ps(dv, lo), mv));
  _mm256_storeu_ps(y + 8, _mm256_sub_ps(_mm256_mul_ps(dv, hi), mv));
}

#include "quant/dequantize_simd_impl.inc"

// ---- plain 16-bit types ----

// Exact conversion of 8 halves, NaNs included: vcvtph2ps quiets a signalling NaN, the scalar
// code keeps its bits, so NaN lanes are rebuilt from the half's bits (rare path).
LS_TARGET inline __m256 f16x8(__m128i h) {
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

LS_TARGET void dq_f16(const void* src, float* y, int64_t n) {
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

LS_TARGET void dq_bf16(const void* src, float* y, int64_t n) {
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
  set_block_dequantizers(k);
  k.fn[int(TensorType::F16)] = dq_f16;
  k.fn[int(TensorType::BF16)] = dq_bf16;
}

}  // namespace lockstep::quant

#else

namespace lockstep::quant {
void fill_dequant_avx2(DequantKernels&) {}
}  // namespace lockstep::quant

#endif
