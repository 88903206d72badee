// make-model's synthetic models: presets match the published configurations, every preset's
// tensor plan is what the model binding expects, the Q4_K_M mix follows llama.cpp's rule,
// the bytes are deterministic, the weights have the planned statistics, the tokenizer works and
// activations stay sane through a deep stack of layers.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>
#include <numbers>
#include <random>
#include <set>

#include "backend/cpu/reference_backend.h"
#include "gguf/gguf_reader.h"
#include "gguf/gguf_test_util.h"
#include "model/model.h"
#include "model/presets.h"
#include "model/synthetic.h"
#include "model/synthetic_vocab.h"
#include "quant/quantize.h"
#include "tokenizer/vocab.h"
#include "util/error.h"

namespace lockstep::gguf_test {
namespace {

const QuantScheme& scheme(const std::string& name) {
  const QuantScheme* q = find_quant_scheme(name);
  if (!q) throw std::runtime_error("no scheme " + name);
  return *q;
}

// A file with the plan's header, extended (sparsely) to full size: enough for the reader and the
// model binding, which read no tensor data, without writing gigabytes. (inspect scans the data
// for non-finite values: it reads the holes as zeros.)
std::string sparse_model_file(const SyntheticPlan& plan) {
  const gguf::GgufWriter w = synthetic_writer(plan);
  const std::string path = temp_path(plan.preset.name + "-" + plan.quant.name + ".gguf");
  write_file(path, w.header());
  EXPECT_EQ(truncate(path.c_str(), off_t(w.file_size())), 0);
  return path;
}

TEST(SyntheticPresets, MatchPublishedConfigs) {
  struct Want {
    const char* name;
    int64_t embd, layers, heads, kv, ff, vocab;
    float rope, eps;
    bool tied;
  };
  // Hugging Face config.json of each model (see the task brief; double-checked by hand).
  const Want want[] = {
      {"qwen2.5-0.5b", 896, 24, 14, 2, 4864, 151936, 1e6f, 1e-6f, true},
      {"qwen2.5-1.5b", 1536, 28, 12, 2, 8960, 151936, 1e6f, 1e-6f, true},
      {"qwen2.5-7b", 3584, 28, 28, 4, 18944, 152064, 1e6f, 1e-6f, false},
      {"llama-3.2-1b", 2048, 16, 32, 8, 8192, 128256, 500000.0f, 1e-5f, true},
      {"llama-3.1-8b", 4096, 32, 32, 8, 14336, 128256, 500000.0f, 1e-5f, false},
      {"qwen3-0.6b", 1024, 28, 16, 8, 3072, 151936, 1e6f, 1e-6f, true},
      {"smollm2-135m", 576, 30, 9, 3, 1536, 49152, 100000.0f, 1e-5f, true},
      {"qwen3-8b", 4096, 36, 32, 8, 12288, 151936, 1e6f, 1e-6f, false},
      {"mistral-7b", 4096, 32, 32, 8, 14336, 32768, 1e6f, 1e-5f, false},
      {"phi-3-mini", 3072, 32, 32, 32, 8192, 32064, 10000.0f, 1e-5f, false},
      {"gemma-3-1b", 1152, 26, 4, 1, 6912, 262144, 1e6f, 1e-6f, true},
      {"gemma-3-4b", 2560, 34, 8, 4, 10240, 262208, 1e6f, 1e-6f, true},
      {"gemma-2-2b", 2304, 26, 8, 4, 9216, 256000, 10000.0f, 1e-6f, true},
  };
  for (const auto& w : want) {
    SCOPED_TRACE(w.name);
    const ModelPreset* p = find_model_preset(w.name);
    ASSERT_NE(p, nullptr);
    EXPECT_EQ(p->n_embd, w.embd);
    EXPECT_EQ(p->n_layer, w.layers);
    EXPECT_EQ(p->n_head, w.heads);
    EXPECT_EQ(p->n_head_kv, w.kv);
    EXPECT_EQ(p->n_ff, w.ff);
    EXPECT_EQ(p->n_vocab, w.vocab);
    EXPECT_EQ(p->rope_freq_base, w.rope);
    EXPECT_EQ(p->rms_eps, w.eps);
    EXPECT_EQ(p->tied_embeddings, w.tied);
  }
  const ModelPreset* tiny = find_model_preset("tiny");
  ASSERT_NE(tiny, nullptr);
  EXPECT_FALSE(tiny->arch.has_value());
  EXPECT_EQ(find_model_preset("qwen2.5-0.5b")->arch, Arch::Qwen2);
  EXPECT_EQ(find_model_preset("smollm2-135m")->arch, Arch::Llama);
  EXPECT_EQ(find_model_preset("gpt-5"), nullptr);
}

// Every preset and type: the plan has exactly the tensors the model binding expects, with the
// expected shapes, and quantized matrices use a type the row length allows.
TEST(SyntheticPlan, EveryPresetMatchesExpectedTensors) {
  for (const auto& preset : model_presets()) {
    for (const auto& q : quant_schemes()) {
      for (Arch arch :
           {Arch::Qwen2, Arch::Qwen3, Arch::Llama, Arch::Phi3, Arch::Gemma2, Arch::Gemma3}) {
        if (preset.arch && *preset.arch != arch) continue;
        SCOPED_TRACE(preset.name + " " + q.name + " " + arch_name(arch));
        const SyntheticPlan plan = plan_synthetic_model(preset, arch, q, 7);
        std::map<std::string, const SyntheticTensor*> by_name;
        for (const auto& t : plan.tensors) {
          EXPECT_TRUE(by_name.emplace(t.name, &t).second) << "duplicate " << t.name;
          EXPECT_EQ(t.ne[0] % tensor_type_info(t.type).block_elems, 0) << t.name;
          if (t.ne.size() == 1) {
            EXPECT_EQ(t.type, TensorType::F32) << t.name;
          }
        }
        size_t matched = 0;
        for (const auto& e : expected_tensors(plan.hp)) {
          auto it = by_name.find(e.name);
          if (it == by_name.end()) {
            EXPECT_TRUE(e.optional && plan.hp.tied_embeddings) << "missing " << e.name;
            continue;
          }
          EXPECT_EQ(it->second->ne, e.ne) << e.name;
          ++matched;
        }
        EXPECT_EQ(matched, plan.tensors.size()) << "the plan has tensors the binding ignores";
        const size_t per_layer = arch == Arch::Qwen2    ? 12
                                 : arch == Arch::Qwen3  ? 11
                                 : arch == Arch::Phi3   ? 6
                                 : arch == Arch::Gemma2 ? 11
                                 : arch == Arch::Gemma3 ? 13
                                                        : 9;
        EXPECT_EQ(plan.tensors.size(), 2 + size_t(preset.n_layer) * per_layer +
                                           (preset.tied_embeddings ? 0 : 1) +
                                           (preset.rope_scaling ? 1 : 0));
      }
    }
  }
}

// The Llama 3.1 presets carry their rope scaling as llama.cpp's converter writes it; Qwen3 its
// own head size. Pair i of head size d has wavelength 2 pi * 500000^(2i/d): below 8192/4 = 2048
// the factor is 1, above 8192 it is `factor`, in between it rises monotonically. For d = 128
// that band is pairs 29..34 (500000^(i/64) between 2048 / 2pi and 8192 / 2pi).
TEST(SyntheticPresets, LlamaRopeScalingAndQwen3HeadSize) {
  for (const char* name : {"llama-3.2-1b", "llama-3.1-8b"}) {
    SCOPED_TRACE(name);
    const ModelPreset& p = *find_model_preset(name);
    ASSERT_TRUE(p.rope_scaling.has_value());
    const double factor = p.rope_scaling->factor;
    EXPECT_EQ(factor, std::string(name) == "llama-3.2-1b" ? 32 : 8);
    const auto plan = plan_synthetic_model(p, std::nullopt, scheme("q4_k_m"), 1);
    EXPECT_TRUE(plan.hp.has_rope_freqs);
    const SyntheticTensor* rf = nullptr;
    for (const auto& t : plan.tensors)
      if (t.name == "rope_freqs.weight") rf = &t;
    ASSERT_NE(rf, nullptr);
    EXPECT_EQ(rf->type, TensorType::F32);
    const int64_t d = plan.hp.head_dim;
    ASSERT_EQ(int64_t(rf->values.size()), d / 2);
    int in_band = 0;
    for (int64_t i = 0; i < d / 2; ++i) {
      const double wavelength = 2 * std::numbers::pi * std::pow(500000.0, 2.0 * double(i) / d);
      if (wavelength < 2048) {
        EXPECT_EQ(rf->values[i], 1.0f) << i;
      } else if (wavelength > 8192) {
        EXPECT_FLOAT_EQ(rf->values[i], float(factor)) << i;
      } else {
        ++in_band;
        EXPECT_GT(rf->values[i], 1.0f) << i;
        EXPECT_LT(rf->values[i], float(factor)) << i;
      }
      if (i > 0) EXPECT_GE(rf->values[i], rf->values[i - 1]) << i;
    }
    EXPECT_GT(in_band, 0);
    if (d == 128) {
      EXPECT_EQ(rf->values[28], 1.0f);
      EXPECT_GT(rf->values[29], 1.0f);
      EXPECT_LT(rf->values[34], float(factor));
      EXPECT_FLOAT_EQ(rf->values[35], float(factor));
    }
    // The file carries them and the loader binds them.
    const std::string path = sparse_model_file(plan);
    Model m = Model::load(path);
    EXPECT_TRUE(m.hp.has_rope_freqs);
    std::filesystem::remove(path);
  }
  const auto q3 =
      plan_synthetic_model(*find_model_preset("qwen3-0.6b"), std::nullopt, scheme("f32"), 1);
  EXPECT_EQ(q3.hp.arch, Arch::Qwen3);
  EXPECT_EQ(q3.hp.head_dim, 128);
  EXPECT_TRUE(q3.hp.has_qk_norm);
  EXPECT_FALSE(q3.hp.has_qkv_bias);
  const std::string path = sparse_model_file(q3);
  Model m = Model::load(path);
  EXPECT_EQ(m.hp.head_dim, 128);
  EXPECT_EQ(m.hp.n_head * m.hp.head_dim, 2048);
  EXPECT_TRUE(m.hp.has_qk_norm);
  std::filesystem::remove(path);
}

TEST(SyntheticPlan, ArchitectureRules) {
  const ModelPreset& tiny = *find_model_preset("tiny");
  EXPECT_THROW(plan_synthetic_model(tiny, std::nullopt, scheme("f32"), 1), InputError);
  EXPECT_THROW(
      plan_synthetic_model(*find_model_preset("qwen2.5-0.5b"), Arch::Llama, scheme("f32"), 1),
      InputError);
  const auto q =
      plan_synthetic_model(*find_model_preset("qwen2.5-0.5b"), std::nullopt, scheme("f32"), 1);
  EXPECT_EQ(q.hp.arch, Arch::Qwen2);
  EXPECT_TRUE(q.hp.has_qkv_bias);
  EXPECT_EQ(q.hp.head_dim, 64);
}

// Layer sets worked out by hand from llama.cpp's use_more_bits (n/8 first, the last n - 7n/8,
// and (i - n/8) % 3 == 2 in between).
const std::set<int64_t> kMoreBits24 = {0, 1, 2, 5, 8, 11, 14, 17, 20, 21, 22, 23};
const std::set<int64_t> kMoreBits28 = {0, 1, 2, 5, 8, 11, 14, 17, 20, 23, 24, 25, 26, 27};

TEST(SyntheticQ4KM, Qwen25_7bMix) {
  const auto plan =
      plan_synthetic_model(*find_model_preset("qwen2.5-7b"), std::nullopt, scheme("q4_k_m"), 1);
  std::map<std::string, int> count;
  for (const auto& t : plan.tensors) {
    SCOPED_TRACE(t.name);
    count[tensor_type_info(t.type).name]++;
    if (t.ne.size() == 1) {
      EXPECT_EQ(t.type, TensorType::F32);
    } else if (t.name == "output.weight") {
      EXPECT_EQ(t.type, TensorType::Q6_K);
    } else if (t.name == "token_embd.weight") {
      EXPECT_EQ(t.type, TensorType::Q4_K);  // untied: the embedding is not the output matrix
    } else if (t.name.find("attn_v.weight") != std::string::npos ||
               t.name.find("ffn_down") != std::string::npos) {
      EXPECT_EQ(t.type, kMoreBits28.count(t.layer) ? TensorType::Q6_K : TensorType::Q4_K);
    } else {
      EXPECT_EQ(t.type, TensorType::Q4_K);
    }
  }
  EXPECT_EQ(count["Q6_K"], 1 + 2 * 14);
  EXPECT_EQ(plan.quant.file_type, 15u);
}

// llama.cpp's Q4_K_M for Phi-3 mini: the fused attn_qkv gets Q5_K in every layer, ffn_down Q6_K
// in the use_more_bits layers, output Q6_K, the rest (the fused ffn_up included) Q4_K.
const std::set<int64_t> kMoreBits32 = {0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31};

TEST(SyntheticQ4KM, Phi3MiniMixAndFusedLayout) {
  const auto plan =
      plan_synthetic_model(*find_model_preset("phi-3-mini"), std::nullopt, scheme("q4_k_m"), 1);
  EXPECT_EQ(plan.hp.arch, Arch::Phi3);
  size_t qkv = 0, up = 0;
  for (const auto& t : plan.tensors) {
    SCOPED_TRACE(t.name);
    if (t.ne.size() == 1) {
      EXPECT_EQ(t.type, TensorType::F32);
    } else if (t.name == "output.weight") {
      EXPECT_EQ(t.type, TensorType::Q6_K);
    } else if (t.name.find("attn_qkv.weight") != std::string::npos) {
      EXPECT_EQ(t.type, TensorType::Q5_K);
      EXPECT_EQ(t.ne, (std::vector<int64_t>{3072, 3 * 3072}));
      ++qkv;
    } else if (t.name.find("ffn_down") != std::string::npos) {
      EXPECT_EQ(t.type, kMoreBits32.count(t.layer) ? TensorType::Q6_K : TensorType::Q4_K);
    } else {
      EXPECT_EQ(t.type, TensorType::Q4_K);
      if (t.name.find("ffn_up") != std::string::npos) {
        EXPECT_EQ(t.ne, (std::vector<int64_t>{3072, 2 * 8192}));
        ++up;
      }
    }
    EXPECT_EQ(t.name.find("ffn_gate"), std::string::npos);
    EXPECT_EQ(t.name.find("attn_q."), std::string::npos);
  }
  EXPECT_EQ(qkv, 32u);
  EXPECT_EQ(up, 32u);
  for (int64_t l = 0; l < 32; ++l) EXPECT_EQ(use_more_bits(l, 32), kMoreBits32.count(l) > 0) << l;

  // The loader binds q, k, v and gate, up as row ranges of the fused matrices.
  const std::string path = sparse_model_file(plan);
  Model m = Model::load(path);
  EXPECT_TRUE(m.hp.fused_qkv);
  EXPECT_TRUE(m.hp.fused_gate_up);
  EXPECT_EQ(m.hp.rope_type, RopeType::Neox);
  const LayerWeights& L = m.layers[5];
  const gguf::TensorInfo* fused = m.file->find_tensor("blk.5.attn_qkv.weight");
  ASSERT_NE(fused, nullptr);
  EXPECT_EQ(L.wq.data, fused->data);
  EXPECT_EQ(L.wq.rows, 3072);
  EXPECT_EQ(L.wk.data, fused->data + 3072 * L.wq.row_bytes);
  EXPECT_EQ(L.wv.data, fused->data + 2 * 3072 * L.wq.row_bytes);
  EXPECT_EQ(L.wv.rows, 3072);
  EXPECT_EQ(L.wq.type, TensorType::Q5_K);
  const gguf::TensorInfo* up_fused = m.file->find_tensor("blk.5.ffn_up.weight");
  ASSERT_NE(up_fused, nullptr);
  EXPECT_EQ(L.ffn_gate.data, up_fused->data);
  EXPECT_EQ(L.ffn_gate.rows, 8192);
  EXPECT_EQ(L.ffn_up.data, up_fused->data + 8192 * L.ffn_gate.row_bytes);
  EXPECT_EQ(L.ffn_up.rows, 8192);
  std::filesystem::remove(path);
}

// The Gemma presets: the files read back with the sliding windows, rope bases and scaling,
// soft-capping and head size of the real models, and the tied embedding is the output matrix
// for Q4_K_M (Q6_K, or Q8_0 where 1152-wide rows rule Q6_K out).
TEST(SyntheticPresets, GemmaFilesReadBackAsTheRealModels) {
  struct Want {
    const char* name;
    Arch arch;
    int64_t window;
    float scale, softcap;
    TensorType embd;
  };
  for (const Want& w : {Want{"gemma-3-1b", Arch::Gemma3, 512, 1.0f, 0, TensorType::Q8_0},
                        Want{"gemma-3-4b", Arch::Gemma3, 1024, 0.125f, 0, TensorType::Q6_K},
                        Want{"gemma-2-2b", Arch::Gemma2, 4096, 1.0f, 50.0f, TensorType::Q6_K}}) {
    SCOPED_TRACE(w.name);
    const auto plan =
        plan_synthetic_model(*find_model_preset(w.name), std::nullopt, scheme("q4_k_m"), 1);
    EXPECT_EQ(plan.tensors.front().name, "token_embd.weight");
    EXPECT_EQ(plan.tensors.front().type, w.embd);
    const std::string path = sparse_model_file(plan);
    Model m = Model::load(path);
    EXPECT_EQ(m.hp.arch, w.arch);
    EXPECT_EQ(m.hp.head_dim, 256);
    EXPECT_EQ(m.hp.sliding_window, w.window);
    EXPECT_EQ(m.hp.swa_pattern, w.arch == Arch::Gemma3 ? 6 : 2);
    EXPECT_EQ(m.hp.rope_freq_scale, w.scale);
    EXPECT_EQ(m.hp.rope_freq_scale_swa, w.arch == Arch::Gemma3 ? 1.0f : w.scale);
    EXPECT_EQ(m.hp.rope_freq_base_swa, w.arch == Arch::Gemma3 ? 10000.0f : m.hp.rope_freq_base);
    EXPECT_EQ(m.hp.attn_softcap, w.softcap);
    EXPECT_EQ(m.hp.has_qk_norm, w.arch == Arch::Gemma3);
    EXPECT_TRUE(m.hp.has_post_norms);
    EXPECT_TRUE(m.hp.tied_embeddings);
    EXPECT_EQ(m.hp.embd_scale, plan.hp.embd_scale);
    EXPECT_EQ(m.hp.sliding_window, plan.hp.sliding_window);
    EXPECT_EQ(m.hp.final_softcap, plan.hp.final_softcap);
    std::filesystem::remove(path);
  }
}

TEST(SyntheticQ4KM, Qwen25_05bMixFallsBackFor896WideRows) {
  // 896 is not a multiple of 256: Q4_K falls back to Q5_0 and Q6_K to Q8_0 for every matrix
  // whose rows are 896 long; ffn_down (4864 = 19 * 256) keeps K-quants.
  const auto plan =
      plan_synthetic_model(*find_model_preset("qwen2.5-0.5b"), std::nullopt, scheme("q4_k_m"), 1);
  for (const auto& t : plan.tensors) {
    SCOPED_TRACE(t.name);
    const bool more = kMoreBits24.count(t.layer) > 0;
    if (t.ne.size() == 1) {
      EXPECT_EQ(t.type, TensorType::F32);
    } else if (t.name == "token_embd.weight") {
      EXPECT_EQ(t.type, TensorType::Q8_0);  // tied: treated as the output matrix
    } else if (t.name.find("attn_v.weight") != std::string::npos) {
      EXPECT_EQ(t.type, more ? TensorType::Q8_0 : TensorType::Q5_0);
    } else if (t.name.find("ffn_down") != std::string::npos) {
      EXPECT_EQ(t.type, more ? TensorType::Q6_K : TensorType::Q4_K);
    } else {
      EXPECT_EQ(t.type, TensorType::Q5_0);
    }
  }
  EXPECT_EQ(plan.tensors.size(), 2u + 24u * 12u);
}

TEST(SyntheticQ4KM, UseMoreBitsAgreesWithTheHandWorkedSets) {
  for (int64_t l = 0; l < 24; ++l) EXPECT_EQ(use_more_bits(l, 24), kMoreBits24.count(l) > 0) << l;
  for (int64_t l = 0; l < 28; ++l) EXPECT_EQ(use_more_bits(l, 28), kMoreBits28.count(l) > 0) << l;
}

TEST(SyntheticQ4KM, OtherTypesFollowTheOutputRule) {
  const auto& p = *find_model_preset("llama-3.2-1b");  // tied, 2048 wide
  auto type_of = [](const SyntheticPlan& plan, const std::string& name) {
    for (const auto& t : plan.tensors)
      if (t.name == name) return t.type;
    throw std::runtime_error("no tensor " + name);
  };
  const auto q40 = plan_synthetic_model(p, std::nullopt, scheme("q4_0"), 1);
  EXPECT_EQ(type_of(q40, "token_embd.weight"), TensorType::Q6_K);
  EXPECT_EQ(type_of(q40, "blk.3.attn_v.weight"), TensorType::Q4_0);
  const auto q80 = plan_synthetic_model(p, std::nullopt, scheme("q8_0"), 1);
  EXPECT_EQ(type_of(q80, "token_embd.weight"), TensorType::Q8_0);
  const auto f16 = plan_synthetic_model(p, std::nullopt, scheme("f16"), 1);
  EXPECT_EQ(type_of(f16, "token_embd.weight"), TensorType::F16);
  EXPECT_EQ(type_of(f16, "blk.0.attn_norm.weight"), TensorType::F32);
  const auto bf16 = plan_synthetic_model(p, std::nullopt, scheme("BF16"), 1);
  EXPECT_EQ(type_of(bf16, "blk.0.ffn_down.weight"), TensorType::BF16);
}

// Every preset, f32 and q4_k_m: the file's header loads through Model::load with the planned
// hyperparameters, and inspect gives a clean verdict. inspect reads every weight (its scan for
// non-finite values), so the F32 files of the 7B-8B presets (28-32 GB of holes, over a minute on
// CI's 2 cores) are left to their Q4_K_M twins, which carry the same tensor list.
constexpr uint64_t kInspectedBytesLimit = uint64_t(8) << 30;
TEST(SyntheticFiles, EveryPresetLoadsAndInspectsClean) {
  for (const auto& preset : model_presets()) {
    for (const char* qname : {"f32", "q4_k_m"}) {
      SCOPED_TRACE(preset.name + " " + qname);
      const auto plan =
          plan_synthetic_model(preset, preset.arch ? preset.arch : Arch::Llama, scheme(qname), 3);
      const std::string path = sparse_model_file(plan);
      Model m = Model::load(path);
      EXPECT_EQ(m.hp.arch, plan.hp.arch);
      EXPECT_EQ(m.hp.n_vocab, plan.hp.n_vocab);
      EXPECT_EQ(m.hp.n_embd, plan.hp.n_embd);
      EXPECT_EQ(m.hp.n_layer, plan.hp.n_layer);
      EXPECT_EQ(m.hp.n_head, plan.hp.n_head);
      EXPECT_EQ(m.hp.n_head_kv, plan.hp.n_head_kv);
      EXPECT_EQ(m.hp.n_ff, plan.hp.n_ff);
      EXPECT_EQ(m.hp.n_ctx_train, plan.hp.n_ctx_train);
      EXPECT_EQ(m.hp.rms_eps, plan.hp.rms_eps);
      EXPECT_EQ(m.hp.rope_freq_base, plan.hp.rope_freq_base);
      EXPECT_EQ(m.hp.tied_embeddings, preset.tied_embeddings);
      EXPECT_EQ(m.file->get_int("general.file_type").value(), scheme(qname).file_type);
      EXPECT_EQ(m.file->get_int("general.quantization_version").value(), 2);
      if (std::string(qname) == "q4_k_m" || plan.tensor_bytes() < kInspectedBytesLimit) {
        const auto r = run_cli("inspect " + path);
        EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
        EXPECT_NE(r.out.find("verdict: ok"), std::string::npos) << r.out;
      }
      std::filesystem::remove(path);
    }
  }
}

SyntheticPlan tiny_plan(const std::string& quant, uint64_t seed, Arch arch = Arch::Qwen2) {
  return plan_synthetic_model(*find_model_preset("tiny"), arch, scheme(quant), seed);
}

TEST(SyntheticFiles, DeterministicAcrossThreadsAndChunks) {
  for (const char* q : {"f32", "q4_k_m", "q8_0"}) {
    SCOPED_TRACE(q);
    const auto plan = tiny_plan(q, 42);
    const std::vector<uint8_t> once = synthetic_model_bytes(plan);
    EXPECT_EQ(synthetic_model_bytes(plan), once);
    for (int threads : {1, 2, 5}) {
      for (uint64_t chunk : {uint64_t(1000), uint64_t(4) << 20}) {
        const std::string path = temp_path("det.gguf");
        write_synthetic_model(plan, path, threads, chunk);
        EXPECT_EQ(read_file(path), once) << threads << " threads, chunk " << chunk;
        std::filesystem::remove(path);
      }
    }
    EXPECT_NE(synthetic_model_bytes(tiny_plan(q, 43)), once);
  }
}

// The pooled fast path (quantize each pool block once, copy it after) must give exactly the
// bytes that quantizing each generated row with quantize_row gives.
TEST(SyntheticFiles, PooledBytesEqualRowByRowQuantization) {
  for (const char* q : {"q4_k_m", "q8_0", "f16", "q4_0"}) {
    SCOPED_TRACE(q);
    const auto plan = tiny_plan(q, std::random_device{}());
    auto f = gguf::GgufFile::from_bytes(synthetic_model_bytes(plan));
    size_t pooled = 0;
    for (const auto& t : plan.tensors) {
      SCOPED_TRACE(t.name);
      pooled += synthetic_pooled(t);
      const gguf::TensorInfo* ti = f.find_tensor(t.name);
      ASSERT_NE(ti, nullptr);
      const uint64_t rb = *row_bytes(t.type, t.ne[0]);
      std::vector<float> row(static_cast<size_t>(t.ne[0]));
      std::vector<uint8_t> want(rb);
      for (int64_t r = 0; r < t.rows(); ++r) {
        synthetic_row(t, r, row.data());
        if (t.type == TensorType::F32)
          std::memcpy(want.data(), row.data(), rb);
        else
          quantize_row(t.type, row.data(), want.data(), t.ne[0]);
        ASSERT_EQ(std::memcmp(want.data(), ti->data + uint64_t(r) * rb, rb), 0) << "row " << r;
      }
    }
    EXPECT_GT(pooled, 10u);
  }
}

TEST(SyntheticWeights, GeneratorIsAStandardNormalApproximation) {
  const uint64_t key = synthetic_tensor_key(std::random_device{}(), "x");
  double s1 = 0, s2 = 0, s4 = 0, max_abs = 0;
  const int n = 1 << 20;
  for (int i = 0; i < n; ++i) {
    const double x = synthetic_normal(key, uint64_t(i));
    ASSERT_TRUE(std::isfinite(x));
    s1 += x;
    s2 += x * x;
    s4 += x * x * x * x;
    max_abs = std::max(max_abs, std::abs(x));
  }
  const double mean = s1 / n, var = s2 / n - mean * mean;
  EXPECT_NEAR(mean, 0.0, 0.005);
  EXPECT_NEAR(var, 1.0, 0.01);
  EXPECT_NEAR(s4 / n / (var * var), 2.7, 0.05);  // Irwin-Hall(4) kurtosis, normal would be 3
  EXPECT_LE(max_abs, std::sqrt(12.0) + 1e-6);
  EXPECT_GT(max_abs, 3.0);
  // Different keys give unrelated streams.
  const uint64_t other = synthetic_tensor_key(1, "y");
  double cross = 0;
  for (int i = 0; i < 100000; ++i)
    cross += double(synthetic_normal(key, uint64_t(i))) * synthetic_normal(other, uint64_t(i));
  EXPECT_NEAR(cross / 100000, 0.0, 0.02);
}

// Reads every tensor back from a written file and compares it with the generator: exact for
// F32, within the format's error for quantized types (so no row is shifted, swapped or lost).
TEST(SyntheticWeights, FileHoldsThePlannedValues) {
  for (const char* q : {"f32", "q4_k_m", "bf16"}) {
    SCOPED_TRACE(q);
    const auto plan = tiny_plan(q, std::random_device{}(), Arch::Llama);
    auto f = gguf::GgufFile::from_bytes(synthetic_model_bytes(plan));
    for (const auto& t : plan.tensors) {
      SCOPED_TRACE(t.name);
      const gguf::TensorInfo* ti = f.find_tensor(t.name);
      ASSERT_NE(ti, nullptr);
      ASSERT_EQ(ti->type, t.type);
      const int64_t n = t.ne[0];
      std::vector<float> want(static_cast<size_t>(n)), got(static_cast<size_t>(n));
      double err2 = 0, ref2 = 0, sum2 = 0;
      const uint64_t rb = *row_bytes(t.type, n);
      for (int64_t r = 0; r < t.rows(); ++r) {
        synthetic_row(t, r, want.data());
        dequantize_row(t.type, ti->data + uint64_t(r) * rb, got.data(), n);
        for (int64_t c = 0; c < n; ++c) {
          ASSERT_TRUE(std::isfinite(got[size_t(c)]));
          const double d = double(got[size_t(c)]) - want[size_t(c)];
          err2 += d * d;
          ref2 += double(want[size_t(c)]) * want[size_t(c)];
          sum2 += double(got[size_t(c)]) * got[size_t(c)];
        }
      }
      const double rel = std::sqrt(err2 / ref2);
      if (t.type == TensorType::F32 || t.ones) {
        EXPECT_EQ(err2, 0.0);
      } else {
        EXPECT_LT(rel, t.type == TensorType::BF16 ? 0.005 : 0.12);
      }
      const double rms = std::sqrt(sum2 / double(t.rows() * n));
      if (t.ones) {
        EXPECT_EQ(rms, 1.0);
      } else {
        EXPECT_NEAR(rms, t.stddev, 0.05 * t.stddev);
      }
    }
  }
}

TEST(SyntheticTokenizer, WorksWithTheRuntimeTokenizer) {
  for (Arch arch : {Arch::Qwen2, Arch::Llama}) {
    SCOPED_TRACE(arch_name(arch));
    auto f = gguf::GgufFile::from_bytes(synthetic_model_bytes(tiny_plan("q8_0", 1, arch)));
    const auto v = tokenizer::Vocab::from_gguf(f);
    EXPECT_EQ(v.n_tokens(), 512);
    EXPECT_EQ(v.pre_name(), arch == Arch::Qwen2 ? "qwen2" : "llama-bpe");
    const std::string text =
        "The robot walked into the garden.\nIt was happy! 42 \xc3\xa9t\xc3\xa9";
    const auto ids = v.tokenize(text, false, false);
    EXPECT_LT(ids.size(), text.size());  // merges apply
    EXPECT_EQ(v.detokenize(ids), text);
    const auto the = v.tokenize(" the", false, false);
    EXPECT_EQ(the.size(), 1u) << "' the' should be one merged token";
    const auto chat = v.tokenize("<|im_start|>user\nhi<|im_end|>", false, true);
    ASSERT_FALSE(chat.empty());
    EXPECT_EQ(v.token_text(chat.front()), "<|im_start|>");
    EXPECT_EQ(v.token_text(chat.back()), "<|im_end|>");
    EXPECT_TRUE(v.is_eog(chat.back()));
    EXPECT_EQ(v.token_text(v.bos()), "<|endoftext|>");
    EXPECT_EQ(v.token_text(v.eos()), "<|im_end|>");
    EXPECT_FALSE(v.add_bos());
  }
}

TEST(SyntheticTokenizer, LargeVocabHasByteTokensMergesSpecialsAndPads) {
  const SyntheticVocab v = make_synthetic_vocab(151936);
  ASSERT_EQ(v.tokens.size(), 151936u);
  EXPECT_GE(v.merges.size(), 250u);
  EXPECT_LE(v.merges.size(), 300u);
  EXPECT_EQ(v.tokens[0], "!");                  // GPT-2 order: printable bytes first
  EXPECT_EQ(gpt2_byte_char(' '), "\xc4\xa0");   // U+0120 'Ġ'
  EXPECT_EQ(gpt2_byte_char('\n'), "\xc4\x8a");  // U+010A 'Ċ'
  EXPECT_EQ(gpt2_byte_char(0), "\xc4\x80");     // U+0100
  std::set<std::string> distinct(v.tokens.begin(), v.tokens.end());
  EXPECT_EQ(distinct.size(), v.tokens.size());
  EXPECT_EQ(v.types[size_t(v.im_start)], 3);
  EXPECT_EQ(v.types.back(), 5);
  EXPECT_EQ(v.tokens.back(), "[PAD151935]");
  EXPECT_EQ(v.n_special, 3);
  EXPECT_THROW(make_synthetic_vocab(200), InputError);
}

// A deep, narrow stack (30 layers like SmolLM2) run through the reference backend: every layer's
// residual stream and the logits stay finite and of order 1.
class RmsObserver : public LayerObserver {
 public:
  void on_hidden(int layer, const char*, int, std::span<const float> h) override {
    double s = 0;
    for (float x : h) s += double(x) * x;
    const double rms = std::sqrt(s / double(h.size()));
    max_rms = std::max(max_rms, rms);
    min_rms = std::min(min_rms, rms);
    finite = finite && std::isfinite(rms);
    last_layer = std::max(last_layer, layer);
  }
  double max_rms = 0, min_rms = 1e30;
  bool finite = true;
  int last_layer = -1;
};

TEST(SyntheticWeights, ActivationsStaySaneThroughThirtyLayers) {
  ModelPreset deep = *find_model_preset("tiny");
  deep.name = "deep-test";
  deep.n_layer = 30;
  for (Arch arch : {Arch::Llama, Arch::Qwen2}) {
    SCOPED_TRACE(arch_name(arch));
    const auto plan = plan_synthetic_model(deep, arch, scheme("q8_0"), std::random_device{}());
    const std::string path = temp_path("deep.gguf");
    write_synthetic_model(plan, path, 2);
    Model m = Model::load(path);
    ReferenceBackend be(m, 2, 64);
    RmsObserver obs;
    be.set_observer(&obs);
    std::vector<int32_t> prompt;
    std::mt19937 rng(7);
    for (int k = 0; k < 12; ++k) prompt.push_back(int32_t(rng() % 509));
    std::vector<float> logits(size_t(m.hp.n_vocab));
    be.forward(prompt, logits.data(), false);
    EXPECT_TRUE(obs.finite);
    EXPECT_EQ(obs.last_layer, 29);
    EXPECT_LT(obs.max_rms, 10.0);
    EXPECT_GT(obs.min_rms, 0.01);
    double s1 = 0, s2 = 0;
    for (float x : logits) {
      ASSERT_TRUE(std::isfinite(x));
      s1 += x;
      s2 += double(x) * x;
    }
    const double mean = s1 / double(logits.size());
    const double sd = std::sqrt(s2 / double(logits.size()) - mean * mean);
    EXPECT_GT(sd, 1.0);
    EXPECT_LT(sd, 6.0);
    std::filesystem::remove(path);
  }
}

}  // namespace
}  // namespace lockstep::gguf_test
