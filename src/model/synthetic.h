// Synthetic models: complete GGUF files with random weights and the exact shapes, metadata,
// tokenizer layout and quantization mix of a real model (presets.h), for tests and benchmarks
// without downloading weights. Deterministic: every weight is a pure function of (seed, tensor
// name, element index), so the bytes do not depend on the thread count or on how rows are split,
// and the files of one seed in different types are quantizations of the same floats.
//
// Speed: the K-quant quantizers cost ~100+ ns per weight, far more than generating it. So rows
// whose length is a multiple of 256 are built from a pool of kPoolBlocks distinct 256-weight
// blocks (normal values, picked per (tensor, row, block) by a hash, scaled by the tensor's
// standard deviation), and each pool block is quantized once per (type, scale) and copied after
// that. Each weight is still a normal deviate; a block of a big tensor recurs a few hundred
// times across a 7B model, which no computation on the model can tell apart from fresh noise at
// the level tests and benchmarks look at.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "gguf/gguf_writer.h"
#include "model/hparams.h"
#include "model/presets.h"
#include "model/synthetic_quant_mix.h"
#include "quant/tensor_type.h"

namespace lockstep {

struct SyntheticTensor {
  std::string name;
  TensorType type = TensorType::F32;
  std::vector<int64_t> ne;
  bool ones = false;      // norm weights: every element 1.0
  std::vector<float> values;  // fixed contents (rope_freqs.weight), else generated
  float stddev = 0;       // otherwise: normal(0, stddev)
  uint64_t key = 0;       // generator key, from (seed, name)
  uint64_t pool_key = 0;  // key of the block pool, from the seed (shared by all tensors)
  int64_t layer = -1;     // block index, -1 outside the blocks

  int64_t rows() const;
  uint64_t n_bytes() const;
};

struct SyntheticPlan {
  ModelPreset preset;
  QuantScheme quant;
  uint64_t seed = 0;
  HParams hp;  // what read_hparams() must report for the written file
  std::vector<SyntheticTensor> tensors;

  uint64_t tensor_bytes() const;  // sum of tensor sizes (no padding)
};

// The dry run: names, types, shapes and init of every tensor, no data. `arch` is required for a
// preset without its own architecture (tiny) and must match it otherwise. InputError on a bad
// combination.
SyntheticPlan plan_synthetic_model(const ModelPreset& preset, std::optional<Arch> arch,
                                   const QuantScheme& quant, uint64_t seed);

// Metadata (hyperparameters, tokenizer, chat template) and tensor declarations of a plan.
gguf::GgufWriter synthetic_writer(const SyntheticPlan& plan);

// Writes the file with `threads` threads (tensors in parallel, tensors larger than chunk_bytes
// split into row ranges). The bytes do not depend on threads or chunk_bytes. `progress`, when
// given, hears the fraction of tensor bytes written so far (from the writing threads).
void write_synthetic_model(const SyntheticPlan& plan, const std::string& path, int threads,
                           uint64_t chunk_bytes = uint64_t(4) << 20,
                           const std::function<void(double)>& progress = nullptr);
// The whole file in memory (small presets, tests).
std::vector<uint8_t> synthetic_model_bytes(const SyntheticPlan& plan);

// Row `row` of a tensor as floats before quantization (n = ne[0] values).
void synthetic_row(const SyntheticTensor& t, int64_t row, float* dst);

inline constexpr int64_t kPoolBlockElems = 256;
inline constexpr uint64_t kPoolBlocks = uint64_t(1) << 16;
// Whether a tensor's rows come from the block pool (row length a multiple of 256, not a norm).
bool synthetic_pooled(const SyntheticTensor& t);

// The generator: a standard normal deviate (approximately; see the .cpp) for (key, index).
float synthetic_normal(uint64_t key, uint64_t index);
uint64_t synthetic_tensor_key(uint64_t seed, const std::string& name);

}  // namespace lockstep
