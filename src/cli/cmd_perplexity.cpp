// `lockstep perplexity [-m MODEL] -f TEXT [-c 512] [--chunks N] [--backend ...]`: perplexity of
// the model over a text, with llama-perplexity's meaning. The text is tokenized (BOS as the
// vocabulary asks) and cut into non-overlapping chunks of -c tokens (at least two chunks' worth
// is required); each chunk is evaluated from an empty cache with its first token replaced by BOS,
// and only the second half of each chunk is scored (every scored token has at least c/2 tokens
// of context): -log p(token j+1 | chunk[0..j]) for j in [c/2, c-1). PPL = exp(mean), with
// llama-perplexity's +/- estimate. The running estimate after each chunk goes to stderr, the
// final line to stdout.
//
// `--kl-divergence-base FILE` also saves every scored position's distribution to FILE
// (engine/kl_divergence.h); `--kl-divergence-base FILE --kl-divergence` instead evaluates the
// chunks saved in FILE (no -f: the file carries the tokens and -c) and prints the KL divergence,
// token-probability and same-top statistics of this run against the saved one.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <span>
#include <vector>

#include "cli/commands.h"
#include "cli/generation_flags.h"
#include "engine/kl_divergence.h"
#include "tokenizer/vocab.h"
#include "util/error.h"
#include "util/stdio_files.h"

namespace lockstep::cli {

namespace {

constexpr int kDefaultPerplexityContext = 512;

struct PerplexityFlags {
  ModelFlags model;
  std::string file;
  int chunks = -1;          // -1: all
  std::string kl_base;      // --kl-divergence-base
  bool kl_compare = false;  // --kl-divergence
};

// Log-probability of row[target] and the sums behind it, in double.
double negative_log_likelihood(const float* row, int n_vocab, int32_t target) {
  double max = row[0];
  for (int v = 1; v < n_vocab; ++v) max = std::max(max, double(row[v]));
  double sum = 0;
  for (int v = 0; v < n_vocab; ++v) sum += std::exp(double(row[v]) - max);
  return -(double(row[target]) - max - std::log(sum));
}

void check_vocab(const KlBaseHeader& h, int n_vocab, const std::string& path) {
  if (int64_t(h.n_vocab) != n_vocab)
    throw InputError(path + ": the base has a vocabulary of " + std::to_string(h.n_vocab) +
                     " tokens, this model " + std::to_string(n_vocab));
}

int run_kl_divergence(PerplexityFlags f) {
  KlBaseReader base(f.kl_base);
  const KlBaseHeader& h = base.header();
  if (f.model.n_ctx != 0 && f.model.n_ctx != int(h.n_ctx))
    throw InputError("perplexity: -c " + std::to_string(f.model.n_ctx) + " differs from the " +
                     std::to_string(h.n_ctx) + " of the kl-divergence base");
  f.model.n_ctx = int(h.n_ctx);
  LoadedModel m = load_for_generation(f.model, "perplexity", "");
  Backend& backend = *m.serving.backend;
  const int n_vocab = int(m.model->hp.n_vocab);
  check_vocab(h, n_vocab, f.kl_base);
  const int n_ctx = int(h.n_ctx);
  int n_chunk = int(h.n_chunk);
  if (f.chunks >= 0 && f.chunks < n_chunk) n_chunk = f.chunks;
  const int first = int(h.first_scored());
  std::fprintf(stderr, "lockstep perplexity: kl-divergence against %s: %d chunks of %d\n",
               f.kl_base.c_str(), n_chunk, n_ctx);
  std::vector<float> logits(size_t(n_ctx) * size_t(n_vocab));
  KlStatistics stats;
  KlBaseRow row;
  for (int c = 0; c < n_chunk; ++c) {
    const std::vector<int32_t> batch(h.tokens.begin() + long(c) * n_ctx,
                                     h.tokens.begin() + long(c + 1) * n_ctx);
    backend.truncate(0);
    backend.forward(batch, logits.data(), /*all_logits=*/true);
    for (int j = first; j < n_ctx - 1; ++j) {
      base.read_row(row);
      const std::span<const float> here(logits.data() + size_t(j) * size_t(n_vocab),
                                        size_t(n_vocab));
      const TokenKl t = compare_with_kl_base(row, here, batch[size_t(j) + 1]);
      if (!std::isfinite(t.kl) || !std::isfinite(t.nll))
        throw Error("perplexity: non-finite logits in chunk " + std::to_string(c + 1));
      stats.add(t);
    }
    std::fprintf(stderr, "[%d] KLD %.6g%s", c + 1, stats.kl_mean().mean,
                 c + 1 == n_chunk ? "\n" : ", ");
  }
  write_stdout(stats.report());
  return kExitOk;
}

int run_perplexity(PerplexityFlags f) {
  if (f.kl_compare) return run_kl_divergence(f);
  const std::string text = read_whole_file(f.file, f.file + ": cannot read (-f)");
  if (f.model.n_ctx == 0) f.model.n_ctx = kDefaultPerplexityContext;
  const int n_ctx = f.model.n_ctx;
  if (n_ctx < 4) throw InputError("perplexity: -c must be at least 4");
  LoadedModel m = load_for_generation(f.model, "perplexity", "");
  Backend& backend = *m.serving.backend;
  const tokenizer::Vocab& vocab = *m.vocab;
  const auto tokens =
      vocab.tokenize(text, /*add_special=*/vocab.add_bos(), /*parse_special=*/false);
  if (tokens.size() < size_t(2) * size_t(n_ctx))
    throw InputError(f.file + ": tokenizes to " + std::to_string(tokens.size()) +
                     " tokens; perplexity with a context of " + std::to_string(n_ctx) +
                     " needs at least " + std::to_string(2 * n_ctx));
  int n_chunk = int(tokens.size() / size_t(n_ctx));
  if (f.chunks >= 0 && f.chunks < n_chunk) n_chunk = f.chunks;
  const int n_vocab = int(m.model->hp.n_vocab);
  const int first = n_ctx / 2;
  std::fprintf(stderr,
               "lockstep perplexity: %zu tokens, %d chunks of %d, scoring the last %d of each\n",
               tokens.size(), n_chunk, n_ctx, n_ctx - 1 - first);
  std::vector<float> logits(size_t(n_ctx) * size_t(n_vocab));
  std::unique_ptr<KlBaseWriter> kl_base;
  if (!f.kl_base.empty()) {
    std::vector<int32_t> evaluated(tokens.begin(), tokens.begin() + long(n_chunk) * n_ctx);
    if (vocab.add_bos() && vocab.bos() != tokenizer::kNoToken)
      for (int c = 0; c < n_chunk; ++c) evaluated[size_t(c) * size_t(n_ctx)] = vocab.bos();
    kl_base = std::make_unique<KlBaseWriter>(f.kl_base, uint32_t(n_vocab), uint32_t(n_ctx),
                                             uint32_t(n_chunk), evaluated);
  }
  double nll = 0, nll2 = 0;
  long count = 0;
  for (int c = 0; c < n_chunk; ++c) {
    std::vector<int32_t> batch(tokens.begin() + long(c) * n_ctx,
                               tokens.begin() + long(c + 1) * n_ctx);
    if (vocab.add_bos() && vocab.bos() != tokenizer::kNoToken) batch[0] = vocab.bos();
    backend.truncate(0);
    backend.forward(batch, logits.data(), /*all_logits=*/true);
    for (int j = first; j < n_ctx - 1; ++j) {
      const float* row = logits.data() + size_t(j) * size_t(n_vocab);
      const int32_t target = tokens[size_t(c) * size_t(n_ctx) + size_t(j) + 1];
      const double v = negative_log_likelihood(row, n_vocab, target);
      if (!std::isfinite(v))
        throw Error("perplexity: non-finite log-probability in chunk " + std::to_string(c + 1));
      if (kl_base) kl_base->write_row(make_kl_base_row({row, size_t(n_vocab)}, target));
      nll += v;
      nll2 += v * v;
      ++count;
    }
    std::fprintf(stderr, "[%d]%.4f%s", c + 1, std::exp(nll / double(count)),
                 c + 1 == n_chunk ? "\n" : ",");
  }
  if (kl_base) {
    kl_base->finish();
    std::fprintf(stderr, "lockstep perplexity: kl-divergence base saved to %s\n",
                 f.kl_base.c_str());
  }
  const double mean = nll / double(count);
  const double ppl = std::exp(mean);
  const double var = nll2 / double(count) - mean * mean;
  char line[160];
  if (var > 0 && count > 1) {
    std::snprintf(line, sizeof line, "Final estimate: PPL = %.4f +/- %.5f\n", ppl,
                  std::sqrt(var / double(count - 1)) * ppl);
  } else {
    std::snprintf(line, sizeof line, "Final estimate: PPL = %.4f\n", ppl);
  }
  write_stdout(line);
  return kExitOk;
}

}  // namespace

void add_perplexity(CLI::App& app, Action& action) {
  auto* cmd = app.add_subcommand("perplexity",
                                 "Perplexity of a model over a text file (llama-perplexity's)");
  auto f = std::make_shared<PerplexityFlags>();
  add_model_flags(cmd, f->model);
  auto* file = cmd->add_option("-f,--file", f->file, "Text file")->check(non_empty_path());
  cmd->add_option("--chunks", f->chunks, "Evaluate at most N chunks (-1: all)");
  cmd->add_option("--kl-divergence-base", f->kl_base,
                  "Save every scored distribution to FILE; with --kl-divergence, compare with it")
      ->check(non_empty_path());
  cmd->add_flag("--kl-divergence", f->kl_compare,
                "Compare this run with the --kl-divergence-base file (KL, same top token)");
  cmd->callback([&action, f, file] {
    check_model_flags(f->model);
    if (f->kl_compare && f->kl_base.empty())
      throw CLI::ValidationError("--kl-divergence", "needs --kl-divergence-base FILE");
    if (f->kl_compare && file->count() > 0)
      throw CLI::ValidationError("-f",
                                 "not used with --kl-divergence: the base file holds the "
                                 "tokens");
    if (!f->kl_compare && file->count() == 0) throw CLI::RequiredError("-f,--file");
    action = [f] { return run_perplexity(*f); };
  });
}

}  // namespace lockstep::cli
