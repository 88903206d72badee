#include "engine/backend_factory.h"

#include <algorithm>
#include <cstdio>

#include "parity/probe.h"
#include "util/error.h"
#include "util/thread_pool.h"

namespace lockstep {

std::string validate_backend_name(const std::string& name) {
  if (name == "cpu" || name == "cpu-ref" || name == "cuda" || name == "auto") return {};
  return "--backend must be one of cpu, cpu-ref, cuda, auto; got '" + name + "'";
}

int resolve_n_ctx(const Model& model, int requested) {
  if (requested > 0) return requested;
  return int(std::min<int64_t>(model.hp.n_ctx_train, 4096));
}

int resolve_threads(int requested) {
  return requested > 0 ? requested : default_thread_count();
}

OpenResult open_backend(const Model& model, const tokenizer::Vocab& vocab,
                        const BackendChoice& choice, const ParityConfig& parity,
                        std::span<const int32_t> prompt) {
  if (std::string err = validate_backend_name(choice.name); !err.empty()) throw InputError(err);
  OpenRequest req;
  req.backend = choice.name;
  req.threads = resolve_threads(choice.threads);
  req.n_ctx = resolve_n_ctx(model, choice.n_ctx);
  if (choice.name == "cpu-ref" || parity.policy == ParityPolicy::Off)
    return ParityGate::open(model, req, parity, {}, false);
  const Probe probe = make_probe(vocab, prompt, parity.positions, parity.steps, req.n_ctx);
  return ParityGate::open(model, req, parity, probe.tokens, probe.is_prompt);
}

std::string describe_backend(const OpenResult& opened) {
  return opened.backend_used + " (" + opened.verdict.summary() + ")";
}

}  // namespace lockstep
