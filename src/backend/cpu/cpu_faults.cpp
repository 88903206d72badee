// TEST KNOB (backend/fault.h) of CpuTransformer: the deliberate faults the parity gate's
// falsification tests inject. Shared by cpu-ref and cpu, so both misbehave identically; the
// pseudo-random values are those the CUDA backend uses too (splitmix64 of the same keys).
#include <algorithm>
#include <cmath>
#include <limits>

#include "backend/cpu/cpu_transformer.h"
#include "util/error.h"

namespace lockstep::cpu {

namespace {

// Deterministic pseudo-random numbers for the fault knobs (splitmix64 finaliser).
uint64_t mix(uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
uint64_t hash4(uint64_t a, uint64_t b, uint64_t c, uint64_t d) {
  return mix(mix(mix(mix(a) ^ b) ^ c) ^ d);
}
// Uniform in [-1, 1).
float unit_noise(uint64_t h) {
  return float(double(h >> 40) * (2.0 / double(1ull << 24)) - 1.0);
}

}  // namespace

void CpuTransformer::set_fault(const FaultSpec& fault) {
  validate_fault(fault, hp_.n_layer);
  fault_ = fault;
  fault_calls_ = 0;
  fault_nan_done_ = false;
}

void CpuTransformer::corrupt_layer_output(int64_t layer, int64_t n, int64_t pos0) {
  const int64_t t = fault_.position - pos0;
  if (t < 0 || t >= n) return;
  float* h = x_.data() + t * hp_.n_embd;
  for (int64_t i = 0; i < hp_.n_embd; ++i) {
    const bool negative = hash4(1, uint64_t(layer), uint64_t(fault_.position), uint64_t(i)) & 1;
    h[i] += negative ? -fault_.magnitude : fault_.magnitude;
  }
}

void CpuTransformer::drift_kv(int64_t pos_begin, int64_t pos_end, int64_t call) {
  if (call == 0) return;
  const float scale = fault_.magnitude * float(call);
  for (int64_t l = 0; l < hp_.n_layer; ++l) {
    for (int64_t p = pos_begin; p < pos_end; ++p) {
      const uint64_t pos_key = uint64_t(p) << 32;
      kv_.add(
          l, p,
          [&](int64_t i) {
            return scale * unit_noise(hash4(2, uint64_t(l), pos_key | uint64_t(i), 0));
          },
          [&](int64_t i) {
            return scale * unit_noise(hash4(2, uint64_t(l), pos_key | uint64_t(i), 1));
          });
    }
  }
}

void CpuTransformer::poison_logits(float* logits, bool all_logits, int64_t pos_begin,
                                   int64_t pos_end) {
  if (fault_nan_done_) return;
  // Rows returned: every position (all_logits) or only the last one.
  const int64_t first_row_pos = all_logits ? pos_begin : pos_end - 1;
  const int64_t pos = std::max<int64_t>(first_row_pos, fault_.position);
  if (pos >= pos_end) return;
  float* row = logits + (pos - first_row_pos) * hp_.n_vocab;
  std::fill(row, row + hp_.n_vocab, std::numeric_limits<float>::quiet_NaN());
  fault_nan_done_ = true;
}

}  // namespace lockstep::cpu
