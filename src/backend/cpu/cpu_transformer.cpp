#include "backend/cpu/cpu_transformer.h"

#include <algorithm>
#include <cmath>

#include "backend/cpu/ops_fast.h"
#include "backend/cpu/ops_ref.h"
#include "quant/quantize.h"
#include "util/error.h"

namespace lockstep::cpu {

namespace {

std::vector<float> to_floats(const WeightView& w) {
  std::vector<float> out(size_t(w.cols * w.rows));
  for (int64_t r = 0; r < w.rows; ++r)
    dequantize_row(w.type, w.row(r), out.data() + r * w.cols, w.cols);
  return out;
}

}  // namespace

CpuTransformer::CpuTransformer(const Model& model, std::unique_ptr<CpuKernels> kernels,
                               const TransformerOptions& options)
    : model_(model),
      hp_(model.hp),
      name_(options.name),
      q_dim_(model.hp.n_head * model.hp.head_dim),
      kv_dim_(model.hp.n_head_kv * model.hp.head_dim),
      pool_(options.n_threads),
      kernels_(std::move(kernels)) {
  n_ctx_ = resolve_n_ctx(hp_, options.n_ctx);
  max_batch_ = std::max(1, std::min(options.max_batch, n_ctx_));

  const int64_t max_cols = std::max({hp_.n_embd, q_dim_, hp_.n_ff});
  kernels_->reserve(max_batch_, max_cols, pool_.size());

  layer_vectors_.resize(model.layers.size());
  for (size_t l = 0; l < model.layers.size(); ++l) {
    const LayerWeights& L = model.layers[l];
    LayerVectors& V = layer_vectors_[l];
    V.attn_norm = to_floats(L.attn_norm);
    V.ffn_norm = to_floats(L.ffn_norm);
    if (hp_.has_qkv_bias) {
      V.bq = to_floats(L.bq);
      V.bk = to_floats(L.bk);
      V.bv = to_floats(L.bv);
    }
  }
  output_norm_ = to_floats(model.output_norm);

  kv_ = KvCache(options.kv_type, hp_.n_layer, n_ctx_, kv_dim_, name_);

  const size_t B = size_t(max_batch_);
  x_.resize(B * size_t(hp_.n_embd));
  xb_.resize(B * size_t(hp_.n_embd));
  xb2_.resize(B * size_t(hp_.n_embd));
  q_.resize(B * size_t(q_dim_));
  k_.resize(B * size_t(kv_dim_));
  v_.resize(B * size_t(kv_dim_));
  att_.resize(B * size_t(q_dim_));
  hb_.resize(B * size_t(hp_.n_ff));
  hb2_.resize(B * size_t(hp_.n_ff));
  scores_.resize(size_t(pool_.size()) * size_t(n_ctx_));
}

CpuTransformer::~CpuTransformer() = default;

void CpuTransformer::truncate(int n_past) {
  if (n_past < 0)
    throw Error(name_ + ": truncate(" + std::to_string(n_past) + "): negative length");
  n_past_ = std::min(n_past_, n_past);
}

void CpuTransformer::forward(std::span<const int32_t> tokens, float* logits, bool all_logits,
                             const FaultSpec& fault) {
  const int64_t n = int64_t(tokens.size());
  layer_fault_ = fault.kind == FaultSpec::LayerCorrupt ? &fault : nullptr;
  const int64_t pos_begin = n_past_;
  for (int64_t done = 0; done < n; done += max_batch_) {
    const int64_t b = std::min<int64_t>(max_batch_, n - done);
    const bool last_batch = done + b == n;
    if (all_logits) {
      forward_batch(tokens.data() + done, b, pos_begin + done, logits + done * hp_.n_vocab, true);
    } else {
      forward_batch(tokens.data() + done, b, pos_begin + done, last_batch ? logits : nullptr,
                    false);
    }
  }
  n_past_ = int(pos_begin + n);
}

// One batch of n <= max_batch tokens at positions pos0 .. pos0+n-1. logits: n rows (all_logits),
// the last token's row, or nullptr for none.
void CpuTransformer::forward_batch(const int32_t* tokens, int64_t n, int64_t pos0, float* logits,
                                   bool all_logits) {
  const int64_t E = hp_.n_embd;
  const int64_t F = hp_.n_ff;
  float* x = x_.data();
  float* xb = xb_.data();
  float* xb2 = xb2_.data();
  CpuKernels& mm = *kernels_;

  // Token embedding.
  for (int64_t t = 0; t < n; ++t)
    dequantize_row(model_.tok_embd.type, model_.tok_embd.row(tokens[t]), x + t * E, E);

  for (int64_t l = 0; l < hp_.n_layer; ++l) {
    const LayerWeights& W = model_.layers[size_t(l)];
    const LayerVectors& V = layer_vectors_[size_t(l)];

    // Attention block: x += wo(attention(rope(wq xn), rope(wk xn), wv xn)).
    pool_.parallel_for(n, [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t)
        cpu_ref::rmsnorm(xb + t * E, x + t * E, V.attn_norm.data(), E, hp_.rms_eps);
    });
    attention_layer(l, n, pos0);
    mm.set_input(att_.data(), n, q_dim_);
    mm.multiply({{xb2, &W.wo}}, pool_);
    for (int64_t t = 0; t < n; ++t) cpu_ref::residual_add(x + t * E, xb2 + t * E, E);
    observe(l, "attn_out", n, pos0);

    // Feed-forward block: x += down(silu(gate xn) * up xn).
    pool_.parallel_for(n, [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t)
        cpu_ref::rmsnorm(xb + t * E, x + t * E, V.ffn_norm.data(), E, hp_.rms_eps);
    });
    mm.set_input(xb, n, E);
    mm.multiply({{hb_.data(), &W.ffn_gate}, {hb2_.data(), &W.ffn_up}}, pool_);
    pool_.parallel_for(n, [&](int64_t b, int64_t e) {
      mm.swiglu(hb_.data() + b * F, hb2_.data() + b * F, (e - b) * F);
    });
    mm.set_input(hb_.data(), n, F);
    mm.multiply({{xb2, &W.ffn_down}}, pool_);
    for (int64_t t = 0; t < n; ++t) cpu_ref::residual_add(x + t * E, xb2 + t * E, E);
    if (layer_fault_ && layer_fault_->layer == l) corrupt_layer_output(l, n, pos0);
    observe(l, "ffn_out", n, pos0);
  }

  if (logits) {
    if (all_logits) {
      compute_logits(0, n, logits);
    } else {
      compute_logits(n - 1, 1, logits);
    }
  }
}

// Q/K/V projections, RoPE, the KV cache write and attention, into att_.
void CpuTransformer::attention_layer(int64_t l, int64_t n, int64_t pos0) {
  const LayerWeights& W = model_.layers[size_t(l)];
  const LayerVectors& V = layer_vectors_[size_t(l)];
  float* q = q_.data();
  float* k = k_.data();
  float* v = v_.data();
  CpuKernels& mm = *kernels_;
  mm.set_input(xb_.data(), n, hp_.n_embd);
  mm.multiply({{q, &W.wq}, {k, &W.wk}, {v, &W.wv}}, pool_);

  const cpu_ref::RopeParams rope = cpu_ref::rope_params(hp_);
  pool_.parallel_for(n, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      float* qt = q + t * q_dim_;
      float* kt = k + t * kv_dim_;
      if (hp_.has_qkv_bias) {
        cpu_ref::add_bias(qt, V.bq.data(), q_dim_);
        cpu_ref::add_bias(kt, V.bk.data(), kv_dim_);
        cpu_ref::add_bias(v + t * kv_dim_, V.bv.data(), kv_dim_);
      }
      cpu_ref::rope(qt, hp_.n_head, pos0 + t, rope);
      cpu_ref::rope(kt, hp_.n_head_kv, pos0 + t, rope);
    }
  });
  kv_.store(l, pos0, k, v, n);
  attend(l, n, pos0);
}

// Causal attention of the n new queries over the cache: token t sees positions 0 .. pos0 + t.
// One work item per (token, query head).
void CpuTransformer::attend(int64_t l, int64_t n, int64_t pos0) {
  const int64_t hd = hp_.head_dim;
  const int64_t group = hp_.n_head / hp_.n_head_kv;
  const float* q = q_.data();
  float* att = att_.data();
  pool_.parallel_for(n * hp_.n_head, [&](int64_t b, int64_t e, int thread) {
    float* scores = scores_.data() + int64_t(thread) * n_ctx_;
    for (int64_t item = b; item < e; ++item) {
      const int64_t t = item / hp_.n_head;
      const int64_t h = item % hp_.n_head;
      const int64_t kv_offset = (h / group) * hd;
      float* out = att + t * q_dim_ + h * hd;
      const float* qh = q + t * q_dim_ + h * hd;
      const int64_t n_kv = pos0 + t + 1;
      if (kv_.type() == KvType::F32) {
        cpu_ref::attention_head(out, qh, kv_.k_f32(l, 0) + kv_offset, kv_.v_f32(l, 0) + kv_offset,
                                n_kv, hd, kv_dim_, scores);
      } else {
        cpu_fast::attention_head_f16(out, qh, kv_.k_f16(l, 0) + kv_offset,
                                     kv_.v_f16(l, 0) + kv_offset, n_kv, hd, kv_dim_, scores);
      }
    }
  });
}

void CpuTransformer::compute_logits(int64_t first, int64_t n_rows, float* logits) {
  const int64_t E = hp_.n_embd;
  for (int64_t t = first; t < first + n_rows; ++t)
    cpu_ref::rmsnorm(xb_.data() + t * E, x_.data() + t * E, output_norm_.data(), E, hp_.rms_eps);
  kernels_->set_input(xb_.data() + first * E, n_rows, E);
  kernels_->multiply({{logits, &model_.output}}, pool_);
}

void CpuTransformer::observe(int64_t layer, const char* stage, int64_t n, int64_t pos0) const {
  if (!observer_) return;
  const int64_t E = hp_.n_embd;
  for (int64_t t = 0; t < n; ++t)
    observer_->on_hidden(int(layer), stage, int(pos0 + t),
                         std::span<const float>(x_.data() + t * E, size_t(E)));
}

}  // namespace lockstep::cpu
