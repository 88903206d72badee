// Fast CPU dot products between one weight row (any dequantizable type) and an activation row,
// the building block of the fast CPU matvec path.
//
// Activations are quantized once per matvec to the format the weight type pairs with:
//   Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 weights   -> Q8_0 activations (32-blocks; ggml's block_q8_0,
//                                             quantized exactly like quantize_row(Q8_0)),
//                                             followed by per-block float d and d * sum(qs)
//                                             that the SIMD kernels use (so the buffer is
//                                             larger than row_bytes(Q8_0, n); 4-byte aligned)
//   Q2_K, Q3_K, Q4_K, Q5_K, Q6_K weights   -> Q8_K activations (256-blocks; ggml's block_q8_K:
//                                             float d, int8 qs[256], int16 bsums[16])
//   F32, F16, BF16 weights                 -> F32 activations (the floats themselves)
// so dequantize_row(activation_type_for(t), act, ...) gives the values vec_dot really uses.
// The quantized activation is the same bytes whichever ISA is active.
//
// Kernels exist for a portable scalar path, AVX2 (+FMA, F16C) and AVX-512 (F, BW, VL, DQ); the
// best one the CPU supports is chosen at run time. Under Avx512, the types without a dedicated
// AVX-512 kernel (Q2_K, Q3_K, Q5_K, Q4_0, Q4_1, Q8_0, BF16) use their AVX2 kernel (512-bit
// versions of the 32-block kernels measured slower on Zen 4).
// Results differ between ISAs only by float rounding (different summation order).
#pragma once

#include <cstddef>
#include <cstdint>

#include "quant/tensor_type.h"

namespace lockstep {

// Q8_0, Q8_K or F32. Throws InputError for a weight type vec_dot does not support.
TensorType activation_type_for(TensorType weight_type);
// Bytes of the activation buffer for rows of n elements (n a multiple of the weight's block size;
// InputError otherwise).
size_t activation_row_bytes(TensorType weight_type, int64_t n);
// x[0..n) -> dst (activation_row_bytes(weight_type, n) bytes).
void quantize_activation(TensorType weight_type, const float* x, void* dst, int64_t n);

// Dot product of one weight row (row_bytes(weight_type, n) bytes, GGUF layout) with an activation
// made by quantize_activation for the same weight type and n.
float vec_dot(TensorType weight_type, const void* weight_row, const void* activation, int64_t n);

// y[r] = vec_dot(weight_type, weights + r * row_stride, activation, n) for r in [0, rows).
// One dispatch for all rows; row_stride in bytes.
void matvec(TensorType weight_type, const void* weights, size_t row_stride, int64_t rows,
            const void* activation, int64_t n, float* y);

enum class Isa { Scalar, Avx2, Avx512 };
const char* isa_name(Isa isa);
bool isa_supported(Isa isa);  // by this CPU (and OS)
Isa best_isa();               // the best supported one
Isa active_isa();             // the one vec_dot and dequantize_row use (best_isa() unless forced)
// Makes vec_dot/matvec and dequantize_row use `isa` (process-wide; for tests and benchmarks).
// InputError if the CPU does not support it.
void force_isa(Isa isa);

}  // namespace lockstep
