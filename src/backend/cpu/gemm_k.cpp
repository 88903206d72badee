#include "backend/cpu/gemm_k.h"

#include <algorithm>
#include <array>
#include <cstring>

#include "backend/cpu/gemm_x86.h"
#include "quant/blocks.h"
#include "quant/vec_dot.h"
#include "quant/vec_dot_internal.h"

namespace lockstep::cpu_fast {

void k16_from_q8_k(const void* q8_k_row, int64_t nb, void* dst) {
  const auto* q1 = static_cast<const quant::BlockQ8_K*>(q8_k_row);
  const quant::Q8KTerm2* q2 = quant::q8_k_term2(q8_k_row, nb);
  auto* out = static_cast<uint8_t*>(dst);
  for (int64_t b = 0; b < nb; ++b) {
    uint8_t* o = out + size_t(b) * kK16BlockBytes;
    int16_t a[256], sums[16];
    for (int i = 0; i < 256; ++i) a[i] = int16_t(quant::kTerm2Scale * q1[b].qs[i] + q2[b].qs[i]);
    for (int j = 0; j < 8; ++j) {
      sums[2 * j] = int16_t(q1[b].bsums[2 * j] + q1[b].bsums[2 * j + 1]);
      sums[2 * j + 1] = int16_t(q2[b].bsums[2 * j] + q2[b].bsums[2 * j + 1]);
    }
    float d;
    std::memcpy(&d, &q1[b].d, 4);
    const float e = d / float(quant::kTerm2Scale);
    std::memcpy(o, a, 512);
    std::memcpy(o + 512, sums, 32);
    std::memcpy(o + 544, &e, 4);
    std::memset(o + 548, 0, kK16BlockBytes - 548);
  }
}

namespace {

#if LS_GEMM_X86

// One row's superblock, unpacked: levels times sub-block scales, the offset taken off; for the
// types with mins, (254 m_j, m_j) per sub-block j of 32 and the float scales.
struct alignas(64) Unpacked {
  int16_t w[256];
  int16_t wm[16];
  float d;      // superblock scale of the levels
  float neg_m;  // -dmin (Q4_K, Q5_K)
};

// Superblocks of unpacked rows each thread keeps (1.2 MB): a caller's block of 16 rows of up to
// 32768 columns, unpacked once for all the tokens of a batch.
constexpr int64_t kScratchBlocks = 2048;
alignas(64) thread_local Unpacked scratch[kScratchBlocks];

namespace vnni {
#define LS_TARGET LS_VNNI
using IV = __m512i;
using FV = __m512;
inline constexpr int kI16 = 32;
LS_TARGET LS_INLINE IV ld(const int16_t* p) {
  return _mm512_loadu_si512(p);
}
// In asm with acc tied to its register where GCC compiles: its intrinsic costs the 4 x 4 tile
// register copies and spills (as in gemm_q8_0_groups.inc's dot_into).
LS_TARGET LS_INLINE IV dot(IV acc, IV w, IV a) {
#if defined(__GNUC__) && !defined(__clang__)
  __asm__("vpdpwssd %2, %1, %0" : "+v"(acc) : "v"(w), "v"(a));
  return acc;
#else
  return _mm512_dpwssd_epi32(acc, w, a);
#endif
}
LS_TARGET LS_INLINE FV cvt(IV i) {
  return _mm512_cvtepi32_ps(i);
}
LS_TARGET LS_INLINE FV fmadd(FV x, FV y, FV acc) {
  return _mm512_fmadd_ps(x, y, acc);
}
LS_TARGET LS_INLINE FV set1(float f) {
  return _mm512_set1_ps(f);
}
LS_TARGET LS_INLINE float hsum(FV v) {
  return _mm512_reduce_add_ps(v);
}
LS_TARGET LS_INLINE FV mins(FV acc, __m256i wm, __m256i bm, float s) {
  return _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_zextsi256_si512(_mm256_madd_epi16(wm, bm))),
                         _mm512_set1_ps(s), acc);
}
// 32 levels in one register: widened, offset and scaled at 512 bits (one op each).
using L32 = __m512i;
LS_TARGET LS_INLINE L32 widen32(__m256i bytes) {
  return _mm512_cvtepu8_epi16(bytes);
}
LS_TARGET LS_INLINE L32 sub32(L32 l, int k) {
  return _mm512_sub_epi16(l, _mm512_set1_epi16(short(k)));
}
LS_TARGET LS_INLINE L32 mul32(L32 l, L32 scale) {
  return _mm512_mullo_epi16(l, scale);
}
LS_TARGET LS_INLINE L32 scale32(int16_t s) {
  return _mm512_set1_epi16(s);
}
LS_TARGET LS_INLINE L32 scale32(int16_t lo, int16_t hi) {
  return _mm512_inserti64x4(_mm512_set1_epi16(lo), _mm256_set1_epi16(hi), 1);
}
LS_TARGET LS_INLINE void store32(int16_t* dst, L32 l) {
  _mm512_storeu_si512(dst, l);
}
LS_TARGET LS_INLINE IV dot32(IV s, L32 l, const int16_t* a) {
  return dot(s, l, ld(a));
}
#include "backend/cpu/gemm_k_tiles.inc"
#undef LS_TARGET
}  // namespace vnni

namespace avx2 {
#define LS_TARGET LS_AVX2
using IV = __m256i;
using FV = __m256;
inline constexpr int kI16 = 16;
LS_TARGET LS_INLINE IV ld(const int16_t* p) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
}
LS_TARGET LS_INLINE IV dot(IV acc, IV w, IV a) {
  return _mm256_add_epi32(acc, _mm256_madd_epi16(w, a));
}
LS_TARGET LS_INLINE FV cvt(IV i) {
  return _mm256_cvtepi32_ps(i);
}
LS_TARGET LS_INLINE FV fmadd(FV x, FV y, FV acc) {
  return _mm256_fmadd_ps(x, y, acc);
}
LS_TARGET LS_INLINE FV set1(float f) {
  return _mm256_set1_ps(f);
}
LS_TARGET LS_INLINE float hsum(FV v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
LS_TARGET LS_INLINE FV mins(FV acc, __m256i wm, __m256i bm, float s) {
  return _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_madd_epi16(wm, bm)), _mm256_set1_ps(s), acc);
}
struct L32 {
  __m256i lo, hi;  // elements 0..15, 16..31
};
LS_TARGET LS_INLINE L32 widen32(__m256i bytes) {
  return {_mm256_cvtepu8_epi16(_mm256_castsi256_si128(bytes)),
          _mm256_cvtepu8_epi16(_mm256_extracti128_si256(bytes, 1))};
}
LS_TARGET LS_INLINE L32 sub32(L32 l, int k) {
  const __m256i kk = _mm256_set1_epi16(short(k));
  return {_mm256_sub_epi16(l.lo, kk), _mm256_sub_epi16(l.hi, kk)};
}
LS_TARGET LS_INLINE L32 mul32(L32 l, L32 scale) {
  return {_mm256_mullo_epi16(l.lo, scale.lo), _mm256_mullo_epi16(l.hi, scale.hi)};
}
LS_TARGET LS_INLINE L32 scale32(int16_t s) {
  const __m256i v = _mm256_set1_epi16(s);
  return {v, v};
}
LS_TARGET LS_INLINE L32 scale32(int16_t lo, int16_t hi) {
  return {_mm256_set1_epi16(lo), _mm256_set1_epi16(hi)};
}
LS_TARGET LS_INLINE void store32(int16_t* dst, L32 l) {
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst), l.lo);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + 16), l.hi);
}
LS_TARGET LS_INLINE IV dot32(IV s, L32 l, const int16_t* a) {
  return dot(dot(s, l.lo, ld(a)), l.hi, ld(a + 16));
}
#include "backend/cpu/gemm_k_tiles.inc"
#undef LS_TARGET
}  // namespace avx2

using GemmFn = void (*)(const uint8_t*, size_t, int64_t, const K16Rows&, int64_t, int64_t, float*,
                        int64_t);

GemmFn pick(TensorType type) {
  static const bool has_vnni = __builtin_cpu_supports("avx512vnni");
  const Isa isa = active_isa();
  if (isa == Isa::Scalar) return nullptr;
  const bool vnni_ok = isa == Isa::Avx512 && has_vnni;
  switch (type) {
    case TensorType::Q4_K:
      return vnni_ok ? vnni::gemm<vnni::K45<false>> : avx2::gemm<avx2::K45<false>>;
    case TensorType::Q5_K:
      return vnni_ok ? vnni::gemm<vnni::K45<true>> : avx2::gemm<avx2::K45<true>>;
    case TensorType::Q6_K:
      return vnni_ok ? vnni::gemm<vnni::K6> : avx2::gemm<avx2::K6>;
    default:
      return nullptr;
  }
}

#else

using GemmFn = void (*)(const uint8_t*, size_t, int64_t, const K16Rows&, int64_t, int64_t, float*,
                        int64_t);
GemmFn pick(TensorType) {
  return nullptr;
}

#endif  // LS_GEMM_X86

}  // namespace

bool gemm_k_available(TensorType type) {
  return pick(type) != nullptr;
}

void gemm_k(TensorType type, const uint8_t* w, size_t w_stride, int64_t n_rows, const K16Rows& a,
            int64_t n_tokens, int64_t nb, float* y, int64_t y_stride) {
  pick(type)(w, w_stride, n_rows, a, n_tokens, nb, y, y_stride);
}

}  // namespace lockstep::cpu_fast
