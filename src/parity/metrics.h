// Comparison of two full-vocabulary logit vectors: the numbers the parity gate decides on.
#pragma once

#include <cstdint>
#include <span>

namespace lockstep {

struct LogitComparison {
  double cosine = 0;      // cos(angle) between the raw logit vectors
  double kl = 0;          // KL(P_ref || P_cand) of the softmax distributions, in nats
  double max_abs = 0;     // max_i |ref_i - cand_i|
  int32_t ref_top1 = -1;  // argmax of the reference (ties to the lowest id)
  int32_t cand_top1 = -1;
  double ref_margin = 0;  // reference top-1 logit minus its top-2 logit
  bool finite = true;     // false if either vector holds NaN or Inf
  bool top1_agree() const { return ref_top1 == cand_top1; }
};

// All sums in double. A non-finite input sets finite = false and makes cosine NaN so that no
// threshold comparison can pass by accident.
LogitComparison compare_logits(std::span<const float> ref, std::span<const float> cand);

int32_t argmax(std::span<const float> logits);  // ties to the lowest id

}  // namespace lockstep
