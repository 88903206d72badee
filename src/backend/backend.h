// The interface every compute backend implements (CPU reference, CPU fast, CUDA). Narrow on
// purpose: the engine feeds tokens and reads logits; each backend owns its KV cache.
//
// forward() is not virtual: it checks what every backend would otherwise check on its own (the
// gate's permission, token ids, the batch, the context) and keeps the TEST KNOB fault's
// bookkeeping (backend/fault.h), then calls the backend's forward_impl(). A backend implements
// only the computation.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

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

// One sequence's part of a multi-sequence batch (Backend::forward_batch).
struct SeqTokens {
  int seq = 0;                      // which of the backend's n_seq() sequences
  std::span<const int32_t> tokens;  // appended at that sequence's positions n_past .. n_past+n-1
  float* logits = nullptr;          // n rows (all_logits) or the last token's row; nullptr: none
  bool all_logits = false;
  // The greedy choice after the last token (greedy_pick over the first argmax_cols logits of its
  // row; 0: all n_vocab), with or without the row itself: a greedy decode step needs B ids, not
  // B rows of the vocabulary. nullptr: none.
  int32_t* argmax = nullptr;
  int argmax_cols = 0;
};

class Backend {
 public:
  virtual ~Backend() = default;

  virtual std::string name() const = 0;  // the registry's name: "cpu-ref", "cpu", "cuda"
  virtual const Model& model() const = 0;

  // Appends `tokens` at positions n_past() .. n_past()+n-1 to the KV cache and computes logits.
  // With all_logits, `logits` receives n * n_vocab floats (one row per token); otherwise only the
  // last token's n_vocab floats. Throws InputError for a token id outside the vocabulary, Error
  // for an empty batch or one that would overflow the context (the cache is unchanged then), and
  // Error(kExitParity) when a gated backend has not been let through by the parity gate.
  // Sequence 0; see forward_batch.
  void forward(std::span<const int32_t> tokens, float* logits, bool all_logits);

  // Several sequences in one call (continuous batching): each item's tokens go to its own
  // sequence's cache at its own positions, and every row of the result is exactly what the item
  // alone would give (a row's arithmetic does not depend on the batch). Each sequence at most once
  // per call. Throws like forward(), naming the sequence, before anything is computed.
  void forward_batch(std::span<const SeqTokens> batch);

  // Sequences the KV cache holds, each of n_ctx() positions (slots; 1 unless the backend was
  // created with BackendOptions::n_seq).
  virtual int n_seq() const { return 1; }
  // The step sizes (sequences per decode step) from which another route through the backend runs
  // (CUDA: the mmq products, the GEMMs, instead of the batch-invariant matvecs), ascending; empty:
  // every step takes the same one. The parity gate feeds steps of each size it has the sequences
  // for, so that every route is checked before it serves.
  virtual std::vector<int> batch_route_rows() const { return {}; }
  // The memory bandwidth a device-to-device copy reaches on this backend's device, read plus
  // written bytes per second / 1e9, measured when called (bench's yardstick for its weight
  // bandwidth; it takes a fraction of a second and scratch memory); 0 where not measured.
  virtual double measured_copy_gb_per_s() { return 0; }
  virtual int n_ctx() const = 0;
  // Sequence 0's cached length, and any sequence's.
  virtual int n_past() const = 0;
  virtual int seq_past(int seq) const {
    (void)seq;
    return n_past();
  }
  // Drops every cached position >= n_past (0 clears the cache); n_past >= n_past() keeps
  // everything; a negative n_past is an Error. truncate_seq: the same for one sequence.
  virtual void truncate(int n_past) = 0;
  virtual void truncate_seq(int seq, int n_past) {
    (void)seq;
    truncate(n_past);
  }

  virtual void set_observer(LayerObserver* observer) { (void)observer; }

  // TEST KNOB (backend/fault.h): inject a deliberate fault from now on; restarts the fault's call
  // count. Throws InputError for a layer or position out of range or a non-finite magnitude.
  void set_fault(const FaultSpec& fault);

 protected:
  // The computation behind forward(), called with a validated, non-empty batch that fits.
  virtual void forward_impl(std::span<const int32_t> tokens, float* logits, bool all_logits) = 0;
  // The computation behind forward_batch(), called with validated items. The default serves a
  // single-sequence backend: one item at a time through forward_impl.
  virtual void forward_batch_impl(std::span<const SeqTokens> batch) {
    for (const SeqTokens& item : batch) forward_impl(item.tokens, item.logits, item.all_logits);
  }
  // Whether forward_batch_impl fills batch[i].argmax itself (from the row on its device); the
  // default, no: forward_batch then computes that row into a scratch row (when the caller gave
  // none) and picks on the host.
  virtual bool picks_argmax(std::span<const SeqTokens> batch, size_t i) const {
    (void)batch;
    (void)i;
    return false;
  }
  // Throws when this backend may not compute now (GatedBackend: before the parity gate).
  virtual void check_may_compute() const {}
  // KvDrift: move every K and V value at positions [pos_begin, pos_end) of sequence `seq`, in
  // every layer, by scale * unit_noise(hash4(2, layer, pos << 32 | i, 0 for K / 1 for V))
  // (util/hash.h).
  virtual void drift_kv(int seq, int64_t pos_begin, int64_t pos_end, float scale) = 0;
  // The fault in force (kind None when there is none); LayerCorrupt is the backend's to inject.
  const FaultSpec& fault() const { return fault_; }

 private:
  void validate(std::span<const SeqTokens> batch, std::vector<int>& pos_begin) const;
  void apply_fault(const SeqTokens& item, int64_t pos_begin, int64_t call);

  std::vector<int> pos_begin_;  // forward_batch(): each item's first position
  // forward_batch(): the batch with scratch rows for the argmax picks made here, and those rows
  std::vector<SeqTokens> host_pick_items_;
  std::vector<float> host_pick_rows_;
  FaultSpec fault_;
  int64_t fault_calls_ = 0;  // forward calls since set_fault
  bool fault_nan_done_ = false;
};

// For a backend that implements only the llama/qwen2 forward pass (the Vulkan backend): an
// Error(kExitDevice) naming the backend and the model's features beyond that pass
// (extended_features in model/hparams.h), or nothing for a plain model. The gate treats it like
// a device that cannot take the model: under --backend auto the next backend serves (with a
// line on stderr), a forced backend exits with code 4. With rope_variants, the rope's frequency
// factors (Llama 3.1+) and YaRN count as implemented.
void require_plain_architecture(const Model& model, const std::string& backend,
                                bool rope_variants = false);

}  // namespace lockstep
