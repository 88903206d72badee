#include "backend/cpu/cpu_backend.h"

#include "backend/cpu/fast_backend.h"
#include "backend/cpu/reference_backend.h"

namespace lockstep {

std::unique_ptr<Backend> make_reference_backend(const Model& model, const BackendOptions& o) {
  return std::make_unique<ReferenceBackend>(model, o.threads, o.n_ctx, o.cpu.max_batch,
                                            o.cpu.ref_matmul, o.n_seq);
}

std::unique_ptr<GatedBackend> make_fast_cpu_backend(const Model& model, const BackendOptions& o) {
  FastCpuBackend::Options options;
  options.n_threads = o.threads;
  options.n_ctx = o.n_ctx;
  options.max_batch = o.cpu.max_batch;
  options.kv_type = o.cpu.fast_kv;
  options.n_seq = o.n_seq;
  return std::make_unique<FastCpuBackend>(model, options);
}

}  // namespace lockstep
