// The gate's decision logic on synthetic backends whose logits are a known function of the token
// history, so every rule (cosine, KL, top-1 margin, NaN, prefill vs step) can be driven exactly.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>

#include "parity/gate.h"

namespace lockstep {
namespace {

constexpr int kVocab = 97;

// Logits at a position depend on every token seen so far (like a KV cache does).
class ScriptedBackend : public Backend {
 public:
  using Perturb = std::function<void(int pos, bool in_prefill, float* logits)>;
  ScriptedBackend(const Model& m, std::string name, Perturb perturb = nullptr)
      : model_(m), name_(std::move(name)), perturb_(std::move(perturb)) {}

  std::string name() const override { return name_; }
  const Model& model() const override { return model_; }
  int n_past() const override { return int(history_.size()); }
  int n_ctx() const override { return 512; }
  void truncate(int n) override { history_.resize(size_t(std::min<int>(n, n_past()))); }
  void drift_kv(int, int64_t, int64_t, float) override {}
  void forward_impl(std::span<const int32_t> tokens, float* logits, bool all_logits) override {
    if (throw_at_step >= 0 && tokens.size() == 1 && n_past() >= 64 + throw_at_step)
      throw Error("scripted failure");
    const bool prefill = tokens.size() > 1;
    for (size_t t = 0; t < tokens.size(); ++t) {
      history_.push_back(tokens[t]);
      if (!all_logits && t + 1 < tokens.size()) continue;
      if (n_past() - 1 == skip_write_at) continue;  // a broken backend: leaves its row as it was
      float* out = all_logits ? logits + t * kVocab : logits;
      uint64_t h = 1469598103934665603ull;
      for (int32_t x : history_) h = (h ^ uint64_t(x)) * 1099511628211ull;
      std::mt19937_64 rng(h);
      std::normal_distribution<float> nd(0.f, 3.f);
      for (int i = 0; i < kVocab; ++i) out[i] = nd(rng);
      if (perturb_) perturb_(n_past() - 1, prefill, out);
    }
  }

  int throw_at_step = -1;  // >= 0: forward() of that step throws
  int skip_write_at = -1;  // >= 0: the logits row of that position is not written

 private:
  const Model& model_;
  std::string name_;
  Perturb perturb_;
  std::vector<int32_t> history_;
};

// A cache that drifts more with every step: step 0 is exact, step 1 is far off.
ScriptedBackend::Perturb drift_after(int first_bad_pos, float scale) {
  return [=](int pos, bool, float* l) {
    if (pos < first_bad_pos) return;
    std::mt19937 rng{static_cast<uint32_t>(pos)};
    std::normal_distribution<float> nd(0.f, scale * float(pos - first_bad_pos + 1));
    for (int i = 0; i < kVocab; ++i) l[i] += nd(rng);
  };
}

class GateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    model_.hp.n_vocab = kVocab;
    for (int i = 0; i < 64; ++i) probe_.push_back((i * 37 + 11) % kVocab);
  }
  ParityVerdict run(ScriptedBackend::Perturb perturb, int steps = 3) {
    ScriptedBackend ref(model_, "cpu-ref");
    ScriptedBackend cand(model_, "cand", std::move(perturb));
    ParityConfig cfg;
    cfg.steps = steps;
    return ParityComparison::compare(ref, cand, probe_, cfg);
  }
  Model model_;
  std::vector<int32_t> probe_;
};

TEST_F(GateTest, IdenticalCandidatePasses) {
  auto v = run(nullptr);
  EXPECT_EQ(v.status, ParityVerdict::Status::Passed);
  EXPECT_EQ(v.rows.size(), 64u + 3u);
  EXPECT_DOUBLE_EQ(v.worst_cosine, 1.0);
  EXPECT_EQ(v.worst_kl, 0.0);
}

// compare() is run_reference() then compare_with(): the reference needs nothing from the
// candidate (its own argmax steers both), so the gate can run it before the candidate exists.
// The halves must give the verdict compare() gives, the steps must be fed the reference's
// argmax, the times must be filled in, and errors must reach the caller.
TEST_F(GateTest, ReferenceFirstThenCandidateGivesTheSameVerdict) {
  ScriptedBackend ref(model_, "cpu-ref"), cand(model_, "cand", drift_after(66, 3.f));
  ParityConfig cfg;
  const ParityVerdict whole = ParityComparison::compare(ref, cand, probe_, cfg);
  const ReferenceProbe probe_ref = ParityComparison::run_reference(ref, probe_, cfg.steps);
  ASSERT_EQ(probe_ref.step_tokens.size(), 3u);
  for (int k = 0; k < 3; ++k) {
    const float* before =
        k == 0 ? probe_ref.prefill.data() + 63 * kVocab : probe_ref.steps.data() + (k - 1) * kVocab;
    EXPECT_EQ(probe_ref.step_tokens[size_t(k)], argmax({before, size_t(kVocab)})) << "step " << k;
  }
  EXPECT_GT(probe_ref.ms, probe_ref.prefill_ms);
  const ParityVerdict halves = ParityComparison::compare_with(probe_ref, cand, probe_, cfg);
  for (const ParityVerdict* v : {&whole, &halves}) {
    ASSERT_EQ(v->status, ParityVerdict::Status::Rejected);
    EXPECT_EQ(v->failed_at, "step 2/3");
    EXPECT_EQ(v->rows.size(), 64u + 3u);
    EXPECT_GT(v->reference_ms, 0.0);
    EXPECT_GT(v->candidate_ms, 0.0);
    EXPECT_FALSE(v->reference_overlapped);
  }
  EXPECT_EQ(whole.failed_value, halves.failed_value);
  EXPECT_GE(whole.ms, whole.reference_ms + whole.candidate_ms);
  for (size_t i = 0; i < whole.rows.size(); ++i) {
    EXPECT_EQ(whole.rows[i].token, halves.rows[i].token) << "row " << i;
    EXPECT_EQ(whole.rows[i].m.cosine, halves.rows[i].m.cosine) << "row " << i;
  }
  // A reference probe of other length or steps is refused; so is a candidate that throws.
  ParityConfig more = cfg;
  more.steps = 4;
  EXPECT_THROW(ParityComparison::compare_with(probe_ref, cand, probe_, more), Error);
  EXPECT_THROW(ParityComparison::run_reference(ref, probe_, 0), InputError);
  ScriptedBackend throwing(model_, "cand");
  throwing.throw_at_step = 1;
  EXPECT_THROW(ParityComparison::compare_with(probe_ref, throwing, probe_, cfg), Error);
}

// A reference that computes NaN/Inf (a broken model: NaN weights, a degenerate hyperparameter)
// is not a verdict on the candidate: the comparison refuses to judge and says the model is
// broken, naming the first such row, in the prefill and in a step.
TEST_F(GateTest, ANonFiniteReferenceMeansTheModelIsBrokenNotTheCandidate) {
  for (int pos : {5, 65}) {
    auto poison = [pos](int p, bool, float* l) {
      if (p == pos) l[3] = std::numeric_limits<float>::quiet_NaN();
    };
    ScriptedBackend ref(model_, "cpu-ref", poison), cand(model_, "cand");
    try {
      ParityComparison::compare(ref, cand, probe_, ParityConfig{});
      FAIL() << "a NaN reference was compared (pos " << pos << ")";
    } catch (const InputError& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find("model itself is broken"), std::string::npos) << what;
      EXPECT_NE(what.find(pos < 64 ? "position 5/64" : "step 1/3"), std::string::npos) << what;
    }
  }
}

// A candidate that leaves a row unwritten is rejected as non-finite (its output buffer is
// poisoned), in the prefill and in a step, never compared as whatever that memory held.
TEST_F(GateTest, UnwrittenCandidateRowsAreRejected) {
  for (int pos : {7, 65}) {
    ScriptedBackend ref(model_, "cpu-ref"), cand(model_, "cand");
    cand.skip_write_at = pos;
    const ParityVerdict v = ParityComparison::compare(ref, cand, probe_, ParityConfig{});
    ASSERT_EQ(v.status, ParityVerdict::Status::Rejected);
    EXPECT_EQ(v.failed_metric, "finite");
    EXPECT_EQ(v.failed_at, pos == 7 ? "position 7/64" : "step 1/3");
  }
}

TEST_F(GateTest, SmallHonestNoisePasses) {
  std::mt19937 rng(7);
  auto v = run([&](int, bool, float* l) {
    std::normal_distribution<float> nd(0.f, 0.01f);
    for (int i = 0; i < kVocab; ++i) l[i] += nd(rng);
  });
  EXPECT_EQ(v.status, ParityVerdict::Status::Passed) << v.failure_text();
  EXPECT_LT(v.worst_cosine, 1.0);
  EXPECT_GT(v.worst_cosine, 0.9999);
}

TEST_F(GateTest, DriftAfterFirstStepIsRejectedAtStepOne) {
  // Positions 0..63 are the prefill, 64 is step 0, 65 is step 1.
  auto v = run(drift_after(65, 3.f));
  ASSERT_EQ(v.status, ParityVerdict::Status::Rejected);
  EXPECT_EQ(v.failed_at, "step 1/3");
  EXPECT_EQ(v.failed_metric, "cosine");
  EXPECT_NE(v.failure_text().find("cosine vs CPU = "), std::string::npos);
  EXPECT_NE(v.failure_text().find("(< 0.99) at step 1/3"), std::string::npos);
}

TEST_F(GateTest, OneStepGateMissesTheSameDrift) {
  auto v = run(drift_after(65, 3.f), /*steps=*/1);
  EXPECT_EQ(v.status, ParityVerdict::Status::Passed);
}

TEST_F(GateTest, PrefillCorruptionNamesThePosition) {
  auto v = run([](int pos, bool prefill, float* l) {
    if (prefill && pos == 10)
      for (int i = 0; i < kVocab; ++i) l[i] = -l[i];
  });
  ASSERT_EQ(v.status, ParityVerdict::Status::Rejected);
  EXPECT_EQ(v.failed_at, "position 10/64");
}

TEST_F(GateTest, NaNIsRejectedEvenWhenEverythingElseMatches) {
  auto v = run([](int pos, bool, float* l) {
    if (pos == 64) l[3] = NAN;
  });
  ASSERT_EQ(v.status, ParityVerdict::Status::Rejected);
  EXPECT_EQ(v.failed_metric, "finite");
  EXPECT_EQ(v.failed_at, "step 0/3");
  auto inf = run([](int pos, bool, float* l) {
    if (pos == 5) l[0] = INFINITY;
  });
  EXPECT_EQ(inf.status, ParityVerdict::Status::Rejected);
}

TEST_F(GateTest, ClearTopOneFlipRejectsButACloseCallDoesNot) {
  // Swap the reference's top-1 and top-2 at one step. With a clear margin this is a defect; with
  // a margin under top1_margin it is honest noise. Cosine and KL stay within bounds because only
  // two logits move by a small amount, so the top-1 rule is what decides.
  auto swap_top = [](float want_margin) {
    return [=](int pos, bool, float* l) {
      if (pos != 65) return;
      int a = 0;
      for (int i = 1; i < kVocab; ++i)
        if (l[i] > l[a]) a = i;
      int b = a == 0 ? 1 : 0;
      for (int i = 0; i < kVocab; ++i)
        if (i != a && l[i] > l[b]) b = i;
      // Make the reference margin exactly want_margin is impossible here (the reference is the
      // unperturbed function), so move a just below b when the real margin is small enough.
      (void)want_margin;
      std::swap(l[a], l[b]);
    };
  };
  ScriptedBackend ref(model_, "cpu-ref");
  std::vector<float> logits(size_t(64) * kVocab);
  ref.forward(probe_, logits.data(), true);
  std::vector<float> last(logits.end() - kVocab, logits.end());
  int32_t t0 = argmax(last);
  std::vector<float> s0(kVocab), s1(kVocab);
  ref.forward({&t0, 1}, s0.data(), false);
  int32_t t1 = argmax(s0);
  ref.forward({&t1, 1}, s1.data(), false);
  auto cmp = compare_logits(s1, s1);
  double margin = cmp.ref_margin;

  ParityConfig cfg;
  ScriptedBackend r2(model_, "cpu-ref"), c2(model_, "cand", swap_top(0));
  cfg.cosine_min = 0.0;  // isolate the top-1 rule
  cfg.kl_max = 1e9;
  cfg.top1_margin = margin / 2;  // the real margin is clear
  auto v = ParityComparison::compare(r2, c2, probe_, cfg);
  ASSERT_EQ(v.status, ParityVerdict::Status::Rejected);
  EXPECT_EQ(v.failed_metric, "top-1 margin");
  EXPECT_EQ(v.failed_at, "step 1/3");

  ScriptedBackend r3(model_, "cpu-ref"), c3(model_, "cand", swap_top(0));
  cfg.top1_margin = margin * 2;  // now the same flip is a close call
  EXPECT_EQ(ParityComparison::compare(r3, c3, probe_, cfg).status, ParityVerdict::Status::Passed);
}

TEST_F(GateTest, FullTableModeKeepsGoingAfterAFailure) {
  ScriptedBackend ref(model_, "cpu-ref");
  ScriptedBackend cand(model_, "cand", drift_after(65, 3.f));
  ParityConfig cfg;
  auto v = ParityComparison::compare(ref, cand, probe_, cfg, /*stop_at_first_failure=*/false);
  EXPECT_EQ(v.status, ParityVerdict::Status::Rejected);
  EXPECT_EQ(v.rows.size(), 67u);
  EXPECT_EQ(v.failed_at, "step 1/3");  // the first failure is the one reported
}

TEST(ParityConfigTest, StepsOutsideOneToSixteenAreUsageErrors) {
  for (const char* bad : {"0", "17", "-1", "abc", "3x", "", " 3", "1e1", "99999999999999999999"})
    EXPECT_THROW(parse_parity_steps(bad, "LOCKSTEP_PARITY_STEPS"), InputError) << bad;
  EXPECT_EQ(parse_parity_steps("1", "x"), 1);
  EXPECT_EQ(parse_parity_steps("16", "x"), 16);
  try {
    parse_parity_steps("17", "LOCKSTEP_PARITY_STEPS");
  } catch (const InputError& e) {
    EXPECT_EQ(e.exit_code(), kExitBadInput);
    EXPECT_NE(std::string(e.what()).find("LOCKSTEP_PARITY_STEPS"), std::string::npos);
  }
}

TEST(ParityConfigTest, PolicyNames) {
  EXPECT_EQ(parse_parity_policy("auto"), ParityPolicy::Auto);
  EXPECT_EQ(parse_parity_policy("strict"), ParityPolicy::Strict);
  EXPECT_EQ(parse_parity_policy("off"), ParityPolicy::Off);
  EXPECT_THROW(parse_parity_policy("on"), InputError);
}

}  // namespace
}  // namespace lockstep
