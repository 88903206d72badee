// Hyperparameters of a transformer read from GGUF metadata (`<arch>.*` keys), validated before
// any work starts.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "gguf/gguf_reader.h"

namespace lockstep {

enum class Arch { Llama, Qwen2, Qwen3, Gemma2, Gemma3, Phi3 };
enum class RopeType { Normal, Neox };  // Normal: rotate pairs (2i, 2i+1); Neox: (i, i + d/2)
// The gated feed-forward's activation: down(act(gate x) * up x).
enum class FfnActivation { Silu, GeluTanh };

struct HParams {
  Arch arch = Arch::Llama;
  std::string arch_name;  // "llama", "qwen2", ... as in general.architecture
  int64_t n_vocab = 0;
  int64_t n_embd = 0;
  int64_t n_layer = 0;
  int64_t n_head = 0;
  int64_t n_head_kv = 0;
  int64_t head_dim = 0;  // n_embd / n_head unless the file says otherwise
  int64_t n_ff = 0;
  int64_t n_ctx_train = 0;
  float rms_eps = 1e-5f;
  float rope_freq_base = 10000.0f;
  float rope_freq_scale = 1.0f;  // linear rope scaling: positions are multiplied by this
  // YaRN rope scaling (rope.scaling.type yarn; rope_freq_scale = 1 / factor): pairs that turn
  // fewer than beta_slow times over the original context are interpolated (scaled like linear),
  // those turning more than beta_fast times keep their angle, a linear blend between; cos and sin
  // are multiplied by attn_factor * (1 + 0.1 ln factor). See ops_ref.h rope().
  bool rope_yarn = false;
  int64_t rope_yarn_orig_ctx = 0;  // rope.scaling.original_context_length
  float rope_yarn_beta_fast = 32.0f;
  float rope_yarn_beta_slow = 1.0f;
  float rope_attn_factor = 1.0f;  // rope.scaling.attn_factor
  int64_t rope_dim = 0;           // rotated dimensions per head (usually head_dim)
  RopeType rope_type = RopeType::Normal;
  bool has_qkv_bias = false;     // qwen2
  bool tied_embeddings = false;  // no output.weight: the token embedding is reused
  // phi3 stores q, k and v as one matrix (attn_qkv: q rows, then k, then v) and the FFN's gate
  // and up as one (ffn_up: gate rows, then up); Model binds each part as a view of its rows.
  bool fused_qkv = false;
  bool fused_gate_up = false;

  // What qwen3, gemma2 and gemma3 add to the llama block (each off for llama and qwen2). A
  // backend that does not implement one of them refuses the model: extended_features() names
  // them.
  bool has_rope_freqs = false;  // llama 3.1+: rope_freqs.weight divides pair i's frequency
  bool has_qk_norm = false;     // qwen3, gemma3: RMSNorm over each head of q and of k
  bool has_post_norms = false;  // gemma: RMSNorm of the attention and FFN outputs before the
                                // residual add (post_attention_norm, post_ffw_norm)
  FfnActivation ffn_act = FfnActivation::Silu;  // gemma: GELU (tanh approximation)
  float embd_scale = 1.0f;       // gemma: token embeddings are multiplied by sqrt(n_embd)
  float attn_scale = 0;          // attention score = (q . k) * attn_scale; 0: 1/sqrt(head_dim)
                                 // (gemma 27B: 1/sqrt(n_embd / n_head))
  float attn_softcap = 0;        // gemma2: score = cap * tanh(score / cap); 0: none
  float final_softcap = 0;       // gemma2: logit = cap * tanh(logit / cap); 0: none
  int64_t sliding_window = 0;    // tokens a sliding layer's query sees, itself included; 0: none
  int64_t swa_pattern = 0;       // layer l slides when l % swa_pattern < swa_pattern - 1
                                 // (gemma2: 2, even layers; gemma3: 6, five of every six)
  float rope_freq_base_swa = 0;  // the sliding layers' rope base (gemma3: 10000; else the same)
  float rope_freq_scale_swa = 1.0f;

  // Whether layer l attends over a sliding window of sliding_window positions.
  bool layer_slides(int64_t l) const {
    return sliding_window > 0 && swa_pattern > 0 && l % swa_pattern < swa_pattern - 1;
  }
};

// The features of hp beyond the llama/qwen2 forward pass ("per-head q/k RMS norm", ...), one
// phrase each; empty for a plain llama or qwen2 model. A backend that implements only that pass
// refuses a model for which this is not empty, naming them.
std::vector<std::string> extended_features(const HParams& hp);

// Reads and checks the hyperparameters. Unknown architecture, missing or inconsistent keys,
// unsupported rope scaling and mixture-of-experts files are InputErrors naming the file and key.
HParams read_hparams(const gguf::GgufFile& file);

const char* arch_name(Arch arch);
// Whether general.architecture = `name` is one lockstep runs, and the list for messages
// ("llama, qwen2, qwen3, gemma2, gemma3, phi3").
bool is_supported_architecture(const std::string& name);
const char* supported_architectures();

}  // namespace lockstep
