// Where the model comes from (-m, $LOCKSTEP_MODEL, the default download) and the one-line
// description of it the CLI prints.
#pragma once

#include <cstdint>
#include <string>

#include "model/model.h"

namespace lockstep {

inline constexpr const char* kDefaultModelFile = "SmolLM2-135M-Instruct.Q4_1.gguf";

// $LOCKSTEP_MODEL if set and non-empty, else ${XDG_CACHE_HOME:-$HOME/.cache}/lockstep/models/
// SmolLM2-135M-Instruct.Q4_1.gguf.
std::string default_model_path();

// The path to load: `flag` (from -m) when given, else the default. A missing default model is an
// InputError telling the user how to get it; a missing -m file is reported by the loader.
std::string resolve_model_path(const std::string& flag);

// llama.cpp's short name of a general.file_type value ("Q4_K_M" for 15, "F32" for 0; the 1024
// "guessed" bit ignored), or nullptr for a value it does not know.
const char* ftype_name(int64_t ftype);

// llama.cpp's name for general.file_type ("Q4_K_M", "F16", ...); when the key is absent or
// unknown, the type most of the weights' bytes are in ("mostly Q8_0").
std::string file_type_name(const Model& model);

// Bytes of weights one generated token reads: every layer matrix and norm, the output norm and
// the output matrix in full, and one row of the token embedding (the lookup).
uint64_t weight_bytes_per_token(const Model& model);

struct ModelSummary {
  std::string path;
  std::string name;  // general.name or the file name
  std::string architecture;
  std::string file_type;
  int64_t n_params = 0;
  uint64_t file_bytes = 0;
  int64_t n_vocab = 0, n_embd = 0, n_layer = 0, n_ctx_train = 0;
};
ModelSummary summarize(const Model& model, const std::string& path);

}  // namespace lockstep
