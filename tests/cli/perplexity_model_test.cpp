// lockstep perplexity on stories260K. The expected perplexity is computed here from llama.cpp's
// teacher-forced logits (../shared/reference/logits-stories260K.kvf32-nofa.json, F32 KV cache):
// a text that tokenizes to exactly the reference's 69 tokens, evaluated with -c 32 --chunks 1,
// scores positions 16..30 of the first chunk, whose logits llama.cpp computed with the same
// context (BOS first, nothing before).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "common/cli_process_util.h"
#include "tokenizer/vocab.h"

namespace lockstep {
namespace {

const char* kStories = "../shared/models/stories260K.gguf";
const char* kReference = "../shared/reference/logits-stories260K.kvf32-nofa.json";
const char* kSample = "../shared/models/stories260K-ppl-sample.txt";

double parse_ppl(const std::string& out) {
  const size_t p = out.find("PPL = ");
  if (p == std::string::npos) return NAN;
  return std::stod(out.substr(p + 6));
}

TEST(Perplexity, MatchesLlamaCppLogits) {
  ASSERT_TRUE(std::filesystem::exists(kStories)) << "required shared model missing: " << kStories;
  ASSERT_TRUE(std::filesystem::exists(kReference)) << "required reference missing: " << kReference;
  std::ifstream in(kReference);
  const nlohmann::json ref = nlohmann::json::parse(in);
  const std::vector<tokenizer::TokenId> ids = ref["tokens"].get<std::vector<tokenizer::TokenId>>();
  ASSERT_EQ(ids.size(), 69u);
  const auto vocab = tokenizer::Vocab::load(kStories);
  const std::string text = vocab.detokenize(std::span<const tokenizer::TokenId>(ids).subspan(1));
  ASSERT_EQ(vocab.tokenize(text, true, false), ids) << "the text must tokenize back to the ids";
  const std::string path = test::temp_dir() + "/text.txt";
  std::ofstream(path) << text;

  constexpr int kCtx = 32, kFirst = kCtx / 2;
  double nll = 0;
  for (int j = kFirst; j < kCtx - 1; ++j) {
    const std::vector<double> row = ref["logits"][size_t(j)].get<std::vector<double>>();
    double max = row[0], sum = 0;
    for (double v : row) max = std::max(max, v);
    for (double v : row) sum += std::exp(v - max);
    nll -= row[size_t(ids[size_t(j) + 1])] - max - std::log(sum);
  }
  const double expected = std::exp(nll / double(kCtx - 1 - kFirst));

  const auto r = test::run_lockstep({"perplexity", "-m", kStories, "-f", path, "-c", "32",
                                     "--chunks", "1", "--backend", "cpu-ref"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const double ppl = parse_ppl(r.out);
  // stdout carries only the result line; 4 decimals printed.
  EXPECT_EQ(r.out.rfind("Final estimate: PPL = ", 0), 0u) << r.out;
  EXPECT_NEAR(ppl, expected, 1e-3 * expected + 1e-4) << r.out;
}

TEST(Perplexity, SampleStoriesFastPathAgreesWithReference) {
  ASSERT_TRUE(std::filesystem::exists(kSample)) << "required shared file missing: " << kSample;
  const auto ref = test::run_lockstep(
      {"perplexity", "-m", kStories, "-f", kSample, "-c", "128", "--backend", "cpu-ref"});
  const auto fast = test::run_lockstep(
      {"perplexity", "-m", kStories, "-f", kSample, "-c", "128", "--backend", "cpu"});
  ASSERT_EQ(ref.exit_code, 0) << ref.err;
  ASSERT_EQ(fast.exit_code, 0) << fast.err;
  // 518 tokens: 4 chunks of 128; the running estimate of each goes to stderr.
  EXPECT_NE(ref.err.find("[4]"), std::string::npos) << ref.err;
  const double a = parse_ppl(ref.out), b = parse_ppl(fast.out);
  EXPECT_GT(a, 1.0);
  EXPECT_LT(a, 10.0);  // the model's own sample stories: far below the 512-token vocabulary
  EXPECT_NEAR(a, b, 1e-2 * a);
}

TEST(Perplexity, TooShortTextIsOneErrorLine) {
  const auto r = test::run_lockstep({"perplexity", "-m", kStories, "-f", kSample});  // -c 512
  EXPECT_EQ(r.exit_code, 2);
  ASSERT_EQ(r.err_lines().size(), 2u) << r.err;  // the model header, then the error
  EXPECT_NE(r.err_lines()[1].find("needs at least 1024"), std::string::npos) << r.err;
  EXPECT_EQ(r.out, "");
}

}  // namespace
}  // namespace lockstep
