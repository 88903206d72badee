#include "model/synthetic_quant_mix.h"

#include <algorithm>
#include <cctype>

namespace lockstep {

const std::vector<QuantScheme>& quant_schemes() {
  // file_type numbers: llama.h enum llama_ftype (ALL_F32 0, MOSTLY_F16 1, MOSTLY_Q4_0 2,
  // MOSTLY_Q8_0 7, MOSTLY_Q4_K_M 15, MOSTLY_BF16 32).
  static const std::vector<QuantScheme> schemes = {
      {"f32", 0, TensorType::F32, false},    {"f16", 1, TensorType::F16, false},
      {"bf16", 32, TensorType::BF16, false}, {"q8_0", 7, TensorType::Q8_0, true},
      {"q4_0", 2, TensorType::Q4_0, true},   {"q4_k_m", 15, TensorType::Q4_K, true},
  };
  return schemes;
}

const QuantScheme* find_quant_scheme(const std::string& name) {
  std::string low = name;
  std::transform(low.begin(), low.end(), low.begin(),
                 [](unsigned char c) { return char(std::tolower(c)); });
  for (const auto& s : quant_schemes())
    if (s.name == low) return &s;
  return nullptr;
}

std::string quant_scheme_names() {
  std::string s;
  for (const auto& q : quant_schemes()) s += (s.empty() ? "" : ", ") + q.name;
  return s;
}

// llama.cpp (src/llama-quant.cpp, llama_tensor_get_type) gives more bits to the first eighth of
// the layers, the last eighth, and every third layer in between (counting from the end of the
// first eighth: offsets 2, 5, 8, ...). All divisions are integer divisions.
bool use_more_bits(int64_t layer, int64_t n_layer) {
  return layer < n_layer / 8 || layer >= 7 * n_layer / 8 || (layer - n_layer / 8) % 3 == 2;
}

namespace {

bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}
bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}
int64_t block_of(TensorType t) {
  return tensor_type_info(t).block_elems;
}

}  // namespace

// What llama-quantize does, in our words (checked against llama.cpp's llama-quant.cpp):
//  1. Only tensors whose name ends in "weight", with 2+ dimensions and not a "_norm.weight", are
//     converted; everything else (norms, biases) stays F32.
//  2. F32/F16/BF16 targets apply no per-tensor rules: every converted tensor gets the target.
//  3. The output matrix (output.weight, or token_embd.weight when the model has no output.weight
//     because the embedding is tied) gets Q8_0 if its row length is not a multiple of the target
//     type's block size, else Q6_K, unless the target is Q8_0 (then it stays Q8_0).
//  4. For Q4_K_M: attn_v.weight and ffn_down of the layers that use_more_bits() picks get Q6_K.
//     The layer index is the tensor's position among its kind, which equals the block index
//     because llama.cpp visits tensors sorted by block number. A fused attn_qkv.weight (phi3)
//     gets Q5_K in every layer. Nothing else changes for Q4_K_M in a dense llama/qwen2/phi3
//     model (the 70B and 8-expert special cases do not apply here).
//  5. A type whose block does not divide the row length falls back: Q4_K -> Q5_0, Q5_K -> Q5_1,
//     Q6_K -> Q8_0; and if that still does not divide it, F16. For the 32-element types the
//     fallback is F16 directly (llama.cpp's stories260K Q8_0/Q4_0 files keep the 172-wide
//     ffn_down in F16, see ../shared/models/README.md).
TensorType llama_cpp_tensor_type(const QuantScheme& scheme, const std::string& name,
                                 const std::vector<int64_t>& ne, int64_t layer, int64_t n_layer,
                                 bool has_output) {
  const bool converted =
      ends_with(name, "weight") && ne.size() >= 2 && !contains(name, "_norm.weight");
  if (!converted) return TensorType::F32;
  if (!scheme.quantized) return scheme.base;

  TensorType t = scheme.base;
  const bool is_output = name == "output.weight" || (!has_output && name == "token_embd.weight");
  if (is_output) {
    if (ne[0] % block_of(scheme.base) != 0)
      t = TensorType::Q8_0;
    else if (scheme.base != TensorType::Q8_0)
      t = TensorType::Q6_K;
  } else if (scheme.file_type == 15 /* Q4_K_M */) {
    if (contains(name, "attn_qkv.weight")) t = TensorType::Q5_K;
    if ((contains(name, "attn_v.weight") || contains(name, "ffn_down")) &&
        use_more_bits(layer, n_layer))
      t = TensorType::Q6_K;
  }

  if (ne[0] % block_of(t) != 0) {
    switch (t) {
      case TensorType::Q4_K:
        t = TensorType::Q5_0;
        break;
      case TensorType::Q5_K:
        t = TensorType::Q5_1;
        break;
      case TensorType::Q6_K:
        t = TensorType::Q8_0;
        break;
      default:
        t = TensorType::F16;
        break;
    }
    if (ne[0] % block_of(t) != 0) t = TensorType::F16;
  }
  return t;
}

}  // namespace lockstep
