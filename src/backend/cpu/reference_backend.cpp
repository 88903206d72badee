#include "backend/cpu/reference_backend.h"

#include "backend/cpu/matmul_ref.h"
#include "backend/cpu/ops_ref.h"

namespace lockstep {

namespace cpu {

namespace {

class ReferenceKernels final : public CpuKernels {
 public:
  explicit ReferenceKernels(const RefMatmulTuning& tuning) : tuning_(tuning) {}
  void reserve(int64_t /*max_tokens*/, int64_t max_cols, int n_threads) override {
    scratch_ =
        cpu_ref::MatmulScratch(n_threads, max_cols, cpu_ref::kMatmulDefaultMaxTokens, tuning_);
  }
  void set_input(const float* x, int64_t n, int64_t /*cols*/) override {
    x_ = x;
    n_ = n;
  }
  void multiply(std::span<const MatmulProduct> products, ThreadPool& pool) override {
    for (const MatmulProduct& p : products) cpu_ref::matmul(p.y, *p.w, x_, n_, pool, scratch_);
  }
  void swiglu(float* gate, const float* up, int64_t n) override { cpu_ref::swiglu(gate, up, n); }
  void geglu(float* gate, const float* up, int64_t n) override { cpu_ref::geglu(gate, up, n); }

 private:
  RefMatmulTuning tuning_;
  cpu_ref::MatmulScratch scratch_;
  const float* x_ = nullptr;
  int64_t n_ = 0;
};

}  // namespace

std::unique_ptr<CpuKernels> make_reference_kernels(const RefMatmulTuning& tuning) {
  return std::make_unique<ReferenceKernels>(tuning);
}

}  // namespace cpu

namespace {

cpu::TransformerOptions reference_options(int n_threads, int n_ctx, int max_batch, int n_seq) {
  cpu::TransformerOptions o;
  o.n_seq = n_seq;
  o.name = "cpu-ref";
  o.n_threads = n_threads;
  o.n_ctx = n_ctx;
  o.max_batch = max_batch;
  o.kv_type = cpu::KvType::F32;
  return o;
}

}  // namespace

ReferenceBackend::ReferenceBackend(const Model& model, int n_threads, int n_ctx, int max_batch,
                                   const RefMatmulTuning& tuning, int n_seq)
    : TransformerBackend(model, cpu::make_reference_kernels(tuning),
                         reference_options(n_threads, n_ctx, max_batch, n_seq)) {}

ReferenceBackend::~ReferenceBackend() = default;

}  // namespace lockstep
