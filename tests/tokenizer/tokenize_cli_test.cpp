// `lockstep tokenize` run as a process on vocab-only GGUF files. Expected ids come from the
// llama.cpp test vectors and ../shared/vocab/README.md (llama-spm "Hello world" -> 15043 3186 with
// BOS 1; qwen2 <|im_start|> = 151644).
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>

#include "gguf/gguf_writer.h"
#include "tokenizer/tokenizer_test_util.h"

namespace lockstep::tokenizer::test {
namespace {

const std::string kSpm = kVocabDir + "ggml-vocab-llama-spm.gguf";
const std::string kQwen2 = kVocabDir + "ggml-vocab-qwen2.gguf";

void expect_usage_error(const CommandResult& r) {
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(r.out, "");
  EXPECT_FALSE(r.err.empty());
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
}

TEST(TokenizeCli, DefaultListsPieces) {
  const auto r = run_lockstep({"tokenize", "-m", kSpm, "Hello world"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "     1 -> '<s>'\n 15043 -> ' Hello'\n  3186 -> ' world'\n");
}

TEST(TokenizeCli, Ids) {
  auto r = run_lockstep({"tokenize", "-m", kSpm, "--ids", "Hello world"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "[1, 15043, 3186]\n");
  r = run_lockstep({"tokenize", "-m", kSpm, "--ids", "--no-bos", "Hello world"});
  EXPECT_EQ(r.out, "[15043, 3186]\n");
  r = run_lockstep({"tokenize", "-m", kSpm, "--ids", ""});
  EXPECT_EQ(r.out, "[1]\n");
}

TEST(TokenizeCli, Json) {
  const auto r = run_lockstep({"tokenize", "-m", kSpm, "--json", "--no-bos", "Hello world"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  ASSERT_EQ(j.size(), 2u);
  EXPECT_EQ(j[0].at("id"), 15043);
  EXPECT_EQ(j[0].at("piece"), " Hello");
  EXPECT_EQ(j[1].at("id"), 3186);
  EXPECT_EQ(j[1].at("piece"), " world");
}

TEST(TokenizeCli, ParseSpecial) {
  auto r = run_lockstep({"tokenize", "-m", kQwen2, "--ids", "--parse-special", "<|im_start|>"});
  EXPECT_EQ(r.out, "[151644]\n");
  r = run_lockstep({"tokenize", "-m", kQwen2, "--ids", "<|im_start|>"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(r.out.find("151644"), std::string::npos) << r.out;
  EXPECT_GT(std::count(r.out.begin(), r.out.end(), ','), 2);
}

// -f reads the file byte-exact: every test string, through a file, gives the expected ids.
TEST(TokenizeCli, FileIsReadByteExact) {
  const auto inputs = split_inp(read_file(kQwen2 + ".inp"));
  const auto expected = parse_out(read_file(kQwen2 + ".out"));
  ASSERT_EQ(inputs.size(), expected.size());
  const std::string path = testing::TempDir() + "lockstep_tokenize_input.txt";
  for (size_t i : {3u, 7u, 9u, 29u, 45u}) {  // " ", "\n", "\n\n\n", " (", a long mixed one
    ASSERT_LT(i, inputs.size());
    {
      std::ofstream f(path, std::ios::binary);
      f << inputs[i];
    }
    const auto r = run_lockstep({"tokenize", "-m", kQwen2, "--ids", "-f", path});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(r.out, ids_to_string(expected[i]) + "\n") << "vector " << i;
  }
  std::remove(path.c_str());
}

TEST(TokenizeCli, Errors) {
  expect_usage_error(run_lockstep({"tokenize", "-m", kSpm}));  // no text
  {
    // No -m: the default model, here one that does not exist.
    const char* saved = std::getenv("LOCKSTEP_MODEL");
    const std::string saved_value = saved ? saved : "";
    setenv("LOCKSTEP_MODEL", "/nonexistent/default.gguf", 1);
    expect_usage_error(run_lockstep({"tokenize", "Hello"}));
    if (saved)
      setenv("LOCKSTEP_MODEL", saved_value.c_str(), 1);
    else
      unsetenv("LOCKSTEP_MODEL");
  }
  {
    // With --json among the arguments the usage error is a JSON object on stdout as well.
    const auto r = run_lockstep({"tokenize", "-m", kSpm, "--ids", "--json", "x"});
    EXPECT_EQ(r.exit_code, 2);
    EXPECT_EQ(nlohmann::json::parse(r.out)["error"]["type"], "usage") << r.out;
  }
  expect_usage_error(run_lockstep({"tokenize", "-m", kSpm, "--bogus", "x"}));
  expect_usage_error(run_lockstep({"tokenize", "-m", kSpm, "-f", "/nonexistent/file"}));
  expect_usage_error(run_lockstep({"tokenize", "-m", "/nonexistent.gguf", "x"}));
  expect_usage_error(run_lockstep({"tokenize", "-m", kSpm + ".inp", "x"}));  // not a GGUF
  // A GGUF without a tokenizer.
  const std::string path = testing::TempDir() + "lockstep_no_tokenizer.gguf";
  gguf::GgufWriter w;
  w.set("general.architecture", gguf::Value::of_string("llama"));
  w.write(path);
  const auto r = run_lockstep({"tokenize", "-m", path, "x"});
  expect_usage_error(r);
  EXPECT_NE(r.err.find("no tokenizer"), std::string::npos) << r.err;
  std::remove(path.c_str());
}

// Characters the vocabulary cannot represent: a warning on stderr, never on stdout.
TEST(TokenizeCli, UnrepresentableCharactersWarnOnStderrOnly) {
  const std::string path = testing::TempDir() + "lockstep_no_bytes.gguf";
  gguf::GgufWriter w;
  w.set("tokenizer.ggml.model", gguf::Value::of_string("gpt2"));
  w.set("tokenizer.ggml.pre", gguf::Value::of_string("gpt-2"));
  w.set("tokenizer.ggml.tokens", gguf::Value::of_strings({"h", "e", "l", "o", "w", "r", "d"}));
  w.set("tokenizer.ggml.merges", gguf::Value::of_strings({"l o"}));
  w.write(path);
  const auto r =
      run_lockstep({"tokenize", "-m", path, "--ids", "hello world \xC3\xA9 \xE4\xB8\xAD"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "[0, 1, 2, 2, 3, 4, 3, 5, 2, 6]\n");
  EXPECT_NE(r.err.find("lockstep: warning: "), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("dropped"), std::string::npos) << r.err;
  std::remove(path.c_str());
}

}  // namespace
}  // namespace lockstep::tokenizer::test
