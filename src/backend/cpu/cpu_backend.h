// Factories for the CPU backends (the registry's entries, backend/registry.cpp).
//   cpu-ref: the reference (float activations, float32 KV cache): what the parity gate trusts.
//   cpu:     the fast path (SIMD quantized dot products): a GatedBackend, so it serves only after
//            the parity gate has compared it with the reference, like any GPU backend.
#pragma once

#include <memory>

#include "backend/backend.h"
#include "backend/backend_options.h"
#include "backend/gated_backend.h"

namespace lockstep {

std::unique_ptr<Backend> make_reference_backend(const Model& model, const BackendOptions& options);
std::unique_ptr<GatedBackend> make_fast_cpu_backend(const Model& model,
                                                    const BackendOptions& options);

}  // namespace lockstep
