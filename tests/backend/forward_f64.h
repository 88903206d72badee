// An independent, deliberately plain float64 transformer forward pass (one token at a time, its
// own KV cache), written from the llama / qwen2 equations and sharing no code with the reference
// backend except dequantize_row. Tests compare ReferenceBackend against it.
#pragma once

#include <cstdint>
#include <vector>

#include "model/model.h"

namespace lockstep::backend_test {

class ForwardF64 {
 public:
  explicit ForwardF64(const Model& model);

  // Processes `token` at the next position; returns its n_vocab logits.
  std::vector<double> step(int32_t token);

  // Hidden states of the last step(): after attention ("attn_out") and after the FFN ("ffn_out")
  // of each layer, n_embd values each.
  const std::vector<std::vector<double>>& attn_out() const { return attn_out_; }
  const std::vector<std::vector<double>>& ffn_out() const { return ffn_out_; }

 private:
  using Matrix = std::vector<double>;  // row-major, rows x cols
  struct Layer {
    std::vector<double> attn_norm, ffn_norm, bq, bk, bv;
    Matrix wq, wk, wv, wo, gate, up, down;
  };

  HParams hp_;
  Matrix tok_embd_, output_;
  std::vector<double> output_norm_;
  std::vector<Layer> layers_;
  std::vector<std::vector<std::vector<double>>> keys_, values_;  // [layer][pos][kv_dim]
  std::vector<std::vector<double>> attn_out_, ffn_out_;
};

}  // namespace lockstep::backend_test
