// AVX-512 (F, BW, VL, DQ) dequantizers of dequantize_simd.h: the block types of
// dequantize_simd_impl.inc with 16-float registers and masks for Q5_0's high bits, and F16/BF16,
// whose row tails use masked loads and stores. Bit-identical to the scalar code: the same float
// operations on the same operands in the same order. AVX-512F has fused multiply-adds of its
// own, so contraction is switched off for this file.
#include "quant/dequantize_simd.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))

// GCC 12's AVX-512 headers trip -Wuninitialized on their own _mm512_undefined_*() idiom.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include <cstring>

#include "quant/blocks.h"
#include "quant/fp16.h"

#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#else
#pragma GCC optimize("fp-contract=off")
#endif

#define LS_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,f16c")))
#define LS_AVX512BW 1

namespace lockstep::quant {
namespace {

#include "quant/x86_bytes.inc"

LS_TARGET inline void store_i8_scaled(float* y, __m128i q, float s) {
  _mm512_storeu_ps(y,
                   _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q)), _mm512_set1_ps(s)));
}

LS_TARGET inline void store_u8_affine(float* y, __m128i q, float d, float m) {
  const __m512 v = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(q));
  _mm512_storeu_ps(y, _mm512_sub_ps(_mm512_mul_ps(_mm512_set1_ps(d), v), _mm512_set1_ps(m)));
}

#include "quant/dequantize_simd_impl.inc"

// ---- plain 16-bit types ----

// Exact conversion of 16 halves, NaNs included: vcvtph2ps quiets a signalling NaN, the scalar
// code keeps its bits, so NaN lanes are rebuilt from the half's bits (rare path).
LS_TARGET inline __m512 f16x16(__m256i h) {
  const __m512 f = _mm512_cvtph_ps(h);
  const __mmask16 nan = _mm512_cmp_ps_mask(f, f, _CMP_UNORD_Q);
  if (!nan) return f;
  const __m512i x = _mm512_cvtepu16_epi32(h);
  const __m512i bits = _mm512_or_si512(
      _mm512_or_si512(_mm512_slli_epi32(_mm512_and_si512(x, _mm512_set1_epi32(0x7fff)), 13),
                      _mm512_set1_epi32(0x70000000)),
      _mm512_slli_epi32(_mm512_and_si512(x, _mm512_set1_epi32(0x8000)), 16));
  return _mm512_mask_blend_ps(nan, f, _mm512_castsi512_ps(bits));
}

LS_TARGET void dq_f16(const void* src, float* y, int64_t n) {
  const auto* h = static_cast<const uint8_t*>(src);
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    _mm512_storeu_ps(y + i, f16x16(load256(h + 2 * i)));
    _mm512_storeu_ps(y + i + 16, f16x16(load256(h + 2 * i + 32)));
  }
  for (; i < n; i += 16) {
    const __mmask16 k = n - i >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (n - i)) - 1);
    _mm512_mask_storeu_ps(y + i, k, f16x16(_mm256_maskz_loadu_epi16(k, h + 2 * i)));
  }
}

LS_TARGET void dq_bf16(const void* src, float* y, int64_t n) {
  const auto* h = static_cast<const uint8_t*>(src);
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    const __m512i a = _mm512_cvtepu16_epi32(load256(h + 2 * i));
    const __m512i b = _mm512_cvtepu16_epi32(load256(h + 2 * i + 32));
    _mm512_storeu_si512(y + i, _mm512_slli_epi32(a, 16));
    _mm512_storeu_si512(y + i + 16, _mm512_slli_epi32(b, 16));
  }
  for (; i < n; i += 16) {
    const __mmask16 k = n - i >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (n - i)) - 1);
    const __m512i a = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(k, h + 2 * i));
    _mm512_mask_storeu_epi32(y + i, k, _mm512_slli_epi32(a, 16));
  }
}

}  // namespace

void fill_dequant_avx512(DequantKernels& k) {
  set_block_dequantizers(k);
  k.fn[int(TensorType::F16)] = dq_f16;
  k.fn[int(TensorType::BF16)] = dq_bf16;
}

}  // namespace lockstep::quant

#else

namespace lockstep::quant {
void fill_dequant_avx512(DequantKernels&) {}
}  // namespace lockstep::quant

#endif
