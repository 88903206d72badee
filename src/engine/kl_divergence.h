// KL divergence of one run's token distributions against a saved base run, with
// llama-perplexity's meaning (`--kl-divergence-base FILE` saves, `--kl-divergence` compares):
// for every scored position, KL(P_base || P_this) in nats, whether both runs rank the same token
// first, and the probability each run gives the text's next token.
//
// The base file ("LSKLBASE", little-endian), written and read only here:
//   char  magic[8] = "LSKLBASE"
//   u32   version (1), n_vocab, n_ctx, n_chunk
//   f32   step: the log-probability quantization step (kLogProbRange / kBelowRange)
//   i32   tokens[n_chunk * n_ctx]: the evaluated chunks as the model saw them (BOS first)
//   per chunk, per scored position j in [n_ctx/2, n_ctx-1) (rows_per_chunk of them):
//     f32 top_logprob     log-probability of the most likely token (<= 0)
//     i32 top_token       that token (ties to the lowest id), kept exactly so that near-ties
//                         lost to quantization cannot change "same top"
//     f32 target_logprob  exact log-probability of the text's next token
//     u16 codes[n_vocab]  log p_i = top_logprob - code * step; kBelowRange: more than
//                         kLogProbRange nats below the top, left out of the KL sum
// 2 bytes per vocabulary entry keep a base of SmolLM2's 49152 tokens at 100 KB per position.
// The quantization error (at most step/2 in log p, 1.8e-4 nats) is made harmless by
// renormalizing the stored distribution before use: KL of a run against its own base is then of
// order step^2, not step.
#pragma once

#include <cstdint>
#include <cstdio>
#include <span>
#include <string>
#include <vector>

namespace lockstep {

inline constexpr double kLogProbRange = 24.0;  // nats below the top kept; e^-24 ~ 4e-11
inline constexpr uint16_t kBelowRange = 65535;
inline constexpr uint32_t kKlBaseVersion = 1;

struct KlBaseHeader {
  uint32_t n_vocab = 0;
  uint32_t n_ctx = 0;
  uint32_t n_chunk = 0;
  float step = 0;
  std::vector<int32_t> tokens;  // n_chunk * n_ctx
  uint32_t first_scored() const { return n_ctx / 2; }
  uint32_t rows_per_chunk() const { return n_ctx - 1 - first_scored(); }
};

// One scored position of the base run.
struct KlBaseRow {
  float top_logprob = 0;
  int32_t top_token = -1;
  float target_logprob = 0;
  std::vector<uint16_t> codes;  // n_vocab
};

// The base row of one position's logits; `target` is the text's next token. Throws Error when
// the logits hold NaN or Inf (a base must never carry them silently).
KlBaseRow make_kl_base_row(std::span<const float> logits, int32_t target);

// This run against the base at one position.
struct TokenKl {
  double kl = 0;                 // KL(P_base || P_this), nats
  double nll_base = 0, nll = 0;  // -log p(target) of the base and of this run
  double p_target_base = 0, p_target = 0;
  bool same_top = false;  // both runs rank the same token first
};

// Compares `logits` with `base` (whose target is `target`). A non-finite logit makes kl NaN.
TokenKl compare_with_kl_base(const KlBaseRow& base, std::span<const float> logits, int32_t target);

// Writes a base file row by row: the header at construction, then exactly
// n_chunk * rows_per_chunk rows; finish() checks the count and closes (throws on I/O failure).
// A writer destroyed before finish() removes the file.
class KlBaseWriter {
 public:
  KlBaseWriter(const std::string& path, uint32_t n_vocab, uint32_t n_ctx, uint32_t n_chunk,
               std::span<const int32_t> tokens);
  ~KlBaseWriter();
  KlBaseWriter(const KlBaseWriter&) = delete;
  KlBaseWriter& operator=(const KlBaseWriter&) = delete;
  void write_row(const KlBaseRow& row);
  void finish();

 private:
  void write_bytes(const void* data, size_t n);
  std::string path_;
  std::FILE* file_ = nullptr;
  uint32_t n_vocab_;
  uint64_t rows_left_;
};

// Reads a base file. open() validates the header (magic, version, sizes, tokens below n_vocab)
// and that the file's length is exactly what the header implies; read_row() validates each row.
// Every problem is an InputError naming the file and what is wrong, in one line.
class KlBaseReader {
 public:
  explicit KlBaseReader(const std::string& path);
  ~KlBaseReader();
  KlBaseReader(const KlBaseReader&) = delete;
  KlBaseReader& operator=(const KlBaseReader&) = delete;
  const KlBaseHeader& header() const { return header_; }
  void read_row(KlBaseRow& row);  // the next row; throws past the last

 private:
  [[noreturn]] void fail(const std::string& what) const;
  void read_bytes(void* data, size_t n, const char* what);
  std::string path_;
  std::FILE* file_ = nullptr;
  KlBaseHeader header_;
  uint64_t rows_left_ = 0;
};

// The statistics llama-perplexity prints after a KL run, accumulated token by token.
class KlStatistics {
 public:
  void add(const TokenKl& t);
  size_t count() const { return kl_.size(); }

  struct MeanWithError {
    double mean = 0, error = 0;  // error: standard error of the mean (0 for fewer than 2)
  };
  MeanWithError kl_mean() const;
  MeanWithError delta_p_mean() const;   // p_target - p_target_base
  MeanWithError delta_p_rms() const;    // sqrt(mean(dp^2)), its error propagated from dp^2's
  MeanWithError same_top() const;       // fraction of positions, binomial error
  MeanWithError log_ppl_ratio() const;  // mean of nll - nll_base = ln(PPL(this)/PPL(base))
  double ppl() const;
  double ppl_base() const;
  double nll_correlation() const;  // Pearson correlation of nll and nll_base per position
  // The q-quantile (q in [0,1]) of the KL values / of dp, linear between order statistics.
  double kl_quantile(double q) const;
  double delta_p_quantile(double q) const;

  // The report, as lines for stdout.
  std::string report() const;

 private:
  std::vector<double> kl_, delta_p_, nll_, nll_base_;
  size_t same_top_ = 0;
};

// The q-quantile of `values` (copied and sorted), linear interpolation between order
// statistics at rank q*(n-1). NaN for an empty set.
double quantile(std::vector<double> values, double q);

}  // namespace lockstep
