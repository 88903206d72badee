#include "backend/backend.h"

#include <algorithm>
#include <limits>

#include "util/error.h"

namespace lockstep {

void Backend::forward(std::span<const int32_t> tokens, float* logits, bool all_logits) {
  check_may_compute();
  const int64_t n = int64_t(tokens.size());
  const int64_t n_vocab = model().hp.n_vocab;
  if (n == 0) throw Error(name() + ": forward() called with no tokens");
  for (int64_t i = 0; i < n; ++i)
    if (tokens[size_t(i)] < 0 || tokens[size_t(i)] >= n_vocab)
      throw InputError("token id " + std::to_string(tokens[size_t(i)]) + " at batch index " +
                       std::to_string(i) + " is outside the vocabulary (n_vocab " +
                       std::to_string(n_vocab) + ")");
  const int64_t pos_begin = n_past();
  if (pos_begin + n > n_ctx())
    throw Error("context overflow: " + std::to_string(pos_begin) + " cached + " +
                std::to_string(n) + " new tokens > n_ctx " + std::to_string(n_ctx()));
  forward_impl(tokens, logits, all_logits);
  apply_fault(logits, all_logits, pos_begin, pos_begin + n);
}

void Backend::set_fault(const FaultSpec& fault) {
  validate_fault(fault, model().hp.n_layer);
  fault_ = fault;
  fault_calls_ = 0;
  fault_nan_done_ = false;
}

void Backend::apply_fault(float* logits, bool all_logits, int64_t pos_begin, int64_t pos_end) {
  const int64_t call = fault_calls_++;
  if (fault_.kind == FaultSpec::KvDrift && call > 0)
    drift_kv(pos_begin, pos_end, fault_.magnitude * float(call));
  if (fault_.kind == FaultSpec::NaN && !fault_nan_done_ && logits) {
    // Rows returned: every position (all_logits) or only the last one.
    const int64_t first_row_pos = all_logits ? pos_begin : pos_end - 1;
    const int64_t pos = std::max<int64_t>(first_row_pos, fault_.position);
    if (pos >= pos_end) return;
    const size_t V = size_t(model().hp.n_vocab);
    float* row = logits + size_t(pos - first_row_pos) * V;
    std::fill(row, row + V, std::numeric_limits<float>::quiet_NaN());
    fault_nan_done_ = true;
  }
}

}  // namespace lockstep
