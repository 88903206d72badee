// lockstep perplexity on stories260K. The expected perplexity is computed here from llama.cpp's
// teacher-forced logits (../shared/reference/logits-stories260K.kvf32-nofa.json, F32 KV cache):
// a text that tokenizes to exactly the reference's 69 tokens, evaluated with -c 32 --chunks 1,
// scores positions 16..30 of the first chunk, whose logits llama.cpp computed with the same
// context (BOS first, nothing before).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>

#include "common/cli_process_util.h"
#include "engine/kl_divergence.h"
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

// --kl-divergence end to end on stories260K: the statistics of one run against a saved base.
struct KlRun {
  test::CliRun run;
  double mean_kl = NAN, same_top = NAN;
};

double parse_after(const std::string& out, const std::string& label) {
  const size_t p = out.find(label);
  if (p == std::string::npos) return NAN;
  return std::stod(out.substr(p + label.size()));
}

KlRun kl_against(const std::string& base, const std::vector<std::string>& extra,
                 const std::map<std::string, std::optional<std::string>>& env = {},
                 const std::string& model = kStories) {
  std::vector<std::string> args = {"perplexity",           "-m", model,
                                   "--kl-divergence-base", base, "--kl-divergence"};
  args.insert(args.end(), extra.begin(), extra.end());
  KlRun r;
  r.run = test::run_lockstep(args, "", env);
  r.mean_kl = parse_after(r.run.out, "Mean    KLD: ");
  r.same_top = parse_after(r.run.out, "Same top p: ");
  return r;
}

class PerplexityKl : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    base_ = new std::string(test::temp_dir() + "/stories-ref.kld");
    const auto r =
        test::run_lockstep({"perplexity", "-m", kStories, "-f", kSample, "-c", "128", "--chunks",
                            "3", "--backend", "cpu-ref", "--kl-divergence-base", *base_});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    // Saving a base changes nothing on stdout: still the one perplexity line.
    EXPECT_EQ(r.out.rfind("Final estimate: PPL = ", 0), 0u) << r.out;
    EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1) << r.out;
  }
  static void TearDownTestSuite() { delete base_; }
  static std::string* base_;
};
std::string* PerplexityKl::base_ = nullptr;

TEST_F(PerplexityKl, FastPathIsCloseAndTheReferenceMatchesItself) {
  const KlRun self = kl_against(*base_, {"--backend", "cpu-ref"});
  ASSERT_EQ(self.run.exit_code, 0) << self.run.err;
  // The base's own run: only the stored quantization is left, KL of order step^2 (1.3e-7).
  EXPECT_GE(self.mean_kl, 0) << self.run.out;
  EXPECT_LE(self.mean_kl, 2e-7) << self.run.out;
  EXPECT_EQ(self.same_top, 100) << self.run.out;
  const KlRun fast = kl_against(*base_, {"--backend", "cpu"});
  ASSERT_EQ(fast.run.exit_code, 0) << fast.run.err;
  EXPECT_LT(fast.mean_kl, 1e-4) << fast.run.out;
  EXPECT_GE(fast.same_top, 99) << fast.run.out;
  // stdout holds only the report; the per-chunk progress is on stderr.
  EXPECT_EQ(fast.run.out.rfind("====== Perplexity statistics", 0), 0u) << fast.run.out;
  EXPECT_NE(fast.run.err.find("[3] KLD"), std::string::npos) << fast.run.err;
}

TEST_F(PerplexityKl, AFaultOrAnotherModelIsFarOff) {
  const KlRun fault = kl_against(*base_, {"--backend", "cpu", "--parity", "off"},
                                 {{"LOCKSTEP_FAULT", "from_position:64:4"}});
  ASSERT_EQ(fault.run.exit_code, 0) << fault.run.err;
  EXPECT_GT(fault.mean_kl, 0.5) << fault.run.out;
  EXPECT_LT(fault.same_top, 90) << fault.run.out;
  // A random-weight model with the same 512-token vocabulary.
  const KlRun other = kl_against(*base_, {"--backend", "cpu-ref"}, {},
                                 "../shared/models/arch/tiny-llama3-ropefreqs.gguf");
  ASSERT_EQ(other.run.exit_code, 0) << other.run.err;
  EXPECT_GT(other.mean_kl, 1.0) << other.run.out;
  EXPECT_LT(other.same_top, 50) << other.run.out;
  // NaN logits end the run with one error line, never a statistic.
  const KlRun nan =
      kl_against(*base_, {"--backend", "cpu", "--parity", "off"}, {{"LOCKSTEP_FAULT", "nan:70"}});
  EXPECT_EQ(nan.run.exit_code, 1) << nan.run.err;
  EXPECT_EQ(nan.run.out, "");
  EXPECT_NE(nan.run.err.find("non-finite"), std::string::npos) << nan.run.err;
  // A base whose run fails midway is not left behind.
  const std::string partial = test::temp_dir() + "/partial.kld";
  const auto failed =
      test::run_lockstep({"perplexity", "-m", kStories, "-f", kSample, "-c", "128", "--backend",
                          "cpu", "--parity", "off", "--kl-divergence-base", partial},
                         "", {{"LOCKSTEP_FAULT", "nan:70"}});
  EXPECT_EQ(failed.exit_code, 1) << failed.err;
  EXPECT_EQ(failed.out, "");
  EXPECT_FALSE(std::filesystem::exists(partial));
}

TEST_F(PerplexityKl, BadBasesAndFlagsAreOneErrorLine) {
  const std::string dir = test::temp_dir();
  std::ifstream in(*base_, std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), {});
  std::ofstream(dir + "/cut.kld", std::ios::binary) << bytes.substr(0, bytes.size() / 2);
  std::ofstream(dir + "/noise.kld", std::ios::binary) << std::string(1000, '\x7f');
  {
    const std::vector<int32_t> tokens(16, 1);
    KlBaseWriter w(dir + "/vocab300.kld", 300, 16, 1, tokens);
    std::vector<float> logits(300);
    for (size_t i = 0; i < logits.size(); ++i) logits[i] = float(i % 17) * 0.3f;
    for (int i = 0; i < 7; ++i) w.write_row(make_kl_base_row(logits, 2));
    w.finish();
  }
  struct Case {
    std::vector<std::string> args;
    std::string needle;
  };
  const std::vector<Case> cases = {
      {{"--kl-divergence-base", dir + "/cut.kld", "--kl-divergence"}, "truncated"},
      {{"--kl-divergence-base", dir + "/noise.kld", "--kl-divergence"}, "bad magic"},
      {{"--kl-divergence-base", dir + "/vocab300.kld", "--kl-divergence"},
       "vocabulary of 300 tokens, this model 512"},
      {{"--kl-divergence-base", dir + "/missing.kld", "--kl-divergence"}, "missing.kld"},
      {{"--kl-divergence-base", *base_, "--kl-divergence", "-c", "64"}, "differs"},
      {{"--kl-divergence"}, "--kl-divergence-base"},
      {{"--kl-divergence-base", *base_, "--kl-divergence", "-f", kSample}, "base file holds"},
      {{"--kl-divergence-base", *base_}, "-f"},
  };
  for (const Case& c : cases) {
    std::vector<std::string> args = {"perplexity", "-m", kStories, "--backend", "cpu-ref"};
    args.insert(args.end(), c.args.begin(), c.args.end());
    const auto r = test::run_lockstep(args);
    SCOPED_TRACE(c.needle);
    EXPECT_EQ(r.exit_code, 2) << r.err;
    EXPECT_EQ(r.out, "");
    ASSERT_FALSE(r.err_lines().empty());
    EXPECT_NE(r.err_lines().back().find(c.needle), std::string::npos) << r.err;
    EXPECT_LE(r.err_lines().size(), 2u) << r.err;  // at most the model header, then the error
  }
}

}  // namespace
}  // namespace lockstep
