// Internal: the kernel tables behind vec_dot.h.
#pragma once

#include <cstdint>
#include <cstring>

namespace lockstep::quant {

// Dot of a weight row and an activation row of n elements (n a multiple of the block size).
using DotFn = float (*)(const void* w, const void* a, int64_t n);

inline constexpr int kMaxTypeId = 40;
struct DotKernels {
  DotFn dot[kMaxTypeId] = {};
};

// Activations carry two int8 terms per element: with a group's (32 or 256 elements) scale
// d = max|x| / 127, q1 = rint(x / d) and q2 = rint((x / d - q1) * 254), so that
// x = d * (q1 + q2 / 254) to within d / 508 (plus float rounding), where one term alone is off by
// up to d / 2. The kernels take both integer dots and combine them, 254 * dot(w, q1) + dot(w, q2),
// so a product is nearly exact in the activation (the weights' own quantization remains).
inline constexpr int kTerm2Scale = 254;
inline constexpr float kInvTerm2Scale = 1.0f / 254.0f;

// The activation of 32-block weight types, for nb blocks:
//   [0, nb * 34)              nb ggml block_q8_0 {fp16 d, int8 q1[32]}: the first term;
//   q8_0_extras_offset(nb)    float e[nb]: the unit of the combined integer 254 * q1 + q2
//                             (d / 254, exact float, not the fp16 of the block), and float
//                             s[nb]: the sum of the block's values, e * sum(254 * q1 + q2);
//   q8_0_term2_offset(nb)     int8 q2[nb * 32]: the second term, 32 per block.
inline int64_t q8_0_extras_offset(int64_t nb) {
  return (nb * 34 + 31) / 32 * 32;
}
inline int64_t q8_0_term2_offset(int64_t nb) {
  return (q8_0_extras_offset(nb) + nb * 8 + 31) / 32 * 32;
}
inline int64_t q8_0_activation_bytes(int64_t nb) {
  return q8_0_term2_offset(nb) + nb * 32;
}
struct Q8_0Extras {
  const float* e;
  const float* s;
  const int8_t* q2;  // block i's second term at q2 + 32 * i
};
// `act` must be 4-byte aligned (any allocation is).
inline Q8_0Extras q8_0_extras(const void* act, int64_t nb) {
  const auto* bytes = static_cast<const uint8_t*>(act);
  const auto* base = reinterpret_cast<const float*>(bytes + q8_0_extras_offset(nb));
  return {base, base + nb, reinterpret_cast<const int8_t*>(bytes + q8_0_term2_offset(nb))};
}

// The activation of K weight types, for nb blocks:
//   [0, nb * 292)             nb ggml block_q8_K {float d, int8 q1[256], int16 bsums[16]}: the
//                             first term and its scale d (x = d * (q1 + q2 / 254));
//   q8_k_term2_offset(nb)     nb Q8KTerm2: the second term and its sums over each 16.
struct Q8KTerm2 {
  int8_t qs[256];
  int16_t bsums[16];
};
static_assert(sizeof(Q8KTerm2) == 288);
inline int64_t q8_k_term2_offset(int64_t nb) {
  return (nb * 292 + 31) / 32 * 32;
}
inline int64_t q8_k_activation_bytes(int64_t nb) {
  return q8_k_term2_offset(nb) + nb * int64_t(sizeof(Q8KTerm2));
}
inline const Q8KTerm2* q8_k_term2(const void* act, int64_t nb) {
  return reinterpret_cast<const Q8KTerm2*>(static_cast<const uint8_t*>(act) +
                                           q8_k_term2_offset(nb));
}

void fill_scalar_kernels(DotKernels& k);
void fill_avx2_kernels(DotKernels& k);    // overrides the entries it has
void fill_avx512_kernels(DotKernels& k);  // likewise

}  // namespace lockstep::quant
