// gemm_k (Q4_K / Q5_K / Q6_K weights x two-term activations, register tiles) on every ISA it has a
// kernel for: against float64 products of the values it multiplies, on every tile remainder shape
// (rows and tokens not multiples of 4); the activation it reads keeps the two terms' accuracy
// (d / 508); bit-identical whatever the grouping of rows and tokens; exact at the extremes of
// the integer ranges (no int32 overflow in a part's lanes, no int16 overflow of scaled levels).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "backend/cpu/gemm_k.h"
#include "backend/error_stats.h"
#include "backend/random_data.h"
#include "quant/fp16.h"
#include "quant/quantize.h"
#include "quant/vec_dot.h"

namespace lockstep::backend_test {
namespace {

struct IsaGuard {
  ~IsaGuard() { force_isa(best_isa()); }
};

constexpr TensorType kTypes[] = {TensorType::Q4_K, TensorType::Q5_K, TensorType::Q6_K};

// Token rows in gemm_k's layout, made as QuantizedMatmul makes them (Q8_K, then rewritten).
struct Activations {
  std::vector<uint8_t> bytes;
  size_t stride = 0;
  int64_t nb = 0;
  cpu_fast::K16Rows rows() const { return {bytes.data(), stride}; }
  // e * A of element c of token t, exactly.
  double value(int64_t t, int64_t c) const {
    const uint8_t* blk =
        bytes.data() + size_t(t) * stride + size_t(c / 256) * cpu_fast::kK16BlockBytes;
    int16_t a;
    float e;
    std::memcpy(&a, blk + 2 * (c % 256), 2);
    std::memcpy(&e, blk + 544, 4);
    return double(e) * double(a);
  }
};

Activations quantize_tokens(const std::vector<float>& x, int64_t n, int64_t cols) {
  Activations a;
  a.nb = cols / 256;
  a.stride = cpu_fast::k16_row_bytes(a.nb);
  a.bytes.resize(a.stride * size_t(n));
  std::vector<uint8_t> q8k(activation_row_bytes(TensorType::Q4_K, cols));
  for (int64_t t = 0; t < n; ++t) {
    quantize_activation(TensorType::Q4_K, x.data() + t * cols, q8k.data(), cols);
    cpu_fast::k16_from_q8_k(q8k.data(), a.nb, a.bytes.data() + size_t(t) * a.stride);
  }
  return a;
}

struct Weights {
  std::vector<uint8_t> bytes;
  std::vector<float> values;
  std::vector<double> bound;  // per element, >= |each term gemm_k splits the value into|
  size_t stride = 0;
};

float half_at(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return fp16_to_fp32(h);
}

Weights random_weights(TensorType type, int64_t rows, int64_t cols, std::mt19937_64& rng) {
  Weights w;
  w.stride = *row_bytes(type, cols);
  w.bytes.resize(w.stride * size_t(rows));
  w.values.resize(size_t(rows * cols));
  w.bound.resize(size_t(rows * cols));
  const size_t block = w.stride / size_t(cols / 256);
  for (int64_t r = 0; r < rows; ++r) {
    const auto v = normal(rng, size_t(cols), 1.0f);
    uint8_t* row = w.bytes.data() + size_t(r) * w.stride;
    quantize_row(type, v.data(), row, cols);
    dequantize_row(type, row, w.values.data() + r * cols, cols);
    for (int64_t c = 0; c < cols; ++c) {
      const uint8_t* b = row + size_t(c / 256) * block;
      double bound = std::fabs(w.values[size_t(r * cols + c)]);
      if (type != TensorType::Q6_K)  // d * sc * q and dmin * m apart: sc, m <= 63, q <= 31
        bound = std::fabs(half_at(b)) * 63 * 31 + std::fabs(half_at(b + 2)) * 63;
      w.bound[size_t(r * cols + c)] = bound;
    }
  }
  return w;
}

std::vector<Isa> kernel_isas() {
  std::vector<Isa> out;
  IsaGuard restore;
  for (Isa isa : {Isa::Avx2, Isa::Avx512}) {
    if (!isa_supported(isa)) continue;
    force_isa(isa);
    if (cpu_fast::gemm_k_available(TensorType::Q4_K)) out.push_back(isa);
  }
  return out;
}

TEST(GemmK, HasAKernelOnThisMachine) {
  // The other tests loop over kernel_isas(); an empty list would make them pass vacuously.
  if (!isa_supported(Isa::Avx2)) GTEST_SKIP() << "no AVX2";
  EXPECT_FALSE(kernel_isas().empty());
}

TEST(GemmK, ActivationKeepsTheTwoTermsAccuracy) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  const int64_t cols = 512;
  const auto x = normal(rng, size_t(cols), 2.0f);
  const Activations a = quantize_tokens(x, 1, cols);
  for (int64_t b = 0; b < cols / 256; ++b) {
    double amax = 0;
    for (int64_t c = 256 * b; c < 256 * (b + 1); ++c)
      amax = std::max(amax, std::fabs(double(x[size_t(c)])));
    const double d = amax / 127;
    for (int64_t c = 256 * b; c < 256 * (b + 1); ++c)
      // d / 508 plus the float rounding of x / d in the quantizer (as vec_dot_test.cpp).
      ASSERT_LE(std::fabs(a.value(0, c) - x[size_t(c)]), d / 508 + 8 * 0x1p-24 * amax)
          << "element " << c;
  }
}

TEST(GemmK, MatchesFloat64OnEveryTileShape) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  IsaGuard restore;
  for (Isa isa : kernel_isas()) {
    force_isa(isa);
    for (TensorType type : kTypes) {
      for (int64_t cols : {256, 768}) {
        const int64_t rows = 11, n = 9;  // 4 + 4 + 3 rows, 4 + 4 + 1 tokens (and 1-token calls)
        const Weights w = random_weights(type, rows, cols, rng);
        const Activations a = quantize_tokens(normal(rng, size_t(n * cols), 1.0f), n, cols);
        for (int64_t tokens : {n, int64_t(1), int64_t(6)}) {
          SCOPED_TRACE(std::string(isa_name(isa)) + " " + tensor_type_info(type).name + " cols " +
                       std::to_string(cols) + " tokens " + std::to_string(tokens));
          std::vector<float> y(size_t(rows * tokens), std::nanf(""));
          cpu_fast::gemm_k(type, w.bytes.data(), w.stride, rows, a.rows(), tokens, cols / 256,
                           y.data(), rows);
          WorstError err;
          for (int64_t t = 0; t < tokens; ++t)
            for (int64_t r = 0; r < rows; ++r) {
              double want = 0, mag = 0;
              for (int64_t c = 0; c < cols; ++c) {
                const double x = a.value(t, c);
                want += double(w.values[size_t(r * cols + c)]) * x;
                mag += w.bound[size_t(r * cols + c)] * std::fabs(x);
              }
              // Exact integer dots; per part of a superblock one conversion, one product of
              // scales and one accumulation round, the mins likewise, the weights' own float
              // dequantization (a few roundings), then the final sum over up to 16 lanes.
              err.add(y[size_t(t * rows + r)], want, (8.0 * double(cols / 256) + 24) * kU32 * mag);
            }
          EXPECT_LE(err.excess(), 1.0) << "max |error| " << err.abs();
        }
      }
    }
  }
}

TEST(GemmK, GroupingOfRowsAndTokensDoesNotChangeABit) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  IsaGuard restore;
  for (Isa isa : kernel_isas()) {
    force_isa(isa);
    for (TensorType type : kTypes) {
      SCOPED_TRACE(std::string(isa_name(isa)) + " " + tensor_type_info(type).name);
      const int64_t rows = 10, n = 7, cols = 512;
      const Weights w = random_weights(type, rows, cols, rng);
      const Activations a = quantize_tokens(normal(rng, size_t(n * cols), 1.0f), n, cols);
      std::vector<float> all(size_t(rows * n), std::nanf("")), pieces(size_t(rows * n));
      cpu_fast::gemm_k(type, w.bytes.data(), w.stride, rows, a.rows(), n, cols / 256, all.data(),
                       rows);
      // Each token alone, rows in uneven groups (3 + 5 + 2).
      for (int64_t t = 0; t < n; ++t) {
        cpu_fast::K16Rows one = a.rows();
        one.blocks += size_t(t) * a.stride;
        int64_t r0 = 0;
        for (int64_t group : {3, 5, 2}) {
          cpu_fast::gemm_k(type, w.bytes.data() + size_t(r0) * w.stride, w.stride, group, one, 1,
                           cols / 256, pieces.data() + t * rows + r0, rows);
          r0 += group;
        }
      }
      for (float v : all) ASSERT_TRUE(std::isfinite(v));
      EXPECT_EQ(all, pieces);
    }
  }
}

// Rows longer than a thread's scratch (2048 superblocks) take the tiles that unpack as they go:
// still the same bits as one token at a time, and still the float64 products.
TEST(GemmK, RowsLongerThanTheScratch) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  IsaGuard restore;
  const int64_t cols = 2049 * 256, rows = 5, n = 2;
  const Weights w = random_weights(TensorType::Q4_K, rows, cols, rng);
  const Activations a = quantize_tokens(normal(rng, size_t(n * cols), 1.0f), n, cols);
  for (Isa isa : kernel_isas()) {
    force_isa(isa);
    SCOPED_TRACE(isa_name(isa));
    std::vector<float> all(size_t(rows * n), std::nanf("")), one(size_t(rows * n), std::nanf(""));
    cpu_fast::gemm_k(TensorType::Q4_K, w.bytes.data(), w.stride, rows, a.rows(), n, cols / 256,
                     all.data(), rows);
    for (int64_t t = 0; t < n; ++t) {
      cpu_fast::K16Rows at = a.rows();
      at.blocks += size_t(t) * a.stride;
      cpu_fast::gemm_k(TensorType::Q4_K, w.bytes.data(), w.stride, rows, at, 1, cols / 256,
                       one.data() + t * rows, rows);
    }
    EXPECT_EQ(all, one);
    WorstError err;
    for (int64_t t = 0; t < n; ++t)
      for (int64_t r = 0; r < rows; ++r) {
        double want = 0, mag = 0;
        for (int64_t c = 0; c < cols; ++c) {
          const double x = a.value(t, c);
          want += double(w.values[size_t(r * cols + c)]) * x;
          mag += w.bound[size_t(r * cols + c)] * std::fabs(x);
        }
        err.add(all[size_t(t * rows + r)], want, (8.0 * double(cols / 256) + 24) * kU32 * mag);
      }
    EXPECT_LE(err.excess(), 1.0) << "max |error| " << err.abs();
  }
}

// The largest integer products: Q6_K levels -32 at scale -128 (4096 per element) and Q4_K / Q5_K
// levels 15 / 31 at scale 63 with mins 63, against A = +-32385 in every element (all of one sign
// per superblock, so a part's lanes reach their bound). Compared with the exact sum.
TEST(GemmK, ExtremeLevelsAreExact) {
  IsaGuard restore;
  const int64_t cols = 512, nb = 2;
  Activations a;
  a.nb = nb;
  a.stride = cpu_fast::k16_row_bytes(nb);
  a.bytes.assign(a.stride, 0);
  for (int64_t b = 0; b < nb; ++b) {
    uint8_t* blk = a.bytes.data() + size_t(b) * cpu_fast::kK16BlockBytes;
    const int16_t A = b == 0 ? 32385 : -32385, s1 = int16_t(b == 0 ? 32 * 127 : -32 * 127);
    for (int i = 0; i < 256; ++i) std::memcpy(blk + 2 * i, &A, 2);
    for (int j = 0; j < 16; ++j) std::memcpy(blk + 512 + 2 * j, &s1, 2);  // q1 = q2 = +-127
    const float e = 1.0f / 4096;
    std::memcpy(blk + 544, &e, 4);
  }
  for (TensorType type : kTypes) {
    const size_t rb = *row_bytes(type, cols), block = rb / size_t(nb);
    std::vector<uint8_t> w(rb, 0);
    const uint16_t d = fp32_to_fp16(0.25f), dmin = fp32_to_fp16(0.5f);
    for (int64_t b = 0; b < nb; ++b) {
      uint8_t* blk = w.data() + size_t(b) * block;
      if (type == TensorType::Q6_K) {  // ql = qh = 0: level 0 - 32; scales -128
        std::memset(blk + 192, 0x80, 16);
        std::memcpy(blk + 208, &d, 2);
      } else {  // every scale and min 63, every level at its top
        std::memcpy(blk, &d, 2);
        std::memcpy(blk + 2, &dmin, 2);
        std::memset(blk + 4, 0xFF, rb / size_t(nb) - 4);
      }
    }
    std::vector<float> values(cols);
    dequantize_row(type, w.data(), values.data(), cols);
    double want = 0, mag = 0;
    for (int64_t c = 0; c < cols; ++c) {
      want += double(values[size_t(c)]) * a.value(0, c);
      mag += std::fabs(double(values[size_t(c)]) * a.value(0, c));
    }
    for (Isa isa : kernel_isas()) {
      force_isa(isa);
      float y = std::nanf("");
      cpu_fast::gemm_k(type, w.data(), rb, 1, a.rows(), 1, nb, &y, 1);
      // Integer parts exact (a wrapped int32 would be off by ~2^32 units); only the float
      // scaling and the sum of the two superblocks (of opposite signs) round.
      EXPECT_NEAR(y, want, 1e-6 * mag) << isa_name(isa) << " " << tensor_type_info(type).name;
    }
  }
}

}  // namespace
}  // namespace lockstep::backend_test
