// The reference matrix multiplication: a weight matrix in its file format (any type
// dequantize_row knows) times float32 activations, one row per token. Activations are never
// quantized; weight rows are dequantized on the fly, a few at a time, and each dequantized block
// is used for every token of the batch before the next one is made, so a prefill batch pays for
// dequantization once, not once per token. Work is split over the output rows.
#pragma once

#include <cstdint>
#include <memory>

#include "model/model.h"
#include "util/thread_pool.h"

namespace lockstep::cpu_ref {

// Rows dequantized together (one block per work item).
inline constexpr int64_t kMatmulRowBlock = 4;

// Per-thread buffers for dequantized weight rows; sized once, reused by every matmul.
class MatmulScratch {
 public:
  MatmulScratch() = default;
  MatmulScratch(int n_threads, int64_t max_cols);
  float* rows(int thread) const { return buf_.get() + int64_t(thread) * stride_; }
  int n_threads() const { return n_threads_; }
  int64_t max_cols() const { return max_cols_; }

 private:
  std::unique_ptr<float[]> buf_;
  int64_t stride_ = 0;
  int64_t max_cols_ = 0;
  int n_threads_ = 0;
};

// y[t * w.rows + r] = sum_c w[r][c] * x[t * w.cols + c] for t < n_tokens and every row r.
// scratch must have been made for at least pool.size() threads and w.cols columns. Each dot
// product uses the 16-partial-sum scheme of ops_ref.h, so y is bit-identical to
// cpu_ref::dot(dequantized row, x) whatever the thread count and batch size.
void matmul(float* y, const WeightView& w, const float* x, int64_t n_tokens, ThreadPool& pool,
            const MatmulScratch& scratch);

}  // namespace lockstep::cpu_ref
