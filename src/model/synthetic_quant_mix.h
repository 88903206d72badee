// The output types of `lockstep make-model --quant` and, for each tensor, the ggml type
// llama.cpp's llama-quantize would give it, so synthetic files have the same mix of block types
// as the files people download.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "quant/tensor_type.h"

namespace lockstep {

struct QuantScheme {
  std::string name;    // as given to --quant: "q4_k_m", "q8_0", "f16", ...
  uint32_t file_type;  // general.file_type, llama.cpp's LLAMA_FTYPE_* number
  TensorType base;     // the type most matrices get
  bool quantized;      // a block type: llama.cpp's per-tensor rules apply
};

const std::vector<QuantScheme>& quant_schemes();
const QuantScheme* find_quant_scheme(const std::string& name);  // case-insensitive
std::string quant_scheme_names();                               // "f32, f16, ..."

// llama.cpp's rule for spending more bits on some layers (see the .cpp).
bool use_more_bits(int64_t layer, int64_t n_layer);

// The type llama-quantize (without --pure, --imatrix or type overrides) gives tensor `name` of
// shape `ne`. `layer` is the block index (-1 outside blocks); `has_output` tells whether the model
// has its own output.weight (false: token_embd doubles as the output matrix).
TensorType llama_cpp_tensor_type(const QuantScheme& scheme, const std::string& name,
                                 const std::vector<int64_t>& ne, int64_t layer, int64_t n_layer,
                                 bool has_output);

}  // namespace lockstep
