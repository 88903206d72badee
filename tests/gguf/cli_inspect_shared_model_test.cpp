// inspect on the real files in ../shared: llama.cpp's own models give "ok", vocab-only files
// give "ok" as vocab-only, and the quant reference files (a subset of a model's tensors) give
// problems naming exactly the tensors they lack.
#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "gguf/gguf_test_util.h"

namespace lockstep::gguf_test {
namespace {

using nlohmann::json;

json inspect_json(const std::string& path, int want_exit) {
  EXPECT_TRUE(std::filesystem::exists(path)) << path << " is missing from ../shared";
  const auto r = run_cli("inspect --json " + path);
  EXPECT_EQ(r.exit_code, want_exit) << path << "\n" << r.err;
  return json::parse(r.out);
}

TEST(CliInspectShared, StoriesModelsAreOk) {
  for (const char* f : {"stories260K.gguf", "stories260K-Q8_0.gguf", "stories260K-Q4_0.gguf",
                        "stories260K-Q4_K_M.gguf"}) {
    SCOPED_TRACE(f);
    const json j = inspect_json(std::string("../shared/models/") + f, 0);
    EXPECT_EQ(j["verdict"], "ok");
    EXPECT_EQ(j["kind"], "model");
    EXPECT_EQ(j["hparams"]["n_layer"], 5);
    EXPECT_EQ(j["hparams"]["n_embd"], 64);
    EXPECT_EQ(j["hparams"]["n_vocab"], 512);
    EXPECT_EQ(j["tokenizer"]["model"], "llama");
    EXPECT_EQ(j["tokenizer"]["bos"], 1);
    EXPECT_EQ(j["tokenizer"]["eos"], 2);
    EXPECT_EQ(j["tokenizer"]["chat_template"], "none");
    EXPECT_EQ(j["tensors"].size(), 48u);
  }
}

TEST(CliInspectShared, VocabOnlyFilesAreOk) {
  const std::map<std::string, int> sizes = {
      {"qwen2", 151936}, {"llama-bpe", 128256}, {"llama-spm", 32000}, {"gpt-2", 50257}};
  for (const auto& [name, n] : sizes) {
    SCOPED_TRACE(name);
    const json j = inspect_json("../shared/vocab/ggml-vocab-" + name + ".gguf", 0);
    EXPECT_EQ(j["kind"], "vocab-only");
    EXPECT_EQ(j["verdict"], "ok") << j["problems"];
    EXPECT_TRUE(j["hparams"].is_null());
    EXPECT_EQ(j["tokenizer"]["n_tokens"], n);
    EXPECT_TRUE(j["tensors"].empty());
  }
  const json q = inspect_json("../shared/vocab/ggml-vocab-qwen2.gguf", 0);
  EXPECT_EQ(q["tokenizer"]["pre"], "qwen2");
  EXPECT_EQ(q["tokenizer"]["n_special"], 22);  // Qwen2.5's added tokens, README
  EXPECT_EQ(q["tokenizer"]["bos"], 151643);
}

TEST(CliInspectShared, QuantReferenceFilesLackTensors) {
  const json j = inspect_json("../shared/quant/q4_k.gguf", 2);
  EXPECT_EQ(j["verdict"], "problems");
  std::set<std::string> problems;
  for (const auto& p : j["problems"]) problems.insert(p.get<std::string>());
  // README: attn_q, attn_output, ffn_gate, ffn_up, ffn_norm and output are missing; output is
  // optional (tied embeddings), the other five are problems.
  const std::set<std::string> want = {
      "missing tensor 'blk.0.attn_q.weight'", "missing tensor 'blk.0.attn_output.weight'",
      "missing tensor 'blk.0.ffn_norm.weight'", "missing tensor 'blk.0.ffn_gate.weight'",
      "missing tensor 'blk.0.ffn_up.weight'"};
  EXPECT_EQ(problems, want);
  EXPECT_EQ(j["file_type"], 15);
}

}  // namespace
}  // namespace lockstep::gguf_test
