// The greedy choice over a row of logits, shared by the sampler and by backends that pick it
// where the logits are (CUDA: on the device, so that a greedy decode step copies B ids to the host
// instead of B rows of the vocabulary).
#pragma once

#include <cstdint>
#include <span>

namespace lockstep {

// The lowest id of the largest value, as a plain scan from id 0 finds it (a NaN never wins; with
// a NaN at id 0 the scan keeps id 0). Empty: 0.
int32_t row_argmax(std::span<const float> logits);

// What greedy sampling makes of a row: row_argmax, or kNoGreedyPick when the row holds a NaN or
// +inf or no finite value (rows Sampler::sample refuses).
constexpr int32_t kNoGreedyPick = -1;
int32_t greedy_pick(std::span<const float> logits);

}  // namespace lockstep
