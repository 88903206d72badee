// The reference CPU backend ("cpu-ref"): the path every other backend is proven against by the
// parity gate. It reads like llama2.c's forward(): one stage after another, each a function from
// ops_ref.h, float32 activations, a float32 KV cache, weights dequantized row by row from the
// file. Its results do not depend on the thread count or on how tokens are batched: a prefill of
// n tokens gives bit-identical logits to n single-token calls.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "backend/cpu/matmul_ref.h"
#include "backend/fault.h"
#include "model/model.h"
#include "util/thread_pool.h"

namespace lockstep {

class ReferenceBackend final : public Backend {
 public:
  static constexpr int kMaxContext = 4096;  // default n_ctx cap: min(n_ctx_train, 4096)
  static constexpr int kDefaultMaxBatch = 64;

  // n_threads <= 0: default_thread_count(); n_ctx <= 0: min(n_ctx_train, 4096). Tokens of a
  // forward() call are computed max_batch at a time (longer calls are split; same results). All
  // buffers, the KV cache included, are allocated here; forward() allocates nothing. The model
  // must outlive the backend. Throws Error when the KV cache cannot be allocated.
  explicit ReferenceBackend(const Model& model, int n_threads = 0, int n_ctx = 0,
                            int max_batch = kDefaultMaxBatch);
  ~ReferenceBackend() override;

  std::string name() const override { return "cpu-ref"; }
  const Model& model() const override { return model_; }

  // Throws InputError for a token id outside the vocabulary and Error for an empty batch or a
  // batch that would overflow the context; the cache is unchanged then.
  void forward(std::span<const int32_t> tokens, float* logits, bool all_logits) override;

  int n_past() const override { return n_past_; }
  int n_ctx() const override { return n_ctx_; }
  void truncate(int n_past) override;  // n_past >= n_past() keeps everything; < 0 is an Error
  void set_observer(LayerObserver* observer) override { observer_ = observer; }
  // TEST KNOB: see backend/fault.h. Restarts the fault's call count. Throws InputError for a
  // layer or position out of range or a non-finite magnitude.
  void set_fault(const FaultSpec& fault) override;

  int n_threads() const { return pool_.size(); }

 private:
  // Small 1-D weights (norms, biases), dequantized once.
  struct LayerVectors {
    std::vector<float> attn_norm, ffn_norm, bq, bk, bv;
  };

  void forward_batch(const int32_t* tokens, int64_t n, int64_t pos0, float* logits,
                     bool all_logits);
  void attention_layer(int64_t layer, int64_t n, int64_t pos0);
  void compute_logits(int64_t first, int64_t n_rows, float* logits);
  float* k_cache(int64_t layer, int64_t pos) const;
  float* v_cache(int64_t layer, int64_t pos) const;
  void observe(int64_t layer, const char* stage, int64_t n, int64_t pos0) const;

  // TEST KNOB helpers.
  void corrupt_layer_output(int64_t layer, int64_t n, int64_t pos0);
  void drift_kv(int64_t pos_begin, int64_t pos_end, int64_t call);
  void poison_logits(float* logits, bool all_logits, int64_t pos_begin, int64_t pos_end);

  const Model& model_;
  const HParams hp_;
  const int64_t q_dim_, kv_dim_;
  int n_ctx_ = 0;
  int max_batch_ = 0;
  int n_past_ = 0;

  ThreadPool pool_;
  cpu_ref::MatmulScratch matmul_scratch_;
  std::vector<LayerVectors> layer_vectors_;
  std::vector<float> output_norm_;

  // KV cache: [layer][position][kv_dim] floats, K and V separately.
  std::unique_ptr<float[]> k_cache_, v_cache_;

  // Activations for max_batch tokens, one row per token.
  std::vector<float> x_;       // residual stream [n_embd]
  std::vector<float> xb_;      // normalised input of a block [n_embd]
  std::vector<float> xb2_;     // output of wo / ffn_down [n_embd]
  std::vector<float> q_;       // queries [q_dim]
  std::vector<float> att_;     // attention output [q_dim]
  std::vector<float> hb_;      // ffn gate, then SwiGLU [n_ff]
  std::vector<float> hb2_;     // ffn up [n_ff]
  std::vector<float> scores_;  // attention scores, n_ctx per thread

  LayerObserver* observer_ = nullptr;

  FaultSpec fault_;
  int64_t fault_calls_ = 0;  // forward calls since set_fault
  bool fault_nan_done_ = false;
};

}  // namespace lockstep
