// VulkanBackend: the transformer forward pass in Vulkan compute shaders.
//
// Weights live in device memory in their file formats (one buffer per tensor; 1-D tensors as
// float32) and are dequantized on the fly by the shaders (vk_ops.h). One path serves every batch
// size: a forward call is cut into chunks of max_batch tokens and each chunk runs the same chain
// of dispatches. Decode (1 token) is a matrix-vector product (matvec.comp); a chunk of at least
// gemm_min_tokens tokens multiplies in shared-memory tiles (gemm.comp: each weight read once per
// 64 tokens), shorter ones in matvec.comp's 8-token variant (docs/vulkan.md). The KV cache is F16
// in device memory.
//
// A chunk's command buffer depends only on its shape (token count, which logits it returns): the
// tokens and the first position travel through a small host-visible buffer that the command
// buffer itself copies to the device first, so each shape is recorded once and replayed (the
// decode step is one replayed command buffer). An observer (`parity --layers`) or a layer fault
// needs the host between layers: those chunks are recorded eagerly, submitted layer by layer.
// Stages mirror the CPU forward pass (backend/cpu/cpu_transformer.cpp) one for one.
#include "backend/vulkan/vulkan_backend.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <mutex>

#include "backend/vulkan/chunk_plan.h"
#include "backend/vulkan/vk_context.h"
#include "backend/vulkan/vk_ops.h"
#include "quant/fp16.h"
#include "quant/quantize.h"
#include "util/error.h"
#include "util/hash.h"

namespace lockstep {

namespace {

using vk::Buffer;
using vk::DeviceMatrix;
using vk::Recorder;

constexpr size_t kStagingBytes = size_t(64) << 20;
// Tokens per forward chunk when VulkanBackendOptions::max_batch is 0: kAutoBatch, halved while
// the model, its cache and the chunk's scratch do not fit the device, down to kMinAutoBatch.
constexpr int kAutoBatch = 512, kMinAutoBatch = 64;

std::string gib(double bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f GiB", bytes / double(1ull << 30));
  return buf;
}

struct DeviceLayer {
  DeviceMatrix wq, wk, wv, wo, gate, up, down;
  VkDeviceAddress attn_norm = 0, ffn_norm = 0, bq = 0, bk = 0, bv = 0;
};

// Which logits a chunk returns.
enum class LogitRows { None, Last, All };

// What the products reading one input are given (vk::record_matmul's x, norm and q8).
struct ProductInputs {
  VkDeviceAddress x = 0;
  vk::NormFirst norm;
  VkDeviceAddress q8 = 0;
};

// The forms in which the products reading one input get it: the int8 form (for those that read
// it), floats (for the others), and whether those take the norm in.
struct InputPlan {
  bool q8 = false, floats = false, fuse = false;
};

class VulkanBackend final : public GatedBackend {
 public:
  VulkanBackend(const Model& model, const VulkanBackendOptions& opts, int n_ctx);
  ~VulkanBackend() override;

  std::string name() const override { return "vulkan"; }
  const Model& model() const override { return model_; }
  int n_past() const override { return n_past_; }
  int n_ctx() const override { return n_ctx_; }
  void truncate(int n_past) override;
  void set_observer(LayerObserver* observer) override { observer_ = observer; }

 protected:
  void forward_impl(std::span<const int32_t> tokens, float* logits, bool all_logits) override;
  void drift_kv(int seq, int64_t pos_begin, int64_t pos_end, float scale) override;

 private:
  void check_supported() const;
  void release();
  void allocate();
  void upload(const Buffer& dst, const void* src, size_t bytes);
  void upload_weights();
  void run_chunk(const int32_t* tokens, int n, int pos0, float* logits, LogitRows rows);
  void record_chunk(Recorder& rec, int n, LogitRows rows, int pos0, bool eager);
  InputPlan plan_inputs(std::initializer_list<const DeviceMatrix*> readers, VkDeviceAddress x,
                        uint32_t n_elems, int n_tok, const vk::NormFirst& norm,
                        bool may_fuse = true) const;
  ProductInputs record_inputs(Recorder& rec, std::initializer_list<const DeviceMatrix*> readers,
                              VkDeviceAddress x, uint32_t n_elems, int n_tok,
                              const vk::NormFirst& norm, bool may_fuse = true,
                              bool q8_written = false);
  void after_layer(Recorder& rec, int layer, const char* stage, int n, int pos0, bool eager);
  // A matrix's row stride and size in device memory (Q6_K padded with q6k_padded).
  uint64_t device_row_bytes(const WeightView& w) const {
    return vk::device_row_bytes(w.type, w.cols, w.row_bytes, opts_.q6k_padded);
  }
  size_t device_bytes(const WeightView& w) const {
    return size_t(device_row_bytes(w) * uint64_t(w.rows));
  }
  VkDeviceAddress k_cache(int layer) const;
  VkDeviceAddress v_cache(int layer) const;

  const Model& model_;
  const HParams hp_;
  VulkanBackendOptions opts_;
  const int64_t q_dim_, kv_dim_;
  int n_ctx_ = 0;
  int max_batch_ = 0;
  int n_past_ = 0;

  std::unique_ptr<vk::Context> ctx_;
  // Weights: one buffer per distinct tensor (the output matrix may be the embedding).
  std::vector<std::pair<const uint8_t*, Buffer>> weights_;
  std::vector<Buffer> vectors_;  // 1-D tensors as float32
  Buffer k_, v_;                 // F16 caches: [layer][position][kv_dim]
  Buffer h_, xn_, q_, k_new_, v_new_, att_, g_, u_, logits_, scores_, ids_, rope_;
  Buffer q8_;          // the int8 form of a product's input (vk::record_quantize_q8)
  bool int8_ = false;  // whether Q4_K and Q6_K products read it
  bool gemm_ = false;  // whether chunks may be long enough for gemm.comp (vk::gemm_takes)
  Buffer host_ids_, host_logits_, host_hidden_;  // host-visible staging
  DeviceMatrix tok_embd_, output_;
  VkDeviceAddress output_norm_ = 0;
  std::vector<DeviceLayer> layers_;
  vk::AttentionShape shape_;

  // Recorded command buffers by shape (token count, logit rows), replayed.
  std::map<std::pair<int, LogitRows>, VkCommandBuffer> recorded_;
  VkCommandBuffer eager_cmd_ = VK_NULL_HANDLE;

  LayerObserver* observer_ = nullptr;
};

VulkanBackend::VulkanBackend(const Model& model, const VulkanBackendOptions& opts, int n_ctx)
    : model_(model),
      hp_(model.hp),
      opts_(opts),
      q_dim_(model.hp.n_head * model.hp.head_dim),
      kv_dim_(model.hp.n_head_kv * model.hp.head_dim) {
  check_supported();
  n_ctx_ = resolve_n_ctx(hp_, n_ctx);
  max_batch_ = std::max(1, std::min(opts_.max_batch > 0 ? opts_.max_batch : kAutoBatch, n_ctx_));
  try {
    vk::ContextOptions c;
    c.device = opts_.device;
    c.allow_cpu_device = true;
    c.validation = opts_.validation;
    c.profile = opts_.profile;
    vk::set_product_tuning(
        {opts_.matvec_team, opts_.matvec_rows, opts_.matvec_groups, opts_.gemm_min_tokens});
    ctx_ = std::make_unique<vk::Context>(c);
    // Every pipeline now (once allocate() has settled the chunk size), so that one that does not
    // build fails here and not mid-forward.
    std::vector<TensorType> types = {model_.tok_embd.type, model_.output.type};
    for (const auto& L : model_.layers)
      for (const WeightView* w : {&L.wq, &L.wk, &L.wv, &L.wo, &L.ffn_gate, &L.ffn_up, &L.ffn_down})
        types.push_back(w->type);
    int8_ = opts_.int8_inputs && ctx_->integer_dot_product();
    allocate();  // settles max_batch_
    gemm_ = opts_.gemm_min_tokens > 0 && opts_.gemm_min_tokens <= max_batch_;
    for (const std::string& name : vk::pipeline_names(types, int8_, gemm_))
      ctx_->pipeline(name.c_str());
    upload_weights();
  } catch (...) {
    release();  // a throwing constructor runs no destructor
    throw;
  }
}

VulkanBackend::~VulkanBackend() {
  release();
}

// Frees every device resource; idempotent and never throws.
void VulkanBackend::release() {
  if (!ctx_) return;
  ctx_->api().vkDeviceWaitIdle(ctx_->device());
  for (auto& [key, cmd] : recorded_) ctx_->free_command_buffer(cmd);
  recorded_.clear();
  ctx_->free_command_buffer(eager_cmd_);
  eager_cmd_ = VK_NULL_HANDLE;
  for (auto& [ptr, b] : weights_) ctx_->destroy(b);
  weights_.clear();
  for (Buffer& b : vectors_) ctx_->destroy(b);
  vectors_.clear();
  for (Buffer* b : {&k_, &v_, &h_, &xn_, &q_, &k_new_, &v_new_, &att_, &g_, &u_, &logits_, &q8_,
                    &scores_, &ids_, &rope_, &host_ids_, &host_logits_, &host_hidden_})
    ctx_->destroy(*b);
  ctx_.reset();
}

void VulkanBackend::check_supported() const {
  // Only the llama/qwen2 forward pass is written in these shaders (the rope variants are the
  // host's table): the registry's entry refuses anything more before it creates this backend,
  // in every build (registry.cpp). What remains are the shapes and types the shaders take.
  const std::string where = model_.file ? model_.file->path() + ": " : std::string();
  if (hp_.head_dim % 2 != 0 || hp_.head_dim > 256 || hp_.rope_dim % 2 != 0 ||
      hp_.rope_dim > hp_.head_dim)
    throw InputError(where + "vulkan backend: head size " + std::to_string(hp_.head_dim) +
                     " (rope " + std::to_string(hp_.rope_dim) +
                     ") is not supported (even, at most 256)");
  auto check = [&](const WeightView& w, bool matrix) {
    if (!w.present()) return;
    if (device_bytes(w) >= (uint64_t(1) << 32))
      throw InputError(where + "vulkan backend: tensor '" + w.name +
                       "' is 4 GiB or larger (the shaders address bytes in 32 bits)");
    if (matrix && !vk::weight_type_supported(w.type, w.cols))
      throw InputError(where + "vulkan backend: tensor '" + w.name + "' of type " +
                       tensor_type_info(w.type).name + " with rows of " + std::to_string(w.cols) +
                       " is not supported");
  };
  check(model_.tok_embd, true);
  check(model_.output, true);
  for (const auto& L : model_.layers)
    for (const WeightView* w : {&L.wq, &L.wk, &L.wv, &L.wo, &L.ffn_gate, &L.ffn_up, &L.ffn_down})
      check(*w, true);
}

// Plans every allocation, compares the total with the device's memory (one clear message before
// anything is allocated), then allocates.
void VulkanBackend::allocate() {
  size_t weight_bytes = 0;
  std::vector<const WeightView*> matrices = {&model_.tok_embd, &model_.output};
  for (const auto& L : model_.layers)
    for (const WeightView* w : {&L.wq, &L.wk, &L.wv, &L.wo, &L.ffn_gate, &L.ffn_up, &L.ffn_down})
      matrices.push_back(w);
  std::vector<const WeightView*> distinct;
  for (const WeightView* w : matrices) {
    bool seen = false;
    for (const WeightView* d : distinct) seen = seen || d->data == w->data;
    if (!seen) distinct.push_back(w), weight_bytes += device_bytes(*w);
  }
  const size_t kv_bytes = 2 * size_t(hp_.n_layer) * size_t(n_ctx_) * size_t(kv_dim_) * 2;
  const size_t E = size_t(hp_.n_embd), F = size_t(hp_.n_ff), V = size_t(hp_.n_vocab),
               Q = size_t(q_dim_), KV = size_t(kv_dim_);
  const size_t rope_floats = size_t(n_ctx_) * size_t(hp_.rope_dim);
  // Attention scores and the int8 form, and all the scratch, for chunks of T tokens.
  auto score_floats_for = [&](size_t T) { return T * size_t(hp_.n_head) * size_t(n_ctx_); };
  auto q8_words_for = [&](size_t T) {
    return int8_ ? T * vk::q8_words_per_token(uint32_t(std::max({E, F, Q}) + 31) / 32 * 32) : 1;
  };
  auto scratch_bytes = [&](size_t T) {
    return 4 * (2 * T * E + 2 * T * Q + 2 * T * KV + 2 * T * F + T * V + score_floats_for(T) +
                rope_floats + q8_words_for(T));
  };
  // The default chunk (max_batch 0) shrinks, down to kMinAutoBatch tokens, until it fits.
  if (opts_.max_batch == 0)
    max_batch_ = vk::auto_chunk_tokens(weight_bytes + kv_bytes + kStagingBytes, scratch_bytes,
                                       ctx_->device_local_bytes(), max_batch_, kMinAutoBatch);
  const size_t T = size_t(max_batch_);
  const size_t act_bytes = scratch_bytes(T), score_floats = score_floats_for(T),
               q8_words = q8_words_for(T);
  const size_t need = weight_bytes + kv_bytes + act_bytes + kStagingBytes;
  if (need > ctx_->device_local_bytes())
    throw Error("vulkan: model needs " + gib(double(need)) + " (weights " +
                    gib(double(weight_bytes)) + ", KV cache " + gib(double(kv_bytes)) +
                    " for n_ctx " + std::to_string(n_ctx_) + ", scratch " + gib(double(act_bytes)) +
                    "), " + ctx_->device_name() + " has " + gib(double(ctx_->device_local_bytes())),
                kExitDevice);

  for (const WeightView* w : distinct)
    weights_.push_back(
        {w->data, ctx_->create_buffer(device_bytes(*w) + 4, false, "tensor " + w->name)});
  k_ = ctx_->create_buffer(kv_bytes / 2, false, "the K cache");
  v_ = ctx_->create_buffer(kv_bytes / 2, false, "the V cache");
  h_ = ctx_->create_buffer(4 * T * E, false, "activations");
  xn_ = ctx_->create_buffer(4 * T * E, false, "activations");
  q_ = ctx_->create_buffer(4 * T * Q, false, "activations");
  att_ = ctx_->create_buffer(4 * T * Q, false, "activations");
  k_new_ = ctx_->create_buffer(4 * T * KV, false, "activations");
  v_new_ = ctx_->create_buffer(4 * T * KV, false, "activations");
  g_ = ctx_->create_buffer(4 * T * F, false, "activations");
  u_ = ctx_->create_buffer(4 * T * F, false, "activations");
  logits_ = ctx_->create_buffer(4 * T * V, false, "logits");
  q8_ = ctx_->create_buffer(4 * q8_words, false, "activations");
  scores_ = ctx_->create_buffer(4 * score_floats, false, "attention scores");
  ids_ = ctx_->create_buffer(4 * (T + 1), false, "token ids");
  rope_ = ctx_->create_buffer(4 * rope_floats, false, "the rope table");
  host_ids_ = ctx_->create_buffer(4 * (T + 1), true, "token id staging");
  host_logits_ = ctx_->create_buffer(4 * T * V, true, "logits staging");
  host_hidden_ = ctx_->create_buffer(4 * T * E, true, "hidden state staging");
  shape_ = {uint32_t(hp_.n_head), uint32_t(hp_.n_head_kv), uint32_t(hp_.head_dim)};
}

// Host bytes into a device buffer, through a host-visible staging buffer.
void VulkanBackend::upload(const Buffer& dst, const void* src, size_t bytes) {
  Buffer staging = ctx_->create_buffer(std::min(bytes, kStagingBytes), true, "upload staging");
  VkCommandBuffer cmd = VK_NULL_HANDLE;
  try {
    cmd = ctx_->allocate_command_buffer();
    Recorder rec(*ctx_, cmd);
    for (size_t done = 0; done < bytes;) {
      const size_t n = std::min(bytes - done, kStagingBytes);
      std::memcpy(staging.mapped, static_cast<const uint8_t*>(src) + done, n);
      rec.begin();
      rec.copy(staging, 0, dst, done, n, "copy: upload");
      rec.end();
      ctx_->submit_and_wait(cmd);
      done += n;
    }
  } catch (...) {
    ctx_->free_command_buffer(cmd);
    ctx_->destroy(staging);
    throw;
  }
  ctx_->free_command_buffer(cmd);
  ctx_->destroy(staging);
}

void VulkanBackend::upload_weights() {
  auto matrix = [&](const WeightView& w) {
    for (auto& [ptr, b] : weights_)
      if (ptr == w.data)
        return DeviceMatrix{w.type,    w.rows,          w.cols, device_row_bytes(w),
                            b.address, opts_.q6k_padded};
    throw Error("vulkan: tensor '" + w.name + "' was not allocated");
  };
  auto vector = [&](const WeightView& w) -> VkDeviceAddress {
    if (!w.present()) return 0;
    std::vector<float> f(size_t(w.cols * w.rows));
    for (int64_t r = 0; r < w.rows; ++r)
      dequantize_row(w.type, w.row(r), f.data() + r * w.cols, w.cols);
    vectors_.push_back(ctx_->create_buffer(f.size() * 4, false, "tensor " + w.name));
    upload(vectors_.back(), f.data(), f.size() * 4);
    return vectors_.back().address;
  };
  for (auto& [ptr, b] : weights_) {
    const WeightView* view = nullptr;
    for (const WeightView* w : {&model_.tok_embd, &model_.output})
      if (w->data == ptr) view = w;
    for (const auto& L : model_.layers)
      for (const WeightView* w : {&L.wq, &L.wk, &L.wv, &L.wo, &L.ffn_gate, &L.ffn_up, &L.ffn_down})
        if (w->data == ptr) view = w;
    if (device_row_bytes(*view) == view->row_bytes) {
      upload(b, ptr, device_bytes(*view));
    } else {
      std::vector<uint8_t> padded(device_bytes(*view));
      vk::to_device_layout(view->type, view->rows, view->cols, view->row_bytes, opts_.q6k_padded,
                           ptr, padded.data());
      upload(b, padded.data(), padded.size());
    }
  }
  tok_embd_ = matrix(model_.tok_embd);
  output_ = matrix(model_.output);
  output_norm_ = vector(model_.output_norm);
  layers_.resize(model_.layers.size());
  for (size_t l = 0; l < layers_.size(); ++l) {
    const LayerWeights& L = model_.layers[l];
    DeviceLayer& D = layers_[l];
    D.wq = matrix(L.wq), D.wk = matrix(L.wk), D.wv = matrix(L.wv), D.wo = matrix(L.wo);
    D.gate = matrix(L.ffn_gate), D.up = matrix(L.ffn_up), D.down = matrix(L.ffn_down);
    D.attn_norm = vector(L.attn_norm), D.ffn_norm = vector(L.ffn_norm);
    D.bq = vector(L.bq), D.bk = vector(L.bk), D.bv = vector(L.bv);
  }
  const std::vector<float> table = vk::rope_table(
      hp_, n_ctx_, hp_.has_rope_freqs ? rope_freq_factors(model_) : std::vector<float>{});
  upload(rope_, table.data(), table.size() * 4);
  // Zeroed caches: positions never written (beyond n_past) can never feed NaN into anything.
  VkCommandBuffer cmd = ctx_->allocate_command_buffer();
  Recorder rec(*ctx_, cmd);
  rec.begin();
  ctx_->api().vkCmdFillBuffer(cmd, k_.buffer, 0, VK_WHOLE_SIZE, 0);
  ctx_->api().vkCmdFillBuffer(cmd, v_.buffer, 0, VK_WHOLE_SIZE, 0);
  rec.end();
  try {
    ctx_->submit_and_wait(cmd);
  } catch (...) {
    ctx_->free_command_buffer(cmd);
    throw;
  }
  ctx_->free_command_buffer(cmd);
}

VkDeviceAddress VulkanBackend::k_cache(int layer) const {
  return k_.address +
         VkDeviceAddress(layer) * VkDeviceAddress(n_ctx_) * VkDeviceAddress(kv_dim_) * 2;
}
VkDeviceAddress VulkanBackend::v_cache(int layer) const {
  return v_.address +
         VkDeviceAddress(layer) * VkDeviceAddress(n_ctx_) * VkDeviceAddress(kv_dim_) * 2;
}

void VulkanBackend::truncate(int n_past) {
  if (n_past < 0) throw Error("vulkan: truncate(" + std::to_string(n_past) + "): negative length");
  n_past_ = std::min(n_past_, n_past);
}

// Observer callbacks and the LayerCorrupt fault after a stage of layer `layer`, for the chunk's n
// rows at positions pos0 ...: only in eager recording. The work so far is submitted, the hidden
// state read back (and written again when the fault changed it), and recording goes on.
void VulkanBackend::after_layer(Recorder& rec, int layer, const char* stage, int n, int pos0,
                                bool eager) {
  if (!eager) return;
  const int64_t E = hp_.n_embd;
  const size_t bytes = size_t(n * E) * 4;
  rec.copy(h_, 0, host_hidden_, 0, bytes);
  rec.end();
  ctx_->submit_and_wait(rec.command_buffer());
  float* h = static_cast<float*>(host_hidden_.mapped);
  rec.begin();
  const FaultSpec& f = fault();
  if (std::strcmp(stage, "ffn_out") == 0 && f.kind == FaultSpec::LayerCorrupt && f.layer == layer &&
      f.position >= pos0 && f.position < pos0 + n) {
    float* row = h + int64_t(f.position - pos0) * E;
    for (int64_t i = 0; i < E; ++i) {
      const bool negative = hash4(1, uint64_t(layer), uint64_t(f.position), uint64_t(i)) & 1;
      row[i] += negative ? -f.magnitude : f.magnitude;
    }
    rec.copy(host_hidden_, 0, h_, 0, bytes);
  }
  if (!observer_) return;
  for (int t = 0; t < n; ++t)
    observer_->on_hidden(layer, stage, pos0 + t, std::span<const float>(h + t * E, size_t(E)));
}

// The chain of dispatches of one chunk of n tokens (ids and first position in host_ids_).
void VulkanBackend::record_chunk(Recorder& rec, int n, LogitRows rows, int pos0, bool eager) {
  const uint32_t E = uint32_t(hp_.n_embd), F = uint32_t(hp_.n_ff), Q = uint32_t(q_dim_),
                 KV = uint32_t(kv_dim_), V = uint32_t(hp_.n_vocab);
  const float eps = hp_.rms_eps;
  const float scale = float(1.0 / std::sqrt(double(hp_.head_dim)));
  rec.copy(host_ids_, 0, ids_, 0, size_t(n + 1) * 4, "copy: token ids");
  vk::record_get_rows(rec, tok_embd_, ids_.address, h_.address, n);
  for (int l = 0; l < int(layers_.size()); ++l) {
    const DeviceLayer& L = layers_[size_t(l)];
    ProductInputs in =
        record_inputs(rec, {&L.wq, &L.wk, &L.wv}, h_.address, E, n, {L.attn_norm, eps});
    rec.begin_independent();
    vk::record_matmul(rec, L.wq, in.x, E, q_.address, Q, n, false, L.bq, in.norm, in.q8);
    vk::record_matmul(rec, L.wk, in.x, E, k_new_.address, KV, n, false, L.bk, in.norm, in.q8);
    vk::record_matmul(rec, L.wv, in.x, E, v_new_.address, KV, n, false, L.bv, in.norm, in.q8);
    rec.end_independent();
    vk::record_rope_kv_store(rec, q_.address, k_new_.address, v_new_.address, rope_.address,
                             ids_.address, k_cache(l), v_cache(l), shape_, uint32_t(hp_.rope_dim),
                             hp_.rope_type == RopeType::Neox, n);
    // The attention writes the output product's int8 form itself where that product reads it.
    const bool att_q8 =
        plan_inputs({&L.wo}, att_.address, Q, n, {}).q8 && vk::attention_writes_q8(shape_);
    vk::record_attention(rec, q_.address, k_cache(l), v_cache(l), att_.address, scores_.address,
                         ids_.address, shape_, uint32_t(n_ctx_), scale, n,
                         att_q8 ? q8_.address : 0);
    in = record_inputs(rec, {&L.wo}, att_.address, Q, n, {}, true, att_q8);
    vk::record_matmul(rec, L.wo, in.x, Q, h_.address, E, n, true, 0, {}, in.q8);
    after_layer(rec, l, "attn_out", n, pos0, eager);

    in = record_inputs(rec, {&L.gate, &L.up}, h_.address, E, n, {L.ffn_norm, eps});
    vk::record_matmul_swiglu(rec, L.gate, L.up, in.x, E, g_.address, u_.address, n, in.norm, in.q8);
    in = record_inputs(rec, {&L.down}, g_.address, F, n, {});
    vk::record_matmul(rec, L.down, in.x, F, h_.address, E, n, true, 0, {}, in.q8);
    after_layer(rec, l, "ffn_out", n, pos0, eager);
  }
  if (rows == LogitRows::None) return;
  // The last token's row alone, or every row.
  const int n_out = rows == LogitRows::All ? n : 1;
  const VkDeviceAddress last = h_.address + (rows == LogitRows::All ? 0 : uint64_t(n - 1) * E * 4);
  // The output norm stays a dispatch of its own for float products: taken in, each of the many
  // workgroups of the vocabulary's rows would sum the row's squares again.
  ProductInputs in = record_inputs(rec, {&output_}, last, E, n_out, {output_norm_, eps}, false);
  vk::record_matmul(rec, output_, in.x, E, logits_.address, V, n_out, false, 0, in.norm, in.q8);
  rec.copy(logits_, 0, host_logits_, 0, size_t(n_out) * V * 4, "copy: logits");
}

// How the products `readers` read n_tok rows of x (n_elems floats each), through RMSNorm where
// `norm` has a weight. A prompt chunk that every reader takes in gemm.comp (vk::gemm_takes):
// floats, the norm's output written apart. Otherwise the int8 form for those that read it, where
// the device has integer dot products and their weights are big enough to earn its dispatch
// (int8_min_bytes); floats for the others, with the norm taken in by the products where they all
// can and fuse_norm is on and may_fuse.
InputPlan VulkanBackend::plan_inputs(std::initializer_list<const DeviceMatrix*> readers,
                                     VkDeviceAddress x, uint32_t n_elems, int n_tok,
                                     const vk::NormFirst& norm, bool may_fuse) const {
  InputPlan plan;
  bool tiled = gemm_;
  for (const DeviceMatrix* w : readers)
    tiled = tiled && vk::gemm_takes(*ctx_, *w, norm.weight ? xn_.address : x, n_elems, n_tok);
  if (tiled) {
    plan.floats = true;
    return plan;
  }
  int64_t q8_bytes = 0;  // weights of the products that would read the int8 form
  for (const DeviceMatrix* w : readers)
    if (vk::matvec_reads_q8(w->type)) q8_bytes += w->rows * int64_t(w->row_bytes);
  const bool q8_fits = int8_ && q8_bytes > 0 && q8_bytes >= opts_.int8_min_bytes &&
                       n_elems % 32 == 0 && x % 16 == 0 && norm.weight % 16 == 0;
  plan.fuse = may_fuse && opts_.fuse_norm && norm.weight;
  for (const DeviceMatrix* w : readers) {
    if (q8_fits && vk::matvec_reads_q8(w->type)) {
      plan.q8 = true;
    } else {
      plan.floats = true;
      plan.fuse = plan.fuse && vk::matvec_takes_norm(*w, x, n_elems, norm);
    }
  }
  return plan;
}

// Records what plan_inputs chose for n_tok rows of x: the int8 form in q8_ (unless q8_written:
// the attention wrote it), the norm's output in xn_ where the float readers do not take it in.
ProductInputs VulkanBackend::record_inputs(Recorder& rec,
                                           std::initializer_list<const DeviceMatrix*> readers,
                                           VkDeviceAddress x, uint32_t n_elems, int n_tok,
                                           const vk::NormFirst& norm, bool may_fuse,
                                           bool q8_written) {
  const InputPlan plan = plan_inputs(readers, x, n_elems, n_tok, norm, may_fuse);
  ProductInputs in;
  in.x = x;
  if (plan.q8) {
    in.q8 = q8_.address;
    if (!q8_written) vk::record_quantize_q8(rec, x, n_elems, n_elems, n_tok, in.q8, norm);
  }
  if (plan.floats && norm.weight && plan.fuse) {
    in.norm = norm;
  } else if (plan.floats && norm.weight) {
    vk::record_rmsnorm(rec, x, norm.weight, xn_.address, n_elems, n_tok, 0, norm.eps);
    in.x = xn_.address;
  }
  return in;
}

void VulkanBackend::run_chunk(const int32_t* tokens, int n, int pos0, float* logits,
                              LogitRows rows) {
  int32_t* ids = static_cast<int32_t*>(host_ids_.mapped);
  ids[0] = pos0;
  std::memcpy(ids + 1, tokens, size_t(n) * 4);
  const bool eager = observer_ != nullptr || fault().kind == FaultSpec::LayerCorrupt;
  if (eager) {
    if (!eager_cmd_) eager_cmd_ = ctx_->allocate_command_buffer();
    Recorder rec(*ctx_, eager_cmd_);
    rec.begin();
    record_chunk(rec, n, rows, pos0, true);
    rec.end();
    ctx_->submit_and_wait(eager_cmd_);
  } else {
    VkCommandBuffer& cmd = recorded_[{n, rows}];
    if (!cmd) {
      cmd = ctx_->allocate_command_buffer();
      Recorder rec(*ctx_, cmd);
      rec.begin();
      try {
        record_chunk(rec, n, rows, pos0, false);
        rec.end();
      } catch (...) {
        ctx_->free_command_buffer(cmd);
        recorded_.erase({n, rows});
        throw;
      }
    }
    ctx_->submit_and_wait(cmd);
  }
  const size_t V = size_t(hp_.n_vocab);
  if (rows != LogitRows::None)
    std::memcpy(logits, host_logits_.mapped, (rows == LogitRows::All ? size_t(n) : 1) * V * 4);
}

void VulkanBackend::forward_impl(std::span<const int32_t> tokens, float* logits, bool all_logits) {
  const int n = int(tokens.size());
  const int pos_begin = n_past_;
  const size_t V = size_t(hp_.n_vocab);
  for (int done = 0; done < n; done += max_batch_) {
    const int b = std::min(max_batch_, n - done);
    const LogitRows rows = !logits         ? LogitRows::None
                           : all_logits    ? LogitRows::All
                           : done + b == n ? LogitRows::Last
                                           : LogitRows::None;
    run_chunk(tokens.data() + done, b, pos_begin + done,
              rows == LogitRows::All ? logits + size_t(done) * V : logits, rows);
    n_past_ = pos_begin + done + b;
  }
}

// TEST KNOB (backend/fault.h), with the CPU reference's values: read back, moved on the host,
// rounded to half again and written back.
void VulkanBackend::drift_kv(int /*seq: always 0*/, int64_t pos_begin, int64_t pos_end,
                             float scale) {
  if (pos_end <= pos_begin) return;
  const size_t row_halves = size_t(kv_dim_);
  const size_t bytes = size_t(pos_end - pos_begin) * row_halves * 2;
  Buffer staging = ctx_->create_buffer(bytes, true, "fault staging");
  VkCommandBuffer cmd = VK_NULL_HANDLE;
  try {
    cmd = ctx_->allocate_command_buffer();
    Recorder rec(*ctx_, cmd);
    for (int l = 0; l < int(hp_.n_layer); ++l) {
      for (int which = 0; which < 2; ++which) {
        const Buffer& cache = which == 0 ? k_ : v_;
        const size_t offset = (size_t(l) * size_t(n_ctx_) + size_t(pos_begin)) * row_halves * 2;
        rec.begin();
        rec.copy(cache, offset, staging, 0, bytes);
        rec.end();
        ctx_->submit_and_wait(cmd);
        uint16_t* halves = static_cast<uint16_t*>(staging.mapped);
        for (int64_t p = pos_begin; p < pos_end; ++p) {
          const uint64_t pos_key = uint64_t(p) << 32;
          for (size_t i = 0; i < row_halves; ++i) {
            uint16_t& h = halves[size_t(p - pos_begin) * row_halves + i];
            const float noise =
                scale * unit_noise(hash4(2, uint64_t(l), pos_key | uint64_t(i), uint64_t(which)));
            h = fp32_to_fp16(fp16_to_fp32(h) + noise);
          }
        }
        rec.begin();
        rec.copy(staging, 0, cache, offset, bytes);
        rec.end();
        ctx_->submit_and_wait(cmd);
      }
    }
  } catch (...) {
    ctx_->free_command_buffer(cmd);
    ctx_->destroy(staging);
    throw;
  }
  ctx_->free_command_buffer(cmd);
  ctx_->destroy(staging);
}

}  // namespace

bool vulkan_device_available(std::string* why, int device) {
  // One look per process: `auto` asks on every open, and creating an instance costs time.
  static std::once_flag once;
  static std::vector<vk::DeviceSummary> devices;
  static std::string error;
  std::call_once(once, [] {
    try {
      devices = vk::list_devices();
      if (devices.empty()) error = "no Vulkan device";
    } catch (const std::exception& e) {
      error = e.what();
    }
  });
  if (!error.empty()) {
    if (why) *why = error;
    return false;
  }
  if (device >= 0) {
    if (size_t(device) < devices.size()) return true;
    if (why)
      *why = "no Vulkan device " + std::to_string(device) + " (there are " +
             std::to_string(devices.size()) + ")";
    return false;
  }
  for (const auto& d : devices)
    if (!d.is_cpu()) return true;
  if (why)
    *why = "only a CPU Vulkan implementation (" + devices.front().name +
           "), which auto does not choose; --backend vulkan forces it";
  return false;
}

std::unique_ptr<GatedBackend> create_vulkan_backend(const Model& model,
                                                    const BackendOptions& options, GateKey key) {
  (void)key;  // its existence is the proof that the parity gate asked
  if (options.n_seq != 1)
    throw InputError("vulkan backend: serves one sequence at a time (asked for " +
                     std::to_string(options.n_seq) + "); use --parallel 1 or a CPU backend");
  return std::make_unique<VulkanBackend>(model, options.vulkan, options.n_ctx);
}

std::vector<VulkanDeviceInfo> vulkan_devices() {
  std::vector<VulkanDeviceInfo> out;
  for (const vk::DeviceSummary& d : vk::list_devices()) out.push_back({d.name, d.is_cpu()});
  return out;
}

uint64_t vulkan_validation_errors() {
  return vk::validation_error_count();
}

}  // namespace lockstep
