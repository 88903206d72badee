#include "model/synthetic.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>

#include "model/synthetic_vocab.h"
#include "quant/quantize.h"
#include "util/error.h"
#include "util/hash.h"

namespace lockstep {

namespace {

uint64_t fnv1a(const std::string& s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ull;
  return h;
}

}  // namespace

uint64_t synthetic_tensor_key(uint64_t seed, const std::string& name) {
  return mix64(mix64(seed + kGoldenGamma) ^ fnv1a(name));
}

// Counter-based, so any element can be produced on its own in any order: one 64-bit hash of
// (key, index), split into four 16-bit uniforms whose sum (Irwin-Hall, n = 4) is rescaled to
// mean 0 and variance 1. That is close to normal (tails end at +-3.46 sigma), costs a couple of
// nanoseconds, and needs no log/sin/cos.
float synthetic_normal(uint64_t key, uint64_t index) {
  const uint64_t h = mix64(key + (index + 1) * kGoldenGamma);
  const uint32_t sum = uint32_t(h & 0xffff) + uint32_t((h >> 16) & 0xffff) +
                       uint32_t((h >> 32) & 0xffff) + uint32_t(h >> 48);
  // Each 16-bit value u stands for the uniform (u + 0.5) / 65536, so the sum of four has mean
  // exactly 2 * 65536 and variance 4 * 65536^2 / 12.
  constexpr float kScale = 1.7320508075688772f / 65536.0f;  // sqrt(12 / 4) / 65536
  return (float(sum) + 2.0f - 131072.0f) * kScale;
}

int64_t SyntheticTensor::rows() const {
  int64_t r = 1;
  for (size_t d = 1; d < ne.size(); ++d) r *= ne[d];
  return r;
}

uint64_t SyntheticTensor::n_bytes() const {
  return *row_bytes(type, ne[0]) * uint64_t(rows());
}

uint64_t SyntheticPlan::tensor_bytes() const {
  uint64_t n = 0;
  for (const auto& t : tensors) n += t.n_bytes();
  return n;
}

bool synthetic_pooled(const SyntheticTensor& t) {
  return !t.ones && t.values.empty() && t.ne[0] % kPoolBlockElems == 0;
}

namespace {

// Which pool block fills block `blk` of row `row`.
uint64_t pool_index(const SyntheticTensor& t, int64_t row, int64_t blk) {
  return mix64(t.key ^ mix64(uint64_t(row) * kGoldenGamma + uint64_t(blk))) & (kPoolBlocks - 1);
}

void pool_block(uint64_t pool_key, uint64_t b, float stddev, float* dst) {
  for (int64_t i = 0; i < kPoolBlockElems; ++i)
    dst[i] = stddev * synthetic_normal(pool_key, b * uint64_t(kPoolBlockElems) + uint64_t(i));
}

}  // namespace

void synthetic_row(const SyntheticTensor& t, int64_t row, float* dst) {
  const int64_t n = t.ne[0];
  if (!t.values.empty()) {
    std::copy_n(t.values.begin() + row * n, n, dst);
  } else if (t.ones) {
    for (int64_t c = 0; c < n; ++c) dst[c] = 1.0f;
  } else if (synthetic_pooled(t)) {
    for (int64_t blk = 0; blk < n / kPoolBlockElems; ++blk)
      pool_block(t.pool_key, pool_index(t, row, blk), t.stddev, dst + blk * kPoolBlockElems);
  } else {
    const uint64_t base = uint64_t(row) * uint64_t(n);
    for (int64_t c = 0; c < n; ++c) dst[c] = t.stddev * synthetic_normal(t.key, base + uint64_t(c));
  }
}

SyntheticPlan plan_synthetic_model(const ModelPreset& preset, std::optional<Arch> arch,
                                   const QuantScheme& quant, uint64_t seed) {
  if (!preset.arch && !arch)
    throw InputError("preset '" + preset.name +
                     "' needs an architecture (--arch qwen2|qwen3|llama|phi3|gemma2|gemma3)");
  if (preset.arch && arch && *preset.arch != *arch)
    throw InputError("preset '" + preset.name + "' is a " + arch_name(*preset.arch) +
                     " model; --arch " + arch_name(*arch) + " does not match");
  SyntheticPlan p;
  p.preset = preset;
  p.quant = quant;
  p.seed = seed;

  HParams& hp = p.hp;
  hp.arch = preset.arch ? *preset.arch : *arch;
  hp.arch_name = arch_name(hp.arch);
  hp.n_vocab = preset.n_vocab;
  hp.n_embd = preset.n_embd;
  hp.n_layer = preset.n_layer;
  hp.n_head = preset.n_head;
  hp.n_head_kv = preset.n_head_kv;
  hp.head_dim = preset.head_dim > 0 ? preset.head_dim : preset.n_embd / preset.n_head;
  hp.n_ff = preset.n_ff;
  hp.n_ctx_train = preset.n_ctx;
  hp.rms_eps = preset.rms_eps;
  hp.rope_freq_base = preset.rope_freq_base;
  hp.rope_dim = hp.head_dim;
  hp.rope_type = hp.arch == Arch::Llama ? RopeType::Normal : RopeType::Neox;
  hp.has_qkv_bias = hp.arch == Arch::Qwen2;
  hp.has_qk_norm = hp.arch == Arch::Qwen3;
  hp.has_rope_freqs = preset.rope_scaling.has_value();
  hp.fused_qkv = hp.fused_gate_up = hp.arch == Arch::Phi3;
  hp.rope_freq_scale = preset.rope_linear_factor > 1 ? 1.0f / preset.rope_linear_factor : 1.0f;
  if (hp.arch == Arch::Gemma2 || hp.arch == Arch::Gemma3) {
    // What read_hparams derives for these files (hparams.cpp).
    const bool g3 = hp.arch == Arch::Gemma3;
    hp.has_post_norms = true;
    hp.has_qk_norm = g3;
    hp.ffn_act = FfnActivation::GeluTanh;
    hp.embd_scale = std::sqrt(float(hp.n_embd));
    hp.swa_pattern = g3 ? 6 : 2;
    hp.sliding_window = preset.sliding_window > 0 ? preset.sliding_window : g3 ? 16 : 4096;
    hp.rope_freq_base_swa = g3 ? 10000.0f : hp.rope_freq_base;
    hp.rope_freq_scale_swa = g3 ? 1.0f : hp.rope_freq_scale;
    if (!g3) hp.attn_softcap = 50.0f, hp.final_softcap = 30.0f;
  }
  hp.tied_embeddings = preset.tied_embeddings;
  if ((preset.head_dim == 0 && preset.n_embd % preset.n_head != 0) ||
      preset.n_head % preset.n_head_kv != 0)
    throw InputError("preset '" + preset.name + "' has inconsistent head counts");

  const int64_t E = hp.n_embd, F = hp.n_ff, L = hp.n_layer;
  const int64_t q_dim = hp.n_head * hp.head_dim, kv_dim = hp.n_head_kv * hp.head_dim;
  // Scales, chosen so activations stay O(1) at any depth with norm weights of 1:
  //  - matrices reading a normalized vector (q, k, v, gate, up) use 1/sqrt(fan_in): unit-variance
  //    outputs, attention scores of order 1;
  //  - matrices writing into the residual stream (attn_output, ffn_down) use
  //    1/sqrt(fan_in * 2 * n_layer), so the 2 * n_layer additions sum to about unit variance;
  //  - token_embd and output use 3/sqrt(n_embd): logits of standard deviation about 3, peaked
  //    enough that greedy decoding has clear winners;
  //  - q/k/v biases are small (0.02).
  const float logit_std = 3.0f / std::sqrt(float(E));
  auto reader_std = [](int64_t fan_in) { return 1.0f / std::sqrt(float(fan_in)); };
  auto writer_std = [L](int64_t fan_in) { return 1.0f / std::sqrt(float(fan_in * 2 * L)); };

  auto add = [&](const std::string& name, std::vector<int64_t> ne, int64_t layer, bool ones,
                 float stddev) {
    SyntheticTensor t;
    t.name = name;
    t.type = llama_cpp_tensor_type(quant, name, ne, layer, L, !hp.tied_embeddings);
    t.ne = std::move(ne);
    t.ones = ones;
    t.stddev = stddev;
    t.key = synthetic_tensor_key(seed, name);
    t.pool_key = synthetic_tensor_key(seed, "lockstep.synthetic.pool");
    t.layer = layer;
    p.tensors.push_back(std::move(t));
  };
  // The order llama.cpp's converter writes: embedding, blocks, final norm, output.
  add("token_embd.weight", {E, hp.n_vocab}, -1, false, logit_std);
  if (preset.rope_scaling) {
    add("rope_freqs.weight", {hp.rope_dim / 2}, -1, false, 0);
    p.tensors.back().values =
        llama3_rope_factors(hp.rope_freq_base, hp.rope_dim, *preset.rope_scaling);
  }
  for (int64_t l = 0; l < L; ++l) {
    const std::string b = "blk." + std::to_string(l) + ".";
    add(b + "attn_norm.weight", {E}, l, true, 0);
    if (hp.fused_qkv) {
      add(b + "attn_qkv.weight", {E, q_dim + 2 * kv_dim}, l, false, reader_std(E));
    } else {
      add(b + "attn_q.weight", {E, q_dim}, l, false, reader_std(E));
      add(b + "attn_k.weight", {E, kv_dim}, l, false, reader_std(E));
      add(b + "attn_v.weight", {E, kv_dim}, l, false, reader_std(E));
    }
    if (hp.has_qkv_bias) {
      add(b + "attn_q.bias", {q_dim}, l, false, 0.02f);
      add(b + "attn_k.bias", {kv_dim}, l, false, 0.02f);
      add(b + "attn_v.bias", {kv_dim}, l, false, 0.02f);
    }
    if (hp.has_qk_norm) {
      add(b + "attn_q_norm.weight", {hp.head_dim}, l, true, 0);
      add(b + "attn_k_norm.weight", {hp.head_dim}, l, true, 0);
    }
    add(b + "attn_output.weight", {q_dim, E}, l, false, writer_std(q_dim));
    if (hp.has_post_norms) add(b + "post_attention_norm.weight", {E}, l, true, 0);
    add(b + "ffn_norm.weight", {E}, l, true, 0);
    if (hp.fused_gate_up) {
      add(b + "ffn_up.weight", {E, 2 * F}, l, false, reader_std(E));
    } else {
      add(b + "ffn_gate.weight", {E, F}, l, false, reader_std(E));
      add(b + "ffn_up.weight", {E, F}, l, false, reader_std(E));
    }
    add(b + "ffn_down.weight", {F, E}, l, false, writer_std(F));
    if (hp.has_post_norms) add(b + "post_ffw_norm.weight", {E}, l, true, 0);
  }
  add("output_norm.weight", {E}, -1, true, 0);
  if (!hp.tied_embeddings) add("output.weight", {E, hp.n_vocab}, -1, false, logit_std);
  return p;
}

gguf::GgufWriter synthetic_writer(const SyntheticPlan& plan) {
  using gguf::Value;
  const HParams& hp = plan.hp;
  const std::string a = hp.arch_name + ".";
  gguf::GgufWriter w;
  auto u32 = [](int64_t v) { return Value::of_u32(uint32_t(v)); };
  w.set("general.architecture", Value::of_string(hp.arch_name));
  w.set("general.type", Value::of_string("model"));
  w.set("general.name", Value::of_string(plan.preset.general_name));
  w.set("general.file_type", Value::of_u32(plan.quant.file_type));
  w.set("general.quantization_version", Value::of_u32(2));
  w.set(a + "vocab_size", u32(hp.n_vocab));
  w.set(a + "context_length", u32(hp.n_ctx_train));
  w.set(a + "embedding_length", u32(hp.n_embd));
  w.set(a + "block_count", u32(hp.n_layer));
  w.set(a + "feed_forward_length", u32(hp.n_ff));
  w.set(a + "attention.head_count", u32(hp.n_head));
  w.set(a + "attention.head_count_kv", u32(hp.n_head_kv));
  w.set(a + "attention.layer_norm_rms_epsilon", Value::of_f32(hp.rms_eps));
  w.set(a + "rope.freq_base", Value::of_f32(hp.rope_freq_base));
  w.set(a + "rope.dimension_count", u32(hp.rope_dim));
  if (hp.rope_yarn) {
    // No preset uses YaRN; tests set it in a plan's hp to get a YaRN file of any shape.
    w.set(a + "rope.scaling.type", Value::of_string("yarn"));
    w.set(a + "rope.scaling.factor", Value::of_f32(1.0f / hp.rope_freq_scale));
    w.set(a + "rope.scaling.original_context_length", u32(hp.rope_yarn_orig_ctx));
  } else if (hp.rope_freq_scale != 1.0f) {
    w.set(a + "rope.scaling.type", Value::of_string("linear"));
    w.set(a + "rope.scaling.factor", Value::of_f32(plan.preset.rope_linear_factor));
  }
  if (hp.sliding_window > 0) w.set(a + "attention.sliding_window", u32(hp.sliding_window));
  if (hp.attn_softcap > 0) {
    w.set(a + "attn_logit_softcapping", Value::of_f32(hp.attn_softcap));
    w.set(a + "final_logit_softcapping", Value::of_f32(hp.final_softcap));
  }
  if (hp.head_dim * hp.n_head != hp.n_embd) {
    w.set(a + "attention.key_length", u32(hp.head_dim));
    w.set(a + "attention.value_length", u32(hp.head_dim));
  }

  const SyntheticVocab v = make_synthetic_vocab(hp.n_vocab);
  w.set("tokenizer.ggml.model", Value::of_string("gpt2"));
  w.set("tokenizer.ggml.pre", Value::of_string(hp.arch == Arch::Llama ? "llama-bpe" : "qwen2"));
  w.set("tokenizer.ggml.tokens", Value::of_strings(v.tokens));
  w.set("tokenizer.ggml.token_type", Value::of_i32s(v.types));
  w.set("tokenizer.ggml.merges", Value::of_strings(v.merges));
  w.set("tokenizer.ggml.bos_token_id", u32(v.endoftext));
  w.set("tokenizer.ggml.eos_token_id", u32(v.im_end));
  w.set("tokenizer.ggml.eot_token_id", u32(v.im_end));
  w.set("tokenizer.ggml.padding_token_id", u32(v.endoftext));
  w.set("tokenizer.ggml.add_bos_token", Value::of_bool(false));
  w.set("tokenizer.chat_template", Value::of_string(kChatMlTemplate));

  // Provenance, so a file can be traced back to the command that made it.
  w.set("lockstep.synthetic.preset", Value::of_string(plan.preset.name));
  w.set("lockstep.synthetic.quant", Value::of_string(plan.quant.name));
  w.set("lockstep.synthetic.seed", Value::of_u64(plan.seed));

  for (const auto& t : plan.tensors) w.add_tensor(t.name, t.type, t.ne);
  return w;
}

namespace {

// Pool blocks quantized to one (type, standard deviation), filled lazily by whichever thread
// first needs a block. A block another thread is still quantizing is quantized again into the
// caller's scratch instead of waiting; the result is the same bytes.
class QuantizedPool {
 public:
  QuantizedPool(TensorType type, float stddev, uint64_t pool_key)
      : type_(type),
        stddev_(stddev),
        pool_key_(pool_key),
        block_bytes_(*row_bytes(type, kPoolBlockElems)),
        bytes_(kPoolBlocks * block_bytes_),
        state_(new std::atomic<uint8_t>[kPoolBlocks]) {
    for (uint64_t b = 0; b < kPoolBlocks; ++b) state_[b].store(kEmpty, std::memory_order_relaxed);
  }

  uint64_t block_bytes() const { return block_bytes_; }

  // The quantized bytes of pool block b (in the pool, or in `scratch`).
  const uint8_t* get(uint64_t b, uint8_t* scratch) {
    uint8_t* slot = bytes_.data() + b * block_bytes_;
    uint8_t s = state_[b].load(std::memory_order_acquire);
    if (s == kReady) return slot;
    float x[kPoolBlockElems];
    pool_block(pool_key_, b, stddev_, x);
    if (s == kEmpty && state_[b].compare_exchange_strong(s, kBusy, std::memory_order_acquire)) {
      quantize_row(type_, x, slot, kPoolBlockElems);
      state_[b].store(kReady, std::memory_order_release);
      return slot;
    }
    quantize_row(type_, x, scratch, kPoolBlockElems);
    return scratch;
  }

 private:
  static constexpr uint8_t kEmpty = 0, kBusy = 1, kReady = 2;
  TensorType type_;
  float stddev_;
  uint64_t pool_key_;
  uint64_t block_bytes_;
  std::vector<uint8_t> bytes_;
  std::unique_ptr<std::atomic<uint8_t>[]> state_;
};

// One pool per (type, standard deviation) that the plan's pooled, quantized tensors use.
class PoolSet {
 public:
  QuantizedPool& get(const SyntheticTensor& t) {
    uint32_t bits;
    std::memcpy(&bits, &t.stddev, 4);
    const uint64_t id = (uint64_t(t.type) << 32) | bits;
    std::lock_guard<std::mutex> lock(mu_);
    auto& p = pools_[id];
    if (!p) p = std::make_unique<QuantizedPool>(t.type, t.stddev, t.pool_key);
    return *p;
  }

 private:
  std::mutex mu_;
  std::map<uint64_t, std::unique_ptr<QuantizedPool>> pools_;
};

// Fills rows [r0, r1) of tensor t into dst in its file type.
void fill_rows(const SyntheticTensor& t, int64_t r0, int64_t r1, uint8_t* dst, PoolSet& pools) {
  const uint64_t rb = *row_bytes(t.type, t.ne[0]);
  if (synthetic_pooled(t) && t.type != TensorType::F32) {
    QuantizedPool& pool = pools.get(t);
    alignas(16) uint8_t scratch[1024];
    const uint64_t bb = pool.block_bytes();
    if (bb > sizeof scratch) throw Error("synthetic: block of " + std::to_string(bb) + " bytes");
    for (int64_t r = r0; r < r1; ++r) {
      uint8_t* out = dst + uint64_t(r - r0) * rb;
      for (int64_t blk = 0; blk < t.ne[0] / kPoolBlockElems; ++blk)
        std::memcpy(out + uint64_t(blk) * bb, pool.get(pool_index(t, r, blk), scratch), bb);
    }
    return;
  }
  thread_local std::vector<float> row;
  row.resize(size_t(t.ne[0]));
  for (int64_t r = r0; r < r1; ++r) {
    synthetic_row(t, r, row.data());
    uint8_t* out = dst + uint64_t(r - r0) * rb;
    if (t.type == TensorType::F32)
      std::memcpy(out, row.data(), rb);
    else
      quantize_row(t.type, row.data(), out, t.ne[0]);
  }
}

}  // namespace

void write_synthetic_model(const SyntheticPlan& plan, const std::string& path, int threads,
                           uint64_t chunk_bytes, const std::function<void(double)>& progress) {
  const gguf::GgufWriter w = synthetic_writer(plan);
  PoolSet pools;
  const double total = double(std::max<uint64_t>(1, plan.tensor_bytes()));
  std::atomic<uint64_t> written{0};
  w.write_rows(
      path,
      [&](size_t k, int64_t r0, int64_t r1, uint8_t* dst) {
        const SyntheticTensor& t = plan.tensors[k];
        fill_rows(t, r0, r1, dst, pools);
        if (progress) {
          const uint64_t rb = row_bytes(t.type, t.ne[0]).value_or(0);
          progress(double(written += uint64_t(r1 - r0) * rb) / total);
        }
      },
      threads, chunk_bytes);
}

std::vector<uint8_t> synthetic_model_bytes(const SyntheticPlan& plan) {
  const gguf::GgufWriter w = synthetic_writer(plan);
  PoolSet pools;
  return w.to_bytes([&](size_t k, uint8_t* dst, uint64_t) {
    fill_rows(plan.tensors[k], 0, plan.tensors[k].rows(), dst, pools);
  });
}

}  // namespace lockstep
