// QuantizedMatmul against float64 products of the values it really multiplies (the dequantized
// weights and the dequantized quantized activations, vec_dot.h's contract), on fresh random
// inputs: decode (one token) and batched shapes, row counts that leave partial row blocks and
// uneven thread splits, and one input shared by weights of different activation formats.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "backend/cpu/matmul_fast.h"
#include "backend/error_stats.h"
#include "backend/random_data.h"
#include "quant/quantize.h"
#include "quant/vec_dot.h"
#include "util/error.h"
#include "util/thread_pool.h"

namespace lockstep::backend_test {
namespace {

struct Matrix {
  WeightView view;
  std::vector<uint8_t> bytes;
  std::vector<float> values;  // dequantized
};

Matrix random_matrix(TensorType type, int64_t cols, int64_t rows, std::mt19937_64& rng) {
  Matrix m;
  const uint64_t rb = *row_bytes(type, cols);
  m.bytes.resize(size_t(rb * uint64_t(rows)));
  m.values.resize(size_t(cols * rows));
  for (int64_t r = 0; r < rows; ++r) {
    const auto row = normal(rng, size_t(cols), 1.0f);
    quantize_row(type, row.data(), m.bytes.data() + uint64_t(r) * rb, cols);
    dequantize_row(type, m.bytes.data() + uint64_t(r) * rb, m.values.data() + r * cols, cols);
  }
  m.view.name = std::string("w.") + tensor_type_info(type).name;
  m.view.type = type;
  m.view.cols = cols;
  m.view.rows = rows;
  m.view.row_bytes = rb;
  m.view.data = m.bytes.data();
  return m;
}

// The activation values vec_dot uses for weight type `type`.
std::vector<float> effective_activation(TensorType type, const float* x, int64_t cols) {
  std::vector<uint8_t> buf(activation_row_bytes(type, cols));
  quantize_activation(type, x, buf.data(), cols);
  std::vector<double> out(static_cast<size_t>(cols));
  dequantize_activation(type, buf.data(), out.data(), cols);
  return std::vector<float>(out.begin(), out.end());
}

void expect_matches_f64(const std::vector<float>& y, const Matrix& w, const std::vector<float>& x,
                        int64_t n) {
  const int64_t cols = w.view.cols, rows = w.view.rows;
  WorstError err;
  for (int64_t t = 0; t < n; ++t) {
    const auto a = effective_activation(w.view.type, x.data() + t * cols, cols);
    for (int64_t r = 0; r < rows; ++r) {
      double want = 0, mag = 0;
      for (int64_t c = 0; c < cols; ++c) {
        want += double(w.values[size_t(r * cols + c)]) * double(a[size_t(c)]);
        mag += std::fabs(double(w.values[size_t(r * cols + c)]) * double(a[size_t(c)]));
      }
      // Integer block sums are exact; the float scaling and accumulation of the blocks round
      // at most a few times per block.
      err.add(y[size_t(t * rows + r)], want, 8 * kU32 * double(cols) * mag / 32 + 1e-30);
    }
  }
  EXPECT_LE(err.excess(), 1.0) << "max |error| " << err.abs();
}

struct IsaGuard {
  ~IsaGuard() { force_isa(best_isa()); }
};

TEST(QuantizedMatmul, MatchesFloat64ForEveryWeightTypeShapeAndThreadCount) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  IsaGuard restore;
  for (Isa isa : {Isa::Scalar, Isa::Avx2, Isa::Avx512}) {
    if (!isa_supported(isa)) continue;
    force_isa(isa);
    for (TensorType type :
         {TensorType::F32, TensorType::F16, TensorType::Q4_0, TensorType::Q5_0, TensorType::Q8_0,
          TensorType::Q4_K, TensorType::Q5_K, TensorType::Q6_K}) {
      const int64_t cols = tensor_type_info(type).block_elems >= 256 ? 512 : 96;
      const Matrix w = random_matrix(type, cols, 37, rng);  // 37: two full row blocks + 5
      for (int threads : {1, 2, 3}) {
        ThreadPool pool(threads);
        for (int64_t n : {1, 5}) {
          SCOPED_TRACE(std::string(isa_name(isa)) + " " + tensor_type_info(type).name + " " +
                       std::to_string(threads) + " threads, " + std::to_string(n) + " tokens");
          cpu_fast::QuantizedMatmul mm;
          mm.reserve(8, 512);
          const auto x = normal(rng, size_t(n * cols), 1.0f);
          std::vector<float> y(size_t(n * w.view.rows), std::nanf(""));
          mm.set_input(x.data(), n, cols);
          mm.multiply(y.data(), w.view, pool);
          expect_matches_f64(y, w, x, n);
        }
      }
    }
  }
}

TEST(QuantizedMatmul, OneInputServesWeightsOfDifferentActivationFormats) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  ThreadPool pool(2);
  const int64_t cols = 256;
  const Matrix a = random_matrix(TensorType::Q4_K, cols, 20, rng);  // Q8_K activations
  const Matrix b = random_matrix(TensorType::Q8_0, cols, 20, rng);  // Q8_0 activations
  const Matrix c = random_matrix(TensorType::F16, cols, 20, rng);   // float activations
  cpu_fast::QuantizedMatmul mm;
  mm.reserve(4, cols);
  for (int round = 0; round < 2; ++round) {  // a new input must invalidate the cached copies
    const auto x = normal(rng, size_t(3 * cols), 1.0f);
    mm.set_input(x.data(), 3, cols);
    for (const Matrix* m : {&a, &b, &c, &a}) {
      std::vector<float> y(size_t(3 * m->view.rows));
      mm.multiply(y.data(), m->view, pool);
      expect_matches_f64(y, *m, x, 3);
    }
  }
}

TEST(QuantizedMatmul, RejectsMismatchedShapes) {
  std::mt19937_64 rng(fresh_seed());
  ThreadPool pool(1);
  const Matrix w = random_matrix(TensorType::Q8_0, 64, 4, rng);
  cpu_fast::QuantizedMatmul mm;
  mm.reserve(2, 128);
  const auto x = normal(rng, 3 * 128, 1.0f);
  EXPECT_THROW(mm.set_input(x.data(), 3, 64), Error);   // more tokens than reserved
  EXPECT_THROW(mm.set_input(x.data(), 1, 256), Error);  // wider than reserved
  mm.set_input(x.data(), 1, 96);
  std::vector<float> y(4);
  EXPECT_THROW(mm.multiply(y.data(), w.view, pool), Error);  // 64 columns, input rows of 96
  EXPECT_TRUE(cpu_fast::QuantizedMatmul::supports(TensorType::Q4_K, 256));
  EXPECT_FALSE(cpu_fast::QuantizedMatmul::supports(TensorType::Q4_K, 96));
  EXPECT_FALSE(cpu_fast::QuantizedMatmul::supports(TensorType::I32, 64));
}

}  // namespace
}  // namespace lockstep::backend_test
