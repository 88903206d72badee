// (d) Exhaustive checks of the binary16 / bfloat16 conversions against float64 references.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "quant/fp16.h"
#include "test_data.h"

namespace {

using lockstep::bf16_to_fp32;
using lockstep::fp16_to_fp32;
using lockstep::fp32_from_bits;
using lockstep::fp32_to_bf16;
using lockstep::fp32_to_bits;
using lockstep::fp32_to_fp16;

// Value of a binary16 bit pattern computed in double from the IEEE definition.
double half_value(uint32_t h) {
  const int sign = (h >> 15) & 1, exp = (h >> 10) & 31, mant = h & 1023;
  double v;
  if (exp == 0)
    v = std::ldexp(double(mant), -24);
  else if (exp == 31)
    v = mant ? NAN : INFINITY;
  else
    v = std::ldexp(1024.0 + mant, exp - 25);
  return sign ? -v : v;
}

// Value of a bfloat16 bit pattern in double.
double bf16_value(uint32_t h) {
  const int sign = (h >> 15) & 1, exp = (h >> 7) & 255, mant = h & 127;
  double v;
  if (exp == 0)
    v = std::ldexp(double(mant), -133);
  else if (exp == 255)
    v = mant ? NAN : INFINITY;
  else
    v = std::ldexp(128.0 + mant, exp - 134);
  return sign ? -v : v;
}

// Round-to-nearest-even reference: `values` holds the non-negative finite values of the format in
// increasing order, with one extra entry, the value the next pattern (inf) would have.
uint16_t round_ref(double v, const std::vector<double>& values, uint16_t inf_bits) {
  const uint16_t sign = std::signbit(v) ? 0x8000 : 0;
  const double a = std::fabs(v);
  auto it = std::upper_bound(values.begin(), values.end(), a);
  if (it == values.end()) return sign | inf_bits;
  const size_t hi = size_t(it - values.begin()), lo = hi - 1;  // values[0] = 0 <= a
  const double dl = a - values[lo], dh = values[hi] - a;
  size_t pick = dl < dh ? lo : dh < dl ? hi : (lo % 2 == 0 ? lo : hi);
  return sign | uint16_t(pick);  // index == bit pattern; index of "next" == inf_bits
}

std::vector<double> half_table() {
  std::vector<double> t;
  for (uint32_t h = 0; h < 0x7c00; ++h) t.push_back(half_value(h));
  t.push_back(65536.0);
  return t;
}
std::vector<double> bf16_table() {
  std::vector<double> t;
  for (uint32_t h = 0; h < 0x7f80; ++h) t.push_back(bf16_value(h));
  t.push_back(std::ldexp(1.0, 128));
  return t;
}

bool is_half_nan(uint16_t h) {
  return (h & 0x7c00) == 0x7c00 && (h & 0x3ff);
}
bool is_bf16_nan(uint16_t h) {
  return (h & 0x7f80) == 0x7f80 && (h & 0x7f);
}

TEST(Fp16, DecodeAllHalvesExactly) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = fp16_to_fp32(uint16_t(h));
    const double ref = half_value(h);
    if (std::isnan(ref)) {
      ASSERT_TRUE(std::isnan(f)) << h;
      // sign and payload kept
      ASSERT_EQ(fp32_to_bits(f), ((h & 0x8000u) << 16) | 0x7f800000u | ((h & 0x3ffu) << 13)) << h;
      continue;
    }
    ASSERT_EQ(double(f), ref) << "half 0x" << std::hex << h;
    ASSERT_EQ(std::signbit(f), bool(h & 0x8000)) << h;  // -0 stays -0
  }
}

TEST(Fp16, EncodeAllHalvesAndTheirMidpoints) {
  const std::vector<double> table = half_table();
  for (uint32_t h = 0; h < 65536; ++h) {
    const double v = half_value(h);
    if (std::isnan(v)) {
      ASSERT_TRUE(is_half_nan(fp32_to_fp16(fp16_to_fp32(uint16_t(h))))) << h;
      continue;
    }
    ASSERT_EQ(fp32_to_fp16(float(v)), h) << "round trip of half 0x" << std::hex << h;
    if ((h & 0x7fff) >= 0x7c00) continue;
    // Midpoint to the next half up in magnitude (exact in float) and its float neighbours.
    const double next = (h & 0x7fff) == 0x7bff ? 65536.0 : std::fabs(half_value(h + 1));
    const double mid = (std::fabs(v) + next) / 2 * (std::signbit(v) ? -1 : 1);
    const float fm = float(mid);
    ASSERT_EQ(double(fm), mid);
    for (float f : {fm, std::nextafter(fm, 0.f), std::nextafter(fm, fm * 2)}) {
      ASSERT_EQ(fp32_to_fp16(f), round_ref(f, table, 0x7c00))
          << "float " << f << " bits 0x" << std::hex << fp32_to_bits(f);
    }
  }
}

TEST(Fp16, EncodeRandomFloatsAgainstFloat64Reference) {
  const std::vector<double> table = half_table();
  const uint64_t seed = lockstep::quant_test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (int i = 0; i < 2000000; ++i) {
    const uint32_t bits = uint32_t(rng());
    const float f = fp32_from_bits(bits);
    const uint16_t got = fp32_to_fp16(f);
    if (std::isnan(f)) {
      ASSERT_TRUE(is_half_nan(got));
      ASSERT_EQ(got & 0x8000, (bits >> 16) & 0x8000);
      continue;
    }
    ASSERT_EQ(got, round_ref(f, table, 0x7c00)) << "bits 0x" << std::hex << bits;
  }
  // Infinities and the overflow threshold.
  EXPECT_EQ(fp32_to_fp16(INFINITY), 0x7c00);
  EXPECT_EQ(fp32_to_fp16(-INFINITY), 0xfc00);
  EXPECT_EQ(fp32_to_fp16(65519.996f), 0x7bff);
  EXPECT_EQ(fp32_to_fp16(65520.f), 0x7c00);
}

TEST(Bf16, DecodeAllExactly) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = bf16_to_fp32(uint16_t(h));
    const double ref = bf16_value(h);
    if (std::isnan(ref)) {
      ASSERT_TRUE(std::isnan(f)) << h;
      continue;
    }
    ASSERT_EQ(double(f), ref) << "bf16 0x" << std::hex << h;
    ASSERT_EQ(std::signbit(f), bool(h & 0x8000)) << h;
  }
}

TEST(Bf16, EncodeAllAndMidpointsAndRandomFloats) {
  const std::vector<double> table = bf16_table();
  for (uint32_t h = 0; h < 65536; ++h) {
    const double v = bf16_value(h);
    if (std::isnan(v)) {
      ASSERT_TRUE(is_bf16_nan(fp32_to_bf16(bf16_to_fp32(uint16_t(h))))) << h;
      continue;
    }
    ASSERT_EQ(fp32_to_bf16(float(v)), h) << h;
    if ((h & 0x7fff) >= 0x7f80) continue;
    const double next =
        (h & 0x7fff) == 0x7f7f ? std::ldexp(1.0, 128) : std::fabs(bf16_value(h + 1));
    const double mid = (std::fabs(v) + next) / 2 * (std::signbit(v) ? -1 : 1);
    if (std::fabs(mid) > FLT_MAX) continue;  // midpoint to inf is not a float
    const float fm = float(mid);
    ASSERT_EQ(double(fm), mid);
    for (float f : {fm, std::nextafter(fm, 0.f), std::nextafter(fm, fm * 2)}) {
      if (std::isfinite(f)) {
        ASSERT_EQ(fp32_to_bf16(f), round_ref(f, table, 0x7f80)) << f;
      }
    }
  }
  const uint64_t seed = lockstep::quant_test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (int i = 0; i < 2000000; ++i) {
    const uint32_t bits = uint32_t(rng());
    const float f = fp32_from_bits(bits);
    const uint16_t got = fp32_to_bf16(f);
    if (std::isnan(f)) {
      ASSERT_TRUE(is_bf16_nan(got));
      continue;
    }
    ASSERT_EQ(got, round_ref(f, table, 0x7f80)) << "bits 0x" << std::hex << bits;
  }
}

}  // namespace
