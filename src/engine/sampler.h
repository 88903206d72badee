// Turns a row of logits into the next token: repetition penalty, OpenAI's presence and frequency
// penalties, then top-k, top-p, min-p, temperature and a draw from the resulting distribution
// (llama.cpp's default chain and semantics), or the argmax when the temperature is 0.
#pragma once

#include <cstdint>
#include <deque>
#include <random>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

namespace lockstep {

struct SamplingParams {
  float temperature = 0.8f;     // 0: greedy (argmax, lowest id wins a tie)
  int top_k = 40;               // 0: off
  float top_p = 0.95f;          // 1: off
  float min_p = 0.05f;          // 0: off
  float repeat_penalty = 1.0f;  // 1: off
  int repeat_last_n = 64;       // tokens of history the penalty looks at; 0: off
  // OpenAI's penalties, in [-2, 2] (0: off): a token sampled c times so far in this generation
  // (accept_generated) has its logit lowered by c * frequency_penalty + presence_penalty.
  float presence_penalty = 0.0f;
  float frequency_penalty = 0.0f;
  uint64_t seed = 0;
};

// An empty string when the parameters are usable, else one line naming the offending parameter
// by its CLI flag ("--top-p must be in (0, 1], got 1.5").
std::string validate(const SamplingParams& params);

// A uniform double in [0, 1) from the top 53 bits of one mt19937_64 output. Written out here
// rather than std::uniform_real_distribution, whose algorithm differs between standard libraries,
// so a seed gives the same tokens everywhere.
double uniform_01(std::mt19937_64& rng);

// A token id with its logit (after the penalty and temperature so far) and, once a filter needs
// it, its probability within the surviving candidates.
struct TokenCandidate {
  int32_t id;
  float logit;
  float p;
};

// The log-probabilities of one sampled token, from the raw logits the sampler was given (before
// any penalty or temperature): log-softmax computed in float64 over the whole row.
struct TokenLogprobs {
  int32_t token = -1;
  double logprob = 0;
  // The top_n most likely ids with their log-probabilities, most likely first (ties: lower id).
  std::vector<std::pair<int32_t, double>> top;
};

// Log-softmax of `logits` in float64 at `token`, and the `top_n` best ids. -inf logits have
// log-probability -inf. Throws Error for an empty row or a token outside it.
TokenLogprobs token_logprobs(std::span<const float> logits, int32_t token, int top_n);

class Sampler {
 public:
  explicit Sampler(SamplingParams params);

  const SamplingParams& params() const { return params_; }
  // Greedy with no penalty: sample() is greedy_pick of the row (an error for -1), so a backend's
  // own pick can stand in for the row.
  bool plain_greedy() const {
    return params_.temperature <= 0.0f && params_.repeat_penalty == 1.0f &&
           params_.presence_penalty == 0.0f && params_.frequency_penalty == 0.0f;
  }

  // Picks the next token from n_vocab logits. Throws Error when a logit is NaN (a backend fault
  // must never turn into a plausible-looking token). Does not record the token: call accept().
  int32_t sample(std::span<const float> logits);

  // Records a token (prompt or generated) in the history the repetition penalty looks at.
  void accept(int32_t token);
  // A token this sampler produced: accept() plus the count the presence and frequency penalties
  // look at.
  void accept_generated(int32_t token);
  void reset_history() {
    history_.clear();
    generated_counts_.clear();
  }

  // The stages of the chain, public so each can be tested on hand-made inputs. top_k and top_p
  // leave the kept candidates sorted by descending logit (ties: lower id first); min_p keeps the
  // order it finds. Every filter keeps at least one candidate.
  static void apply_repeat_penalty(std::span<float> logits, std::span<const int32_t> last_tokens,
                                   float penalty);
  // logits[id] -= count * frequency + presence, for each (id, count > 0) of `counts`.
  static void apply_openai_penalties(std::span<float> logits,
                                     const std::unordered_map<int32_t, int>& counts, float presence,
                                     float frequency);
  static void top_k(std::vector<TokenCandidate>& cands, int k);
  static void top_p(std::vector<TokenCandidate>& cands, float p);
  static void min_p(std::vector<TokenCandidate>& cands, float p);
  static void softmax(std::vector<TokenCandidate>& cands);  // fills .p; keeps the order
  static int32_t argmax(std::span<const float> logits);     // lowest id wins a tie
  // Draws a candidate with probability proportional to .p, given u uniform in [0, 1).
  static int32_t draw(const std::vector<TokenCandidate>& cands, double u);

 private:
  SamplingParams params_;
  std::mt19937_64 rng_;
  std::deque<int32_t> history_;
  std::unordered_map<int32_t, int> generated_counts_;
  std::vector<float> scratch_logits_;
  std::vector<TokenCandidate> cands_;
};

}  // namespace lockstep
