// The fast CPU backend ("cpu", the default CPU path): the same forward pass as the reference
// (cpu_transformer.h) with the fast kernels: activations quantized once per matmul input and
// multiplied with SIMD integer dot products (matmul_fast.h), an F16 KV cache by default (F32
// selectable) with vectorised attention and SwiGLU (ops_fast.h). Decode matvecs run on the
// persistent pool, split over output rows (the vocabulary projection included); prefill runs
// batched matrix-matrix products.
//
// A GatedBackend: it computes only after the parity gate has compared it with the reference
// (obtain it through ParityGate::open, never directly).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "backend/cpu/cpu_kernels.h"
#include "backend/cpu/cpu_transformer.h"
#include "backend/cpu/transformer_backend.h"
#include "backend/gated_backend.h"
#include "model/model.h"

namespace lockstep {

namespace cpu {
// QuantizedMatmul and the vectorised SwiGLU.
std::unique_ptr<CpuKernels> make_fast_kernels();
// InputError naming the first weight the fast matmul cannot multiply (a type vec_dot.h lacks,
// or a row length that is not a whole number of blocks).
void check_fast_kernels_support(const Model& model);
}  // namespace cpu

class FastCpuBackend final : public cpu::TransformerBackend<GatedBackend> {
 public:
  static constexpr int kDefaultMaxBatch = 64;

  struct Options {
    int n_threads = 0;  // <= 0: default_thread_count() (physical cores)
    int n_ctx = 0;      // <= 0: default_n_ctx()
    int max_batch = kDefaultMaxBatch;
    KvType kv_type = KvType::F16;
    int n_seq = 1;  // sequences (slots) the KV cache holds
  };

  // Throws InputError for a weight the fast kernels cannot multiply, Error when the KV cache
  // cannot be allocated. The model must outlive the backend.
  FastCpuBackend(const Model& model, const Options& options);
  ~FastCpuBackend() override;

  std::string name() const override { return "cpu"; }
};

}  // namespace lockstep
