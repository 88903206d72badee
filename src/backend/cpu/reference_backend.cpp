#include "backend/cpu/reference_backend.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <new>

#include "backend/cpu/ops_ref.h"
#include "quant/quantize.h"
#include "util/error.h"

namespace lockstep {

namespace {

std::vector<float> to_floats(const WeightView& w) {
  std::vector<float> out(size_t(w.cols * w.rows));
  for (int64_t r = 0; r < w.rows; ++r)
    dequantize_row(w.type, w.row(r), out.data() + r * w.cols, w.cols);
  return out;
}

// Deterministic pseudo-random numbers for the fault knobs (splitmix64 finaliser).
uint64_t mix(uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
uint64_t hash4(uint64_t a, uint64_t b, uint64_t c, uint64_t d) {
  return mix(mix(mix(mix(a) ^ b) ^ c) ^ d);
}
// Uniform in [-1, 1).
float unit_noise(uint64_t h) {
  return float(double(h >> 40) * (2.0 / double(1ull << 24)) - 1.0);
}

std::string gib(double bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f GiB", bytes / double(1ull << 30));
  return buf;
}

}  // namespace

ReferenceBackend::ReferenceBackend(const Model& model, int n_threads, int n_ctx, int max_batch)
    : model_(model),
      hp_(model.hp),
      q_dim_(model.hp.n_head * model.hp.head_dim),
      kv_dim_(model.hp.n_head_kv * model.hp.head_dim),
      pool_(n_threads) {
  n_ctx_ = n_ctx > 0 ? n_ctx : int(std::min<int64_t>(hp_.n_ctx_train, kMaxContext));
  max_batch_ = std::max(1, std::min(max_batch, n_ctx_));

  const int64_t max_cols = std::max({hp_.n_embd, q_dim_, hp_.n_ff});
  matmul_scratch_ = cpu_ref::MatmulScratch(pool_.size(), max_cols);

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

  // The cache is large (n_layer * n_ctx * kv_dim * 8 bytes) and left uninitialised: pages are
  // only touched when positions are written.
  const double cache_floats = double(hp_.n_layer) * double(n_ctx_) * double(kv_dim_);
  const size_t n_cache = size_t(hp_.n_layer) * size_t(n_ctx_) * size_t(kv_dim_);
  try {
    if (cache_floats > double(std::numeric_limits<size_t>::max() / 8)) throw std::bad_alloc();
    k_cache_ = std::make_unique_for_overwrite<float[]>(n_cache);
    v_cache_ = std::make_unique_for_overwrite<float[]>(n_cache);
  } catch (const std::bad_alloc&) {
    throw Error("cpu-ref: cannot allocate the KV cache (" + gib(cache_floats * 8) + " for n_ctx " +
                std::to_string(n_ctx_) + "); use a smaller context");
  }

  const size_t B = size_t(max_batch_);
  x_.resize(B * size_t(hp_.n_embd));
  xb_.resize(B * size_t(hp_.n_embd));
  xb2_.resize(B * size_t(hp_.n_embd));
  q_.resize(B * size_t(q_dim_));
  att_.resize(B * size_t(q_dim_));
  hb_.resize(B * size_t(hp_.n_ff));
  hb2_.resize(B * size_t(hp_.n_ff));
  scores_.resize(size_t(pool_.size()) * size_t(n_ctx_));
}

ReferenceBackend::~ReferenceBackend() = default;

float* ReferenceBackend::k_cache(int64_t layer, int64_t pos) const {
  return k_cache_.get() + (layer * n_ctx_ + pos) * kv_dim_;
}

float* ReferenceBackend::v_cache(int64_t layer, int64_t pos) const {
  return v_cache_.get() + (layer * n_ctx_ + pos) * kv_dim_;
}

void ReferenceBackend::truncate(int n_past) {
  if (n_past < 0) throw Error("cpu-ref: truncate(" + std::to_string(n_past) + "): negative length");
  n_past_ = std::min(n_past_, n_past);
}

void ReferenceBackend::set_fault(const FaultSpec& fault) {
  if (fault.kind == FaultSpec::LayerCorrupt && (fault.layer < 0 || fault.layer >= hp_.n_layer))
    throw InputError("fault: layer " + std::to_string(fault.layer) + " out of range (model has " +
                     std::to_string(hp_.n_layer) + " layers)");
  if (fault.position < 0)
    throw InputError("fault: position " + std::to_string(fault.position) + " is negative");
  if (!std::isfinite(fault.magnitude)) throw InputError("fault: magnitude must be finite");
  fault_ = fault;
  fault_calls_ = 0;
  fault_nan_done_ = false;
}

void ReferenceBackend::forward(std::span<const int32_t> tokens, float* logits, bool all_logits) {
  const int64_t n = int64_t(tokens.size());
  if (n == 0) throw Error("cpu-ref: forward() called with no tokens");
  for (int64_t i = 0; i < n; ++i)
    if (tokens[size_t(i)] < 0 || tokens[size_t(i)] >= hp_.n_vocab)
      throw InputError("token id " + std::to_string(tokens[size_t(i)]) + " at batch index " +
                       std::to_string(i) + " is outside the vocabulary (n_vocab " +
                       std::to_string(hp_.n_vocab) + ")");
  if (n_past_ + n > n_ctx_)
    throw Error("context overflow: " + std::to_string(n_past_) + " cached + " + std::to_string(n) +
                " new tokens > n_ctx " + std::to_string(n_ctx_));

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

  if (fault_.kind == FaultSpec::KvDrift) drift_kv(pos_begin, pos_begin + n, fault_calls_);
  if (fault_.kind == FaultSpec::NaN) poison_logits(logits, all_logits, pos_begin, pos_begin + n);
  ++fault_calls_;
}

// One batch of n <= max_batch tokens at positions pos0 .. pos0+n-1. logits: n rows (all_logits),
// the last token's row, or nullptr for none.
void ReferenceBackend::forward_batch(const int32_t* tokens, int64_t n, int64_t pos0, float* logits,
                                     bool all_logits) {
  const int64_t E = hp_.n_embd;
  const int64_t F = hp_.n_ff;
  float* x = x_.data();
  float* xb = xb_.data();
  float* xb2 = xb2_.data();

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
    cpu_ref::matmul(xb2, W.wo, att_.data(), n, pool_, matmul_scratch_);
    for (int64_t t = 0; t < n; ++t) cpu_ref::residual_add(x + t * E, xb2 + t * E, E);
    observe(l, "attn_out", n, pos0);

    // Feed-forward block: x += down(silu(gate xn) * up xn).
    pool_.parallel_for(n, [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t)
        cpu_ref::rmsnorm(xb + t * E, x + t * E, V.ffn_norm.data(), E, hp_.rms_eps);
    });
    cpu_ref::matmul(hb_.data(), W.ffn_gate, xb, n, pool_, matmul_scratch_);
    cpu_ref::matmul(hb2_.data(), W.ffn_up, xb, n, pool_, matmul_scratch_);
    pool_.parallel_for(n, [&](int64_t b, int64_t e) {
      cpu_ref::swiglu(hb_.data() + b * F, hb2_.data() + b * F, (e - b) * F);
    });
    cpu_ref::matmul(xb2, W.ffn_down, hb_.data(), n, pool_, matmul_scratch_);
    for (int64_t t = 0; t < n; ++t) cpu_ref::residual_add(x + t * E, xb2 + t * E, E);
    if (fault_.kind == FaultSpec::LayerCorrupt && fault_.layer == l)
      corrupt_layer_output(l, n, pos0);
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

// Q/K/V projections, RoPE, the K/V cache write (the projections write straight into the cache:
// consecutive positions of a layer are consecutive rows there) and attention, into att_.
void ReferenceBackend::attention_layer(int64_t l, int64_t n, int64_t pos0) {
  const LayerWeights& W = model_.layers[size_t(l)];
  const LayerVectors& V = layer_vectors_[size_t(l)];
  float* q = q_.data();
  float* k_new = k_cache(l, pos0);
  float* v_new = v_cache(l, pos0);
  cpu_ref::matmul(q, W.wq, xb_.data(), n, pool_, matmul_scratch_);
  cpu_ref::matmul(k_new, W.wk, xb_.data(), n, pool_, matmul_scratch_);
  cpu_ref::matmul(v_new, W.wv, xb_.data(), n, pool_, matmul_scratch_);

  const cpu_ref::RopeParams rope = cpu_ref::rope_params(hp_);
  pool_.parallel_for(n, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      float* qt = q + t * q_dim_;
      float* kt = k_new + t * kv_dim_;
      if (hp_.has_qkv_bias) {
        cpu_ref::add_bias(qt, V.bq.data(), q_dim_);
        cpu_ref::add_bias(kt, V.bk.data(), kv_dim_);
        cpu_ref::add_bias(v_new + t * kv_dim_, V.bv.data(), kv_dim_);
      }
      cpu_ref::rope(qt, hp_.n_head, pos0 + t, rope);
      cpu_ref::rope(kt, hp_.n_head_kv, pos0 + t, rope);
    }
  });

  // One work item per (token, query head); token t sees positions 0 .. pos0 + t.
  const int64_t hd = hp_.head_dim;
  const int64_t group = hp_.n_head / hp_.n_head_kv;
  const float* k0 = k_cache(l, 0);
  const float* v0 = v_cache(l, 0);
  pool_.parallel_for(n * hp_.n_head, [&](int64_t b, int64_t e, int thread) {
    float* scores = scores_.data() + int64_t(thread) * n_ctx_;
    for (int64_t item = b; item < e; ++item) {
      const int64_t t = item / hp_.n_head;
      const int64_t h = item % hp_.n_head;
      const int64_t kv_offset = (h / group) * hd;
      cpu_ref::attention_head(att_.data() + t * q_dim_ + h * hd, q + t * q_dim_ + h * hd,
                              k0 + kv_offset, v0 + kv_offset, pos0 + t + 1, hd, kv_dim_, scores);
    }
  });
}

void ReferenceBackend::compute_logits(int64_t first, int64_t n_rows, float* logits) {
  const int64_t E = hp_.n_embd;
  for (int64_t t = first; t < first + n_rows; ++t)
    cpu_ref::rmsnorm(xb_.data() + t * E, x_.data() + t * E, output_norm_.data(), E, hp_.rms_eps);
  cpu_ref::matmul(logits, model_.output, xb_.data() + first * E, n_rows, pool_, matmul_scratch_);
}

void ReferenceBackend::observe(int64_t layer, const char* stage, int64_t n, int64_t pos0) const {
  if (!observer_) return;
  const int64_t E = hp_.n_embd;
  for (int64_t t = 0; t < n; ++t)
    observer_->on_hidden(int(layer), stage, int(pos0 + t),
                         std::span<const float>(x_.data() + t * E, size_t(E)));
}

// ---- TEST KNOB (backend/fault.h) ----------------------------------------------------------------

void ReferenceBackend::corrupt_layer_output(int64_t layer, int64_t n, int64_t pos0) {
  const int64_t t = fault_.position - pos0;
  if (t < 0 || t >= n) return;
  float* h = x_.data() + t * hp_.n_embd;
  for (int64_t i = 0; i < hp_.n_embd; ++i) {
    const bool negative = hash4(1, uint64_t(layer), uint64_t(fault_.position), uint64_t(i)) & 1;
    h[i] += negative ? -fault_.magnitude : fault_.magnitude;
  }
}

void ReferenceBackend::drift_kv(int64_t pos_begin, int64_t pos_end, int64_t call) {
  if (call == 0) return;
  const float scale = fault_.magnitude * float(call);
  for (int64_t l = 0; l < hp_.n_layer; ++l) {
    for (int64_t p = pos_begin; p < pos_end; ++p) {
      float* k = k_cache(l, p);
      float* v = v_cache(l, p);
      for (int64_t i = 0; i < kv_dim_; ++i) {
        const uint64_t key = (uint64_t(p) << 32) | uint64_t(i);
        k[i] += scale * unit_noise(hash4(2, uint64_t(l), key, 0));
        v[i] += scale * unit_noise(hash4(2, uint64_t(l), key, 1));
      }
    }
  }
}

void ReferenceBackend::poison_logits(float* logits, bool all_logits, int64_t pos_begin,
                                     int64_t pos_end) {
  if (fault_nan_done_) return;
  // Rows returned: every position (all_logits) or only the last one.
  const int64_t first_row_pos = all_logits ? pos_begin : pos_end - 1;
  const int64_t pos = std::max<int64_t>(first_row_pos, fault_.position);
  if (pos >= pos_end) return;
  float* row = logits + (pos - first_row_pos) * hp_.n_vocab;
  std::fill(row, row + hp_.n_vocab, std::numeric_limits<float>::quiet_NaN());
  fault_nan_done_ = true;
}

}  // namespace lockstep
