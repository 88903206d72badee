// What `lockstep inspect` and `lockstep run` say about models that parse but must not run (issue
// 9): both refuse them with exit 2 and one line naming what is wrong, before any compute.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <functional>
#include <limits>

#include "common/cli_process_util.h"
#include "gguf/gguf_reader.h"
#include "gguf/gguf_writer.h"
#include "model/presets.h"
#include "model/synthetic.h"
#include "model/synthetic_quant_mix.h"
#include "quant/fp16.h"

namespace lockstep {
namespace {

using gguf::GgufFile;
using gguf::GgufWriter;
using gguf::Value;
using test::CliRun;
using test::run_lockstep;

// The tiny llama preset in `quant`, with its metadata edited and tensor bytes changed, written
// to a temp file.
std::string tiny_model_file(
    const std::string& quant, const std::function<void(GgufWriter&)>& edit,
    const std::function<void(const std::string&, std::vector<uint8_t>&)>& edit_tensor = nullptr) {
  auto plan =
      plan_synthetic_model(*find_model_preset("tiny"), Arch::Llama, *find_quant_scheme(quant), 7);
  GgufFile base = GgufFile::from_bytes(synthetic_model_bytes(plan), "tiny.gguf");
  GgufWriter w;
  for (const auto& e : base.metadata()) w.set(e.key, e.value);
  for (const auto& t : base.tensors()) {
    std::vector<uint8_t> data(t.data, t.data + t.n_bytes);
    if (edit_tensor) edit_tensor(t.name, data);
    w.add_tensor(t.name, t.type, t.ne, data);
  }
  edit(w);
  static int counter = 0;
  const std::string path = test::temp_dir() + "/model" + std::to_string(counter++) + ".gguf";
  const std::vector<uint8_t> bytes = w.to_bytes();
  std::ofstream(path, std::ios::binary)
      .write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
  return path;
}

void no_edit(GgufWriter&) {}

CliRun run_model(const std::string& path) {
  return run_lockstep(
      {"run", "-m", path, "-p", "Hello", "-n", "4", "--temp", "0", "--backend", "cpu-ref"}, "", {},
      60);
}

// stdout empty, one stderr line holding `needle`, exit 2.
void expect_refused(const CliRun& r, const std::string& needle) {
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_EQ(r.out, "");
  ASSERT_EQ(r.err_lines().size(), 1u) << r.err;
  EXPECT_NE(r.err.find(needle), std::string::npos) << r.err;
}

TEST(ModelCli, TheUneditedTinyModelInspectsOkAndRuns) {
  const std::string path = tiny_model_file("f32", no_edit);
  const CliRun i = run_lockstep({"inspect", path});
  EXPECT_EQ(i.exit_code, 0) << i.out << i.err;
  EXPECT_NE(i.out.find("verdict: ok"), std::string::npos) << i.out;
  const CliRun r = run_model(path);
  EXPECT_EQ(r.exit_code, 0) << r.err;
}

TEST(ModelCli, TokenizerSizeMismatchIsRefusedByRunAsByInspect) {
  const std::string path = tiny_model_file("f32", [](GgufWriter& w) {
    std::vector<std::string> tokens;
    for (int k = 0; k < 600; ++k) tokens.push_back(std::to_string(k).insert(0, 1, 't'));
    w.set("tokenizer.ggml.tokens", Value::of_strings(tokens));
    w.set("tokenizer.ggml.token_type", Value::of_i32s(std::vector<int32_t>(600, 1)));
  });
  const std::string what = "tokenizer has 600 tokens but token_embd.weight has 512 rows";
  const CliRun i = run_lockstep({"inspect", path});
  EXPECT_EQ(i.exit_code, 2);
  EXPECT_NE(i.out.find(what), std::string::npos) << i.out;
  expect_refused(run_model(path), what);
}

TEST(ModelCli, HugeBlockCountIsRefusedByInspectAndRunWithoutAllocating) {
  const std::string path = tiny_model_file(
      "f32", [](GgufWriter& w) { w.set("llama.block_count", Value::of_u64(200000000)); });
  const std::string what = "'llama.block_count' = 200000000 is more layers than the file's";
  const CliRun i = run_lockstep({"inspect", path}, "", {}, 60);
  EXPECT_EQ(i.exit_code, 2) << i.err;
  EXPECT_NE(i.out.find(what), std::string::npos) << i.out;
  expect_refused(run_model(path), what);
}

TEST(ModelCli, NonFiniteRopeScaleIsRefusedByInspectAndRun) {
  for (float v : {0.0f, std::numeric_limits<float>::quiet_NaN()}) {
    const std::string path = tiny_model_file(
        "f32", [&](GgufWriter& w) { w.set("llama.rope.scale_linear", Value::of_f32(v)); });
    const std::string what = "metadata key 'llama.rope.scale_linear' = ";
    const CliRun i = run_lockstep({"inspect", "--json", path});
    EXPECT_EQ(i.exit_code, 2);
    EXPECT_NE(i.out.find(what), std::string::npos) << i.out;
    expect_refused(run_model(path), what);
  }
}

// A NaN weight parses, binds and has the right shape; inspect's verdict must still not be "ok".
TEST(ModelCli, InspectFindsNonFiniteWeights) {
  struct Case {
    const char* quant;
    const char* tensor;
    size_t byte;       // where the bad value is written
    uint32_t bits;     // its bit pattern
    size_t width;      // bytes of the pattern
    const char* what;  // expected problem
  };
  const uint32_t nan32 = 0x7fc00000u;
  const Case cases[] = {
      {"f32", "blk.1.attn_q.weight", 4 * 37, nan32, 4,
       "tensor 'blk.1.attn_q.weight': element 37 is nan"},
      {"f32", "output_norm.weight", 4 * 3, 0xff800000u, 4,
       "tensor 'output_norm.weight': element 3 is -inf"},
      {"f16", "blk.0.ffn_up.weight", 2 * 5, 0x7c00u, 2,
       "tensor 'blk.0.ffn_up.weight': element 5 is inf"},
      {"bf16", "blk.0.ffn_down.weight", 2 * 9, 0x7fc0u, 2,
       "tensor 'blk.0.ffn_down.weight': element 9 is nan"},
      // Q8_0 blocks are 34 bytes with the f16 scale first: block 2's scale.
      {"q8_0", "blk.0.attn_k.weight", 34 * 2, 0x7e00u, 2,
       "tensor 'blk.0.attn_k.weight': block 2 has a non-finite scale (nan)"},
      // Q4_K blocks are 144 bytes, d then dmin: block 1's dmin.
      {"q4_k_m", "blk.0.ffn_gate.weight", 144 + 2, 0xfc00u, 2,
       "tensor 'blk.0.ffn_gate.weight': block 1 has a non-finite scale (-inf)"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    const std::string path =
        tiny_model_file(c.quant, no_edit, [&](const std::string& name, std::vector<uint8_t>& d) {
          if (name == c.tensor) std::memcpy(d.data() + c.byte, &c.bits, c.width);
        });
    const CliRun i = run_lockstep({"inspect", path});
    EXPECT_EQ(i.exit_code, 2) << i.out;
    EXPECT_NE(i.out.find(c.what), std::string::npos) << i.out;
  }
}

}  // namespace
}  // namespace lockstep
