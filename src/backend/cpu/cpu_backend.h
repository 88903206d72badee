// Factory for the CPU backends. Both are plain CPU code and need no gate to be created; the
// engine still obtains every serving backend through ParityGate::open, which compares the fast
// path with the reference before it serves.
#pragma once

#include <memory>

#include "backend/backend.h"

namespace lockstep {

enum class CpuKind {
  Reference,  // "cpu-ref": float activations, float32 KV cache; what the gate trusts
  Fast,       // "cpu": SIMD quantized dot products, the default CPU path
};

std::unique_ptr<Backend> make_cpu_backend(const Model& model, CpuKind kind, int threads, int n_ctx);

}  // namespace lockstep
