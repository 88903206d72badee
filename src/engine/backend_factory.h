// Opens the backend a run will serve from. Every backend comes through the parity gate
// (src/parity/gate.h): the reference serves unverified (it is what the gate trusts); every other
// backend is compared with it, step by step, before it may serve.
#pragma once

#include <span>

#include "parity/gate.h"
#include "tokenizer/vocab.h"

namespace lockstep {

// The thread count a request of `requested` resolves to (0: default_thread_count()).
int resolve_threads(int requested);

// Probes with the first tokens of `prompt` when it is long enough (they then stay cached in the
// serving backend: ServingBackend::cached_prefix), else with the built-in probe text.
ServingBackend open_backend(const Model& model, const tokenizer::Vocab& vocab,
                            const OpenRequest& request, const ParityConfig& parity,
                            std::span<const int32_t> prompt);

}  // namespace lockstep
