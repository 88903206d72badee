#include "engine/backend_factory.h"

#include <algorithm>

#include "backend/cpu/reference_backend.h"
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

std::unique_ptr<Backend> make_backend(const Model& model, const BackendChoice& choice,
                                      std::string* note) {
  if (std::string err = validate_backend_name(choice.name); !err.empty()) throw InputError(err);
  const int threads = resolve_threads(choice.threads);
  const int n_ctx = resolve_n_ctx(model, choice.n_ctx);
  // Until the run path opens backends through ParityGate::open, every name is served by the
  // reference. GPU backends are deliberately not constructible from here (see the header): the
  // parity gate is their only door. "auto" choosing the reference needs no note; a backend the
  // user named explicitly and does not get does.
  if (note && choice.name == "cuda")
    *note =
        "--backend cuda: serving from cpu-ref instead; GPU backends are only opened through "
        "the parity gate, which the run path does not use yet";
  if (note && choice.name == "cpu")
    *note =
        "--backend cpu: the fast CPU path is not wired into the run path yet; serving from "
        "cpu-ref";
  return std::make_unique<ReferenceBackend>(model, threads, n_ctx);
}

}  // namespace lockstep
