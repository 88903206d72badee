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
#include "backend/cpu/transformer_backend.h"
#include "backend/fault.h"
#include "model/model.h"

namespace lockstep {

namespace cpu {
// Float activations into cpu_ref::matmul (with the given piece widths); cpu_ref::swiglu.
std::unique_ptr<CpuKernels> make_reference_kernels(const RefMatmulTuning& tuning = {});
}  // namespace cpu

class ReferenceBackend final : public cpu::TransformerBackend<Backend> {
 public:
  static constexpr int kDefaultMaxBatch = 64;

  // n_threads <= 0: default_thread_count(); n_ctx <= 0: default_n_ctx(). Tokens of a forward()
  // call are computed max_batch at a time (longer calls are split; same results). All buffers,
  // the KV cache included, are allocated here; forward() allocates nothing. The model must
  // outlive the backend. Throws Error when the KV cache cannot be allocated.
  explicit ReferenceBackend(const Model& model, int n_threads = 0, int n_ctx = 0,
                            int max_batch = kDefaultMaxBatch, const RefMatmulTuning& tuning = {},
                            int n_seq = 1);
  ~ReferenceBackend() override;

  std::string name() const override { return "cpu-ref"; }
};

}  // namespace lockstep
