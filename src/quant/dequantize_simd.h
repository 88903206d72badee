// Internal: SIMD versions of dequantize_row (quantize.h) for the types the reference matmul
// streams most: Q4_0, Q5_0, Q8_0, Q4_K, Q5_K, Q6_K, F16, BF16.
//
// Every kernel is bit-identical to the scalar dequantizer of quantize.cpp / quantize_k.cpp: it
// performs the same float operations on the same operands in the same order (e.g. Q6_K's
// (d * scale) * q, Q4_K's (d * scale) * q - dmin * min), never fused into a multiply-add. The
// kernel files carry target attributes without FMA and switch floating-point contraction off.
// dequantize_row picks the kernel of active_isa() (vec_dot.h), so force_isa also selects the
// dequantizer; Isa::Scalar gives the portable code.
#pragma once

#include <cstdint>

#include "quant/tensor_type.h"
#include "quant/vec_dot.h"

namespace lockstep::quant {

// nb blocks of the type (for F16/BF16, whose block is one element, nb elements) -> floats.
using DequantFn = void (*)(const void* src, float* dst, int64_t nb);

inline constexpr int kMaxDequantTypeId = 40;
struct DequantKernels {
  DequantFn fn[kMaxDequantTypeId] = {};
};

void fill_dequant_avx2(DequantKernels& k);    // sets the entries it has
void fill_dequant_avx512(DequantKernels& k);  // likewise

// The SIMD kernel for `type` under `isa`, or nullptr where the scalar code is used (Isa::Scalar,
// a type without a kernel, or a build without x86 SIMD). `isa` must be supported by the CPU.
DequantFn simd_dequantizer(Isa isa, TensorType type);

}  // namespace lockstep::quant
