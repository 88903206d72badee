// compare_logits against float64 formulas evaluated independently in the test.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "parity/metrics.h"

namespace lockstep {
namespace {

TEST(LogitMetrics, MatchesFloat64FormulasOnRandomVectors) {
  std::mt19937 rng(12345);
  for (int trial = 0; trial < 20; ++trial) {
    const int n = 50 + trial * 37;
    std::normal_distribution<float> nd(0.f, 2.f + trial);
    std::vector<float> a(n), b(n);
    for (int i = 0; i < n; ++i) {
      a[i] = nd(rng);
      b[i] = a[i] + 0.3f * nd(rng);
    }
    // Independent float64 computation: softmax via long double for the reference sums.
    long double dot = 0, na = 0, nb = 0;
    for (int i = 0; i < n; ++i) {
      dot += (long double)a[i] * b[i];
      na += (long double)a[i] * a[i];
      nb += (long double)b[i] * b[i];
    }
    long double za = 0, zb = 0;
    for (int i = 0; i < n; ++i) {
      za += std::exp((long double)a[i]);
      zb += std::exp((long double)b[i]);
    }
    long double kl = 0, max_abs = 0;
    for (int i = 0; i < n; ++i) {
      long double pa = std::exp((long double)a[i]) / za, pb = std::exp((long double)b[i]) / zb;
      kl += pa * std::log(pa / pb);
      max_abs = std::max(max_abs, std::fabs((long double)a[i] - b[i]));
    }
    auto m = compare_logits(a, b);
    ASSERT_TRUE(m.finite);
    EXPECT_NEAR(m.cosine, double(dot / std::sqrt(na * nb)), 1e-12);
    EXPECT_NEAR(m.kl, double(kl), 1e-9 * std::max(1.0, double(kl)));
    EXPECT_DOUBLE_EQ(m.max_abs, double(max_abs));
    int top = 0;
    for (int i = 1; i < n; ++i)
      if (a[i] > a[top]) top = i;
    EXPECT_EQ(m.ref_top1, top);
    float second = -INFINITY;
    for (int i = 0; i < n; ++i)
      if (i != top) second = std::max(second, a[i]);
    EXPECT_DOUBLE_EQ(m.ref_margin, double(a[top]) - double(second));
  }
}

TEST(LogitMetrics, IdenticalVectorsAreExact) {
  std::vector<float> a = {0.5f, -1.f, 3.f, 2.f};
  auto m = compare_logits(a, a);
  EXPECT_NEAR(m.cosine, 1.0, 1e-15);
  EXPECT_EQ(m.kl, 0.0);
  EXPECT_EQ(m.max_abs, 0.0);
  EXPECT_TRUE(m.top1_agree());
}

TEST(LogitMetrics, NonFiniteNeverCompares) {
  std::vector<float> a = {0.5f, -1.f, 3.f, 2.f};
  for (float bad : {NAN, INFINITY, -INFINITY}) {
    auto b = a;
    b[2] = bad;
    auto m = compare_logits(a, b);
    EXPECT_FALSE(m.finite);
    EXPECT_FALSE(m.cosine >= 0.99);  // NaN fails every threshold comparison
    auto m2 = compare_logits(b, a);
    EXPECT_FALSE(m2.finite);
  }
}

TEST(LogitMetrics, ArgmaxTiesGoToTheLowestId) {
  std::vector<float> a = {1.f, 3.f, 3.f, 0.f};
  EXPECT_EQ(argmax(a), 1);
}

}  // namespace
}  // namespace lockstep
