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

class FastCpuBackend final : public GatedBackend {
 public:
  static constexpr int kDefaultMaxBatch = 64;

  struct Options {
    int n_threads = 0;  // <= 0: default_thread_count() (physical cores)
    int n_ctx = 0;      // <= 0: min(n_ctx_train, 4096)
    int max_batch = kDefaultMaxBatch;
    cpu::KvType kv_type = cpu::KvType::F16;
  };

  // Throws InputError for a weight the fast kernels cannot multiply, Error when the KV cache
  // cannot be allocated. The model must outlive the backend.
  FastCpuBackend(const Model& model, const Options& options);
  ~FastCpuBackend() override;

  std::string name() const override { return "cpu"; }
  const Model& model() const override { return transformer_.model(); }
  int n_past() const override { return transformer_.n_past(); }
  int n_ctx() const override { return transformer_.n_ctx(); }
  void truncate(int n_past) override { transformer_.truncate(n_past); }
  void set_observer(LayerObserver* observer) override { transformer_.set_observer(observer); }
  // TEST KNOB: see backend/fault.h; the same semantics as cpu-ref (one shared implementation).
  void set_fault(const FaultSpec& fault) override { transformer_.set_fault(fault); }

  int n_threads() const { return transformer_.n_threads(); }
  cpu::KvType kv_type() const { return transformer_.kv_type(); }

 protected:
  void forward_impl(std::span<const int32_t> tokens, float* logits, bool all_logits) override {
    transformer_.forward(tokens, logits, all_logits);
  }

 private:
  cpu::CpuTransformer transformer_;
};

}  // namespace lockstep
