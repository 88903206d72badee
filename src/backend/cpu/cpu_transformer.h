// The forward pass both CPU backends run: token embedding, then per layer RMSNorm -> Q/K/V ->
// RoPE -> KV cache -> causal attention -> wo -> residual, RMSNorm -> SwiGLU FFN -> residual; then
// the output norm and the vocabulary projection. The architectures beyond llama add stages that
// HParams switches on: per-head q/k norms before RoPE (qwen3, gemma3), norms of the attention and
// FFN outputs before each residual add, GeGLU, scaled embeddings, sliding-window layers and
// soft-capped scores and logits (gemma). It reads like llama2.c's forward(); the stages
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
#include "backend/cpu/ops_ref.h"
#include "backend/fault.h"
#include "model/model.h"
#include "util/thread_pool.h"

namespace lockstep::cpu {

struct TransformerOptions {
  std::string name;    // the backend's name, for messages: "cpu-ref", "cpu"
  int n_threads = 0;   // <= 0: default_thread_count()
  int n_ctx = 0;       // <= 0: default_n_ctx (backend_options.h)
  int max_batch = 64;  // tokens computed together (at least n_seq); longer calls are split
  int n_seq = 1;       // sequences (slots) the KV cache holds, each of n_ctx positions
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

  // Backend::forward_batch_impl: every item is non-empty, its ids are in the vocabulary and it
  // fits its sequence's context (Backend::forward_batch checked). The items' tokens are computed
  // together, max_batch at a time, each at its own sequence's positions; every row is what the
  // item alone gives (the kernels' rows do not depend on the batch). `fault` is the backend's
  // TEST KNOB; this forward pass injects a LayerCorrupt fault, Backend::forward_batch the others.
  void forward(std::span<const SeqTokens> batch, const FaultSpec& fault);

  int n_past(int seq = 0) const { return n_past_[size_t(seq)]; }
  int n_ctx() const { return n_ctx_; }
  int n_seq() const { return int(n_past_.size()); }
  int max_batch() const { return max_batch_; }
  int n_threads() const { return pool_.size(); }
  KvType kv_type() const { return kv_.type(); }
  // n_past >= n_past(seq) keeps everything; < 0 is an Error.
  void truncate(int seq, int n_past);
  void set_observer(LayerObserver* observer) { observer_ = observer; }
  // TEST KNOB (backend/fault.h): KvDrift of positions [pos_begin, pos_end) of `seq` by `scale`.
  void drift_kv(int seq, int64_t pos_begin, int64_t pos_end, float scale);

 private:
  // Small 1-D weights (norms, biases), dequantized once.
  struct LayerVectors {
    std::vector<float> attn_norm, ffn_norm, bq, bk, bv;
    std::vector<float> q_norm, k_norm, post_attn_norm, post_ffn_norm;
  };

  // A flattened token: its id, sequence, position, and where its logits go (or nullptr).
  struct TokenSlot {
    int32_t token;
    int seq;
    int pos;
    float* logits;
  };
  void forward_chunk(const TokenSlot* tokens, int64_t n);
  void attention_layer(int64_t layer, const TokenSlot* tokens, int64_t n);
  void attend(int64_t layer, const TokenSlot* tokens, int64_t n);
  void compute_logits(const TokenSlot* tokens, int64_t n);
  void post_norm(float* rows, const float* weight, int64_t n);
  void observe(int64_t layer, const char* stage, const TokenSlot* tokens, int64_t n) const;
  // First KV cache row of sequence `seq` (the cache holds n_seq x n_ctx rows per layer).
  int64_t seq_row(int seq) const { return int64_t(seq) * n_ctx_; }

  // TEST KNOB helper (cpu_faults.cpp).
  void corrupt_layer_output(int64_t layer, const TokenSlot* tokens, int64_t n);
  void corrupt_batched_sequences(int64_t layer, const TokenSlot* tokens, int64_t n);

  const Model& model_;
  const HParams hp_;
  const std::string name_;
  const int64_t q_dim_, kv_dim_;
  int n_ctx_ = 0;
  int max_batch_ = 0;
  std::vector<int> n_past_;  // per sequence

  ThreadPool pool_;
  std::unique_ptr<CpuKernels> kernels_;
  std::vector<LayerVectors> layer_vectors_;
  std::vector<float> output_norm_;
  std::vector<float> rope_freqs_;                  // Llama 3.1+ frequency factors, or empty
  cpu_ref::RopeParams rope_global_, rope_sliding_;  // of the global and the sliding layers
  KvCache kv_;

  // Activations for max_batch tokens, one row per token.
  std::vector<float> x_;           // residual stream [n_embd]
  std::vector<float> xb_;          // normalised input of a block [n_embd]
  std::vector<float> xb2_;         // output of wo / ffn_down [n_embd]
  std::vector<float> q_;           // queries [q_dim]
  std::vector<float> k_, v_;       // new keys and values [kv_dim], before they enter the cache
  std::vector<float> att_;         // attention output [q_dim]
  std::vector<float> hb_;          // ffn gate, then SwiGLU [n_ff]
  std::vector<float> hb2_;         // ffn up [n_ff]
  std::vector<float> scores_;      // attention scores, n_ctx per thread
  std::vector<TokenSlot> flat_;    // forward()'s items, one entry per token
  std::vector<float> logit_rows_;  // n_seq > 1: rows gathered for one output product

  LayerObserver* observer_ = nullptr;

  const FaultSpec* layer_fault_ = nullptr;  // during forward(): a LayerCorrupt fault, or none
  const FaultSpec* batch_fault_ = nullptr;  // during forward(): a BatchCorrupt fault that applies
  int batch_first_seq_ = 0;
};

}  // namespace lockstep::cpu
