// Every GGUF in ../shared (models, quant, vocab) must parse cleanly, and what the reader reports
// must agree with the independent descriptions shipped beside them (READMEs, checks.json).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "gguf/gguf_reader.h"

namespace lockstep::gguf_test {
namespace {

namespace fs = std::filesystem;
using gguf::GgufFile;

// All *.gguf files of a shared folder; fails (never skips) when the folder is missing or empty.
std::vector<std::string> shared_ggufs(const std::string& folder) {
  const fs::path dir = fs::path("../shared") / folder;
  std::vector<std::string> out;
  if (!fs::is_directory(dir)) {
    ADD_FAILURE() << dir << " is missing: the shared test data must be at ../shared";
    return out;
  }
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().extension() == ".gguf") out.push_back(e.path().string());
  std::sort(out.begin(), out.end());
  EXPECT_FALSE(out.empty()) << "no .gguf files in " << dir;
  return out;
}

// Structural checks that hold for any well-formed file.
void check_file(const GgufFile& f) {
  EXPECT_EQ(f.version(), 3u) << f.path();
  EXPECT_FALSE(f.metadata().empty()) << f.path();
  std::set<std::string> keys;
  for (const auto& e : f.metadata()) EXPECT_TRUE(keys.insert(e.key).second) << e.key;
  for (const auto& t : f.tensors()) {
    EXPECT_EQ(t.offset % f.alignment(), 0u) << t.name;
    EXPECT_LE(f.data_offset() + t.offset + t.n_bytes, f.file_size()) << t.name;
    EXPECT_EQ(f.find_tensor(t.name), &t);
  }
}

TEST(GgufSharedFiles, ModelsParse) {
  auto files = shared_ggufs("models");
  EXPECT_EQ(files.size(), 4u);
  for (const auto& path : files) {
    SCOPED_TRACE(path);
    auto f = GgufFile::open(path);
    check_file(f);
    EXPECT_EQ(f.get_string("general.architecture").value(), "llama");
    EXPECT_EQ(f.get_int("llama.block_count").value(), 5);
    EXPECT_EQ(f.get_int("llama.embedding_length").value(), 64);
    const auto* embd = f.find_tensor("token_embd.weight");
    ASSERT_NE(embd, nullptr);
    EXPECT_EQ(embd->ne, (std::vector<int64_t>{64, 512}));
    EXPECT_EQ(f.find("tokenizer.ggml.tokens")->array.size(), 512u);
    // 5 layers x 9 tensors + token_embd + output_norm + output = 48 (README: Q4_K_M holds 48).
    EXPECT_EQ(f.tensors().size(), 48u);
  }
}

TEST(GgufSharedFiles, QuantFilesMatchChecksJson) {
  std::ifstream in("../shared/quant/checks.json");
  ASSERT_TRUE(in) << "../shared/quant/checks.json is missing";
  const auto checks = nlohmann::json::parse(in);
  auto files = shared_ggufs("quant");
  EXPECT_EQ(files.size(), 25u);  // 12 quantized + 12 companions + source.f32
  std::set<std::string> described;
  for (const auto& entry : checks.items()) {
    const nlohmann::json& c = entry.value();
    if (!c.contains("tensors")) {  // "_source": the F32 input, described by size only
      const std::string path = "../shared/quant/" + c.at("file").get<std::string>();
      described.insert(path);
      auto f = GgufFile::open(path);
      check_file(f);
      EXPECT_EQ(f.file_size(), c.at("bytes").get<uint64_t>());
      continue;
    }
    for (const std::string key : {"file", "dequant_file"}) {
      const std::string path = "../shared/quant/" + c.at(key).get<std::string>();
      SCOPED_TRACE(path);
      described.insert(path);
      auto f = GgufFile::open(path);
      check_file(f);
      EXPECT_EQ(f.file_size(), c.at(key == "file" ? "bytes" : "dequant_bytes").get<uint64_t>());
      ASSERT_EQ(f.tensors().size(), c.at("tensors").size());
      for (const auto& te : c.at("tensors").items()) {
        const std::string& name = te.key();
        const nlohmann::json& t = te.value();
        const auto* ti = f.find_tensor(name);
        ASSERT_NE(ti, nullptr) << name;
        EXPECT_EQ(ti->ne, t.at("ne").get<std::vector<int64_t>>()) << name;
        const std::string want = key == "file" ? t.at("type").get<std::string>() : "F32";
        EXPECT_EQ(tensor_type_name(ti->raw_type), want) << name;
      }
    }
  }
  for (const auto& path : files) {
    if (described.count(path)) continue;
    SCOPED_TRACE(path);  // f16/bf16/source are not in checks.json: parse and check structure
    auto f = GgufFile::open(path);
    check_file(f);
    EXPECT_EQ(f.tensors().size(), 6u);
  }
}

TEST(GgufSharedFiles, VocabFilesParse) {
  auto files = shared_ggufs("vocab");
  EXPECT_EQ(files.size(), 4u);
  for (const auto& path : files) {
    SCOPED_TRACE(path);
    auto f = GgufFile::open(path);
    check_file(f);
    EXPECT_TRUE(f.tensors().empty());  // vocab-only
    const auto* tokens = f.find("tokenizer.ggml.tokens");
    ASSERT_NE(tokens, nullptr);
    const auto* types = f.find("tokenizer.ggml.token_type");
    ASSERT_NE(types, nullptr);
    EXPECT_EQ(tokens->array.size(), types->array.size());
    if (path.find("qwen2") != std::string::npos) {
      EXPECT_EQ(tokens->array.size(), 151936u);
      EXPECT_EQ(f.get_string("tokenizer.ggml.pre").value(), "qwen2");
      EXPECT_EQ(tokens->array[151643].s, "<|endoftext|>");
      EXPECT_EQ(f.get_int("tokenizer.ggml.bos_token_id").value(), 151643);
    }
    if (path.find("llama-bpe") != std::string::npos) {
      EXPECT_EQ(tokens->array.size(), 128256u);
      EXPECT_EQ(f.get_string("tokenizer.ggml.pre").value(), "llama-bpe");
    }
    if (path.find("llama-spm") != std::string::npos) {
      EXPECT_EQ(tokens->array.size(), 32000u);
      EXPECT_EQ(f.get_string("tokenizer.ggml.model").value(), "llama");
    }
  }
}

}  // namespace
}  // namespace lockstep::gguf_test
