#include "engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <unordered_set>

#include "backend/greedy_pick.h"
#include "util/error.h"

namespace lockstep {

namespace {

// Descending logit, lower id first among equal logits: the order every stage keeps.
bool before(const TokenCandidate& a, const TokenCandidate& b) {
  return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
}

// Sorts so that at least the first `k` candidates are the k best, in order.
void sort_prefix(std::vector<TokenCandidate>& cands, size_t k) {
  k = std::min(k, cands.size());
  std::partial_sort(cands.begin(), cands.begin() + ptrdiff_t(k), cands.end(), before);
}

std::string fmt(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

}  // namespace

std::string validate(const SamplingParams& p) {
  if (!std::isfinite(p.temperature) || p.temperature < 0)
    return "--temp must be a finite number >= 0, got " + fmt(p.temperature);
  if (p.top_k < 0) return "--top-k must be >= 0 (0: off), got " + std::to_string(p.top_k);
  if (!(p.top_p > 0 && p.top_p <= 1))
    return "--top-p must be in (0, 1] (1: off), got " + fmt(p.top_p);
  if (!(p.min_p >= 0 && p.min_p <= 1))
    return "--min-p must be in [0, 1] (0: off), got " + fmt(p.min_p);
  if (!std::isfinite(p.repeat_penalty) || p.repeat_penalty <= 0)
    return "--repeat-penalty must be a finite number > 0 (1: off), got " + fmt(p.repeat_penalty);
  if (!(p.presence_penalty >= -2 && p.presence_penalty <= 2))
    return "--presence-penalty must be in [-2, 2] (0: off), got " + fmt(p.presence_penalty);
  if (!(p.frequency_penalty >= -2 && p.frequency_penalty <= 2))
    return "--frequency-penalty must be in [-2, 2] (0: off), got " + fmt(p.frequency_penalty);
  if (p.repeat_last_n < -1)
    return "--repeat-last-n must be >= -1 (-1: whole context, 0: off), got " +
           std::to_string(p.repeat_last_n);
  return {};
}

double uniform_01(std::mt19937_64& rng) {
  return double(rng() >> 11) * 0x1.0p-53;
}

Sampler::Sampler(SamplingParams params) : params_(params), rng_(params.seed) {
  const std::string err = validate(params_);
  if (!err.empty()) throw InputError(err);
}

void Sampler::accept(int32_t token) {
  if (params_.repeat_last_n == 0) return;
  history_.push_back(token);
  if (params_.repeat_last_n > 0 && history_.size() > size_t(params_.repeat_last_n))
    history_.pop_front();
}

void Sampler::accept_generated(int32_t token) {
  accept(token);
  if (params_.presence_penalty != 0.0f || params_.frequency_penalty != 0.0f)
    ++generated_counts_[token];
}

void Sampler::apply_openai_penalties(std::span<float> logits,
                                     const std::unordered_map<int32_t, int>& counts, float presence,
                                     float frequency) {
  for (const auto& [id, count] : counts) {
    if (id < 0 || size_t(id) >= logits.size() || count <= 0) continue;
    logits[size_t(id)] -= float(count) * frequency + presence;
  }
}

TokenLogprobs token_logprobs(std::span<const float> logits, int32_t token, int top_n) {
  if (logits.empty()) throw Error("logprobs: empty logits");
  if (token < 0 || size_t(token) >= logits.size())
    throw Error("logprobs: token " + std::to_string(token) + " outside the row of " +
                std::to_string(logits.size()));
  double max_logit = -INFINITY;
  for (float l : logits) max_logit = std::max(max_logit, double(l));
  double sum = 0;
  for (float l : logits) sum += std::exp(double(l) - max_logit);
  const double log_z = max_logit + std::log(sum);
  TokenLogprobs out;
  out.token = token;
  out.logprob = double(logits[size_t(token)]) - log_z;
  const size_t k = std::min(size_t(std::max(top_n, 0)), logits.size());
  if (k > 0) {
    std::vector<int32_t> ids(logits.size());
    for (size_t i = 0; i < ids.size(); ++i) ids[i] = int32_t(i);
    std::partial_sort(ids.begin(), ids.begin() + ptrdiff_t(k), ids.end(),
                      [&](int32_t a, int32_t b) {
                        return logits[size_t(a)] > logits[size_t(b)] ||
                               (logits[size_t(a)] == logits[size_t(b)] && a < b);
                      });
    for (size_t i = 0; i < k; ++i)
      out.top.emplace_back(ids[i], double(logits[size_t(ids[i])]) - log_z);
  }
  return out;
}

void Sampler::apply_repeat_penalty(std::span<float> logits, std::span<const int32_t> last_tokens,
                                   float penalty) {
  if (penalty == 1.0f) return;
  // Each distinct token is penalised once, however often it occurred (llama.cpp semantics).
  std::unordered_set<int32_t> seen;
  for (int32_t t : last_tokens) {
    if (t < 0 || size_t(t) >= logits.size() || !seen.insert(t).second) continue;
    float& l = logits[size_t(t)];
    l = l <= 0 ? l * penalty : l / penalty;
  }
}

int32_t Sampler::argmax(std::span<const float> logits) {
  return row_argmax(logits);
}

void Sampler::top_k(std::vector<TokenCandidate>& cands, int k) {
  if (k <= 0) return;
  if (size_t(k) >= cands.size()) {
    sort_prefix(cands, cands.size());
    return;
  }
  // nth_element then sorting the head is O(n + k log k), unlike a full sort.
  std::nth_element(cands.begin(), cands.begin() + (k - 1), cands.end(), before);
  cands.resize(size_t(k));
  std::sort(cands.begin(), cands.end(), before);
}

void Sampler::softmax(std::vector<TokenCandidate>& cands) {
  if (cands.empty()) return;
  float max_logit = cands[0].logit;
  for (const auto& c : cands) max_logit = std::max(max_logit, c.logit);
  double sum = 0;
  for (auto& c : cands) {
    c.p = std::exp(c.logit - max_logit);
    sum += c.p;
  }
  for (auto& c : cands) c.p = float(c.p / sum);
}

void Sampler::top_p(std::vector<TokenCandidate>& cands, float p) {
  if (p >= 1.0f || cands.size() <= 1) return;
  // Probabilities over all candidates, but sort only as far as the kept mass needs: grow the
  // sorted prefix until it holds p of the mass (usually a few hundred of 150k tokens).
  float max_logit = cands[0].logit;
  for (const auto& c : cands) max_logit = std::max(max_logit, c.logit);
  double sum = 0;
  for (auto& c : cands) {
    c.p = std::exp(c.logit - max_logit);
    sum += c.p;
  }
  for (auto& c : cands) c.p = float(c.p / sum);
  size_t sorted = 0;
  size_t want = std::min<size_t>(256, cands.size());
  double cum = 0;
  for (;;) {
    if (want > sorted) {
      std::partial_sort(cands.begin() + ptrdiff_t(sorted), cands.begin() + ptrdiff_t(want),
                        cands.end(), before);
    }
    for (; sorted < want; ++sorted) {
      cum += cands[sorted].p;
      if (cum >= p) {  // the smallest prefix whose mass reaches p
        cands.resize(sorted + 1);
        return;
      }
    }
    if (want == cands.size()) return;  // rounding kept the total just under p: keep all
    want = std::min(cands.size(), want * 4);
  }
}

void Sampler::min_p(std::vector<TokenCandidate>& cands, float p) {
  if (p <= 0.0f || cands.empty()) return;
  // p_i >= p * p_max  <=>  logit_i >= logit_max + log(p); no softmax needed.
  float max_logit = cands[0].logit;
  for (const auto& c : cands) max_logit = std::max(max_logit, c.logit);
  const float threshold = max_logit + std::log(p);
  std::erase_if(cands, [&](const TokenCandidate& c) { return c.logit < threshold; });
}

int32_t Sampler::draw(const std::vector<TokenCandidate>& cands, double u) {
  double total = 0;
  for (const auto& c : cands) total += c.p;
  const double target = u * total;
  double cum = 0;
  for (const auto& c : cands) {
    cum += c.p;
    if (target < cum) return c.id;
  }
  return cands.back().id;  // u * total rounded up to the total
}

int32_t Sampler::sample(std::span<const float> logits) {
  if (logits.empty()) throw Error("sampler: empty logits");
  // -inf is a legitimate mask; NaN or +inf is a fault that must not become a plausible token.
  bool any_finite = false;
  for (size_t i = 0; i < logits.size(); ++i) {
    if (std::isnan(logits[i]) || logits[i] == INFINITY)
      throw Error("sampler: the backend produced a " +
                  std::string(std::isnan(logits[i]) ? "NaN" : "+inf") + " logit (token " +
                  std::to_string(i) + ")");
    any_finite = any_finite || std::isfinite(logits[i]);
  }
  if (!any_finite) throw Error("sampler: every logit is -inf");

  std::span<const float> row = logits;
  const bool repeat = params_.repeat_penalty != 1.0f && !history_.empty();
  const bool openai = !generated_counts_.empty();
  if (repeat || openai) {
    scratch_logits_.assign(logits.begin(), logits.end());
    if (repeat) {
      const std::vector<int32_t> last(history_.begin(), history_.end());
      apply_repeat_penalty(scratch_logits_, last, params_.repeat_penalty);
    }
    if (openai)
      apply_openai_penalties(scratch_logits_, generated_counts_, params_.presence_penalty,
                             params_.frequency_penalty);
    row = scratch_logits_;
  }
  if (params_.temperature <= 0.0f) return argmax(row);

  cands_.resize(row.size());
  for (size_t i = 0; i < row.size(); ++i) cands_[i] = {int32_t(i), row[i], 0.0f};
  if (params_.top_k > 0) top_k(cands_, params_.top_k);
  top_p(cands_, params_.top_p);
  min_p(cands_, params_.min_p);
  for (auto& c : cands_) c.logit /= params_.temperature;
  softmax(cands_);
  return draw(cands_, uniform_01(rng_));
}

}  // namespace lockstep
