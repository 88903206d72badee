#include "backend/cpu/fast_backend.h"

#include "backend/cpu/matmul_fast.h"
#include "backend/cpu/ops_fast.h"
#include "quant/tensor_type.h"
#include "util/error.h"

namespace lockstep {

namespace cpu {

namespace {

class FastKernels final : public CpuKernels {
 public:
  void reserve(int64_t max_tokens, int64_t max_cols, int /*n_threads*/) override {
    matmul_.reserve(max_tokens, max_cols);
  }
  void prepare(const WeightView& w) override { matmul_.prepare(w); }
  void set_input(const float* x, int64_t n, int64_t cols) override {
    matmul_.set_input(x, n, cols);
  }
  void multiply(std::span<const MatmulProduct> products, ThreadPool& pool) override {
    matmul_.multiply(products, pool);
  }
  void swiglu(float* gate, const float* up, int64_t n) override { cpu_fast::swiglu(gate, up, n); }
  void geglu(float* gate, const float* up, int64_t n) override { cpu_fast::geglu(gate, up, n); }

 private:
  cpu_fast::QuantizedMatmul matmul_;
};

}  // namespace

std::unique_ptr<CpuKernels> make_fast_kernels() {
  return std::make_unique<FastKernels>();
}

void check_fast_kernels_support(const Model& model) {
  auto check = [](const WeightView& w) {
    if (!cpu_fast::QuantizedMatmul::supports(w.type, w.cols))
      throw InputError("cpu backend: tensor '" + w.name + "' (" + tensor_type_info(w.type).name +
                       ", " + std::to_string(w.cols) +
                       " columns) has no fast CPU kernel; use --backend cpu-ref");
  };
  for (const LayerWeights& L : model.layers)
    for (const WeightView* w : {&L.wq, &L.wk, &L.wv, &L.wo, &L.ffn_gate, &L.ffn_up, &L.ffn_down})
      check(*w);
  check(model.output);
}

}  // namespace cpu

namespace {

cpu::TransformerOptions fast_options(const Model& model, const FastCpuBackend::Options& o) {
  cpu::check_fast_kernels_support(model);
  cpu::TransformerOptions t;
  t.name = "cpu";
  t.n_threads = o.n_threads;
  t.n_ctx = o.n_ctx;
  t.max_batch = o.max_batch;
  t.kv_type = o.kv_type;
  t.n_seq = o.n_seq;
  return t;
}

}  // namespace

FastCpuBackend::FastCpuBackend(const Model& model, const Options& options)
    : TransformerBackend(model, cpu::make_fast_kernels(), fast_options(model, options)) {}

FastCpuBackend::~FastCpuBackend() = default;

}  // namespace lockstep
