#include "backend/cpu/matmul_ref.h"

#include <algorithm>
#include <string>

#include "backend/cpu/lane_sum.h"
#include "backend/cpu/ops_ref.h"
#include "backend/cpu/vector_clones.h"
#include "quant/quantize.h"
#include "util/error.h"

LOCKSTEP_NO_FP_CONTRACT

namespace lockstep::cpu_ref {

namespace {

static_assert(kMatmulRowBlock == 4, "dot_rows4 computes four rows");

// Four dot products of consecutive rows w[r * cols ..] with one x, sharing the loads of x. Lane
// for lane the same arithmetic as dot(), so each result equals dot(w_r, x, cols) bit for bit.
LOCKSTEP_VECTOR_CLONES
void dot_rows4(const float* w, int64_t cols, const float* x, float* out) {
  const float* w0 = w;
  const float* w1 = w + cols;
  const float* w2 = w + 2 * cols;
  const float* w3 = w + 3 * cols;
  float a0[kLanes] = {}, a1[kLanes] = {}, a2[kLanes] = {}, a3[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= cols; i += kLanes) {
    for (int k = 0; k < kLanes; ++k) {
      const float xv = x[i + k];
      a0[k] += w0[i + k] * xv;
      a1[k] += w1[i + k] * xv;
      a2[k] += w2[i + k] * xv;
      a3[k] += w3[i + k] * xv;
    }
  }
  for (int k = 0; i + k < cols; ++k) {
    const float xv = x[i + k];
    a0[k] += w0[i + k] * xv;
    a1[k] += w1[i + k] * xv;
    a2[k] += w2[i + k] * xv;
    a3[k] += w3[i + k] * xv;
  }
  out[0] = reduce_lanes(a0);
  out[1] = reduce_lanes(a1);
  out[2] = reduce_lanes(a2);
  out[3] = reduce_lanes(a3);
}

}  // namespace

MatmulScratch::MatmulScratch(int n_threads, int64_t max_cols)
    : stride_(kMatmulRowBlock * max_cols), max_cols_(max_cols), n_threads_(n_threads) {
  buf_ = std::make_unique_for_overwrite<float[]>(size_t(n_threads) * size_t(stride_));
}

void matmul(float* y, const WeightView& w, const float* x, int64_t n_tokens, ThreadPool& pool,
            const MatmulScratch& scratch) {
  if (w.cols > scratch.max_cols() || pool.size() > scratch.n_threads())
    throw Error("matmul: scratch made for " + std::to_string(scratch.max_cols()) + " columns x " +
                std::to_string(scratch.n_threads()) + " threads cannot serve '" + w.name + "' (" +
                std::to_string(w.cols) + " columns, " + std::to_string(pool.size()) + " threads)");
  const int64_t rows = w.rows;
  const int64_t cols = w.cols;
  const int64_t n_blocks = (rows + kMatmulRowBlock - 1) / kMatmulRowBlock;
  // F32 rows are used in place: the file's rows are already contiguous floats.
  const bool in_place = w.type == TensorType::F32;
  pool.parallel_for(n_blocks, [&](int64_t block_begin, int64_t block_end, int thread) {
    float* buf = scratch.rows(thread);
    for (int64_t block = block_begin; block < block_end; ++block) {
      const int64_t r0 = block * kMatmulRowBlock;
      const int64_t n_rows = std::min(kMatmulRowBlock, rows - r0);
      const float* wr = buf;
      if (in_place) {
        wr = reinterpret_cast<const float*>(w.row(r0));
      } else {
        for (int64_t j = 0; j < n_rows; ++j)
          dequantize_row(w.type, w.row(r0 + j), buf + j * cols, cols);
      }
      for (int64_t t = 0; t < n_tokens; ++t) {
        const float* xt = x + t * cols;
        float* yt = y + t * rows + r0;
        if (n_rows == kMatmulRowBlock) {
          dot_rows4(wr, cols, xt, yt);
        } else {
          for (int64_t j = 0; j < n_rows; ++j) yt[j] = dot(wr + j * cols, xt, cols);
        }
      }
    }
  });
}

}  // namespace lockstep::cpu_ref
