#include "model/hparams.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "util/error.h"

namespace lockstep {

const char* arch_name(Arch arch) {
  switch (arch) {
    case Arch::Llama:
      return "llama";
    case Arch::Qwen2:
      return "qwen2";
    case Arch::Qwen3:
      return "qwen3";
    case Arch::Gemma2:
      return "gemma2";
    case Arch::Gemma3:
      return "gemma3";
    case Arch::Phi3:
      return "phi3";
  }
  return "?";
}

bool is_supported_architecture(const std::string& name) {
  for (Arch a : {Arch::Llama, Arch::Qwen2, Arch::Qwen3, Arch::Gemma2, Arch::Gemma3, Arch::Phi3})
    if (name == arch_name(a)) return true;
  return false;
}

const char* supported_architectures() {
  return "llama, qwen2, qwen3, gemma2, gemma3, phi3";
}

std::vector<std::string> extended_features(const HParams& hp) {
  std::vector<std::string> f;
  if (hp.has_rope_freqs) f.push_back("rope frequency factors (rope_freqs.weight)");
  if (hp.has_qk_norm) f.push_back("per-head q/k RMS norm");
  if (hp.has_post_norms) f.push_back("post-attention and post-FFN norms");
  if (hp.ffn_act != FfnActivation::Silu) f.push_back("GELU-gated feed-forward");
  if (hp.embd_scale != 1.0f) f.push_back("scaled token embeddings");
  if (hp.attn_scale != 0) f.push_back("attention scale other than 1/sqrt(head size)");
  if (hp.attn_softcap > 0) f.push_back("attention logit soft-capping");
  if (hp.final_softcap > 0) f.push_back("final logit soft-capping");
  if (hp.sliding_window > 0) f.push_back("sliding-window attention layers");
  if (hp.fused_qkv || hp.fused_gate_up) f.push_back("fused QKV and gate/up tensors");
  if (hp.rope_yarn) f.push_back("YaRN rope scaling");
  return f;
}

namespace {

int64_t require_positive(const gguf::GgufFile& f, const std::string& key) {
  auto v = f.get_int(key);
  if (!v) throw InputError(f.path() + ": missing metadata key '" + key + "'");
  if (*v <= 0 || *v > (int64_t(1) << 31))
    throw InputError(f.path() + ": metadata key '" + key + "' = " + std::to_string(*v) +
                     " is out of range");
  return *v;
}

std::string number_str(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

// A float key that must be finite and inside [lo, hi] (or (lo, hi] when lo is exclusive); a NaN or
// an infinity would otherwise pass into every rope angle or norm and make the logits garbage.
// Missing: `fallback`.
double float_in_range(const gguf::GgufFile& f, const std::string& key, double fallback, double lo,
                      bool lo_exclusive, double hi) {
  const auto v = f.get_float(key);
  if (!v) return fallback;
  const double x = *v;
  const bool ok =
      std::isfinite(x) && std::isfinite(float(x)) && (lo_exclusive ? x > lo : x >= lo) && x <= hi;
  if (!ok)
    throw InputError(f.path() + ": metadata key '" + key + "' = " + number_str(x) +
                     " is out of range (must be finite and in " + (lo_exclusive ? "(" : "[") +
                     number_str(lo) + ", " + number_str(hi) + "])");
  return x;
}

// Counts that must equal a dimension of some tensor: none can exceed the file's largest
// dimension, and checking that first keeps a hostile count from sizing anything.
void check_fits_tensors(const gguf::GgufFile& f, const std::string& key, int64_t value,
                        int64_t largest_dim) {
  if (value > largest_dim)
    throw InputError(f.path() + ": metadata key '" + key + "' = " + std::to_string(value) +
                     " exceeds every tensor dimension in the file (largest " +
                     std::to_string(largest_dim) + ")");
}

}  // namespace

HParams read_hparams(const gguf::GgufFile& f) {
  HParams hp;
  auto arch = f.get_string("general.architecture");
  if (!arch) throw InputError(f.path() + ": missing metadata key 'general.architecture'");
  hp.arch_name = *arch;
  if (*arch == "llama") {
    hp.arch = Arch::Llama;
    hp.rope_type = RopeType::Normal;
  } else if (*arch == "qwen2") {
    hp.arch = Arch::Qwen2;
    hp.rope_type = RopeType::Neox;
    hp.has_qkv_bias = true;
  } else if (*arch == "qwen3") {
    hp.arch = Arch::Qwen3;
    hp.rope_type = RopeType::Neox;
    hp.has_qk_norm = true;
  } else if (*arch == "gemma2" || *arch == "gemma3") {
    hp.arch = *arch == "gemma2" ? Arch::Gemma2 : Arch::Gemma3;
    hp.rope_type = RopeType::Neox;
    hp.has_post_norms = true;
    hp.has_qk_norm = hp.arch == Arch::Gemma3;
    hp.ffn_act = FfnActivation::GeluTanh;
  } else if (*arch == "phi3") {
    // llama's block with NeoX rope, the gate and up projections in one tensor, and q/k/v in one
    // (converters also write them separately; both are accepted). The sliding window that
    // Phi-3 files declare is ignored, as llama.cpp ignores it.
    hp.arch = Arch::Phi3;
    hp.rope_type = RopeType::Neox;
    hp.fused_gate_up = true;
    hp.fused_qkv = f.find_tensor("blk.0.attn_qkv.weight") != nullptr;
    if (f.find_tensor("rope_factors_long.weight") || f.find_tensor("rope_factors_short.weight"))
      throw InputError(f.path() +
                       ": phi3 LongRoPE (rope_factors_long/short, the 128k-context models) is "
                       "not supported");
  } else {
    throw InputError(f.path() + ": unknown architecture '" + gguf::printable_name(*arch) +
                     "' (supported: " + supported_architectures() + ")");
  }
  const std::string p = *arch + ".";
  // Mixture-of-experts files (Mixtral-style llama, ...) carry routed expert tensors instead of
  // one FFN per layer; say so instead of reporting the missing ffn tensors.
  {
    bool moe = f.get_int(p + "expert_count").value_or(0) > 0;
    for (const auto& t : f.tensors()) {
      const std::string& n = t.name;
      moe = moe || n.find("_exps.") != std::string::npos ||
            n.find("ffn_gate_inp.") != std::string::npos;
    }
    if (moe)
      throw InputError(f.path() + ": mixture-of-experts is not supported (" +
                       gguf::printable_name(*arch) + " file with expert tensors)");
  }
  hp.n_embd = require_positive(f, p + "embedding_length");
  hp.n_layer = require_positive(f, p + "block_count");
  hp.n_ff = require_positive(f, p + "feed_forward_length");
  hp.n_head = require_positive(f, p + "attention.head_count");
  hp.n_head_kv = f.find(p + "attention.head_count_kv")
                     ? require_positive(f, p + "attention.head_count_kv")
                     : hp.n_head;
  hp.n_ctx_train = f.find(p + "context_length") ? require_positive(f, p + "context_length") : 2048;
  if (f.find(p + "attention.key_length")) {
    hp.head_dim = require_positive(f, p + "attention.key_length");
  } else {
    if (hp.n_embd % hp.n_head != 0)
      throw InputError(f.path() + ": embedding_length " + std::to_string(hp.n_embd) +
                       " is not a multiple of head_count " + std::to_string(hp.n_head));
    hp.head_dim = hp.n_embd / hp.n_head;
  }
  if (f.find(p + "attention.value_length") &&
      require_positive(f, p + "attention.value_length") != hp.head_dim)
    throw InputError(f.path() + ": attention.value_length != key_length is not supported");
  if (hp.n_head % hp.n_head_kv != 0)
    throw InputError(f.path() + ": head_count " + std::to_string(hp.n_head) +
                     " is not a multiple of head_count_kv " + std::to_string(hp.n_head_kv));
  if (hp.head_dim % 2 != 0) throw InputError(f.path() + ": head size must be even for RoPE");
  hp.rope_dim = f.find(p + "rope.dimension_count") ? require_positive(f, p + "rope.dimension_count")
                                                   : hp.head_dim;
  if (hp.rope_dim > hp.head_dim || hp.rope_dim % 2 != 0)
    throw InputError(f.path() + ": rope.dimension_count " + std::to_string(hp.rope_dim) +
                     " does not fit head size " + std::to_string(hp.head_dim));
  hp.rms_eps = float(float_in_range(f, p + "attention.layer_norm_rms_epsilon", hp.rms_eps, 0,
                                    /*lo_exclusive=*/true, 0.5));
  hp.rope_freq_base =
      float(float_in_range(f, p + "rope.freq_base", hp.rope_freq_base, 1, true, 1e12));

  // Rope scaling: linear and YaRN are supported; anything else is refused rather than run
  // wrongly. A linear factor divides the positions; real ones are 2 to 32.
  std::string scaling = f.get_string(p + "rope.scaling.type").value_or("none");
  if (scaling == "linear") {
    const double factor = float_in_range(f, p + "rope.scaling.factor", 1.0, 1, false, 1024);
    hp.rope_freq_scale = float(1.0 / factor);
  } else if (scaling == "yarn") {
    // Qwen2.5's long-context setting: factor 4 over an original context of 32768. The original
    // context defaults to the trained one, as in llama.cpp.
    const double factor = float_in_range(f, p + "rope.scaling.factor", 1.0, 1, false, 1024);
    hp.rope_freq_scale = float(1.0 / factor);
    hp.rope_yarn = true;
    hp.rope_yarn_orig_ctx = f.find(p + "rope.scaling.original_context_length")
                                ? require_positive(f, p + "rope.scaling.original_context_length")
                                : hp.n_ctx_train;
    hp.rope_attn_factor =
        float(float_in_range(f, p + "rope.scaling.attn_factor", 1.0, 0, true, 100));
    hp.rope_yarn_beta_fast =
        float(float_in_range(f, p + "rope.scaling.yarn_beta_fast", 32.0, 0, true, 1e6));
    hp.rope_yarn_beta_slow =
        float(float_in_range(f, p + "rope.scaling.yarn_beta_slow", 1.0, 0, true, 1e6));
    if (hp.rope_yarn_beta_slow > hp.rope_yarn_beta_fast)
      throw InputError(f.path() + ": rope.scaling.yarn_beta_slow exceeds yarn_beta_fast");
  } else if (scaling != "none") {
    throw InputError(f.path() + ": rope scaling type '" + gguf::printable_name(scaling) +
                     "' is not supported (supported: none, linear, yarn)");
  } else if (f.find(p + "rope.scale_linear")) {
    const double scale = float_in_range(f, p + "rope.scale_linear", 1.0, 0.001, false, 1024);
    hp.rope_freq_scale = float(1.0 / scale);
  }

  // Llama 3.1+ files carry per-dimension rope frequency factors (Model::load binds and checks
  // the tensor).
  hp.has_rope_freqs = f.find_tensor("rope_freqs.weight") != nullptr;

  // Gemma: scaled embeddings, the attention scale of gemma_pytorch's config (the 27B models,
  // told apart by their layer count as llama.cpp does, scale by n_embd / n_head instead of the
  // head size), sliding-window layers, and gemma2's soft-capping.
  if (hp.arch == Arch::Gemma2 || hp.arch == Arch::Gemma3) {
    hp.embd_scale = std::sqrt(float(hp.n_embd));
    const int64_t layers_27b = hp.arch == Arch::Gemma2 ? 46 : 62;
    if (hp.n_layer == layers_27b)
      hp.attn_scale = float(1.0 / std::sqrt(double(hp.n_embd / hp.n_head)));
    hp.rope_freq_base_swa = hp.rope_freq_base;
    hp.rope_freq_scale_swa = hp.rope_freq_scale;
    if (hp.arch == Arch::Gemma2) {
      // Defaults of the Gemma 2 release, used when a file leaves the keys out.
      hp.swa_pattern = 2;
      hp.sliding_window = f.find(p + "attention.sliding_window")
                              ? require_positive(f, p + "attention.sliding_window")
                              : 4096;
      hp.attn_softcap = float(float_in_range(f, p + "attn_logit_softcapping", 50.0, 0, true, 1e6));
      hp.final_softcap =
          float(float_in_range(f, p + "final_logit_softcapping", 30.0, 0, true, 1e6));
    } else {
      // Five sliding layers (rope base 10000, unscaled) for every global one.
      hp.swa_pattern = 6;
      hp.sliding_window = require_positive(f, p + "attention.sliding_window");
      hp.rope_freq_base_swa = 10000.0f;
      hp.rope_freq_scale_swa = 1.0f;
    }
  }

  // Sliding-window layers keep their own, unscaled rope (gemma3); YaRN is implemented for one rope
  // per model.
  if (hp.rope_yarn && hp.sliding_window > 0)
    throw InputError(f.path() + ": YaRN rope scaling with sliding-window layers is not supported");

  // Vocabulary size: the embedding matrix is the authority; the metadata must agree with it.
  const auto* embd = f.find_tensor("token_embd.weight");
  if (!embd) throw InputError(f.path() + ": missing tensor 'token_embd.weight'");
  if (embd->ne.size() != 2) throw InputError(f.path() + ": tensor 'token_embd.weight' must be 2-D");
  hp.n_vocab = embd->ne[1];
  hp.tied_embeddings = f.find_tensor("output.weight") == nullptr;

  // Counts checked against what the file holds before anything is sized by them (the tensor
  // list of every layer, the backends' buffers): a 1 MB file may not claim 2^31 layers. Every
  // layer has tensors of its own, so the file's tensor count bounds the layer count; a file
  // within that bound but short of some layer's tensors is told which tensors are missing.
  const auto n_tensors = int64_t(f.tensors().size());
  if (hp.n_layer > n_tensors)
    throw InputError(
        f.path() + ": metadata key '" + p + "block_count' = " + std::to_string(hp.n_layer) +
        " is more layers than the file's " + std::to_string(n_tensors) + " tensors can hold");
  int64_t largest_dim = 0;
  for (const auto& t : f.tensors())
    for (int64_t d : t.ne) largest_dim = std::max(largest_dim, d);
  check_fits_tensors(f, p + "embedding_length", hp.n_embd, largest_dim);
  check_fits_tensors(f, p + "feed_forward_length", hp.n_ff, largest_dim);
  check_fits_tensors(f, p + "attention.head_count", hp.n_head, largest_dim);
  check_fits_tensors(f, p + "attention.key_length", hp.head_dim, largest_dim);
  return hp;
}

}  // namespace lockstep
