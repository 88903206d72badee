// `lockstep run / chat / bench` as a user runs them: the built binary on a tiny model file whose
// greedy output is known by construction (tests/engine/chain_model_util.h). stdout must hold
// exactly the generated text or exactly one JSON object; bad input must be one stderr line and
// exit code 2.
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>

#include "cli/cli_models_util.h"
#include "common/cli_process_util.h"
#include "engine/chain_model_util.h"

namespace lockstep::test {
namespace {

std::vector<std::string> run_args(std::vector<std::string> extra) {
  std::vector<std::string> a = {"run", "-m", chain_model_path(), "-t", "1", "--temp", "0"};
  a.insert(a.end(), extra.begin(), extra.end());
  return a;
}

// Exactly one non-empty stderr line, containing `what`; nothing on stdout; exit 2.
void expect_usage_error(const CliRun& r, const std::string& what, const std::string& ctx) {
  EXPECT_EQ(r.exit_code, 2) << ctx << "\n" << r.err;
  EXPECT_EQ(r.out, "") << ctx;
  const auto lines = r.err_lines();
  ASSERT_EQ(lines.size(), 1u) << ctx << "\n" << r.err;
  EXPECT_NE(lines[0].find(what), std::string::npos) << ctx << ": " << lines[0];
}

TEST(RunCli, StdoutIsExactlyTheGeneratedText) {
  const auto r = run_lockstep(run_args({"-p", ""}));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, kChainText);
  // The header names model, architecture, type and backend; timings come at the end.
  ASSERT_GE(r.err_lines().size(), 2u) << r.err;
  const std::string header = r.err_lines().front();
  // --backend auto on a machine without a GPU: the fast cpu path, verified by the parity gate.
  for (const char* s : {"chain.gguf", "llama", "F32", "backend cpu", "parity passed"})
    EXPECT_NE(header.find(s), std::string::npos) << header;
  const std::string timings = r.err_lines().back();
  for (const char* s : {"load", "prompt", "tok/s", "generation", "finish eos"})
    EXPECT_NE(timings.find(s), std::string::npos) << timings;
}

TEST(RunCli, PromptFromFileAndFromStdinGiveTheSameText) {
  const std::string file = temp_dir() + "/empty-prompt.txt";
  std::ofstream(file) << "";
  const auto from_file = run_lockstep(run_args({"-f", file}));
  ASSERT_EQ(from_file.exit_code, 0) << from_file.err;
  EXPECT_EQ(from_file.out, kChainText);
  const auto from_stdin = run_lockstep(run_args({}), "");
  ASSERT_EQ(from_stdin.exit_code, 0) << from_stdin.err;
  EXPECT_EQ(from_stdin.out, kChainText);
}

TEST(RunCli, TokenLimitStopStringAndContextSize) {
  auto r = run_lockstep(run_args({"-p", "", "-n", "2"}));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, " Once upon");
  r = run_lockstep(run_args({"-p", "", "--stop", "xyz", "--stop", "time"}));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, " Once upon a ");
  // Context 3: BOS + 2 fed-back tokens fill it; the third sampled token is the last. (The
  // reference needs no gate, whose probe would not fit such a context.)
  r = run_lockstep(run_args({"-p", "", "-c", "3", "--backend", "cpu-ref"}));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, " Once upon a");
  EXPECT_NE(r.err.find("context"), std::string::npos) << r.err;
}

TEST(RunCli, JsonIsExactlyOneObject) {
  const auto r = run_lockstep(run_args({"-p", "", "--json"}));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  nlohmann::json j;
  ASSERT_NO_THROW(j = nlohmann::json::parse(r.out)) << r.out;  // throws on trailing content
  ASSERT_TRUE(j.is_object());
  EXPECT_EQ(j["text"], kChainText);
  EXPECT_EQ(j["tokens"], (std::vector<int>{kOnce, kUpon, kA, kTime, kThe, kEnd, kDot, kEos}));
  EXPECT_EQ(j["finish_reason"], "eos");
  EXPECT_EQ(j["backend_used"], "cpu");
  EXPECT_EQ(j["parity"]["status"], "passed");
  for (const char* k : {"load_ms", "prompt_tokens", "prompt_ms", "prompt_tok_per_s", "gen_tokens",
                        "gen_ms", "gen_tok_per_s"})
    EXPECT_TRUE(j["timings"].contains(k)) << k;
  EXPECT_EQ(j["timings"]["prompt_tokens"], 1);
  EXPECT_EQ(j["timings"]["gen_tokens"], 8);
  EXPECT_EQ(j["model"]["architecture"], "llama");
  EXPECT_EQ(j["model"]["n_vocab"], kNVocab);

  const auto limited = run_lockstep(run_args({"-p", "", "--json", "-n", "3"}));
  ASSERT_EQ(limited.exit_code, 0) << limited.err;
  const auto jl = nlohmann::json::parse(limited.out);
  EXPECT_EQ(jl["finish_reason"], "length");
  EXPECT_EQ(jl["text"], " Once upon a");
}

TEST(RunCli, SameSeedSameTextAtTemperature) {
  auto args = run_args({"-p", "", "--temp", "1.5", "--top-k", "0", "--seed", "123", "--json"});
  const auto a = run_lockstep(args), b = run_lockstep(args);
  ASSERT_EQ(a.exit_code, 0) << a.err;
  EXPECT_EQ(nlohmann::json::parse(a.out)["tokens"], nlohmann::json::parse(b.out)["tokens"]);
  EXPECT_EQ(nlohmann::json::parse(a.out)["seed"], 123);
}

TEST(RunCli, BadFlagValuesAreUsageErrorsNamingTheFlag) {
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"--temp", "-1"}, "--temp"},
      {{"--temp", "abc"}, "--temp"},
      {{"--temp", "nan"}, "--temp"},
      {{"--top-k", "-1"}, "--top-k"},
      {{"--top-p", "0"}, "--top-p"},
      {{"--top-p", "1.5"}, "--top-p"},
      {{"--min-p", "2"}, "--min-p"},
      {{"--repeat-penalty", "0"}, "--repeat-penalty"},
      {{"--repeat-last-n", "-5"}, "--repeat-last-n"},
      {{"--seed", "-7"}, "--seed"},
      {{"-n", "-3"}, "--n-predict"},
      {{"-n", "many"}, "-n"},
      {{"-t", "-1"}, "--threads"},
      {{"-c", "-1"}, "--ctx-size"},
      {{"--backend", "gpu"}, "--backend"},
      {{"--system", "be brief"}, "--system"},
      {{"-f", "some-file"}, "--file"},  // together with -p below
      {{"--bogus"}, "--bogus"},
  };
  for (const auto& [flags, name] : cases) {
    auto args = run_args({"-p", "x"});
    args.insert(args.end(), flags.begin(), flags.end());
    expect_usage_error(run_lockstep(args), name, flags[0]);
  }
}

TEST(RunCli, MissingOrBrokenModelIsOneLineAndExit2) {
  expect_usage_error(run_lockstep({"run", "-m", temp_dir() + "/absent.gguf", "-p", "x"}),
                     "absent.gguf", "-m absent");
  // No -m, no $LOCKSTEP_MODEL, empty cache: the message says how to get the default model.
  const std::string cache = temp_dir() + "/empty-cache";
  expect_usage_error(run_lockstep({"run", "-p", "x"}, "",
                                  {{"LOCKSTEP_MODEL", std::nullopt}, {"XDG_CACHE_HOME", cache}}),
                     "scripts/get-default-model.sh", "default model");
  expect_usage_error(
      run_lockstep({"run", "-p", "x"}, "", {{"LOCKSTEP_MODEL", temp_dir() + "/nope.gguf"}}),
      "nope.gguf", "$LOCKSTEP_MODEL");
  const std::string junk = temp_dir() + "/junk.gguf";
  std::ofstream(junk) << "this is not a GGUF file at all, just some text";
  expect_usage_error(run_lockstep({"run", "-m", junk, "-p", "x"}), "junk.gguf", "junk file");
  const std::string missing_prompt = temp_dir() + "/no-such-prompt.txt";
  expect_usage_error(run_lockstep(run_args({"-f", missing_prompt})), "no-such-prompt.txt", "-f");
}

TEST(RunCli, DefaultModelComesFromTheEnvironment) {
  const auto r = run_lockstep({"run", "-p", "", "--temp", "0", "-t", "1"}, "",
                              {{"LOCKSTEP_MODEL", chain_model_path()}});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, kChainText);
}

TEST(ChatCli, AnswersEachLineAndQuitsOnExit) {
  // The chain vocabulary has no chat tokens, so the answer text is whatever the model makes of
  // the rendered template; what is checked is the protocol: one answer line per turn, the cache
  // carried over (turn 2 feeds fewer tokens than the whole conversation), /exit quits.
  const auto r = run_lockstep(
      {"chat", "-m", chain_model_path(), "-t", "1", "-c", "1024", "--temp", "0", "-n", "4"},
      "hello\n\nagain\n/exit\nnever read\n");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  size_t turns = 0;
  for (const auto& line : r.err_lines())
    if (line.find("new prompt tok") != std::string::npos) ++turns;
  EXPECT_EQ(turns, 2u) << r.err;
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 2) << r.out;
  expect_usage_error(run_lockstep({"chat", "-m", chain_model_path(), "--top-k", "-3"}), "--top-k",
                     "chat --top-k");
}

TEST(BenchCli, TableAndJson) {
  const std::vector<std::string> base = {
      "bench", "-m", chain_model_path(), "-p", "8", "-n", "4", "-r", "2", "-t", "1"};
  const auto table = run_lockstep(base);
  ASSERT_EQ(table.exit_code, 0) << table.err;
  // Header, separator, pp row, tg row: nothing else on stdout.
  EXPECT_EQ(std::count(table.out.begin(), table.out.end(), '\n'), 4) << table.out;
  EXPECT_NE(table.out.find("| pp8 |"), std::string::npos) << table.out;
  EXPECT_NE(table.out.find("| tg4 |"), std::string::npos) << table.out;

  // --json is -o json: an array with one object per test, each with the report's fields.
  auto json_args = base;
  json_args.push_back("--json");
  const auto js = run_lockstep(json_args);
  ASSERT_EQ(js.exit_code, 0) << js.err;
  const auto j = nlohmann::json::parse(js.out);
  ASSERT_TRUE(j.is_array()) << js.out;
  ASSERT_EQ(j.size(), 2u);
  EXPECT_EQ(j[0]["test"], "pp8");
  EXPECT_EQ(j[1]["test"], "tg4");
  for (const auto& t : j) {
    EXPECT_EQ(t["tok_per_s"].size(), 2u);
    EXPECT_GT(t["median"].get<double>(), 0);
    EXPECT_LE(t["min"].get<double>(), t["median"].get<double>());
    EXPECT_GE(t["max"].get<double>(), t["median"].get<double>());
    EXPECT_GT(t["weight_bytes_per_token"].get<double>(), 0);
    EXPECT_EQ(t["threads"], 1);
    for (const char* k : {"model", "backend", "n_tokens", "stddev", "gen_weights_gb_per_s"})
      EXPECT_TRUE(t.contains(k)) << k;
  }
  EXPECT_GT(j[1]["gen_weights_gb_per_s"].get<double>(), 0);

  for (const auto& [flag, value] : std::vector<std::pair<std::string, std::string>>{
           {"-r", "0"}, {"-p", "-1"}, {"-n", "-2"}, {"--backend", "tpu"}}) {
    auto args = std::vector<std::string>{"bench", "-m", chain_model_path(), flag, value};
    expect_usage_error(run_lockstep(args),
                       flag == "-r"   ? "--repetitions"
                       : flag == "-p" ? "--n-prompt"
                       : flag == "-n" ? "--n-gen"
                                      : "--backend",
                       flag);
  }
}

}  // namespace
}  // namespace lockstep::test
