// The KL divergence of `perplexity --kl-divergence` (engine/kl_divergence.h): the per-position
// numbers against a long double recomputation on fresh random logits, with an error bound derived
// from the base file's quantization; the statistics against a direct recomputation; the base
// file's round trip; and hostile base files, each one InputError line and never a crash.
#include "engine/kl_divergence.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "backend/random_data.h"
#include "common/cli_process_util.h"
#include "util/error.h"

namespace lockstep {
namespace {

using backend_test::fresh_seed;
using backend_test::normal;
using backend_test::seed_trace;

const double kStep = kLogProbRange / double(kBelowRange - 1);

std::vector<long double> log_softmax(const std::vector<float>& l) {
  long double max = l[0], sum = 0;
  for (float v : l) max = std::max(max, (long double)v);
  for (float v : l) sum += std::exp((long double)v - max);
  std::vector<long double> out(l.size());
  for (size_t i = 0; i < l.size(); ++i) out[i] = (long double)l[i] - max - std::log(sum);
  return out;
}

int32_t first_argmax(const std::vector<float>& l) {
  return int32_t(std::max_element(l.begin(), l.end()) - l.begin());
}

TEST(KlDivergence, MatchesLongDoubleWithinTheQuantizationBound) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  for (int trial = 0; trial < 60; ++trial) {
    SCOPED_TRACE("trial " + std::to_string(trial));
    const size_t n = 2 + rng() % 3000;
    // Wide logits (sigma 8) put some of the vocabulary below the 24 nats kept.
    const float sigma = std::array<float, 4>{0.3f, 2.f, 5.f, 8.f}[trial % 4];
    const std::vector<float> base = normal(rng, n, sigma);
    std::vector<float> cand = base;
    const float noise = std::array<float, 3>{1e-3f, 0.1f, 2.f}[trial % 3];
    const std::vector<float> dev = normal(rng, n, noise);
    for (size_t i = 0; i < n; ++i) cand[i] += dev[i];
    const int32_t target = int32_t(rng() % n);

    const std::vector<long double> lp = log_softmax(base), lq = log_softmax(cand);
    long double kl = 0, sum_abs = 0, dropped_mass = 0, dropped_term = 0;
    const long double top = *std::max_element(lp.begin(), lp.end());
    for (size_t i = 0; i < n; ++i) {
      const long double p = std::exp(lp[i]);
      kl += p * (lp[i] - lq[i]);
      sum_abs += p * std::fabs(lp[i] - lq[i]);
      if (top - lp[i] > kLogProbRange * (1 - 1e-6)) {  // at the edge either side may round
        dropped_mass += p;
        dropped_term += p * std::fabs(lp[i] - lq[i]);
      }
    }
    // Stored log p_i carry |error| <= step/2; renormalizing over the kept entries moves them by
    // at most step/2 - log(1 - dropped mass). With s the sum, |KL_stored - KL| <=
    // (e^s - 1) sum p|log p - log q| + s e^s + (the dropped entries' share).
    const long double s = kStep - std::log1p(-dropped_mass);
    const double bound =
        double((std::exp(s) - 1) * sum_abs + s * std::exp(s) + dropped_term) + 1e-12;

    const KlBaseRow row = make_kl_base_row(base, target);
    EXPECT_EQ(row.top_token, first_argmax(base));
    const TokenKl t = compare_with_kl_base(row, cand, target);
    ASSERT_TRUE(std::isfinite(t.kl));
    EXPECT_NEAR(t.kl, double(kl), bound) << "n " << n << " sigma " << sigma;
    EXPECT_NEAR(t.nll, double(-lq[size_t(target)]), 1e-9 * (1 + std::fabs(double(lq[target]))));
    EXPECT_NEAR(t.nll_base, double(-lp[size_t(target)]),
                1e-6 * (1 + std::fabs(double(lp[target]))));  // stored as float
    EXPECT_NEAR(t.p_target, double(std::exp(lq[size_t(target)])), 1e-9);
    EXPECT_NEAR(t.p_target_base, double(std::exp(lp[size_t(target)])), 1e-6);
    EXPECT_EQ(t.same_top, first_argmax(base) == first_argmax(cand));

    // Against itself the renormalized base is off by O(step^2), not O(step): KL in [0, step^2].
    const TokenKl self = compare_with_kl_base(row, base, target);
    EXPECT_GE(self.kl, -1e-12);
    EXPECT_LE(self.kl, kStep * kStep);
    EXPECT_TRUE(self.same_top);
  }
}

TEST(KlDivergence, NearTieKeepsTheExactTopToken) {
  // Two logits 1e-6 apart quantize to the same code; the stored top token must still be the
  // larger, so "same top" compares the runs' real rankings.
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  std::vector<float> base = normal(rng, 500, 1.f);
  const float top = *std::max_element(base.begin(), base.end());
  base[7] = top + 1.0f;
  base[300] = base[7] + 1e-6f * std::fabs(base[7]) + 1e-6f;
  const KlBaseRow row = make_kl_base_row(base, 3);
  EXPECT_EQ(row.top_token, 300);
  EXPECT_EQ(row.codes[7], row.codes[300]);
  std::vector<float> swapped = base;
  std::swap(swapped[7], swapped[300]);
  EXPECT_FALSE(compare_with_kl_base(row, swapped, 3).same_top);
  EXPECT_TRUE(compare_with_kl_base(row, base, 3).same_top);
}

TEST(KlDivergence, NonFiniteLogitsNeverPass) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  std::vector<float> logits = normal(rng, 64, 2.f);
  const KlBaseRow row = make_kl_base_row(logits, 5);
  for (float bad : {NAN, INFINITY, -INFINITY}) {
    std::vector<float> cand = logits;
    cand[size_t(rng() % cand.size())] = bad;
    const TokenKl t = compare_with_kl_base(row, cand, 5);
    EXPECT_TRUE(std::isnan(t.kl)) << bad;
    EXPECT_FALSE(t.kl < 1e-3) << bad;  // no threshold test can pass on it
    EXPECT_THROW(make_kl_base_row(cand, 5), Error) << bad;
  }
}

TEST(KlDivergence, StatisticsMatchADirectRecomputation) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(0, 1);
  const size_t n = 50 + rng() % 500;
  KlStatistics stats;
  std::vector<long double> kl, dp, nll, nllb;
  size_t same = 0;
  for (size_t i = 0; i < n; ++i) {
    TokenKl t;
    t.kl = std::pow(u(rng), 3) * 0.2;
    t.p_target_base = u(rng);
    t.p_target = std::clamp(t.p_target_base + 0.1 * (u(rng) - 0.5), 0.0, 1.0);
    t.nll_base = -std::log(t.p_target_base + 1e-9);
    t.nll = -std::log(t.p_target + 1e-9);
    t.same_top = u(rng) < 0.9;
    stats.add(t);
    kl.push_back(t.kl);
    dp.push_back((long double)t.p_target - t.p_target_base);
    nll.push_back(t.nll);
    nllb.push_back(t.nll_base);
    same += t.same_top;
  }
  auto mean = [](const std::vector<long double>& v) {
    long double s = 0;
    for (auto x : v) s += x;
    return s / v.size();
  };
  auto std_error = [&](const std::vector<long double>& v) {
    const long double m = mean(v);
    long double ss = 0;
    for (auto x : v) ss += (x - m) * (x - m);
    return std::sqrt(ss / (v.size() - 1) / v.size());
  };
  EXPECT_NEAR(stats.kl_mean().mean, double(mean(kl)), 1e-12);
  EXPECT_NEAR(stats.kl_mean().error, double(std_error(kl)), 1e-12);
  EXPECT_NEAR(stats.delta_p_mean().mean, double(mean(dp)), 1e-12);
  std::vector<long double> dp2;
  for (auto x : dp) dp2.push_back(x * x);
  const long double rms = std::sqrt(mean(dp2));
  EXPECT_NEAR(stats.delta_p_rms().mean, double(rms), 1e-12);
  EXPECT_NEAR(stats.delta_p_rms().error, double(std_error(dp2) / (2 * rms)), 1e-12);
  const long double frac = (long double)same / n;
  EXPECT_NEAR(stats.same_top().mean, double(frac), 1e-15);
  EXPECT_NEAR(stats.same_top().error, double(std::sqrt(frac * (1 - frac) / (n - 1))), 1e-12);
  std::vector<long double> d;
  for (size_t i = 0; i < n; ++i) d.push_back(nll[i] - nllb[i]);
  EXPECT_NEAR(stats.log_ppl_ratio().mean, double(mean(d)), 1e-12);
  EXPECT_NEAR(stats.log_ppl_ratio().error, double(std_error(d)), 1e-12);
  EXPECT_NEAR(stats.ppl(), double(std::exp(mean(nll))), 1e-9 * double(std::exp(mean(nll))));
  EXPECT_NEAR(stats.ppl_base(), double(std::exp(mean(nllb))), 1e-9 * double(std::exp(mean(nllb))));
  long double sab = 0, saa = 0, sbb = 0;
  const long double ma = mean(nll), mb = mean(nllb);
  for (size_t i = 0; i < n; ++i) {
    sab += (nll[i] - ma) * (nllb[i] - mb);
    saa += (nll[i] - ma) * (nll[i] - ma);
    sbb += (nllb[i] - mb) * (nllb[i] - mb);
  }
  EXPECT_NEAR(stats.nll_correlation(), double(sab / std::sqrt(saa * sbb)), 1e-12);
  // Quantiles: order statistics at the ends, linear interpolation between them.
  std::vector<long double> sorted = kl;
  std::sort(sorted.begin(), sorted.end());
  EXPECT_EQ(stats.kl_quantile(0), double(sorted.front()));
  EXPECT_EQ(stats.kl_quantile(1), double(sorted.back()));
  const long double rank = 0.99L * (n - 1);
  const size_t lo = size_t(rank);
  EXPECT_NEAR(stats.kl_quantile(0.99),
              double(sorted[lo] + (rank - lo) * (sorted[std::min(lo + 1, n - 1)] - sorted[lo])),
              1e-12);
  EXPECT_TRUE(std::isnan(quantile({}, 0.5)));
  const std::string report = stats.report();
  EXPECT_NE(report.find("Mean    KLD: "), std::string::npos) << report;
  EXPECT_NE(report.find("Same top p: "), std::string::npos) << report;
}

// A valid base file of random rows; returns the rows written.
std::vector<KlBaseRow> write_random_base(const std::string& path, std::mt19937_64& rng,
                                         uint32_t n_vocab, uint32_t n_ctx, uint32_t n_chunk,
                                         std::vector<int32_t>& tokens) {
  tokens.resize(size_t(n_ctx) * n_chunk);
  for (auto& t : tokens) t = int32_t(rng() % n_vocab);
  KlBaseWriter w(path, n_vocab, n_ctx, n_chunk, tokens);
  std::vector<KlBaseRow> rows;
  const uint32_t per_chunk = n_ctx - 1 - n_ctx / 2;
  for (uint32_t i = 0; i < n_chunk * per_chunk; ++i) {
    rows.push_back(make_kl_base_row(normal(rng, n_vocab, 6.f), int32_t(rng() % n_vocab)));
    w.write_row(rows.back());
  }
  w.finish();
  return rows;
}

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void spit(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

// Opens `path` and reads every row; returns the InputError's message, "" when it reads cleanly.
std::string read_all(const std::string& path) {
  try {
    KlBaseReader r(path);
    KlBaseRow row;
    const uint64_t rows = uint64_t(r.header().n_chunk) * r.header().rows_per_chunk();
    for (uint64_t i = 0; i < rows; ++i) r.read_row(row);
    return "";
  } catch (const InputError& e) {
    return e.what();
  }
}

TEST(KlDivergenceFile, RoundTrip) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  const std::string path = test::temp_dir() + "/base.kld";
  std::vector<int32_t> tokens;
  const auto rows = write_random_base(path, rng, 300, 10, 3, tokens);
  ASSERT_EQ(rows.size(), 3u * 4u);  // positions 5..8 of each chunk of 10
  KlBaseReader r(path);
  EXPECT_EQ(r.header().n_vocab, 300u);
  EXPECT_EQ(r.header().n_ctx, 10u);
  EXPECT_EQ(r.header().n_chunk, 3u);
  EXPECT_EQ(r.header().tokens, tokens);
  KlBaseRow row;
  for (const KlBaseRow& want : rows) {
    r.read_row(row);
    EXPECT_EQ(row.top_logprob, want.top_logprob);
    EXPECT_EQ(row.top_token, want.top_token);
    EXPECT_EQ(row.target_logprob, want.target_logprob);
    EXPECT_EQ(row.codes, want.codes);
  }
  EXPECT_THROW(r.read_row(row), InputError);  // past the last row
}

TEST(KlDivergenceFile, HostileFilesAreOneLineInputErrors) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  const std::string dir = test::temp_dir();
  const std::string good = dir + "/good.kld", bad = dir + "/bad.kld";
  std::vector<int32_t> tokens;
  write_random_base(good, rng, 64, 8, 2, tokens);
  const std::string bytes = slurp(good);
  ASSERT_EQ(read_all(good), "");

  auto expect_rejected = [&](const std::string& content, const std::string& why,
                             const std::string& needle) {
    spit(bad, content);
    const std::string msg = read_all(bad);
    EXPECT_NE(msg, "") << why;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << why << ": " << msg;
    EXPECT_NE(msg.find(needle), std::string::npos) << why << ": " << msg;
  };
  auto with_u32 = [&](size_t offset, uint32_t v) {
    std::string b = bytes;
    std::memcpy(b.data() + offset, &v, 4);
    return b;
  };
  // Header: magic 0..7, version 8, n_vocab 12, n_ctx 16, n_chunk 20, step 24, tokens from 28.
  const size_t row0 = 28 + tokens.size() * 4;
  expect_rejected("", "empty", "too short");
  expect_rejected("GGUF" + bytes.substr(4), "magic", "bad magic");
  expect_rejected(with_u32(8, 2), "version", "unsupported version 2");
  expect_rejected(with_u32(12, 0xffffffffu), "vocab", "vocabulary size");
  expect_rejected(with_u32(12, 65), "vocab off by one", "header implies");
  expect_rejected(with_u32(16, 0), "ctx 0", "context 0");
  expect_rejected(with_u32(20, 0), "no chunks", "no chunks");
  expect_rejected(with_u32(20, 0x7fffffffu), "huge chunk count", "too many tokens");
  expect_rejected(with_u32(24, 0x3f800000u), "step", "quantization step");
  expect_rejected(with_u32(28 + 4 * 3, 64), "token = n_vocab", "outside the vocabulary");
  expect_rejected(with_u32(28, 0x80000000u), "negative token", "outside the vocabulary");
  expect_rejected(with_u32(row0, 0x7fc00000u), "NaN top log-prob", "not a valid distribution");
  expect_rejected(with_u32(row0, 0x3f800000u), "top log-prob 1", "not a valid distribution");
  expect_rejected(with_u32(row0, 0xc1200000u), "top log-prob -10 < -log 64",
                  "not a valid distribution");
  expect_rejected(with_u32(row0 + 4, 64), "top token out of range", "not a valid distribution");
  expect_rejected(with_u32(row0 + 8, 0x7f800000u), "Inf target", "not a valid distribution");
  expect_rejected(bytes + "x", "one byte too many", "header implies");
  for (size_t cut : {size_t(3), size_t(27), row0 - 1, row0 + 11, bytes.size() - 1})
    expect_rejected(bytes.substr(0, cut), "cut at " + std::to_string(cut), "");
  expect_rejected(bytes.substr(0, bytes.size() - 1), "truncated", "truncated");
  {
    // A top token whose code is not 0 contradicts the row.
    std::string b = bytes;
    int32_t top;
    std::memcpy(&top, b.data() + row0 + 4, 4);
    const uint16_t code = 7;
    std::memcpy(b.data() + row0 + 12 + 2 * size_t(top), &code, 2);
    expect_rejected(b, "top token's code", "not a valid distribution");
  }
  EXPECT_NE(read_all(dir), "");  // a directory
  EXPECT_NE(read_all(dir + "/missing.kld"), "");

  // Random byte flips: each file reads cleanly or is one InputError line (ASan/UBSan builds
  // check that nothing else happens).
  for (int trial = 0; trial < 300; ++trial) {
    std::string b = bytes;
    for (int k = 0; k < 1 + int(rng() % 4); ++k) b[rng() % b.size()] = char(rng());
    spit(bad, b);
    const std::string msg = read_all(bad);
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  }
}

}  // namespace
}  // namespace lockstep
