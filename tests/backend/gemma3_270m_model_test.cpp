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

// llama.cpp's run differs from lockstep's reference in three ways that all matter for Gemma's
// large activations (embeddings times sqrt(640), post norms): it quantizes the activations to 8
// bits before every Q4_K/Q6_K product (on stories260K Q8_0 that alone moves logits by up to
// 0.44, ../shared/reference/README.md), stores K/V in F16 and attends in F16 (flash attention),
// and takes GELU from a table of F16 values. Measured (printed by the test): the reference is
// within 1.47 of llama.cpp's top-8 logits (83 of 1024 entries above 0.5, logits of magnitude
// ~20-40), the fast path within 2.13; at every step where llama.cpp's top-2 margin is clear both
// choose llama.cpp's token. Which of the three differences dominates is not pinned down here
// (the fast path, which also quantizes activations, is not closer), so this bound is loose: 2.5,
// and a flip is only excluded past a margin of twice that. The tight architecture checks are the
// tiny models' (arch_reference_model_test.cpp, 0.03).
constexpr double kLogitTolerance = 2.5;
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

struct Agreement {
  double worst = 0;
  int over_half = 0, entries = 0, checked = 0, steps = 0;
};

// Teacher-forces each prompt + llama.cpp's continuation; checks the top 8 of every step within
// the tolerance and the greedy token wherever llama.cpp's margin is clear.
template <class B>
Agreement compare(B& b, const json& ref) {
  Agreement a;
  const int64_t V = b.model().hp.n_vocab;
  for (const auto& r : ref.at("results")) {
    const auto prompt = ids(r.at("prompt_tokens"));
    const auto gen = ids(r.at("generated_tokens"));
    std::vector<int32_t> seq = prompt;
    seq.insert(seq.end(), gen.begin(), gen.end());
    std::vector<float> logits(seq.size() * size_t(V));
    b.truncate(0);
    b.forward(seq, logits.data(), true);
    const auto& st = r.at("steps");
    for (size_t i = 0; i < st.size(); ++i, ++a.steps) {
      const float* row = logits.data() + (prompt.size() - 1 + i) * size_t(V);
      const auto& top = st[i].at("top");
      for (const auto& e : top) {
        const double d = std::fabs(double(row[e[0].get<int>()]) - e[1].get<double>());
        a.worst = std::isnan(d) ? INFINITY : std::max(a.worst, d);
        a.over_half += !(d <= 0.5);
        ++a.entries;
        EXPECT_LE(d, kLogitTolerance) << "step " << i << " of \""
                                      << r.at("prompt").get<std::string>() << "\"";
      }
      if (top[0][1].get<double>() - top[1][1].get<double>() > kClearMargin) {
        ++a.checked;
        EXPECT_EQ(argmax(row, V), gen[i]) << "step " << i << " of \""
                                          << r.at("prompt").get<std::string>() << "\"";
      }
    }
  }
  return a;
}

TEST_F(Gemma3Real, ReferenceAndFastPathMatchLlamaCppTopLogitsAndGreedyTokens) {
  Model model = Model::load(path_);
  ASSERT_EQ(model.hp.arch, Arch::Gemma3);
  ReferenceBackend ref(model, 2, 256);
  const Agreement a = compare(ref, ref_);
  auto fast = make_fast(model, 2, 256);
  const Agreement f = compare(*fast, ref_);
  for (const auto& [name, x] : {std::pair{"cpu-ref", a}, std::pair{"cpu", f}})
    std::printf("[ gemma-3-270m %s ] top-8 logits vs llama.cpp: max |d| %.3g (tolerance %.3g), "
                "%d of %d above 0.5; greedy equal at %d clear-margin steps of %d\n",
                name, x.worst, kLogitTolerance, x.over_half, x.entries, x.checked, x.steps);
  EXPECT_GE(a.checked, 10) << "too few clear-margin steps were compared";
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
