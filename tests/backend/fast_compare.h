// Helpers for the fast-path tests: the fast forward pass without the gate (the same
// CpuTransformer + fast kernels that FastCpuBackend wraps), and logit-row comparisons.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <span>
#include <vector>

#include "backend/cpu/cpu_transformer.h"
#include "backend/cpu/fast_backend.h"
#include "backend/cpu/transformer_backend.h"
#include "model/model.h"

namespace lockstep::backend_test {

// The fast path as an ungated Backend (the same forward pass and kernels as FastCpuBackend, whose
// gate the tests have no key for), with Backend::forward's checks and fault bookkeeping.
class UngatedFast final : public cpu::TransformerBackend<Backend> {
 public:
  UngatedFast(const Model& model, const cpu::TransformerOptions& o)
      : TransformerBackend(model, cpu::make_fast_kernels(), o) {}
  std::string name() const override { return "cpu"; }
};

inline std::unique_ptr<UngatedFast> make_fast(const Model& model, int threads, int n_ctx,
                                              cpu::KvType kv = cpu::KvType::F16,
                                              int max_batch = 64) {
  cpu::TransformerOptions o;
  o.name = "cpu";
  o.n_threads = threads;
  o.n_ctx = n_ctx;
  o.max_batch = max_batch;
  o.kv_type = kv;
  return std::make_unique<UngatedFast>(model, o);
}

// Cosine similarity in double; NaN when either row has a non-finite value (so it fails every
// >= comparison).
inline double cosine(const float* a, const float* b, int64_t n) {
  double ab = 0, aa = 0, bb = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (!std::isfinite(a[i]) || !std::isfinite(b[i])) return std::nan("");
    ab += double(a[i]) * double(b[i]);
    aa += double(a[i]) * double(a[i]);
    bb += double(b[i]) * double(b[i]);
  }
  return ab / (std::sqrt(aa) * std::sqrt(bb));
}

inline double max_abs_diff(const float* a, const float* b, int64_t n) {
  double m = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double e = std::fabs(double(a[i]) - double(b[i]));
    if (std::isnan(e)) return std::numeric_limits<double>::infinity();
    m = std::max(m, e);
  }
  return m;
}

// Greedy choice: the largest logit, ties to the lowest id.
inline int32_t argmax(const float* logits, int64_t n) {
  int32_t best = 0;
  for (int64_t i = 1; i < n; ++i)
    if (logits[i] > logits[best]) best = int32_t(i);
  return best;
}

inline double top2_margin(const float* logits, int64_t n) {
  std::vector<float> v(logits, logits + n);
  std::partial_sort(v.begin(), v.begin() + 2, v.end(), std::greater<float>());
  return double(v[0]) - double(v[1]);
}

// Greedy continuation of `prompt` (one call), then one call per token; margins[s], when given,
// receives the top-2 margin of the logits step s chose from.
template <class B>
std::vector<int32_t> greedy(B& b, const std::vector<int32_t>& prompt, int n_new,
                            std::vector<double>* margins = nullptr) {
  const int64_t V = b.model().hp.n_vocab;
  std::vector<float> logits(static_cast<size_t>(V));
  b.truncate(0);
  b.forward(prompt, logits.data(), false);
  std::vector<int32_t> out;
  for (int i = 0; i < n_new; ++i) {
    if (margins) margins->push_back(top2_margin(logits.data(), V));
    out.push_back(argmax(logits.data(), V));
    if (i + 1 < n_new) b.forward(std::span(&out.back(), 1), logits.data(), false);
  }
  return out;
}

}  // namespace lockstep::backend_test
