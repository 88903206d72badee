// `lockstep qa` on the real SmolLM2-135M-Instruct and on the real Gemma 3 270M (each when
// present): every available backend answers the golden questions (chat answers for SmolLM2;
// plain-text completions for Gemma 3 270M, a pretrained model without a chat template), and the
// report carries each backend's parity verdict.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "common/cli_process_util.h"
#include "common/model_paths.h"
#include "engine/qa.h"
#include "tokenizer/vocab.h"

namespace lockstep {
namespace {

TEST(QaModel, SmolLM2PassesOnEveryBackend) {
  const std::string model = test::smollm2_path();
  if (model.empty())
    GTEST_SKIP() << "skipped: SmolLM2-135M-Instruct absent (scripts/get-default-model.sh)";
  auto r =
      test::run_lockstep({"qa", "-m", model, "--json"}, "", {{"LOCKSTEP_FAULT", std::nullopt}});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_TRUE(j["passed"].get<bool>());
  EXPECT_EQ(j["parity"]["cpu"]["status"], "passed");
  EXPECT_EQ(j["parity"]["cpu-ref"]["status"], "not-required");
}

TEST(QaModel, Gemma3_270mCompletesOnEveryBackend) {
  const std::string model = test::gemma3_270m_path();
  if (model.empty()) GTEST_SKIP() << "skipped: Gemma 3 270M absent (scripts/get-gemma3-270m.sh)";
  auto r =
      test::run_lockstep({"qa", "-m", model, "--json"}, "", {{"LOCKSTEP_FAULT", std::nullopt}});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_TRUE(j["passed"].get<bool>());
  EXPECT_EQ(j["mode"], "completion");
  EXPECT_EQ(j["parity"]["cpu"]["status"], "passed");
  // Gemma's "\n\n" is a user-defined token (text); its turn markers are control tokens.
  const auto vocab = tokenizer::Vocab::load(model);
  const auto newlines = vocab.tokenize("\n\n", false, false);
  ASSERT_EQ(newlines.size(), 1u);
  EXPECT_FALSE(has_stray_special_tokens(vocab, {newlines[0], newlines[0]}));
  const tokenizer::TokenId turn = vocab.find("<start_of_turn>");
  ASSERT_NE(turn, tokenizer::kNoToken);
  EXPECT_TRUE(has_stray_special_tokens(vocab, {newlines[0], turn, newlines[0]}));
}

TEST(QaModel, QaFailsWhenABackendIsRejected) {
  const std::string model = test::smollm2_path();
  if (model.empty())
    GTEST_SKIP() << "skipped: SmolLM2-135M-Instruct absent (scripts/get-default-model.sh)";
  auto r = test::run_lockstep({"qa", "-m", model, "--backends", "cpu"}, "",
                              {{"LOCKSTEP_FAULT", "nan:3"}});
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_NE(r.out.find("FAIL"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace lockstep
