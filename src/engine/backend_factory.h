// Creates the backend a run asked for by name. Only CPU backends are made here: a GPU backend can
// be obtained solely through the parity gate (src/parity/gate.h), which holds the GateKey that
// every GPU factory demands and hands a GPU backend out only after it matched the CPU reference.
// So every name resolves to the CPU reference here (with a note on stderr for an explicit "cuda"
// or "cpu") until the CLI opens its backends through ParityGate::open.
#pragma once

#include <memory>
#include <string>

#include "backend/backend.h"

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

// Throws InputError for an unknown name. `note` (may be null) receives a line for stderr when
// the backend differs from the one asked for.
std::unique_ptr<Backend> make_backend(const Model& model, const BackendChoice& choice,
                                      std::string* note = nullptr);

}  // namespace lockstep
