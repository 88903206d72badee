// What the two CPU backends compute differently. They share one forward pass (CpuTransformer);
// it calls these kernels for the stages where the fast path trades exactness for speed:
//   cpu-ref (ReferenceKernels): float activations into a dequantize-on-the-fly matmul, the
//                               reference SwiGLU and GeGLU;
//   cpu     (FastKernels):      activations quantized once per matmul input (Q8_0 / Q8_K, as
//                               vec_dot.h pairs them with the weight type) and SIMD integer dot
//                               products; a vectorised SwiGLU and GeGLU.
// Attention is chosen by the KV cache's element type (kv_cache.h), not here.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <span>

#include "model/model.h"
#include "util/thread_pool.h"

namespace lockstep::cpu {

// One weight and the output it fills: y[t * w->rows + r] = (row r of w) . (input row t).
struct MatmulProduct {
  float* y;
  const WeightView* w;
};

class CpuKernels {
 public:
  virtual ~CpuKernels() = default;

  // Sizes every buffer once: inputs of up to max_tokens rows of up to max_cols floats, for a pool
  // of n_threads. Called by CpuTransformer's constructor, before any other call.
  virtual void reserve(int64_t max_tokens, int64_t max_cols, int n_threads) = 0;

  // Called by CpuTransformer's constructor for every matrix weight (which outlives the kernels),
  // after reserve(): a backend may derive data from it once here instead of on every product.
  virtual void prepare(const WeightView& w) { (void)w; }

  // Makes x (n rows of `cols` floats, row t at x + t * cols) the input of the following
  // multiply() calls; one input serves several weights (wq, wk and wv read the same normalised
  // rows). x must not change until the next set_input().
  virtual void set_input(const float* x, int64_t n, int64_t cols) = 0;

  // Every product of the list with the current input (each weight's cols must equal the input's
  // cols). The weights that read one input go in one call (wq, wk, wv; ffn_gate, ffn_up), so a
  // backend can compute them in one parallel loop; at most 4.
  virtual void multiply(std::span<const MatmulProduct> products, ThreadPool& pool) = 0;
  void multiply(std::initializer_list<MatmulProduct> products, ThreadPool& pool) {
    multiply(std::span(products.begin(), products.size()), pool);
  }

  // gate[i] = silu(gate[i]) * up[i] for i < n.
  virtual void swiglu(float* gate, const float* up, int64_t n) = 0;
  // gate[i] = gelu_tanh(gate[i]) * up[i] for i < n (gemma's feed-forward).
  virtual void geglu(float* gate, const float* up, int64_t n) = 0;
};

}  // namespace lockstep::cpu
