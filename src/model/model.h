// The model description shared by every backend: hyperparameters plus views of the weight
// tensors in their file format (memory-mapped, never dequantized as a whole).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "gguf/gguf_reader.h"
#include "model/hparams.h"
#include "quant/tensor_type.h"

namespace lockstep {

namespace tokenizer {
class Vocab;
}

// A 1-D or 2-D weight in file format. Row r starts at data + r * row_bytes.
struct WeightView {
  std::string name;
  TensorType type = TensorType::F32;
  int64_t cols = 0;  // ne[0]: elements per row
  int64_t rows = 1;  // ne[1]
  uint64_t row_bytes = 0;
  const uint8_t* data = nullptr;

  bool present() const { return data != nullptr; }
  const uint8_t* row(int64_t r) const { return data + uint64_t(r) * row_bytes; }
};

struct LayerWeights {
  WeightView attn_norm;         // [n_embd]
  WeightView wq, wk, wv, wo;    // wq: rows n_head*head_dim, cols n_embd; wo: rows n_embd
  WeightView bq, bk, bv;        // qwen2 only
  WeightView q_norm, k_norm;    // [head_dim], has_qk_norm only
  WeightView post_attn_norm;    // [n_embd], has_post_norms only
  WeightView ffn_norm;          // [n_embd]
  WeightView ffn_gate, ffn_up;  // rows n_ff, cols n_embd
  WeightView ffn_down;          // rows n_embd, cols n_ff
  WeightView post_ffn_norm;     // [n_embd], has_post_norms only
};

struct Model {
  std::unique_ptr<gguf::GgufFile> file;  // owns the mapping the views point into
  HParams hp;
  WeightView tok_embd;  // rows n_vocab, cols n_embd
  WeightView output_norm;
  WeightView output;      // == tok_embd when tied
  WeightView rope_freqs;  // [rope_dim / 2], has_rope_freqs only
  std::vector<LayerWeights> layers;

  // Loads and validates a model: architecture, hyperparameters, every required tensor with the
  // shape the hyperparameters imply and a type lockstep can compute with. Throws InputError.
  static Model load(const std::string& path);
  static Model from_file(gguf::GgufFile file);
};

// Tensor names and shapes ({ne0, ne1} or {ne0}) an architecture needs; used by Model::load and by
// `inspect`'s validation verdict.
struct ExpectedTensor {
  std::string name;
  std::vector<int64_t> ne;
  bool optional = false;  // e.g. output.weight when embeddings are tied
};
std::vector<ExpectedTensor> expected_tensors(const HParams& hp);

// The rope frequency factors as floats (empty when the model has none). Each divides a rope
// frequency, so each must be finite and positive (a zero would make an infinite angle): else an
// InputError naming the file and the element. Read when a backend is built, not at load (which
// reads no tensor data).
std::vector<float> rope_freq_factors(const Model& model);

// The model and its tokenizer must agree: one embedding row per token. A mismatch would surface
// only later, as a token id past the embedding or a logit no token stands for. InputError naming
// the file; used by `inspect` and by every command that loads both for generation.
void check_vocab_matches(const Model& model, const tokenizer::Vocab& vocab);
void check_vocab_matches(const HParams& hp, const tokenizer::Vocab& vocab, const std::string& path);

}  // namespace lockstep
