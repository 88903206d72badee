// The command line as a llama.cpp user types it (issue 9): llama.cpp's common flags where they
// mean something here, messages that name an unknown flag or command, llama-bench's list values
// and output formats, subcommands that agree on their flags, JSON errors, and the notes a user
// needs (context full, context beyond training, chat template fallback, file type names).
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "cli/cli_models_util.h"
#include "cli/interactive_process_util.h"
#include "common/cli_process_util.h"

namespace lockstep::test {
namespace {

std::vector<std::string> run_args(std::vector<std::string> extra) {
  std::vector<std::string> a = {"run", "-m", chain_model_path(), "-t", "1", "-p", ""};
  a.insert(a.end(), extra.begin(), extra.end());
  return a;
}

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

// One stderr line holding every one of `parts`; nothing on stdout; exit 2.
void expect_usage_line(const CliRun& r, const std::vector<std::string>& parts,
                       const std::string& ctx) {
  EXPECT_EQ(r.exit_code, 2) << ctx << "\n" << r.err;
  EXPECT_EQ(r.out, "") << ctx;
  const auto lines = r.err_lines();
  ASSERT_EQ(lines.size(), 1u) << ctx << "\n" << r.err;
  for (const auto& p : parts) EXPECT_TRUE(contains(lines[0], p)) << ctx << ": " << lines[0];
}

TEST(LlamaCompatCli, RunAcceptsLlamaCppSamplingAndBatchFlags) {
  // -s and --temperature are --seed and --temp; -b and -fa are accepted with a note.
  const auto r = run_lockstep(run_args({"-s", "7", "--temperature", "0", "-b", "256", "-fa"}));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, kChainText);
  EXPECT_TRUE(contains(r.err, "-b/--batch-size 256 accepted")) << r.err;
  EXPECT_TRUE(contains(r.err, "-fa/--flash-attn on accepted")) << r.err;

  const auto seeded =
      run_lockstep(run_args({"--temperature", "1.5", "--top-k", "0", "-s", "42", "--json"}));
  ASSERT_EQ(seeded.exit_code, 0) << seeded.err;
  EXPECT_EQ(nlohmann::json::parse(seeded.out)["seed"], 42);
  EXPECT_EQ(run_lockstep(run_args({"--flash-attn", "off", "--temp", "0"})).exit_code, 0);
  expect_usage_line(run_lockstep(run_args({"--flash-attn", "maybe"})), {"--flash-attn", "maybe"},
                    "-fa maybe");
  expect_usage_line(run_lockstep(run_args({"-b", "-4"})), {"--batch-size"}, "-b -4");
}

TEST(LlamaCompatCli, NglZeroIsTheCpuAndAnyOtherCountTheGpu) {
  auto cpu = run_lockstep(run_args({"--temp", "0", "-ngl", "0", "--json"}));
  ASSERT_EQ(cpu.exit_code, 0) << cpu.err;
  EXPECT_EQ(nlohmann::json::parse(cpu.out)["backend_used"], "cpu");
  // -ngl 0 with the reference agrees (both keep every layer off the GPU).
  cpu = run_lockstep(
      run_args({"--temp", "0", "--n-gpu-layers", "0", "--backend", "cpu-ref", "--json"}));
  ASSERT_EQ(cpu.exit_code, 0) << cpu.err;
  EXPECT_EQ(nlohmann::json::parse(cpu.out)["backend_used"], "cpu-ref");

  // -ngl 99 asks for the GPU as --backend cuda does: served by cuda where there is one, else the
  // device error (exit 4), never a silent CPU run.
  const auto gpu = run_lockstep(run_args({"--temp", "0", "-ngl", "99", "--json"}));
  const auto j = nlohmann::json::parse(gpu.out.substr(0, gpu.out.find('\n')));
  if (gpu.exit_code == 0) {
    EXPECT_EQ(j["backend_used"], "cuda");
  } else {
    EXPECT_EQ(gpu.exit_code, 4) << gpu.err;
    EXPECT_EQ(j["error"]["type"], "device") << gpu.out;
    EXPECT_TRUE(contains(gpu.err, "CUDA")) << gpu.err;
  }

  expect_usage_line(run_lockstep(run_args({"-ngl", "99", "--backend", "cpu"})),
                    {"-ngl 99", "--backend cuda", "--backend cpu"}, "-ngl 99 --backend cpu");
  expect_usage_line(run_lockstep(run_args({"-ngl", "0", "--backend", "cuda"})),
                    {"-ngl 0", "--backend cuda"}, "-ngl 0 --backend cuda");
  expect_usage_line(run_lockstep(run_args({"-ngl", "many"})), {"--n-gpu-layers", "many"},
                    "-ngl many");
}

TEST(LlamaCompatCli, UnknownFlagIsNamedWithASuggestion) {
  auto r = run_lockstep(run_args({"--bogus", "99"}));
  expect_usage_line(r, {"unknown flag --bogus (lockstep has no such flag for 'run'"}, "--bogus");
  // CLI11's own message listed the extras backwards ("99 --bogus").
  EXPECT_FALSE(contains(r.err, "not expected")) << r.err;
  expect_usage_line(run_lockstep(run_args({"--temprature", "0.5"})),
                    {"unknown flag --temprature", "did you mean --temperature?"}, "typo");
  expect_usage_line(run_lockstep(run_args({"--n-predcit", "4"})),
                    {"unknown flag --n-predcit", "did you mean --n-predict?"}, "typo 2");
  expect_usage_line(run_lockstep(run_args({"--mirostat", "2"})),
                    {"unknown flag --mirostat (lockstep has no mirostat sampling)"}, "mirostat");
  // llama.cpp's one-dash words are not read as -c nv or -n kvo.
  expect_usage_line(run_lockstep(run_args({"-cnv"})), {"unknown flag -cnv", "lockstep chat"},
                    "-cnv");
  expect_usage_line(run_lockstep(run_args({"-nkvo"})), {"unknown flag -nkvo"}, "-nkvo");
  // A flag another command has is still unknown here, by the name typed.
  expect_usage_line(run_lockstep({"tokenize", "-m", chain_model_path(), "-ngl", "3", "x"}),
                    {"unknown flag -ngl", "'tokenize'"}, "tokenize -ngl");
  expect_usage_line(run_lockstep(run_args({"stray"})), {"unexpected argument 'stray'"}, "stray");
}

TEST(LlamaCompatCli, UnknownCommandIsNamed) {
  expect_usage_line(run_lockstep({"foo", "-m", "x"}),
                    {"unknown command 'foo'; commands are: ", "run", "chat", "bench"}, "foo");
  expect_usage_line(run_lockstep({"tokenise", "hello"}), {"did you mean tokenize?"}, "tokenise");
  expect_usage_line(run_lockstep({}), {"no command given; commands are: "}, "none");
}

TEST(LlamaCompatCli, JsonErrorsAreJsonObjectsWithTheExitCode) {
  auto expect_json_error = [](const CliRun& r, int code, const std::string& type,
                              const std::string& in_message, const std::string& ctx) {
    EXPECT_EQ(r.exit_code, code) << ctx << "\n" << r.err;
    nlohmann::json j;
    ASSERT_NO_THROW(j = nlohmann::json::parse(r.out)) << ctx << ": " << r.out;
    ASSERT_TRUE(j.is_object() && j.contains("error")) << ctx << ": " << r.out;
    EXPECT_EQ(j["error"]["code"], code) << ctx;
    EXPECT_EQ(j["error"]["type"], type) << ctx;
    EXPECT_TRUE(contains(j["error"]["message"].get<std::string>(), in_message))
        << ctx << ": " << r.out;
    EXPECT_FALSE(r.err.empty()) << ctx;  // the human line still goes to stderr
  };
  const std::string absent = temp_dir() + "/absent.gguf";
  expect_json_error(run_lockstep(run_args({"--json", "--bogus"})), 2, "usage", "--bogus",
                    "run usage");
  expect_json_error(run_lockstep(run_args({"--json", "--temp", "-1"})), 2, "usage", "--temp",
                    "run bad value");
  expect_json_error(run_lockstep({"run", "-m", absent, "-p", "x", "--json"}), 2, "input",
                    "absent.gguf", "run input");
  expect_json_error(run_lockstep({"tokenize", "-m", absent, "--json", "x"}), 2, "input",
                    "absent.gguf", "tokenize");
  expect_json_error(run_lockstep({"inspect", absent, "--json"}), 2, "input", "absent.gguf",
                    "inspect");
  expect_json_error(run_lockstep({"bench", "-m", absent, "-o", "json"}), 2, "input", "absent.gguf",
                    "bench -o json");
  expect_json_error(run_lockstep({"bench", "-m", absent, "--json", "-r", "0"}), 2, "usage",
                    "--repetitions", "bench usage");
  expect_json_error(run_lockstep({"qa", "-m", absent, "--json"}), 2, "input", "absent.gguf", "qa");
  expect_json_error(run_lockstep({"parity", "-m", absent, "--json"}), 2, "input", "absent.gguf",
                    "parity");
  // A backend the gate rejects under --parity strict: exit 3, type parity.
  expect_json_error(run_lockstep({"run", "-m", tiny_model_path(), "-p", "Once upon", "-n", "2",
                                  "--backend", "cpu", "--parity", "strict", "--json", "-t", "1"},
                                 "", {{"LOCKSTEP_FAULT", "nan:0"}}),
                    3, "parity", "rejected", "parity strict");
  // Without --json, errors stay off stdout.
  EXPECT_EQ(run_lockstep({"run", "-m", absent, "-p", "x"}).out, "");
  EXPECT_EQ(run_lockstep({"bench", "-m", absent, "-o", "csv"}).out, "");
}

TEST(LlamaCompatCli, RunSaysWhenTheContextCutTheAnswer) {
  // Context 3: BOS + 2 fed-back tokens fill it (the reference: no gate probe to fit).
  auto r = run_lockstep(run_args({"--temp", "0", "-c", "3", "--backend", "cpu-ref"}));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.err, "stopped: the context of 3 tokens is full")) << r.err;
  r = run_lockstep(run_args({"--temp", "0", "-c", "3", "--backend", "cpu-ref", "--json"}));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["finish_reason"], "length");
  EXPECT_TRUE(contains(j["finish_note"].get<std::string>(), "context of 3 tokens is full"))
      << r.out;
  // The -n limit is no context note.
  r = run_lockstep(run_args({"--temp", "0", "-n", "2", "--json"}));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_FALSE(nlohmann::json::parse(r.out).contains("finish_note")) << r.out;
}

TEST(LlamaCompatCli, WarningsForContextBeyondTrainingAndChatTemplateFallback) {
  // The chain model was trained on 64 positions.
  auto r = run_lockstep(run_args({"--temp", "0", "-c", "100"}));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, kChainText);
  EXPECT_TRUE(contains(r.err, "-c 100 is beyond the model's trained context of 64 tokens"))
      << r.err;
  r = run_lockstep(run_args({"--temp", "0", "-c", "64"}));
  EXPECT_FALSE(contains(r.err, "beyond")) << r.err;

  r = run_lockstep(run_args({"--temp", "0", "-n", "2", "--chat", "-c", "64"}));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.err, "no chat template (tokenizer.chat_template); --chat uses chatml"))
      << r.err;
  // The tiny model has a template: no note.
  r = run_lockstep({"run", "-m", tiny_model_path(), "-p", "hi", "-n", "1", "--chat", "-t", "1"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_FALSE(contains(r.err, "no chat template")) << r.err;
}

TEST(LlamaCompatCli, RunEndsItsTextWithANewlineOnlyAtATerminal) {
  InteractiveRun tty(run_args({"--temp", "0"}), /*terminal=*/true);
  ASSERT_EQ(tty.wait(60000), 0) << tty.err();
  // The terminal turns "\n" into "\r\n".
  EXPECT_EQ(tty.out(), kChainText + "\r\n");
  const auto piped = run_lockstep(run_args({"--temp", "0"}));
  EXPECT_EQ(piped.out, kChainText);  // a pipe gets exactly the text
}

TEST(LlamaCompatCli, BenchMeasuresEveryCombinationOfItsLists) {
  const std::vector<std::string> base = {
      "bench", "-m", chain_model_path(), "-p", "4,8", "-n", "2,3", "-t", "1,2", "-r", "1"};
  auto with = [&](std::vector<std::string> extra) {
    auto a = base;
    a.insert(a.end(), extra.begin(), extra.end());
    return run_lockstep(a);
  };
  const auto js = with({"-o", "json"});
  ASSERT_EQ(js.exit_code, 0) << js.err;
  const auto j = nlohmann::json::parse(js.out);
  ASSERT_TRUE(j.is_array());
  ASSERT_EQ(j.size(), 8u) << js.out;  // (pp4, pp8, tg2, tg3) x (1, 2 threads)
  std::vector<std::string> rows;
  for (const auto& row : j) {
    rows.push_back(row["test"].get<std::string>() + "/t" +
                   std::to_string(row["threads"].get<int>()));
    EXPECT_EQ(row["tok_per_s"].size(), 1u);
    const bool tg = row["test"].get<std::string>()[0] == 't';
    EXPECT_EQ(row["n_gen"], tg ? row["n_tokens"] : nlohmann::json(0));
    EXPECT_EQ(row["n_prompt"], tg ? nlohmann::json(0) : row["n_tokens"]);
  }
  EXPECT_EQ(rows, (std::vector<std::string>{"pp4/t1", "pp8/t1", "tg2/t1", "tg3/t1", "pp4/t2",
                                            "pp8/t2", "tg2/t2", "tg3/t2"}));

  const auto md = with({"-o", "md"});
  ASSERT_EQ(md.exit_code, 0) << md.err;
  EXPECT_EQ(std::count(md.out.begin(), md.out.end(), '\n'), 2 + 8) << md.out;
  EXPECT_TRUE(contains(md.out, "| tg3 |")) << md.out;
  EXPECT_EQ(with({}).out.substr(0, 9), "| model |");  // md is the default

  const auto csv = with({"-o", "csv"});
  ASSERT_EQ(csv.exit_code, 0) << csv.err;
  std::istringstream lines(csv.out);
  std::vector<std::string> csv_lines;
  for (std::string l; std::getline(lines, l);) csv_lines.push_back(l);
  ASSERT_EQ(csv_lines.size(), 9u) << csv.out;
  EXPECT_EQ(csv_lines[0].substr(0, 16), "model,file_type,");
  const auto columns = std::count(csv_lines[0].begin(), csv_lines[0].end(), ',');
  for (const auto& l : csv_lines) EXPECT_EQ(std::count(l.begin(), l.end(), ','), columns) << l;
  EXPECT_TRUE(contains(csv_lines[3], ",tg2,0,2,")) << csv_lines[3];

  EXPECT_EQ(nlohmann::json::parse(with({"--json"}).out).size(), 8u);  // --json is -o json
  expect_usage_line(with({"-o", "xml"}), {"--output", "xml"}, "-o xml");
  const auto both = with({"-o", "csv", "--json"});
  EXPECT_EQ(both.exit_code, 2) << both.err;
  EXPECT_TRUE(contains(both.err, "--json: conflicts with -o csv")) << both.err;
  expect_usage_line(with({"-t", "1,-2"}), {"--threads"}, "-t 1,-2");
  expect_usage_line(with({"-p", "4,-1"}), {"--n-prompt"}, "-p 4,-1");
}

TEST(LlamaCompatCli, SubcommandsAgreeOnModelFlags) {
  const std::string chain = chain_model_path();
  // inspect: -m FILE and the positional FILE; the default model from the environment.
  const auto by_flag = run_lockstep({"inspect", "-m", chain, "--json"});
  const auto positional = run_lockstep({"inspect", chain, "--json"});
  const auto by_env = run_lockstep({"inspect", "--json"}, "", {{"LOCKSTEP_MODEL", chain}});
  ASSERT_EQ(by_flag.exit_code, 0) << by_flag.err;
  EXPECT_EQ(by_flag.out, positional.out);
  EXPECT_EQ(by_flag.out, by_env.out);
  expect_usage_line(run_lockstep({"inspect", chain, "-m", chain}), {"--model"}, "both");

  // tokenize: the default model like run.
  const auto tok =
      run_lockstep({"tokenize", "--ids", " Once upon"}, "", {{"LOCKSTEP_MODEL", chain}});
  ASSERT_EQ(tok.exit_code, 0) << tok.err;
  EXPECT_EQ(tok.out, run_lockstep({"tokenize", "-m", chain, "--ids", " Once upon"}).out);
  EXPECT_EQ(tok.out.front(), '[') << tok.out;
  const std::string cache = temp_dir() + "/empty-cache";
  expect_usage_line(run_lockstep({"tokenize", "x"}, "",
                                 {{"LOCKSTEP_MODEL", std::nullopt}, {"XDG_CACHE_HOME", cache}}),
                    {"scripts/get-default-model.sh"}, "tokenize default");

  // parity: --parity-steps is the name, --steps an alias; --help shows it as a number.
  const auto steps = run_lockstep({"parity", "-m", chain, "--steps", "2", "--json", "-t", "1"});
  ASSERT_EQ(steps.exit_code, 0) << steps.err;
  EXPECT_EQ(nlohmann::json::parse(steps.out)["steps"], 2);
  const auto steps2 =
      run_lockstep({"parity", "-m", chain, "--parity-steps", "2", "--json", "-t", "1"});
  EXPECT_EQ(nlohmann::json::parse(steps2.out)["steps"], 2);
  const auto help = run_lockstep({"parity", "--help"});
  EXPECT_TRUE(contains(help.out, "--parity-steps,--steps INT")) << help.out;
  EXPECT_TRUE(contains(run_lockstep({"run", "--help"}).out, "--parity-steps INT"));

  // qa: --backends, with --backend as its other spelling (it used to be ignored).
  for (const char* flag : {"--backends", "--backend"}) {
    const auto qa =
        run_lockstep({"qa", "-m", chain, flag, "cpu-ref", "--json", "-n", "2", "-c", "512"});
    ASSERT_TRUE(qa.exit_code == 0 || qa.exit_code == 1) << qa.err;
    const auto j = nlohmann::json::parse(qa.out);
    ASSERT_FALSE(j["checks"].empty());
    for (const auto& c : j["checks"]) EXPECT_EQ(c["backend"], "cpu-ref") << flag;
  }
}

TEST(LlamaCompatCli, InspectNamesFileTypesAndAbsentTokens) {
  const auto q4 = run_lockstep({"inspect", tiny_model_path("q4_k_m")});
  ASSERT_EQ(q4.exit_code, 0) << q4.err;
  EXPECT_TRUE(contains(q4.out, "file_type: MOSTLY_Q4_K_M (15)")) << q4.out;
  EXPECT_TRUE(contains(run_lockstep({"inspect", tiny_model_path()}).out, "file_type: ALL_F32 (0)"));
  // The chain model has no eot and no padding token.
  const auto chain = run_lockstep({"inspect", chain_model_path()});
  ASSERT_EQ(chain.exit_code, 0) << chain.err;
  EXPECT_TRUE(contains(chain.out, "bos 1, eos 2, eot none, pad none,")) << chain.out;
}

}  // namespace
}  // namespace lockstep::test
