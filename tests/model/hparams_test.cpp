// What the model loader refuses, on a valid tiny synthetic model with one thing changed: each
// refusal is an InputError (exit 2) naming the file and what is wrong, before any compute.
#include <gtest/gtest.h>

#include <cstring>
#include <functional>

#include "gguf/gguf_reader.h"
#include "gguf/gguf_writer.h"
#include "model/model.h"
#include "model/presets.h"
#include "model/synthetic.h"
#include "model/synthetic_quant_mix.h"
#include "util/error.h"

namespace lockstep {
namespace {

using gguf::GgufFile;
using gguf::GgufWriter;
using gguf::Value;

// The tiny llama preset in F32, rebuilt with its metadata edited and extra tensors added.
std::vector<uint8_t> tiny_model_with(const std::function<void(GgufWriter&)>& edit) {
  auto plan =
      plan_synthetic_model(*find_model_preset("tiny"), Arch::Llama, *find_quant_scheme("f32"), 7);
  GgufFile base = GgufFile::from_bytes(synthetic_model_bytes(plan), "tiny.gguf");
  GgufWriter w;
  for (const auto& e : base.metadata()) w.set(e.key, e.value);
  for (const auto& t : base.tensors())
    w.add_tensor(t.name, t.type, t.ne, std::vector<uint8_t>(t.data, t.data + t.n_bytes));
  edit(w);
  return w.to_bytes();
}

std::string load_error(std::vector<uint8_t> bytes) {
  try {
    Model::from_file(GgufFile::from_bytes(std::move(bytes), "edited.gguf"));
  } catch (const InputError& e) {
    EXPECT_EQ(e.exit_code(), kExitBadInput);
    return e.what();
  }
  return "";
}

TEST(ModelLoad, TheUnchangedTinyModelLoads) {
  auto bytes = tiny_model_with([](GgufWriter&) {});
  Model m = Model::from_file(GgufFile::from_bytes(std::move(bytes), "tiny.gguf"));
  EXPECT_EQ(m.hp.arch, Arch::Llama);
  EXPECT_GT(m.hp.n_layer, 0);
}

TEST(ModelLoad, UnknownArchitectureIsRefused) {
  auto err = load_error(tiny_model_with(
      [](GgufWriter& w) { w.set("general.architecture", Value::of_string("gpt9")); }));
  EXPECT_NE(err.find("unknown architecture 'gpt9'"), std::string::npos) << err;
  EXPECT_NE(err.find("edited.gguf"), std::string::npos) << err;
}

TEST(ModelLoad, UnsupportedRopeScalingIsRefused) {
  auto err = load_error(tiny_model_with(
      [](GgufWriter& w) { w.set("llama.rope.scaling.type", Value::of_string("yarn")); }));
  EXPECT_NE(err.find("rope scaling type 'yarn'"), std::string::npos) << err;
}

TEST(ModelLoad, RopeFrequencyFactorsAreRefusedNotIgnored) {
  auto err = load_error(tiny_model_with([](GgufWriter& w) {
    std::vector<uint8_t> ones(32 * 4);
    const float one = 1.0f;
    for (size_t i = 0; i < 32; ++i) std::memcpy(ones.data() + 4 * i, &one, 4);
    w.add_tensor("rope_freqs.weight", TensorType::F32, {32}, ones);
  }));
  EXPECT_NE(err.find("rope_freqs.weight"), std::string::npos) << err;
}

TEST(ModelLoad, MissingHyperparameterIsNamed) {
  // Rebuild without the block count.
  auto plan =
      plan_synthetic_model(*find_model_preset("tiny"), Arch::Llama, *find_quant_scheme("f32"), 7);
  GgufFile base = GgufFile::from_bytes(synthetic_model_bytes(plan), "tiny.gguf");
  GgufWriter w;
  for (const auto& e : base.metadata())
    if (e.key != "llama.block_count") w.set(e.key, e.value);
  for (const auto& t : base.tensors())
    w.add_tensor(t.name, t.type, t.ne, std::vector<uint8_t>(t.data, t.data + t.n_bytes));
  auto err = load_error(w.to_bytes());
  EXPECT_NE(err.find("llama.block_count"), std::string::npos) << err;
}

}  // namespace
}  // namespace lockstep
