// Conversion between float32 and the block formats of tensor_type.h. Pure functions: one
// row (n elements, a multiple of the block size) at a time, no allocation.
#pragma once

#include <cstdint>

#include "quant/tensor_type.h"

namespace lockstep {

// src holds row_bytes(type, n) bytes. Throws InputError for a type that cannot be dequantized.
void dequantize_row(TensorType type, const void* src, float* dst, int64_t n);

// dst receives row_bytes(type, n) bytes. Throws InputError for a type that cannot be written.
// Results are deterministic; for Q4_0/Q4_1/Q5_0/Q5_1/Q8_0/F16/BF16 they are byte-identical to
// llama.cpp's reference quantizers.
void quantize_row(TensorType type, const float* src, void* dst, int64_t n);

}  // namespace lockstep
