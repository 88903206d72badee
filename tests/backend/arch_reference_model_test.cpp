// The architectures beyond llama/qwen2 (qwen3, llama with Llama 3.1 rope factors, gemma3, gemma2)
// on the tiny random-weight models of ../shared/models/arch, against what llama.cpp computed on
// them (../shared/reference/arch, see its README): the reference backend must give llama.cpp's
// top logits within kLogitTolerance and its greedy tokens wherever llama.cpp's top-2 margin is
// clearly above that; the fast CPU path must pass the parity gate on each model and follow the
// reference's greedy tokens while its margin is clear. Missing shared files fail, never skip.
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
#include "parity/gate.h"

namespace lockstep::backend_test {
namespace {

using nlohmann::json;

// The arch reference names no cache type or attention path, so llama.cpp ran with its defaults:
// an F16 KV cache and its CPU flash-attention kernel, which computes in F16. On stories260K that
// default run is 0.0186 from float32 implementations, against 1e-4 with an F32 cache and plain
// attention (../shared/reference/README.md). lockstep's reference keeps K and V in float32, so
// the same gap is expected here. Measured worst (printed by the test): 0.012 over all 4 prompts
// x 24 steps x top 8, logits of magnitude ~20, for the reference and the fast path alike. 0.03
// leaves 2.5x headroom, while leaving out any architecture's own stage (a norm, the rope factors
// or base, the window, the embedding scale, the activation, the final cap) moves logits by 2 or
// more (WrongVariantsAreFarOutsideTheTolerance).
constexpr double kLogitTolerance = 0.03;
// A greedy choice can only flip when the top-2 margin is below twice the largest logit error.
constexpr double kClearMargin = 2 * kLogitTolerance;

struct ArchCase {
  const char* model;
  const char* arch;
};
const ArchCase kArchCases[] = {
    {"tiny-qwen3", "qwen3"},
    {"tiny-llama3-ropefreqs", "llama"},
    {"tiny-gemma3", "gemma3"},
    {"tiny-gemma2", "gemma2"},
};

std::string arch_model(const char* name) {
  return std::string("arch/") + name + ".gguf";
}
json arch_reference(const char* name) {
  return load_json(kReference + "arch/" + name + ".json");
}

std::vector<int32_t> ids(const json& j) {
  return j.get<std::vector<int32_t>>();
}

template <class B>
std::vector<float> teacher_forced(B& b, const std::vector<int32_t>& tokens) {
  std::vector<float> logits(tokens.size() * size_t(b.model().hp.n_vocab));
  b.truncate(0);
  b.forward(tokens, logits.data(), true);
  return logits;
}

struct Agreement {
  double worst = 0;  // largest |lockstep - llama.cpp| over the top-8 entries of every step
  int greedy_checked = 0, greedy_equal = 0, steps = 0;
};

// Teacher-forces prompt + llama.cpp's continuation and compares each step's top 8 (by id) with
// llama.cpp's; at steps with a clear margin the argmax must be llama.cpp's token.
template <class B>
Agreement compare_with_llama_cpp(B& b, const json& ref) {
  Agreement a;
  const int64_t V = b.model().hp.n_vocab;
  for (const auto& r : ref.at("results")) {
    const auto prompt = ids(r.at("prompt_tokens"));
    const auto gen = ids(r.at("generated_tokens"));
    std::vector<int32_t> seq = prompt;
    seq.insert(seq.end(), gen.begin(), gen.end());
    const auto logits = teacher_forced(b, seq);
    const auto& steps = r.at("steps");
    for (size_t i = 0; i < steps.size(); ++i) {
      const float* row = logits.data() + (prompt.size() - 1 + i) * size_t(V);
      const auto& top = steps[i].at("top");
      for (const auto& e : top) {
        const double d = std::fabs(double(row[e[0].get<int>()]) - e[1].get<double>());
        a.worst = std::isnan(d) ? INFINITY : std::max(a.worst, d);
        EXPECT_LE(d, kLogitTolerance) << "step " << i << " token " << e[0] << " of \""
                                      << r.at("prompt").get<std::string>() << "\"";
      }
      ++a.steps;
      const double margin = top[0][1].get<double>() - top[1][1].get<double>();
      if (margin > kClearMargin) {
        ++a.greedy_checked;
        const int32_t got = argmax(row, V);
        a.greedy_equal += got == gen[i];
        EXPECT_EQ(got, gen[i]) << "step " << i << " of \"" << r.at("prompt").get<std::string>()
                               << "\", llama.cpp margin " << margin;
      }
    }
  }
  return a;
}

TEST(ArchReference, TeacherForcedTopLogitsAndGreedyMatchLlamaCpp) {
  for (const ArchCase& c : kArchCases) {
    SCOPED_TRACE(c.model);
    Model model = load_model(arch_model(c.model));
    EXPECT_EQ(model.hp.arch_name, c.arch);
    ReferenceBackend b(model, 2, 256);
    const json ref = arch_reference(c.model);
    ASSERT_EQ(ref.at("results").size(), 4u);
    const Agreement a = compare_with_llama_cpp(b, ref);
    std::printf(
        "[ %s ] top-8 logits vs llama.cpp: max |d| %.3g (tolerance %.3g); greedy equal at %d/%d "
        "clear-margin steps of %d\n",
        c.model, a.worst, kLogitTolerance, a.greedy_equal, a.greedy_checked, a.steps);
    EXPECT_GT(a.greedy_checked, 80) << "too few clear-margin steps were compared";
  }
}

// Free-running greedy generation (the prompt in one call, then one token per call: the KV cache
// and the sliding window as a run uses them) gives llama.cpp's tokens up to the first step whose
// llama.cpp margin is not clear.
TEST(ArchReference, FreeRunningGreedyMatchesLlamaCpp) {
  for (const ArchCase& c : kArchCases) {
    SCOPED_TRACE(c.model);
    Model model = load_model(arch_model(c.model));
    ReferenceBackend b(model, 2, 256);
    const json ref = arch_reference(c.model);
    std::string per_prompt;
    for (const auto& r : ref.at("results")) {
      const auto want = ids(r.at("generated_tokens"));
      const auto got = greedy(b, ids(r.at("prompt_tokens")), int(want.size()));
      size_t s = 0;
      const auto& steps = r.at("steps");
      for (; s < want.size(); ++s) {
        const auto& top = steps[s].at("top");
        if (top[0][1].get<double>() - top[1][1].get<double>() <= kClearMargin) break;
        EXPECT_EQ(got[s], want[s])
            << "step " << s << " of \"" << r.at("prompt").get<std::string>() << "\"";
      }
      size_t equal = 0;
      while (equal < want.size() && got[equal] == want[equal]) ++equal;
      per_prompt += (per_prompt.empty() ? "" : ", ") + std::to_string(equal) + "/" +
                    std::to_string(want.size());
    }
    std::printf("[ %s ] free-running greedy tokens equal to llama.cpp's, per prompt: %s\n", c.model,
                per_prompt.c_str());
  }
}

// The tolerance has teeth: each architecture's distinctive stage, left out, moves the top logits
// far beyond it. Variants are made by editing the loaded hyperparameters.
TEST(ArchReference, WrongVariantsAreFarOutsideTheTolerance) {
  struct Variant {
    const char* model;
    const char* what;
    void (*edit)(HParams&);
  };
  const Variant variants[] = {
      {"tiny-qwen3", "no q/k norm", [](HParams& hp) { hp.has_qk_norm = false; }},
      {"tiny-llama3-ropefreqs", "no rope factors", [](HParams& hp) { hp.has_rope_freqs = false; }},
      {"tiny-gemma3", "no sliding window", [](HParams& hp) { hp.sliding_window = 0; }},
      {"tiny-gemma3", "global rope base on sliding layers",
       [](HParams& hp) { hp.rope_freq_base_swa = hp.rope_freq_base; }},
      {"tiny-gemma3", "no embedding scale", [](HParams& hp) { hp.embd_scale = 1; }},
      {"tiny-gemma3", "SiLU instead of GELU",
       [](HParams& hp) { hp.ffn_act = FfnActivation::Silu; }},
      // Not "no attention soft-cap": this random model's attention scores stay far below the cap
      // of 50, where cap * tanh(s / cap) is s to within 1e-2 (ops_ref_test checks the cap itself).
      {"tiny-gemma2", "no final soft-cap", [](HParams& hp) { hp.final_softcap = 0; }},
      {"tiny-gemma2", "no sliding window", [](HParams& hp) { hp.sliding_window = 0; }},
  };
  for (const Variant& v : variants) {
    SCOPED_TRACE(std::string(v.model) + ": " + v.what);
    Model model = load_model(arch_model(v.model));
    v.edit(model.hp);
    ReferenceBackend b(model, 2, 256);
    const json ref = arch_reference(v.model);
    const int64_t V = model.hp.n_vocab;
    double worst = 0;
    for (const auto& r : ref.at("results")) {
      const auto prompt = ids(r.at("prompt_tokens"));
      const auto gen = ids(r.at("generated_tokens"));
      std::vector<int32_t> seq = prompt;
      seq.insert(seq.end(), gen.begin(), gen.end());
      const auto logits = teacher_forced(b, seq);
      for (size_t i = 0; i < gen.size(); ++i)
        for (const auto& e : r.at("steps")[i].at("top"))
          worst = std::max(
              worst,
              std::fabs(double(logits[(prompt.size() - 1 + i) * size_t(V) + e[0].get<size_t>()]) -
                        e[1].get<double>()));
    }
    std::printf("[ %s without: %s ] max |d| %.3g\n", v.model, v.what, worst);
    EXPECT_GT(worst, 10 * kLogitTolerance);
  }
}

// The fast CPU path: the parity gate accepts it on every architecture (strict policy), and it
// follows the reference's greedy tokens while the reference's margin is clear (F32 weights keep
// float activations; the F16 KV cache moves logits by about 1e-2 at most: 0.1, as for
// stories260K F32 in fast_backend_model_test.cpp).
TEST(ArchReference, FastPathPassesTheGateAndFollowsTheReference) {
  constexpr double kFastClearMargin = 0.1;
  for (const ArchCase& c : kArchCases) {
    SCOPED_TRACE(c.model);
    Model model = load_model(arch_model(c.model));
    const json ref = arch_reference(c.model);
    const auto& first = ref.at("results")[0];
    const auto probe = ids(first.at("prompt_tokens"));

    OpenRequest request;
    request.backend = "cpu";
    request.options.threads = 2;
    request.options.n_ctx = 256;
    ParityConfig config;
    config.policy = ParityPolicy::Strict;
    ServingBackend served = ParityGate::open(model, request, config, probe, true);
    ASSERT_EQ(served.verdict.status, ParityVerdict::Status::Passed)
        << served.verdict.failure_text();
    EXPECT_EQ(served.backend_used, "cpu");
    std::printf("[ %s gate ] worst cosine %.7f at %s, worst KL %.3g\n", c.model,
                served.verdict.worst_cosine, served.verdict.worst_cosine_at.c_str(),
                served.verdict.worst_kl);

    ReferenceBackend reference(model, 2, 256);
    auto fast = make_fast(model, 2, 256);
    const int64_t V = model.hp.n_vocab;
    // The fast path meets llama.cpp's logits within the same tolerance as the reference.
    const Agreement vs_llama = compare_with_llama_cpp(*fast, ref);
    std::printf("[ %s fast ] top-8 logits vs llama.cpp: max |d| %.3g\n", c.model, vs_llama.worst);
    int compared = 0;
    double worst_cos = 1;
    for (const auto& r : ref.at("results")) {
      const auto prompt = ids(r.at("prompt_tokens"));
      std::vector<double> margins;
      const auto want = greedy(reference, prompt, 24, &margins);
      const auto got = greedy(*fast, prompt, 24);
      for (size_t s = 0; s < want.size() && margins[s] > kFastClearMargin; ++s, ++compared)
        EXPECT_EQ(got[s], want[s]) << "step " << s << ", reference margin " << margins[s];
      std::vector<int32_t> seq = prompt;
      seq.insert(seq.end(), want.begin(), want.end());
      const auto a = teacher_forced(reference, seq);
      const auto b = teacher_forced(*fast, seq);
      for (size_t p = 0; p < seq.size(); ++p) {
        const double cs = cosine(b.data() + p * V, a.data() + p * V, V);
        EXPECT_GE(cs, 0.9999) << "position " << p;
        worst_cos = std::isnan(cs) ? cs : std::min(worst_cos, cs);
      }
    }
    std::printf(
        "[ %s fast ] %d greedy steps compared (all equal), teacher-forced cosine worst "
        "%.7f\n",
        c.model, compared, worst_cos);
    EXPECT_GT(compared, 0);
  }
}

// Token-by-token decode equals a batched prefill on every architecture (the sliding window and
// the per-layer rope are per position, not per call).
TEST(ArchReference, BatchedPrefillEqualsTokenByToken) {
  for (const ArchCase& c : kArchCases) {
    SCOPED_TRACE(c.model);
    Model model = load_model(arch_model(c.model));
    const json ref = arch_reference(c.model);
    const auto& r = ref.at("results")[2];
    auto tokens = ids(r.at("prompt_tokens"));
    const auto gen = ids(r.at("generated_tokens"));
    tokens.insert(tokens.end(), gen.begin(), gen.end());
    const size_t V = size_t(model.hp.n_vocab);
    ReferenceBackend batched(model, 2, 256), stepwise(model, 1, 256);
    const auto all = teacher_forced(batched, tokens);
    std::vector<float> one(V);
    double worst = 0;
    for (size_t i = 0; i < tokens.size(); ++i) {
      stepwise.forward(std::span(tokens.data() + i, 1), one.data(), false);
      worst = std::max(worst, max_abs_diff(one.data(), all.data() + i * V, int64_t(V)));
    }
    EXPECT_LE(worst, 1e-5) << "batched vs token-by-token";
  }
}

// The Vulkan backend implements only the llama/qwen2 forward pass (with the rope variants,
// Llama 3.1 frequency factors and YaRN, which are its host-side cos/sin table): forced on the
// other models it is refused with exit code 4 and a message naming the missing features (before
// any device is touched, so this holds with or without a GPU and in a build without Vulkan).
// Under auto the gate moves on to the next candidate (gate.cpp, as for a device that cannot take
// a model). The CUDA backend runs them all (tests/backend_cuda/arch_gpu_test.cpp); Vulkan's rows
// on the rope-factor model are tested in backend_vulkan_test.cpp.
TEST(ArchReference, VulkanRefusesWhatItDoesNotImplement) {
  int served = 0;
  for (const ArchCase& c : kArchCases) {
    SCOPED_TRACE(c.model);
    Model model = load_model(arch_model(c.model));
    ASSERT_FALSE(extended_features(model.hp).empty());
    HParams beyond_rope = model.hp;
    beyond_rope.has_rope_freqs = beyond_rope.rope_yarn = false;
    if (extended_features(beyond_rope).empty()) {
      EXPECT_NO_THROW(require_plain_architecture(model, "vulkan", /*rope_variants=*/true));
      ++served;
      continue;
    }
    OpenRequest request;
    request.backend = "vulkan";
    request.options.threads = 2;
    request.options.n_ctx = 64;
    const auto probe = ids(arch_reference(c.model).at("results")[0].at("prompt_tokens"));
    try {
      ParityGate::open(model, request, ParityConfig{}, probe, true);
      ADD_FAILURE() << "forced vulkan accepted a model it does not implement";
    } catch (const Error& e) {
      EXPECT_EQ(e.exit_code(), kExitDevice) << e.what();
      const std::string what = e.what();
      EXPECT_NE(what.find("the vulkan backend does not implement " + std::string(c.arch) + "'s "),
                std::string::npos)
          << what;
    }
  }
  EXPECT_EQ(served, 1) << "tiny-llama3-ropefreqs: rope frequency factors alone";
  // A plain llama model has nothing beyond the pass every backend implements.
  Model plain = load_model("stories260K.gguf");
  EXPECT_TRUE(extended_features(plain.hp).empty());
  EXPECT_NO_THROW(require_plain_architecture(plain, "vulkan"));
}

}  // namespace
}  // namespace lockstep::backend_test
