// Matrix products of K-quant weights (Q4_K, Q5_K, Q6_K: 256-element superblocks) with two-term
// activations, in register tiles of up to 4 weight rows x 4 tokens. Each tile unpacks a
// superblock of each of its rows once, to 256 int16 levels with the 6- or 8-bit sub-block scales
// already multiplied in (and Q6_K's +32 taken off), and multiplies them with every token of the
// tile by pmaddwd / vpdpwssd against the activation's int16 A = 254 q1 + q2, the same two terms
// as vec_dot.h's Q8_K (error <= d / 508 per element). Prefill then unpacks a weight block once per
// tile instead of once per token, and one 16-bit product covers both terms of an element.
//
// Every output y(r, t) is computed by the same sequence of operations whatever the tile it falls
// in (per superblock: exact integer dots, converted, scaled by d_w * e_a and accumulated; the
// Q4_K/Q5_K mins likewise; then a fixed horizontal sum), so a batch of n tokens gives the same
// bits as n single-token calls, and the thread split (by rows) does not matter either.
#pragma once

#include <cstddef>
#include <cstdint>

#include "quant/tensor_type.h"

namespace lockstep::cpu_fast {

// The activation gemm_k reads, per token row, nb superblocks of kK16BlockBytes (64-aligned
// within the row when the row is):
//   int16 A[256]    254 * q1 + q2 per element (x = e * A);
//   int16 B[16]     per sub-block j of 32: B[2j] = sum of q1, B[2j+1] = sum of q2 (so that the
//                   Q4_K/Q5_K mins m_j pair with (254 m_j, m_j) in one pmaddwd);
//   float e         d / 254 (d: the superblock's scale of vec_dot.h's Q8_K).
inline constexpr size_t kK16BlockBytes = 576;
inline size_t k16_row_bytes(int64_t nb) {
  return size_t(nb) * kK16BlockBytes;
}
// One token row of vec_dot.h's Q8_K activation (quantize_activation for a K weight type, nb
// superblocks) rewritten in the layout above: the same two terms, nothing requantized.
void k16_from_q8_k(const void* q8_k_row, int64_t nb, void* dst);

struct K16Rows {
  const uint8_t* blocks = nullptr;  // row t at blocks + t * stride
  size_t stride = 0;                // bytes
};

// True when gemm_k has a kernel for this type under vec_dot.h's active_isa() (AVX2, or AVX-512
// with VNNI); otherwise callers use vec_dot's matvec.
bool gemm_k_available(TensorType type);

// y[t * y_stride + r] = dot(weight row r, activation row t) for r < n_rows, t < n_tokens; weight
// row r starts at w + r * w_stride and has nb superblocks. Only when gemm_k_available(type).
void gemm_k(TensorType type, const uint8_t* w, size_t w_stride, int64_t n_rows, const K16Rows& a,
            int64_t n_tokens, int64_t nb, float* y, int64_t y_stride);

}  // namespace lockstep::cpu_fast
