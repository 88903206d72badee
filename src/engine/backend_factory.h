// Opens the backend a run will serve from. Every backend comes through the parity gate
// (src/parity/gate.h): cpu-ref is the reference itself; every other backend (the fast cpu path,
// cuda) is compared with the reference, step by step, before it may serve.
#pragma once

#include <memory>
#include <span>
#include <string>

#include "backend/backend.h"
#include "parity/gate.h"
#include "tokenizer/vocab.h"

namespace lockstep {

struct BackendChoice {
  std::string name = "auto";  // cpu | cpu-ref | cuda | auto
  int threads = 0;            // 0: default_thread_count() (physical cores)
  int n_ctx = 0;              // 0: min(training context, 4096)
};

// An empty string when `name` is one of the accepted backend names, else the usage message.
std::string validate_backend_name(const std::string& name);

// The effective context and thread count a choice resolves to for a model.
int resolve_n_ctx(const Model& model, int requested);
int resolve_threads(int requested);

// Probes with the first tokens of `prompt` when it is long enough (they then stay cached in the
// serving backend: OpenResult::prompt_tokens_cached), else with the built-in probe text.
OpenResult open_backend(const Model& model, const tokenizer::Vocab& vocab,
                        const BackendChoice& choice, const ParityConfig& parity,
                        std::span<const int32_t> prompt);

// One phrase for the stderr header: which backend serves and what the gate said.
std::string describe_backend(const OpenResult& opened);

}  // namespace lockstep
