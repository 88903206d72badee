// Tiny llama / qwen2 models with random weights, built in memory (GgufWriter::to_bytes ->
// GgufFile::from_bytes -> Model::from_file), for forward-pass tests that need no files.
#pragma once

#include <cstdint>

#include "model/model.h"
#include "quant/tensor_type.h"

namespace lockstep::backend_test {

struct SyntheticSpec {
  Arch arch = Arch::Llama;
  TensorType type = TensorType::F32;  // type of the 2-D weights; norms and biases stay F32
  int64_t n_layer = 2;
  int64_t n_embd = 64;
  int64_t n_head = 4;
  int64_t n_head_kv = 2;
  int64_t n_ff = 128;
  int64_t n_vocab = 96;
  int64_t n_ctx_train = 256;
  int64_t rope_dim = 0;  // 0: the whole head
  float rope_freq_base = 10000.0f;
  float rope_linear_factor = 0;    // > 1: rope.scaling.type linear with this factor
  float rope_yarn_factor = 0;      // > 0: rope.scaling.type yarn with this factor
  int64_t rope_yarn_orig_ctx = 0;  // its rope.scaling.original_context_length (0: not written)
  bool tied_embeddings = false;
  float rms_eps = 1e-5f;
  uint64_t seed = 1;
};

Model make_synthetic_model(const SyntheticSpec& spec);

}  // namespace lockstep::backend_test
