#include "backend/cpu/gemm_q8_0.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <utility>
#include <vector>

#include "backend/cpu/gemm_x86.h"
#include "quant/vec_dot.h"
#include "quant/vec_dot_internal.h"
#include "util/error.h"

namespace lockstep::cpu_fast {

namespace {

// ggml's block layouts (ggml-common.h): fp16 scale d, then the levels.
constexpr size_t kQ4_0Bytes = 18;  // d, qs[16]: element j low nibble of qs[j], j+16 high nibble
constexpr size_t kQ4_1Bytes = 20;  // d, m, qs[16] as Q4_0
constexpr size_t kQ5_0Bytes = 22;  // d, qh[4] (bit j: bit 4 of element j), qs[16] as Q4_0
constexpr size_t kQ5_1Bytes = 24;  // d, m, qh[4], qs[16] as Q5_0
constexpr size_t kQ8_0Bytes = 34;  // d, int8 qs[32]

uint16_t load_u16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}

#if LS_GEMM_X86

LS_INLINE uint32_t load_u32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

using GemmFn = void (*)(const uint8_t*, size_t, int64_t, const Q8_0Rows&, int64_t, int64_t, float*,
                        int64_t, const uint32_t*);

// ---- per instruction set --------------------------------------------------------------------

namespace vnni {
#define LS_TARGET LS_VNNI
LS_TARGET LS_INLINE __m256i fifth_bits(uint32_t qh) {
  return _mm256_maskz_mov_epi8(__mmask32(qh), _mm256_set1_epi8(0x10));
}
LS_TARGET LS_INLINE __m256i dot16(__m256i src, __m256i lo, __m256i hi, __m256i a0, __m256i a1) {
  return _mm256_dpwssd_epi32(_mm256_dpwssd_epi32(src, lo, a0), hi, a1);
}
#include "backend/cpu/gemm_q8_0_levels.inc"
// After the block formats: the group kernels use their Levels structs.
#include "backend/cpu/gemm_q8_0_groups.inc"
// After the kernels it drives.
#include "backend/cpu/gemm_q8_0_driver.inc"
#undef LS_TARGET
}  // namespace vnni

namespace avx2 {
#define LS_TARGET LS_AVX2
LS_TARGET LS_INLINE __m256i fifth_bits(uint32_t qh) {
  // Byte e takes byte e / 8 of qh, keeps bit e % 8, and becomes 0x10 when it is set.
  const __m256i bytes = _mm256_shuffle_epi8(
      _mm256_set1_epi32(int(qh)), _mm256_setr_epi64x(0x0000000000000000, 0x0101010101010101,
                                                     0x0202020202020202, 0x0303030303030303));
  const __m256i bit = _mm256_set1_epi64x(int64_t(0x8040201008040201));
  const __m256i set = _mm256_cmpeq_epi8(_mm256_and_si256(bytes, bit), bit);
  return _mm256_and_si256(set, _mm256_set1_epi8(0x10));
}
// Exact: |level| <= 128 and |A| <= 32385 give pair sums below 2^24.
LS_TARGET LS_INLINE __m256i dot16(__m256i src, __m256i lo, __m256i hi, __m256i a0, __m256i a1) {
  return _mm256_add_epi32(src,
                          _mm256_add_epi32(_mm256_madd_epi16(lo, a0), _mm256_madd_epi16(hi, a1)));
}
#include "backend/cpu/gemm_q8_0_levels.inc"
// After the block formats, as in vnni.
#include "backend/cpu/gemm_q8_0_groups8.inc"
// After the kernels it drives, as in vnni.
#include "backend/cpu/gemm_q8_0_driver.inc"
#undef LS_TARGET
}  // namespace avx2

bool vnni_active() {
  static const bool has_vnni = __builtin_cpu_supports("avx512vnni");
  return active_isa() == Isa::Avx512 && has_vnni;
}

GemmFn pick(TensorType type) {
  if (active_isa() == Isa::Scalar) return nullptr;
  return vnni_active() ? vnni::pick_groups(type) : avx2::pick_groups(type);
}

#endif  // LS_GEMM_X86

}  // namespace

bool gemm_q8_0_supports(TensorType type) {
  return type == TensorType::Q4_0 || type == TensorType::Q4_1 || type == TensorType::Q5_0 ||
         type == TensorType::Q5_1 || type == TensorType::Q8_0;
}

bool gemm_q8_0_uses_groups(TensorType type) {
#if LS_GEMM_X86
  return gemm_q8_0_supports(type) && active_isa() != Isa::Scalar;
#else
  (void)type;
  return false;
#endif
}

bool gemm_q8_0_splits_decode(TensorType type) {
#if LS_GEMM_X86
  return type != TensorType::Q8_0 && gemm_q8_0_supports(type) && active_isa() != Isa::Scalar &&
         !vnni_active();
#else
  (void)type;
  return false;
#endif
}

namespace {

// fifth_bit_words of one byte of qh: byte i holds nibbles k = 2i, 2i + 1, whose bit j (qh bit
// j + 4k) goes to bit 8j + k; here for byte 0 (k = 0, 1), shifted by 2i for byte i.
constexpr std::array<uint32_t, 256> fifth_bit_bytes() {
  std::array<uint32_t, 256> t{};
  for (uint32_t v = 0; v < 256; ++v)
    for (uint32_t j = 0; j < 4; ++j)
      t[v] |= ((v >> j) & 1u) << (8 * j) | ((v >> (j + 4)) & 1u) << (8 * j + 1);
  return t;
}
constexpr std::array<uint32_t, 256> kFifthBitBytes = fifth_bit_bytes();

}  // namespace

bool gemm_q8_0_uses_fifth_bit_words(TensorType type) {
  return (type == TensorType::Q5_0 || type == TensorType::Q5_1) && gemm_q8_0_splits_decode(type);
}

void fifth_bit_words(TensorType type, const uint8_t* w, size_t w_stride, int64_t rows, int64_t nb,
                     uint32_t* dst) {
  if (type != TensorType::Q5_0 && type != TensorType::Q5_1)
    throw Error(std::string("fifth_bit_words: ") + tensor_type_info(type).name +
                " has no fifth bits");
  const size_t block_bytes = type == TensorType::Q5_0 ? kQ5_0Bytes : kQ5_1Bytes;
  const size_t qh_at = type == TensorType::Q5_0 ? 2 : 4;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t b = 0; b < nb; ++b) {
      uint32_t qh;
      std::memcpy(&qh, w + size_t(r) * w_stride + size_t(b) * block_bytes + qh_at, 4);
      const uint32_t word = kFifthBitBytes[qh & 255] | kFifthBitBytes[(qh >> 8) & 255] << 2 |
                            kFifthBitBytes[(qh >> 16) & 255] << 4 | kFifthBitBytes[qh >> 24] << 6;
      dst[r * nb + b] = word;
    }
  std::fill_n(dst + rows * nb, kFifthBitPadding, 0u);
}

void split_from_q8_0(const void* q8_0_row, int64_t nb, void* dst) {
#if LS_GEMM_X86
  if (active_isa() != Isa::Scalar && !vnni_active()) {
    return avx2::split_activation(quant::q8_0_activation(q8_0_row, nb), nb,
                                  static_cast<int8_t*>(dst));
  }
#endif
  (void)q8_0_row, (void)nb, (void)dst;
  throw Error("split_from_q8_0: the split layout is for AVX2 without AVX-512 VNNI");
}

void groups_from_q8_0(const void* q8_0_row, int64_t nb, void* dst) {
#if LS_GEMM_X86
  if (vnni_active()) return vnni::activation_groups(q8_0_row, nb, static_cast<uint8_t*>(dst));
  if (active_isa() != Isa::Scalar)
    return avx2::activation_groups(q8_0_row, nb, static_cast<uint8_t*>(dst));
#endif
  (void)q8_0_row, (void)nb, (void)dst;
  throw Error("groups_from_q8_0: the group layout needs AVX2 or AVX-512 VNNI");
}

void gemm_q8_0(TensorType type, const uint8_t* w, size_t w_stride, int64_t n_rows,
               const Q8_0Rows& a, int64_t n_tokens, int64_t n_blocks, float* y, int64_t y_stride,
               const uint32_t* fifth_bits) {
#if LS_GEMM_X86
  GemmFn fn = pick(type);
  if (fn) return fn(w, w_stride, n_rows, a, n_tokens, n_blocks, y, y_stride, fifth_bits);
#endif
  (void)fifth_bits;
  // Portable path: vec_dot on each pair (the activation rows are vec_dot's own format).
  (void)load_u16;
  for (int64_t t = 0; t < n_tokens; ++t)
    for (int64_t r = 0; r < n_rows; ++r)
      y[t * y_stride + r] =
          vec_dot(type, w + size_t(r) * w_stride, a.blocks + size_t(t) * a.stride, n_blocks * 32);
}

}  // namespace lockstep::cpu_fast
