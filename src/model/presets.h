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

// Llama 3.1's "rope_scaling" (rope_type "llama3") in a Hugging Face config.json: long wavelengths
// are stretched by `factor`, short ones kept, a smooth band between. llama.cpp's converter turns
// it into the rope_freqs.weight tensor (llama3_rope_factors).
struct Llama3RopeScaling {
  double factor = 8;
  double low_freq_factor = 1;
  double high_freq_factor = 4;
  double original_context = 8192;  // original_max_position_embeddings
};

// The rope_dim / 2 frequency factors (divisors of pair i's frequency base^(-2i/rope_dim)) that
// llama.cpp's converter writes as rope_freqs.weight for a llama3 rope scaling: 1 for wavelengths
// shorter than original_context / high_freq_factor, `factor` for those longer than
// original_context / low_freq_factor, and 1 / ((1 - s) / factor + s) between, with
// s = (original_context / wavelength - low_freq_factor) / (high_freq_factor - low_freq_factor).
std::vector<float> llama3_rope_factors(double freq_base, int64_t rope_dim,
                                       const Llama3RopeScaling& scaling);

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
  int64_t head_dim = 0;          // 0: n_embd / n_head (qwen3 sets its own: key_length)
  std::optional<Llama3RopeScaling> rope_scaling;  // written as rope_freqs.weight
  float rope_linear_factor = 0;  // > 1: rope.scaling.type linear (gemma3 4B: its global layers)
  int64_t sliding_window = 0;    // gemma: the sliding layers' window (0: 4096 for gemma2, 16
                                 // for gemma3; a preset of its own sets the real one)
};

const std::vector<ModelPreset>& model_presets();
const ModelPreset* find_model_preset(const std::string& name);
std::string model_preset_names();  // "tiny, qwen2.5-0.5b, ..." for messages and --help

}  // namespace lockstep
