// Matrix products of weights in 32-element blocks (Q4_0, Q5_0, Q8_0) with two-term Q8_0
// activations (vec_dot.h), computed in register tiles of up to 4 weight rows x 4 tokens: each
// weight block is unpacked once per tile and multiplied with every token of it, each activation
// block loaded once per tile and used for every row. Integer block dots of the levels (widened to
// int16) with the activation's combined int16 terms (AVX-512 VNNI vpdpwssd, or AVX2 pmaddwd),
// scaled per block in float.
//
// Every output y(r, t) is computed by the same sequence of operations whatever the tile it falls
// in (block by block: exact integer dot, convert, multiply by d_w * d_a, accumulate; then a fixed
// horizontal sum), so results do not depend on how rows and tokens are grouped: a batch of n
// tokens gives the same bits as n single-token calls.
#pragma once

#include <cstddef>
#include <cstdint>

#include "quant/tensor_type.h"

namespace lockstep::cpu_fast {

// Token rows of two-term Q8_0 activations in vec_dot.h's format (quant/vec_dot_internal.h: int16
// values, then float block units): row t starts at blocks + t * stride (4-byte aligned).
struct Q8_0Rows {
  const uint8_t* blocks = nullptr;
  size_t stride = 0;  // bytes
};

// True for the weight types gemm_q8_0 computes.
bool gemm_q8_0_supports(TensorType type);

// y[t * y_stride + r] = dot(weight row r, activation row t) for r < n_rows, t < n_tokens; weight
// row r starts at w + r * w_stride; rows have n_blocks blocks of 32. Uses the instruction set of
// vec_dot.h's active_isa() (AVX-512 with VNNI, else AVX2; the scalar level calls vec_dot).
void gemm_q8_0(TensorType type, const uint8_t* w, size_t w_stride, int64_t n_rows,
               const Q8_0Rows& a, int64_t n_tokens, int64_t n_blocks, float* y, int64_t y_stride);

}  // namespace lockstep::cpu_fast
