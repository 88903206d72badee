// Sampler stages against hand-derived results and float64 references on fresh random logits.
#include "engine/sampler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <unordered_map>
#include <vector>

#include "util/error.h"

namespace lockstep {
namespace {

std::vector<float> random_logits(size_t n, uint64_t seed, float scale = 4.0f) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

std::vector<TokenCandidate> candidates(const std::vector<float>& logits) {
  std::vector<TokenCandidate> c;
  for (size_t i = 0; i < logits.size(); ++i) c.push_back({int32_t(i), logits[i], 0.0f});
  return c;
}

std::vector<int32_t> ids(const std::vector<TokenCandidate>& c) {
  std::vector<int32_t> v;
  for (const auto& x : c) v.push_back(x.id);
  return v;
}

// float64 softmax of logits / temperature over the given ids.
std::vector<double> softmax64(const std::vector<float>& logits, const std::vector<int32_t>& keep,
                              double temperature) {
  double mx = -INFINITY;
  for (int32_t id : keep) mx = std::max(mx, double(logits[size_t(id)]) / temperature);
  std::vector<double> p(logits.size(), 0.0);
  double sum = 0;
  for (int32_t id : keep)
    sum += p[size_t(id)] = std::exp(double(logits[size_t(id)]) / temperature - mx);
  for (auto& x : p) x /= sum;
  return p;
}

// Ids by descending logit, lower id first on ties: the reference order.
std::vector<int32_t> reference_order(const std::vector<float>& logits) {
  std::vector<int32_t> order(logits.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int32_t a, int32_t b) { return logits[size_t(a)] > logits[size_t(b)]; });
  return order;
}

TEST(Sampler, ArgmaxTiesGoToTheLowestId) {
  EXPECT_EQ(Sampler::argmax(std::vector<float>{1, 3, 2, 3, 3}), 1);
  EXPECT_EQ(Sampler::argmax(std::vector<float>{-5, -1, -1}), 1);
  EXPECT_EQ(Sampler::argmax(std::vector<float>{7}), 0);
}

// The blocked argmax against a plain first-maximum scan, on rows of every length around the
// block and lane sizes, with planted ties (the lowest id wins), NaNs (never win) and -inf.
TEST(Sampler, ArgmaxEqualsAPlainScanOnRandomRows) {
  std::mt19937 rng(20261205);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  auto plain = [](const std::vector<float>& x) {
    size_t best = 0;
    for (size_t i = 1; i < x.size(); ++i)
      if (x[i] > x[best]) best = i;
    return int32_t(best);
  };
  for (size_t n : {1u, 2u, 15u, 16u, 17u, 511u, 512u, 513u, 1024u, 1500u, 151936u}) {
    for (int trial = 0; trial < 12; ++trial) {
      std::vector<float> x(n);
      for (float& v : x) v = normal(rng);
      std::uniform_int_distribution<size_t> pick(0, n - 1);
      if (trial % 3 == 1) {  // a tie for the maximum at two or three places
        const float top = *std::max_element(x.begin(), x.end()) + 1.0f;
        for (int k = 0; k < 3; ++k) x[pick(rng)] = top;
      }
      if (trial % 4 == 2)  // NaNs and -inf scattered, the first element included sometimes
        for (int k = 0; k < 5; ++k)
          x[pick(rng)] = k % 2 ? std::numeric_limits<float>::quiet_NaN()
                               : -std::numeric_limits<float>::infinity();
      if (trial == 11) std::fill(x.begin(), x.end(), -std::numeric_limits<float>::infinity());
      ASSERT_EQ(Sampler::argmax(x), plain(x)) << "n " << n << " trial " << trial;
    }
  }
}

TEST(Sampler, TemperatureZeroIsArgmaxOnRandomLogits) {
  SamplingParams sp;
  sp.temperature = 0;
  sp.seed = 5;
  Sampler s(sp);
  for (uint64_t seed = 1; seed <= 50; ++seed) {
    auto logits = random_logits(1000, seed);
    const auto best = std::max_element(logits.begin(), logits.end()) - logits.begin();
    EXPECT_EQ(s.sample(logits), best);
  }
}

TEST(Sampler, TopKOneEqualsGreedyAtAnyTemperature) {
  SamplingParams sp;
  sp.temperature = 1.7f;
  sp.top_k = 1;
  sp.top_p = 1.0f;
  sp.min_p = 0.0f;
  for (uint64_t seed = 1; seed <= 50; ++seed) {
    sp.seed = seed * 31;
    Sampler s(sp);
    auto logits = random_logits(3000, seed, 1.0f);
    EXPECT_EQ(s.sample(logits), Sampler::argmax(logits));
  }
}

TEST(Sampler, TopKKeepsTheKLargestInOrder) {
  for (uint64_t seed = 1; seed <= 20; ++seed) {
    auto logits = random_logits(500, seed);
    logits[17] = logits[3];  // a tie: 3 must come before 17
    for (int k : {1, 5, 40, 499}) {
      auto c = candidates(logits);
      Sampler::top_k(c, k);
      auto ref = reference_order(logits);
      ref.resize(size_t(k));
      EXPECT_EQ(ids(c), ref) << "k=" << k;
    }
    auto c = candidates(logits);
    Sampler::top_k(c, 0);  // off
    EXPECT_EQ(c.size(), logits.size());
  }
}

TEST(Sampler, TopPKeepsTheSmallestSetReachingP) {
  // Probabilities 0.5, 0.3, 0.15, 0.05 (logits are their logs), given in scrambled order.
  const std::vector<float> logits = {std::log(0.15f), std::log(0.5f), std::log(0.05f),
                                     std::log(0.3f)};
  auto run = [&](float p) {
    auto c = candidates(logits);
    Sampler::top_p(c, p);
    return ids(c);
  };
  EXPECT_EQ(run(0.45f), (std::vector<int32_t>{1}));
  EXPECT_EQ(run(0.75f), (std::vector<int32_t>{1, 3}));
  EXPECT_EQ(run(0.81f), (std::vector<int32_t>{1, 3, 0}));
  EXPECT_EQ(run(0.99f), (std::vector<int32_t>{1, 3, 0, 2}));
  EXPECT_EQ(run(1.0f).size(), 4u);  // off
}

TEST(Sampler, TopPMatchesAFloat64ReferenceOnFlatLargeVocabularies) {
  // A flat distribution over 20000 tokens needs thousands of candidates to reach p, which
  // exercises the growing partial sort.
  for (uint64_t seed = 1; seed <= 10; ++seed) {
    auto logits = random_logits(20000, seed, 0.5f);
    for (float p : {0.1f, 0.6f, 0.95f}) {
      auto order = reference_order(logits);
      auto all = order;
      auto prob = softmax64(logits, all, 1.0);
      std::vector<int32_t> ref;
      double cum = 0;
      for (int32_t id : order) {
        ref.push_back(id);
        cum += prob[size_t(id)];
        if (cum >= p) break;
      }
      auto c = candidates(logits);
      Sampler::top_p(c, p);
      // Float vs double accumulation may move the cut by one token when a partial sum lands
      // within rounding of p; anything more is a bug.
      ASSERT_LE(std::abs(double(c.size()) - double(ref.size())), 1.0) << "p=" << p;
      auto got = ids(c);
      const size_t n = std::min(got.size(), ref.size());
      got.resize(n);
      ref.resize(n);
      EXPECT_EQ(got, ref);
      if (p > 0.5f) {
        EXPECT_GT(n, 256u);
      }
    }
  }
}

TEST(Sampler, MinPKeepsTokensWithinAFactorOfTheBest) {
  const std::vector<float> logits = {std::log(0.15f), std::log(0.5f), std::log(0.05f),
                                     std::log(0.3f)};
  auto c = candidates(logits);
  Sampler::min_p(c, 0.2f);  // threshold 0.1: drops only the 0.05 token
  EXPECT_EQ(ids(c), (std::vector<int32_t>{0, 1, 3}));
  c = candidates(logits);
  Sampler::min_p(c, 0.7f);  // threshold 0.35
  EXPECT_EQ(ids(c), (std::vector<int32_t>{1}));

  for (uint64_t seed = 1; seed <= 10; ++seed) {
    auto rl = random_logits(4000, seed);
    std::vector<int32_t> all(rl.size());
    std::iota(all.begin(), all.end(), 0);
    auto prob = softmax64(rl, all, 1.0);
    const double pmax = *std::max_element(prob.begin(), prob.end());
    std::vector<int32_t> ref;
    for (int32_t id : all)
      if (prob[size_t(id)] >= 0.05 * pmax) ref.push_back(id);
    auto rc = candidates(rl);
    Sampler::min_p(rc, 0.05f);
    EXPECT_EQ(ids(rc), ref);
  }
}

TEST(Sampler, RepeatPenaltyDividesPositiveAndMultipliesNegativeLogitsOncePerToken) {
  std::vector<float> logits = {2.0f, -2.0f, 0.0f, 1.0f, 5.0f};
  const std::vector<int32_t> last = {0, 1, 1, 2, 1, 99, -3};  // repeats count once; junk ignored
  Sampler::apply_repeat_penalty(logits, last, 2.0f);
  EXPECT_EQ(logits, (std::vector<float>{1.0f, -4.0f, 0.0f, 1.0f, 5.0f}));
}

TEST(Sampler, RepeatPenaltyLooksOnlyAtTheLastNTokens) {
  SamplingParams sp;
  sp.temperature = 0;
  sp.repeat_penalty = 4.0f;
  sp.repeat_last_n = 1;
  Sampler s(sp);
  const std::vector<float> logits = {3.0f, 2.0f, 1.0f};
  EXPECT_EQ(s.sample(logits), 0);
  s.accept(0);  // 0 penalised: 0.75 < 2
  EXPECT_EQ(s.sample(logits), 1);
  s.accept(2);  // window of 1: only 2 is penalised now, 0 wins again
  EXPECT_EQ(s.sample(logits), 0);
}

TEST(Sampler, OpenAiPenaltiesSubtractCountTimesFrequencyPlusPresence) {
  std::vector<float> logits = {2.0f, -2.0f, 0.5f, 1.0f};
  const std::unordered_map<int32_t, int> counts = {{0, 3}, {2, 1}, {99, 4}, {-1, 2}};
  Sampler::apply_openai_penalties(logits, counts, 0.25f, 0.5f);
  EXPECT_EQ(logits, (std::vector<float>{2.0f - 1.5f - 0.25f, -2.0f, 0.5f - 0.5f - 0.25f, 1.0f}));
}

// Greedy with the penalties against a float64 recomputation: each step's argmax of
// logit - count * frequency - (count > 0) * presence over the tokens generated so far (the prompt
// does not count), on fresh random rows.
TEST(Sampler, OpenAiPenaltiesFollowTheGeneratedCountsOnRandomLogits) {
  for (float presence : {0.0f, 0.7f, -0.4f}) {
    for (float frequency : {0.0f, 0.9f, -0.3f}) {
      SamplingParams sp;
      sp.temperature = 0;
      sp.presence_penalty = presence;
      sp.frequency_penalty = frequency;
      Sampler s(sp);
      s.accept(3);  // a prompt token: no count
      std::vector<int> count(12, 0);
      for (uint64_t step = 0; step < 40; ++step) {
        const auto logits = random_logits(12, 1000 + step, 0.6f);
        int32_t want = 0;
        double best = -INFINITY;
        for (size_t id = 0; id < logits.size(); ++id) {
          const double l = double(logits[id]) - count[id] * double(frequency) -
                           (count[id] > 0 ? double(presence) : 0.0);
          if (l > best) best = l, want = int32_t(id);
        }
        const int32_t got = s.sample(logits);
        ASSERT_EQ(got, want) << "presence " << presence << " frequency " << frequency << " step "
                             << step;
        s.accept_generated(got);
        ++count[size_t(got)];
      }
    }
  }
}

TEST(Sampler, PresencePenaltyStopsARepeatAndOnlyGeneratedTokensCount) {
  SamplingParams sp;
  sp.temperature = 0;
  sp.presence_penalty = 2.0f;
  Sampler s(sp);
  const std::vector<float> logits = {3.0f, 2.0f, 0.0f};
  s.accept(0);  // the prompt's 0 is not penalised
  EXPECT_EQ(s.sample(logits), 0);
  s.accept_generated(0);  // 3 - 2 = 1 < 2
  EXPECT_EQ(s.sample(logits), 1);
  s.accept_generated(1);  // both penalised once: 1 vs 0 vs 0
  EXPECT_EQ(s.sample(logits), 0);
  s.reset_history();
  EXPECT_EQ(s.sample(logits), 0);
}

// log-softmax in float64 written out independently: log(exp(l_i) / sum exp(l_j)) with long
// double sums.
TEST(Sampler, TokenLogprobsMatchALongDoubleLogSoftmaxOnRandomLogits) {
  for (uint64_t seed : {1u, 2u, 3u}) {
    auto logits = random_logits(5000, seed, 3.0f);
    logits[17] = logits[4000];  // a tie: the lower id comes first
    logits[123] = -INFINITY;    // a mask
    long double sum = 0;
    for (float l : logits) sum += std::exp((long double)l);
    auto ref = [&](size_t id) { return double(std::log(std::exp((long double)logits[id]) / sum)); };
    const int32_t token = int32_t(seed * 777 % 5000);
    const TokenLogprobs lp = token_logprobs(logits, token, 8);
    EXPECT_EQ(lp.token, token);
    EXPECT_NEAR(lp.logprob, ref(size_t(token)), 1e-9);
    const auto order = reference_order(logits);
    ASSERT_EQ(lp.top.size(), 8u);
    for (size_t i = 0; i < 8; ++i) {
      EXPECT_EQ(lp.top[i].first, order[i]);
      EXPECT_NEAR(lp.top[i].second, ref(size_t(order[i])), 1e-9);
    }
    EXPECT_EQ(token_logprobs(logits, 123, 0).logprob, -INFINITY);
    EXPECT_TRUE(token_logprobs(logits, token, 0).top.empty());
    EXPECT_EQ(token_logprobs(logits, token, 99999).top.size(), logits.size());
  }
  EXPECT_THROW(token_logprobs(std::vector<float>{1.0f}, 1, 0), Error);
  EXPECT_THROW(token_logprobs(std::vector<float>{}, 0, 0), Error);
}

TEST(Sampler, SameSeedSameTokensDifferentSeedDifferentTokens) {
  SamplingParams sp;
  sp.temperature = 1.0f;
  sp.top_k = 0;
  sp.top_p = 1.0f;
  sp.min_p = 0.0f;
  auto run = [&](uint64_t seed) {
    sp.seed = seed;
    Sampler s(sp);
    std::vector<int32_t> out;
    for (uint64_t step = 0; step < 64; ++step)
      out.push_back(s.sample(random_logits(100, step, 0.3f)));
    return out;
  };
  EXPECT_EQ(run(42), run(42));
  EXPECT_NE(run(42), run(43));
}

TEST(Sampler, GeneratorIsThePortableMt19937_64) {
  // The C++ standard pins the 10000th output of a default-seeded mt19937_64.
  std::mt19937_64 rng;
  rng.discard(9999);
  EXPECT_EQ(rng(), 9981545732273789042ull);
  std::mt19937_64 r2(7);
  double mean = 0;
  for (int i = 0; i < 100000; ++i) {
    const double u = uniform_01(r2);
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
    mean += u / 100000;
  }
  EXPECT_NEAR(mean, 0.5, 5 * std::sqrt(1.0 / 12 / 100000));
}

// Draws many tokens and checks each frequency against the float64 softmax of the kept set,
// within 5 binomial standard deviations.
void expect_frequencies_match(const SamplingParams& sp, const std::vector<float>& logits,
                              const std::vector<int32_t>& kept) {
  const int n = 200000;
  Sampler s(sp);
  std::vector<int> count(logits.size(), 0);
  for (int i = 0; i < n; ++i) ++count[size_t(s.sample(logits))];
  const auto p = softmax64(logits, kept, sp.temperature);
  for (size_t id = 0; id < logits.size(); ++id) {
    const double expect = n * p[id];
    const double sd = std::sqrt(n * p[id] * (1 - p[id]));
    EXPECT_LE(std::abs(count[id] - expect), 5 * sd + 1)
        << "token " << id << ": " << count[id] << " draws, expected " << expect;
  }
}

TEST(Sampler, FrequenciesMatchTheTemperedSoftmax) {
  SamplingParams sp;
  sp.temperature = 0.7f;
  sp.top_k = 0;
  sp.top_p = 1.0f;
  sp.min_p = 0.0f;
  sp.seed = 1234;
  const auto logits = random_logits(8, 99, 1.0f);
  std::vector<int32_t> all(8);
  std::iota(all.begin(), all.end(), 0);
  expect_frequencies_match(sp, logits, all);
}

TEST(Sampler, FrequenciesMatchTheSoftmaxOverTheTopK) {
  SamplingParams sp;
  sp.temperature = 1.3f;
  sp.top_k = 3;
  sp.top_p = 1.0f;
  sp.min_p = 0.0f;
  sp.seed = 77;
  const auto logits = random_logits(10, 5, 1.0f);
  auto keep = reference_order(logits);
  keep.resize(3);
  expect_frequencies_match(sp, logits, keep);
}

TEST(Sampler, FrequenciesMatchTheSoftmaxOverTheTopPSet) {
  // Probabilities 0.4, 0.3, 0.2, 0.1: top-p 0.65 keeps {0, 1}; temperature then reshapes them.
  const std::vector<float> logits = {std::log(0.4f), std::log(0.3f), std::log(0.2f),
                                     std::log(0.1f)};
  SamplingParams sp;
  sp.temperature = 0.5f;
  sp.top_k = 0;
  sp.top_p = 0.65f;
  sp.min_p = 0.0f;
  sp.seed = 3;
  expect_frequencies_match(sp, logits, {0, 1});
}

TEST(Sampler, NonFiniteLogitsAreErrorsNotTokens) {
  SamplingParams sp;
  Sampler s(sp);
  auto logits = random_logits(50, 1);
  logits[20] = NAN;
  EXPECT_THROW(s.sample(logits), Error);
  logits[20] = INFINITY;
  EXPECT_THROW(s.sample(logits), Error);
  std::vector<float> all_masked(5, -INFINITY);
  EXPECT_THROW(s.sample(all_masked), Error);
  logits[20] = -INFINITY;  // a mask is fine
  EXPECT_NE(s.sample(logits), 20);
}

TEST(Sampler, ValidateNamesTheFlag) {
  SamplingParams ok;
  EXPECT_EQ(validate(ok), "");
  auto bad = [](auto mutate) {
    SamplingParams p;
    mutate(p);
    return validate(p);
  };
  EXPECT_NE(bad([](auto& p) { p.temperature = -1; }).find("--temp"), std::string::npos);
  EXPECT_NE(bad([](auto& p) { p.temperature = NAN; }).find("--temp"), std::string::npos);
  EXPECT_NE(bad([](auto& p) { p.top_k = -2; }).find("--top-k"), std::string::npos);
  EXPECT_NE(bad([](auto& p) { p.top_p = 0; }).find("--top-p"), std::string::npos);
  EXPECT_NE(bad([](auto& p) { p.top_p = 1.5f; }).find("--top-p"), std::string::npos);
  EXPECT_NE(bad([](auto& p) { p.min_p = -0.1f; }).find("--min-p"), std::string::npos);
  EXPECT_NE(bad([](auto& p) { p.presence_penalty = 2.5f; }).find("--presence-penalty"),
            std::string::npos);
  EXPECT_NE(bad([](auto& p) { p.frequency_penalty = NAN; }).find("--frequency-penalty"),
            std::string::npos);
  EXPECT_NE(bad([](auto& p) { p.repeat_penalty = 0; }).find("--repeat-penalty"), std::string::npos);
  EXPECT_NE(bad([](auto& p) { p.repeat_last_n = -2; }).find("--repeat-last-n"), std::string::npos);
  SamplingParams p;
  p.top_p = 2;
  EXPECT_THROW(Sampler{p}, InputError);
}

}  // namespace
}  // namespace lockstep
