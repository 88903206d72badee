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
  // A decode step of every sequence is one chunk, so each weight is read once per step however
  // many sequences decode together (chunking never changes a result, only the memory traffic).
  max_batch_ = std::max({1, std::min(options.max_batch, n_ctx_), options.n_seq});

  const int64_t max_cols = std::max({hp_.n_embd, q_dim_, hp_.n_ff});
  kernels_->reserve(max_batch_, max_cols, pool_.size());
  for (const LayerWeights& L : model.layers)
    for (const WeightView* w : {&L.wq, &L.wk, &L.wv, &L.wo, &L.ffn_gate, &L.ffn_up, &L.ffn_down})
      kernels_->prepare(*w);
  kernels_->prepare(model.output);

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
    if (hp_.has_qk_norm) {
      V.q_norm = to_floats(L.q_norm);
      V.k_norm = to_floats(L.k_norm);
    }
    if (hp_.has_post_norms) {
      V.post_attn_norm = to_floats(L.post_attn_norm);
      V.post_ffn_norm = to_floats(L.post_ffn_norm);
    }
  }
  output_norm_ = to_floats(model.output_norm);
  if (hp_.has_rope_freqs) rope_freqs_ = rope_freq_factors(model);
  rope_global_ = cpu_ref::rope_params(hp_, /*sliding=*/false);
  rope_sliding_ = cpu_ref::rope_params(hp_, /*sliding=*/true);
  if (!rope_freqs_.empty())
    rope_global_.freq_factors = rope_sliding_.freq_factors = rope_freqs_.data();

  const int n_seq = std::max(1, options.n_seq);
  n_past_.assign(size_t(n_seq), 0);
  kv_ = KvCache(options.kv_type, hp_.n_layer, int64_t(n_seq) * n_ctx_, kv_dim_, name_);
  flat_.reserve(size_t(n_seq) * size_t(n_ctx_));

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
  // Several sequences' output rows are gathered into one product, then copied out.
  if (n_seq > 1) logit_rows_.resize(B * size_t(hp_.n_vocab));
}

CpuTransformer::~CpuTransformer() = default;

void CpuTransformer::truncate(int seq, int n_past) {
  if (n_past < 0)
    throw Error(name_ + ": truncate(" + std::to_string(n_past) + "): negative length");
  int& past = n_past_.at(size_t(seq));
  past = std::min(past, n_past);
}

void CpuTransformer::forward(std::span<const SeqTokens> batch, const FaultSpec& fault) {
  layer_fault_ = fault.kind == FaultSpec::LayerCorrupt ? &fault : nullptr;
  // TEST KNOB: a batch of several sequences corrupts every sequence but the first.
  batch_fault_ = fault.kind == FaultSpec::BatchCorrupt && batch.size() > 1 ? &fault : nullptr;
  batch_first_seq_ = batch.empty() ? 0 : batch[0].seq;
  const size_t V = size_t(hp_.n_vocab);
  flat_.clear();
  for (const SeqTokens& item : batch) {
    const int n = int(item.tokens.size());
    const int pos0 = n_past_[size_t(item.seq)];
    for (int i = 0; i < n; ++i) {
      float* row = !item.logits      ? nullptr
                   : item.all_logits ? item.logits + size_t(i) * V
                                     : (i == n - 1 ? item.logits : nullptr);
      flat_.push_back({item.tokens[size_t(i)], item.seq, pos0 + i, row});
    }
  }
  for (size_t done = 0; done < flat_.size(); done += size_t(max_batch_))
    forward_chunk(flat_.data() + done, std::min<int64_t>(max_batch_, int64_t(flat_.size() - done)));
  for (const SeqTokens& item : batch) n_past_[size_t(item.seq)] += int(item.tokens.size());
}

// One chunk of n <= max_batch tokens, each at its own (sequence, position).
void CpuTransformer::forward_chunk(const TokenSlot* tokens, int64_t n) {
  const int64_t E = hp_.n_embd;
  const int64_t F = hp_.n_ff;
  float* x = x_.data();
  float* xb = xb_.data();
  float* xb2 = xb2_.data();
  CpuKernels& mm = *kernels_;

  // Token embedding (gemma: times sqrt(n_embd)).
  for (int64_t t = 0; t < n; ++t) {
    dequantize_row(model_.tok_embd.type, model_.tok_embd.row(tokens[t].token), x + t * E, E);
    if (hp_.embd_scale != 1.0f)
      for (int64_t i = 0; i < E; ++i) x[t * E + i] *= hp_.embd_scale;
  }

  for (int64_t l = 0; l < hp_.n_layer; ++l) {
    const LayerWeights& W = model_.layers[size_t(l)];
    const LayerVectors& V = layer_vectors_[size_t(l)];

    // Attention block: x += wo(attention(rope(wq xn), rope(wk xn), wv xn)).
    pool_.parallel_for(n, [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t)
        cpu_ref::rmsnorm(xb + t * E, x + t * E, V.attn_norm.data(), E, hp_.rms_eps);
    });
    attention_layer(l, tokens, n);
    mm.set_input(att_.data(), n, q_dim_);
    mm.multiply({{xb2, &W.wo}}, pool_);
    if (hp_.has_post_norms) post_norm(xb2, V.post_attn_norm.data(), n);
    for (int64_t t = 0; t < n; ++t) cpu_ref::residual_add(x + t * E, xb2 + t * E, E);
    observe(l, "attn_out", tokens, n);

    // Feed-forward block: x += down(act(gate xn) * up xn), act SiLU (SwiGLU) or GELU (GeGLU).
    pool_.parallel_for(n, [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t)
        cpu_ref::rmsnorm(xb + t * E, x + t * E, V.ffn_norm.data(), E, hp_.rms_eps);
    });
    mm.set_input(xb, n, E);
    mm.multiply({{hb_.data(), &W.ffn_gate}, {hb2_.data(), &W.ffn_up}}, pool_);
    pool_.parallel_for(n, [&](int64_t b, int64_t e) {
      if (hp_.ffn_act == FfnActivation::GeluTanh)
        mm.geglu(hb_.data() + b * F, hb2_.data() + b * F, (e - b) * F);
      else
        mm.swiglu(hb_.data() + b * F, hb2_.data() + b * F, (e - b) * F);
    });
    mm.set_input(hb_.data(), n, F);
    mm.multiply({{xb2, &W.ffn_down}}, pool_);
    if (hp_.has_post_norms) post_norm(xb2, V.post_ffn_norm.data(), n);
    for (int64_t t = 0; t < n; ++t) cpu_ref::residual_add(x + t * E, xb2 + t * E, E);
    if (layer_fault_ && layer_fault_->layer == l) corrupt_layer_output(l, tokens, n);
    if (batch_fault_ && batch_fault_->layer == l) corrupt_batched_sequences(l, tokens, n);
    observe(l, "ffn_out", tokens, n);
  }
  compute_logits(tokens, n);
}

// Q/K/V projections, RoPE, the KV cache write and attention, into att_.
void CpuTransformer::attention_layer(int64_t l, const TokenSlot* tokens, int64_t n) {
  const LayerWeights& W = model_.layers[size_t(l)];
  const LayerVectors& V = layer_vectors_[size_t(l)];
  float* q = q_.data();
  float* k = k_.data();
  float* v = v_.data();
  CpuKernels& mm = *kernels_;
  mm.set_input(xb_.data(), n, hp_.n_embd);
  mm.multiply({{q, &W.wq}, {k, &W.wk}, {v, &W.wv}}, pool_);

  const cpu_ref::RopeParams& rope = hp_.layer_slides(l) ? rope_sliding_ : rope_global_;
  const int64_t hd = hp_.head_dim;
  pool_.parallel_for(n, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      float* qt = q + t * q_dim_;
      float* kt = k + t * kv_dim_;
      if (hp_.has_qkv_bias) {
        cpu_ref::add_bias(qt, V.bq.data(), q_dim_);
        cpu_ref::add_bias(kt, V.bk.data(), kv_dim_);
        cpu_ref::add_bias(v + t * kv_dim_, V.bv.data(), kv_dim_);
      }
      if (hp_.has_qk_norm) {
        for (int64_t h = 0; h < hp_.n_head; ++h)
          cpu_ref::rmsnorm(qt + h * hd, qt + h * hd, V.q_norm.data(), hd, hp_.rms_eps);
        for (int64_t h = 0; h < hp_.n_head_kv; ++h)
          cpu_ref::rmsnorm(kt + h * hd, kt + h * hd, V.k_norm.data(), hd, hp_.rms_eps);
      }
      cpu_ref::rope(qt, hp_.n_head, tokens[t].pos, rope);
      cpu_ref::rope(kt, hp_.n_head_kv, tokens[t].pos, rope);
    }
  });
  // Runs of consecutive positions of one sequence are stored together.
  for (int64_t t = 0; t < n;) {
    int64_t run = 1;
    while (t + run < n && tokens[t + run].seq == tokens[t].seq &&
           tokens[t + run].pos == tokens[t].pos + run)
      ++run;
    kv_.store(l, seq_row(tokens[t].seq) + tokens[t].pos, k + t * kv_dim_, v + t * kv_dim_, run);
    t += run;
  }
  attend(l, tokens, n);
}

// Causal attention of the n new queries over the cache: a token at position p of sequence s sees
// positions 0 .. p of s (in a sliding layer only the last sliding_window of them). One work item
// per (token, query head).
void CpuTransformer::attend(int64_t l, const TokenSlot* tokens, int64_t n) {
  const int64_t hd = hp_.head_dim;
  const int64_t group = hp_.n_head / hp_.n_head_kv;
  const int64_t window = hp_.layer_slides(l) ? hp_.sliding_window : 0;
  const AttentionScoring scoring{hp_.attn_scale, hp_.attn_softcap};
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
      const int64_t first = window > 0 ? std::max<int64_t>(0, tokens[t].pos + 1 - window) : 0;
      const int64_t n_kv = tokens[t].pos + 1 - first;
      const int64_t row0 = seq_row(tokens[t].seq) + first;
      if (kv_.type() == KvType::F32) {
        cpu_ref::attention_head(out, qh, kv_.k_f32(l, row0) + kv_offset,
                                kv_.v_f32(l, row0) + kv_offset, n_kv, hd, kv_dim_, scores, scoring);
      } else {
        cpu_fast::attention_head_f16(out, qh, kv_.k_f16(l, row0) + kv_offset,
                                     kv_.v_f16(l, row0) + kv_offset, n_kv, hd, kv_dim_, scores,
                                     scoring);
      }
    }
  });
}

// The output rows the chunk's tokens ask for. One sequence's rows are consecutive in the chunk
// and in its output, so they are computed in place; rows of several sequences are gathered into
// one product (the weights read once) and copied out.
void CpuTransformer::compute_logits(const TokenSlot* tokens, int64_t n) {
  const int64_t E = hp_.n_embd;
  const size_t V = size_t(hp_.n_vocab);
  int64_t first = -1, n_rows = 0;
  bool in_place = true;
  for (int64_t t = 0; t < n; ++t) {
    if (!tokens[t].logits) continue;
    if (first < 0) first = t;
    // In place only when every wanted row follows the previous one, in the chunk and in memory.
    in_place = in_place && t == first + n_rows &&
               tokens[t].logits == tokens[first].logits + size_t(n_rows) * V;
    // Normalise into xb_ row n_rows: gathered at the front, in order.
    cpu_ref::rmsnorm(xb_.data() + n_rows * E, x_.data() + t * E, output_norm_.data(), E,
                     hp_.rms_eps);
    ++n_rows;
  }
  if (n_rows == 0) return;
  kernels_->set_input(xb_.data(), n_rows, E);
  if (in_place) {
    kernels_->multiply({{tokens[first].logits, &model_.output}}, pool_);
    if (hp_.final_softcap > 0)
      cpu_ref::softcap(tokens[first].logits, n_rows * int64_t(V), hp_.final_softcap);
    return;
  }
  if (logit_rows_.size() < size_t(n_rows) * V)
    throw Error(name_ + ": output rows of several sequences need n_seq > 1");
  kernels_->multiply({{logit_rows_.data(), &model_.output}}, pool_);
  if (hp_.final_softcap > 0)
    cpu_ref::softcap(logit_rows_.data(), n_rows * int64_t(V), hp_.final_softcap);
  int64_t r = 0;
  for (int64_t t = 0; t < n; ++t)
    if (tokens[t].logits) std::copy_n(logit_rows_.data() + size_t(r++) * V, V, tokens[t].logits);
}

// Gemma's norms of a block's output before the residual add: rows of xb2 in place.
void CpuTransformer::post_norm(float* rows, const float* weight, int64_t n) {
  const int64_t E = hp_.n_embd;
  pool_.parallel_for(n, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t)
      cpu_ref::rmsnorm(rows + t * E, rows + t * E, weight, E, hp_.rms_eps);
  });
}

void CpuTransformer::observe(int64_t layer, const char* stage, const TokenSlot* tokens,
                             int64_t n) const {
  if (!observer_) return;
  const int64_t E = hp_.n_embd;
  for (int64_t t = 0; t < n; ++t)
    observer_->on_hidden(int(layer), stage, tokens[t].pos,
                         std::span<const float>(x_.data() + t * E, size_t(E)));
}

}  // namespace lockstep::cpu
