// How an attention score is made from the dot product q . k, shared by the reference and the fast
// attention kernels: scaled (by 1/sqrt(head_dim) unless the model says otherwise) and, for
// gemma2, soft-capped: cap * tanh(score / cap) keeps every score inside (-cap, cap).
#pragma once

#include <cmath>
#include <cstdint>

namespace lockstep::cpu {

struct AttentionScoring {
  float scale = 0;    // 0: 1 / sqrt(head_dim)
  float softcap = 0;  // 0: none

  float scale_for(int64_t head_dim) const {
    return scale > 0 ? scale : 1.0f / std::sqrt(float(head_dim));
  }
  // The score of a dot product already multiplied by scale_for(head_dim).
  float cap(float scaled) const {
    return softcap > 0 ? softcap * std::tanh(scaled / softcap) : scaled;
  }
};

}  // namespace lockstep::cpu
