// The fast path's attention over an F16 cache, exp and SwiGLU, on every ISA the CPU has, against
// float64 computations of the same formulas on fresh random inputs.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
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

}  // namespace
}  // namespace lockstep::backend_test
