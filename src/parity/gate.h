// The parity gate's open policy: the only door through which the engine obtains a backend other
// than the CPU reference, and (with the diagnostics, parity/diagnostics.h) the only holder of the
// GateKey that gated backend factories demand. It chooses the candidate from the backend registry
// (backend/registry.h), has it compared with the reference (parity/comparison.h), and decides who
// serves: the candidate when it passed (or when the user asked for --parity off, announced on
// stderr), else the reference with one tagged stderr line, or a ParityError under the strict
// policy or a forced backend.
#pragma once

#include <memory>
#include <span>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "backend/backend_options.h"
#include "backend/gated_backend.h"
#include "parity/comparison.h"
#include "parity/parity_config.h"
#include "util/error.h"

namespace lockstep {

// Thrown when a rejected candidate may not fall back (strict policy, or a forced backend). Its
// message is the complete tagged line; the CLI prints it as is and exits with kExitParity.
class ParityError : public Error {
 public:
  explicit ParityError(const std::string& line) : Error(line, kExitParity) {}
};

struct OpenRequest {
  std::string backend = "auto";  // "auto" or a registry name (backend/registry.h)
  BackendOptions options;        // threads, context, per-backend knobs, the TEST KNOB fault
  // Where passes of deterministic candidates are remembered (parity/verdict_cache.h); empty: no
  // cache. Used only under --parity auto without a fault.
  std::string verdict_cache_dir;
};

// The backend that serves, what the gate said of it, and what its probe computed: when the probe
// was the first tokens of the user's prompt they stay in the backend's cache (so the prompt is
// never processed twice) and prefix_logits are the logits after the last of them. A generation
// session takes all of it over (engine/generator.h).
struct ServingBackend {
  std::unique_ptr<Backend> backend;
  std::string backend_used;  // the registry name of the backend that serves
  ParityVerdict verdict;
  std::vector<int32_t> cached_prefix;
  std::vector<float> prefix_logits;

  // One phrase for the stderr header: which backend serves and what the gate said.
  std::string describe() const;
};

class ParityGate {
 public:
  // Opens the backend a run will use. `probe_is_prompt` says that `probe` is the first tokens of
  // the user's prompt (they then stay cached). Throws InputError for an unknown backend name,
  // Error(kExitDevice) when a forced device backend cannot be created, ParityError as above.
  static ServingBackend open(const Model& model, const OpenRequest& request,
                             const ParityConfig& config, std::span<const int32_t> probe,
                             bool probe_is_prompt);

 private:
  friend class ParityDiagnostics;
  // The candidate `request` names ("auto": the best available), created without verification
  // (what the key protects), with the request's fault applied. Under "auto", a device backend
  // that cannot be created gives way to the next one with a note on stderr.
  static std::unique_ptr<GatedBackend> create_candidate(const Model& model,
                                                        const OpenRequest& request);
};

// The built-in probe text (English prose with digits and punctuation, so that the probe exercises
// ordinary tokens) and the choice between it and the user's prompt.
const std::string& builtin_probe_text();

}  // namespace lockstep
