// ReferenceBackend on the real stories260K models against llama.cpp's outputs in
// ../shared/reference (see its README for how they were made and how close an engine can be).
// Missing shared files make these tests fail, never skip.
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

namespace lockstep::backend_test {
namespace {

using nlohmann::json;

// All logits of `tokens` from one forward call.
std::vector<float> teacher_forced(ReferenceBackend& b, const std::vector<int32_t>& tokens) {
  std::vector<float> logits(tokens.size() * size_t(b.model().hp.n_vocab));
  b.truncate(0);
  b.forward(tokens, logits.data(), true);
  return logits;
}

struct LogitDiff {
  double max_abs = 0, mean_abs = 0, scale = 0;
  int argmax_equal = 0, rows = 0;
};

LogitDiff compare_logits(const std::vector<float>& got, const json& ref) {
  LogitDiff d;
  const auto& rows = ref.at("logits");
  const size_t V = ref.at("n_vocab").get<size_t>();
  std::vector<float> want(V);
  double sum = 0;
  for (size_t r = 0; r < rows.size(); ++r) {
    for (size_t i = 0; i < V; ++i) {
      want[i] = rows[r][i].get<float>();
      const double e = std::fabs(double(got[r * V + i]) - double(want[i]));
      d.max_abs = std::isnan(e) ? INFINITY : std::max(d.max_abs, e);
      d.scale = std::max(d.scale, std::fabs(double(want[i])));
      sum += e;
    }
    d.argmax_equal += argmax(got.data() + r * V, int64_t(V)) == argmax(want.data(), int64_t(V));
  }
  d.rows = int(rows.size());
  d.mean_abs = sum / double(rows.size() * V);
  return d;
}

std::vector<int32_t> ids(const json& j) {
  return j.get<std::vector<int32_t>>();
}

// ---- F32: exact greedy tokens and tight logits ---------------------------------------------

TEST(ReferenceBackendStories, F32GreedyEqualsLlamaCppForAllPrompts) {
  Model model = load_model("stories260K.gguf");
  ReferenceBackend b(model, 2, 512);
  const json ref = load_json(kReference + "greedy-stories260K.json");
  ASSERT_EQ(ref.at("results").size(), 4u);
  for (const auto& r : ref.at("results")) {
    std::vector<double> margins;
    auto got = greedy(b, ids(r.at("prompt_ids")), 64, &margins);
    const double margin = *std::min_element(margins.begin(), margins.end());
    EXPECT_EQ(got, ids(r.at("generated_ids")))
        << "prompt \"" << r.at("prompt").get<std::string>() << "\"";
    std::printf("[ f32 greedy ] \"%s\": %s, own min top-2 margin %.4f (llama.cpp %.4f)\n",
                r.at("prompt").get<std::string>().c_str(),
                got == ids(r.at("generated_ids")) ? "64/64 equal" : "DIFFERENT", margin,
                r.at("min_top2_margin").get<double>());
  }
}

// Both sides compute in float32 with an F32 KV cache and plain attention; they differ only in
// summation order and in how RoPE angles are rounded. llama2.c, a third float32 implementation,
// agrees with this file to 1.3e-5 (reference README); 1e-4 leaves 7x headroom for our different
// (not worse) rounding while any real mistake (a wrong position, norm or head) moves logits by
// orders of magnitude more.
TEST(ReferenceBackendStories, F32TeacherForcedLogitsMatchKvF32NoFlashAttention) {
  Model model = load_model("stories260K.gguf");
  ReferenceBackend b(model, 2, 512);
  const json ref = load_json(kReference + "logits-stories260K.kvf32-nofa.json");
  auto got = teacher_forced(b, ids(ref.at("tokens")));
  LogitDiff d = compare_logits(got, ref);
  std::printf(
      "[ f32 logits vs kvf32-nofa ] max |d| %.3g, mean |d| %.3g, logit scale %.3g, argmax %d/%d\n",
      d.max_abs, d.mean_abs, d.scale, d.argmax_equal, d.rows);
  EXPECT_LE(d.max_abs, 1e-4);
  EXPECT_EQ(d.argmax_equal, d.rows);

  // llama.cpp's default run stores K/V in F16 and attends in F16: about 0.02 away (README).
  const json def = load_json(kReference + "logits-stories260K.json");
  LogitDiff dd = compare_logits(got, def);
  std::printf("[ f32 logits vs default f16-kv ] max |d| %.3g, mean |d| %.3g\n", dd.max_abs,
              dd.mean_abs);
  EXPECT_LE(dd.max_abs, 0.05);
}

TEST(ReferenceBackendStories, BatchedPrefillEqualsTokenByToken) {
  for (const char* file : {"stories260K.gguf", "stories260K-Q4_K_M.gguf"}) {
    SCOPED_TRACE(file);
    Model model = load_model(file);
    const json ref = load_json(kReference + "logits-stories260K.kvf32-nofa.json");
    const auto tokens = ids(ref.at("tokens"));
    const size_t V = size_t(model.hp.n_vocab);
    ReferenceBackend batched(model, 2, 512), stepwise(model, 1, 512);
    auto all = teacher_forced(batched, tokens);
    std::vector<float> one(V);
    double worst = 0, scale = 0;
    for (size_t i = 0; i < tokens.size(); ++i) {
      stepwise.forward(std::span(tokens.data() + i, 1), one.data(), false);
      for (size_t v = 0; v < V; ++v) {
        const double e = std::fabs(double(one[v]) - double(all[i * V + v]));
        worst = std::isnan(e) ? INFINITY : std::max(worst, e);
        scale = std::max(scale, std::fabs(double(all[i * V + v])));
      }
    }
    std::printf("[ %s ] batched vs token-by-token: max |d| %.3g (logit scale %.3g)\n", file, worst,
                scale);
    EXPECT_LE(worst, 1e-5 * scale);
  }
}

// ---- Quantized models: closeness, measured and loosely bounded ----------------------------
//
// llama.cpp quantizes the activations to 8 bits before each quantized matmul; lockstep's
// reference does not (float activations, dequantized weights). The reference README measures
// that such path changes alone move Q8_0 logits by up to 0.44 and flip greedy choices where the
// top-2 margin is small. So: a step whose llama.cpp top-2 margin exceeds kClearMargin must get
// the same argmax (a margin can move by at most twice the largest logit change, and 2 x 0.6
// covers the observed 0.44 with room), and overall at least 90% of the teacher-forced steps must
// agree.
constexpr double kClearMargin = 1.2;

struct QuantCase {
  const char* model;
  const char* greedy;
};
const QuantCase kQuantCases[] = {
    {"stories260K-Q8_0.gguf", "greedy-stories260K-Q8_0.json"},
    {"stories260K-Q4_0.gguf", "greedy-stories260K-Q4_0.json"},
    {"stories260K-Q4_K_M.gguf", "greedy-stories260K-Q4_K_M.json"},
};

TEST(ReferenceBackendStories, QuantizedGreedyAgreesWithLlamaCppWhereTheMarginIsClear) {
  for (const QuantCase& c : kQuantCases) {
    SCOPED_TRACE(c.model);
    Model model = load_model(c.model);
    ReferenceBackend b(model, 2, 512);
    const json ref = load_json(kReference + c.greedy);
    const int64_t V = model.hp.n_vocab;
    int agree = 0, steps = 0, clear = 0, clear_agree = 0;
    std::string first_divergence;
    for (const auto& r : ref.at("results")) {
      const auto prompt = ids(r.at("prompt_ids"));
      const auto want = ids(r.at("generated_ids"));
      const auto margins = r.at("top2_margins").get<std::vector<double>>();
      // Teacher-forced on llama.cpp's own sequence, so one early flip does not hide the rest.
      std::vector<int32_t> seq = prompt;
      seq.insert(seq.end(), want.begin(), want.end() - 1);
      auto logits = teacher_forced(b, seq);
      for (size_t s = 0; s < want.size(); ++s) {
        const int32_t mine = argmax(logits.data() + (prompt.size() - 1 + s) * size_t(V), V);
        ++steps;
        agree += mine == want[s];
        if (margins[s] > kClearMargin) {
          ++clear;
          clear_agree += mine == want[s];
          EXPECT_EQ(mine, want[s]) << "step " << s << " of \"" << r.at("prompt").get<std::string>()
                                   << "\", llama.cpp margin " << margins[s];
        }
      }
      // Free-running greedy: where our own continuation first leaves llama.cpp's (reported only).
      auto free_run = greedy(b, prompt, 64);
      size_t k = 0;
      while (k < want.size() && free_run[k] == want[k]) ++k;
      first_divergence += (first_divergence.empty() ? "" : ", ") +
                          (k == want.size() ? std::string("none") : std::to_string(k));
    }
    std::printf(
        "[ %s ] teacher-forced argmax agreement %d/%d (%.1f%%), clear-margin steps %d/%d, "
        "free-running first divergence per prompt: %s\n",
        c.model, agree, steps, 100.0 * agree / steps, clear_agree, clear, first_divergence.c_str());
    EXPECT_GE(agree, int(std::ceil(0.9 * steps)));
  }
}

TEST(ReferenceBackendStories, Q8_0LogitsCloseToLlamaCppKvF32NoFlashAttention) {
  Model model = load_model("stories260K-Q8_0.gguf");
  ReferenceBackend b(model, 2, 512);
  const json ref = load_json(kReference + "logits-stories260K-Q8_0.kvf32-nofa.json");
  auto got = teacher_forced(b, ids(ref.at("tokens")));
  LogitDiff d = compare_logits(got, ref);
  std::printf(
      "[ q8_0 logits vs kvf32-nofa ] max |d| %.3g, mean |d| %.3g, logit scale %.3g, argmax %d/%d\n",
      d.max_abs, d.mean_abs, d.scale, d.argmax_equal, d.rows);
  // llama.cpp's own Q8_0 runs differ from each other by up to 0.44 and from FP32 by 0.35-0.40
  // (README): twice that, 1.0, still catches every structural error, which moves logits by units.
  EXPECT_LE(d.max_abs, 1.0);
  EXPECT_GE(d.argmax_equal, int(std::ceil(0.9 * d.rows)));
}

}  // namespace
}  // namespace lockstep::backend_test
