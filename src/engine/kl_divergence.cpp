#include "engine/kl_divergence.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <limits>

#include "parity/metrics.h"
#include "util/error.h"

namespace lockstep {

namespace {

constexpr char kMagic[8] = {'L', 'S', 'K', 'L', 'B', 'A', 'S', 'E'};
constexpr double kStep = kLogProbRange / double(kBelowRange - 1);
// Limits a reader accepts, far above any real model, so that every size computed from a
// header fits in 64 bits and no hostile header can ask for an absurd allocation.
constexpr uint32_t kMaxVocab = 1u << 24;
constexpr uint32_t kMaxCtx = 1u << 24;
constexpr uint64_t kMaxTokens = 1ull << 31;
constexpr size_t kHeaderBytes = sizeof kMagic + 4 * sizeof(uint32_t) + sizeof(float);

uint64_t row_bytes(uint32_t n_vocab) {
  return sizeof(float) + sizeof(int32_t) + sizeof(float) + uint64_t(n_vocab) * sizeof(uint16_t);
}

// max and log(sum(exp(l - max))) in double; false when a value is not finite.
bool softmax_terms(std::span<const float> logits, double& max, double& log_sum) {
  max = -std::numeric_limits<double>::infinity();
  for (float v : logits) {
    if (!std::isfinite(v)) return false;
    max = std::max(max, double(v));
  }
  double sum = 0;
  for (float v : logits) sum += std::exp(double(v) - max);
  log_sum = std::log(sum);
  return true;
}

}  // namespace

KlBaseRow make_kl_base_row(std::span<const float> logits, int32_t target) {
  double max = 0, log_sum = 0;
  if (logits.empty() || !softmax_terms(logits, max, log_sum))
    throw Error("kl-divergence base: non-finite logits");
  KlBaseRow row;
  row.top_logprob = float(-log_sum);
  row.top_token = argmax(logits);
  row.target_logprob = float(double(logits[size_t(target)]) - max - log_sum);
  row.codes.resize(logits.size());
  for (size_t i = 0; i < logits.size(); ++i) {
    const double below_top = max - double(logits[i]);
    row.codes[i] =
        below_top > kLogProbRange ? kBelowRange : uint16_t(std::lround(below_top / kStep));
  }
  return row;
}

TokenKl compare_with_kl_base(const KlBaseRow& base, std::span<const float> logits, int32_t target) {
  TokenKl t;
  double max = 0, log_sum = 0;
  if (!softmax_terms(logits, max, log_sum)) {
    t.kl = t.nll = std::numeric_limits<double>::quiet_NaN();
    return t;
  }
  // The stored distribution, renormalized over the entries kept (see the header).
  double base_sum = 0;
  for (uint16_t c : base.codes)
    if (c != kBelowRange) base_sum += std::exp(-double(c) * kStep);
  const double base_log_norm = double(base.top_logprob) + std::log(base_sum);
  double kl = 0;
  for (size_t i = 0; i < base.codes.size(); ++i) {
    const uint16_t c = base.codes[i];
    if (c == kBelowRange) continue;
    const double log_p = double(base.top_logprob) - double(c) * kStep - base_log_norm;
    const double log_q = double(logits[i]) - max - log_sum;
    kl += std::exp(log_p) * (log_p - log_q);
  }
  t.kl = kl;
  const double log_q_target = double(logits[size_t(target)]) - max - log_sum;
  t.nll = -log_q_target;
  t.p_target = std::exp(log_q_target);
  t.nll_base = -double(base.target_logprob);
  t.p_target_base = std::exp(double(base.target_logprob));
  t.same_top = argmax(logits) == base.top_token;
  return t;
}

// ---- writer --------------------------------------------------------------------------------

KlBaseWriter::KlBaseWriter(const std::string& path, uint32_t n_vocab, uint32_t n_ctx,
                           uint32_t n_chunk, std::span<const int32_t> tokens)
    : path_(path), n_vocab_(n_vocab) {
  if (tokens.size() != size_t(n_ctx) * n_chunk)
    throw Error("kl-divergence base: token count does not match the chunks");
  file_ = std::fopen(path.c_str(), "wb");
  if (!file_)
    throw InputError(path + ": cannot write the kl-divergence base: " + std::strerror(errno));
  const uint32_t sizes[4] = {kKlBaseVersion, n_vocab, n_ctx, n_chunk};
  const float step = float(kStep);
  write_bytes(kMagic, sizeof kMagic);
  write_bytes(sizes, sizeof sizes);
  write_bytes(&step, sizeof step);
  write_bytes(tokens.data(), tokens.size_bytes());
  const uint32_t first = n_ctx / 2;
  rows_left_ = uint64_t(n_chunk) * (n_ctx - 1 - first);
}

KlBaseWriter::~KlBaseWriter() {
  // Not finished: the run failed midway. A partial base would only be refused later as
  // truncated; better that it never exists.
  if (file_) {
    std::fclose(file_);
    std::remove(path_.c_str());
  }
}

void KlBaseWriter::write_bytes(const void* data, size_t n) {
  if (n && std::fwrite(data, 1, n, file_) != n)
    throw Error(path_ + ": writing the kl-divergence base failed: " + std::strerror(errno));
}

void KlBaseWriter::write_row(const KlBaseRow& row) {
  if (rows_left_ == 0) throw Error("kl-divergence base: more rows than the header declares");
  if (row.codes.size() != n_vocab_) throw Error("kl-divergence base: row of the wrong width");
  write_bytes(&row.top_logprob, sizeof row.top_logprob);
  write_bytes(&row.top_token, sizeof row.top_token);
  write_bytes(&row.target_logprob, sizeof row.target_logprob);
  write_bytes(row.codes.data(), row.codes.size() * sizeof(uint16_t));
  --rows_left_;
}

void KlBaseWriter::finish() {
  if (rows_left_ != 0) throw Error("kl-divergence base: fewer rows than the header declares");
  std::FILE* f = file_;
  file_ = nullptr;
  if (std::fclose(f) != 0)
    throw Error(path_ + ": writing the kl-divergence base failed: " + std::strerror(errno));
}

// ---- reader --------------------------------------------------------------------------------

KlBaseReader::KlBaseReader(const std::string& path) : path_(path) {
  file_ = std::fopen(path.c_str(), "rb");
  if (!file_) fail(std::strerror(errno));
  struct stat st {};
  if (fstat(fileno(file_), &st) != 0) fail(std::strerror(errno));
  if (S_ISDIR(st.st_mode)) fail("is a directory");
  if (!S_ISREG(st.st_mode)) fail("not a regular file");
  const uint64_t file_size = uint64_t(st.st_size);
  if (file_size < kHeaderBytes) fail("too short for a kl-divergence base header");
  char magic[sizeof kMagic];
  read_bytes(magic, sizeof magic, "magic");
  if (std::memcmp(magic, kMagic, sizeof kMagic) != 0)
    fail("not a lockstep kl-divergence base (bad magic)");
  uint32_t sizes[4];
  read_bytes(sizes, sizeof sizes, "header");
  if (sizes[0] != kKlBaseVersion)
    fail("unsupported version " + std::to_string(sizes[0]) + " (this build reads " +
         std::to_string(kKlBaseVersion) + ")");
  header_.n_vocab = sizes[1];
  header_.n_ctx = sizes[2];
  header_.n_chunk = sizes[3];
  read_bytes(&header_.step, sizeof header_.step, "header");
  if (header_.n_vocab < 2 || header_.n_vocab > kMaxVocab)
    fail("vocabulary size " + std::to_string(header_.n_vocab) + " out of range");
  if (header_.n_ctx < 4 || header_.n_ctx > kMaxCtx)
    fail("context " + std::to_string(header_.n_ctx) + " out of range");
  if (header_.n_chunk == 0) fail("no chunks");
  const uint64_t n_tokens = uint64_t(header_.n_ctx) * header_.n_chunk;
  if (n_tokens > kMaxTokens) fail("too many tokens (" + std::to_string(n_tokens) + ")");
  if (header_.step != float(kStep))
    fail("quantization step does not match version " + std::to_string(kKlBaseVersion));
  rows_left_ = uint64_t(header_.n_chunk) * header_.rows_per_chunk();
  const uint64_t expected =
      kHeaderBytes + n_tokens * sizeof(int32_t) + rows_left_ * row_bytes(header_.n_vocab);
  if (file_size != expected)
    fail("is " + std::to_string(file_size) + " bytes, its header implies " +
         std::to_string(expected) + (file_size < expected ? " (truncated)" : ""));
  header_.tokens.resize(size_t(n_tokens));
  read_bytes(header_.tokens.data(), header_.tokens.size() * sizeof(int32_t), "tokens");
  for (size_t i = 0; i < header_.tokens.size(); ++i) {
    if (header_.tokens[i] < 0 || uint32_t(header_.tokens[i]) >= header_.n_vocab)
      fail("token " + std::to_string(i) + " (" + std::to_string(header_.tokens[i]) +
           ") outside the vocabulary");
  }
}

KlBaseReader::~KlBaseReader() {
  if (file_) std::fclose(file_);
}

void KlBaseReader::fail(const std::string& what) const {
  throw InputError(path_ + ": " + what);
}

void KlBaseReader::read_bytes(void* data, size_t n, const char* what) {
  if (std::fread(data, 1, n, file_) != n)
    fail(std::string("cannot read the ") + what + (std::feof(file_) ? " (truncated)" : ""));
}

void KlBaseReader::read_row(KlBaseRow& row) {
  if (rows_left_ == 0) fail("no more rows");
  read_bytes(&row.top_logprob, sizeof row.top_logprob, "row");
  read_bytes(&row.top_token, sizeof row.top_token, "row");
  read_bytes(&row.target_logprob, sizeof row.target_logprob, "row");
  row.codes.resize(header_.n_vocab);
  read_bytes(row.codes.data(), row.codes.size() * sizeof(uint16_t), "row");
  --rows_left_;
  // The most likely token's probability lies in [1/n_vocab, 1]; the target's is at most it.
  const double min_top = -std::log(double(header_.n_vocab)) - 1e-3;
  const bool valid = std::isfinite(row.top_logprob) && row.top_logprob <= 1e-3f &&
                     row.top_logprob >= min_top && row.top_token >= 0 &&
                     uint32_t(row.top_token) < header_.n_vocab &&
                     row.codes[size_t(row.top_token)] == 0 && std::isfinite(row.target_logprob) &&
                     row.target_logprob <= row.top_logprob + 1e-3f;
  if (!valid) {
    const uint64_t total = uint64_t(header_.n_chunk) * header_.rows_per_chunk();
    fail("row " + std::to_string(total - rows_left_ - 1) + " is not a valid distribution");
  }
}

// ---- statistics ----------------------------------------------------------------------------

namespace {

KlStatistics::MeanWithError mean_with_error(const std::vector<double>& v) {
  KlStatistics::MeanWithError m;
  if (v.empty()) return m;
  double sum = 0;
  for (double x : v) sum += x;
  m.mean = sum / double(v.size());
  if (v.size() > 1) {
    double ss = 0;
    for (double x : v) ss += (x - m.mean) * (x - m.mean);
    m.error = std::sqrt(ss / double(v.size() - 1) / double(v.size()));
  }
  return m;
}

}  // namespace

double quantile(std::vector<double> values, double q) {
  if (values.empty()) return std::numeric_limits<double>::quiet_NaN();
  std::sort(values.begin(), values.end());
  const double rank = std::clamp(q, 0.0, 1.0) * double(values.size() - 1);
  const size_t lo = size_t(std::floor(rank));
  const size_t hi = std::min(lo + 1, values.size() - 1);
  return values[lo] + (rank - double(lo)) * (values[hi] - values[lo]);
}

void KlStatistics::add(const TokenKl& t) {
  kl_.push_back(t.kl);
  delta_p_.push_back(t.p_target - t.p_target_base);
  nll_.push_back(t.nll);
  nll_base_.push_back(t.nll_base);
  if (t.same_top) ++same_top_;
}

KlStatistics::MeanWithError KlStatistics::kl_mean() const {
  return mean_with_error(kl_);
}
KlStatistics::MeanWithError KlStatistics::delta_p_mean() const {
  return mean_with_error(delta_p_);
}

KlStatistics::MeanWithError KlStatistics::delta_p_rms() const {
  std::vector<double> squares(delta_p_.size());
  for (size_t i = 0; i < delta_p_.size(); ++i) squares[i] = delta_p_[i] * delta_p_[i];
  const MeanWithError ms = mean_with_error(squares);
  MeanWithError rms;
  rms.mean = std::sqrt(ms.mean);
  rms.error = rms.mean > 0 ? ms.error / (2 * rms.mean) : 0;
  return rms;
}

KlStatistics::MeanWithError KlStatistics::same_top() const {
  MeanWithError m;
  const size_t n = kl_.size();
  if (n == 0) return m;
  m.mean = double(same_top_) / double(n);
  if (n > 1) m.error = std::sqrt(m.mean * (1 - m.mean) / double(n - 1));
  return m;
}

KlStatistics::MeanWithError KlStatistics::log_ppl_ratio() const {
  std::vector<double> d(nll_.size());
  for (size_t i = 0; i < d.size(); ++i) d[i] = nll_[i] - nll_base_[i];
  return mean_with_error(d);
}

double KlStatistics::ppl() const {
  return std::exp(mean_with_error(nll_).mean);
}
double KlStatistics::ppl_base() const {
  return std::exp(mean_with_error(nll_base_).mean);
}

double KlStatistics::nll_correlation() const {
  const double ma = mean_with_error(nll_).mean, mb = mean_with_error(nll_base_).mean;
  double sab = 0, saa = 0, sbb = 0;
  for (size_t i = 0; i < nll_.size(); ++i) {
    const double a = nll_[i] - ma, b = nll_base_[i] - mb;
    sab += a * b;
    saa += a * a;
    sbb += b * b;
  }
  return sab / std::sqrt(saa * sbb);
}

double KlStatistics::kl_quantile(double q) const {
  return quantile(kl_, q);
}
double KlStatistics::delta_p_quantile(double q) const {
  return quantile(delta_p_, q);
}

std::string KlStatistics::report() const {
  std::string out;
  char line[160];
  auto add = [&](const char* fmt, auto... v) {
    std::snprintf(line, sizeof line, fmt, v...);
    out += line;
    out += '\n';
  };
  const MeanWithError ratio = log_ppl_ratio();
  add("====== Perplexity statistics (%zu positions) ======", count());
  add("Mean PPL(Q)                   : %.6f", ppl());
  add("Mean PPL(base)                : %.6f", ppl_base());
  add("Cor(ln(PPL(Q)), ln(PPL(base))): %.4f%%", 100 * nll_correlation());
  add("Mean ln(PPL(Q)/PPL(base))     : %.6g +/- %.6g", ratio.mean, ratio.error);
  add("Mean PPL(Q)/PPL(base)         : %.6g +/- %.6g", std::exp(ratio.mean),
      std::exp(ratio.mean) * ratio.error);
  out += '\n';
  const MeanWithError kl = kl_mean();
  add("====== KL divergence statistics ======");
  add("Mean    KLD: %.6g +/- %.6g", kl.mean, kl.error);
  add("Maximum KLD: %.6g", kl_quantile(1));
  add("99.9%%   KLD: %.6g", kl_quantile(0.999));
  add("99.0%%   KLD: %.6g", kl_quantile(0.99));
  add("Median  KLD: %.6g", kl_quantile(0.5));
  add("10.0%%   KLD: %.6g", kl_quantile(0.1));
  add(" 1.0%%   KLD: %.6g", kl_quantile(0.01));
  add("Minimum KLD: %.6g", kl_quantile(0));
  out += '\n';
  const MeanWithError dp = delta_p_mean(), rms = delta_p_rms(), top = same_top();
  add("====== Token probability statistics ======");
  add("Mean    dp: %.6g +/- %.6g %%", 100 * dp.mean, 100 * dp.error);
  add("Maximum dp: %.6g %%", 100 * delta_p_quantile(1));
  add("99.0%%   dp: %.6g %%", 100 * delta_p_quantile(0.99));
  add("Median  dp: %.6g %%", 100 * delta_p_quantile(0.5));
  add(" 1.0%%   dp: %.6g %%", 100 * delta_p_quantile(0.01));
  add("Minimum dp: %.6g %%", 100 * delta_p_quantile(0));
  add("RMS dp    : %.6g +/- %.6g %%", 100 * rms.mean, 100 * rms.error);
  add("Same top p: %.4f +/- %.4f %%", 100 * top.mean, 100 * top.error);
  return out;
}

}  // namespace lockstep
