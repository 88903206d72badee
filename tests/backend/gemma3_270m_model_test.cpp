// A real Gemma 3 270M (Q4_K_M, from scripts/get-gemma3-270m.sh) against llama.cpp's greedy
// continuations and top-8 logits in ../shared/reference/gemma3-270m (see its README). The model
// is not part of ../shared: without it these tests skip visibly; the reference data is, and a
// missing reference fails.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "backend/cpu/reference_backend.h"
#include "backend/fast_compare.h"
#include "backend/shared_data.h"
#include "common/model_paths.h"
#include "parity/gate.h"

namespace lockstep::backend_test {
namespace {

using nlohmann::json;

// llama.cpp's CPU backend quantizes the activations to 8 bits before every Q4_K/Q6_K product;
// lockstep's reference keeps them in float. On stories260K that path difference alone moves
// Q8_0 logits by up to 0.44 (../shared/reference/README.md). Measured here (printed): see
// kLogitTolerance's use below; 1.0 covers it with room on logits of magnitude ~30, and a greedy
// choice can only flip when llama.cpp's top-2 margin is below twice that.
constexpr double kLogitTolerance = 1.0;
constexpr double kClearMargin = 2 * kLogitTolerance;

std::vector<int32_t> ids(const json& j) {
  return j.get<std::vector<int32_t>>();
}

class Gemma3Real : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = test::gemma3_270m_path();
    if (path_.empty())
      GTEST_SKIP() << "Gemma 3 270M is absent: run scripts/get-gemma3-270m.sh to fetch it";
    ref_ = load_json(kReference + "gemma3-270m/greedy-top8.json");
  }
  std::string path_;
  json ref_;
};

TEST_F(Gemma3Real, ReferenceMatchesLlamaCppTopLogitsAndGreedyTokens) {
  Model model = Model::load(path_);
  ASSERT_EQ(model.hp.arch, Arch::Gemma3);
  ReferenceBackend b(model, 2, 256);
  const int64_t V = model.hp.n_vocab;
  double worst = 0;
  int checked = 0, steps = 0;
  for (const auto& r : ref_.at("results")) {
    const auto prompt = ids(r.at("prompt_tokens"));
    const auto gen = ids(r.at("generated_tokens"));
    std::vector<int32_t> seq = prompt;
    seq.insert(seq.end(), gen.begin(), gen.end());
    std::vector<float> logits(seq.size() * size_t(V));
    b.truncate(0);
    b.forward(seq, logits.data(), true);
    const auto& st = r.at("steps");
    for (size_t i = 0; i < st.size(); ++i, ++steps) {
      const float* row = logits.data() + (prompt.size() - 1 + i) * size_t(V);
      const auto& top = st[i].at("top");
      for (const auto& e : top) {
        const double d = std::fabs(double(row[e[0].get<int>()]) - e[1].get<double>());
        worst = std::isnan(d) ? INFINITY : std::max(worst, d);
        EXPECT_LE(d, kLogitTolerance) << "step " << i << " of \""
                                      << r.at("prompt").get<std::string>() << "\"";
      }
      if (top[0][1].get<double>() - top[1][1].get<double>() > kClearMargin) {
        ++checked;
        EXPECT_EQ(argmax(row, V), gen[i]) << "step " << i << " of \""
                                          << r.at("prompt").get<std::string>() << "\"";
      }
    }
  }
  std::printf("[ gemma-3-270m ] top-8 logits vs llama.cpp: max |d| %.3g (tolerance %.3g); greedy "
              "equal at %d clear-margin steps of %d\n",
              worst, kLogitTolerance, checked, steps);
  EXPECT_GT(checked, steps / 2);
}

TEST_F(Gemma3Real, FastPathPassesTheGate) {
  Model model = Model::load(path_);
  OpenRequest request;
  request.backend = "cpu";
  request.options.threads = 2;
  request.options.n_ctx = 128;
  ParityConfig config;
  config.policy = ParityPolicy::Strict;
  const auto probe = ids(ref_.at("results")[0].at("prompt_tokens"));
  ServingBackend served = ParityGate::open(model, request, config, probe, true);
  ASSERT_EQ(served.verdict.status, ParityVerdict::Status::Passed) << served.verdict.failure_text();
  std::printf("[ gemma-3-270m gate ] worst cosine %.7f, worst KL %.3g\n",
              served.verdict.worst_cosine, served.verdict.worst_kl);
}

}  // namespace
}  // namespace lockstep::backend_test
