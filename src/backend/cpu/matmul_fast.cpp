#include "backend/cpu/matmul_fast.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>

#include "backend/cpu/gemm_q8_0.h"
#include "quant/fp16.h"
#include "quant/vec_dot.h"
#include "util/error.h"

namespace lockstep::cpu_fast {

namespace {

constexpr size_t kAlign = 64;

size_t round_up(size_t n, size_t to) {
  return (n + to - 1) / to * to;
}

// A weight type of each activation format, to ask vec_dot.h about that format's sizes.
constexpr TensorType kQ8_0User = TensorType::Q8_0;
constexpr TensorType kQ8_KUser = TensorType::Q4_K;

// Rows of a decode matvec claimed at a time: small enough to balance two threads on wk/wv
// (a few hundred rows), large enough that claiming costs nothing.
constexpr int64_t kDecodeGrain = 16;

}  // namespace

void QuantizedMatmul::Copy::Free::operator()(uint8_t* p) const {
  std::free(p);
}

bool QuantizedMatmul::supports(TensorType type, int64_t cols) {
  try {
    activation_row_bytes(type, cols);
    return true;
  } catch (const Error&) {
    return false;
  }
}

void QuantizedMatmul::reserve(int64_t max_tokens, int64_t max_cols) {
  max_tokens_ = max_tokens;
  max_cols_ = max_cols;
  auto size = [&](Copy& c, TensorType user, int64_t block) {
    const int64_t cols = int64_t(round_up(size_t(max_cols), size_t(block)));
    c.capacity = round_up(activation_row_bytes(user, cols), kAlign) * size_t(max_tokens);
    c.data.reset(static_cast<uint8_t*>(std::aligned_alloc(kAlign, c.capacity)));
    if (!c.data) throw std::bad_alloc();
    c.ready = false;
  };
  size(q8_0_, kQ8_0User, 32);
  size(q8_k_, kQ8_KUser, 256);
  scales_stride_ = round_up(size_t(max_cols), 32) / 32;
  q8_0_scales_.assign(scales_stride_ * size_t(max_tokens), 0.0f);
}

void QuantizedMatmul::set_input(const float* x, int64_t n, int64_t cols) {
  if (n > max_tokens_ || cols > max_cols_)
    throw Error("fast matmul: input of " + std::to_string(n) + " x " + std::to_string(cols) +
                " exceeds the reserved " + std::to_string(max_tokens_) + " x " +
                std::to_string(max_cols_));
  x_ = x;
  n_ = n;
  cols_ = cols;
  q8_0_.ready = q8_k_.ready = false;
}

const uint8_t* QuantizedMatmul::activation(TensorType w_type, ThreadPool& pool, size_t* stride) {
  const TensorType act = activation_type_for(w_type);
  if (act == TensorType::F32) {
    *stride = size_t(cols_) * sizeof(float);
    return reinterpret_cast<const uint8_t*>(x_);
  }
  Copy& c = act == TensorType::Q8_0 ? q8_0_ : q8_k_;
  if (!c.ready) {
    c.stride = round_up(activation_row_bytes(w_type, cols_), kAlign);
    uint8_t* dst = c.data.get();
    const size_t s = c.stride;
    const float* x = x_;
    const int64_t cols = cols_;
    const bool scales = act == TensorType::Q8_0;
    float* d = q8_0_scales_.data();
    const size_t d_stride = scales_stride_;
    pool.parallel_for(n_, [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t) {
        uint8_t* row = dst + t * s;
        quantize_activation(w_type, x + t * cols, row, cols);
        // Block layout (vec_dot.h): the row starts with ggml block_q8_0s (fp16 d, 32 x int8).
        if (scales)
          for (int64_t blk = 0; blk < cols / 32; ++blk) {
            uint16_t h;
            std::memcpy(&h, row + blk * 34, 2);
            d[size_t(t) * d_stride + size_t(blk)] = fp16_to_fp32(h);
          }
      }
    });
    c.ready = true;
  }
  *stride = c.stride;
  return c.data.get();
}

void QuantizedMatmul::multiply(float* y, const WeightView& w, ThreadPool& pool) {
  if (w.cols != cols_)
    throw Error("fast matmul: '" + w.name + "' has " + std::to_string(w.cols) +
                " columns but the input rows have " + std::to_string(cols_));
  size_t stride = 0;
  const uint8_t* act = activation(w.type, pool, &stride);
  const int64_t rows = w.rows;
  const int64_t cols = cols_;
  const TensorType type = w.type;

  if (gemm_q8_0_supports(type)) {
    const Q8_0Rows a{act, stride, q8_0_scales_.data(), scales_stride_};
    const int64_t nb = cols / 32;
    const int64_t n = n_;
    // One token: rows split over the threads. A batch: blocks of kRowBlock rows, each with every
    // token (the rows stay in L1 while the whole batch passes).
    const int64_t grain = n == 1 ? kDecodeGrain : kRowBlock;
    const int64_t piece = n == 1 ? 1 : kRowBlock;
    pool.parallel_for((rows + piece - 1) / piece,
                      [&](int64_t b, int64_t e) {
                        for (int64_t r0 = b * piece; r0 < std::min(e * piece, rows); r0 += grain) {
                          const int64_t nr = std::min({grain, rows - r0, e * piece - r0});
                          gemm_q8_0(type, w.row(r0), w.row_bytes, nr, a, n, nb, y + r0, rows);
                        }
                      },
                      n == 1 ? kDecodeGrain : 1);
    return;
  }

  if (n_ == 1) {
    pool.parallel_for(
        rows,
        [&](int64_t b, int64_t e) { matvec(type, w.row(b), w.row_bytes, e - b, act, cols, y + b); },
        kDecodeGrain);
    return;
  }

  const int64_t n = n_;
  const int64_t n_blocks = (rows + kRowBlock - 1) / kRowBlock;
  pool.parallel_for(n_blocks, [&](int64_t block_begin, int64_t block_end) {
    for (int64_t block = block_begin; block < block_end; ++block) {
      const int64_t r0 = block * kRowBlock;
      const int64_t n_rows = std::min(kRowBlock, rows - r0);
      for (int64_t t = 0; t < n; ++t)
        matvec(type, w.row(r0), w.row_bytes, n_rows, act + size_t(t) * stride, cols,
               y + t * rows + r0);
    }
  });
}

}  // namespace lockstep::cpu_fast
