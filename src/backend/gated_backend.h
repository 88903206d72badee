// Base class of every backend that must pass the parity gate before it serves (CUDA, and the fast
// CPU path). forward() refuses to run until the gate has put the backend in its probing or
// passed state; those transitions take a GateKey, which only the parity gate can make. So even
// code that somehow holds such a backend cannot compute with it unless the gate has let it.
#pragma once

#include "backend/backend.h"
#include "backend/gate_key.h"
#include "util/error.h"

namespace lockstep {

class GatedBackend : public Backend {
 public:
  enum class GateState { Unverified, Probing, Passed, Unchecked /* --parity off */ };

  GateState gate_state() const { return gate_state_; }
  void begin_probe(GateKey) { gate_state_ = GateState::Probing; }
  void mark_passed(GateKey) { gate_state_ = GateState::Passed; }
  void mark_unchecked(GateKey) { gate_state_ = GateState::Unchecked; }

 protected:
  void check_may_compute() const final {
    if (gate_state_ == GateState::Unverified)
      throw Error(name() + " backend used before the parity gate verified it", kExitParity);
  }

 private:
  GateState gate_state_ = GateState::Unverified;
};

}  // namespace lockstep
