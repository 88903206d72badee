// Matrix products of weights in 32-element blocks (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) with two-term
// Q8_0 activations (vec_dot.h): integer block dots of the levels (widened to int16) with the
// activation's combined int16 terms, scaled per block in float.
//
// With AVX-512 VNNI, blocks go in groups of 16 (512 elements): lane j of every 16-lane register
// holds block j of the group, so one vpdpwssd does two products of each of the 16 blocks and 16
// of them finish the group's 16 exact block dots in one register, converted and scaled (d_w *
// e_a, and for Q4_1/Q5_1 the min times the activation's block sum) with three vector operations.
// A batch multiplies the groups in that lane order ("group layout", below: weight rows unpacked
// once per call into a scratch, activation rows once per input), in register tiles of up to 4
// rows x 4 tokens; one token (decode) reads the weights in file order, takes each block's dot
// whole and gathers the 16 sums into the same lanes, so both give the same bits. With AVX2 the
// same design in groups of 8 blocks (8 lanes; the layout in gemm_q8_0_groups8.inc, within
// group_row_bytes). Elsewhere vec_dot.
//
// Every output y(r, t) is computed by the same sequence of operations whatever the tile it falls
// in and whether it is one token or a batch (exact integer block dots, then per group: convert,
// multiply by d_w * e_a, accumulate into the lanes; then a fixed horizontal sum), so results do
// not depend on how rows and tokens are grouped: a batch of n tokens gives the same bits as n
// single-token calls.
#pragma once

#include <cstddef>
#include <cstdint>

#include "quant/tensor_type.h"

namespace lockstep::cpu_fast {

// Token rows of two-term Q8_0 activations in vec_dot.h's format (quant/vec_dot_internal.h: int16
// values, then float block units): row t starts at blocks + t * stride (4-byte aligned).
// The same rows in group layout (groups_from_q8_0), or null: then a batch converts them itself.
struct Q8_0Rows {
  const uint8_t* blocks = nullptr;
  size_t stride = 0;  // bytes
  const uint8_t* groups = nullptr;
  size_t groups_stride = 0;  // bytes
  // One token's row in split layout (split_from_q8_0), or null: then decode splits it itself.
  const uint8_t* split = nullptr;
};

// True for the weight types gemm_q8_0 computes.
bool gemm_q8_0_supports(TensorType type);

// The group layout of a row of nb blocks under AVX-512 VNNI, G = ceil(nb / 16) groups, zero past
// the row's end (AVX2's groups of 8 fit in the same group_row_bytes; gemm_q8_0_groups8.inc):
//   [0, G * 1024)            per group, 16 registers of 16 int32 lanes: register k, lane j
//                            holds elements 2k and 2k + 1 of block 16 g + j, as int16;
//   G * 1024                 float scale[G * 16] (block 16 g + j at 16 g + j);
//   G * 1088                 float extra[G * 16]: for weights the Q4_1/Q5_1 mins, for
//                            activations the block sums s of vec_dot_internal.h.
inline constexpr size_t kGroupBytes = 1152;  // a group's levels, scales and extras
inline size_t group_row_bytes(int64_t nb) {
  return size_t((nb + 15) / 16) * kGroupBytes;
}
// True when gemm_q8_0 multiplies batches of this type in group layout (AVX2 or AVX-512 VNNI is
// active; the layout is the active set's): then callers may pass the activations' group layout
// along (Q8_0Rows::groups).
bool gemm_q8_0_uses_groups(TensorType type);
// One activation row (vec_dot.h's two-term Q8_0 format, nb blocks) in group layout; only where
// gemm_q8_0_uses_groups. dst: group_row_bytes(nb) bytes.
void groups_from_q8_0(const void* q8_0_row, int64_t nb, void* dst);

// Decode (one token) with AVX2 but not AVX-512 VNNI multiplies the types with unsigned levels
// (Q4_0, Q4_1, Q5_0, Q5_1) by the activation split back into its two int8 terms (vpmaddubsw on the
// levels as bytes instead of widening them): the same exact block dots, hence the same bits.
// True when gemm_q8_0 decodes this type that way (then callers may pass the split along).
bool gemm_q8_0_splits_decode(TensorType type);
// The split layout of an activation row of nb blocks: the two int8 terms of A = 254 q1 + q2 in
// groups of 8 blocks, 512 bytes a group (their order: gemm_q8_0_groups8.inc), then nb int32 block
// sums of A.
inline size_t split_row_bytes(int64_t nb) {
  return size_t((nb + 7) / 8) * 544;
}
// One activation row (vec_dot.h's two-term Q8_0 format, nb blocks) in split layout; only where
// gemm_q8_0_splits_decode. dst: split_row_bytes(nb) bytes, 4-byte aligned.
void split_from_q8_0(const void* q8_0_row, int64_t nb, void* dst);

// That decode spreads each Q5_0 / Q5_1 block's 32 fifth bits (qh) over the bytes of its levels.
// In the file's order that takes a byte shuffle, a compare and two logic operations per 32
// levels; in the order of fifth_bit_words (bit 8 j + k of a block's word is bit j + 4 k of qh)
// two shifts by a different count per 32-bit lane and one logic operation place them. A weight's
// words, made once, let decode use that order: true for the types where it does.
bool gemm_q8_0_uses_fifth_bit_words(TensorType type);
// Words for rows of nb blocks: one per block, row r at r * nb, then kFifthBitPadding words that
// reads of a row's last group may touch.
inline constexpr int64_t kFifthBitPadding = 8;
inline size_t fifth_bit_word_count(int64_t rows, int64_t nb) {
  return size_t(rows * nb + kFifthBitPadding);
}
// Fills dst (fifth_bit_word_count(rows, nb) words) from the rows of a Q5_0 or Q5_1 weight.
void fifth_bit_words(TensorType type, const uint8_t* w, size_t w_stride, int64_t rows, int64_t nb,
                     uint32_t* dst);

// y[t * y_stride + r] = dot(weight row r, activation row t) for r < n_rows, t < n_tokens; weight
// row r starts at w + r * w_stride; rows have n_blocks blocks of 32. fifth_bits: the rows' words
// of fifth_bit_words (row r at fifth_bits + r * n_blocks), or null; the same bits either way.
// Uses the instruction set of vec_dot.h's active_isa() (AVX-512 with VNNI, else AVX2; the scalar
// level calls vec_dot).
void gemm_q8_0(TensorType type, const uint8_t* w, size_t w_stride, int64_t n_rows,
               const Q8_0Rows& a, int64_t n_tokens, int64_t n_blocks, float* y, int64_t y_stride,
               const uint32_t* fifth_bits = nullptr);

}  // namespace lockstep::cpu_fast
