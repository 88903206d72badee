// TEST KNOB. Deliberate faults a backend can be told to inject, so that the parity gate's
// falsification tests can show it catches what it exists to catch. Never set in normal runs;
// reachable from the command line only through the documented LOCKSTEP_FAULT variable.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>

#include "util/error.h"

namespace lockstep {

struct FaultSpec {
  enum Kind {
    None,
    // After forward call k (k = 0, 1, 2, ... counted from when the fault was set), every value of
    // the K and V cache entries that call wrote, in every layer, is moved by a deterministic
    // pseudo-random amount of size magnitude * k. Call 0 (the prefill) is untouched and so are the
    // logits of call 1; the drift shows from the call after. This is the failure a one-step gate
    // misses.
    KvDrift,
    // Adds magnitude * (pseudo-random +-1) to the output hidden state of layer `layer` at absolute
    // position `position`.
    LayerCorrupt,
    // Writes NaN into the logits of the first row computed at absolute position >= `position`.
    NaN,
    // In a forward call that holds several sequences (continuous batching), adds
    // magnitude * (pseudo-random +-1) to the output hidden state of layer `layer` of every token
    // of every sequence but the call's first. Single-sequence calls are untouched: the failure of
    // a batched path that a single-sequence check never sees.
    BatchCorrupt,
    // Adds magnitude * unit_noise(hash4(5, position, i, 0)) to logit i of every row returned by a
    // forward call counted from `calls` on (calls since the fault was set, from 0): a path that
    // goes wrong only after it has served a while. The gate's probe takes 4 calls (5 with several
    // sequences), so calls >= 5 passes the gate and shows only while serving.
    AfterCalls,
    // The same noise on every logits row at absolute position >= `position`: a path that goes wrong
    // only deep into a context. The probe covers positions 0 .. P+N-1 (0 .. 66 by default), so a
    // position past that passes the gate.
    FromPosition,
  };
  Kind kind = None;
  float magnitude = 0;
  int layer = 0;
  int position = 0;
  int64_t calls = 0;  // AfterCalls: the first forward call (0-based) that is corrupted
};

// The checks every backend's set_fault() makes before it takes a fault (InputError otherwise).
inline void validate_fault(const FaultSpec& fault, int64_t n_layer) {
  if ((fault.kind == FaultSpec::LayerCorrupt || fault.kind == FaultSpec::BatchCorrupt) &&
      (fault.layer < 0 || fault.layer >= n_layer))
    throw InputError("fault: layer " + std::to_string(fault.layer) + " out of range (model has " +
                     std::to_string(n_layer) + " layers)");
  if (fault.position < 0)
    throw InputError("fault: position " + std::to_string(fault.position) + " is negative");
  if (fault.calls < 0)
    throw InputError("fault: call count " + std::to_string(fault.calls) + " is negative");
  if (!std::isfinite(fault.magnitude)) throw InputError("fault: magnitude must be finite");
}

}  // namespace lockstep
