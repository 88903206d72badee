// TEST KNOB (backend/fault.h) of CpuTransformer: the faults injected inside the forward pass or
// its cache, shared by cpu-ref and cpu so both misbehave identically. The pseudo-random values
// are those the CUDA backend uses too (util/hash.h, the same keys). Backend::forward injects the
// NaN fault itself.
#include "backend/cpu/cpu_transformer.h"
#include "util/hash.h"

namespace lockstep::cpu {

void CpuTransformer::corrupt_layer_output(int64_t layer, const TokenSlot* tokens, int64_t n) {
  const FaultSpec& f = *layer_fault_;
  for (int64_t t = 0; t < n; ++t) {
    if (tokens[t].pos != f.position) continue;
    float* h = x_.data() + t * hp_.n_embd;
    for (int64_t i = 0; i < hp_.n_embd; ++i) {
      const bool negative = hash4(1, uint64_t(layer), uint64_t(f.position), uint64_t(i)) & 1;
      h[i] += negative ? -f.magnitude : f.magnitude;
    }
  }
}

void CpuTransformer::corrupt_batched_sequences(int64_t layer, const TokenSlot* tokens, int64_t n) {
  const FaultSpec& f = *batch_fault_;
  for (int64_t t = 0; t < n; ++t) {
    if (tokens[t].seq == batch_first_seq_) continue;
    float* h = x_.data() + t * hp_.n_embd;
    for (int64_t i = 0; i < hp_.n_embd; ++i) {
      const bool negative = hash4(3, uint64_t(layer), uint64_t(tokens[t].pos), uint64_t(i)) & 1;
      h[i] += negative ? -f.magnitude : f.magnitude;
    }
  }
}

void CpuTransformer::drift_kv(int seq, int64_t pos_begin, int64_t pos_end, float scale) {
  for (int64_t l = 0; l < hp_.n_layer; ++l) {
    for (int64_t p = pos_begin; p < pos_end; ++p) {
      const uint64_t pos_key = uint64_t(p) << 32;
      kv_.add(
          l, seq_row(seq) + p,
          [&](int64_t i) {
            return scale * unit_noise(hash4(2, uint64_t(l), pos_key | uint64_t(i), 0));
          },
          [&](int64_t i) {
            return scale * unit_noise(hash4(2, uint64_t(l), pos_key | uint64_t(i), 1));
          });
    }
  }
}

}  // namespace lockstep::cpu
