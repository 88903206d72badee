// (c) quantize_row -> dequantize_row on fresh random data, for every type lockstep can write.
// Each element's error is checked against a bound computed from the input block alone (not from
// the code under test), and the RMS error over the row against an RMS bound.
//
// Notation per block: a = max|x|, lo/hi = min/max x, u(v) = max(|v| 2^-11, 2^-25) the largest
// rounding error of storing v as binary16 (relative half-ulp, or half the subnormal spacing).
//
//   type  max error bound per element                 basis
//   F32   0                                           copy
//   F16   max(|x| 2^-11, 2^-25)                       round to nearest half
//   BF16  |x| 2^-8                                    round to nearest, 8-bit significand
//   Q8_0  d/2 + 127 u(d), d = a/127                   rounding to the grid + fp16 scale
//   Q4_0  d + 8 u(d), d = a/8                         the grid is -8..7: the value opposite the
//   Q5_0  d + 16 u(d), d = a/16                         largest one (x/d = +8 or +16) clamps by d
//   Q4_1  d/2 + 15 u(d) + u(lo), d = (hi-lo)/15       rounding + fp16 scale and fp16 min
//   Q5_1  d/2 + 31 u(d) + u(lo), d = (hi-lo)/31
//   Q4_K  1.5 S, S = max over the 8 sub-blocks of     half a step of rounding; the 6-bit codes
//   Q5_K  1.5 S  (max(hi_j,0) - min(lo_j,0)) / nmax     of scales and mins (each off by up to
//                (nmax 15 / 31)                         nmax/126 S resp. max_min/126); the scale
//   Q6_K  1.5 S, S = max over 16-sub-blocks a_j / 32    search clamping extreme elements. Measured
//                                                       worst: Q4_K 0.85 S, Q5_K 1.0 S, Q6_K 0.62 S
//                                                       (uniform / all-positive data)
//   (K types also add the fp16 rounding of a subnormal d/dmin times the largest codes.)
//
// RMS bounds (plus the RMS of the fp16-scale terms above, which matter for tiny data only):
// rounding errors are close to uniform over one step, RMS = step/sqrt(12) = 0.289
// step. Checked: RMS(err) <= 0.35 RMS(step) for Q8_0/Q4_1/Q5_1 (step d), 0.40 for Q4_0/Q5_0
// (clamped element), and 0.45 RMS(S) for the K types (S is the largest step of the super-block;
// sub-blocks with smaller range have finer steps). Float types: RMS <= the max bound's RMS.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "quant/quantize.h"
#include "test_data.h"

namespace {

using lockstep::TensorType;
using namespace lockstep::quant_test;

double u16(double v) {
  return std::max(std::fabs(v) * 0x1p-11, 0x1p-25);
}

struct Bounds {
  std::vector<double> max_err;  // per element
  std::vector<double> step;     // per element, for the RMS bound
  std::vector<double> extra;    // per element: the part of max_err due to fp16 scales
  double rms_factor;
};

Bounds bounds_for(TensorType t, const std::vector<float>& x) {
  const size_t n = x.size();
  Bounds b{std::vector<double>(n), std::vector<double>(n), std::vector<double>(n), 0};
  auto block_stats = [&](size_t i0, size_t len, double* a, double* lo, double* hi) {
    *a = 0, *lo = INFINITY, *hi = -INFINITY;
    for (size_t i = i0; i < i0 + len; ++i) {
      *a = std::max(*a, std::fabs(double(x[i])));
      *lo = std::min(*lo, double(x[i]));
      *hi = std::max(*hi, double(x[i]));
    }
  };
  switch (t) {
    case TensorType::F32:
      b.rms_factor = 0;
      break;
    case TensorType::F16:
    case TensorType::BF16:
      for (size_t i = 0; i < n; ++i) {
        b.max_err[i] = t == TensorType::F16 ? std::max(std::fabs(x[i]) * 0x1p-11, 0x1p-25)
                                            : std::fabs(x[i]) * 0x1p-8;
        b.step[i] = b.max_err[i];
      }
      b.rms_factor = 1;
      break;
    case TensorType::Q8_0:
    case TensorType::Q4_0:
    case TensorType::Q5_0:
    case TensorType::Q4_1:
    case TensorType::Q5_1:
      for (size_t i0 = 0; i0 < n; i0 += 32) {
        double a, lo, hi, e = 0, d = 0, f = 0;
        block_stats(i0, 32, &a, &lo, &hi);
        if (t == TensorType::Q8_0) d = a / 127, f = 127 * u16(d), e = d / 2, b.rms_factor = 0.35;
        if (t == TensorType::Q4_0) d = a / 8, f = 8 * u16(d), e = d, b.rms_factor = 0.40;
        if (t == TensorType::Q5_0) d = a / 16, f = 16 * u16(d), e = d, b.rms_factor = 0.40;
        if (t == TensorType::Q4_1)
          d = (hi - lo) / 15, f = 15 * u16(d) + u16(lo), e = d / 2, b.rms_factor = 0.35;
        if (t == TensorType::Q5_1)
          d = (hi - lo) / 31, f = 31 * u16(d) + u16(lo), e = d / 2, b.rms_factor = 0.35;
        for (size_t i = i0; i < i0 + 32; ++i)
          b.max_err[i] = (e + f) * (1 + 1e-5), b.step[i] = d, b.extra[i] = f;
      }
      break;
    case TensorType::Q4_K:
    case TensorType::Q5_K:
    case TensorType::Q6_K: {
      const size_t sub = t == TensorType::Q6_K ? 16 : 32;
      const double nmax = t == TensorType::Q4_K ? 15 : t == TensorType::Q5_K ? 31 : 32;
      for (size_t i0 = 0; i0 < n; i0 += 256) {
        double S = 0;
        for (size_t j = i0; j < i0 + 256; j += sub) {
          double a, lo, hi;
          block_stats(j, sub, &a, &lo, &hi);
          S = std::max(
              S, t == TensorType::Q6_K ? a / nmax : (std::max(hi, 0.0) - std::min(lo, 0.0)) / nmax);
        }
        // fp16 d and dmin may be subnormal for tiny data: their rounding (<= 2^-25) times the
        // largest scale code (63, or 127 for Q6_K) and level (nmax).
        const double f = (t == TensorType::Q6_K ? 127 * 32 : 63 * (nmax + 1)) * 0x1p-25;
        for (size_t i = i0; i < i0 + 256; ++i)
          b.max_err[i] = 1.5 * S + f, b.step[i] = S, b.extra[i] = f;
      }
      b.rms_factor = 0.45;
      break;
    }
    default:
      ADD_FAILURE() << "no bound for this type";
  }
  return b;
}

const TensorType kTypes[] = {TensorType::F32,  TensorType::F16,  TensorType::BF16, TensorType::Q8_0,
                             TensorType::Q4_0, TensorType::Q4_1, TensorType::Q5_0, TensorType::Q5_1,
                             TensorType::Q4_K, TensorType::Q5_K, TensorType::Q6_K};

class RoundTrip : public ::testing::TestWithParam<TensorType> {};

TEST_P(RoundTrip, ErrorWithinBoundOnRandomData) {
  const TensorType t = GetParam();
  ASSERT_TRUE(lockstep::tensor_type_info(t).can_quantize);
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const int64_t n = 256 * 64;
  double worst_ratio = 0;
  for (Dist dist : kAllDists) {
    SCOPED_TRACE(dist_name(dist));
    const std::vector<float> x = make_data(dist, n, rng);
    std::vector<uint8_t> q(lockstep::row_bytes(t, n).value());
    std::vector<float> y(size_t(n), NAN);
    lockstep::quantize_row(t, x.data(), q.data(), n);
    lockstep::dequantize_row(t, q.data(), y.data(), n);
    const Bounds b = bounds_for(t, x);
    double se = 0, s_step = 0, s_extra = 0;
    for (size_t i = 0; i < x.size(); ++i) {
      ASSERT_TRUE(std::isfinite(y[i])) << i;
      const double err = std::fabs(double(y[i]) - double(x[i]));
      ASSERT_LE(err, b.max_err[i]) << "element " << i << " x " << x[i] << " got " << y[i];
      if (b.max_err[i] > 0) worst_ratio = std::max(worst_ratio, err / b.max_err[i]);
      se += err * err;
      s_step += b.step[i] * b.step[i];
      s_extra += b.extra[i] * b.extra[i];
    }
    EXPECT_LE(std::sqrt(se / n), b.rms_factor * std::sqrt(s_step / n) + std::sqrt(s_extra / n));
  }
  RecordProperty("worst_error_over_bound", std::to_string(worst_ratio));
  std::printf("%s worst error / bound = %.3f\n", lockstep::tensor_type_info(t).name, worst_ratio);
}

std::string type_name(const ::testing::TestParamInfo<TensorType>& i) {
  return lockstep::tensor_type_info(i.param).name;
}
INSTANTIATE_TEST_SUITE_P(Quant, RoundTrip, ::testing::ValuesIn(kTypes), type_name);

// A zero row and a constant row survive exactly where the format can represent them.
TEST(RoundTripEdges, ZerosStayZeroForEveryType) {
  for (TensorType t : kTypes) {
    std::vector<float> x(512, 0.f), y(512, NAN);
    std::vector<uint8_t> q(lockstep::row_bytes(t, 512).value(), 0xA5);
    lockstep::quantize_row(t, x.data(), q.data(), 512);
    lockstep::dequantize_row(t, q.data(), y.data(), 512);
    for (float v : y) ASSERT_EQ(v, 0.f) << lockstep::tensor_type_info(t).name;
  }
}

}  // namespace
