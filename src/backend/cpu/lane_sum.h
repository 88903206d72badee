// The 16-partial-sum accumulation shared by every reference dot product (see ops_ref.h): element
// i of a dot product goes to lane i % kLanes, and the lanes are reduced by a fixed pairwise tree,
// so a dot product gives the same bits whichever kernel (dot, matmul's multi-row kernel) computes
// it.
#pragma once

namespace lockstep::cpu_ref {

inline constexpr int kLanes = 16;

inline float reduce_lanes(float* acc) {
  for (int width = kLanes / 2; width > 0; width /= 2)
    for (int k = 0; k < width; ++k) acc[k] += acc[k + width];
  return acc[0];
}

}  // namespace lockstep::cpu_ref
