// Fast CPU dot products between one weight row (any dequantizable type) and an activation row,
// the building block of the fast CPU matvec path.
//
// Activations are quantized once per matvec to the format the weight type pairs with, each
// element as two int8 terms over a group's scale d = max|x| / 127: x = d * (q1 + q2 / 254) to
// within d / 508 (vec_dot_internal.h gives the layouts):
//   Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 weights   -> Q8_0 activations (32-blocks: the two terms joined
//                                             as one int16 254 * q1 + q2 per element, then the
//                                             float unit d / 254 and the sum of each block)
//   Q2_K, Q3_K, Q4_K, Q5_K, Q6_K weights   -> Q8_K activations (256-blocks: ggml's block_q8_K
//                                             holding the first term, then the second term with
//                                             its 16-element sums)
//   F32, F16, BF16 weights                 -> F32 activations (the floats themselves)
// so the buffer is larger than row_bytes(activation_type_for(t), n); dequantize_activation
// gives the values vec_dot really uses. The quantized activation is the same bytes whichever ISA
// is active. The kernels take both integer dots exactly, 254 * dot(w, q1) + dot(w, q2) (joined
// in integers for the 32-block types, in float per block for the K types): one int8 term alone,
// as llama.cpp's CPU path uses, moved the default model's logits to cosine 0.993 against the
// reference and changed its greedy answers (bench/NOTES.md).
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
// The n values an activation made by quantize_activation stands for (exact, in double).
void dequantize_activation(TensorType weight_type, const void* activation, double* out, int64_t n);

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
