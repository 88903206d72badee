// The one table of backends. The CLI's --backend help and validation, the parity gate's factory,
// its fallback policy and the `auto` choice all read it; adding a backend means adding an entry
// here (registry.cpp) and its own folder under src/backend/, nothing else.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "backend/backend.h"
#include "backend/backend_options.h"
#include "backend/gate_key.h"
#include "backend/gated_backend.h"

namespace lockstep {

struct BackendEntry {
  const char* name;  // what --backend takes
  const char* help;  // one phrase for --help
  // The CPU reference: needs no gate, and is what a rejected candidate falls back to.
  bool is_reference = false;
  // Preference of `auto` (higher first); 0: never chosen by `auto`.
  int auto_rank = 0;
  // A device backend: under `auto`, failing to create it (no device, out of memory) moves on to
  // the next candidate with a note instead of failing the run.
  bool is_device = false;
  // True when this build and machine can run it with these options; otherwise `why` (if given)
  // says why not.
  bool (*available)(const BackendOptions& options, std::string* why) = nullptr;
  // Creates the backend. Gated backends come out unverified: only the gate (the holder of the
  // GateKey) may create them and let them compute.
  std::unique_ptr<GatedBackend> (*create_gated)(const Model&, const BackendOptions&,
                                                GateKey) = nullptr;
  std::unique_ptr<Backend> (*create_reference)(const Model&, const BackendOptions&) = nullptr;
  // Set for a candidate whose logits depend only on the model, the executable and what this
  // returns for `options` (e.g. the instruction set and the cache type): its gate passes may be
  // remembered (parity/verdict_cache.h). Null for backends whose results may drift (devices).
  std::string (*deterministic_identity)(const BackendOptions&) = nullptr;
};

// Every backend of this build, the reference first.
const std::vector<BackendEntry>& backend_registry();
// The entry named `name`, or nullptr.
const BackendEntry* find_backend(std::string_view name);
// The reference's entry.
const BackendEntry& reference_backend_entry();
// "auto, cpu-ref, cpu, cuda": the names --backend accepts.
std::string backend_choices();
// An empty string when `name` is "auto" or a registered backend, else the usage message.
std::string validate_backend_name(const std::string& name);
// The registered backends `auto` would try, best first, that are available here (with
// `options`: e.g. a named Vulkan device counts even when it is a CPU implementation).
std::vector<const BackendEntry*> auto_candidates(const BackendOptions& options = {});
// The names of the backends this build and machine can run.
std::vector<std::string> available_backends(const BackendOptions& options = {});
// What llama.cpp's -ngl N means here: N > 0, the preferred device backend (the GPU); N = 0, the
// preferred backend that is not a device (the fast CPU path). Whether it is available is the
// gate's business, as for --backend.
std::string backend_for_gpu_layers(bool on_device);
// The reference backend: it needs no gate (it is what the gate trusts).
std::unique_ptr<Backend> create_reference(const Model& model, const BackendOptions& options);

}  // namespace lockstep
