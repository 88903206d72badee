#include "engine/backend_factory.h"

#include "backend/registry.h"
#include "parity/probe.h"
#include "util/error.h"
#include "util/thread_pool.h"

namespace lockstep {

int resolve_threads(int requested) {
  return requested > 0 ? requested : default_thread_count();
}

ServingBackend open_backend(const Model& model, const tokenizer::Vocab& vocab,
                            const OpenRequest& request, const ParityConfig& parity,
                            std::span<const int32_t> prompt) {
  if (std::string err = validate_backend_name(request.backend); !err.empty()) throw InputError(err);
  OpenRequest req = request;
  req.options.threads = resolve_threads(request.options.threads);
  req.options.n_ctx = resolve_n_ctx(model.hp, request.options.n_ctx);
  const BackendEntry* entry = find_backend(req.backend);
  if ((entry && entry->is_reference) || parity.policy == ParityPolicy::Off)
    return ParityGate::open(model, req, parity, {}, false);
  const Probe probe = make_probe(vocab, prompt, parity.positions, parity.steps, req.options.n_ctx);
  return ParityGate::open(model, req, parity, probe.tokens, probe.is_prompt);
}

}  // namespace lockstep
