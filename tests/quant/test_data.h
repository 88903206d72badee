// Random test data for the quant tests. Every run draws a fresh seed (printed on failure via
// SCOPED_TRACE) so the kernels are exercised on new inputs each time.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

namespace lockstep::quant_test {

// A fresh seed per run; LOCKSTEP_TEST_SEED=N replays the run a failure's trace names.
inline uint64_t fresh_seed() {
  if (const char* s = std::getenv("LOCKSTEP_TEST_SEED")) return std::strtoull(s, nullptr, 10);
  std::random_device rd;
  return (uint64_t(rd()) << 32) ^ rd();
}

enum class Dist { Normal, Uniform, Outliers, BlockScales, Positive, Tiny, Sparse };
inline const char* dist_name(Dist d) {
  switch (d) {
    case Dist::Normal:
      return "normal";
    case Dist::Uniform:
      return "uniform";
    case Dist::Outliers:
      return "outliers";
    case Dist::BlockScales:
      return "block_scales";
    case Dist::Positive:
      return "positive";
    case Dist::Tiny:
      return "tiny";
    case Dist::Sparse:
      return "sparse";
  }
  return "?";
}
inline constexpr Dist kAllDists[] = {Dist::Normal,      Dist::Uniform,  Dist::Outliers,
                                     Dist::BlockScales, Dist::Positive, Dist::Tiny,
                                     Dist::Sparse};

// n values of distribution `d`. Magnitudes stay below 1e4 so F16 never overflows.
inline std::vector<float> make_data(Dist d, int64_t n, std::mt19937_64& rng) {
  std::normal_distribution<float> normal(0.f, 1.f);
  std::uniform_real_distribution<float> unif(0.f, 1.f);
  std::vector<float> x(static_cast<size_t>(n));
  float block_scale = 1.f;
  for (int64_t i = 0; i < n; ++i) {
    float v = 0;
    switch (d) {
      case Dist::Normal:
        v = normal(rng);
        break;
      case Dist::Uniform:
        v = 2 * unif(rng) - 1;
        break;
      case Dist::Outliers:  // 1% of the elements times +-U(5, 20), as in real weight tensors
        v = 0.05f * normal(rng);
        if (unif(rng) < 0.01f) v *= (unif(rng) < 0.5f ? -1 : 1) * (5 + 15 * unif(rng));
        break;
      case Dist::BlockScales:  // every 32 elements a new scale from 1e-3 to 1e2
        if (i % 32 == 0) block_scale = std::pow(10.f, -3 + 5 * unif(rng));
        v = block_scale * normal(rng);
        break;
      case Dist::Positive:
        v = 0.5f + unif(rng);
        break;
      case Dist::Tiny:
        v = 1e-6f * normal(rng);
        break;
      case Dist::Sparse:
        v = unif(rng) < 0.1f ? 3 * normal(rng) : 0.f;
        break;
    }
    x[size_t(i)] = v;
  }
  return x;
}

}  // namespace lockstep::quant_test
