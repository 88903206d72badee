// End-to-end generation on real models through the CLI. stories260K (../shared, required): greedy
// text must equal llama.cpp's reference byte for byte. SmolLM2-135M-Instruct (models/, git-ignored,
// skipped visibly when absent): a chat answer that must contain the right number, and a
// multi-turn chat that keeps its KV cache.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "common/cli_process_util.h"
#include "common/model_paths.h"

namespace lockstep::test {
namespace {

const char* kStories = "../shared/models/stories260K.gguf";
const char* kStoriesReference = "../shared/reference/greedy-stories260K.json";
const std::string kSmolLM = lockstep::test::smollm2_path();

nlohmann::json load_json(const std::string& path) {
  std::ifstream in(path);
  if (!in) ADD_FAILURE() << "required shared file missing: " << path;
  return nlohmann::json::parse(in);
}

TEST(GenerationModel, Stories260KGreedyEqualsTheLlamaCppReference) {
  ASSERT_TRUE(std::filesystem::exists(kStories)) << "required shared model missing: " << kStories;
  const auto ref = load_json(kStoriesReference);
  ASSERT_EQ(ref["settings"]["n_predict"], 64);
  bool saw_once_upon = false;
  for (const auto& r : ref["results"]) {
    const std::string prompt = r["prompt"];
    saw_once_upon = saw_once_upon || prompt == "Once upon a time";
    const auto run = run_lockstep({"run", "-m", kStories, "-p", prompt, "--temp", "0", "-n", "64"});
    ASSERT_EQ(run.exit_code, 0) << run.err;
    EXPECT_EQ(run.out, r["generated_text"].get<std::string>()) << "prompt: " << prompt;

    const auto js =
        run_lockstep({"run", "-m", kStories, "-p", prompt, "--temp", "0", "-n", "64", "--json"});
    ASSERT_EQ(js.exit_code, 0) << js.err;
    const auto j = nlohmann::json::parse(js.out);
    EXPECT_EQ(j["tokens"], r["generated_ids"]) << "prompt: " << prompt;
    EXPECT_EQ(j["timings"]["prompt_tokens"], r["prompt_ids"].size());
  }
  EXPECT_TRUE(saw_once_upon);
}

TEST(GenerationModel, SmolLM2AnswersTwoPlusTwo) {
  if (kSmolLM.empty())
    GTEST_SKIP() << "skipped: SmolLM2-135M-Instruct absent (run scripts/get-default-model.sh)";
  const auto r = run_lockstep(
      {"run", "-m", kSmolLM, "--chat", "-p", "What is 2+2?", "--temp", "0", "-n", "48", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  const std::string text = j["text"];
  EXPECT_NE(text.find('4'), std::string::npos) << text;
  EXPECT_EQ(j["model"]["file_type"], "Q4_1");
}

TEST(GenerationModel, SmolLM2ChatKeepsTheCacheAcrossTurns) {
  if (kSmolLM.empty())
    GTEST_SKIP() << "skipped: SmolLM2-135M-Instruct absent (run scripts/get-default-model.sh)";
  const auto r =
      run_lockstep({"chat", "-m", kSmolLM, "--temp", "0", "-n", "24"}, "What is 2+2?\nAnd 3+3?\n");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::vector<int> fed;
  for (const auto& line : r.err_lines()) {
    const auto at = line.find("[");
    if (line.find("new prompt tok") != std::string::npos)
      fed.push_back(std::stoi(line.substr(at + 1)));
  }
  ASSERT_EQ(fed.size(), 2u) << r.err;
  // Turn 2 feeds its own few tokens (end of the answer, the user turn, the assistant header), not
  // the system prompt and first exchange again.
  EXPECT_LT(fed[1], fed[0]) << r.err;
  EXPECT_LT(fed[1], 24) << r.err;
  const std::string first_answer = r.out.substr(0, r.out.find('\n'));
  EXPECT_NE(first_answer.find('4'), std::string::npos) << r.out;
}

}  // namespace
}  // namespace lockstep::test
