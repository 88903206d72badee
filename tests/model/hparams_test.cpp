// What the model loader refuses, on a valid tiny synthetic model with one thing changed: each
// refusal is an InputError (exit 2) naming the file and what is wrong, before any compute.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>

#include "gguf/gguf_reader.h"
#include "gguf/gguf_writer.h"
#include "model/hparams.h"
#include "model/model.h"
#include "model/presets.h"
#include "model/synthetic.h"
#include "model/synthetic_quant_mix.h"
#include "tokenizer/vocab.h"
#include "util/error.h"

namespace lockstep {
namespace {

using gguf::GgufFile;
using gguf::GgufWriter;
using gguf::Value;

// The tiny llama preset in F32, rebuilt with its metadata edited and extra tensors added.
std::vector<uint8_t> tiny_model_with(const std::function<void(GgufWriter&)>& edit,
                                     Arch arch = Arch::Llama) {
  auto plan = plan_synthetic_model(*find_model_preset("tiny"), arch, *find_quant_scheme("f32"), 7);
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
      [](GgufWriter& w) { w.set("llama.rope.scaling.type", Value::of_string("longrope")); }));
  EXPECT_NE(err.find("rope scaling type 'longrope'"), std::string::npos) << err;
  EXPECT_NE(err.find("(supported: none, linear, yarn)"), std::string::npos) << err;
}

// Qwen2.5's YaRN keys: factor 4 over 32768 positions; attn_factor and the betas optional; the
// original context defaults to the trained one; nonsense is refused naming the key.
TEST(ModelLoad, YarnRopeScalingKeys) {
  auto load = [](const std::function<void(GgufWriter&)>& edit) {
    return Model::from_file(
        GgufFile::from_bytes(tiny_model_with(edit, Arch::Qwen2), "tiny-yarn.gguf"));
  };
  Model m = load([](GgufWriter& w) {
    w.set("qwen2.rope.scaling.type", Value::of_string("yarn"));
    w.set("qwen2.rope.scaling.factor", Value::of_f32(4.0f));
    w.set("qwen2.rope.scaling.original_context_length", Value::of_u32(32768));
  });
  EXPECT_TRUE(m.hp.rope_yarn);
  EXPECT_EQ(m.hp.rope_freq_scale, 0.25f);
  EXPECT_EQ(m.hp.rope_yarn_orig_ctx, 32768);
  EXPECT_EQ(m.hp.rope_attn_factor, 1.0f);
  EXPECT_EQ(m.hp.rope_yarn_beta_fast, 32.0f);
  EXPECT_EQ(m.hp.rope_yarn_beta_slow, 1.0f);
  const auto features = extended_features(m.hp);
  EXPECT_NE(std::find(features.begin(), features.end(), "YaRN rope scaling"), features.end());
  Model d = load([](GgufWriter& w) {
    w.set("qwen2.rope.scaling.type", Value::of_string("yarn"));
    w.set("qwen2.rope.scaling.factor", Value::of_f32(2.0f));
    w.set("qwen2.rope.scaling.attn_factor", Value::of_f32(0.8f));
  });
  EXPECT_EQ(d.hp.rope_yarn_orig_ctx, d.hp.n_ctx_train);
  EXPECT_EQ(d.hp.rope_attn_factor, 0.8f);
  for (const auto& [key, value] :
       {std::pair<std::string, float>{"qwen2.rope.scaling.factor", 0.5f},
        {"qwen2.rope.scaling.attn_factor", -1.0f},
        {"qwen2.rope.scaling.yarn_beta_fast", std::numeric_limits<float>::quiet_NaN()}}) {
    auto err = load_error(tiny_model_with(
        [&](GgufWriter& w) {
          w.set("qwen2.rope.scaling.type", Value::of_string("yarn"));
          w.set(key, Value::of_f32(value));
        },
        Arch::Qwen2));
    EXPECT_NE(err.find("'" + key + "'"), std::string::npos) << err;
  }
  auto err = load_error(tiny_model_with(
      [](GgufWriter& w) {
        w.set("qwen2.rope.scaling.type", Value::of_string("yarn"));
        w.set("qwen2.rope.scaling.yarn_beta_slow", Value::of_f32(64.0f));
      },
      Arch::Qwen2));
  EXPECT_NE(err.find("yarn_beta_slow exceeds yarn_beta_fast"), std::string::npos) << err;
}

std::vector<uint8_t> f32_bytes(const std::vector<float>& v) {
  std::vector<uint8_t> out(v.size() * 4);
  std::memcpy(out.data(), v.data(), out.size());
  return out;
}

// Llama 3.1+ rope frequency factors: one per rotated pair, finite and positive, bound to the model.
TEST(ModelLoad, RopeFrequencyFactorsAreBoundAndChecked) {
  // The tiny preset: head size 64, so 32 pairs.
  std::vector<float> factors(32);
  for (size_t i = 0; i < factors.size(); ++i) factors[i] = 1.0f + float(i);
  auto bytes = tiny_model_with([&](GgufWriter& w) {
    w.add_tensor("rope_freqs.weight", TensorType::F32, {32}, f32_bytes(factors));
  });
  Model m = Model::from_file(GgufFile::from_bytes(std::move(bytes), "tiny.gguf"));
  EXPECT_TRUE(m.hp.has_rope_freqs);
  ASSERT_TRUE(m.rope_freqs.present());
  EXPECT_EQ(m.rope_freqs.cols, 32);
  EXPECT_EQ(extended_features(m.hp).size(), 1u);

  auto err = load_error(tiny_model_with([&](GgufWriter& w) {
    w.add_tensor("rope_freqs.weight", TensorType::F32, {16}, f32_bytes(std::vector<float>(16, 1)));
  }));
  EXPECT_NE(err.find("tensor 'rope_freqs.weight' has shape [16], expected [32]"), std::string::npos)
      << err;
  // Values are checked when a backend reads them (loading reads no tensor data).
  EXPECT_EQ(rope_freq_factors(m), factors);
  for (const float bad : {0.0f, -1.0f, std::numeric_limits<float>::quiet_NaN(),
                          std::numeric_limits<float>::infinity()}) {
    auto f = factors;
    f[9] = bad;
    Model bad_model = Model::from_file(GgufFile::from_bytes(
        tiny_model_with([&](GgufWriter& w) {
          w.add_tensor("rope_freqs.weight", TensorType::F32, {32}, f32_bytes(f));
        }),
        "bad.gguf"));
    try {
      (void)rope_freq_factors(bad_model);
      ADD_FAILURE() << "factor " << bad << " accepted";
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find("bad.gguf: tensor 'rope_freqs.weight' element 9"),
                std::string::npos)
          << e.what();
    }
  }
}

// Mixture-of-experts files say so, instead of naming a missing ffn tensor.
TEST(ModelLoad, MixtureOfExpertsIsRefusedByName) {
  auto err = load_error(tiny_model_with([](GgufWriter& w) {
    w.add_tensor("blk.0.ffn_gate_exps.weight", TensorType::F32, {4, 4, 2},
                 f32_bytes(std::vector<float>(32, 0.5f)));
  }));
  EXPECT_NE(err.find("mixture-of-experts is not supported"), std::string::npos) << err;
  err = load_error(
      tiny_model_with([](GgufWriter& w) { w.set("llama.expert_count", Value::of_u32(8)); }));
  EXPECT_NE(err.find("mixture-of-experts is not supported"), std::string::npos) << err;
  // A count of zero is a dense model.
  auto bytes =
      tiny_model_with([](GgufWriter& w) { w.set("llama.expert_count", Value::of_u32(0)); });
  EXPECT_NO_THROW(Model::from_file(GgufFile::from_bytes(std::move(bytes), "tiny.gguf")));
}

// The architectures beyond llama/qwen2 on the tiny synthetic model relabelled: each names the
// tensor it needs first, gemma3 the sliding window it cannot run without.
TEST(ModelLoad, NewArchitecturesNameWhatTheyNeed) {
  struct Case {
    const char* arch;
    const char* needs;
  };
  for (const Case c : {Case{"qwen3", "missing tensor 'blk.0.attn_q_norm.weight'"},
                       Case{"gemma2", "missing tensor 'blk.0.post_attention_norm.weight'"},
                       Case{"gemma3", "missing metadata key 'gemma3.attention.sliding_window'"},
                       // Separate q/k/v are accepted for phi3; its ffn_up holds gate and up.
                       Case{"phi3",
                            "tensor 'blk.0.ffn_up.weight' has shape [256, 512], "
                            "expected [256, 1024]"}}) {
    SCOPED_TRACE(c.arch);
    auto plan =
        plan_synthetic_model(*find_model_preset("tiny"), Arch::Llama, *find_quant_scheme("f32"), 7);
    GgufFile base = GgufFile::from_bytes(synthetic_model_bytes(plan), "tiny.gguf");
    GgufWriter w;
    for (const auto& e : base.metadata()) {
      std::string key = e.key;
      if (key.rfind("llama.", 0) == 0) key = std::string(c.arch) + key.substr(5);
      w.set(key, e.value);
    }
    w.set("general.architecture", Value::of_string(c.arch));
    for (const auto& t : base.tensors())
      w.add_tensor(t.name, t.type, t.ne, std::vector<uint8_t>(t.data, t.data + t.n_bytes));
    const std::string err = load_error(w.to_bytes());
    EXPECT_NE(err.find(c.needs), std::string::npos) << err;
  }
}

// phi3's 128k models scale rope with per-dimension LongRoPE factors, which lockstep does not
// implement: refused by name rather than run with the short-context rope.
TEST(ModelLoad, Phi3LongRopeIsRefusedByName) {
  Model m = Model::from_file(
      GgufFile::from_bytes(tiny_model_with([](GgufWriter&) {}, Arch::Phi3), "tiny-phi3.gguf"));
  EXPECT_TRUE(m.hp.fused_qkv);
  EXPECT_TRUE(m.hp.fused_gate_up);
  for (const char* name : {"rope_factors_long.weight", "rope_factors_short.weight"}) {
    auto err = load_error(tiny_model_with(
        [&](GgufWriter& w) {
          w.add_tensor(name, TensorType::F32, {32}, f32_bytes(std::vector<float>(32, 1.5f)));
        },
        Arch::Phi3));
    EXPECT_NE(err.find("phi3 LongRoPE"), std::string::npos) << err;
  }
}

// gemma2's keys are optional (the Gemma 2 release's values), gemma3's layer pattern is fixed.
TEST(ModelLoad, GemmaLayerPatternsAndDefaults) {
  HParams hp;
  hp.sliding_window = 8;
  hp.swa_pattern = 6;
  for (int64_t l = 0; l < 12; ++l) EXPECT_EQ(hp.layer_slides(l), l % 6 != 5) << l;
  hp.swa_pattern = 2;
  for (int64_t l = 0; l < 4; ++l) EXPECT_EQ(hp.layer_slides(l), l % 2 == 0) << l;
  hp.sliding_window = 0;
  EXPECT_FALSE(hp.layer_slides(0));
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

// Issue 9: a file of a few MB claiming 2^31 (or 2e8) layers made inspect and run build tensor
// names for every claimed layer before any tensor was checked (7 GB after 20 s). The layer count
// is now refused at read_hparams, before anything is sized by it.
TEST(ModelLoad, BlockCountBeyondTheFilesTensorsIsRefusedBeforeAnythingIsSized) {
  for (const Arch arch : {Arch::Llama, Arch::Qwen2}) {
    for (const uint64_t layers : {uint64_t(1) << 31, uint64_t(200000000), uint64_t(1000)}) {
      const std::string key = std::string(arch_name(arch)) + ".block_count";
      const std::vector<uint8_t> bytes =
          tiny_model_with([&](GgufWriter& w) { w.set(key, Value::of_u64(layers)); }, arch);
      const GgufFile f = GgufFile::from_bytes(bytes, "edited.gguf");
      std::string err;
      try {
        (void)read_hparams(f);
      } catch (const InputError& e) {
        err = e.what();
      }
      // Checked before Model::from_file so that a regression fails here instead of allocating.
      ASSERT_NE(err.find("'" + key + "' = " + std::to_string(layers) + " is more layers than"),
                std::string::npos)
          << err;
      EXPECT_EQ(err.find('\n'), std::string::npos);
      EXPECT_EQ(load_error(bytes), err);
    }
  }
}

// A count within the bound but beyond the file's layers is told which tensor is missing.
TEST(ModelLoad, OneLayerMoreThanTheFileHoldsNamesTheMissingTensor) {
  for (const Arch arch : {Arch::Llama, Arch::Qwen2}) {
    const std::string key = std::string(arch_name(arch)) + ".block_count";
    const std::string err =
        load_error(tiny_model_with([&](GgufWriter& w) { w.set(key, Value::of_u64(3)); }, arch));
    EXPECT_NE(err.find("missing tensor 'blk.2."), std::string::npos) << err;
    EXPECT_EQ(err.find('\n'), std::string::npos);
  }
}

TEST(ModelLoad, CountsBeyondEveryTensorDimensionAreRefused) {
  for (const char* key : {"llama.embedding_length", "llama.feed_forward_length"}) {
    auto err = load_error(tiny_model_with([&](GgufWriter& w) {
      w.set(key, Value::of_u32(1u << 30));
      w.set("llama.attention.key_length", Value::of_u32(64));  // keep head size valid
    }));
    EXPECT_NE(err.find(std::string("'") + key + "' = 1073741824 exceeds every tensor dimension"),
              std::string::npos)
        << err;
  }
}

// Issue 9: rope.scale_linear 0 or NaN passed validation (the rope angles became inf/NaN); every
// float hyperparameter must be finite and in a sane range, refused with its key named.
TEST(ModelLoad, NonFiniteOrAbsurdFloatHyperparametersAreRefusedNamingTheKey) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  struct Case {
    const char* key;
    float value;
  };
  const Case cases[] = {
      {"llama.rope.scale_linear", 0.0f},
      {"llama.rope.scale_linear", nan},
      {"llama.rope.scale_linear", inf},
      {"llama.rope.scale_linear", -2.0f},
      {"llama.rope.scale_linear", 1e9f},
      {"llama.rope.freq_base", nan},
      {"llama.rope.freq_base", inf},
      {"llama.rope.freq_base", 0.5f},
      {"llama.attention.layer_norm_rms_epsilon", nan},
      {"llama.attention.layer_norm_rms_epsilon", 0.0f},
      {"llama.attention.layer_norm_rms_epsilon", inf},
      {"llama.rope.scaling.factor", nan},
      {"llama.rope.scaling.factor", inf},
      {"llama.rope.scaling.factor", 0.5f},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(std::string(c.key) + " = " + std::to_string(c.value));
    auto err = load_error(tiny_model_with([&](GgufWriter& w) {
      w.set(c.key, Value::of_f32(c.value));
      if (std::string(c.key).find("scaling.factor") != std::string::npos)
        w.set("llama.rope.scaling.type", Value::of_string("linear"));
    }));
    EXPECT_NE(err.find(std::string("metadata key '") + c.key + "' = "), std::string::npos) << err;
    EXPECT_NE(err.find("out of range"), std::string::npos) << err;
    EXPECT_EQ(err.find('\n'), std::string::npos) << err;
  }
}

TEST(ModelLoad, SaneFloatHyperparametersStillLoad) {
  auto bytes = tiny_model_with([](GgufWriter& w) {
    w.set("llama.rope.scale_linear", Value::of_f32(4.0f));
    w.set("llama.rope.freq_base", Value::of_f32(1e6f));
    w.set("llama.attention.layer_norm_rms_epsilon", Value::of_f32(1e-6f));
  });
  Model m = Model::from_file(GgufFile::from_bytes(std::move(bytes), "tiny.gguf"));
  EXPECT_FLOAT_EQ(m.hp.rope_freq_scale, 0.25f);
  EXPECT_FLOAT_EQ(m.hp.rope_freq_base, 1e6f);
}

// Issue 9: inspect refused a tokenizer whose size differs from the embedding rows, run accepted
// it and failed later naming a token id. One check, used by both.
TEST(ModelLoad, TokenizerSizeMustMatchTheEmbeddingRows) {
  auto bytes = tiny_model_with([](GgufWriter& w) {
    std::vector<std::string> tokens;
    for (int k = 0; k < 600; ++k) tokens.push_back(std::to_string(k).insert(0, 1, 't'));
    w.set("tokenizer.ggml.tokens", Value::of_strings(tokens));
    w.set("tokenizer.ggml.token_type", Value::of_i32s(std::vector<int32_t>(600, 1)));
  });
  Model m = Model::from_file(GgufFile::from_bytes(std::move(bytes), "edited.gguf"));
  const auto vocab = tokenizer::Vocab::from_gguf(*m.file);
  try {
    check_vocab_matches(m, vocab);
    ADD_FAILURE() << "a 600-token tokenizer on 512 embedding rows was accepted";
  } catch (const InputError& e) {
    EXPECT_STREQ(e.what(),
                 "edited.gguf: tokenizer has 600 tokens but token_embd.weight has 512 rows");
  }
  auto good = tiny_model_with([](GgufWriter&) {});
  Model ok = Model::from_file(GgufFile::from_bytes(std::move(good), "tiny.gguf"));
  EXPECT_NO_THROW(check_vocab_matches(ok, tokenizer::Vocab::from_gguf(*ok.file)));
}

// Found by fuzzing: strings quoted from the file broke the one-line error message.
TEST(ModelLoad, StringsFromTheFileStayOnOneLineInErrors) {
  for (const char* key : {"general.architecture", "llama.rope.scaling.type"}) {
    auto err =
        load_error(tiny_model_with([&](GgufWriter& w) { w.set(key, Value::of_string("x\ny")); }));
    EXPECT_NE(err.find("'x\\ny'"), std::string::npos) << err;
  }
}

}  // namespace
}  // namespace lockstep
