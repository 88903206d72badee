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

// The activation of 32-block weight types is nb Q8_0 blocks followed, at byte offset
// q8_0_extras_offset(nb), by float d[nb] (the block scales as floats) and float s[nb]
// (d * sum of the block's quants), which the SIMD kernels use instead of converting halves.
inline int64_t q8_0_extras_offset(int64_t nb) {
  return (nb * 34 + 31) / 32 * 32;
}
inline int64_t q8_0_activation_bytes(int64_t nb) {
  return q8_0_extras_offset(nb) + nb * 8;
}
struct Q8_0Extras {
  const float* d;
  const float* s;
};
// `act` must be 4-byte aligned (any allocation is).
inline Q8_0Extras q8_0_extras(const void* act, int64_t nb) {
  const auto* base =
      reinterpret_cast<const float*>(static_cast<const uint8_t*>(act) + q8_0_extras_offset(nb));
  return {base, base + nb};
}

void fill_scalar_kernels(DotKernels& k);
void fill_avx2_kernels(DotKernels& k);    // overrides the entries it has
void fill_avx512_kernels(DotKernels& k);  // likewise

}  // namespace lockstep::quant
