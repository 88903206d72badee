// TEST KNOB: LOCKSTEP_FAULT selects a fault for the parity gate's candidate backend (read by the
// CLI, src/cli/environment.cpp, into BackendOptions::fault).
//   kv_drift:MAGNITUDE              e.g. kv_drift:0.5
//   layer_corrupt:LAYER:POS:MAGNITUDE   e.g. layer_corrupt:1:10:4
//   batch_corrupt:LAYER:MAG         e.g. batch_corrupt:1:4 (only calls of several sequences)
//   nan:POS                         e.g. nan:0
//   after_calls:CALLS:MAG           e.g. after_calls:40:4 (logits of forward calls >= 40)
//   from_position:POS:MAG           e.g. from_position:100:4 (logits rows at positions >= 100)
// Documented in docs/parity.md. A malformed value is a usage error.
#pragma once

#include <optional>
#include <string>

#include "backend/fault.h"

namespace lockstep {

FaultSpec parse_fault(const std::string& text);  // throws InputError

}  // namespace lockstep
