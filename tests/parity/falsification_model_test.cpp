// The parity gate's falsification tests (contracts/parity-gate-v1.yaml), through the real CLI on
// the real stories260K model. The candidate is whatever `--backend auto` picks: the fast CPU path
// on a machine without a GPU (CI), the CUDA backend where one is present. Faults come from the
// documented LOCKSTEP_FAULT test knob and are injected into the candidate only.
// falsification_vulkan_test.cpp runs this same suite with the Vulkan backend as the candidate
// (it defines the LOCKSTEP_FALSIFICATION_* hooks below and includes this file).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <filesystem>
#include <regex>

#include "common/cli_process_util.h"

namespace lockstep {
namespace {

using test::CliRun;
using Env = std::map<std::string, std::optional<std::string>>;

// Runs lockstep with the candidate's environment (none unless a including file sets it) under
// the caller's changes.
CliRun run_lockstep(const std::vector<std::string>& args, const std::string& stdin_text = "",
                    Env env = {}) {
#ifdef LOCKSTEP_FALSIFICATION_CANDIDATE_ENV
  for (const auto& [name, value] : LOCKSTEP_FALSIFICATION_CANDIDATE_ENV()) env.emplace(name, value);
#endif
  return test::run_lockstep(args, stdin_text, env);
}

// Skips the calling test when the candidate cannot run here (a including file's hook).
#ifndef LOCKSTEP_FALSIFICATION_REQUIRE_CANDIDATE
#define LOCKSTEP_FALSIFICATION_REQUIRE_CANDIDATE() \
  do {                                             \
  } while (0)
#endif

const std::string kModel = "../shared/models/stories260K.gguf";
const std::string kTag = "[lockstep-parity-v1]";

std::vector<std::string> run_args(std::vector<std::string> extra = {}) {
  std::vector<std::string> a = {"run", "-m", kModel,   "-p", "Once upon a time",
                                "-n",  "32", "--temp", "0"};
  a.insert(a.end(), extra.begin(), extra.end());
  return a;
}

// Lines of stderr that carry the gate's tag.
std::vector<std::string> tagged(const CliRun& r) {
  std::vector<std::string> out;
  for (const auto& l : r.err_lines())
    if (l.find(kTag) != std::string::npos) out.push_back(l);
  return out;
}

class ParityFalsification : public ::testing::Test {
 protected:
  void SetUp() override {
    LOCKSTEP_FALSIFICATION_REQUIRE_CANDIDATE();
    ASSERT_TRUE(std::filesystem::exists(kModel)) << kModel << " is missing (../shared)";
  }
  // What the CPU reference says: the answer every fallback must reproduce.
  std::string reference_text() {
    CliRun r =
        run_lockstep(run_args({"--backend", "cpu-ref"}), "", {{"LOCKSTEP_FAULT", std::nullopt}});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_FALSE(r.out.empty());
    return r.out;
  }
  // Env with the fault set and no stray step override from the caller's environment.
  Env fault(const std::string& spec, std::optional<std::string> steps = std::nullopt) {
    return {{"LOCKSTEP_FAULT", spec}, {"LOCKSTEP_PARITY_STEPS", steps}};
  }
};

TEST_F(ParityFalsification, HealthyCandidatePasses) {
  CliRun r = run_lockstep(run_args({"--json"}), "", fault(""));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["parity"]["status"], "passed") << r.out;
  EXPECT_NE(j["backend_used"], "cpu-ref");
#ifdef LOCKSTEP_FALSIFICATION_CANDIDATE
  EXPECT_EQ(j["backend_used"], LOCKSTEP_FALSIFICATION_CANDIDATE);
#endif
  EXPECT_EQ(j["backend_used"], j["parity"]["candidate"]);
  EXPECT_EQ(j["parity"]["steps"], 3);
  EXPECT_EQ(j["parity"]["positions"], 64);
  EXPECT_GE(j["parity"]["worst"]["value"].get<double>(), 0.99);
  EXPECT_TRUE(tagged(r).empty()) << r.err;
  // The header on stderr says which backend served and that the gate passed.
  EXPECT_NE(r.err.find("parity passed"), std::string::npos) << r.err;
}

TEST_F(ParityFalsification, KvDriftRejectedAtLaterStep) {
  const std::string expected = reference_text();
  CliRun r = run_lockstep(run_args(), "", fault("kv_drift:2"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto lines = tagged(r);
  ASSERT_EQ(lines.size(), 1u) << r.err;
  std::smatch m;
  ASSERT_TRUE(std::regex_search(lines[0], m, std::regex(R"(at step (\d+)/3$)"))) << lines[0];
  EXPECT_GE(std::stoi(m[1]), 1) << "a drift that starts after step 0 must pass step 0";
  EXPECT_NE(lines[0].find("rejected, falling back to cpu"), std::string::npos) << lines[0];
  EXPECT_EQ(r.out, expected) << "the fallback must produce the CPU reference's text";
}

TEST_F(ParityFalsification, OneStepGateMissesKvDrift) {
  // The same fault with one step: the gate sees only step 0, which the drift has not reached yet.
  CliRun r = run_lockstep(run_args({"--json"}), "", fault("kv_drift:2", "1"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["parity"]["status"], "passed");
  EXPECT_EQ(j["parity"]["steps"], 1);
  EXPECT_NE(j["backend_used"], "cpu-ref");
  EXPECT_TRUE(tagged(r).empty()) << r.err;
}

TEST_F(ParityFalsification, LayerCorruptionRejectedAtItsPosition) {
  CliRun r = run_lockstep(run_args(), "", fault("layer_corrupt:2:10:4"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto lines = tagged(r);
  ASSERT_EQ(lines.size(), 1u) << r.err;
  EXPECT_NE(lines[0].find("at position 10/64"), std::string::npos) << lines[0];
}

TEST_F(ParityFalsification, NaNRejected) {
  CliRun r = run_lockstep(run_args(), "", fault("nan:20"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto lines = tagged(r);
  ASSERT_EQ(lines.size(), 1u) << r.err;
  EXPECT_NE(lines[0].find("NaN/Inf"), std::string::npos) << lines[0];
  EXPECT_NE(lines[0].find("at position 20/64"), std::string::npos) << lines[0];
  EXPECT_EQ(r.out, reference_text());
}

TEST_F(ParityFalsification, StrictModeExitsWithNoOutput) {
  CliRun r = run_lockstep(run_args({"--parity", "strict"}), "", fault("kv_drift:2"));
  EXPECT_EQ(r.exit_code, 3) << r.err;
  EXPECT_TRUE(r.out.empty()) << r.out;
  auto all = r.err_lines();
  ASSERT_EQ(all.size(), 1u) << r.err;
  EXPECT_EQ(all[0].rfind(kTag, 0), 0u) << all[0];
  EXPECT_NE(all[0].find("strict"), std::string::npos);
  EXPECT_NE(all[0].find("at step"), std::string::npos);
}

TEST_F(ParityFalsification, ForcedBackendDoesNotFallBack) {
  // Under the default auto policy, a backend the user named is never silently replaced.
  CliRun auto_pick = run_lockstep(run_args({"--json"}), "", fault(""));
  ASSERT_EQ(auto_pick.exit_code, 0) << auto_pick.err;
  const std::string candidate = nlohmann::json::parse(auto_pick.out)["backend_used"];
  CliRun r = run_lockstep(run_args({"--backend", candidate}), "", fault("kv_drift:2"));
  EXPECT_EQ(r.exit_code, 3) << r.err;
  EXPECT_TRUE(r.out.empty()) << r.out;
  auto lines = tagged(r);
  ASSERT_EQ(lines.size(), 1u) << r.err;
  EXPECT_NE(lines[0].find("forced"), std::string::npos) << lines[0];
}

TEST_F(ParityFalsification, BadParityStepsAreUsageErrors) {
  for (const char* bad : {"0", "17", "-2", "abc", "3.5", ""}) {
    if (std::string(bad).empty()) continue;  // empty means "unset", covered by the default
    CliRun r = run_lockstep(run_args(), "", {{"LOCKSTEP_PARITY_STEPS", std::string(bad)}});
    EXPECT_EQ(r.exit_code, 2) << bad << ": " << r.err;
    EXPECT_TRUE(r.out.empty());
    ASSERT_EQ(r.err_lines().size(), 1u) << r.err;
    EXPECT_NE(r.err.find("LOCKSTEP_PARITY_STEPS"), std::string::npos) << r.err;
  }
  CliRun r = run_lockstep(run_args({"--parity-steps", "99"}), "", fault(""));
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("--parity-steps"), std::string::npos) << r.err;
  CliRun p = run_lockstep(run_args({"--parity", "maybe"}), "", fault(""));
  EXPECT_EQ(p.exit_code, 2) << p.err;
}

TEST_F(ParityFalsification, RunAndChatServeFromReferenceAfterRejection) {
  // run: the JSON says the reference served, and its tokens are the reference's.
  CliRun ref = run_lockstep(run_args({"--json", "--backend", "cpu-ref"}), "", fault(""));
  ASSERT_EQ(ref.exit_code, 0) << ref.err;
  CliRun r = run_lockstep(run_args({"--json"}), "", fault("kv_drift:2"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto jr = nlohmann::json::parse(ref.out), j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["backend_used"], "cpu-ref");
  EXPECT_EQ(j["parity"]["status"], "rejected");
  EXPECT_EQ(j["tokens"], jr["tokens"]);
  // chat: every turn is answered by the reference.
  const std::string turns = "Once upon a time\nThe cat\n";
  std::vector<std::string> chat = {"chat", "-m", kModel, "--temp", "0", "-n", "16"};
  CliRun cref = run_lockstep(
      [&] {
        auto a = chat;
        a.insert(a.end(), {"--backend", "cpu-ref"});
        return a;
      }(),
      turns, fault(""));
  ASSERT_EQ(cref.exit_code, 0) << cref.err;
  CliRun c = run_lockstep(chat, turns, fault("kv_drift:2"));
  ASSERT_EQ(c.exit_code, 0) << c.err;
  EXPECT_EQ(tagged(c).size(), 1u) << c.err;
  EXPECT_EQ(c.out, cref.out);
}

TEST_F(ParityFalsification, LongPromptIsTheProbeAndIsNotProcessedTwice) {
  // A prompt of at least 64 tokens is the probe: its first 64 tokens stay in the serving
  // backend's cache, so the timed prompt pass covers only the rest, and the answer is unchanged.
  const std::string prompt =
      "Once upon a time, there was a little girl named Lily. She loved to play outside in the "
      "park. One day, she saw a big, red ball. She wanted to play with it, but it was too high. "
      "Lily's mom said she could try again tomorrow. The next day, Lily went back to the park "
      "with her friend Tom, and they played with the ball all day long until the sun went down.";
  auto args = [&](std::vector<std::string> extra) {
    std::vector<std::string> a = {"run", "-m", kModel,   "-p", prompt,
                                  "-n",  "16", "--temp", "0",  "--json"};
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
  };
  CliRun ref = run_lockstep(args({"--backend", "cpu-ref"}), "", fault(""));
  CliRun gated = run_lockstep(args({}), "", fault(""));
  ASSERT_EQ(ref.exit_code, 0) << ref.err;
  ASSERT_EQ(gated.exit_code, 0) << gated.err;
  auto jr = nlohmann::json::parse(ref.out), jg = nlohmann::json::parse(gated.out);
  const int total = jr["timings"]["prompt_tokens"];
  ASSERT_GT(total, 64);
  EXPECT_EQ(jg["parity"]["status"], "passed");
  EXPECT_EQ(jg["timings"]["prompt_tokens"], total - 64);
  EXPECT_EQ(jg["tokens"], jr["tokens"]);
}

TEST(ParityTool, LayersLocaliseInjectedFault) {
  LOCKSTEP_FALSIFICATION_REQUIRE_CANDIDATE();
  ASSERT_TRUE(std::filesystem::exists(kModel));
  for (int layer : {1, 3}) {
    const std::string spec = "layer_corrupt:" + std::to_string(layer) + ":10:4";
    CliRun r = run_lockstep({"parity", "-m", kModel, "--layers", "--json"}, "",
                            {{"LOCKSTEP_FAULT", spec}, {"LOCKSTEP_PARITY_STEPS", std::nullopt}});
    EXPECT_EQ(r.exit_code, 3) << r.err;  // a departure was found
    auto j = nlohmann::json::parse(r.out);
    ASSERT_FALSE(j["first_departure"].is_null()) << r.out;
    EXPECT_EQ(j["first_departure"]["layer"], layer) << r.out;
    EXPECT_EQ(j["first_departure"]["stage"], "ffn_out") << r.out;
    EXPECT_EQ(j["first_departure"]["position"], 10) << r.out;
  }
  CliRun healthy = run_lockstep({"parity", "-m", kModel, "--layers", "--json"}, "",
                                {{"LOCKSTEP_FAULT", std::nullopt}});
  EXPECT_EQ(healthy.exit_code, 0) << healthy.err;
  EXPECT_TRUE(nlohmann::json::parse(healthy.out)["first_departure"].is_null()) << healthy.out;
}

TEST(ParityTool, TableAndAuditOnAHealthyCandidate) {
  LOCKSTEP_FALSIFICATION_REQUIRE_CANDIDATE();
  CliRun t =
      run_lockstep({"parity", "-m", kModel, "--json"}, "", {{"LOCKSTEP_FAULT", std::nullopt}});
  ASSERT_EQ(t.exit_code, 0) << t.err;
  auto j = nlohmann::json::parse(t.out);
  EXPECT_EQ(j["status"], "passed");
  EXPECT_EQ(j["rows"].size(), 64u + 3u);
  CliRun a = run_lockstep({"parity", "-m", kModel, "-p", "Once upon a time", "--audit", "48"}, "",
                          {{"LOCKSTEP_FAULT", std::nullopt}});
  EXPECT_EQ(a.exit_code, 0) << a.out << a.err;
  EXPECT_NE(a.out.find("no divergence"), std::string::npos) << a.out;
  // A drifting cache shows up in the audit as a divergence at a generated step.
  CliRun d = run_lockstep({"parity", "-m", kModel, "-p", "Once upon a time", "--audit", "48"}, "",
                          {{"LOCKSTEP_FAULT", "kv_drift:2"}});
  EXPECT_EQ(d.exit_code, 3) << d.out << d.err;
  EXPECT_NE(d.out.find("first divergence"), std::string::npos) << d.out;
}

}  // namespace
}  // namespace lockstep
