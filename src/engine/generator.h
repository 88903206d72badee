// A generation session: one backend (which owns the KV cache), the model's vocabulary and a
// sampler. generate() appends a prompt to what the cache already holds, processes it in one
// batched forward, then samples and feeds one token per step until an end-of-generation token,
// the token limit, a stop string or a full context. Text streams out through the UTF-8-safe
// detokenizer and the stop-string filter, so a caller never sees half a character or any part of
// a stop string.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "backend/backend.h"
#include "engine/sampler.h"
#include "parity/gate.h"
#include "tokenizer/vocab.h"

namespace lockstep {

struct GenerationTimings {
  double load_ms = 0;     // model load + backend creation, as set by the session's creator
  int prompt_tokens = 0;  // tokens processed by the prompt forward
  double prompt_ms = 0;
  // Tokens sampled (the first one's logits come from the prompt forward) and the wall time from
  // the end of the prompt forward to the end of generation: sampling + single-token forwards.
  int gen_tokens = 0;
  double gen_ms = 0;

  double prompt_tok_per_s() const { return prompt_ms > 0 ? prompt_tokens * 1e3 / prompt_ms : 0; }
  double gen_tok_per_s() const { return gen_ms > 0 ? gen_tokens * 1e3 / gen_ms : 0; }
};

struct GenerationResult {
  std::string text;             // generated text, without any stop string
  std::vector<int32_t> tokens;  // generated ids, including a final end-of-generation id
  // "eos", "length" (token limit or full context), "stop" or "cancelled"
  std::string finish_reason;
  bool context_full = false;  // "length" because the context ran out, not the limit
  GenerationTimings timings;
};

struct GenerationRequest {
  int max_tokens = -1;  // -1: until end of generation or a full context
  std::vector<std::string> stop;
  // Asked before each token is sampled; true ends the generation there (finish_reason
  // "cancelled"), with the text so far. Lets an interactive caller stop an answer (Ctrl-C).
  std::function<bool()> cancelled;
  // llama.cpp's --ignore-eos: end-of-generation tokens are never sampled (their logits are set to
  // -inf), so only the limit, a stop string or the context ends the answer.
  bool ignore_eos = false;
};

// Receives each piece of text as soon as it is safe to show (valid UTF-8, no stop string part).
using PieceCallback = std::function<void(std::string_view piece)>;

class Session {
 public:
  // The vocabulary must outlive the session; the backend's model is the one it belongs to.
  Session(std::unique_ptr<Backend> backend, const tokenizer::Vocab& vocab,
          const SamplingParams& sampling);
  // Serves from what the parity gate opened, taking over the prompt prefix its probe left in the
  // cache (and the logits after it), so that complete() does not process those tokens again.
  Session(ServingBackend serving, const tokenizer::Vocab& vocab, const SamplingParams& sampling);

  void set_load_ms(double ms) { load_ms_ = ms; }

  // Appends `prompt` (at least one token) to the cache and generates. Throws InputError when the
  // prompt is empty, holds an id outside the vocabulary, or does not fit the context.
  GenerationResult generate(std::span<const int32_t> prompt, const GenerationRequest& request,
                            const PieceCallback& on_piece = nullptr);

  // Generates after `prompt`, the whole context (not an addition to what is cached): the longest
  // prefix it shares with the cache is kept, the rest of the cache dropped, and only the
  // remaining tokens are processed. Throws as generate() does.
  GenerationResult complete(std::span<const int32_t> prompt, const GenerationRequest& request,
                            const PieceCallback& on_piece = nullptr);

  // The ids in the backend's KV cache, in order: every prompt and every generated token that was
  // fed back. The last sampled token of a generation is not among them (it was never fed).
  const std::vector<int32_t>& cached_tokens() const { return cached_; }
  // Drops cached positions >= n (0 clears the cache); the sampler's history is reset.
  void truncate(int n);

  Backend& backend() { return *backend_; }
  const tokenizer::Vocab& vocab() const { return vocab_; }
  const SamplingParams& sampling() const { return sampler_.params(); }

 private:
  void forward(std::span<const int32_t> tokens);

  std::unique_ptr<Backend> backend_;
  const tokenizer::Vocab& vocab_;
  Sampler sampler_;
  std::vector<float> logits_;
  std::vector<int32_t> cached_;
  bool have_logits_ = false;  // logits_ hold the prediction after cached_.back()
  double load_ms_ = 0;
};

}  // namespace lockstep
