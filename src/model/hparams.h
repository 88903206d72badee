// Hyperparameters of a transformer read from GGUF metadata (`<arch>.*` keys), validated before
// any work starts.
#pragma once

#include <cstdint>
#include <string>

#include "gguf/gguf_reader.h"

namespace lockstep {

enum class Arch { Llama, Qwen2 };
enum class RopeType { Normal, Neox };  // Normal: rotate pairs (2i, 2i+1); Neox: (i, i + d/2)

struct HParams {
  Arch arch = Arch::Llama;
  std::string arch_name;  // "llama" / "qwen2" as in general.architecture
  int64_t n_vocab = 0;
  int64_t n_embd = 0;
  int64_t n_layer = 0;
  int64_t n_head = 0;
  int64_t n_head_kv = 0;
  int64_t head_dim = 0;  // n_embd / n_head unless the file says otherwise
  int64_t n_ff = 0;
  int64_t n_ctx_train = 0;
  float rms_eps = 1e-5f;
  float rope_freq_base = 10000.0f;
  float rope_freq_scale = 1.0f;  // linear rope scaling: positions are multiplied by this
  int64_t rope_dim = 0;          // rotated dimensions per head (usually head_dim)
  RopeType rope_type = RopeType::Normal;
  bool has_qkv_bias = false;     // qwen2
  bool tied_embeddings = false;  // no output.weight: the token embedding is reused
};

// Reads and checks the hyperparameters. Unknown architecture, missing or inconsistent keys and
// unsupported rope scaling are InputErrors naming the file and key.
HParams read_hparams(const gguf::GgufFile& file);

const char* arch_name(Arch arch);

}  // namespace lockstep
