// Flags shared by `run`, `chat` and `bench`: model and backend selection, sampling. Each command
// registers the groups it needs; validation happens in the command's CLI11 callback so a bad
// value is a usage error (exit 2) naming the flag.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>

#include "cli/parity_flags.h"
#include "engine/backend_factory.h"
#include "engine/generator.h"
#include "engine/model_source.h"
#include "engine/sampler.h"
#include "tokenizer/vocab.h"

namespace lockstep::cli {

struct ModelFlags {
  std::string model;  // empty: the default model
  int threads = 0;    // 0: one per physical core
  int n_ctx = 0;      // 0: min(training context, 4096)
  std::string backend = "auto";
  bool backend_given = false;  // --backend was on the command line
  ParityFlags parity;
  // llama.cpp's flags, accepted where they mean something here: -ngl picks the device (0: the
  // CPU, any other count: the GPU; lockstep never splits layers), -b and -fa change nothing.
  std::string n_gpu_layers;  // empty: not given
  int batch_size = 0;        // 0: not given
  std::string flash_attn;    // -fa [on|off|auto] as given ("on" when bare); empty: not given
  bool quiet = false;        // --quiet: no progress line on stderr (cli/progress_line.h)
  // --batch-invariant (serve, bench): CUDA decode steps of several sequences stay on the batched
  // matvecs at every size (CudaBackendOptions::batch_mmq_min = batch_gemm_min = 0).
  bool batch_invariant = false;

  // The backend request: these flags and the LOCKSTEP_* knobs of the environment
  // (cli/environment.h).
  OpenRequest request() const;
  // --backend, or what -ngl implies when --backend was not given.
  std::string backend_name() const;
};

struct SamplingFlags {
  SamplingParams params;
  int64_t seed = -1;        // -1: a random seed, reported on stderr
  bool ignore_eos = false;  // GenerationRequest::ignore_eos
};

void add_model_flags(CLI::App* cmd, ModelFlags& flags);
// --batch-invariant (ModelFlags::batch_invariant), for the commands that batch sequences.
void add_batch_invariant_flag(CLI::App* cmd, ModelFlags& flags);
void add_sampling_flags(CLI::App* cmd, SamplingFlags& flags);

// Rejects an explicitly empty path option (as in -m ""), which would otherwise read as "not given".
CLI::Validator non_empty_path();

// The -t limit (max_thread_count()) with what it is derived from, for error messages.
std::string max_thread_limit_text();

// Throw CLI::ValidationError naming the flag for a bad value.
void check_model_flags(const ModelFlags& flags);
void check_sampling_flags(const SamplingFlags& flags);

// Notes on stderr for accepted llama.cpp flags that change nothing here (-b, -fa), prefixed
// "lockstep <cmd>:". Called when the command runs.
void print_flag_notes(const ModelFlags& flags, const char* cmd);

// A warning on stderr when -c asks for more positions than the model was trained on.
void warn_ctx_beyond_training(const char* cmd, int n_ctx, int64_t n_ctx_train);

// The sampling parameters with the seed resolved (a random one when --seed is -1).
SamplingParams resolve_sampling(const SamplingFlags& flags);

// A model opened for generation. Declaration order is destruction order in reverse: the backend
// (which refers to the model) goes first.
struct LoadedModel {
  std::unique_ptr<Model> model;
  std::unique_ptr<tokenizer::Vocab> vocab;
  ServingBackend serving;    // what the gate opened; a Session takes it over
  std::string backend_used;  // serving's name and verdict, kept for the header and --json
  ParityVerdict parity;
  std::vector<int32_t> prompt;  // as built by make_prompt
  ModelSummary summary;
  double load_ms = 0;  // model load + backend creation + parity gate
  int threads = 0;
};

using PromptBuilder = std::function<std::vector<int32_t>(const tokenizer::Vocab&)>;

// Resolves the model path, loads model and vocabulary, builds the prompt, opens the backend
// through the parity gate (probing with the prompt when it is long enough), and writes the header
// line (model file, architecture, file type, backend and parity verdict) to stderr, prefixed
// "lockstep <cmd>:".
LoadedModel load_for_generation(const ModelFlags& flags, const char* cmd,
                                const std::string& extra_header = "",
                                const PromptBuilder& make_prompt = nullptr);

// The `parity` object of --json outputs.
nlohmann::ordered_json parity_json(const LoadedModel& m);

}  // namespace lockstep::cli
