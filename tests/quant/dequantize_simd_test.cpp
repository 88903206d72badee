// The SIMD dequantizers (quant/dequantize_simd.h) against the scalar ones: for every type with a
// kernel and every ISA this CPU supports, on fresh random blocks (random bytes for quants and
// scales, random halves for d/dmin including subnormals and both zeros), dequantize_row under
// that ISA must give the same bytes as under Isa::Scalar, for several lengths, unaligned source
// and destination, without writing past the row.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "quant/dequantize_simd.h"
#include "quant/quantize.h"
#include "quant/test_data.h"
#include "quant/vec_dot.h"

namespace {

using lockstep::Isa;
using lockstep::TensorType;

constexpr TensorType kTypes[] = {
    TensorType::Q4_0, TensorType::Q4_1, TensorType::Q5_0, TensorType::Q5_1, TensorType::Q8_0,
    TensorType::Q4_K, TensorType::Q5_K, TensorType::Q6_K, TensorType::F16,  TensorType::BF16};

struct IsaGuard {
  Isa saved = lockstep::active_isa();
  ~IsaGuard() { lockstep::force_isa(saved); }
};

std::vector<Isa> simd_isas() {
  std::vector<Isa> v;
  for (Isa i : {Isa::Avx2, Isa::Avx512})
    if (lockstep::isa_supported(i)) v.push_back(i);
  return v;
}

const lockstep::TensorTypeInfo& info(TensorType t) {
  return lockstep::tensor_type_info(t);
}

// Byte offsets of the fp16 scale fields (d, dmin) inside a block.
std::vector<size_t> half_fields(TensorType t) {
  switch (t) {
    case TensorType::Q4_0:
    case TensorType::Q5_0:
    case TensorType::Q8_0:
      return {0};
    case TensorType::Q4_1:
    case TensorType::Q5_1:
      return {0, 2};
    case TensorType::Q4_K:
    case TensorType::Q5_K:
      return {0, 2};
    case TensorType::Q6_K:
      return {208};
    default:
      return {};
  }
}

// A random finite half: ordinary values mostly, with zeros of both signs, subnormals and the
// extremes well represented. With allow_nonfinite, infinities and NaNs (quiet and signalling)
// too.
uint16_t random_half(std::mt19937_64& rng, bool allow_nonfinite) {
  const uint16_t sign = uint16_t((rng() & 1) << 15);
  switch (rng() % (allow_nonfinite ? 9 : 7)) {
    case 0:
      return sign;  // +0 / -0
    case 1:
      return uint16_t(sign | (1 + rng() % 0x3ff));  // subnormal
    case 2:
      return uint16_t(sign | 0x7bff);  // largest finite
    case 3:
      return uint16_t(sign | 0x0400);  // smallest normal
    case 7:
      return uint16_t(sign | 0x7c00);  // infinity
    case 8:
      return uint16_t(sign | 0x7c00 | (1 + rng() % 0x3ff));  // NaN, quiet or signalling
    default: {
      uint16_t h;
      do h = uint16_t(rng());
      while ((h & 0x7c00) == 0x7c00);
      return h;
    }
  }
}

std::vector<uint8_t> random_row(TensorType t, int64_t n_blocks, std::mt19937_64& rng,
                                bool allow_nonfinite) {
  const size_t bb = size_t(info(t).block_bytes);
  std::vector<uint8_t> row(bb * size_t(n_blocks));
  for (auto& b : row) b = uint8_t(rng());
  for (int64_t i = 0; i < n_blocks; ++i)
    for (size_t off : half_fields(t)) {
      const uint16_t h = random_half(rng, allow_nonfinite);
      std::memcpy(&row[size_t(i) * bb + off], &h, 2);
    }
  return row;
}

// dequantize_row under `isa`, from a source at byte offset 1 into a destination at float offset
// 1, with sentinels on both sides. Returns the n floats' bytes.
std::vector<uint8_t> dequantize_under(Isa isa, TensorType t, const std::vector<uint8_t>& row,
                                      int64_t n) {
  lockstep::force_isa(isa);
  std::vector<uint8_t> src(row.size() + 1);
  if (!row.empty()) std::memcpy(src.data() + 1, row.data(), row.size());
  constexpr uint32_t kSentinel = 0x7fbadbadu;
  constexpr int64_t kPad = 17;
  std::vector<uint32_t> dst(size_t(n + 1 + kPad), kSentinel);
  lockstep::dequantize_row(t, src.data() + 1, reinterpret_cast<float*>(dst.data() + 1), n);
  EXPECT_EQ(dst[0], kSentinel) << "wrote before the row";
  for (int64_t k = 0; k < kPad; ++k)
    EXPECT_EQ(dst[size_t(n + 1 + k)], kSentinel) << "wrote past the row at +" << k;
  std::vector<uint8_t> out(size_t(n) * 4);
  if (n) std::memcpy(out.data(), dst.data() + 1, out.size());
  return out;
}

// Same bits, except that any two NaNs are equal: IEEE 754 leaves the sign and payload of a NaN
// result unspecified, and compilers differ there (clang's scalar Q4_K/Q5_K code gives NaNs of the
// other sign than the SIMD kernels where a scale is infinite; GCC's the same sign).
bool same_float(uint32_t x, uint32_t y) {
  auto is_nan = [](uint32_t v) { return (v & 0x7f800000u) == 0x7f800000u && (v & 0x007fffffu); };
  return x == y || (is_nan(x) && is_nan(y));
}

// First differing float (same_float), or "" when there is none.
std::string first_difference(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b) {
  if (a.size() != b.size()) return "sizes differ";
  for (size_t i = 0; i + 4 <= a.size(); i += 4) {
    uint32_t x, y;
    std::memcpy(&x, &a[i], 4);
    std::memcpy(&y, &b[i], 4);
    if (!same_float(x, y)) {
      char buf[96];
      std::snprintf(buf, sizeof buf, "element %zu: scalar 0x%08x, simd 0x%08x", i / 4, x, y);
      return buf;
    }
  }
  return "";
}

void expect_identical(TensorType t, const std::vector<uint8_t>& row, int64_t n) {
  const std::vector<uint8_t> ref = dequantize_under(Isa::Scalar, t, row, n);
  for (Isa isa : simd_isas()) {
    SCOPED_TRACE(lockstep::isa_name(isa));
    const std::vector<uint8_t> got = dequantize_under(isa, t, row, n);
    const std::string diff = first_difference(ref, got);
    ASSERT_TRUE(diff.empty()) << info(t).name << " n=" << n << ": " << diff;
  }
}

class DequantizeSimd : public ::testing::TestWithParam<TensorType> {};

std::string type_param_name(const ::testing::TestParamInfo<TensorType>& p) {
  return info(p.param).name;
}

TEST_P(DequantizeSimd, EveryIsaHasAKernel) {
#if defined(__x86_64__)
  for (Isa isa : simd_isas())
    EXPECT_NE(lockstep::quant::simd_dequantizer(isa, GetParam()), nullptr)
        << lockstep::isa_name(isa);
#endif
  EXPECT_EQ(lockstep::quant::simd_dequantizer(Isa::Scalar, GetParam()), nullptr);
}

TEST_P(DequantizeSimd, BitIdenticalToScalarOnRandomBlocks) {
  if (simd_isas().empty()) GTEST_SKIP() << "no SIMD ISA on this CPU";
  const TensorType t = GetParam();
  const uint64_t seed = lockstep::quant_test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  IsaGuard guard;
  const int64_t be = info(t).block_elems;
  // Block counts; for F16/BF16 (one-element blocks) these are element counts, so every tail
  // length of the 8-, 16- and 32-wide loops is covered.
  std::vector<int64_t> counts = {0, 1, 2, 3, 4, 5, 7, 8, 16, 17, 64};
  if (be == 1)
    for (int64_t c = 9; c < 100; ++c) counts.push_back(c);
  counts.push_back(be == 1 ? 4096 + 13 : 1024 / be * 4 + 3);
  for (int rep = 0; rep < 4; ++rep)
    for (int64_t nb : counts) expect_identical(t, random_row(t, nb, rng, false), nb * be);
}

TEST_P(DequantizeSimd, BitIdenticalToScalarWithNonFiniteScales) {
  if (simd_isas().empty()) GTEST_SKIP() << "no SIMD ISA on this CPU";
  const TensorType t = GetParam();
  const uint64_t seed = lockstep::quant_test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  IsaGuard guard;
  const int64_t be = info(t).block_elems;
  const int64_t nb = be == 1 ? 4099 : 64;
  for (int rep = 0; rep < 4; ++rep) expect_identical(t, random_row(t, nb, rng, true), nb * be);
}

INSTANTIATE_TEST_SUITE_P(Quant, DequantizeSimd, ::testing::ValuesIn(kTypes), type_param_name);

// F16 and BF16: every one of the 65536 bit patterns (NaN payloads, signalling NaNs, subnormals,
// infinities) converts to the same float bits as the scalar code.
TEST(DequantizeSimdPlain, AllHalfBitPatterns) {
  if (simd_isas().empty()) GTEST_SKIP() << "no SIMD ISA on this CPU";
  IsaGuard guard;
  std::vector<uint8_t> row(65536 * 2);
  for (uint32_t v = 0; v < 65536; ++v) {
    const uint16_t h = uint16_t(v);
    std::memcpy(&row[2 * v], &h, 2);
  }
  for (TensorType t : {TensorType::F16, TensorType::BF16}) {
    SCOPED_TRACE(info(t).name);
    expect_identical(t, row, 65536);
  }
}

// A hand-made Q8_0 block: forced Isa::Scalar gives the obvious values, every SIMD ISA the same
// bytes (a direct check that force_isa really switches the dequantizer).
TEST(DequantizeSimdPlain, ForcedScalarIsTheScalarCode) {
  IsaGuard guard;
  lockstep::force_isa(Isa::Scalar);
  std::vector<uint8_t> block(size_t(info(TensorType::Q8_0).block_bytes), 0);
  const uint16_t d = 0x3c00;  // 1.0
  std::memcpy(block.data(), &d, 2);
  for (int j = 0; j < 32; ++j) block[2 + size_t(j)] = uint8_t(int8_t(j - 16));
  float y[32];
  lockstep::dequantize_row(TensorType::Q8_0, block.data(), y, 32);
  for (int j = 0; j < 32; ++j) EXPECT_EQ(y[j], float(j - 16));
  for (Isa isa : simd_isas()) {
    lockstep::force_isa(isa);
    float z[32];
    lockstep::dequantize_row(TensorType::Q8_0, block.data(), z, 32);
    EXPECT_EQ(std::memcmp(y, z, sizeof y), 0) << lockstep::isa_name(isa);
  }
}

}  // namespace
