// The reference CPU backend ("cpu-ref"): the path every other backend is proven against by the
// parity gate. It runs the shared forward pass (cpu_transformer.h, which reads like llama2.c's
// forward()) with the reference kernels: float32 activations, a float32 KV cache, weights
// dequantized row by row from the file (matmul_ref.h), the stages of ops_ref.h. Its results do
// not depend on the thread count or on how tokens are batched: a prefill of n tokens gives
// bit-identical logits to n single-token calls.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "backend/backend.h"
#include "backend/cpu/cpu_kernels.h"
#include "backend/cpu/cpu_transformer.h"
#include "backend/fault.h"
#include "model/model.h"

namespace lockstep {

namespace cpu {
// Float activations into cpu_ref::matmul; cpu_ref::swiglu.
std::unique_ptr<CpuKernels> make_reference_kernels();
}  // namespace cpu

class ReferenceBackend final : public Backend {
 public:
  static constexpr int kMaxContext = cpu::CpuTransformer::kMaxContext;  // default n_ctx cap
  static constexpr int kDefaultMaxBatch = 64;

  // n_threads <= 0: default_thread_count(); n_ctx <= 0: min(n_ctx_train, 4096). Tokens of a
  // forward() call are computed max_batch at a time (longer calls are split; same results). All
  // buffers, the KV cache included, are allocated here; forward() allocates nothing. The model
  // must outlive the backend. Throws Error when the KV cache cannot be allocated.
  explicit ReferenceBackend(const Model& model, int n_threads = 0, int n_ctx = 0,
                            int max_batch = kDefaultMaxBatch);
  ~ReferenceBackend() override;

  std::string name() const override { return "cpu-ref"; }
  const Model& model() const override { return transformer_.model(); }

  // Throws InputError for a token id outside the vocabulary and Error for an empty batch or a
  // batch that would overflow the context; the cache is unchanged then.
  void forward(std::span<const int32_t> tokens, float* logits, bool all_logits) override {
    transformer_.forward(tokens, logits, all_logits);
  }

  int n_past() const override { return transformer_.n_past(); }
  int n_ctx() const override { return transformer_.n_ctx(); }
  // n_past >= n_past() keeps everything; < 0 is an Error.
  void truncate(int n_past) override { transformer_.truncate(n_past); }
  void set_observer(LayerObserver* observer) override { transformer_.set_observer(observer); }
  // TEST KNOB: see backend/fault.h. Restarts the fault's call count. Throws InputError for a
  // layer or position out of range or a non-finite magnitude.
  void set_fault(const FaultSpec& fault) override { transformer_.set_fault(fault); }

  int n_threads() const { return transformer_.n_threads(); }

 private:
  cpu::CpuTransformer transformer_;
};

}  // namespace lockstep
