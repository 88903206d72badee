// What the two CPU backends share: a Backend (the reference) or a GatedBackend (the fast path)
// around one CpuTransformer, which they run with different kernels.
#pragma once

#include <memory>
#include <span>

#include "backend/cpu/cpu_kernels.h"
#include "backend/cpu/cpu_transformer.h"

namespace lockstep::cpu {

template <class Base>
class TransformerBackend : public Base {
 public:
  const Model& model() const override { return transformer_.model(); }
  int n_seq() const override { return transformer_.n_seq(); }
  int n_ctx() const override { return transformer_.n_ctx(); }
  int n_past() const override { return transformer_.n_past(0); }
  int seq_past(int seq) const override { return transformer_.n_past(seq); }
  void truncate(int n_past) override { transformer_.truncate(0, n_past); }
  void truncate_seq(int seq, int n_past) override { transformer_.truncate(seq, n_past); }
  void set_observer(LayerObserver* observer) override { transformer_.set_observer(observer); }

  int n_threads() const { return transformer_.n_threads(); }
  KvType kv_type() const { return transformer_.kv_type(); }

 protected:
  TransformerBackend(const Model& model, std::unique_ptr<CpuKernels> kernels,
                     const TransformerOptions& options)
      : transformer_(model, std::move(kernels), options) {}

  void forward_impl(std::span<const int32_t> tokens, float* logits, bool all_logits) override {
    const SeqTokens item{0, tokens, logits, all_logits};
    transformer_.forward({&item, 1}, this->fault());
  }
  void forward_batch_impl(std::span<const SeqTokens> batch) override {
    transformer_.forward(batch, this->fault());
  }
  void drift_kv(int seq, int64_t pos_begin, int64_t pos_end, float scale) override {
    transformer_.drift_kv(seq, pos_begin, pos_end, scale);
  }

 private:
  CpuTransformer transformer_;
};

}  // namespace lockstep::cpu
