// gemm_q8_0 (Q4_0 / Q4_1 / Q5_0 / Q5_1 / Q8_0 weights x Q8_0 activations, register tiles) on
// every ISA the CPU has: against float64 products of the values it multiplies, on every tile
// remainder shape and on rows of whole and partial groups of 16 blocks; bit-identical whatever
// the grouping of rows and tokens, one token or a batch, activations in group layout given or
// not; exact at the extremes of the integer ranges (no int16 saturation on the AVX2 path).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "backend/cpu/gemm_q8_0.h"
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

// Activation rows as QuantizedMatmul makes them (vec_dot.h's two-term format).
struct Activations {
  std::vector<uint8_t> bytes;
  std::vector<float> values;  // dequantized: what the kernel multiplies
  size_t stride = 0;
  int64_t nb = 0;
  cpu_fast::Q8_0Rows rows() const { return {bytes.data(), stride}; }
  void update_values(int64_t n, int64_t cols) {
    values.resize(size_t(n * cols));
    std::vector<double> v(static_cast<size_t>(cols));
    for (int64_t t = 0; t < n; ++t) {
      dequantize_activation(TensorType::Q8_0, bytes.data() + size_t(t) * stride, v.data(), cols);
      for (int64_t c = 0; c < cols; ++c) values[size_t(t * cols + c)] = float(v[size_t(c)]);
    }
  }
};

Activations quantize_tokens(const std::vector<float>& x, int64_t n, int64_t cols) {
  Activations a;
  a.nb = cols / 32;
  a.stride = activation_row_bytes(TensorType::Q8_0, cols);
  a.bytes.resize(a.stride * size_t(n));
  for (int64_t t = 0; t < n; ++t)
    quantize_activation(TensorType::Q8_0, x.data() + t * cols,
                        a.bytes.data() + size_t(t) * a.stride, cols);
  a.update_values(n, cols);
  return a;
}

struct Weights {
  std::vector<uint8_t> bytes;
  std::vector<float> values;
  size_t stride = 0;
};

Weights random_weights(TensorType type, int64_t rows, int64_t cols, std::mt19937_64& rng) {
  Weights w;
  w.stride = *row_bytes(type, cols);
  w.bytes.resize(w.stride * size_t(rows));
  w.values.resize(size_t(rows * cols));
  for (int64_t r = 0; r < rows; ++r) {
    const auto v = normal(rng, size_t(cols), 1.0f);
    quantize_row(type, v.data(), w.bytes.data() + size_t(r) * w.stride, cols);
    dequantize_row(type, w.bytes.data() + size_t(r) * w.stride, w.values.data() + r * cols, cols);
  }
  return w;
}

std::vector<Isa> supported_isas() {
  std::vector<Isa> out;
  for (Isa isa : {Isa::Scalar, Isa::Avx2, Isa::Avx512})
    if (isa_supported(isa)) out.push_back(isa);
  return out;
}

constexpr TensorType kTypes[] = {TensorType::Q4_0, TensorType::Q4_1, TensorType::Q5_0,
                                 TensorType::Q5_1, TensorType::Q8_0};

TEST(GemmQ8_0, MatchesFloat64OnEveryTileShape) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  IsaGuard restore;
  for (Isa isa : supported_isas()) {
    force_isa(isa);
    for (TensorType type : kTypes) {
      // 1 and 3 blocks; 28 (a group of 16 and 12); 50 (3 groups and 2); 15 (AVX2's groups of 8:
      // one and 7, whose decode pairs blocks 0-3 with 4-6 and leaves block 3 alone).
      for (int64_t cols : {32, 96, 896, 1600, 480}) {
        const int64_t rows = 11, n = 9;  // 4 + 4 + 3 rows, 4 + 4 + 1 tokens (and 1-token calls)
        const Weights w = random_weights(type, rows, cols, rng);
        const Activations a = quantize_tokens(normal(rng, size_t(n * cols), 1.0f), n, cols);
        for (int64_t tokens : {n, int64_t(1), int64_t(6)}) {
          SCOPED_TRACE(std::string(isa_name(isa)) + " " + tensor_type_info(type).name + " cols " +
                       std::to_string(cols) + " tokens " + std::to_string(tokens));
          std::vector<float> y(size_t(rows * tokens), std::nanf(""));
          cpu_fast::gemm_q8_0(type, w.bytes.data(), w.stride, rows, a.rows(), tokens, cols / 32,
                              y.data(), rows);
          if (tokens == 1 && cpu_fast::gemm_q8_0_uses_fifth_bit_words(type)) {
            // Decode with the weight's fifth-bit words gives the same bits.
            std::vector<uint32_t> words(cpu_fast::fifth_bit_word_count(rows, cols / 32));
            cpu_fast::fifth_bit_words(type, w.bytes.data(), w.stride, rows, cols / 32,
                                      words.data());
            std::vector<float> with_words(static_cast<size_t>(rows));
            cpu_fast::gemm_q8_0(type, w.bytes.data(), w.stride, rows, a.rows(), 1, cols / 32,
                                with_words.data(), rows, words.data());
            EXPECT_EQ(y, with_words);
          }
          WorstError err;
          for (int64_t t = 0; t < tokens; ++t)
            for (int64_t r = 0; r < rows; ++r) {
              double want = 0, mag = 0;
              for (int64_t c = 0; c < cols; ++c) {
                const double p =
                    double(w.values[size_t(r * cols + c)]) * double(a.values[size_t(t * cols + c)]);
                want += p;
                mag += std::fabs(p);
              }
              // Exact integer block dots; per block one conversion, one product of scales and
              // one accumulation round (two with a min), plus the final 8- or 16-lane sum.
              err.add(y[size_t(t * rows + r)], want, (5.0 * double(cols / 32) + 8) * kU32 * mag);
            }
          EXPECT_LE(err.excess(), 1.0) << "max |error| " << err.abs();
        }
      }
    }
  }
}

TEST(GemmQ8_0, GroupingOfRowsAndTokensDoesNotChangeABit) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  IsaGuard restore;
  for (Isa isa : supported_isas()) {
    force_isa(isa);
    for (TensorType type : kTypes) {
      SCOPED_TRACE(std::string(isa_name(isa)) + " " + tensor_type_info(type).name);
      const int64_t rows = 10, n = 7, cols = 608;  // 19 blocks: a group and 3
      const Weights w = random_weights(type, rows, cols, rng);
      const Activations a = quantize_tokens(normal(rng, size_t(n * cols), 1.0f), n, cols);
      std::vector<float> all(size_t(rows * n)), pieces(size_t(rows * n));
      cpu_fast::gemm_q8_0(type, w.bytes.data(), w.stride, rows, a.rows(), n, cols / 32, all.data(),
                          rows);
      if (cpu_fast::gemm_q8_0_uses_groups(type)) {
        // The activations' group layout made by the caller, as QuantizedMatmul does.
        const size_t gb = cpu_fast::group_row_bytes(cols / 32);
        std::vector<uint8_t> groups(gb * size_t(n), 0xA5);
        for (int64_t t = 0; t < n; ++t)
          cpu_fast::groups_from_q8_0(a.bytes.data() + size_t(t) * a.stride, cols / 32,
                                     groups.data() + size_t(t) * gb);
        cpu_fast::Q8_0Rows given = a.rows();
        given.groups = groups.data();
        given.groups_stride = gb;
        std::vector<float> with_groups(size_t(rows * n));
        cpu_fast::gemm_q8_0(type, w.bytes.data(), w.stride, rows, given, n, cols / 32,
                            with_groups.data(), rows);
        EXPECT_EQ(all, with_groups);
      }
      // Each token alone, rows in uneven groups (3 + 5 + 2).
      for (int64_t t = 0; t < n; ++t) {
        cpu_fast::Q8_0Rows one = a.rows();
        one.blocks += size_t(t) * a.stride;
        int64_t r0 = 0;
        for (int64_t group : {3, 5, 2}) {
          cpu_fast::gemm_q8_0(type, w.bytes.data() + size_t(r0) * w.stride, w.stride, group, one, 1,
                              cols / 32, pieces.data() + t * rows + r0, rows);
          r0 += group;
        }
      }
      EXPECT_EQ(all, pieces);
      if (cpu_fast::gemm_q8_0_splits_decode(type)) {
        // Each token alone with its split layout made by the caller, as QuantizedMatmul does.
        std::vector<float> split_rows(size_t(rows * n));
        std::vector<uint8_t> split(cpu_fast::split_row_bytes(cols / 32), 0xA5);
        for (int64_t t = 0; t < n; ++t) {
          cpu_fast::split_from_q8_0(a.bytes.data() + size_t(t) * a.stride, cols / 32, split.data());
          cpu_fast::Q8_0Rows one = a.rows();
          one.blocks += size_t(t) * a.stride;
          one.split = split.data();
          cpu_fast::gemm_q8_0(type, w.bytes.data(), w.stride, rows, one, 1, cols / 32,
                              split_rows.data() + t * rows, rows);
        }
        EXPECT_EQ(all, split_rows);
      }
      if (cpu_fast::gemm_q8_0_uses_fifth_bit_words(type)) {
        // Each token alone with the weight's fifth-bit words, rows in other uneven groups.
        const int64_t nb = cols / 32;
        std::vector<uint32_t> words(cpu_fast::fifth_bit_word_count(rows, nb));
        cpu_fast::fifth_bit_words(type, w.bytes.data(), w.stride, rows, nb, words.data());
        std::vector<float> with_words(size_t(rows * n));
        for (int64_t t = 0; t < n; ++t) {
          cpu_fast::Q8_0Rows one = a.rows();
          one.blocks += size_t(t) * a.stride;
          int64_t r0 = 0;
          for (int64_t group : {4, 5, 1}) {
            cpu_fast::gemm_q8_0(type, w.bytes.data() + size_t(r0) * w.stride, w.stride, group, one,
                                1, nb, with_words.data() + t * rows + r0, rows,
                                words.data() + r0 * nb);
            r0 += group;
          }
        }
        EXPECT_EQ(all, with_words);
      }
    }
  }
}

// Q8_0 weights of -128 and 127 against activations of +-127 in both terms (and Q5_0 levels 0
// and 31): the largest products the integer paths meet, and for AVX2's decode of Q5_0 the
// activation |A| = 32385 that its split into two int8 terms must take as 254 * 127 + 127.
// Compared with the exact integer result.
TEST(GemmQ8_0, ExtremeLevelsAreExact) {
  IsaGuard restore;
  const int64_t cols = 64;
  // Activations: +-1 patterns quantize to qs = +-127 with d = 1/127.
  std::vector<float> x(cols);
  for (int64_t i = 0; i < cols; ++i) x[size_t(i)] = (i % 3 == 0) ? -1.0f : 1.0f;
  Activations a = quantize_tokens(x, 1, cols);
  // the largest combined activations, A = +-(254 * 127 + 127) (vec_dot_internal.h's layout:
  // int16 A[32] per block first)
  for (int64_t i = 0; i < cols; ++i) {
    const int16_t A = int16_t(i % 5 < 2 ? -32385 : 32385);
    std::memcpy(&a.bytes[2 * size_t(i)], &A, 2);
  }
  a.update_values(1, cols);
  for (TensorType type : {TensorType::Q8_0, TensorType::Q5_0}) {
    const size_t rb = *row_bytes(type, cols);
    std::vector<uint8_t> w(rb);
    const uint16_t d = fp32_to_fp16(0.5f);
    for (int64_t b = 0; b < cols / 32; ++b) {
      uint8_t* blk = w.data() + size_t(b) * rb / size_t(cols / 32);
      std::memcpy(blk, &d, 2);
      if (type == TensorType::Q8_0) {
        for (int j = 0; j < 32; ++j) blk[2 + j] = uint8_t(j % 2 ? int8_t(-128) : int8_t(127));
      } else {  // all levels 31 in the first block, 0 in the second
        const uint8_t fill = b == 0 ? 0xFF : 0x00;
        std::memset(blk + 2, fill, 20);
      }
    }
    std::vector<float> values(cols);
    dequantize_row(type, w.data(), values.data(), cols);
    double want = 0;
    for (int64_t c = 0; c < cols; ++c) want += double(values[size_t(c)]) * a.values[size_t(c)];
    for (Isa isa : supported_isas()) {
      force_isa(isa);
      float y = std::nanf("");
      cpu_fast::gemm_q8_0(type, w.data(), rb, 1, a.rows(), 1, cols / 32, &y, 1);
      // Integer parts exact; only the float scaling rounds.
      EXPECT_NEAR(y, want, 1e-5 * std::fabs(want) + 1e-6)
          << isa_name(isa) << " " << tensor_type_info(type).name;
    }
  }
}

}  // namespace
}  // namespace lockstep::backend_test
