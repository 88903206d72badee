// The interface every compute backend implements (CPU reference, CPU fast, CUDA). Narrow on
// purpose: the engine feeds tokens and reads logits; each backend owns its KV cache.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "backend/fault.h"
#include "model/model.h"

namespace lockstep {

// Receives named intermediate states, for `parity --layers`. `stage` is one of "attn_out"
// (residual stream after attention) or "ffn_out" (after the FFN, i.e. the layer output);
// `hidden` is n_embd floats for token position `pos`.
class LayerObserver {
 public:
  virtual ~LayerObserver() = default;
  virtual void on_hidden(int layer, const char* stage, int pos, std::span<const float> hidden) = 0;
};

class Backend {
 public:
  virtual ~Backend() = default;

  virtual std::string name() const = 0;  // "cpu-ref", "cpu", "cuda"
  virtual const Model& model() const = 0;

  // Appends `tokens` at positions n_past() .. n_past()+n-1 to the KV cache and computes logits.
  // With all_logits, `logits` receives n * n_vocab floats (one row per token); otherwise only the
  // last token's n_vocab floats. Throws Error when the context would overflow.
  virtual void forward(std::span<const int32_t> tokens, float* logits, bool all_logits) = 0;

  virtual int n_past() const = 0;
  virtual int n_ctx() const = 0;
  // Drops every cached position >= n_past (0 clears the cache).
  virtual void truncate(int n_past) = 0;

  virtual void set_observer(LayerObserver* observer) { (void)observer; }

  // TEST KNOB (backend/fault.h): inject a deliberate fault from now on. Default: unsupported.
  virtual void set_fault(const FaultSpec& fault) { (void)fault; }
};

}  // namespace lockstep
