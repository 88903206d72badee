// A pass key that only the parity gate can create. Every factory of a GPU backend takes one, so
// the only way for any code to obtain a GPU backend is through ParityGate (src/parity/gate.h),
// which hands it out only after the multi-step comparison with the CPU reference has passed (or
// when the user explicitly asked for --parity off, which it announces on stderr).
#pragma once

namespace lockstep {

class ParityGate;

class GateKey {
 private:
  GateKey() = default;
  friend class ParityGate;
  friend class ParityDiagnostics;
};

}  // namespace lockstep
