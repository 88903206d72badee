// Factories for the CPU backends.
//   cpu-ref: the reference (float activations, float32 KV cache): what the parity gate trusts.
//   cpu:     the fast path (SIMD quantized dot products): a GatedBackend, so it serves only after
//            ParityGate has compared it with the reference, like any GPU backend.
#pragma once

#include <memory>

#include "backend/backend.h"
#include "backend/gated_backend.h"

namespace lockstep {

std::unique_ptr<Backend> make_reference_backend(const Model& model, int threads, int n_ctx);
std::unique_ptr<GatedBackend> make_fast_cpu_backend(const Model& model, int threads, int n_ctx);

}  // namespace lockstep
