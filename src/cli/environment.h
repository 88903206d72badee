// The LOCKSTEP_* knob variables, read once, at the entry point, into typed options
// (backend/backend_options.h, parity/parity_config.h). Nothing below the CLI reads the
// environment. docs/knobs.md documents each variable. A malformed value is an InputError (exit
// 2) naming the variable.
#pragma once

#include <optional>
#include <string>

#include "backend/backend_options.h"

namespace lockstep::cli {

struct EnvironmentKnobs {
  BackendOptions backend;           // tuning knobs and LOCKSTEP_FAULT; threads and n_ctx unset
  std::optional<int> parity_steps;  // LOCKSTEP_PARITY_STEPS
  // LOCKSTEP_VERDICT_CACHE: a directory, or "off"; unset: ${XDG_CACHE_HOME:-~/.cache}/lockstep/
  // verdicts. Empty here means no cache.
  std::string verdict_cache_dir;
  // TEST KNOB (LOCKSTEP_TEST_SERVE_LOAD_DELAY_MS): `lockstep serve` waits this long after binding
  // its port and before loading the model, so tests can see the loading phase.
  int serve_load_delay_ms = 0;
};

// Parsed on the first call; later calls return the same values (or throw the same error).
const EnvironmentKnobs& environment_knobs();

}  // namespace lockstep::cli
