// Fidelity of the fast CPU path on real models (the stories260K files of ../shared in every
// quantization, SmolLM2-135M-Instruct Q4_1 when scripts/get-default-model.sh has fetched it, and
// Gemma 3 270M Q4_K_M when scripts/get-gemma3-270m.sh has):
//  * over the parity gate's own probe (the built-in text, 64 positions + 3 steps, every row
//    computed), the worst logit cosine against the reference is >= 0.999;
//  * the 20 short chat prompts of tests/data/chat_prompts.txt, answered greedily (64 tokens) by
//    both paths, give the reference's answer (every token up to the reference's first
//    end-of-generation token) for at least 19 of 20.
// Each model's numbers (and how often the reference's top-2 margin on the probe is under the
// gate's 0.5) are printed, for bench/NOTES.md. Missing stories260K files fail; a missing
// SmolLM2 or Gemma 3 skips visibly. Gemma 3 270M is a pretrained model without a chat template:
// it continues the prompts as plain text.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "backend/cpu/reference_backend.h"
#include "backend/fast_compare.h"
#include "backend/shared_data.h"
#include "common/model_paths.h"
#include "parity/comparison.h"
#include "parity/gate.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/vocab.h"

namespace lockstep::backend_test {
namespace {

constexpr int kAnswerTokens = 64;
constexpr int kMinEqualAnswers = 19;
constexpr double kMinProbeCosine = 0.999;

std::vector<std::string> chat_prompts() {
  const std::string path = "tests/data/chat_prompts.txt";
  std::ifstream in(path);
  if (!in) throw std::runtime_error("missing test data: " + path);
  std::vector<std::string> out;
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) out.push_back(line);
  return out;
}

// The gate's probe from its built-in text: the first 64 tokens (the text repeated if shorter).
std::vector<int32_t> builtin_probe(const tokenizer::Vocab& vocab, int positions) {
  const auto once = vocab.tokenize(builtin_probe_text(), true, false);
  std::vector<int32_t> probe;
  while (int(probe.size()) < positions)
    for (int32_t t : once)
      if (int(probe.size()) < positions) probe.push_back(t);
  return probe;
}

struct Fidelity {
  double worst_cosine = 1;
  int rows = 0, near_ties = 0, top1_flips = 0, near_tie_flips = 0;
  int equal_answers = 0, answers = 0;
  std::vector<std::string> differing;
};

// chat: render each prompt as a user turn with the vocabulary's template; else the plain text.
Fidelity measure(const std::string& path, bool chat) {
  const Model model = Model::load(path);
  const tokenizer::Vocab vocab = tokenizer::Vocab::load(path);
  // One thread each: results do not depend on the thread count (fast_backend_test.cpp), and a
  // loaded machine makes a spinning second thread slower than none.
  ReferenceBackend ref(model, 1, 512);
  auto fast = make_fast(model, 1, 512);
  Fidelity f;
  ParityConfig cfg;
  const std::vector<int32_t> probe = builtin_probe(vocab, cfg.positions);
  const ParityVerdict v = ParityComparison::compare(ref, *fast, probe, cfg, false);
  f.worst_cosine = v.worst_cosine;
  for (const ParityRow& row : v.rows) {
    ++f.rows;
    const bool near_tie = row.m.ref_margin < cfg.top1_margin;
    f.near_ties += near_tie;
    f.top1_flips += !row.m.top1_agree();
    f.near_tie_flips += near_tie && !row.m.top1_agree();
  }
  const tokenizer::ChatTemplate tmpl = tokenizer::ChatTemplate::for_vocab(vocab);
  for (const std::string& p : chat_prompts()) {
    const std::vector<int32_t> prompt =
        chat ? tokenizer::tokenize_chat(vocab, tmpl, {{"user", p}}, true)
             : vocab.tokenize(p, true, false);
    std::vector<double> margins;
    std::vector<int32_t> want = greedy(ref, prompt, kAnswerTokens, &margins);
    std::vector<int32_t> got = greedy(*fast, prompt, kAnswerTokens);
    const auto end =
        std::find_if(want.begin(), want.end(), [&](int32_t t) { return vocab.is_eog(t); });
    const size_t n = size_t(end - want.begin()) + (end == want.end() ? 0 : 1);
    ++f.answers;
    const auto diff = std::mismatch(want.begin(), want.begin() + long(n), got.begin());
    if (diff.first == want.begin() + long(n)) {
      ++f.equal_answers;
    } else {
      const size_t step = size_t(diff.first - want.begin());
      char where[96];
      std::snprintf(where, sizeof where, " (from step %zu, reference top-2 margin %.3f)", step,
                    margins[step]);
      f.differing.push_back(p + where);
    }
  }
  std::fprintf(stderr,
               "fidelity %s: probe worst cosine %.6f over %d rows; reference top-2 margin < %.1f "
               "on %d rows (top-1 flips %d, of them near ties %d); answers equal %d/%d\n",
               path.c_str(), f.worst_cosine, f.rows, cfg.top1_margin, f.near_ties, f.top1_flips,
               f.near_tie_flips, f.equal_answers, f.answers);
  for (const std::string& p : f.differing)
    std::fprintf(stderr, "  answer differs: %s\n", p.c_str());
  return f;
}

TEST(FastPathFidelity, Stories260KEveryQuantization) {
  for (const char* file : {"stories260K.gguf", "stories260K-Q8_0.gguf", "stories260K-Q4_0.gguf",
                           "stories260K-Q4_K_M.gguf"}) {
    SCOPED_TRACE(file);
    load_model(file);  // fails loudly when the shared file is missing
    const Fidelity f = measure(kModels + file, false);
    EXPECT_GE(f.worst_cosine, kMinProbeCosine);
    EXPECT_GE(f.equal_answers, kMinEqualAnswers) << "of " << f.answers;
  }
}

TEST(FastPathFidelity, SmolLM2ChatAnswers) {
  const std::string path = test::smollm2_path();
  if (path.empty())
    GTEST_SKIP() << "skipped: SmolLM2-135M-Instruct absent (scripts/get-default-model.sh)";
  const Fidelity f = measure(path, true);
  EXPECT_GE(f.worst_cosine, kMinProbeCosine);
  EXPECT_GE(f.equal_answers, kMinEqualAnswers) << "of " << f.answers;
}

TEST(FastPathFidelity, Gemma3_270mContinuations) {
  const std::string path = test::gemma3_270m_path();
  if (path.empty()) GTEST_SKIP() << "skipped: Gemma 3 270M absent (scripts/get-gemma3-270m.sh)";
  const Fidelity f = measure(path, false);
  EXPECT_GE(f.worst_cosine, kMinProbeCosine);
  EXPECT_GE(f.equal_answers, kMinEqualAnswers) << "of " << f.answers;
}

}  // namespace
}  // namespace lockstep::backend_test
