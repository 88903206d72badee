#include "model/hparams.h"

#include <cmath>

#include "util/error.h"

namespace lockstep {

const char* arch_name(Arch arch) {
  return arch == Arch::Qwen2 ? "qwen2" : "llama";
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
  } else {
    throw InputError(f.path() + ": unknown architecture '" + *arch + "' (supported: llama, qwen2)");
  }
  const std::string p = *arch + ".";
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
  if (auto eps = f.get_float(p + "attention.layer_norm_rms_epsilon")) hp.rms_eps = float(*eps);
  if (!(hp.rms_eps > 0 && hp.rms_eps < 1))
    throw InputError(f.path() + ": layer_norm_rms_epsilon out of range");
  if (auto base = f.get_float(p + "rope.freq_base")) hp.rope_freq_base = float(*base);
  if (!(hp.rope_freq_base > 1) || !std::isfinite(hp.rope_freq_base))
    throw InputError(f.path() + ": rope.freq_base out of range");

  // Rope scaling: linear is supported; anything else is refused rather than run wrongly.
  std::string scaling = f.get_string(p + "rope.scaling.type").value_or("none");
  if (scaling == "linear") {
    double factor = f.get_float(p + "rope.scaling.factor").value_or(1.0);
    if (!(factor >= 1.0) || !std::isfinite(factor))
      throw InputError(f.path() + ": rope.scaling.factor must be >= 1");
    hp.rope_freq_scale = float(1.0 / factor);
  } else if (scaling != "none") {
    throw InputError(f.path() + ": rope scaling type '" + scaling +
                     "' is not supported (supported: none, linear)");
  } else if (auto scale = f.get_float(p + "rope.scale_linear")) {
    hp.rope_freq_scale = float(1.0 / *scale);
  }

  // Llama 3.1+ files carry per-dimension rope frequency factors; running without them would give
  // silently wrong output at long range, so refuse until they are implemented.
  if (f.find_tensor("rope_freqs.weight"))
    throw InputError(f.path() +
                     ": tensor 'rope_freqs.weight' (Llama 3.1+ rope frequency "
                     "factors) is not supported");

  // Vocabulary size: the embedding matrix is the authority; the metadata must agree with it.
  const auto* embd = f.find_tensor("token_embd.weight");
  if (!embd) throw InputError(f.path() + ": missing tensor 'token_embd.weight'");
  if (embd->ne.size() != 2) throw InputError(f.path() + ": tensor 'token_embd.weight' must be 2-D");
  hp.n_vocab = embd->ne[1];
  hp.tied_embeddings = f.find_tensor("output.weight") == nullptr;
  return hp;
}

}  // namespace lockstep
