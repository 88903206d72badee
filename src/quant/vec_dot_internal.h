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
// up to d / 2. The kernels take 254 * dot(w, q1) + dot(w, q2) with exact integer dots, so a
// product is nearly exact in the activation (the weights' own quantization remains).
inline constexpr int kTerm2Scale = 254;
inline constexpr float kInvTerm2Scale = 1.0f / 254.0f;

// The activation of 32-block weight types, for nb blocks, holds the two terms combined as one
// int16 per element, A = 254 * q1 + q2 (|A| <= 32385), so that x = e * A with e = d / 254:
//   [0, nb * 64)              int16 A[nb][32];
//   nb * 64                   float e[nb] (exact float), then float s[nb] = e * sum(A) per block
//                             (the block's sum, for the types with a min).
// The kernels multiply the weight levels widened to int16 with A (pmaddwd / vpdpwssd): one
// 16-bit product per element instead of one 8-bit product per term.
inline int64_t q8_0_activation_bytes(int64_t nb) {
  return nb * 72;
}
struct Q8_0Activation {
  const int16_t* a;  // block i at a + 32 * i
  const float* e;
  const float* s;
};
// `act` must be 4-byte aligned (any allocation is).
inline Q8_0Activation q8_0_activation(const void* act, int64_t nb) {
  const auto* bytes = static_cast<const uint8_t*>(act);
  const auto* e = reinterpret_cast<const float*>(bytes + nb * 64);
  return {reinterpret_cast<const int16_t*>(act), e, e + nb};
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
