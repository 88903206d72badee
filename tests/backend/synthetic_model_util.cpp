#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "backend/synthetic_model.h"
#include "gguf/gguf_reader.h"
#include "gguf/gguf_writer.h"
#include "quant/quantize.h"

namespace lockstep::backend_test {

namespace {

using gguf::Value;

// Random rows of `cols` values (N(0, sigma^2)), stored as `type`.
std::vector<uint8_t> random_matrix(TensorType type, int64_t cols, int64_t rows, float sigma,
                                   std::mt19937_64& rng) {
  std::normal_distribution<float> d(0.0f, sigma);
  const uint64_t rb = *row_bytes(type, cols);
  std::vector<uint8_t> bytes(size_t(rb * uint64_t(rows)));
  std::vector<float> row(static_cast<size_t>(cols));
  for (int64_t r = 0; r < rows; ++r) {
    for (auto& v : row) v = d(rng);
    quantize_row(type, row.data(), bytes.data() + uint64_t(r) * rb, cols);
  }
  return bytes;
}

std::vector<uint8_t> f32_bytes(const std::vector<float>& v) {
  std::vector<uint8_t> bytes(v.size() * 4);
  std::memcpy(bytes.data(), v.data(), bytes.size());
  return bytes;
}

}  // namespace

Model make_synthetic_model(const SyntheticSpec& s) {
  std::mt19937_64 rng(s.seed);
  const std::string arch = arch_name(s.arch);
  const int64_t head_dim = s.n_embd / s.n_head;
  const int64_t q_dim = s.n_head * head_dim;
  const int64_t kv_dim = s.n_head_kv * head_dim;

  gguf::GgufWriter w;
  w.set("general.architecture", Value::of_string(arch));
  w.set(arch + ".embedding_length", Value::of_u32(uint32_t(s.n_embd)));
  w.set(arch + ".block_count", Value::of_u32(uint32_t(s.n_layer)));
  w.set(arch + ".feed_forward_length", Value::of_u32(uint32_t(s.n_ff)));
  w.set(arch + ".attention.head_count", Value::of_u32(uint32_t(s.n_head)));
  w.set(arch + ".attention.head_count_kv", Value::of_u32(uint32_t(s.n_head_kv)));
  w.set(arch + ".context_length", Value::of_u32(uint32_t(s.n_ctx_train)));
  w.set(arch + ".attention.layer_norm_rms_epsilon", Value::of_f32(s.rms_eps));
  w.set(arch + ".rope.freq_base", Value::of_f32(s.rope_freq_base));
  if (s.rope_dim > 0) w.set(arch + ".rope.dimension_count", Value::of_u32(uint32_t(s.rope_dim)));
  if (s.rope_linear_factor > 1) {
    w.set(arch + ".rope.scaling.type", Value::of_string("linear"));
    w.set(arch + ".rope.scaling.factor", Value::of_f32(s.rope_linear_factor));
  }
  if (s.rope_yarn_factor > 0) {
    w.set(arch + ".rope.scaling.type", Value::of_string("yarn"));
    w.set(arch + ".rope.scaling.factor", Value::of_f32(s.rope_yarn_factor));
    if (s.rope_yarn_orig_ctx > 0)
      w.set(arch + ".rope.scaling.original_context_length",
            Value::of_u32(uint32_t(s.rope_yarn_orig_ctx)));
  }

  auto matrix = [&](const std::string& name, int64_t cols, int64_t rows, float sigma) {
    w.add_tensor(name, s.type, {cols, rows}, random_matrix(s.type, cols, rows, sigma, rng));
  };
  auto vector = [&](const std::string& name, int64_t n, float lo, float hi) {
    std::uniform_real_distribution<float> d(lo, hi);
    std::vector<float> v(static_cast<size_t>(n));
    for (auto& x : v) x = d(rng);
    w.add_tensor(name, TensorType::F32, {n}, f32_bytes(v));
  };

  // Scales keep every activation O(1): weights ~ N(0, 1/cols), logits of a few units.
  const float in_sigma = 1.0f / std::sqrt(float(s.n_embd));
  matrix("token_embd.weight", s.n_embd, s.n_vocab, 1.0f);
  vector("output_norm.weight", s.n_embd, 0.7f, 1.3f);
  if (!s.tied_embeddings) matrix("output.weight", s.n_embd, s.n_vocab, 3.0f * in_sigma);
  for (int64_t l = 0; l < s.n_layer; ++l) {
    const std::string b = "blk." + std::to_string(l) + ".";
    vector(b + "attn_norm.weight", s.n_embd, 0.7f, 1.3f);
    // Larger q/k weights give peaked attention, so a wrong position or head would show.
    matrix(b + "attn_q.weight", s.n_embd, q_dim, 2.0f * in_sigma);
    matrix(b + "attn_k.weight", s.n_embd, kv_dim, 2.0f * in_sigma);
    matrix(b + "attn_v.weight", s.n_embd, kv_dim, in_sigma);
    matrix(b + "attn_output.weight", q_dim, s.n_embd, 1.0f / std::sqrt(float(q_dim)));
    if (s.arch == Arch::Qwen2) {
      vector(b + "attn_q.bias", q_dim, -0.5f, 0.5f);
      vector(b + "attn_k.bias", kv_dim, -0.5f, 0.5f);
      vector(b + "attn_v.bias", kv_dim, -0.5f, 0.5f);
    }
    vector(b + "ffn_norm.weight", s.n_embd, 0.7f, 1.3f);
    matrix(b + "ffn_gate.weight", s.n_embd, s.n_ff, in_sigma);
    matrix(b + "ffn_up.weight", s.n_embd, s.n_ff, in_sigma);
    matrix(b + "ffn_down.weight", s.n_ff, s.n_embd, 1.0f / std::sqrt(float(s.n_ff)));
  }
  return Model::from_file(gguf::GgufFile::from_bytes(w.to_bytes(), "synthetic-" + arch));
}

}  // namespace lockstep::backend_test
