#include "engine/chain_model_util.h"

#include <cstring>
#include <random>

#include "gguf/gguf_reader.h"
#include "gguf/gguf_writer.h"

namespace lockstep::test {

namespace {

constexpr int64_t kEmbd = 32, kHeads = 2, kFf = 48, kCtx = 64;

std::vector<uint8_t> f32_bytes(const std::vector<float>& v) {
  std::vector<uint8_t> b(v.size() * sizeof(float));
  std::memcpy(b.data(), v.data(), b.size());
  return b;
}

std::vector<float> random_vec(size_t n, std::mt19937_64& rng, float scale) {
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

}  // namespace

std::map<int32_t, int32_t> default_chain() {
  return {{kOnce, kUpon}, {kUpon, kA}, {kA, kTime}, {kTime, kThe}, {kThe, kEnd},   {kEnd, kDot},
          {kDot, kEos},   {kCaf, kC3}, {kC3, kA9},  {kA9, kEos},   {kLoop, kLoop}, {kBos, kOnce}};
}

std::vector<uint8_t> chain_model_bytes(const std::map<int32_t, int32_t>& next) {
  std::vector<std::string> tokens = {"<unk>",
                                     "<s>",
                                     "</s>",
                                     "\xE2\x96\x81Once",
                                     "\xE2\x96\x81upon",
                                     "\xE2\x96\x81"
                                     "a",
                                     "\xE2\x96\x81time",
                                     "\xE2\x96\x81the",
                                     "\xE2\x96\x81"
                                     "end",
                                     ".",
                                     "\xE2\x96\x81"
                                     "caf",
                                     "<0xC3>",
                                     "<0xA9>",
                                     "\xE2\x96\x81la",
                                     "x",
                                     "y"};
  std::vector<int32_t> types(kNVocab, 1);
  types[kUnk] = 2;
  types[kBos] = types[kEos] = 3;
  types[kC3] = types[kA9] = 6;
  std::vector<float> scores(kNVocab);
  for (int i = 0; i < kNVocab; ++i) scores[size_t(i)] = -float(i);

  gguf::GgufWriter w;
  w.set("general.architecture", gguf::Value::of_string("llama"));
  w.set("general.name", gguf::Value::of_string("chain-test"));
  w.set("llama.embedding_length", gguf::Value::of_u32(kEmbd));
  w.set("llama.block_count", gguf::Value::of_u32(1));
  w.set("llama.feed_forward_length", gguf::Value::of_u32(kFf));
  w.set("llama.attention.head_count", gguf::Value::of_u32(kHeads));
  w.set("llama.attention.head_count_kv", gguf::Value::of_u32(1));
  w.set("llama.context_length", gguf::Value::of_u32(kCtx));
  w.set("llama.attention.layer_norm_rms_epsilon", gguf::Value::of_f32(1e-5f));
  w.set("tokenizer.ggml.model", gguf::Value::of_string("llama"));
  w.set("tokenizer.ggml.tokens", gguf::Value::of_strings(tokens));
  w.set("tokenizer.ggml.scores", gguf::Value::of_f32s(scores));
  w.set("tokenizer.ggml.token_type", gguf::Value::of_i32s(types));
  w.set("tokenizer.ggml.bos_token_id", gguf::Value::of_u32(kBos));
  w.set("tokenizer.ggml.eos_token_id", gguf::Value::of_u32(kEos));
  w.set("tokenizer.ggml.unknown_token_id", gguf::Value::of_u32(kUnk));

  std::mt19937_64 rng(12345);
  const int64_t head_dim = kEmbd / kHeads;
  // One-hot embeddings: after RMSNorm the final hidden state is ~sqrt(n_embd) at index t.
  std::vector<float> embd(size_t(kNVocab * kEmbd), 0.0f);
  for (int64_t t = 0; t < kNVocab; ++t) embd[size_t(t * kEmbd + t)] = 1.0f;
  w.add_tensor("token_embd.weight", TensorType::F32, {kEmbd, kNVocab}, f32_bytes(embd));
  w.add_tensor("output_norm.weight", TensorType::F32, {kEmbd},
               f32_bytes(std::vector<float>(kEmbd, 1.0f)));
  // Output row j: weight 8 at column t when next[t] == j, over small noise; logit margin ~40.
  std::vector<float> out = random_vec(size_t(kNVocab * kEmbd), rng, 0.02f);
  for (const auto& [t, j] : next) out[size_t(j * kEmbd + t)] = 8.0f;
  w.add_tensor("output.weight", TensorType::F32, {kEmbd, kNVocab}, f32_bytes(out));
  const std::string b = "blk.0.";
  w.add_tensor(b + "attn_norm.weight", TensorType::F32, {kEmbd},
               f32_bytes(std::vector<float>(kEmbd, 1.0f)));
  w.add_tensor(b + "attn_q.weight", TensorType::F32, {kEmbd, kEmbd},
               f32_bytes(random_vec(kEmbd * kEmbd, rng, 0.3f)));
  w.add_tensor(b + "attn_k.weight", TensorType::F32, {kEmbd, head_dim},
               f32_bytes(random_vec(kEmbd * head_dim, rng, 0.3f)));
  w.add_tensor(b + "attn_v.weight", TensorType::F32, {kEmbd, head_dim},
               f32_bytes(random_vec(kEmbd * head_dim, rng, 0.3f)));
  w.add_tensor(b + "attn_output.weight", TensorType::F32, {kEmbd, kEmbd},
               f32_bytes(random_vec(kEmbd * kEmbd, rng, 0.01f)));
  w.add_tensor(b + "ffn_norm.weight", TensorType::F32, {kEmbd},
               f32_bytes(std::vector<float>(kEmbd, 1.0f)));
  w.add_tensor(b + "ffn_gate.weight", TensorType::F32, {kEmbd, kFf},
               f32_bytes(random_vec(kEmbd * kFf, rng, 0.3f)));
  w.add_tensor(b + "ffn_up.weight", TensorType::F32, {kEmbd, kFf},
               f32_bytes(random_vec(kEmbd * kFf, rng, 0.3f)));
  w.add_tensor(b + "ffn_down.weight", TensorType::F32, {kFf, kEmbd},
               f32_bytes(random_vec(kFf * kEmbd, rng, 0.01f)));

  return w.to_bytes();
}

ChainModel make_chain_model(const std::map<int32_t, int32_t>& next) {
  ChainModel cm;
  cm.model = std::make_unique<Model>(
      Model::from_file(gguf::GgufFile::from_bytes(chain_model_bytes(next), "<chain-model>")));
  cm.vocab = std::make_unique<tokenizer::Vocab>(tokenizer::Vocab::from_gguf(*cm.model->file));
  return cm;
}

}  // namespace lockstep::test
