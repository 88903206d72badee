#include "backend/cpu/cpu_backend.h"

#include "backend/cpu/fast_backend.h"
#include "backend/cpu/reference_backend.h"

namespace lockstep {

std::unique_ptr<Backend> make_reference_backend(const Model& model, int threads, int n_ctx) {
  return std::make_unique<ReferenceBackend>(model, threads, n_ctx);
}

std::unique_ptr<GatedBackend> make_fast_cpu_backend(const Model& model, int threads, int n_ctx) {
  FastCpuBackend::Options options;
  options.n_threads = threads;
  options.n_ctx = n_ctx;
  return std::make_unique<FastCpuBackend>(model, options);
}

}  // namespace lockstep
