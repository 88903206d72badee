#include "engine/generator.h"

#include <algorithm>
#include <chrono>
#include <limits>

#include "engine/stop_filter.h"
#include "util/error.h"

namespace lockstep {

namespace {

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

}  // namespace

Session::Session(std::unique_ptr<Backend> backend, const tokenizer::Vocab& vocab,
                 const SamplingParams& sampling)
    : backend_(std::move(backend)), vocab_(vocab), sampler_(sampling) {
  const int64_t n_vocab = backend_->model().hp.n_vocab;
  logits_.resize(size_t(n_vocab));
  cached_.reserve(size_t(backend_->n_ctx()));
  // generate() drops whatever the backend's cache holds beyond what cached_ accounts for.
}

Session::Session(ServingBackend serving, const tokenizer::Vocab& vocab,
                 const SamplingParams& sampling)
    : Session(std::move(serving.backend), vocab, sampling) {
  const auto& prefix = serving.cached_prefix;
  if (prefix.empty()) return;
  if (int(prefix.size()) != backend_->n_past() || serving.prefix_logits.size() != logits_.size())
    throw Error("session: the backend's cache does not hold the gate's probe prefix");
  cached_.assign(prefix.begin(), prefix.end());
  std::copy(serving.prefix_logits.begin(), serving.prefix_logits.end(), logits_.begin());
  have_logits_ = true;
  for (int32_t t : cached_) sampler_.accept(t);
}

GenerationResult Session::complete(std::span<const int32_t> prompt,
                                   const GenerationRequest& request,
                                   const PieceCallback& on_piece) {
  size_t common = 0;
  while (common < prompt.size() && common < cached_.size() && prompt[common] == cached_[common])
    ++common;
  // The logits after the whole prompt are at hand only when the cache ends exactly there;
  // otherwise at least its last token is processed again.
  if (common == prompt.size() && !(common == cached_.size() && have_logits_) && common > 0)
    --common;
  if (common < cached_.size() || !have_logits_) truncate(int(common));
  return generate(prompt.subspan(common), request, on_piece);
}

void Session::truncate(int n) {
  n = std::clamp(n, 0, int(cached_.size()));
  have_logits_ = false;
  backend_->truncate(n);
  cached_.resize(size_t(n));
  sampler_.reset_history();
  for (int32_t t : cached_) sampler_.accept(t);
}

void Session::forward(std::span<const int32_t> tokens) {
  backend_->forward(tokens, logits_.data(), false);
  cached_.insert(cached_.end(), tokens.begin(), tokens.end());
  have_logits_ = true;
}

GenerationResult Session::generate(std::span<const int32_t> prompt,
                                   const GenerationRequest& request,
                                   const PieceCallback& on_piece) {
  if (prompt.empty() && !have_logits_)
    throw InputError("the prompt is empty (no tokens to process)");
  for (int32_t t : prompt)
    if (!vocab_.valid(t) || t >= int64_t(logits_.size()))
      throw InputError("prompt token id " + std::to_string(t) + " is outside the vocabulary");
  const int n_ctx = backend_->n_ctx();
  if (int(cached_.size()) + int(prompt.size()) > n_ctx)
    throw InputError("the prompt needs " + std::to_string(cached_.size() + prompt.size()) +
                     " positions but the context holds " + std::to_string(n_ctx) +
                     " (raise -c or shorten the prompt)");

  GenerationResult result;
  result.timings.load_ms = load_ms_;
  result.timings.prompt_tokens = int(prompt.size());
  const auto t_prompt = Clock::now();
  if (backend_->n_past() != int(cached_.size())) backend_->truncate(int(cached_.size()));
  if (!prompt.empty()) forward(prompt);
  result.timings.prompt_ms = ms_since(t_prompt);
  for (int32_t t : prompt) sampler_.accept(t);

  // Sample only ids the vocabulary can turn into text (a model may pad its output rows).
  const size_t n_sample = std::min(logits_.size(), size_t(vocab_.n_tokens()));
  tokenizer::StreamingDetokenizer detok(vocab_);
  StopFilter stops(request.stop);
  auto emit = [&](const std::string& text) {
    const std::string shown = stops.push(text);
    if (!shown.empty() && on_piece) on_piece(shown);
  };

  const auto t_gen = Clock::now();
  if (request.max_tokens == 0) result.finish_reason = "length";
  while (request.max_tokens != 0) {
    if (request.cancelled && request.cancelled()) {
      result.finish_reason = "cancelled";
      break;
    }
    if (request.ignore_eos)
      for (size_t id = 0; id < n_sample; ++id)
        if (vocab_.is_eog(int32_t(id))) logits_[id] = -std::numeric_limits<float>::infinity();
    const int32_t token = sampler_.sample({logits_.data(), n_sample});
    sampler_.accept_generated(token);
    result.tokens.push_back(token);
    if (vocab_.is_eog(token)) {
      result.finish_reason = "eos";
      break;
    }
    emit(detok.push(token));
    if (stops.stopped()) {
      result.finish_reason = "stop";
      break;
    }
    if (request.max_tokens >= 0 && int(result.tokens.size()) >= request.max_tokens) {
      result.finish_reason = "length";
      break;
    }
    if (int(cached_.size()) >= n_ctx) {
      result.finish_reason = "length";
      result.context_full = true;
      break;
    }
    forward({&token, 1});
  }
  // An incomplete UTF-8 tail becomes U+FFFD rather than being dropped; held-back text that never
  // became a stop string is released.
  if (!stops.stopped()) {
    emit(detok.flush());
    if (!stops.stopped()) {
      const std::string rest = stops.flush();
      if (!rest.empty() && on_piece) on_piece(rest);
    }
    if (stops.stopped()) result.finish_reason = "stop";
  }
  result.text = stops.text();
  result.timings.gen_tokens = int(result.tokens.size());
  result.timings.gen_ms = ms_since(t_gen);
  return result;
}

}  // namespace lockstep
