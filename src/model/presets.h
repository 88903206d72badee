// Model shapes for `lockstep make-model`: a tiny one for unit tests and the published
// configurations of real models (their Hugging Face config.json), so synthetic files have the
// exact tensor shapes, vocabulary size and hyperparameters of the real thing.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "model/hparams.h"

namespace lockstep {

struct ModelPreset {
  std::string name;          // as given to --preset
  std::string general_name;  // written to general.name
  std::optional<Arch> arch;  // nullopt: any architecture (the caller chooses)
  int64_t n_embd = 0;
  int64_t n_layer = 0;
  int64_t n_head = 0;
  int64_t n_head_kv = 0;
  int64_t n_ff = 0;
  int64_t n_vocab = 0;
  int64_t n_ctx = 0;  // <arch>.context_length
  float rope_freq_base = 10000.0f;
  float rms_eps = 1e-5f;
  bool tied_embeddings = false;  // no output.weight: logits reuse token_embd
};

const std::vector<ModelPreset>& model_presets();
const ModelPreset* find_model_preset(const std::string& name);
std::string model_preset_names();  // "tiny, qwen2.5-0.5b, ..." for messages and --help

}  // namespace lockstep
