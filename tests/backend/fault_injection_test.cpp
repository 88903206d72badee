// The TEST KNOB of backend/fault.h as the reference backend implements it: each fault changes
// exactly what its specification says and nothing before.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "backend/cpu/reference_backend.h"
#include "backend/random_data.h"
#include "backend/synthetic_model.h"
#include "util/error.h"

namespace lockstep::backend_test {
namespace {

class FaultTest : public ::testing::Test {
 protected:
  void SetUp() override {
    seed_ = fresh_seed();
    std::mt19937_64 rng(seed_);
    SyntheticSpec spec;
    spec.arch = Arch::Qwen2;
    spec.seed = rng();
    model_ = std::make_unique<Model>(make_synthetic_model(spec));
    std::uniform_int_distribution<int32_t> d(0, int32_t(model_->hp.n_vocab - 1));
    tokens_.resize(12);
    for (auto& t : tokens_) t = d(rng);
  }
  size_t V() const { return size_t(model_->hp.n_vocab); }

  // Prefill of 8 (all logits), then 4 single steps: 5 calls, 12 rows.
  std::vector<std::vector<float>> run(ReferenceBackend& b) {
    std::vector<std::vector<float>> calls;
    calls.emplace_back(8 * V());
    b.forward(std::span(tokens_.data(), 8), calls.back().data(), true);
    for (size_t i = 8; i < 12; ++i) {
      calls.emplace_back(V());
      b.forward(std::span(tokens_.data() + i, 1), calls.back().data(), false);
    }
    return calls;
  }

  static double max_diff(const float* a, const float* b, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; ++i) m = std::max(m, double(std::fabs(a[i] - b[i])));
    return m;
  }

  uint64_t seed_ = 0;
  std::unique_ptr<Model> model_;
  std::vector<int32_t> tokens_;
};

TEST_F(FaultTest, KvDriftLeavesTheFirstCallsExactAndGrowsAfterwards) {
  SCOPED_TRACE(seed_trace(seed_));
  ReferenceBackend clean(*model_, 2, 32), faulty(*model_, 2, 32);
  FaultSpec f;
  f.kind = FaultSpec::KvDrift;
  f.magnitude = 0.05f;
  faulty.set_fault(f);
  auto want = run(clean);
  auto got = run(faulty);
  // Call 0 writes its entries unperturbed (drift x 0); call 1's logits are computed before its
  // own entries drift, and the entries of call 0 are exact.
  EXPECT_EQ(got[0], want[0]);
  EXPECT_EQ(got[1], want[1]);
  // From call 2 on, attention reads drifted entries (more of them, further off, each call).
  for (size_t call = 2; call < got.size(); ++call) {
    const double d = max_diff(got[call].data(), want[call].data(), V());
    EXPECT_GT(d, 0.0) << "call " << call;
    std::printf("[ kv-drift ] call %zu: max |logit change| %.3g\n", call, d);
  }
}

TEST_F(FaultTest, LayerCorruptChangesOutputOnlyFromItsPosition) {
  SCOPED_TRACE(seed_trace(seed_));
  // Layer 0: later positions attend to the corrupted state in layer 1, so every row from the
  // position on changes. Layer 1 (the last): nothing reads it but its own logits.
  for (int layer : {0, 1}) {
    SCOPED_TRACE("layer " + std::to_string(layer));
    ReferenceBackend clean(*model_, 2, 32), faulty(*model_, 2, 32);
    FaultSpec f;
    f.kind = FaultSpec::LayerCorrupt;
    f.magnitude = 0.5f;
    f.layer = layer;
    f.position = 5;
    faulty.set_fault(f);

    struct HiddenAt : LayerObserver {
      int layer = 0;
      std::vector<float> h;
      void on_hidden(int l, const char* stage, int p, std::span<const float> hidden) override {
        if (l == layer && p == 5 && std::string(stage) == "ffn_out")
          h.assign(hidden.begin(), hidden.end());
      }
    } clean_obs, faulty_obs;
    clean_obs.layer = faulty_obs.layer = layer;
    clean.set_observer(&clean_obs);
    faulty.set_observer(&faulty_obs);

    auto want = run(clean);
    auto got = run(faulty);
    for (size_t row = 0; row < 8; ++row) {
      const double d = max_diff(got[0].data() + row * V(), want[0].data() + row * V(), V());
      if (row < 5 || (layer == 1 && row > 5)) {
        EXPECT_EQ(d, 0.0) << "row " << row;
      } else {
        EXPECT_GT(d, 0.0) << "row " << row;
      }
    }
    for (size_t call = 1; call < got.size(); ++call) {
      if (layer == 0) {
        EXPECT_NE(got[call], want[call]) << "call " << call;
      } else {
        EXPECT_EQ(got[call], want[call]) << "call " << call;
      }
    }
    // The observed layer output is off by exactly +-magnitude in every element.
    ASSERT_EQ(clean_obs.h.size(), size_t(model_->hp.n_embd));
    ASSERT_EQ(faulty_obs.h.size(), clean_obs.h.size());
    int positive = 0;
    for (size_t i = 0; i < clean_obs.h.size(); ++i) {
      const float d = faulty_obs.h[i] - clean_obs.h[i];
      EXPECT_NEAR(std::fabs(d), 0.5f, 1e-5f) << "element " << i;
      positive += d > 0;
    }
    EXPECT_GT(positive, 0);
    EXPECT_LT(positive, int(clean_obs.h.size()));
  }
}

TEST_F(FaultTest, NaNAppearsInTheFirstRowAtOrAfterItsPositionOnly) {
  SCOPED_TRACE(seed_trace(seed_));
  ReferenceBackend b(*model_, 2, 32);
  FaultSpec f;
  f.kind = FaultSpec::NaN;
  f.position = 9;
  b.set_fault(f);
  auto calls = run(b);  // calls: [0..7], 8, 9, 10, 11
  auto count_nan = [](const std::vector<float>& v) {
    return std::count_if(v.begin(), v.end(), [](float x) { return std::isnan(x); });
  };
  EXPECT_EQ(count_nan(calls[0]), 0);
  EXPECT_EQ(count_nan(calls[1]), 0);
  EXPECT_EQ(count_nan(calls[2]), int64_t(V()));  // position 9
  EXPECT_EQ(count_nan(calls[3]), 0);
  EXPECT_EQ(count_nan(calls[4]), 0);

  // Inside a prefill with every row returned, the row of `position` is hit.
  ReferenceBackend p(*model_, 2, 32);
  f.position = 3;
  p.set_fault(f);
  std::vector<float> rows(8 * V());
  p.forward(std::span(tokens_.data(), 8), rows.data(), true);
  for (size_t r = 0; r < 8; ++r) {
    const auto nan_in_row = std::count_if(rows.begin() + r * V(), rows.begin() + (r + 1) * V(),
                                          [](float x) { return std::isnan(x); });
    EXPECT_EQ(nan_in_row, r == 3 ? int64_t(V()) : 0) << "row " << r;
  }
}

TEST_F(FaultTest, NoneIsBitIdenticalAndBadSpecsAreRejected) {
  ReferenceBackend clean(*model_, 2, 32), none(*model_, 2, 32);
  none.set_fault(FaultSpec{});
  EXPECT_EQ(run(clean), run(none));

  FaultSpec bad;
  bad.kind = FaultSpec::LayerCorrupt;
  bad.layer = 2;  // the model has layers 0 and 1
  EXPECT_THROW(none.set_fault(bad), InputError);
  bad.layer = 0;
  bad.position = -1;
  EXPECT_THROW(none.set_fault(bad), InputError);
  bad.position = 0;
  bad.magnitude = std::nanf("");
  EXPECT_THROW(none.set_fault(bad), InputError);
}

}  // namespace
}  // namespace lockstep::backend_test
