// Internal: the kernel tables behind vec_dot.h.
#pragma once

#include <cstdint>

namespace lockstep::quant {

// Dot of a weight row and an activation row of n elements (n a multiple of the block size).
using DotFn = float (*)(const void* w, const void* a, int64_t n);

inline constexpr int kMaxTypeId = 40;
struct DotKernels {
  DotFn dot[kMaxTypeId] = {};
};

void fill_scalar_kernels(DotKernels& k);
void fill_avx2_kernels(DotKernels& k);    // overrides the entries it has
void fill_avx512_kernels(DotKernels& k);  // likewise

}  // namespace lockstep::quant
