// The fast path's attention over an F16 cache, exp and SwiGLU, on every ISA the CPU has, against
// float64 computations of the same formulas on fresh random inputs.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <numbers>
#include <random>
#include <vector>

#include "backend/cpu/ops_fast.h"
#include "backend/error_stats.h"
#include "backend/random_data.h"
#include "quant/fp16.h"
#include "quant/vec_dot.h"

namespace lockstep::backend_test {
namespace {

struct IsaGuard {
  ~IsaGuard() { force_isa(best_isa()); }
};

std::vector<Isa> supported_isas() {
  std::vector<Isa> out;
  for (Isa isa : {Isa::Scalar, Isa::Avx2, Isa::Avx512})
    if (isa_supported(isa)) out.push_back(isa);
  return out;
}

TEST(OpsFast, AttentionOverHalvesMatchesFloat64) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  IsaGuard restore;
  // Head sizes of the vector paths (multiples of 16 and 8), a tail-only one, and lengths that
  // leave remainders in the 16- and 8-wide softmax loops.
  for (Isa isa : supported_isas()) {
    force_isa(isa);
    for (int64_t hd : {8, 16, 24, 64, 128, 6}) {
      for (int64_t n_kv : {1, 7, 33, 200}) {
        SCOPED_TRACE(std::string(isa_name(isa)) + " head_dim " + std::to_string(hd) + " n_kv " +
                     std::to_string(n_kv));
        const int64_t stride = 3 * hd;  // other heads interleaved, as in the cache
        const auto q = normal(rng, size_t(hd), 1.0f);
        const auto kf = normal(rng, size_t(n_kv * stride), 1.0f);
        const auto vf = normal(rng, size_t(n_kv * stride), 1.0f);
        std::vector<uint16_t> k(kf.size()), v(vf.size());
        for (size_t i = 0; i < kf.size(); ++i) {
          k[i] = fp32_to_fp16(kf[i]);
          v[i] = fp32_to_fp16(vf[i]);
        }
        std::vector<float> out(size_t(hd), std::nanf("")), scores(static_cast<size_t>(n_kv));
        cpu_fast::attention_head_f16(out.data(), q.data(), k.data(), v.data(), n_kv, hd, stride,
                                     scores.data());

        // float64 on the same (half) keys and values.
        std::vector<double> s(static_cast<size_t>(n_kv));
        double mx = -INFINITY;
        for (int64_t j = 0; j < n_kv; ++j) {
          double d = 0;
          for (int64_t i = 0; i < hd; ++i) d += double(q[i]) * fp16_to_fp32(k[j * stride + i]);
          s[j] = d / std::sqrt(double(hd));
          mx = std::max(mx, s[j]);
        }
        double sum = 0;
        for (auto& x : s) sum += (x = std::exp(x - mx));
        WorstError err;
        for (int64_t i = 0; i < hd; ++i) {
          double want = 0, mag = 0;
          for (int64_t j = 0; j < n_kv; ++j) {
            want += s[j] / sum * fp16_to_fp32(v[j * stride + i]);
            mag += s[j] / sum * std::fabs(fp16_to_fp32(v[j * stride + i]));
          }
          // Float rounding of the score dots (|s| error ~ hd u |q||k|) moves weights by a relative
          // ~1e-6; the weighted sum adds n_kv roundings of magnitude `mag`.
          err.add(out[i], want, 64 * kU32 * (double(hd) + double(n_kv)) * (mag + 1e-3));
        }
        EXPECT_LE(err.excess(), 1.0) << "max |error| " << err.abs();
      }
    }
  }
}

// Gemma's scoring (a scale of its own and a soft-cap) on every ISA: queries of scale 6 push raw
// scores past the cap of 5.
TEST(OpsFast, AttentionWithScaleAndSoftcapMatchesFloat64) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  IsaGuard restore;
  const cpu::AttentionScoring sc{0.2f, 5.0f};
  for (Isa isa : supported_isas()) {
    force_isa(isa);
    for (int64_t hd : {16, 64, 256, 6}) {
      for (int64_t n_kv : {1, 33}) {
        SCOPED_TRACE(std::string(isa_name(isa)) + " head_dim " + std::to_string(hd) + " n_kv " +
                     std::to_string(n_kv));
        const int64_t stride = 2 * hd;
        const auto q = normal(rng, size_t(hd), 6.0f);
        const auto kf = normal(rng, size_t(n_kv * stride), 1.0f);
        const auto vf = normal(rng, size_t(n_kv * stride), 1.0f);
        std::vector<uint16_t> k(kf.size()), v(vf.size());
        for (size_t i = 0; i < kf.size(); ++i) {
          k[i] = fp32_to_fp16(kf[i]);
          v[i] = fp32_to_fp16(vf[i]);
        }
        std::vector<float> out(size_t(hd), std::nanf("")), scores(static_cast<size_t>(n_kv));
        cpu_fast::attention_head_f16(out.data(), q.data(), k.data(), v.data(), n_kv, hd, stride,
                                     scores.data(), sc);
        std::vector<double> s(static_cast<size_t>(n_kv));
        double mx = -INFINITY, max_qk = 0;
        for (int64_t j = 0; j < n_kv; ++j) {
          double d = 0, mag = 0;
          for (int64_t i = 0; i < hd; ++i) {
            d += double(q[i]) * fp16_to_fp32(k[j * stride + i]);
            mag += std::fabs(double(q[i]) * fp16_to_fp32(k[j * stride + i]));
          }
          s[j] = sc.softcap * std::tanh(d * sc.scale / sc.softcap);
          mx = std::max(mx, s[j]);
          max_qk = std::max(max_qk, mag);
        }
        double sum = 0;
        for (auto& x : s) sum += (x = std::exp(x - mx));
        // Score error: hd roundings of the dot (times the scale, the cap's slope is <= 1) and a
        // few of the cap itself; it moves the output by 2x its size times max|v| (~4); the
        // softmax and the weighted sum add (n_kv + 8) roundings.
        const double score_err = double(hd) * kU32 * max_qk * sc.scale + 4 * kU32 * sc.softcap;
        const double tol = (2 * score_err + double(n_kv + 8) * 4 * kU32) * 5.0;
        WorstError err;
        for (int64_t i = 0; i < hd; ++i) {
          double want = 0;
          for (int64_t j = 0; j < n_kv; ++j) want += s[j] / sum * fp16_to_fp32(v[j * stride + i]);
          err.add(out[i], want, tol);
        }
        EXPECT_LE(err.excess(), 1.0) << "max |error| " << err.abs() << " tol " << tol;
      }
    }
  }
}

TEST(OpsFast, ExpMatchesFloat64AndKeepsNaN) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  IsaGuard restore;
  for (Isa isa : supported_isas()) {
    force_isa(isa);
    SCOPED_TRACE(isa_name(isa));
    auto x = uniform(rng, 1001, -87.0f, 88.0f);  // 1001: leaves 16- and 8-wide tails
    const auto in = x;
    cpu_fast::exp_inplace(x.data(), int64_t(x.size()));
    WorstError err;
    for (size_t i = 0; i < x.size(); ++i) {
      const double want = std::exp(double(in[i]));
      err.add(x[i], want, 4 * kU32 * want);  // a few ulp
    }
    EXPECT_LE(err.excess(), 1.0);

    // Far below the range: tiny but not negative; far above: huge or inf; NaN stays NaN, in
    // vector lanes and in the tail alike.
    std::vector<float> edge(19, std::nanf(""));
    edge[0] = -1000.0f;
    edge[1] = 1000.0f;
    edge[2] = 0.0f;
    edge[17] = -1000.0f;
    cpu_fast::exp_inplace(edge.data(), int64_t(edge.size()));
    EXPECT_GE(edge[0], 0.0f);
    EXPECT_LT(edge[0], 1e-37f);
    EXPECT_GT(edge[1], 1e38f);
    EXPECT_EQ(edge[2], 1.0f);
    EXPECT_LT(edge[17], 1e-37f);
    for (int i : {3, 10, 16, 18}) EXPECT_TRUE(std::isnan(edge[size_t(i)])) << i;
  }
}

TEST(OpsFast, SwigluMatchesFloat64) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  IsaGuard restore;
  for (Isa isa : supported_isas()) {
    force_isa(isa);
    SCOPED_TRACE(isa_name(isa));
    auto gate = normal(rng, 999, 4.0f);
    const auto up = normal(rng, 999, 1.0f);
    const auto g0 = gate;
    cpu_fast::swiglu(gate.data(), up.data(), int64_t(gate.size()));
    WorstError err;
    for (size_t i = 0; i < gate.size(); ++i) {
      const double g = g0[i];
      const double want = g / (1.0 + std::exp(-g)) * double(up[i]);
      err.add(gate[i], want, 8 * kU32 * std::fabs(want) + 1e-30);
    }
    EXPECT_LE(err.excess(), 1.0) << "max |error| " << err.abs();
  }
}

// GeGLU (GELU's tanh approximation as 1 / (1 + exp(-2u))) on every ISA against float64 tanh.
TEST(OpsFast, GegluMatchesFloat64) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  IsaGuard restore;
  const double c = std::sqrt(2.0 / std::numbers::pi);
  for (Isa isa : supported_isas()) {
    force_isa(isa);
    SCOPED_TRACE(isa_name(isa));
    auto gate = normal(rng, 999, 3.0f);
    gate[5] = -30.0f;  // exp's argument past its clamp: the result is ~0, not NaN
    gate[6] = 30.0f;
    const auto up = normal(rng, 999, 1.0f);
    const auto g0 = gate;
    cpu_fast::geglu(gate.data(), up.data(), int64_t(gate.size()));
    WorstError err;
    for (size_t i = 0; i < gate.size(); ++i) {
      const double x = g0[i];
      const double arg = 2 * c * (x + 0.044715 * x * x * x);
      // (1 + tanh(v)) / 2 in double: for v < 0 as e^(2v) / (1 + e^(2v)), which does not cancel
      // (1 + tanh(v) loses every digit once tanh(v) rounds to -1).
      const double v = c * (x + 0.044715 * x * x * x);
      const double half_1p_tanh = v >= 0 ? 0.5 * (1.0 + std::tanh(v))
                                          : std::exp(2 * v) / (1.0 + std::exp(2 * v));
      const double want = x * half_1p_tanh * up[i];
      // exp's relative error grows with its argument's rounding (|arg| u); then a few more.
      err.add(gate[i], want, (8 + 4 * std::min(std::fabs(arg), 90.0)) * kU32 * std::fabs(want) +
                                 1e-30);
    }
    EXPECT_LE(err.excess(), 1.0) << "max |error| " << err.abs();
    std::vector<float> nan_gate(20, std::nanf("")), ones(20, 1.0f);
    cpu_fast::geglu(nan_gate.data(), ones.data(), 20);
    for (float x : nan_gate) EXPECT_TRUE(std::isnan(x));
  }
}

}  // namespace
}  // namespace lockstep::backend_test
