// Fresh random inputs for the backend tests: every run draws a new seed, which each test prints
// through SCOPED_TRACE so a failure can be replayed.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

namespace lockstep::backend_test {

// A fresh seed per run; LOCKSTEP_TEST_SEED=N replays the run a failure's trace names.
inline uint64_t fresh_seed() {
  if (const char* s = std::getenv("LOCKSTEP_TEST_SEED")) return std::strtoull(s, nullptr, 10);
  std::random_device rd;
  return (uint64_t(rd()) << 32) ^ rd();
}

inline std::string seed_trace(uint64_t seed) {
  return "seed " + std::to_string(seed);
}

// n values uniform in [lo, hi).
inline std::vector<float> uniform(std::mt19937_64& rng, size_t n, float lo, float hi) {
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

// n values from N(0, sigma^2).
inline std::vector<float> normal(std::mt19937_64& rng, size_t n, float sigma) {
  std::normal_distribution<float> d(0.0f, sigma);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

}  // namespace lockstep::backend_test
