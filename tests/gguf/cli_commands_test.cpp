// The CLI side of inspect and make-model: exit codes (0 ok, 2 bad input or problems), one-line
// errors naming the file and byte offset, stdout carrying only the report, and JSON that
// parses and says what docs/inspect-json.md promises.
#include <gtest/gtest.h>

#include <cstdlib>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "gguf/gguf_reader.h"
#include "gguf/gguf_test_util.h"
#include "gguf/gguf_writer.h"

namespace lockstep::gguf_test {
namespace {

using nlohmann::json;

size_t count_lines(const std::string& s) {
  return size_t(std::count(s.begin(), s.end(), '\n'));
}

// make-model writes a file and returns its path (removed by the caller).
std::string make_tiny(const std::string& extra) {
  const std::string path = temp_path("tiny.gguf");
  const auto r = run_cli("make-model --preset tiny -o " + path + " " + extra);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(r.out.empty()) << "make-model must keep stdout empty: " << r.out;
  EXPECT_NE(r.err.find("make-model: wrote"), std::string::npos) << r.err;
  return path;
}

TEST(CliMakeModel, WritesTinyModelsThatInspectClean) {
  for (const char* args : {"--arch qwen2 --quant f32", "--arch llama --quant q4_k_m -t 2",
                           "--arch qwen2 --quant Q8_0 --seed 9", "--arch llama --quant bf16"}) {
    SCOPED_TRACE(args);
    const std::string path = make_tiny(args);
    const auto r = run_cli("inspect --json " + path);
    EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
    const json j = json::parse(r.out);
    EXPECT_EQ(j["verdict"], "ok");
    EXPECT_TRUE(j["problems"].empty());
    EXPECT_EQ(j["kind"], "model");
    EXPECT_EQ(j["hparams"]["n_layer"], 2);
    EXPECT_EQ(j["tokenizer"]["model"], "gpt2");
    EXPECT_EQ(j["tokenizer"]["n_tokens"], 512);
    EXPECT_EQ(j["tokenizer"]["n_special"], 3);
    EXPECT_EQ(j["tokenizer"]["chat_template"], "chatml");
    std::filesystem::remove(path);
  }
}

TEST(CliMakeModel, SameSeedSameBytesAnyThreadCount) {
  const std::string a = make_tiny("--arch qwen2 --quant q4_k_m --seed 5 -t 1");
  const std::string b = make_tiny("--arch qwen2 --quant q4_k_m --seed 5 -t 3");
  const std::string c = make_tiny("--arch qwen2 --quant q4_k_m --seed 6 -t 3");
  EXPECT_EQ(read_file(a), read_file(b));
  EXPECT_NE(read_file(a), read_file(c));
  for (const auto& p : {a, b, c}) std::filesystem::remove(p);
}

TEST(CliMakeModel, BadFlagsExitTwoWithOneLine) {
  const std::string out = temp_path("never.gguf");
  const char* bad[] = {
      "--preset tiny -o OUT",                                   // tiny needs --arch
      "--preset nope --arch llama -o OUT",                      // unknown preset
      "--preset tiny --arch gpt2 -o OUT",                       // unknown arch
      "--preset tiny --arch llama --quant q3_k_s -o OUT",       // unsupported type
      "--preset qwen2.5-0.5b --arch llama -o OUT",              // arch does not match preset
      "--preset tiny --arch llama -o OUT -t 0",                 // threads out of range
      "--preset tiny --arch llama -o OUT --seed -1",            // seed not a u64
      "--preset tiny --arch llama",                             // no output
      "--preset tiny --arch llama -o OUT --frobnicate",         // unknown flag
      "--preset tiny --arch llama -o /nonexistent/dir/x.gguf",  // unwritable output
  };
  for (std::string args : bad) {
    SCOPED_TRACE(args);
    if (auto at = args.find("OUT"); at != std::string::npos) args.replace(at, 3, out);
    const auto r = run_cli("make-model " + args);
    EXPECT_EQ(r.exit_code, 2) << r.err;
    EXPECT_EQ(count_lines(r.err), 1u) << r.err;
    EXPECT_TRUE(r.out.empty()) << r.out;
    EXPECT_FALSE(std::filesystem::exists(out));
  }
}

TEST(CliInspect, MalformedFileExitsTwoWithFileAndOffset) {
  struct Case {
    std::vector<uint8_t> bytes;
    std::string what;
    uint64_t offset;
  };
  std::vector<Case> cases;
  {
    RawImage im = small_valid_image();
    im.magic = 0x12345678;
    cases.push_back({im.build(), "bad magic", 0});
  }
  {
    RawImage im = small_valid_image();
    im.tensors[1].offset = 36;
    const uint64_t at = im.tensor_info_offset(1) + 8 + 1 + 4 + 8 + 4;
    cases.push_back({im.build(), "not a multiple of the alignment", at});
  }
  {
    std::vector<uint8_t> b = small_valid_image().build();
    b.resize(b.size() - 1);
    cases.push_back({b, "extends past the end", small_valid_image().tensor_info_offset(1)});
  }
  for (const auto& c : cases) {
    SCOPED_TRACE(c.what);
    const std::string path = temp_path("malformed.gguf");
    write_file(path, c.bytes);
    for (const char* flags : {"", "--json "}) {
      const auto r = run_cli(std::string("inspect ") + flags + path);
      EXPECT_EQ(r.exit_code, 2);
      if (*flags) {  // --json: the error is a JSON object on stdout too
        const json j = json::parse(r.out);
        EXPECT_EQ(j["error"]["code"], 2) << r.out;
        EXPECT_NE(j["error"]["message"].get<std::string>().find(c.what), std::string::npos);
      } else {
        EXPECT_TRUE(r.out.empty()) << r.out;
      }
      EXPECT_EQ(count_lines(r.err), 1u) << r.err;
      EXPECT_NE(r.err.find(path + ": at byte " + std::to_string(c.offset) + ": "),
                std::string::npos)
          << r.err;
      EXPECT_NE(r.err.find(c.what), std::string::npos) << r.err;
    }
    std::filesystem::remove(path);
  }
}

TEST(CliInspect, MissingFileAndBadUsageExitTwo) {
  auto r = run_cli("inspect /nonexistent/model.gguf");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("/nonexistent/model.gguf"), std::string::npos) << r.err;
  EXPECT_EQ(count_lines(r.err), 1u) << r.err;
  // No file: the default model, here one that does not exist.
  const char* saved = std::getenv("LOCKSTEP_MODEL");
  const std::string saved_value = saved ? saved : "";
  setenv("LOCKSTEP_MODEL", "/nonexistent/default.gguf", 1);
  r = run_cli("inspect");
  if (saved)
    setenv("LOCKSTEP_MODEL", saved_value.c_str(), 1);
  else
    unsetenv("LOCKSTEP_MODEL");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("/nonexistent/default.gguf"), std::string::npos) << r.err;
  r = run_cli("inspect --yaml x.gguf");
  EXPECT_EQ(r.exit_code, 2);
}

TEST(CliInspect, ProblemsGiveExitTwoAndAreListed) {
  // A parseable file that is not a runnable model: unknown architecture, and a llama file with a
  // tensor of the wrong shape and an unsupported type.
  gguf::GgufWriter w;
  w.set("general.architecture", gguf::Value::of_string("mamba"));
  w.add_tensor("x", TensorType::F32, {4}, std::vector<uint8_t>(16, 0));
  const std::string path = temp_path("mamba.gguf");
  write_file(path, w.to_bytes());
  auto r = run_cli("inspect --json " + path);
  EXPECT_EQ(r.exit_code, 2) << r.err;
  json j = json::parse(r.out);
  EXPECT_EQ(j["verdict"], "problems");
  EXPECT_NE(j["problems"].dump().find("unknown architecture 'mamba'"), std::string::npos) << j;
  r = run_cli("inspect " + path);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.out.find("verdict: "), std::string::npos);
  EXPECT_NE(r.out.find("  - unknown architecture 'mamba'"), std::string::npos) << r.out;
  std::filesystem::remove(path);

  // Take a good tiny model and change one tensor's type id from Q4_K to IQ2_XXS (16): same
  // block length, smaller blocks, so the file still parses, but lockstep cannot compute with it.
  const std::string good = make_tiny("--arch llama --quant q4_k_m");
  std::vector<uint8_t> bytes = read_file(good);
  auto f = gguf::GgufFile::from_bytes(bytes);
  const gguf::TensorInfo* ti = f.find_tensor("blk.0.attn_q.weight");
  ASSERT_NE(ti, nullptr);
  ASSERT_EQ(ti->type, TensorType::Q4_K);
  const uint64_t type_at = ti->info_offset + 8 + ti->name.size() + 4 + 8 * ti->ne.size();
  bytes[type_at] = 16;
  const std::string damaged = temp_path("damaged.gguf");
  write_file(damaged, bytes);
  r = run_cli("inspect --json " + damaged);
  EXPECT_EQ(r.exit_code, 2) << r.err;
  j = json::parse(r.out);
  EXPECT_NE(j["problems"].dump().find("blk.0.attn_q.weight' has type IQ2_XXS"), std::string::npos)
      << j["problems"];
  std::filesystem::remove(good);
  std::filesystem::remove(damaged);
}

TEST(CliInspect, JsonHasTheDocumentedFields) {
  const std::string path = make_tiny("--arch qwen2 --quant q4_k_m");
  const auto r = run_cli("inspect --json " + path);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json j = json::parse(r.out);
  for (const char* k : {"file", "file_size", "gguf_version", "alignment", "data_offset", "kind",
                        "architecture", "name", "file_type", "hparams", "tokenizer", "metadata",
                        "tensors", "tensor_bytes", "verdict", "problems", "warnings"})
    EXPECT_TRUE(j.contains(k)) << k;
  EXPECT_EQ(j["file"], path);
  EXPECT_EQ(j["file_size"], std::filesystem::file_size(path));
  EXPECT_EQ(j["architecture"], "qwen2");
  EXPECT_EQ(j["file_type"], 15);
  EXPECT_EQ(j["hparams"]["rms_eps"], 1e-5);
  EXPECT_EQ(j["hparams"]["rope_type"], "neox");
  EXPECT_EQ(j["hparams"]["has_qkv_bias"], true);
  EXPECT_EQ(j["tokenizer"]["pre"], "qwen2");
  // Cross-check the tensor table against the reader, independently of inspect.
  auto f = gguf::GgufFile::open(path);
  ASSERT_EQ(j["tensors"].size(), f.tensors().size());
  uint64_t total = 0;
  for (size_t k = 0; k < f.tensors().size(); ++k) {
    const auto& t = f.tensors()[k];
    const json& e = j["tensors"][k];
    EXPECT_EQ(e["name"], t.name);
    EXPECT_EQ(e["type"], tensor_type_name(t.raw_type));
    EXPECT_EQ(e["shape"].get<std::vector<int64_t>>(), t.ne);
    EXPECT_EQ(e["bytes"], t.n_bytes);
    EXPECT_EQ(e["offset"], t.offset);
    EXPECT_EQ(e["file_offset"], f.data_offset() + t.offset);
    total += t.n_bytes;
  }
  EXPECT_EQ(j["tensor_bytes"], total);
  ASSERT_EQ(j["metadata"].size(), f.metadata().size());
  for (const auto& m : j["metadata"])
    if (m["key"] == "tokenizer.ggml.tokens") {
      EXPECT_EQ(m["type"], "array");
      EXPECT_EQ(m["elem_type"], "string");
      EXPECT_EQ(m["length"], 512);
    }
  std::filesystem::remove(path);
}

TEST(CliInspect, HostileStringsStaySafe) {
  gguf::GgufWriter w;
  w.set("general.architecture", gguf::Value::of_string("llama"));
  w.set("general.name", gguf::Value::of_string(std::string("a\x1b[2J\xff\0z", 7)));
  const std::string path = temp_path("hostile.gguf");
  write_file(path, w.to_bytes());
  auto r = run_cli("inspect " + path);
  EXPECT_EQ(r.exit_code, 2);  // no tensors and no tokenizer
  EXPECT_EQ(r.out.find('\x1b'), std::string::npos) << "escape sequences must not reach a terminal";
  r = run_cli("inspect --json " + path);
  const json j = json::parse(r.out);  // invalid UTF-8 was repaired, the JSON parses
  EXPECT_EQ(j["verdict"], "problems");
  std::filesystem::remove(path);
}

}  // namespace
}  // namespace lockstep::gguf_test
