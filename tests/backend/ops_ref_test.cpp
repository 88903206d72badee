// The reference math stages against float64 recomputations on fresh random inputs. Tolerances are
// first-order rounding-error bounds derived from each stage's arithmetic (u = 2^-24), not
// measured numbers, so a test fails on a real mistake and never on a lucky draw.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <numbers>
#include <random>
#include <vector>

#include "backend/cpu/ops_ref.h"
#include "backend/error_stats.h"
#include "backend/random_data.h"
#include "model/hparams.h"

namespace lockstep::backend_test {
namespace {

using cpu_ref::AttentionShape;
using cpu_ref::RopeParams;

TEST(OpsRef, DotMatchesFloat64WithinLaneBound) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  for (int64_t n : {1, 7, 15, 16, 17, 31, 64, 100, 172, 1000, 4096, 11008}) {
    SCOPED_TRACE("n " + std::to_string(n));
    auto a = normal(rng, size_t(n), 1.0f);
    auto b = uniform(rng, size_t(n), -2.0f, 2.0f);
    double want = 0, abs_sum = 0;
    for (int64_t i = 0; i < n; ++i) {
      want += double(a[i]) * double(b[i]);
      abs_sum += std::fabs(double(a[i]) * double(b[i]));
    }
    // Each lane adds ceil(n/16) rounded products, then a 4-level tree: <= n/16 + 6 roundings.
    const double tol = (double((n + 15) / 16) + 6) * kU32 * abs_sum;
    WorstError err;
    err.add(cpu_ref::dot(a.data(), b.data(), n), want, tol);
    EXPECT_LE(err.excess(), 1.0) << "abs error " << err.abs() << " tol " << tol;
  }
}

TEST(OpsRef, DotPropagatesNaN) {
  std::vector<float> a(40, 1.0f), b(40, 2.0f);
  a[33] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_TRUE(std::isnan(cpu_ref::dot(a.data(), b.data(), 40)));
}

TEST(OpsRef, RmsnormMatchesFloat64) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  for (int64_t n : {8, 64, 288, 4096}) {
    for (float scale : {1e-3f, 1.0f, 300.0f}) {
      auto x = normal(rng, size_t(n), scale);
      auto w = uniform(rng, size_t(n), -2.0f, 2.0f);
      const float eps = 1e-6f;
      std::vector<float> out(static_cast<size_t>(n));
      cpu_ref::rmsnorm(out.data(), x.data(), w.data(), n, eps);
      double ms = 0;
      for (float v : x) ms += double(v) * v;
      const double inv_rms = 1.0 / std::sqrt(ms / double(n) + eps);
      WorstError err;
      for (int64_t i = 0; i < n; ++i) {
        const double want = double(x[i]) * inv_rms * double(w[i]);
        err.add(out[i], want, 4 * kU32 * std::fabs(want) + 1e-30);  // three float roundings
      }
      EXPECT_LE(err.excess(), 1.0) << "n " << n << " scale " << scale;
    }
  }
}

TEST(OpsRef, RmsnormInPlaceEqualsOutOfPlace) {
  std::mt19937_64 rng(fresh_seed());
  auto x = normal(rng, 64, 1.0f);
  auto w = uniform(rng, 64, 0.5f, 1.5f);
  std::vector<float> out(64), inplace = x;
  cpu_ref::rmsnorm(out.data(), x.data(), w.data(), 64, 1e-5f);
  cpu_ref::rmsnorm(inplace.data(), inplace.data(), w.data(), 64, 1e-5f);
  EXPECT_EQ(out, inplace);
}

// Float64 RoPE written independently: the frequency as 1 / base^(2i/d), pairs picked per type.
void rope_f64(std::vector<double>& x, int64_t n_heads, int64_t pos, const RopeParams& p) {
  for (int64_t h = 0; h < n_heads; ++h) {
    double* head = x.data() + h * p.head_dim;
    for (int64_t i = 0; i < p.rope_dim / 2; ++i) {
      double angle =
          double(pos) * p.freq_scale / std::pow(p.freq_base, double(2 * i) / double(p.rope_dim));
      if (p.freq_factors) angle /= p.freq_factors[i];
      const int64_t a = p.type == RopeType::Normal ? 2 * i : i;
      const int64_t b = p.type == RopeType::Normal ? 2 * i + 1 : i + p.rope_dim / 2;
      const double xa = head[a], xb = head[b];
      head[a] = xa * std::cos(angle) - xb * std::sin(angle);
      head[b] = xa * std::sin(angle) + xb * std::cos(angle);
    }
  }
}

struct RopeCase {
  RopeType type;
  int64_t head_dim, rope_dim;
  double base, scale;
};

TEST(OpsRef, RopeBothTypesMatchFloat64) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  const RopeCase cases[] = {
      {RopeType::Normal, 64, 64, 10000.0, 1.0},  {RopeType::Neox, 64, 64, 10000.0, 1.0},
      {RopeType::Normal, 128, 128, 1e6, 1.0},    {RopeType::Neox, 128, 128, 1e6, 1.0},
      {RopeType::Normal, 64, 32, 10000.0, 0.25}, {RopeType::Neox, 64, 32, 10000.0, 0.25},
      {RopeType::Normal, 8, 8, 10000.0, 1.0},    {RopeType::Neox, 80, 40, 500000.0, 0.5},
  };
  const int64_t n_heads = 3;
  for (const RopeCase& c : cases) {
    RopeParams p;
    p.type = c.type;
    p.head_dim = c.head_dim;
    p.rope_dim = c.rope_dim;
    p.freq_base = c.base;
    p.freq_scale = c.scale;
    for (int64_t pos : {0, 1, 7, 68, 511, 4095, 32767}) {
      SCOPED_TRACE(std::string(c.type == RopeType::Normal ? "normal" : "neox") + " head_dim " +
                   std::to_string(c.head_dim) + " rope_dim " + std::to_string(c.rope_dim) +
                   " pos " + std::to_string(pos));
      auto x = normal(rng, size_t(n_heads * c.head_dim), 1.0f);
      std::vector<double> want(x.begin(), x.end());
      rope_f64(want, n_heads, pos, p);
      std::vector<float> got = x;
      cpu_ref::rope(got.data(), n_heads, pos, p);
      WorstError err;
      for (int64_t h = 0; h < n_heads; ++h) {
        for (int64_t i = 0; i < c.head_dim; ++i) {
          const size_t k = size_t(h * c.head_dim + i);
          if (i >= c.rope_dim) {
            EXPECT_EQ(got[k], x[k]) << "dimension " << i << " beyond rope_dim must pass through";
            continue;
          }
          // The partner of element i in its pair bounds the error: rounded cos/sin, two
          // products and a sum, about 4u * (|a| + |b|).
          const int64_t half = c.rope_dim / 2;
          const int64_t partner =
              c.type == RopeType::Normal ? (i ^ 1) : (i < half ? i + half : i - half);
          const double mag = std::fabs(x[k]) + std::fabs(x[size_t(h * c.head_dim + partner)]);
          err.add(got[k], want[k], 4 * kU32 * mag + 1e-30);
        }
      }
      EXPECT_LE(err.excess(), 1.0) << "abs error " << err.abs();
    }
  }
}

// Llama 3.1+ frequency factors divide each pair's frequency; factors from 1 to 40 (the range of
// ../shared's exaggerated tiny model) at positions up to 32k.
TEST(OpsRef, RopeWithFrequencyFactorsMatchesFloat64) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  for (RopeType type : {RopeType::Normal, RopeType::Neox}) {
    RopeParams p;
    p.type = type;
    p.head_dim = p.rope_dim = 64;
    p.freq_base = 500000.0;
    const auto factors = uniform(rng, 32, 1.0f, 40.0f);
    p.freq_factors = factors.data();
    for (int64_t pos : {1, 9, 300, 32767}) {
      SCOPED_TRACE("pos " + std::to_string(pos));
      auto x = normal(rng, size_t(2 * p.head_dim), 1.0f);
      std::vector<double> want(x.begin(), x.end());
      rope_f64(want, 2, pos, p);
      std::vector<float> got = x;
      cpu_ref::rope(got.data(), 2, pos, p);
      WorstError err;
      for (size_t k = 0; k < got.size(); ++k) err.add(got[k], want[k], 8 * kU32 * 4.0 + 1e-30);
      EXPECT_LE(err.excess(), 1.0) << "abs error " << err.abs();
      // Without the factors the result differs (the test would notice them ignored).
      std::vector<float> plain = x;
      RopeParams q = p;
      q.freq_factors = nullptr;
      cpu_ref::rope(plain.data(), 2, pos, q);
      EXPECT_NE(plain, got);
    }
  }
}

// YaRN written independently, the way Hugging Face's _compute_yarn_parameters states it: each
// pair's inverse frequency blends the interpolated (1/factor) and the original one by an
// "extrapolation factor" that is 1 - ramp(i) over the band [low, high] of pair indices between
// the pairs turning beta_fast and beta_slow times over the original context; cos and sin carry
// attn_factor * (0.1 ln(factor) + 1).
struct YarnF64 {
  double base, factor, orig_ctx, beta_fast = 32, beta_slow = 1, attn_factor = 1;
  int64_t dim;
  double correction_dim(double rotations) const {
    return double(dim) * std::log(orig_ctx / (rotations * 2 * std::numbers::pi)) /
           (2 * std::log(base));
  }
  double inv_freq(int64_t i) const {
    const double low = std::max(std::floor(correction_dim(beta_fast)), 0.0);
    double high = std::min(std::ceil(correction_dim(beta_slow)), double(dim - 1));
    if (high == low) high += 0.001;
    const double ramp = std::clamp((double(i) - low) / (high - low), 0.0, 1.0);
    const double extrapolation = 1 - ramp;
    const double original = 1 / std::pow(base, double(2 * i) / double(dim));
    return original / factor * (1 - extrapolation) + original * extrapolation;
  }
  double magnitude() const { return attn_factor * (0.1 * std::log(factor) + 1); }
};

TEST(OpsRef, RopeYarnMatchesFloat64) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(0, 1);
  for (int trial = 0; trial < 24; ++trial) {
    HParams hp;
    hp.rope_type = trial % 2 ? RopeType::Neox : RopeType::Normal;
    hp.head_dim = trial % 3 == 0 ? 128 : 64;
    hp.rope_dim = trial % 4 == 3 ? hp.head_dim / 2 : hp.head_dim;
    hp.rope_freq_base = float(std::array<double, 3>{10000, 1e6, 500000}[trial % 3]);
    const double factor = 1.5 + 14 * u(rng);
    hp.rope_freq_scale = float(1 / factor);
    hp.rope_yarn = true;
    hp.rope_yarn_orig_ctx = std::array<int64_t, 3>{4096, 32768, 8192}[rng() % 3];
    hp.rope_attn_factor = trial % 5 == 0 ? float(0.5 + u(rng)) : 1.0f;
    if (trial % 7 == 1) {
      hp.rope_yarn_beta_fast = float(8 + 40 * u(rng));
      hp.rope_yarn_beta_slow = float(0.5 + u(rng));
    }
    const RopeParams p = cpu_ref::rope_params(hp);
    const YarnF64 y{double(hp.rope_freq_base),
                    1.0 / double(hp.rope_freq_scale),
                    double(hp.rope_yarn_orig_ctx),
                    double(hp.rope_yarn_beta_fast),
                    double(hp.rope_yarn_beta_slow),
                    double(hp.rope_attn_factor),
                    hp.rope_dim};
    const int64_t pos = int64_t(u(rng) * 131072);
    SCOPED_TRACE("trial " + std::to_string(trial) + " pos " + std::to_string(pos));
    const int64_t n_heads = 2;
    const auto x = normal(rng, size_t(n_heads * hp.head_dim), 1.0f);
    std::vector<float> got = x;
    cpu_ref::rope(got.data(), n_heads, pos, p);
    WorstError err;
    for (int64_t h = 0; h < n_heads; ++h) {
      const float* in = x.data() + h * hp.head_dim;
      const float* out = got.data() + h * hp.head_dim;
      for (int64_t i = 0; i < hp.rope_dim / 2; ++i) {
        const int64_t a = hp.rope_type == RopeType::Normal ? 2 * i : i;
        const int64_t b = hp.rope_type == RopeType::Normal ? 2 * i + 1 : i + hp.rope_dim / 2;
        const double angle = double(pos) * y.inv_freq(i);
        const double m = y.magnitude();
        const double want_a = (in[a] * std::cos(angle) - in[b] * std::sin(angle)) * m;
        const double want_b = (in[a] * std::sin(angle) + in[b] * std::cos(angle)) * m;
        // Angles up to ~1.3e5 rad: the float32 result of a double computation, plus the angle's
        // double rounding (2^-52 relative) times |x|.
        const double tol = (4 * kU32 + 1e-10) * m * (std::fabs(in[a]) + std::fabs(in[b]));
        err.add(out[a], want_a, tol);
        err.add(out[b], want_b, tol);
        // The magnitude of each pair grows by exactly YaRN's factor.
        const double r_in = std::hypot(double(in[a]), double(in[b]));
        const double r_out = std::hypot(double(out[a]), double(out[b]));
        EXPECT_NEAR(r_out, m * r_in, 4 * kU32 * m * r_in + 1e-30) << "pair " << i;
      }
      for (int64_t k = hp.rope_dim; k < hp.head_dim; ++k) EXPECT_EQ(out[k], in[k]);
    }
    EXPECT_LE(err.excess(), 1.0) << "abs error " << err.abs();
    // The blend matters: plain linear scaling at the same factor gives other values.
    RopeParams linear = p;
    linear.yarn = false;
    linear.mscale = 1;
    std::vector<float> lin = x;
    cpu_ref::rope(lin.data(), n_heads, pos, linear);
    if (pos > 0) {
      EXPECT_NE(lin, got);
    }
  }
}

// YaRN at factor 1 is no scaling at all: the same bits as the unscaled rope.
TEST(OpsRef, RopeYarnAtFactorOneIsTheUnscaledRope) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  HParams hp;
  hp.rope_type = RopeType::Neox;
  hp.head_dim = hp.rope_dim = 128;
  hp.rope_freq_base = 1e6f;
  const RopeParams plain = cpu_ref::rope_params(hp);
  hp.rope_yarn = true;
  hp.rope_yarn_orig_ctx = 32768;
  const RopeParams yarn = cpu_ref::rope_params(hp);
  EXPECT_TRUE(yarn.yarn);
  EXPECT_EQ(yarn.mscale, 1.0);
  for (int64_t pos : {int64_t(1), int64_t(rng() % 131072)}) {
    const auto x = normal(rng, 2 * 128, 1.0f);
    std::vector<float> a = x, b = x;
    cpu_ref::rope(a.data(), 2, pos, plain);
    cpu_ref::rope(b.data(), 2, pos, yarn);
    EXPECT_EQ(a, b) << pos;
  }
}

TEST(OpsRef, RopeAtPositionZeroIsIdentity) {
  std::mt19937_64 rng(fresh_seed());
  auto x = normal(rng, 2 * 64, 1.0f);
  auto y = x;
  RopeParams p;
  p.type = RopeType::Neox;
  p.head_dim = p.rope_dim = 64;
  cpu_ref::rope(y.data(), 2, 0, p);
  EXPECT_EQ(x, y);
}

// Float64 causal grouped-query attention for one query, written from the definition.
std::vector<double> attention_f64(const std::vector<float>& q, const std::vector<float>& k,
                                  const std::vector<float>& v, int64_t n_kv,
                                  const AttentionShape& s) {
  std::vector<double> out(size_t(s.n_head * s.head_dim), 0.0);
  for (int64_t h = 0; h < s.n_head; ++h) {
    const int64_t kvh = h * s.n_head_kv / s.n_head;
    std::vector<double> w(static_cast<size_t>(n_kv));
    double mx = -1e300;
    for (int64_t j = 0; j < n_kv; ++j) {
      double dot = 0;
      for (int64_t d = 0; d < s.head_dim; ++d)
        dot += double(q[size_t(h * s.head_dim + d)]) *
               k[size_t(j * s.kv_stride + kvh * s.head_dim + d)];
      w[size_t(j)] = dot / std::sqrt(double(s.head_dim));
      mx = std::max(mx, w[size_t(j)]);
    }
    double total = 0;
    for (auto& x : w) total += (x = std::exp(x - mx));
    for (int64_t j = 0; j < n_kv; ++j)
      for (int64_t d = 0; d < s.head_dim; ++d)
        out[size_t(h * s.head_dim + d)] +=
            w[size_t(j)] / total * v[size_t(j * s.kv_stride + kvh * s.head_dim + d)];
  }
  return out;
}

TEST(OpsRef, AttentionGroupedQueryMatchesFloat64) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  struct Shape {
    int64_t n_head, n_head_kv, head_dim, extra_stride;
  };
  for (Shape sh :
       {Shape{8, 2, 64, 0}, Shape{4, 4, 16, 0}, Shape{8, 1, 128, 0}, Shape{8, 4, 8, 5}}) {
    AttentionShape s;
    s.n_head = sh.n_head;
    s.n_head_kv = sh.n_head_kv;
    s.head_dim = sh.head_dim;
    s.kv_stride = sh.n_head_kv * sh.head_dim + sh.extra_stride;
    for (int64_t n_kv : {1, 2, 17, 300}) {
      SCOPED_TRACE("heads " + std::to_string(s.n_head) + "/" + std::to_string(s.n_head_kv) +
                   " head_dim " + std::to_string(s.head_dim) + " n_kv " + std::to_string(n_kv));
      // Query scale 3 makes the softmax peaked in some heads and flat in others.
      auto q = normal(rng, size_t(s.n_head * s.head_dim), 3.0f);
      auto k = normal(rng, size_t(n_kv * s.kv_stride), 1.0f);
      auto v = uniform(rng, size_t(n_kv * s.kv_stride), -2.0f, 2.0f);
      std::vector<float> out(size_t(s.n_head * s.head_dim),
                             std::numeric_limits<float>::quiet_NaN());
      std::vector<float> scores(static_cast<size_t>(n_kv));
      cpu_ref::attention(out.data(), q.data(), k.data(), v.data(), n_kv, s, scores.data());
      auto want = attention_f64(q, k, v, n_kv, s);

      // Bound: an absolute error e in every score moves the softmax weights by at most a factor
      // exp(2e) ~ 1 + 2e, i.e. the output by 2e * max|v|; the float softmax and the weighted sum
      // of n_kv terms add (n_kv + 8) u * max|v|.
      double max_qk = 0, max_v = 0;
      for (int64_t h = 0; h < s.n_head; ++h) {
        const int64_t kvh = h * s.n_head_kv / s.n_head;
        for (int64_t j = 0; j < n_kv; ++j) {
          double a = 0;
          for (int64_t d = 0; d < s.head_dim; ++d)
            a += std::fabs(double(q[size_t(h * s.head_dim + d)]) *
                           k[size_t(j * s.kv_stride + kvh * s.head_dim + d)]);
          max_qk = std::max(max_qk, a);
        }
      }
      for (float x : v) max_v = std::max(max_v, double(std::fabs(x)));
      const double score_err =
          (double(s.head_dim / 16) + 8) * kU32 * max_qk / std::sqrt(double(s.head_dim));
      const double tol = (2 * score_err + double(n_kv + 8) * kU32) * max_v;
      WorstError err;
      for (size_t i = 0; i < out.size(); ++i) err.add(out[i], want[i], tol);
      EXPECT_LE(err.excess(), 1.0) << "abs error " << err.abs() << " tol " << tol;
    }
  }
}

// Gemma's scoring: a scale other than 1/sqrt(head_dim) and soft-capping, cap * tanh(s / cap).
// Queries of scale 6 push raw scores well past the cap of 5, so the cap changes the result.
TEST(OpsRef, AttentionWithScaleAndSoftcapMatchesFloat64) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  const int64_t hd = 32, stride = 3 * hd;
  for (const cpu::AttentionScoring sc :
       {cpu::AttentionScoring{0.3f, 5.0f}, cpu::AttentionScoring{0, 5.0f},
        cpu::AttentionScoring{0.05f, 0}}) {
    for (int64_t n_kv : {1, 9, 200}) {
      SCOPED_TRACE("scale " + std::to_string(sc.scale) + " cap " + std::to_string(sc.softcap) +
                   " n_kv " + std::to_string(n_kv));
      const auto q = normal(rng, size_t(hd), 6.0f);
      const auto k = normal(rng, size_t(n_kv * stride), 1.0f);
      const auto v = uniform(rng, size_t(n_kv * stride), -2.0f, 2.0f);
      std::vector<float> out(size_t(hd), std::nanf("")), scores(static_cast<size_t>(n_kv));
      cpu_ref::attention_head(out.data(), q.data(), k.data(), v.data(), n_kv, hd, stride,
                              scores.data(), sc);
      const double scale = sc.scale > 0 ? sc.scale : 1.0 / std::sqrt(double(hd));
      std::vector<double> w(static_cast<size_t>(n_kv));
      double mx = -1e300, max_qk = 0;
      for (int64_t j = 0; j < n_kv; ++j) {
        double dot = 0, mag = 0;
        for (int64_t d = 0; d < hd; ++d) {
          dot += double(q[size_t(d)]) * k[size_t(j * stride + d)];
          mag += std::fabs(double(q[size_t(d)]) * k[size_t(j * stride + d)]);
        }
        w[size_t(j)] =
            sc.softcap > 0 ? sc.softcap * std::tanh(dot * scale / sc.softcap) : dot * scale;
        mx = std::max(mx, w[size_t(j)]);
        max_qk = std::max(max_qk, mag);
      }
      double total = 0;
      for (auto& x : w) total += (x = std::exp(x - mx));
      // As in AttentionGroupedQueryMatchesFloat64; the cap's derivative is at most 1, and its
      // float division, tanh and product add about 4u * cap to each score.
      const double score_err =
          (double(hd / 16) + 8) * kU32 * max_qk * scale + 4 * kU32 * sc.softcap;
      const double tol = (2 * score_err + double(n_kv + 8) * kU32) * 2.0;
      WorstError err;
      for (int64_t d = 0; d < hd; ++d) {
        double want = 0;
        for (int64_t j = 0; j < n_kv; ++j) want += w[size_t(j)] / total * v[size_t(j * stride + d)];
        err.add(out[size_t(d)], want, tol);
      }
      EXPECT_LE(err.excess(), 1.0) << "abs error " << err.abs() << " tol " << tol;
    }
  }
}

TEST(OpsRef, AttentionOverOnePositionReturnsThatValue) {
  std::mt19937_64 rng(fresh_seed());
  AttentionShape s{4, 2, 16, 32};
  auto q = normal(rng, 64, 1.0f), k = normal(rng, 32, 1.0f), v = normal(rng, 32, 1.0f);
  std::vector<float> out(64), scores(1);
  cpu_ref::attention(out.data(), q.data(), k.data(), v.data(), 1, s, scores.data());
  for (int64_t h = 0; h < 4; ++h)
    for (int64_t d = 0; d < 16; ++d)
      EXPECT_EQ(out[size_t(h * 16 + d)], v[size_t((h / 2) * 16 + d)]);
}

TEST(OpsRef, AttentionPropagatesNaN) {
  std::mt19937_64 rng(fresh_seed());
  AttentionShape s{2, 1, 16, 16};
  auto q = normal(rng, 32, 1.0f), k = normal(rng, 16 * 5, 1.0f), v = normal(rng, 16 * 5, 1.0f);
  k[3 * 16 + 2] = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> out(32), scores(5);
  cpu_ref::attention(out.data(), q.data(), k.data(), v.data(), 5, s, scores.data());
  for (float x : out) EXPECT_TRUE(std::isnan(x));
}

TEST(OpsRef, SwigluAndAddsMatchFloat64) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  const int64_t n = 1000;
  auto gate = normal(rng, n, 4.0f), up = normal(rng, n, 1.0f);
  auto g = gate;
  cpu_ref::swiglu(g.data(), up.data(), n);
  WorstError err;
  for (int64_t i = 0; i < n; ++i) {
    const double want = double(gate[i]) / (1.0 + std::exp(-double(gate[i]))) * up[i];
    err.add(g[i], want, 8 * kU32 * std::fabs(want) + 1e-30);  // exp, add, divide, multiply
  }
  EXPECT_LE(err.excess(), 1.0);
  EXPECT_EQ(cpu_ref::silu(-200.0f), -0.0f);  // exp overflow gives 0, not NaN
  EXPECT_FLOAT_EQ(cpu_ref::silu(200.0f), 200.0f);

  auto x = normal(rng, n, 1.0f), y = normal(rng, n, 1.0f);
  auto r = x, b = x;
  {
    // GeGLU with GELU's tanh approximation, from its definition in float64.
    auto gg = gate;
    cpu_ref::geglu(gg.data(), up.data(), n);
    WorstError gerr;
    const double c = std::sqrt(2.0 / std::numbers::pi);
    for (int64_t i = 0; i < n; ++i) {
      const double xg = gate[i];
      const double want = 0.5 * xg * (1.0 + std::tanh(c * (xg + 0.044715 * xg * xg * xg))) * up[i];
      gerr.add(gg[i], want, 4 * kU32 * std::fabs(want) + 1e-30);  // two roundings
    }
    EXPECT_LE(gerr.excess(), 1.0) << "geglu abs error " << gerr.abs();
    EXPECT_EQ(cpu_ref::gelu_tanh(-200.0f), -0.0f);
    EXPECT_EQ(cpu_ref::gelu_tanh(200.0f), 200.0f);
    EXPECT_TRUE(std::isnan(cpu_ref::gelu_tanh(std::nanf(""))));

    // Soft-capping: cap * tanh(x / cap), inside (-cap, cap), NaN stays NaN.
    auto capped = normal(rng, n, 40.0f);
    const auto raw = capped;
    capped[7] = std::nanf("");
    cpu_ref::softcap(capped.data(), n, 30.0f);
    WorstError cerr;
    for (int64_t i = 0; i < n; ++i) {
      if (i == 7) continue;
      const double want = 30.0 * std::tanh(double(raw[i]) / 30.0);
      cerr.add(capped[i], want, 2 * kU32 * std::fabs(want) + 1e-30);
      EXPECT_LE(std::fabs(capped[i]), 30.0f);
    }
    EXPECT_LE(cerr.excess(), 1.0) << "softcap abs error " << cerr.abs();
    EXPECT_TRUE(std::isnan(capped[7]));
  }
  cpu_ref::residual_add(r.data(), y.data(), n);
  cpu_ref::add_bias(b.data(), y.data(), n);
  for (int64_t i = 0; i < n; ++i) {
    EXPECT_EQ(r[i], float(double(x[i]) + double(y[i])));  // one correctly rounded sum
    EXPECT_EQ(b[i], r[i]);
  }
}

}  // namespace
}  // namespace lockstep::backend_test
