// CudaBackend: the transformer forward pass on one NVIDIA GPU.
//
// Weights are uploaded once, in their file formats, into one device allocation (through two
// pinned staging buffers, so reading the mapped file overlaps the copies). Memory use is about
// the file size + the KV cache (F16, or F32 on request) + activation scratch for max_batch tokens +
// one F16 GEMM tile.
//
// forward() takes one of two paths:
//   decode  (batches shorter than min_gemm_batch, token by token): matrix-vector kernels on the
//           block-format weights with float activations. The step reads its token and position
//           from device memory, so after its first run it is captured once as a CUDA graph and
//           replayed (unless an observer or a layer fault needs the host between kernels).
//   prefill (longer batches, max_batch tokens at a time): cuBLAS GEMMs on F16 tiles of the
//           weights and flash-style causal attention.
// Stages mirror the CPU forward pass (backend/cpu/cpu_transformer.cpp) one for one, so
// `parity --layers` can compare them. The architectures beyond llama/qwen2 add stages only where
// their hyperparameters ask (a plain llama or qwen2 model runs the same launches as without
// them): gemma's embedding scale, per-head q/k RMSNorm (qwen3, gemma3), rope with Llama 3.1
// frequency factors, YaRN or a sliding layers' own base (gemma3), the sliding window and score
// soft-cap inside attention, gemma's post-norms (fused with the residual add), the GeGLU FFN and
// the final logits soft-cap. phi3's fused qkv / gate_up tensors reach the backend as row views
// (Model), each uploaded as its own contiguous rows.
//
// Several sequences (BackendOptions::n_seq slots, continuous batching): the KV cache holds n_ctx
// rows per sequence (layer-major, then sequence). forward_batch() runs each item of several
// tokens on its own (the paths above, on its sequence's rows) and the single-token items of all
// sequences together as one decode step (decode_rows): the batched matvecs read each weight once
// for all of them, and rope and attention take each token's own position and sequence. Every
// token's arithmetic in that step is what it alone would get (the batched kernels' promise,
// cuda_ops.h), so a sequence's results do not depend on who else is in the batch. Steps of at
// least CudaBackendOptions::batch_mmq_min tokens take the int8 tensor-core products of mmq.cu
// instead (weights read once per 64 tokens; a token's row then depends on the route but not on
// the batch size within it), and steps of at least batch_gemm_min the cuBLAS GEMMs (F16 tiles,
// not batch-invariant); 0 turns either route off.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <vector>

#include "backend/cpu/ops_ref.h"
#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_common.cuh"
#include "backend/cuda/cuda_ops.h"
#include "util/thread_pool.h"

namespace lockstep {

namespace {

using namespace cuda_ops;

struct DevWeight {
  TensorType type = TensorType::F32;
  int64_t rows = 0, cols = 0;
  const void* data = nullptr;
};

struct DevLayer {
  DevWeight wq, wk, wv, wo, gate, up, down;
  const float* attn_norm = nullptr;
  const float* ffn_norm = nullptr;
  const float* q_norm = nullptr;  // has_qk_norm: per-head RMSNorm weights (head_dim floats)
  const float* k_norm = nullptr;
  const float* post_attn_norm = nullptr;  // has_post_norms
  const float* post_ffn_norm = nullptr;
  const float* bq = nullptr;
  const float* bk = nullptr;
  const float* bv = nullptr;
};

constexpr size_t kAlign = 256;
constexpr size_t kStagingBytes = size_t(64) << 20;

size_t align_up(size_t n) {
  return (n + kAlign - 1) / kAlign * kAlign;
}

std::string gib(double bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f GiB", bytes / double(1ull << 30));
  return buf;
}

class CudaBackend final : public GatedBackend {
 public:
  CudaBackend(const Model& model, const CudaBackendOptions& opts, int n_ctx, int n_seq);
  ~CudaBackend() override;

  std::string name() const override { return "cuda"; }
  const Model& model() const override { return model_; }
  int n_past() const override { return seq_past_[0]; }
  int seq_past(int seq) const override { return seq_past_.at(size_t(seq)); }
  int n_seq() const override { return n_seq_; }
  std::vector<int> batch_route_rows() const override {
    std::vector<int> starts;
    if (mmq_route_on()) starts.push_back(opts_.batch_mmq_min);
    if (gemm_route_on()) starts.push_back(opts_.batch_gemm_min);
    return starts;
  }
  // Decode rows of a batched step (not the single-sequence path) that share one column count.
  bool picks_argmax(std::span<const SeqTokens> batch, size_t i) const override {
    if ((batch.size() == 1 && batch[0].seq == 0) || batch[i].tokens.size() != 1) return false;
    for (const SeqTokens& item : batch)
      if (item.argmax && item.tokens.size() == 1) return item.argmax_cols == batch[i].argmax_cols;
    return false;
  }
  double measured_copy_gb_per_s() override {
    CUDA_CHECK(cudaStreamSynchronize(stream_));
    return cuda_copy_gb_per_s();
  }
  int n_ctx() const override { return n_ctx_; }
  void truncate(int n_past) override { truncate_seq(0, n_past); }
  void truncate_seq(int seq, int n_past) override;
  void set_observer(LayerObserver* observer) override { observer_ = observer; }

 protected:
  void forward_impl(std::span<const int32_t> tokens, float* logits, bool all_logits) override;
  void forward_batch_impl(std::span<const SeqTokens> batch) override;
  void drift_kv(int seq, int64_t pos_begin, int64_t pos_end, float scale) override;

 private:
  void check_supported() const;
  void release();
  void plan_and_allocate();
  void upload_weights();
  DevWeight matrix(const WeightView& w) const;
  const float* vector(const WeightView& w);

  // One token of a batched decode step.
  struct DecodeRow {
    int32_t token = 0;
    int pos = 0, seq = 0;
    float* logits = nullptr;    // n_vocab floats, or nullptr
    bool batch_fault = false;   // BatchCorrupt applies to this row
    int32_t* argmax = nullptr;  // the greedy pick over the first argmax_cols logits, or nullptr
    int64_t argmax_cols = 0;
  };

  void decode_token(int32_t token, int pos, float* logits);
  void enqueue_decode(bool eager, int pos);
  void decode_rows(const std::vector<DecodeRow>& rows);
  // The kernels a batched decode step takes (CudaBackendOptions::batch_mmq_min, batch_gemm_min).
  enum class Route { Matvec, Mmq, Gemm };
  bool mmq_route_on() const { return opts_.batch_mmq_min > 0 && act_q8() != nullptr; }
  // The GEMM route (off by default: intermittently wrong rows, backend_options.h) gave phi3's
  // fused QKV and gate/up views wrong rows first; it stays off for them even when asked for.
  bool gemm_route_on() const {
    return opts_.batch_gemm_min > 0 &&
           (opts_.gemm_route_fused || (!hp_.fused_qkv && !hp_.fused_gate_up));
  }
  Route route_of(int rows) const {
    if (gemm_route_on() && rows >= opts_.batch_gemm_min) return Route::Gemm;
    if (mmq_route_on() && rows >= opts_.batch_mmq_min) return Route::Mmq;
    return Route::Matvec;
  }
  void enqueue_rows(int n_rows, int max_ctx, Route route, const std::vector<DecodeRow>* faults);
  // A product of the mmq route: mmq.cu where it has the weight type, else the batched matvec.
  void mmq_product(const DevWeight& w, const float* x, int n_tok, float* y, MatvecMode mode);
  // Replays `exec` (capturing enqueue() into it on first use); launches eagerly when capture or
  // instantiation fails, for good (graph_failed_).
  template <class Enqueue>
  void replay_graph(cudaGraphExec_t& exec, Enqueue enqueue);
  void forward_sequence(const SeqTokens& item, bool batch_fault);
  void prefill_chunk(const int32_t* tokens, int n, int pos0, float* logits, bool all_logits,
                     bool want_last, int seq = 0, bool batch_fault = false);
  void matmul(const DevWeight& w, const float* x, int n_tok, float* y, bool accumulate);
  void matvec(const DevWeight& w, const float* x, float* y, const float* bias, MatvecMode mode);
  void qkv_projection(const DevLayer& L, int n_tok = 1, bool mmq = false);
  // The per-head q/k norms of n_tok tokens (has_qk_norm), in place on d_q_ and d_k_new_.
  void qk_norm(const DevLayer& L, int n_tok);
  // h += the block output `out` (n_tok rows of n_embd), through the post-norm when there is one;
  // without one the caller's product has already accumulated into d_h_.
  void post_norm_add(const float* post_norm, const float* out, int n_tok);
  void scale_embeddings(int n_tok);
  void cap_logits(int n_rows);
  // The gated FFN's activation on n elements of d_g_ (gate) and d_u_ (up), into d_g_.
  void gated_activation(int64_t n);
  const RopeParams& layer_rope(int l) const { return hp_.layer_slides(l) ? rope_sliding_ : rope_; }
  AttentionParams layer_attn(int l) const {
    AttentionParams a = attn_;
    if (hp_.layer_slides(l)) a.window = int(hp_.sliding_window);
    return a;
  }
  void after_layer(int layer, const char* stage, int n, int pos0, bool eager,
                   bool batch_fault = false);
  void* k_cache(int layer, int seq = 0) const;
  void* v_cache(int layer, int seq = 0) const;

  const Model& model_;
  const HParams hp_;
  CudaBackendOptions opts_;
  const int64_t q_dim_, kv_dim_;
  int n_ctx_ = 0;
  int max_batch_ = 0;
  int n_seq_ = 1;
  int max_tokens_ = 0;  // rows of the activation buffers: max(max_batch_, n_seq_)
  std::vector<int> seq_past_;
  size_t partials_per_token_ = 0;  // attention_decode scratch floats of one token

  cudaStream_t stream_ = nullptr;
  cudaGraphExec_t decode_graph_ = nullptr;
  // Batched decode steps of up to kGraphRows rows, one graph per row count (index rows - 1).
  static constexpr int kGraphRows = 16;
  cudaGraphExec_t rows_graphs_[kGraphRows] = {};
  bool graph_failed_ = false;

  // Device memory: weights (one block), KV cache, activations.
  uint8_t* d_weights_ = nullptr;
  size_t weights_bytes_ = 0;
  std::vector<std::pair<const uint8_t*, size_t>> upload_list_;  // host data -> offset
  std::vector<size_t> upload_offsets_;
  std::vector<void*> owned_;  // float copies of non-F32 vectors, rope table
  void* d_k_ = nullptr;
  void* d_v_ = nullptr;
  KvType kv_type_ = KvType::F16;
  uint8_t* d_act_ = nullptr;  // one block holding the activation buffers below
  float *d_h_ = nullptr, *d_xn_ = nullptr, *d_q_ = nullptr, *d_k_new_ = nullptr,
        *d_v_new_ = nullptr, *d_att_ = nullptr, *d_g_ = nullptr, *d_u_ = nullptr,
        *d_logits_ = nullptr, *d_partials_ = nullptr;
  cuda_ops::ActQ8Scratch act_q8_;  // the int8 input of the decode matvecs (in d_act_)
  // The scratch the decode matvecs get: none (float activations) with f32_activations.
  const cuda_ops::ActQ8Scratch* act_q8() const {
    return opts_.f32_activations ? nullptr : &act_q8_;
  }
  // [0] = position (of the first token), [1 .. max_tokens_] = tokens; a batched decode step puts
  // each token's position at [1 + max_tokens_ + i] and its sequence at [1 + 2 max_tokens_ + i],
  // and gets each row's greedy pick back at [1 + 3 max_tokens_ + i].
  int32_t* d_ints_ = nullptr;
  int32_t* h_ints_ = nullptr;  // pinned mirror
  float* h_logits_ = nullptr;  // pinned, n_seq_ * n_vocab floats
  // Copies a batched step's logits rows out of h_logits_ side by side (64 rows of Qwen's vocabulary
  // are 39 MB: milliseconds on one thread). Null with one sequence.
  std::unique_ptr<ThreadPool> copy_pool_;
  std::unique_ptr<Matmul> matmul_;

  DevWeight tok_embd_, output_;
  const float* output_norm_ = nullptr;
  std::vector<DevLayer> layers_;
  double* rope_table_ = nullptr;
  RopeParams rope_;          // the global layers' rope (every layer's without a sliding window)
  RopeParams rope_sliding_;  // the sliding layers' (gemma3: base 10000)
  AttentionParams attn_;

  LayerObserver* observer_ = nullptr;
  std::vector<float> observe_buf_;
};

CudaBackend::CudaBackend(const Model& model, const CudaBackendOptions& opts, int n_ctx, int n_seq)
    : model_(model),
      hp_(model.hp),
      opts_(opts),
      q_dim_(model.hp.n_head * model.hp.head_dim),
      kv_dim_(model.hp.n_head_kv * model.hp.head_dim) {
  check_supported();
  cuda_device_info(opts_.device);  // throws Error(kExitDevice) when there is no such device
  CUDA_CHECK(cudaSetDevice(opts_.device));
  n_ctx_ = resolve_n_ctx(hp_, n_ctx);
  max_batch_ = std::max(1, std::min(opts_.max_batch, n_ctx_));
  n_seq_ = std::max(1, n_seq);
  max_tokens_ = std::max(max_batch_, n_seq_);
  seq_past_.assign(size_t(n_seq_), 0);
  try {
    CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    plan_and_allocate();
    upload_weights();
  } catch (...) {
    release();  // a throwing constructor runs no destructor
    throw;
  }
}

CudaBackend::~CudaBackend() {
  release();
}

// Frees every device resource; idempotent and never throws (errors at teardown are ignored).
void CudaBackend::release() {
  if (stream_) cudaStreamSynchronize(stream_);
  if (decode_graph_) cudaGraphExecDestroy(decode_graph_), decode_graph_ = nullptr;
  for (cudaGraphExec_t& g : rows_graphs_)
    if (g) cudaGraphExecDestroy(g), g = nullptr;
  matmul_.reset();
  for (void* p : owned_) cudaFree(p);
  owned_.clear();
  for (void** p : {reinterpret_cast<void**>(&d_weights_), reinterpret_cast<void**>(&d_k_),
                   reinterpret_cast<void**>(&d_v_), reinterpret_cast<void**>(&d_act_),
                   reinterpret_cast<void**>(&d_ints_)}) {
    if (*p) cudaFree(*p);
    *p = nullptr;
  }
  if (h_ints_) cudaFreeHost(h_ints_), h_ints_ = nullptr;
  if (h_logits_) cudaFreeHost(h_logits_), h_logits_ = nullptr;
  if (stream_) cudaStreamDestroy(stream_), stream_ = nullptr;
}

void CudaBackend::check_supported() const {
  const std::string where = model_.file ? model_.file->path() + ": " : std::string();
  if (hp_.head_dim % 4 != 0 || hp_.head_dim > 256)
    throw InputError(where + "cuda backend: head size " + std::to_string(hp_.head_dim) +
                     " is not supported (a multiple of 4, at most 256)");
  auto check = [&](const WeightView& w) {
    if (!w.present()) return;
    if (!weight_type_supported(w.type, w.cols))
      throw InputError(where + "cuda backend: tensor '" + w.name + "' of type " +
                       tensor_type_info(w.type).name + " with rows of " + std::to_string(w.cols) +
                       " is not supported");
  };
  check(model_.tok_embd);
  check(model_.output);
  check(model_.output_norm);
  for (const auto& L : model_.layers)
    for (const WeightView* w :
         {&L.attn_norm, &L.wq, &L.wk, &L.wv, &L.wo, &L.bq, &L.bk, &L.bv, &L.q_norm, &L.k_norm,
          &L.post_attn_norm, &L.ffn_norm, &L.ffn_gate, &L.ffn_up, &L.ffn_down, &L.post_ffn_norm})
      check(*w);
}

// Computes every device allocation first and compares the total with the free memory, so an
// oversized model fails with one clear message before anything is allocated.
void CudaBackend::plan_and_allocate() {
  // Weights: each distinct tensor once (output may alias the embedding), 256-byte aligned.
  auto add = [&](const WeightView& w) {
    if (!w.present()) return;
    for (const auto& [ptr, off] : upload_list_)
      if (ptr == w.data) return;
    upload_list_.push_back({w.data, weights_bytes_});
    weights_bytes_ += align_up(w.row_bytes * uint64_t(w.rows));
  };
  add(model_.tok_embd);
  add(model_.output_norm);
  add(model_.output);
  size_t vector_bytes = 0;  // float copies of 1-D tensors stored in another type
  auto add_vec = [&](const WeightView& w) {
    add(w);
    if (w.present() && w.type != TensorType::F32) vector_bytes += align_up(size_t(w.cols) * 4);
  };
  add_vec(model_.output_norm);
  for (const auto& L : model_.layers) {
    for (const WeightView* w : {&L.wq, &L.wk, &L.wv, &L.wo, &L.ffn_gate, &L.ffn_up, &L.ffn_down})
      add(*w);
    for (const WeightView* w : {&L.attn_norm, &L.ffn_norm, &L.bq, &L.bk, &L.bv, &L.q_norm,
                                &L.k_norm, &L.post_attn_norm, &L.post_ffn_norm})
      add_vec(*w);
  }
  if (hp_.has_rope_freqs) vector_bytes += align_up(size_t(hp_.rope_dim / 2) * 4);

  kv_type_ = opts_.f32_kv_cache ? KvType::F32 : KvType::F16;
  const size_t kv_bytes = 2 * size_t(hp_.n_layer) * size_t(n_seq_) * size_t(n_ctx_) *
                          size_t(kv_dim_) * kv_type_bytes(kv_type_);
  const size_t T = size_t(max_tokens_);
  const size_t E = size_t(hp_.n_embd), F = size_t(hp_.n_ff), V = size_t(hp_.n_vocab);
  const size_t Q = size_t(q_dim_), KV = size_t(kv_dim_);
  attn_ = {int(hp_.n_head),
           int(hp_.n_head_kv),
           int(hp_.head_dim),
           hp_.attn_scale > 0 ? hp_.attn_scale : float(1.0 / std::sqrt(double(hp_.head_dim))),
           hp_.attn_softcap,
           0};
  partials_per_token_ = attention_decode_scratch_floats(n_ctx_, attn_);
  const size_t partial_floats = partials_per_token_ * size_t(n_seq_);
  const size_t act_offsets[] = {T * E, T * E, T * Q, T * KV, T * KV,
                                T * Q, T * F, T * F, T * V,  partial_floats};
  size_t act_bytes = 0;
  for (size_t n : act_offsets) act_bytes += align_up(n * sizeof(float));
  const size_t max_cols = std::max({E, Q, F});
  const size_t tile = std::max(opts_.gemm_tile_elems, max_cols);
  const size_t gemm_bytes = (T * max_cols + tile) * 2 * (opts_.precise_prefill ? 2 : 1);
  const size_t act_q8_bytes = act_q8_scratch_bytes(int64_t(max_cols), n_seq_);
  act_bytes += act_q8_bytes;
  const size_t reserve = size_t(512) << 20;  // cuBLAS workspace, CUDA context growth, graphs
  const size_t need = weights_bytes_ + vector_bytes + kv_bytes + act_bytes + gemm_bytes + reserve;

  size_t free_b = 0, total_b = 0;
  CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
  if (need > free_b)
    throw Error(
        "cuda: model needs " + gib(double(need)) + " (weights " + gib(double(weights_bytes_)) +
            ", KV cache " + gib(double(kv_bytes)) + " for n_ctx " + std::to_string(n_ctx_) +
            (n_seq_ > 1 ? " x " + std::to_string(n_seq_) + " sequences" : "") + ", scratch " +
            gib(double(act_bytes + gemm_bytes)) + "), device has " + gib(double(free_b)) + " free",
        kExitDevice);

  CUDA_CHECK(cudaMalloc(&d_weights_, std::max<size_t>(weights_bytes_, 1)));
  CUDA_CHECK(cudaMalloc(&d_k_, kv_bytes / 2));
  CUDA_CHECK(cudaMalloc(&d_v_, kv_bytes / 2));
  // Zeroed so that positions never written (beyond n_past) can never feed NaN into anything.
  CUDA_CHECK(cudaMemsetAsync(d_k_, 0, kv_bytes / 2, stream_));
  CUDA_CHECK(cudaMemsetAsync(d_v_, 0, kv_bytes / 2, stream_));
  CUDA_CHECK(cudaMalloc(&d_act_, act_bytes));
  if (opts_.poison_scratch) CUDA_CHECK(cudaMemsetAsync(d_act_, 0xFF, act_bytes, stream_));
  float** slots[] = {&d_h_,   &d_xn_, &d_q_, &d_k_new_,  &d_v_new_,
                     &d_att_, &d_g_,  &d_u_, &d_logits_, &d_partials_};
  size_t off = 0;
  for (size_t i = 0; i < std::size(slots); ++i) {
    *slots[i] = reinterpret_cast<float*>(d_act_ + off);
    off += align_up(act_offsets[i] * sizeof(float));
  }
  act_q8_ = act_q8_scratch(d_act_ + off, int64_t(max_cols), n_seq_);
  CUDA_CHECK(cudaMalloc(&d_ints_, (4 * T + 1) * sizeof(int32_t)));
  CUDA_CHECK(cudaHostAlloc(&h_ints_, (4 * T + 1) * sizeof(int32_t), cudaHostAllocDefault));
  CUDA_CHECK(cudaHostAlloc(&h_logits_, size_t(n_seq_) * V * sizeof(float), cudaHostAllocDefault));
  if (n_seq_ > 1) copy_pool_ = std::make_unique<ThreadPool>(std::min(4, default_thread_count()));
  matmul_ = std::make_unique<Matmul>(T * max_cols, tile, opts_.precise_prefill);

  rope_table_ = make_rope_table(hp_.rope_freq_base, int(hp_.rope_dim));
  owned_.push_back(rope_table_);
  rope_ = {int(hp_.n_head), int(hp_.n_head_kv),  int(hp_.head_dim), int(hp_.rope_dim),
           hp_.rope_type,   hp_.rope_freq_scale, rope_table_};
  // The extensions' parameters come from the CPU reference's rope_params(), so both compute the
  // same angles (YaRN's band and magnitude; the sliding layers' base and scale).
  const float* freq_factors = nullptr;
  if (hp_.has_rope_freqs) {
    const std::vector<float> f = rope_freq_factors(model_);
    float* d = static_cast<float*>(device_alloc(f.size() * sizeof(float)));
    owned_.push_back(d);
    copy_to_device(d, f.data(), f.size() * sizeof(float));
    freq_factors = d;
  }
  rope_.freq_factors = freq_factors;
  if (hp_.rope_yarn) {
    const cpu_ref::RopeParams ref = cpu_ref::rope_params(hp_, false);
    rope_.yarn = true;
    rope_.yarn_low = ref.yarn_low, rope_.yarn_high = ref.yarn_high, rope_.mscale = ref.mscale;
  }
  rope_sliding_ = rope_;
  if (hp_.sliding_window > 0 && hp_.swa_pattern > 0) {
    const cpu_ref::RopeParams ref = cpu_ref::rope_params(hp_, true);
    double* table = make_rope_table(float(ref.freq_base), int(hp_.rope_dim));
    owned_.push_back(table);
    rope_sliding_.inv_freq = table;
    rope_sliding_.freq_scale = float(ref.freq_scale);
    rope_sliding_.yarn = ref.yarn;  // false: YaRN scales the global layers only
    rope_sliding_.yarn_low = ref.yarn_low, rope_sliding_.yarn_high = ref.yarn_high;
    rope_sliding_.mscale = ref.mscale;
  }
}

DevWeight CudaBackend::matrix(const WeightView& w) const {
  for (const auto& [ptr, off] : upload_list_)
    if (ptr == w.data) return {w.type, w.rows, w.cols, d_weights_ + off};
  throw Error("cuda: tensor '" + w.name + "' was not uploaded");
}

// 1-D weights as float32: the uploaded data itself, or a converted copy.
const float* CudaBackend::vector(const WeightView& w) {
  if (!w.present()) return nullptr;
  const DevWeight d = matrix(w);
  if (w.type == TensorType::F32) return static_cast<const float*>(d.data);
  float* f = static_cast<float*>(device_alloc(size_t(w.cols * w.rows) * sizeof(float)));
  owned_.push_back(f);
  dequantize_rows_f32(w.type, d.data, w.cols * w.rows, 0, 1, f, stream_);
  return f;
}

void CudaBackend::upload_weights() {
  void* staging[2] = {nullptr, nullptr};
  cudaEvent_t done[2] = {nullptr, nullptr};
  auto release = [&] {
    for (int i = 0; i < 2; ++i) {
      if (staging[i]) cudaFreeHost(staging[i]);
      if (done[i]) cudaEventDestroy(done[i]);
    }
  };
  try {
    for (int i = 0; i < 2; ++i) {
      CUDA_CHECK(cudaHostAlloc(&staging[i], kStagingBytes, cudaHostAllocDefault));
      CUDA_CHECK(cudaEventCreateWithFlags(&done[i], cudaEventDisableTiming));
    }
    // Sizes: the span between consecutive offsets is padded; copy each tensor's exact bytes.
    auto tensor_bytes = [&](const uint8_t* ptr) -> size_t {
      for (const auto* w : {&model_.tok_embd, &model_.output, &model_.output_norm})
        if (w->data == ptr) return w->row_bytes * uint64_t(w->rows);
      for (const auto& L : model_.layers)
        for (const WeightView* w : {&L.attn_norm, &L.wq, &L.wk, &L.wv, &L.wo, &L.bq, &L.bk, &L.bv,
                                    &L.q_norm, &L.k_norm, &L.post_attn_norm, &L.ffn_norm,
                                    &L.ffn_gate, &L.ffn_up, &L.ffn_down, &L.post_ffn_norm})
          if (w->data == ptr) return w->row_bytes * uint64_t(w->rows);
      return 0;
    };
    int slot = 0;
    size_t fill = 0;  // bytes used in the current staging buffer
    for (const auto& [ptr, off] : upload_list_) {
      const size_t bytes = tensor_bytes(ptr);
      for (size_t done_bytes = 0; done_bytes < bytes;) {
        if (fill == kStagingBytes) {
          CUDA_CHECK(cudaEventRecord(done[slot], stream_));
          slot ^= 1, fill = 0;
          CUDA_CHECK(cudaEventSynchronize(done[slot]));  // its previous copies have finished
        }
        const size_t n = std::min(bytes - done_bytes, kStagingBytes - fill);
        uint8_t* stage = static_cast<uint8_t*>(staging[slot]) + fill;
        std::memcpy(stage, ptr + done_bytes, n);
        CUDA_CHECK(cudaMemcpyAsync(d_weights_ + off + done_bytes, stage, n, cudaMemcpyHostToDevice,
                                   stream_));
        done_bytes += n, fill += n;
      }
    }
    CUDA_CHECK(cudaStreamSynchronize(stream_));
  } catch (...) {
    release();
    throw;
  }
  release();

  tok_embd_ = matrix(model_.tok_embd);
  output_ = matrix(model_.output);
  output_norm_ = vector(model_.output_norm);
  layers_.resize(model_.layers.size());
  for (size_t l = 0; l < layers_.size(); ++l) {
    const LayerWeights& L = model_.layers[l];
    DevLayer& D = layers_[l];
    D.wq = matrix(L.wq), D.wk = matrix(L.wk), D.wv = matrix(L.wv), D.wo = matrix(L.wo);
    D.gate = matrix(L.ffn_gate), D.up = matrix(L.ffn_up), D.down = matrix(L.ffn_down);
    D.attn_norm = vector(L.attn_norm), D.ffn_norm = vector(L.ffn_norm);
    D.bq = vector(L.bq), D.bk = vector(L.bk), D.bv = vector(L.bv);
    D.q_norm = vector(L.q_norm), D.k_norm = vector(L.k_norm);
    D.post_attn_norm = vector(L.post_attn_norm), D.post_ffn_norm = vector(L.post_ffn_norm);
  }
  CUDA_CHECK(cudaStreamSynchronize(stream_));
}

void* CudaBackend::k_cache(int layer, int seq) const {
  return static_cast<uint8_t*>(d_k_) + (size_t(layer) * size_t(n_seq_) + size_t(seq)) *
                                           size_t(n_ctx_) * size_t(kv_dim_) *
                                           kv_type_bytes(kv_type_);
}
void* CudaBackend::v_cache(int layer, int seq) const {
  return static_cast<uint8_t*>(d_v_) + (size_t(layer) * size_t(n_seq_) + size_t(seq)) *
                                           size_t(n_ctx_) * size_t(kv_dim_) *
                                           kv_type_bytes(kv_type_);
}

void CudaBackend::truncate_seq(int seq, int n_past) {
  if (n_past < 0) throw Error("cuda: truncate(" + std::to_string(n_past) + "): negative length");
  if (seq < 0 || seq >= n_seq_)
    throw Error("cuda: truncate of sequence " + std::to_string(seq) + " of " +
                std::to_string(n_seq_));
  int& past = seq_past_[size_t(seq)];
  past = std::min(past, n_past);
}

void CudaBackend::matvec(const DevWeight& w, const float* x, float* y, const float* bias,
                         MatvecMode mode) {
  cuda_ops::matvec(w.type, w.data, w.rows, w.cols, x, y, bias, mode, stream_, act_q8());
}

void CudaBackend::mmq_product(const DevWeight& w, const float* x, int n_tok, float* y,
                              MatvecMode mode) {
  if (mmq_supported(w.type, w.cols))
    mmq(w.type, w.data, w.rows, w.cols, x, n_tok, y, nullptr, mode, stream_, act_q8_);
  else
    matvec_batch(w.type, w.data, w.rows, w.cols, x, n_tok, y, nullptr, mode, stream_, act_q8());
}

void CudaBackend::matmul(const DevWeight& w, const float* x, int n_tok, float* y, bool accumulate) {
  matmul_->run(w.type, w.data, w.rows, w.cols, x, n_tok, y, w.rows, accumulate, stream_);
}

// Observer callbacks and the LayerCorrupt fault (BatchCorrupt too when batch_fault), after a
// stage of layer `layer` for n rows at positions pos0 ... Only in eager mode (never inside a
// captured graph).
void CudaBackend::after_layer(int layer, const char* stage, int n, int pos0, bool eager,
                              bool batch_fault) {
  if (!eager) return;
  const int64_t E = hp_.n_embd;
  if (std::strcmp(stage, "ffn_out") == 0 && fault().kind == FaultSpec::LayerCorrupt &&
      fault().layer == layer) {
    const int64_t t = int64_t(fault().position) - pos0;
    if (t >= 0 && t < n)
      fault_corrupt_hidden(d_h_ + t * E, E, layer, fault().position, fault().magnitude, stream_);
  }
  if (batch_fault && std::strcmp(stage, "ffn_out") == 0 && fault().layer == layer)
    for (int t = 0; t < n; ++t)
      fault_corrupt_hidden(d_h_ + t * E, E, layer, pos0 + t, fault().magnitude, stream_, 3);
  if (!observer_) return;
  observe_buf_.resize(size_t(n * E));
  CUDA_CHECK(cudaMemcpyAsync(observe_buf_.data(), d_h_, size_t(n * E) * sizeof(float),
                             cudaMemcpyDeviceToHost, stream_));
  CUDA_CHECK(cudaStreamSynchronize(stream_));
  for (int t = 0; t < n; ++t)
    observer_->on_hidden(layer, stage, pos0 + t,
                         std::span<const float>(observe_buf_.data() + t * E, size_t(E)));
}

// Attention pre-norm and Q, K, V of one token: one launch per run of same-typed projections
// (one for most files; two where Q4_K_M stores attn_v in Q6_K), each with the norm fused in
// (recomputing it in each launch is cheaper than a separate norm launch; bench/NOTES.md).
void CudaBackend::qkv_projection(const DevLayer& L, int n_tok, bool mmq) {
  const DevWeight* w[3] = {&L.wq, &L.wk, &L.wv};
  float* y[3] = {d_q_, d_k_new_, d_v_new_};
  const float* bias[3] = {L.bq, L.bk, L.bv};
  for (int first = 0; first < 3;) {
    int n = 1;
    while (first + n < 3 && w[first + n]->type == w[first]->type) ++n;
    MatvecTarget targets[3];
    for (int k = 0; k < n; ++k)
      targets[k] = {w[first + k]->data, w[first + k]->rows, y[first + k], bias[first + k]};
    if (mmq && mmq_supported(w[first]->type, w[first]->cols))
      mmq_multi(w[first]->type, w[first]->cols, d_h_, n_tok, targets, n, stream_, L.attn_norm,
                hp_.rms_eps, act_q8_);
    else
      matvec_multi_batch(w[first]->type, w[first]->cols, d_h_, n_tok, targets, n, stream_,
                         L.attn_norm, hp_.rms_eps, act_q8());
    first += n;
  }
}

void CudaBackend::qk_norm(const DevLayer& L, int n_tok) {
  if (!L.q_norm) return;
  const int64_t hd = hp_.head_dim;
  rmsnorm(d_q_, L.q_norm, d_q_, int64_t(n_tok) * hp_.n_head, hd, hp_.rms_eps, stream_);
  rmsnorm(d_k_new_, L.k_norm, d_k_new_, int64_t(n_tok) * hp_.n_head_kv, hd, hp_.rms_eps, stream_);
}

void CudaBackend::post_norm_add(const float* post_norm, const float* out, int n_tok) {
  if (post_norm) rmsnorm_add(out, post_norm, d_h_, n_tok, hp_.n_embd, hp_.rms_eps, stream_);
}

void CudaBackend::scale_embeddings(int n_tok) {
  if (hp_.embd_scale != 1.0f) scale(d_h_, int64_t(n_tok) * hp_.n_embd, hp_.embd_scale, stream_);
}

void CudaBackend::cap_logits(int n_rows) {
  if (hp_.final_softcap > 0)
    softcap(d_logits_, int64_t(n_rows) * hp_.n_vocab, hp_.final_softcap, stream_);
}

void CudaBackend::gated_activation(int64_t n) {
  if (hp_.ffn_act == FfnActivation::GeluTanh)
    geglu(d_g_, d_u_, d_g_, n, stream_);
  else
    swiglu(d_g_, d_u_, d_g_, n, stream_);
}

// One token; its id and position are in d_ints_[1] and d_ints_[0]. With eager = false this is
// being captured into the decode graph: nothing here may depend on host values.
void CudaBackend::enqueue_decode(bool eager, int pos) {
  const int64_t E = hp_.n_embd, F = hp_.n_ff;
  const int32_t* d_pos = d_ints_;
  get_rows(tok_embd_.type, tok_embd_.data, E, hp_.n_vocab, d_ints_ + 1, 1, d_h_, stream_);
  scale_embeddings(1);
  for (int l = 0; l < int(layers_.size()); ++l) {
    const DevLayer& L = layers_[size_t(l)];
    qkv_projection(L);
    qk_norm(L, 1);
    rope_and_store_kv(d_q_, d_k_new_, d_v_new_, k_cache(l), v_cache(l), kv_type_, 1, d_pos,
                      layer_rope(l), stream_);
    attention_decode(d_q_, k_cache(l), v_cache(l), kv_type_, d_att_, d_partials_, d_pos, n_ctx_,
                     layer_attn(l), stream_);
    // Without a post-norm the residual add is fused into the product.
    if (L.post_attn_norm)
      matvec(L.wo, d_att_, d_xn_, nullptr, MatvecMode::Store);
    else
      matvec(L.wo, d_att_, d_h_, nullptr, MatvecMode::Accumulate);
    post_norm_add(L.post_attn_norm, d_xn_, 1);
    after_layer(l, "attn_out", 1, pos, eager);

    if (L.gate.type == L.up.type) {  // FFN pre-norm fused into the gate/up product
      matvec_swiglu(L.gate.type, L.gate.data, L.up.data, L.gate.rows, L.gate.cols, d_h_, d_g_,
                    stream_, L.ffn_norm, hp_.rms_eps, act_q8(), hp_.ffn_act);
    } else {
      rmsnorm(d_h_, L.ffn_norm, d_xn_, 1, E, hp_.rms_eps, stream_);
      matvec(L.gate, d_xn_, d_g_, nullptr, MatvecMode::Store);
      matvec(L.up, d_xn_, d_u_, nullptr, MatvecMode::Store);
      gated_activation(F);
    }
    if (L.post_ffn_norm)
      matvec(L.down, d_g_, d_xn_, nullptr, MatvecMode::Store);
    else
      matvec(L.down, d_g_, d_h_, nullptr, MatvecMode::Accumulate);
    post_norm_add(L.post_ffn_norm, d_xn_, 1);
    after_layer(l, "ffn_out", 1, pos, eager);
  }
  const MatvecTarget out = {output_.data, output_.rows, d_logits_, nullptr};
  matvec_multi(output_.type, output_.cols, d_h_, &out, 1, stream_, output_norm_, hp_.rms_eps,
               act_q8());
  cap_logits(1);
}

template <class Enqueue>
void CudaBackend::replay_graph(cudaGraphExec_t& exec, Enqueue enqueue) {
  if (!exec) {
    cudaGraph_t graph = nullptr;
    CUDA_CHECK(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
    try {
      enqueue(true);
    } catch (...) {
      cudaStreamEndCapture(stream_, &graph);
      if (graph) cudaGraphDestroy(graph);
      throw;
    }
    CUDA_CHECK(cudaStreamEndCapture(stream_, &graph));
    const cudaError_t err = cudaGraphInstantiate(&exec, graph, 0);
    cudaGraphDestroy(graph);
    if (err != cudaSuccess) {
      // Fall back to eager launches for the rest of this backend's life; same results.
      std::fprintf(stderr, "[lockstep] cuda: decode graph unavailable (%s); launching eagerly\n",
                   cudaGetErrorString(err));
      cudaGetLastError();
      exec = nullptr;
      graph_failed_ = true;
    }
  }
  if (exec)
    CUDA_CHECK(cudaGraphLaunch(exec, stream_));
  else
    enqueue(false);
}

void CudaBackend::decode_token(int32_t token, int pos, float* logits) {
  h_ints_[0] = pos;
  h_ints_[1] = token;
  CUDA_CHECK(
      cudaMemcpyAsync(d_ints_, h_ints_, 2 * sizeof(int32_t), cudaMemcpyHostToDevice, stream_));
  const bool eager = !opts_.cuda_graphs || graph_failed_ || observer_ != nullptr ||
                     fault().kind == FaultSpec::LayerCorrupt;
  if (eager)
    enqueue_decode(true, pos);
  else
    replay_graph(decode_graph_, [&](bool captured) { enqueue_decode(!captured, pos); });
  if (logits)
    CUDA_CHECK(cudaMemcpyAsync(h_logits_, d_logits_, size_t(hp_.n_vocab) * sizeof(float),
                               cudaMemcpyDeviceToHost, stream_));
  // Also before h_ints_ may be rewritten: the upload above reads it asynchronously.
  CUDA_CHECK(cudaStreamSynchronize(stream_));
  if (logits) std::memcpy(logits, h_logits_, size_t(hp_.n_vocab) * sizeof(float));
}

// n tokens at positions pos0 .. pos0 + n - 1 through the GEMM path. logits: n rows (all_logits),
// the last row (want_last), or nothing.
void CudaBackend::prefill_chunk(const int32_t* tokens, int n, int pos0, float* logits,
                                bool all_logits, bool want_last, int seq, bool batch_fault) {
  const int64_t E = hp_.n_embd;
  h_ints_[0] = pos0;
  std::memcpy(h_ints_ + 1, tokens, size_t(n) * sizeof(int32_t));
  CUDA_CHECK(cudaMemcpyAsync(d_ints_, h_ints_, size_t(n + 1) * sizeof(int32_t),
                             cudaMemcpyHostToDevice, stream_));
  const int32_t* d_pos = d_ints_;
  get_rows(tok_embd_.type, tok_embd_.data, E, hp_.n_vocab, d_ints_ + 1, n, d_h_, stream_);
  scale_embeddings(n);
  for (int l = 0; l < int(layers_.size()); ++l) {
    const DevLayer& L = layers_[size_t(l)];
    rmsnorm(d_h_, L.attn_norm, d_xn_, n, E, hp_.rms_eps, stream_);
    matmul(L.wq, d_xn_, n, d_q_, false);
    matmul(L.wk, d_xn_, n, d_k_new_, false);
    matmul(L.wv, d_xn_, n, d_v_new_, false);
    if (L.bq) add_bias(d_q_, L.bq, n, q_dim_, stream_);
    if (L.bk) add_bias(d_k_new_, L.bk, n, kv_dim_, stream_);
    if (L.bv) add_bias(d_v_new_, L.bv, n, kv_dim_, stream_);
    qk_norm(L, n);
    rope_and_store_kv(d_q_, d_k_new_, d_v_new_, k_cache(l, seq), v_cache(l, seq), kv_type_, n,
                      d_pos, layer_rope(l), stream_);
    attention_prefill(d_q_, k_cache(l, seq), v_cache(l, seq), kv_type_, d_att_, n, d_pos,
                      layer_attn(l), stream_);
    if (L.post_attn_norm)
      matmul(L.wo, d_att_, n, d_xn_, false);
    else
      matmul(L.wo, d_att_, n, d_h_, true);
    post_norm_add(L.post_attn_norm, d_xn_, n);
    after_layer(l, "attn_out", n, pos0, true);

    rmsnorm(d_h_, L.ffn_norm, d_xn_, n, E, hp_.rms_eps, stream_);
    matmul(L.gate, d_xn_, n, d_g_, false);
    matmul(L.up, d_xn_, n, d_u_, false);
    gated_activation(int64_t(n) * hp_.n_ff);
    if (L.post_ffn_norm)
      matmul(L.down, d_g_, n, d_xn_, false);
    else
      matmul(L.down, d_g_, n, d_h_, true);
    post_norm_add(L.post_ffn_norm, d_xn_, n);
    after_layer(l, "ffn_out", n, pos0, true, batch_fault);
  }
  const size_t V = size_t(hp_.n_vocab);
  if (all_logits) {
    rmsnorm(d_h_, output_norm_, d_xn_, n, E, hp_.rms_eps, stream_);
    matmul(output_, d_xn_, n, d_logits_, false);
    cap_logits(n);
    CUDA_CHECK(cudaMemcpyAsync(logits, d_logits_, size_t(n) * V * sizeof(float),
                               cudaMemcpyDeviceToHost, stream_));
  } else if (want_last) {
    rmsnorm(d_h_ + int64_t(n - 1) * E, output_norm_, d_xn_, 1, E, hp_.rms_eps, stream_);
    matvec(output_, d_xn_, d_logits_, nullptr, MatvecMode::Store);
    cap_logits(1);
    CUDA_CHECK(
        cudaMemcpyAsync(h_logits_, d_logits_, V * sizeof(float), cudaMemcpyDeviceToHost, stream_));
  }
  CUDA_CHECK(cudaStreamSynchronize(stream_));
  if (!all_logits && want_last) std::memcpy(logits, h_logits_, V * sizeof(float));
}

void CudaBackend::forward_impl(std::span<const int32_t> tokens, float* logits, bool all_logits) {
  const int n = int(tokens.size());
  const int pos_begin = seq_past_[0];
  const size_t V = size_t(hp_.n_vocab);
  if (n < opts_.min_gemm_batch) {
    for (int i = 0; i < n; ++i) {
      float* out = !logits      ? nullptr
                   : all_logits ? logits + size_t(i) * V
                                : (i == n - 1 ? logits : nullptr);
      decode_token(tokens[size_t(i)], pos_begin + i, out);
    }
  } else {
    for (int done = 0; done < n; done += max_batch_) {
      const int b = std::min(max_batch_, n - done);
      prefill_chunk(tokens.data() + done, b, pos_begin + done,
                    all_logits && logits ? logits + size_t(done) * V : logits, all_logits && logits,
                    logits && done + b == n);
    }
  }
  CUDA_CHECK(cudaStreamSynchronize(stream_));
  seq_past_[0] = pos_begin + n;
}

// One sequence's tokens (more than one) inside a batched call: the prefill GEMMs on its rows, or
// token by token through batched decode steps of one row.
void CudaBackend::forward_sequence(const SeqTokens& item, bool batch_fault) {
  const int n = int(item.tokens.size());
  const int pos_begin = seq_past_[size_t(item.seq)];
  const size_t V = size_t(hp_.n_vocab);
  if (n < opts_.min_gemm_batch) {
    for (int i = 0; i < n; ++i) {
      float* out = !item.logits      ? nullptr
                   : item.all_logits ? item.logits + size_t(i) * V
                                     : (i == n - 1 ? item.logits : nullptr);
      decode_rows({{item.tokens[size_t(i)], pos_begin + i, item.seq, out, batch_fault}});
    }
  } else {
    for (int done = 0; done < n; done += max_batch_) {
      const int b = std::min(max_batch_, n - done);
      float* out = item.all_logits && item.logits ? item.logits + size_t(done) * V : item.logits;
      prefill_chunk(item.tokens.data() + done, b, pos_begin + done, out,
                    item.all_logits && item.logits, item.logits && done + b == n, item.seq,
                    batch_fault);
    }
  }
  seq_past_[size_t(item.seq)] = pos_begin + n;
}

// One token of each of rows.size() sequences (each at most once), at their own positions. Steps
// of up to kGraphRows rows on the batched matvecs replay a CUDA graph per row count (everything
// they read from the host is in d_ints_, and their attention grid covers the whole context, as
// the single-token step's does; the same bits as a grid cut at the step's last position);
// larger ones, GEMM steps and steps with a fault of single rows launch eagerly.
void CudaBackend::decode_rows(const std::vector<DecodeRow>& rows) {
  const int B = int(rows.size());
  const int64_t V = hp_.n_vocab, T = max_tokens_;
  int max_pos = 0;
  bool row_faults = fault().kind == FaultSpec::LayerCorrupt;
  for (int i = 0; i < B; ++i) {
    h_ints_[1 + i] = rows[size_t(i)].token;
    h_ints_[1 + T + i] = rows[size_t(i)].pos;
    h_ints_[1 + 2 * T + i] = rows[size_t(i)].seq;
    max_pos = std::max(max_pos, rows[size_t(i)].pos);
    row_faults = row_faults || rows[size_t(i)].batch_fault;
  }
  CUDA_CHECK(cudaMemcpyAsync(d_ints_, h_ints_, size_t(3 * T + 1) * sizeof(int32_t),
                             cudaMemcpyHostToDevice, stream_));
  // Large steps through the mmq products or the GEMMs (faster); the rest through the batched
  // matvecs, whose every row is what it would be alone.
  const Route route = route_of(B);
  if (route != Route::Matvec || row_faults || B > kGraphRows || !opts_.cuda_graphs || graph_failed_)
    enqueue_rows(B, max_pos + 1, route, row_faults ? &rows : nullptr);
  else
    replay_graph(rows_graphs_[B - 1],
                 [&](bool) { enqueue_rows(B, n_ctx_, Route::Matvec, nullptr); });
  // Greedy picks where the logits are: B ids cross to the host instead of B rows.
  int64_t pick_cols = 0;
  int with_rows = 0;
  for (const DecodeRow& r : rows) {
    if (r.argmax) pick_cols = r.argmax_cols;  // one count for the step (picks_argmax)
    with_rows += r.logits != nullptr;
  }
  int32_t* picks = h_ints_ + 1 + 3 * T;
  if (pick_cols > 0) {
    cuda_ops::greedy_pick_rows(d_logits_, V, B, pick_cols, d_ints_ + 1 + 3 * T, stream_);
    CUDA_CHECK(cudaMemcpyAsync(picks, d_ints_ + 1 + 3 * T, size_t(B) * sizeof(int32_t),
                               cudaMemcpyDeviceToHost, stream_));
  }
  if (with_rows == B) {
    CUDA_CHECK(cudaMemcpyAsync(h_logits_, d_logits_, size_t(B) * size_t(V) * sizeof(float),
                               cudaMemcpyDeviceToHost, stream_));
  } else {
    for (int i = 0; i < B; ++i)
      if (rows[size_t(i)].logits)
        CUDA_CHECK(cudaMemcpyAsync(h_logits_ + size_t(i) * size_t(V),
                                   d_logits_ + size_t(i) * size_t(V), size_t(V) * sizeof(float),
                                   cudaMemcpyDeviceToHost, stream_));
  }
  CUDA_CHECK(cudaStreamSynchronize(stream_));  // also before h_ints_ may be rewritten
  for (int i = 0; i < B; ++i)
    if (rows[size_t(i)].argmax) *rows[size_t(i)].argmax = picks[i];
  auto copy_rows = [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i)
      if (rows[size_t(i)].logits)
        std::memcpy(rows[size_t(i)].logits, h_logits_ + size_t(i) * size_t(V),
                    size_t(V) * sizeof(float));
  };
  if (copy_pool_ && with_rows >= 4)
    copy_pool_->parallel_for(B, copy_rows);
  else
    copy_rows(0, B);
}

// The launches of a batched decode step of n_rows rows (tokens, positions and sequences in
// d_ints_), attention over positions < max_ctx. faults: the rows, when single-row faults apply.
void CudaBackend::enqueue_rows(int n_rows, int max_ctx, Route route,
                               const std::vector<DecodeRow>* faults) {
  const bool gemm = route == Route::Gemm, mmq = route == Route::Mmq;
  const int B = n_rows;
  const int64_t E = hp_.n_embd, F = hp_.n_ff, V = hp_.n_vocab, T = max_tokens_;
  const int32_t* d_tok = d_ints_ + 1;
  const TokenRows where = {d_ints_ + 1 + T, d_ints_ + 1 + 2 * T, n_ctx_};
  // Faults of single rows (LayerCorrupt at its position, BatchCorrupt), after layer l's FFN.
  auto row_faults = [&](int l) {
    if (!faults) return;
    for (int i = 0; i < B; ++i) {
      const DecodeRow& r = (*faults)[size_t(i)];
      if (fault().kind == FaultSpec::LayerCorrupt && fault().layer == l &&
          fault().position == r.pos)
        fault_corrupt_hidden(d_h_ + i * E, E, l, r.pos, fault().magnitude, stream_);
      if (r.batch_fault && fault().layer == l)
        fault_corrupt_hidden(d_h_ + i * E, E, l, r.pos, fault().magnitude, stream_, 3);
    }
  };

  get_rows(tok_embd_.type, tok_embd_.data, E, V, d_tok, B, d_h_, stream_);
  scale_embeddings(B);
  for (int l = 0; l < int(layers_.size()); ++l) {
    const DevLayer& L = layers_[size_t(l)];
    if (gemm) {
      rmsnorm(d_h_, L.attn_norm, d_xn_, B, E, hp_.rms_eps, stream_);
      matmul(L.wq, d_xn_, B, d_q_, false);
      matmul(L.wk, d_xn_, B, d_k_new_, false);
      matmul(L.wv, d_xn_, B, d_v_new_, false);
      if (L.bq) add_bias(d_q_, L.bq, B, q_dim_, stream_);
      if (L.bk) add_bias(d_k_new_, L.bk, B, kv_dim_, stream_);
      if (L.bv) add_bias(d_v_new_, L.bv, B, kv_dim_, stream_);
    } else {
      qkv_projection(L, B, mmq);
    }
    qk_norm(L, B);
    rope_and_store_kv_rows(d_q_, d_k_new_, d_v_new_, k_cache(l), v_cache(l), kv_type_, B, where,
                           layer_rope(l), stream_);
    attention_decode_rows(d_q_, k_cache(l), v_cache(l), kv_type_, d_att_, d_partials_,
                          partials_per_token_, B, where, max_ctx, layer_attn(l), stream_);
    // The block outputs go straight into the residual stream, or through a post-norm (d_xn_).
    const bool post_attn = L.post_attn_norm != nullptr, post_ffn = L.post_ffn_norm != nullptr;
    if (gemm)
      matmul(L.wo, d_att_, B, post_attn ? d_xn_ : d_h_, !post_attn);
    else if (mmq)
      mmq_product(L.wo, d_att_, B, post_attn ? d_xn_ : d_h_,
                  post_attn ? MatvecMode::Store : MatvecMode::Accumulate);
    else
      matvec_batch(L.wo.type, L.wo.data, L.wo.rows, L.wo.cols, d_att_, B, post_attn ? d_xn_ : d_h_,
                   nullptr, post_attn ? MatvecMode::Store : MatvecMode::Accumulate, stream_,
                   act_q8());
    post_norm_add(L.post_attn_norm, d_xn_, B);

    if (gemm) {
      rmsnorm(d_h_, L.ffn_norm, d_xn_, B, E, hp_.rms_eps, stream_);
      matmul(L.gate, d_xn_, B, d_g_, false);
      matmul(L.up, d_xn_, B, d_u_, false);
      gated_activation(int64_t(B) * F);
      matmul(L.down, d_g_, B, post_ffn ? d_xn_ : d_h_, !post_ffn);
    } else if (mmq) {
      // mmq_swiglu's epilogue is SwiGLU only: a GELU-gated FFN takes the two products.
      if (L.gate.type == L.up.type && mmq_supported(L.gate.type, L.gate.cols) &&
          hp_.ffn_act == FfnActivation::Silu) {
        mmq_swiglu(L.gate.type, L.gate.data, L.up.data, L.gate.rows, L.gate.cols, d_h_, B, d_g_,
                   stream_, L.ffn_norm, hp_.rms_eps, act_q8_);
      } else {
        rmsnorm(d_h_, L.ffn_norm, d_xn_, B, E, hp_.rms_eps, stream_);
        mmq_product(L.gate, d_xn_, B, d_g_, MatvecMode::Store);
        mmq_product(L.up, d_xn_, B, d_u_, MatvecMode::Store);
        gated_activation(int64_t(B) * F);
      }
      mmq_product(L.down, d_g_, B, post_ffn ? d_xn_ : d_h_,
                  post_ffn ? MatvecMode::Store : MatvecMode::Accumulate);
    } else {
      if (L.gate.type == L.up.type) {
        matvec_swiglu_batch(L.gate.type, L.gate.data, L.up.data, L.gate.rows, L.gate.cols, d_h_, B,
                            d_g_, stream_, L.ffn_norm, hp_.rms_eps, act_q8(), hp_.ffn_act);
      } else {
        rmsnorm(d_h_, L.ffn_norm, d_xn_, B, E, hp_.rms_eps, stream_);
        matvec_batch(L.gate.type, L.gate.data, L.gate.rows, L.gate.cols, d_xn_, B, d_g_, nullptr,
                     MatvecMode::Store, stream_, act_q8());
        matvec_batch(L.up.type, L.up.data, L.up.rows, L.up.cols, d_xn_, B, d_u_, nullptr,
                     MatvecMode::Store, stream_, act_q8());
        gated_activation(int64_t(B) * F);
      }
      matvec_batch(L.down.type, L.down.data, L.down.rows, L.down.cols, d_g_, B,
                   post_ffn ? d_xn_ : d_h_, nullptr,
                   post_ffn ? MatvecMode::Store : MatvecMode::Accumulate, stream_, act_q8());
    }
    post_norm_add(L.post_ffn_norm, d_xn_, B);
    row_faults(l);
  }
  if (gemm) {
    rmsnorm(d_h_, output_norm_, d_xn_, B, E, hp_.rms_eps, stream_);
    matmul(output_, d_xn_, B, d_logits_, false);
  } else if (mmq && mmq_supported(output_.type, output_.cols)) {
    const MatvecTarget out = {output_.data, output_.rows, d_logits_, nullptr};
    mmq_multi(output_.type, output_.cols, d_h_, B, &out, 1, stream_, output_norm_, hp_.rms_eps,
              act_q8_);
  } else {
    const MatvecTarget out = {output_.data, output_.rows, d_logits_, nullptr};
    matvec_multi_batch(output_.type, output_.cols, d_h_, B, &out, 1, stream_, output_norm_,
                       hp_.rms_eps, act_q8());
  }
  cap_logits(B);
}

void CudaBackend::forward_batch_impl(std::span<const SeqTokens> batch) {
  // One call of sequence 0 alone (run, chat, the gate's probe, `parity --layers`): the
  // single-sequence path, with its decode graph and the layer observer. The batched path gives
  // the same bits (batched_gpu_test.cpp).
  if (batch.size() == 1 && batch[0].seq == 0) {
    forward_impl(batch[0].tokens, batch[0].logits, batch[0].all_logits);
    return;
  }
  // BatchCorrupt (TEST KNOB): every sequence but the call's first, in calls of several.
  const bool batch_fault = fault().kind == FaultSpec::BatchCorrupt && batch.size() > 1;
  std::vector<DecodeRow> rows;
  for (const SeqTokens& item : batch) {
    const bool corrupt = batch_fault && item.seq != batch[0].seq;
    if (item.tokens.size() == 1)
      rows.push_back({item.tokens[0], seq_past_[size_t(item.seq)], item.seq, item.logits, corrupt,
                      item.argmax, item.argmax_cols ? item.argmax_cols : hp_.n_vocab});
    else
      forward_sequence(item, corrupt);
  }
  if (rows.empty()) return;
  decode_rows(rows);
  for (const DecodeRow& r : rows) seq_past_[size_t(r.seq)] = r.pos + 1;
}

// TEST KNOB (backend/fault.h), with the CPU reference's values.
void CudaBackend::drift_kv(int seq, int64_t pos_begin, int64_t pos_end, float scale) {
  for (int l = 0; l < int(hp_.n_layer); ++l)
    fault_drift_kv(k_cache(l, seq), v_cache(l, seq), kv_type_, kv_dim_, l, pos_begin, pos_end,
                   scale, stream_);
  CUDA_CHECK(cudaStreamSynchronize(stream_));
}

}  // namespace

std::unique_ptr<GatedBackend> create_cuda_backend(const Model& model, const BackendOptions& options,
                                                  GateKey key) {
  (void)key;  // its existence is the proof that the parity gate asked
  if (options.n_seq < 1 || options.n_seq > kMaxCudaSequences)
    throw InputError("cuda backend: " + std::to_string(options.n_seq) +
                     " sequences asked for; 1 to " + std::to_string(kMaxCudaSequences));
  cuda_ops::set_kernel_tuning(options.cuda.tuning);
  return std::make_unique<CudaBackend>(model, options.cuda, options.n_ctx, options.n_seq);
}

}  // namespace lockstep
