// The forward pass both CPU backends run: token embedding, then per layer RMSNorm -> Q/K/V ->
// RoPE -> KV cache -> causal attention -> wo -> residual, RMSNorm -> SwiGLU FFN -> residual; then
// the output norm and the vocabulary projection. It reads like llama2.c's forward(); the stages
// where the reference and the fast path differ are calls into a CpuKernels object (matmul,
// SwiGLU) or chosen by the KV cache type (attention). Everything else, including the observer
// calls and the TEST KNOB faults (backend/fault.h), is this one code, so both backends honour
// them identically.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "backend/backend_options.h"
#include "backend/cpu/cpu_kernels.h"
#include "backend/cpu/kv_cache.h"
#include "backend/fault.h"
#include "model/model.h"
#include "util/thread_pool.h"

namespace lockstep::cpu {

struct TransformerOptions {
  std::string name;    // the backend's name, for messages: "cpu-ref", "cpu"
  int n_threads = 0;   // <= 0: default_thread_count()
  int n_ctx = 0;       // <= 0: default_n_ctx (backend_options.h)
  int max_batch = 64;  // tokens computed together; longer forward() calls are split
  KvType kv_type = KvType::F32;
};

class CpuTransformer {
 public:
  // All buffers, the KV cache included, are allocated here; forward() allocates nothing. The
  // model must outlive the transformer. Throws Error when the KV cache cannot be allocated.
  CpuTransformer(const Model& model, std::unique_ptr<CpuKernels> kernels,
                 const TransformerOptions& options);
  ~CpuTransformer();

  const Model& model() const { return model_; }
  const std::string& name() const { return name_; }

  // Backend::forward_impl: the batch is non-empty, its ids are in the vocabulary and it fits the
  // context (Backend::forward checked). `fault` is the backend's TEST KNOB; this forward pass
  // injects a LayerCorrupt fault, Backend::forward the others.
  void forward(std::span<const int32_t> tokens, float* logits, bool all_logits,
               const FaultSpec& fault);

  int n_past() const { return n_past_; }
  int n_ctx() const { return n_ctx_; }
  int max_batch() const { return max_batch_; }
  int n_threads() const { return pool_.size(); }
  KvType kv_type() const { return kv_.type(); }
  void truncate(int n_past);  // n_past >= n_past() keeps everything; < 0 is an Error
  void set_observer(LayerObserver* observer) { observer_ = observer; }
  // TEST KNOB (backend/fault.h): KvDrift of positions [pos_begin, pos_end) by `scale`.
  void drift_kv(int64_t pos_begin, int64_t pos_end, float scale);

 private:
  // Small 1-D weights (norms, biases), dequantized once.
  struct LayerVectors {
    std::vector<float> attn_norm, ffn_norm, bq, bk, bv;
  };

  void forward_batch(const int32_t* tokens, int64_t n, int64_t pos0, float* logits,
                     bool all_logits);
  void attention_layer(int64_t layer, int64_t n, int64_t pos0);
  void attend(int64_t layer, int64_t n, int64_t pos0);
  void compute_logits(int64_t first, int64_t n_rows, float* logits);
  void observe(int64_t layer, const char* stage, int64_t n, int64_t pos0) const;

  // TEST KNOB helper (cpu_faults.cpp).
  void corrupt_layer_output(int64_t layer, int64_t n, int64_t pos0);

  const Model& model_;
  const HParams hp_;
  const std::string name_;
  const int64_t q_dim_, kv_dim_;
  int n_ctx_ = 0;
  int max_batch_ = 0;
  int n_past_ = 0;

  ThreadPool pool_;
  std::unique_ptr<CpuKernels> kernels_;
  std::vector<LayerVectors> layer_vectors_;
  std::vector<float> output_norm_;
  KvCache kv_;

  // Activations for max_batch tokens, one row per token.
  std::vector<float> x_;       // residual stream [n_embd]
  std::vector<float> xb_;      // normalised input of a block [n_embd]
  std::vector<float> xb2_;     // output of wo / ffn_down [n_embd]
  std::vector<float> q_;       // queries [q_dim]
  std::vector<float> k_, v_;   // new keys and values [kv_dim], before they enter the cache
  std::vector<float> att_;     // attention output [q_dim]
  std::vector<float> hb_;      // ffn gate, then SwiGLU [n_ff]
  std::vector<float> hb2_;     // ffn up [n_ff]
  std::vector<float> scores_;  // attention scores, n_ctx per thread

  LayerObserver* observer_ = nullptr;

  const FaultSpec* layer_fault_ = nullptr;  // during forward(): a LayerCorrupt fault, or none
};

}  // namespace lockstep::cpu
