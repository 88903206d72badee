#include "model/presets.h"

#include <cmath>
#include <numbers>

namespace lockstep {

std::vector<float> llama3_rope_factors(double freq_base, int64_t rope_dim,
                                       const Llama3RopeScaling& s) {
  const double low_wavelength = s.original_context / s.low_freq_factor;    // longer: factor
  const double high_wavelength = s.original_context / s.high_freq_factor;  // shorter: 1
  std::vector<float> out;
  for (int64_t i = 0; i < rope_dim / 2; ++i) {
    const double freq = std::pow(freq_base, -2.0 * double(i) / double(rope_dim));
    const double wavelength = 2 * std::numbers::pi / freq;
    double f;
    if (wavelength < high_wavelength) {
      f = 1;
    } else if (wavelength > low_wavelength) {
      f = s.factor;
    } else {
      const double smooth = (s.original_context / wavelength - s.low_freq_factor) /
                            (s.high_freq_factor - s.low_freq_factor);
      f = 1 / ((1 - smooth) / s.factor + smooth);
    }
    out.push_back(float(f));
  }
  return out;
}

const std::vector<ModelPreset>& model_presets() {
  // Sources: each model's config.json (hidden_size, num_hidden_layers, num_attention_heads,
  // num_key_value_heads, intermediate_size, vocab_size, max_position_embeddings, rope_theta,
  // rms_norm_eps, tie_word_embeddings). Context lengths are those of the instruct releases.
  static const std::vector<ModelPreset> presets = {
      // Unit-test size. n_embd and n_ff are multiples of 256 so that q4_k_m really produces
      // Q4_K and Q6_K blocks (a 64-wide model would fall back to Q5_0/Q8_0 everywhere); untied,
      // so output.weight exists; 2 layers, so use_more_bits picks layer 1 only.
      {"tiny", "lockstep tiny synthetic", std::nullopt, 256, 2, 4, 2, 512, 512, 2048, 10000.0f,
       1e-5f, false},
      // Qwen/Qwen2.5-0.5B(-Instruct)
      {"qwen2.5-0.5b", "Qwen2.5 0.5B (synthetic weights)", Arch::Qwen2, 896, 24, 14, 2, 4864,
       151936, 32768, 1000000.0f, 1e-6f, true},
      // Qwen/Qwen2.5-1.5B-Instruct
      {"qwen2.5-1.5b", "Qwen2.5 1.5B (synthetic weights)", Arch::Qwen2, 1536, 28, 12, 2, 8960,
       151936, 32768, 1000000.0f, 1e-6f, true},
      // Qwen/Qwen2.5-7B-Instruct: the only untied Qwen2.5 preset, vocab padded to 152064.
      {"qwen2.5-7b", "Qwen2.5 7B (synthetic weights)", Arch::Qwen2, 3584, 28, 28, 4, 18944, 152064,
       32768, 1000000.0f, 1e-6f, false},
      // meta-llama/Llama-3.2-1B(-Instruct): rope_scaling llama3, factor 32, low 1, high 4,
      // original 8192, written as rope_freqs.weight as llama.cpp's converter does.
      {"llama-3.2-1b", "Llama 3.2 1B (synthetic weights)", Arch::Llama, 2048, 16, 32, 8, 8192,
       128256, 131072, 500000.0f, 1e-5f, true, 0, Llama3RopeScaling{32, 1, 4, 8192}},
      // meta-llama/Llama-3.1-8B(-Instruct): rope_scaling llama3, factor 8, low 1, high 4,
      // original 8192.
      {"llama-3.1-8b", "Llama 3.1 8B (synthetic weights)", Arch::Llama, 4096, 32, 32, 8, 14336,
       128256, 131072, 500000.0f, 1e-5f, false, 0, Llama3RopeScaling{8, 1, 4, 8192}},
      // Qwen/Qwen3-0.6B: head_dim 128 (not 1024 / 16), q/k norms, tied.
      {"qwen3-0.6b", "Qwen3 0.6B (synthetic weights)", Arch::Qwen3, 1024, 28, 16, 8, 3072, 151936,
       40960, 1000000.0f, 1e-6f, true, 128},
      // Qwen/Qwen3-8B: head_dim 128 = 4096 / 32, untied.
      {"qwen3-8b", "Qwen3 8B (synthetic weights)", Arch::Qwen3, 4096, 36, 32, 8, 12288, 151936,
       40960, 1000000.0f, 1e-6f, false, 128},
      // mistralai/Mistral-7B-Instruct-v0.3 (a llama-architecture file in GGUF; no sliding window
      // since v0.2).
      {"mistral-7b", "Mistral 7B v0.3 (synthetic weights)", Arch::Llama, 4096, 32, 32, 8, 14336,
       32768, 32768, 1000000.0f, 1e-5f, false},
      // microsoft/Phi-3-mini-4k-instruct: q/k/v fused in attn_qkv, gate/up in ffn_up; its
      // sliding_window (2047) is not written, as llama.cpp ignores it.
      {"phi-3-mini", "Phi-3 mini 4k (synthetic weights)", Arch::Phi3, 3072, 32, 32, 32, 8192, 32064,
       4096, 10000.0f, 1e-5f, false},
      // google/gemma-3-1b-it: head_dim 256 (4 heads over 1152), one KV head, window 512.
      {"gemma-3-1b", "Gemma 3 1B (synthetic weights)", Arch::Gemma3, 1152, 26, 4, 1, 6912, 262144,
       32768, 1000000.0f, 1e-6f, true, 256, std::nullopt, 0, 512},
      // google/gemma-3-4b-it, its language model: 262208 tokens (image tokens included), window
      // 1024, rope_scaling linear factor 8 on the global layers.
      {"gemma-3-4b", "Gemma 3 4B (synthetic weights)", Arch::Gemma3, 2560, 34, 8, 4, 10240, 262208,
       131072, 1000000.0f, 1e-6f, true, 256, std::nullopt, 8, 1024},
      // google/gemma-2-2b-it: head_dim 256, window 4096, soft-capping 50 / 30.
      {"gemma-2-2b", "Gemma 2 2B (synthetic weights)", Arch::Gemma2, 2304, 26, 8, 4, 9216, 256000,
       8192, 10000.0f, 1e-6f, true, 256, std::nullopt, 0, 4096},
      // HuggingFaceTB/SmolLM2-135M(-Instruct)
      {"smollm2-135m", "SmolLM2 135M (synthetic weights)", Arch::Llama, 576, 30, 9, 3, 1536, 49152,
       8192, 100000.0f, 1e-5f, true},
  };
  return presets;
}

const ModelPreset* find_model_preset(const std::string& name) {
  for (const auto& p : model_presets())
    if (p.name == name) return &p;
  return nullptr;
}

std::string model_preset_names() {
  std::string s;
  for (const auto& p : model_presets()) s += (s.empty() ? "" : ", ") + p.name;
  return s;
}

}  // namespace lockstep
