// The fast CPU matrix product: weights in their file format times activations quantized the way
// vec_dot.h pairs them with the weight type (two-term Q8_0 for 32-element blocks, two-term Q8_K
// for K-quants, float for F32/F16/BF16), with the SIMD integer dot products of vec_dot.h.
//
//  * An input is quantized once (per activation format) and then serves every weight that reads
//    it: wq, wk and wv share one quantized copy, so do ffn_gate and ffn_up.
//  * One token (decode): a matrix-vector product split over the output rows of the pool's
//    threads; each thread streams its rows once.
//  * A batch (prefill): a matrix-matrix product. Each work item is a block of kRowBlock weight
//    rows, multiplied with every token of the batch while those rows sit in L1, so the weights
//    are read from memory once per batch instead of once per token.
// Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0 weights go through gemm_q8_0.h's kernels (rows x tokens),
// Q4_K, Q5_K and Q6_K through gemm_k.h's (with AVX2 or AVX-512 VNNI), every other type through
// vec_dot.h's matvec. Either way each output is computed the same way
// whatever the thread count or the batching, so results do not depend on them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <unordered_map>
#include <vector>

#include "backend/cpu/cpu_kernels.h"
#include "model/model.h"
#include "quant/tensor_type.h"
#include "util/thread_pool.h"

namespace lockstep::cpu_fast {

// Weight rows per work unit (16 rows of 896 Q5_0 values are 9.6 KB): the grain of the split over
// threads, and in a batch the rows that stay in L1 while every token passes.
inline constexpr int64_t kRowBlock = 16;

using Product = cpu::MatmulProduct;
inline constexpr size_t kMaxProducts = 4;

class QuantizedMatmul {
 public:
  QuantizedMatmul() = default;

  // Sizes the activation buffers for up to max_tokens rows of up to max_cols values.
  void reserve(int64_t max_tokens, int64_t max_cols);

  // Makes what decode reads beside a weight, once: the fifth-bit words of a Q5_0 / Q5_1 weight
  // where gemm_q8_0 uses them (gemm_q8_0.h; 4 bytes a block, the bits unchanged). w must outlive
  // this object. Other weights need nothing.
  void prepare(const WeightView& w);

  // x: n rows of cols floats; must stay unchanged until the next set_input().
  void set_input(const float* x, int64_t n, int64_t cols);

  // y[t * w.rows + r] = (row r of w) . (quantized input row t). Throws Error when w.cols is not
  // the input's cols, InputError for a weight type vec_dot cannot multiply.
  void multiply(float* y, const WeightView& w, ThreadPool& pool);
  // Several weights that read the same input (at most kMaxProducts), in one parallel loop: one
  // barrier instead of one per weight, which matters in decode (about ten loops per layer).
  void multiply(std::span<const Product> products, ThreadPool& pool);

  // True when vec_dot can multiply weights of this type with rows of `cols` values.
  static bool supports(TensorType type, int64_t cols);

 private:
  // One quantized copy of the input in one activation format.
  struct Copy {
    struct Free {
      void operator()(uint8_t* p) const;
    };
    std::unique_ptr<uint8_t, Free> data;
    size_t capacity = 0;  // bytes
    size_t stride = 0;    // bytes from one token's row to the next (64-byte aligned)
    bool ready = false;
  };
  // The input in the format w_type pairs with (quantized now if not yet); *stride receives the
  // row stride in bytes.
  const uint8_t* activation(TensorType w_type, ThreadPool& pool, size_t* stride);

  // Another layout of a quantized copy: bytes of a row of nb blocks, and the conversion of one.
  struct Relayout {
    size_t (*row_bytes)(int64_t nb);
    void (*convert)(const void* row, int64_t nb, void* dst);
  };
  // c holds the input in that layout, made from w_type's quantized copy (blocks of `block`
  // values) if not yet.
  const uint8_t* relaid_activation(Copy& c, TensorType w_type, int64_t block,
                                   const Relayout& layout, ThreadPool& pool, size_t* stride);
  // The K16 layout of gemm_k.h, made from the Q8_K copy.
  const uint8_t* k16_activation(TensorType w_type, ThreadPool& pool, size_t* stride);
  // The group layout of gemm_q8_0.h, made from the Q8_0 copy (a batch, with AVX2 or AVX-512).
  const uint8_t* group_activation(TensorType w_type, ThreadPool& pool, size_t* stride);
  // The split layout of gemm_q8_0.h, made from the Q8_0 copy (decode, AVX2 without VNNI).
  const uint8_t* split_activation(TensorType w_type, ThreadPool& pool, size_t* stride);

  Copy q8_0_, q8_k_, k16_, groups_, split_;
  // prepare()'s words, by the weight's data.
  std::unordered_map<const uint8_t*, std::vector<uint32_t>> fifth_bits_;
  int64_t max_tokens_ = 0, max_cols_ = 0;
  const float* x_ = nullptr;
  int64_t n_ = 0, cols_ = 0;
};

}  // namespace lockstep::cpu_fast
