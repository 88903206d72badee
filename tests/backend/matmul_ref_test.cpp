// The reference matmul against a float64 recomputation on fresh random weights stored in each
// type (written by quantize_row, read back by dequantize_row: the test checks the product, the
// quant tests check the formats), and its promise of identical bits for any thread count and
// batch size.
#include <gtest/gtest.h>

#include <cmath>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "backend/cpu/lane_tiles.h"
#include "backend/cpu/matmul_ref.h"
#include "backend/cpu/ops_ref.h"
#include "backend/cpu/simd_level.h"
#include "backend/error_stats.h"
#include "backend/random_data.h"
#include "quant/blocks.h"
#include "quant/fp16.h"
#include "quant/quantize.h"
#include "util/error.h"

namespace lockstep::backend_test {
namespace {

// A weight matrix of `type` with random values, plus its dequantized floats.
struct TestWeight {
  std::vector<uint8_t> bytes;
  std::vector<float> values;  // rows x cols, as dequantize_row gives them
  WeightView view;
};

// Random bytes for a row of Q2_K or Q3_K blocks (types lockstep reads but does not write), with
// each block's fp16 scales set to random sane values: every bit pattern of the quants is valid.
void random_k_blocks(TensorType type, uint8_t* dst, int64_t cols, std::mt19937_64& rng) {
  std::uniform_int_distribution<int> byte(0, 255);
  std::uniform_real_distribution<float> scale(0.005f, 0.05f);
  const int64_t n_blocks = cols / 256;
  const size_t block_bytes = tensor_type_info(type).block_bytes;
  for (size_t i = 0; i < size_t(n_blocks) * block_bytes; ++i) dst[i] = uint8_t(byte(rng));
  for (int64_t b = 0; b < n_blocks; ++b) {
    uint8_t* block = dst + size_t(b) * block_bytes;
    const uint16_t d = fp32_to_fp16(scale(rng)), dmin = fp32_to_fp16(scale(rng));
    if (type == TensorType::Q2_K) {
      std::memcpy(block + offsetof(quant::BlockQ2_K, d), &d, 2);
      std::memcpy(block + offsetof(quant::BlockQ2_K, dmin), &dmin, 2);
    } else {
      std::memcpy(block + offsetof(quant::BlockQ3_K, d), &d, 2);
    }
  }
}

TestWeight make_weight(TensorType type, int64_t cols, int64_t rows, std::mt19937_64& rng) {
  TestWeight w;
  const uint64_t rb = *row_bytes(type, cols);
  w.bytes.resize(size_t(rb * uint64_t(rows)));
  w.values.resize(size_t(cols * rows));
  for (int64_t r = 0; r < rows; ++r) {
    uint8_t* row = w.bytes.data() + uint64_t(r) * rb;
    if (tensor_type_info(type).can_quantize) {
      auto src = normal(rng, size_t(cols), 0.5f);
      quantize_row(type, src.data(), row, cols);
    } else {
      random_k_blocks(type, row, cols, rng);
    }
    dequantize_row(type, row, w.values.data() + r * cols, cols);
  }
  w.view.name = "test." + std::string(tensor_type_info(type).name);
  w.view.type = type;
  w.view.cols = cols;
  w.view.rows = rows;
  w.view.row_bytes = rb;
  w.view.data = w.bytes.data();
  return w;
}

using cpu_ref::SimdLevel;

// Runs body once per SIMD level this CPU supports, then restores the best one.
template <typename Body>
void for_each_simd_level(Body body) {
  for (SimdLevel level : {SimdLevel::Baseline, SimdLevel::Avx2, SimdLevel::Avx512}) {
    if (!cpu_ref::simd_level_supported(level)) {
      std::printf("[ note ] %s not supported here, not tested\n", cpu_ref::simd_level_name(level));
      continue;
    }
    cpu_ref::force_simd_level(level);
    SCOPED_TRACE(std::string("simd ") + cpu_ref::simd_level_name(level));
    body();
  }
  for (SimdLevel level : {SimdLevel::Avx512, SimdLevel::Avx2, SimdLevel::Baseline}) {
    if (cpu_ref::simd_level_supported(level)) {
      cpu_ref::force_simd_level(level);
      break;
    }
  }
}

struct Case {
  TensorType type;
  int64_t cols;
};

const Case kCases[] = {
    {TensorType::F32, 172},
    {TensorType::F32, 64},
    {TensorType::F16, 172},
    {TensorType::F16, 288},
    {TensorType::Q8_0, 64},
    {TensorType::Q8_0, 416},
    {TensorType::Q4_0, 96},
    {TensorType::Q5_0, 128},
    {TensorType::Q4_K, 256},
    {TensorType::Q4_K, 512},
    {TensorType::Q6_K, 256},
    {TensorType::BF16, 80},
    {TensorType::Q4_1, 160},
    {TensorType::Q5_1, 96},
    {TensorType::Q2_K, 256},
    {TensorType::Q3_K, 512},
    {TensorType::Q5_K, 256},
    {TensorType::Q8_K, 512},
    // Several 1024-column chunks, the last one partial (and with a 12-element lane tail for F16).
    {TensorType::F16, 1100},
    {TensorType::Q4_K, 2560},
    {TensorType::Q8_0, 2080},
};

// Every type dequantize_row reads (the reference's weight types).
TEST(MatmulRef, CasesCoverEveryReadableType) {
  int readable = 0;
  for (uint32_t id = 0; id < 64; ++id) {
    const auto info = tensor_type_info(id);
    if (!info || !info->can_dequantize) continue;
    ++readable;
    const TensorType type = info->type;
    bool covered = false;
    for (const Case& c : kCases) covered = covered || c.type == type;
    EXPECT_TRUE(covered) << tensor_type_info(type).name << " has no matmul case";
  }
  // F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K..Q6_K and Q8_K at least.
  EXPECT_GE(readable, 14);
}

TEST(MatmulRef, MatchesFloat64ForEveryWeightType) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  ThreadPool pool(3);
  for_each_simd_level([&] {
    for (const Case& c : kCases) {
      // rows: a panel's 4-row groups with and without single rows left over, several panels and
      // a short last one; tokens: decode (1), a 4-token tile plus one, and 4-token tiles plus 3.
      for (int64_t rows : {1, 37, 64, 101}) {
        for (int64_t n_tokens : {1, 5, 11}) {
          SCOPED_TRACE(std::string(tensor_type_info(c.type).name) + " cols " +
                       std::to_string(c.cols) + " rows " + std::to_string(rows) + " tokens " +
                       std::to_string(n_tokens));
          TestWeight w = make_weight(c.type, c.cols, rows, rng);
          auto x = normal(rng, size_t(c.cols * n_tokens), 1.0f);
          cpu_ref::MatmulScratch scratch(pool.size(), c.cols);
          scratch.set_panel_rows(rows == 101 ? 16 : 32);
          std::vector<float> y(size_t(rows * n_tokens), std::nanf(""));
          cpu_ref::matmul(y.data(), w.view, x.data(), n_tokens, pool, scratch);
          WorstError err;
          for (int64_t t = 0; t < n_tokens; ++t) {
            for (int64_t r = 0; r < rows; ++r) {
              double want = 0, abs_sum = 0;
              for (int64_t i = 0; i < c.cols; ++i) {
                const double p =
                    double(w.values[size_t(r * c.cols + i)]) * x[size_t(t * c.cols + i)];
                want += p;
                abs_sum += std::fabs(p);
              }
              err.add(y[size_t(t * rows + r)], want,
                      (double((c.cols + 15) / 16) + 6) * kU32 * abs_sum);
            }
          }
          EXPECT_LE(err.excess(), 1.0) << "abs error " << err.abs();
        }
      }
    }
  });
}

TEST(MatmulRef, BitIdenticalAcrossThreadsAndBatchesCloseToDot) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  for_each_simd_level([&] {
    // The last case is wide enough that the slab limit of 1 MiB set below cuts the 70 tokens
    // into groups of 28, 28 and 14.
    for (const Case& c : {Case{TensorType::Q8_0, 256 + 7 * 32}, Case{TensorType::F32, 1100},
                          Case{TensorType::F16, 2077}, Case{TensorType::Q8_0, 8192 + 32}}) {
      SCOPED_TRACE(std::string(tensor_type_info(c.type).name) + " cols " + std::to_string(c.cols));
      // cols: 16-lane chunks, 512- and 2048-column chunks and tails; rows: 8-row blocks and a
      // 7-row tail; n_tokens: full 4- and 2-token tiles, remainders, and more tokens than one
      // group of partial sums holds (64).
      const int64_t cols = c.cols, rows = 103, n_tokens = 70;
      TestWeight w = make_weight(c.type, cols, rows, rng);
      auto x = normal(rng, size_t(cols * n_tokens), 1.0f);

      ThreadPool one(1), four(4);
      cpu_ref::MatmulScratch scratch(4, cols);
      scratch.set_input_slab_bytes(int64_t(1) << 20);
      EXPECT_EQ(scratch.token_group(cols), cols > 8192 ? 28 : 64);
      // The default panel height follows the group's input slab: at most 921 KB here (28 x 8224
      // floats), so short panels.
      EXPECT_EQ(scratch.panel_rows(cols, n_tokens), 8);
      std::vector<float> y1(size_t(rows * n_tokens)), y4(y1.size());
      cpu_ref::matmul(y1.data(), w.view, x.data(), n_tokens, one, scratch);
      cpu_ref::matmul(y4.data(), w.view, x.data(), n_tokens, four, scratch);
      EXPECT_EQ(y1, y4);
      // Every panel height gives the same bits: a lane's order of operations does not depend on
      // how many rows share a pass over the tokens.
      for (int64_t panel : {8, 16, 32, 64}) {
        scratch.set_panel_rows(panel);
        std::vector<float> yp(y1.size());
        cpu_ref::matmul(yp.data(), w.view, x.data(), n_tokens, four, scratch);
        EXPECT_EQ(yp, y1) << "panel rows " << panel;
      }
      // Without the slab limit, 64 x 8224 floats (2.1 MB) take tall panels.
      cpu_ref::MatmulScratch unlimited(4, cols);
      EXPECT_EQ(unlimited.panel_rows(cols, n_tokens), cols > 8192 ? 32 : 8);
      std::vector<float> yu(y1.size());
      cpu_ref::matmul(yu.data(), w.view, x.data(), n_tokens, four, unlimited);
      EXPECT_EQ(yu, y1);
      for (int64_t t = 0; t < n_tokens; ++t) {
        std::vector<float> single(static_cast<size_t>(rows));
        cpu_ref::matmul(single.data(), w.view, x.data() + t * cols, 1, four, scratch);
        for (int64_t r = 0; r < rows; ++r) {
          ASSERT_EQ(single[size_t(r)], y1[size_t(t * rows + r)]) << "token " << t << " row " << r;
          // dot() runs the same lane-wise arithmetic, but whether `acc + w * x` is fused into
          // one FMA is the compiler's choice per function: GCC 12 and clang fuse both, GCC 13
          // (the GPU machine, 2026-11-26) left dot()'s loop unfused, 1-2 ulp apart. So dot()
          // only has to agree to a few roundings of the products' magnitude.
          double abs_sum = 0;
          for (int64_t c = 0; c < cols; ++c)
            abs_sum +=
                std::fabs(double(w.values[size_t(r * cols + c)]) * double(x[size_t(t * cols + c)]));
          const float d = cpu_ref::dot(w.values.data() + r * cols, x.data() + t * cols, cols);
          ASSERT_LE(std::fabs(double(single[size_t(r)]) - double(d)), 8 * kU32 * abs_sum + 1e-30)
              << "row " << r << ": the multi-row kernel must agree with dot()";
        }
      }
    }
  });
}

// A NaN in a token's input reaches every output of that token and no other; a NaN weight (an F32
// element, or a quantized block's scale) every output of its row, for every token.
// The matmul's epilogue sums its stored lanes with reduce_lane_sums; the reference's other dot
// products with reduce_lanes. Same tree, so the same bits, on values whose sum depends on the
// order (magnitudes from 1e-8 to 1e8, both signs).
TEST(MatmulRef, StoredLaneSumsAreReduceLanesBitForBit) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> exponent(-8, 8);
  for (int trial = 0; trial < 1000; ++trial) {
    float p[cpu_ref::kLanes];
    for (float& v : p) v = float((rng() & 1 ? -1 : 1) * std::pow(10.0, exponent(rng)));
    const float want = cpu_ref::reduce_lanes(cpu_ref::load_lanes(p));
    const float got = cpu_ref::reduce_lane_sums(p);
    ASSERT_EQ(std::memcmp(&want, &got, sizeof want), 0) << want << " vs " << got;
  }
}

TEST(MatmulRef, NanPropagatesToItsRowAndToken) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  ThreadPool pool(2);
  for_each_simd_level([&] {
    for (const Case& c :
         {Case{TensorType::F32, 300}, Case{TensorType::Q8_0, 640}, Case{TensorType::Q4_K, 768}}) {
      for (int64_t n_tokens : {1, 7}) {  // the decode and the prefill panels
        SCOPED_TRACE(std::string(tensor_type_info(c.type).name) + " tokens " +
                     std::to_string(n_tokens));
        const int64_t rows = 45, cols = c.cols;
        TestWeight w = make_weight(c.type, cols, rows, rng);
        const int64_t bad_row = int64_t(rng() % uint64_t(rows));
        const int64_t bad_col = int64_t(rng() % uint64_t(cols));
        uint8_t* row = w.bytes.data() + uint64_t(bad_row) * w.view.row_bytes;
        if (c.type == TensorType::F32) {
          const float nan = std::nanf("");
          std::memcpy(row + bad_col * 4, &nan, 4);
        } else {
          // Q8_0 and Q4_K blocks start with their fp16 scale d.
          const int64_t block = bad_col / tensor_type_info(c.type).block_elems;
          const uint16_t nan16 = 0x7e00;
          std::memcpy(row + block * tensor_type_info(c.type).block_bytes, &nan16, 2);
        }
        auto x = normal(rng, size_t(cols * n_tokens), 1.0f);
        const int64_t bad_token = n_tokens == 1 ? -1 : int64_t(rng() % uint64_t(n_tokens));
        if (bad_token >= 0) x[size_t(bad_token * cols + int64_t(rng() % uint64_t(cols)))] = NAN;
        cpu_ref::MatmulScratch scratch(pool.size(), cols);
        std::vector<float> y(size_t(rows * n_tokens), 0.0f);
        cpu_ref::matmul(y.data(), w.view, x.data(), n_tokens, pool, scratch);
        for (int64_t t = 0; t < n_tokens; ++t)
          for (int64_t r = 0; r < rows; ++r)
            ASSERT_EQ(std::isnan(y[size_t(t * rows + r)]), t == bad_token || r == bad_row)
                << "token " << t << " row " << r << " (NaN at token " << bad_token << ", row "
                << bad_row << ")";
      }
    }
  });
}

TEST(MatmulRef, RejectsScratchTooSmall) {
  std::mt19937_64 rng(fresh_seed());
  TestWeight w = make_weight(TensorType::F32, 128, 4, rng);
  auto x = normal(rng, 128, 1.0f);
  std::vector<float> y(4);
  ThreadPool pool(2);
  cpu_ref::MatmulScratch narrow(2, 64), few_threads(1, 128);
  EXPECT_THROW(cpu_ref::matmul(y.data(), w.view, x.data(), 1, pool, narrow), Error);
  EXPECT_THROW(cpu_ref::matmul(y.data(), w.view, x.data(), 1, pool, few_threads), Error);
  EXPECT_THROW(narrow.set_panel_rows(24), InputError);
  narrow.set_panel_rows(64);
  EXPECT_EQ(narrow.panel_rows(64, 3), 64);
  EXPECT_EQ(narrow.panel_rows(64, 2), 8);  // decode batches always take short panels
}

}  // namespace
}  // namespace lockstep::backend_test
