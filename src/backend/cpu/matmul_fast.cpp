#include "backend/cpu/matmul_fast.h"

#include <algorithm>
#include <array>
#include <cstdlib>
#include <cstring>
#include <string>

#include "backend/cpu/gemm_k.h"
#include "backend/cpu/gemm_q8_0.h"
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
  // Room for max_tokens rows of row_bytes each.
  auto size = [&](Copy& c, size_t row_bytes) {
    c.capacity = round_up(row_bytes, kAlign) * size_t(max_tokens);
    c.data.reset(static_cast<uint8_t*>(std::aligned_alloc(kAlign, c.capacity)));
    if (!c.data)
      throw Error("cpu: cannot allocate " + std::to_string(c.capacity) +
                  " bytes of activation buffers");
    c.ready = false;
  };
  auto quantized_row_bytes = [&](TensorType user, int64_t block) {
    return activation_row_bytes(user, int64_t(round_up(size_t(max_cols), size_t(block))));
  };
  size(q8_0_, quantized_row_bytes(kQ8_0User, 32));
  size(q8_k_, quantized_row_bytes(kQ8_KUser, 256));
  size(k16_, k16_row_bytes((max_cols + 255) / 256));
  // Only where gemm_q8_0 reads it (AVX2 or AVX-512 VNNI).
  groups_ = {};
  if (gemm_q8_0_uses_groups(kQ8_0User)) size(groups_, group_row_bytes((max_cols + 31) / 32));
  split_ = {};
  if (gemm_q8_0_splits_decode(TensorType::Q5_0))
    size(split_, split_row_bytes((max_cols + 31) / 32));
}

void QuantizedMatmul::prepare(const WeightView& w) {
  if (!gemm_q8_0_uses_fifth_bit_words(w.type) || fifth_bits_.count(w.data)) return;
  const int64_t nb = w.cols / 32;
  std::vector<uint32_t> words(fifth_bit_word_count(w.rows, nb));
  fifth_bit_words(w.type, w.data, w.row_bytes, w.rows, nb, words.data());
  fifth_bits_.emplace(w.data, std::move(words));
}

void QuantizedMatmul::set_input(const float* x, int64_t n, int64_t cols) {
  if (n > max_tokens_ || cols > max_cols_)
    throw Error("fast matmul: input of " + std::to_string(n) + " x " + std::to_string(cols) +
                " exceeds the reserved " + std::to_string(max_tokens_) + " x " +
                std::to_string(max_cols_));
  x_ = x;
  n_ = n;
  cols_ = cols;
  q8_0_.ready = q8_k_.ready = k16_.ready = groups_.ready = split_.ready = false;
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
    pool.parallel_for(n_, [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t) quantize_activation(w_type, x + t * cols, dst + t * s, cols);
    });
    c.ready = true;
  }
  *stride = c.stride;
  return c.data.get();
}

const uint8_t* QuantizedMatmul::relaid_activation(Copy& c, TensorType w_type, int64_t block,
                                                  const Relayout& layout, ThreadPool& pool,
                                                  size_t* stride) {
  if (!c.ready) {
    size_t from_stride = 0;
    const uint8_t* from = activation(w_type, pool, &from_stride);
    const int64_t nb = cols_ / block;
    c.stride = round_up(layout.row_bytes(nb), kAlign);
    uint8_t* dst = c.data.get();
    const size_t s = c.stride;
    pool.parallel_for(n_, [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t)
        layout.convert(from + size_t(t) * from_stride, nb, dst + size_t(t) * s);
    });
    c.ready = true;
  }
  *stride = c.stride;
  return c.data.get();
}

const uint8_t* QuantizedMatmul::k16_activation(TensorType w_type, ThreadPool& pool,
                                               size_t* stride) {
  return relaid_activation(k16_, w_type, 256, {k16_row_bytes, k16_from_q8_k}, pool, stride);
}

const uint8_t* QuantizedMatmul::group_activation(TensorType w_type, ThreadPool& pool,
                                                 size_t* stride) {
  return relaid_activation(groups_, w_type, 32, {group_row_bytes, groups_from_q8_0}, pool, stride);
}

const uint8_t* QuantizedMatmul::split_activation(TensorType w_type, ThreadPool& pool,
                                                 size_t* stride) {
  return relaid_activation(split_, w_type, 32, {split_row_bytes, split_from_q8_0}, pool, stride);
}

void QuantizedMatmul::multiply(float* y, const WeightView& w, ThreadPool& pool) {
  const Product one{y, &w};
  multiply(std::span(&one, 1), pool);
}

void QuantizedMatmul::multiply(std::span<const Product> products, ThreadPool& pool) {
  if (products.size() > kMaxProducts)
    throw Error("fast matmul: " + std::to_string(products.size()) + " products in one call (max " +
                std::to_string(kMaxProducts) + ")");
  // Per product: its activation (quantized here, once per format) and its first work unit.
  struct Job {
    const WeightView* w;
    float* y;
    const uint8_t* act;
    size_t stride;
    int64_t first_unit;
    bool k16;  // K weights through gemm_k (activation in its layout)
    // A batch through gemm_q8_0 in group layout: the activation in that layout; else null.
    const uint8_t* groups;
    size_t groups_stride;
    // Decode through gemm_q8_0 on split terms: the activation in that layout; else null.
    const uint8_t* split;
    size_t split_stride;
    // The weight's fifth-bit words (prepare) where decode reads them; else null.
    const uint32_t* fifth_bits;
  };
  std::array<Job, kMaxProducts> jobs;
  int64_t units = 0;
  for (size_t i = 0; i < products.size(); ++i) {
    const WeightView& w = *products[i].w;
    if (w.cols != cols_)
      throw Error("fast matmul: '" + w.name + "' has " + std::to_string(w.cols) +
                  " columns but the input rows have " + std::to_string(cols_));
    jobs[i] = {&w, products[i].y, nullptr, 0, units, false, nullptr, 0, nullptr, 0, nullptr};
    jobs[i].k16 = gemm_k_available(w.type);
    jobs[i].act = jobs[i].k16 ? k16_activation(w.type, pool, &jobs[i].stride)
                              : activation(w.type, pool, &jobs[i].stride);
    if (n_ > 1 && groups_.data && gemm_q8_0_uses_groups(w.type))
      jobs[i].groups = group_activation(w.type, pool, &jobs[i].groups_stride);
    if (n_ == 1 && split_.data && gemm_q8_0_splits_decode(w.type)) {
      jobs[i].split = split_activation(w.type, pool, &jobs[i].split_stride);
      if (auto it = fifth_bits_.find(w.data); it != fifth_bits_.end())
        jobs[i].fifth_bits = it->second.data();
    }
    units += (w.rows + kRowBlock - 1) / kRowBlock;
  }
  const size_t n_jobs = products.size();
  const int64_t n = n_, cols = cols_;

  // Rows [r0, r1) of one product for every token.
  auto run = [&](const Job& job, int64_t r0, int64_t r1) {
    const WeightView& w = *job.w;
    if (job.k16) {  // decode and batches alike, so a token's bits do not depend on the batch
      const K16Rows a{job.act, job.stride};
      const int64_t step = n == 1 ? r1 - r0 : kRowBlock;  // a batch: blocks of rows kept in L1
      for (int64_t b0 = r0; b0 < r1; b0 += step)
        gemm_k(w.type, w.row(b0), w.row_bytes, std::min(step, r1 - b0), a, n, cols / 256,
               job.y + b0, w.rows);
      return;
    }
    const bool tiled = gemm_q8_0_supports(w.type);
    if (n == 1) {  // decode: stream the rows once
      if (tiled) {
        const Q8_0Rows a{job.act, job.stride, nullptr, 0, job.split};
        gemm_q8_0(w.type, w.row(r0), w.row_bytes, r1 - r0, a, 1, cols / 32, job.y + r0, w.rows,
                  job.fifth_bits ? job.fifth_bits + r0 * (cols / 32) : nullptr);
      } else {
        matvec(w.type, w.row(r0), w.row_bytes, r1 - r0, job.act, cols, job.y + r0);
      }
      return;
    }
    // A batch: kRowBlock rows at a time, each block with every token while it sits in L1.
    for (int64_t b0 = r0; b0 < r1; b0 += kRowBlock) {
      const int64_t nr = std::min(kRowBlock, r1 - b0);
      if (tiled) {
        const Q8_0Rows a{job.act, job.stride, job.groups, job.groups_stride};
        gemm_q8_0(w.type, w.row(b0), w.row_bytes, nr, a, n, cols / 32, job.y + b0, w.rows);
      } else {
        for (int64_t t = 0; t < n; ++t)
          matvec(w.type, w.row(b0), w.row_bytes, nr, job.act + size_t(t) * job.stride, cols,
                 job.y + t * w.rows + b0);
      }
    }
  };

  // One parallel loop over the row blocks of all products (one barrier for wq, wk and wv).
  pool.parallel_for(units, [&](int64_t u_begin, int64_t u_end) {
    size_t j = 0;
    for (int64_t u = u_begin; u < u_end;) {
      while (j + 1 < n_jobs && jobs[j + 1].first_unit <= u) ++j;
      const Job& job = jobs[j];
      const int64_t job_end = j + 1 < n_jobs ? jobs[j + 1].first_unit : units;
      const int64_t stop = std::min(u_end, job_end);
      run(job, (u - job.first_unit) * kRowBlock,
          std::min(job.w->rows, (stop - job.first_unit) * kRowBlock));
      u = stop;
    }
  });
}

}  // namespace lockstep::cpu_fast
