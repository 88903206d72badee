// `lockstep bench -m MODEL [-p 512[,N...]] [-n 128[,N...]] [-d 0[,D...]] [-t N[,N...]] [-r REPS]
// [--backend ...] [-o md|json|csv] [--batch B[,B...]]`: prompt-processing and generation
// throughput, llama-bench style. Every -p value and every -n value is a test of its own, measured
// at every -d depth (tokens already in the KV cache) and every -t thread count: one row each. With
// --batch, llama-batched-bench's shape instead: for each B, B sequences with a -p token prompt
// (default 256) each, then -n decode steps (default 128) of all B at once, on a backend opened
// through the gate with max B sequences. The table (or JSON array, or CSV) goes to stdout; progress
// lines go to stderr.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>

#include "cli/commands.h"
#include "cli/generation_flags.h"
#include "engine/bench.h"
#include "engine/model_source.h"
#include "tokenizer/vocab.h"
#include "util/stdio_files.h"
#include "util/thread_pool.h"

namespace lockstep::cli {

namespace {

struct BenchFlags {
  ModelFlags model;
  BenchParams params;
  std::vector<int> threads = {0};
  std::string output = "md";
  bool json = false;
};

int run_bench_command(const BenchFlags& f) {
  print_flag_notes(f.model, "bench");
  const std::string path = resolve_model_path(f.model.model);
  const auto t0 = std::chrono::steady_clock::now();
  Model model = Model::load(path);
  const auto vocab = tokenizer::Vocab::from_gguf(*model.file);
  const ParityConfig parity = resolve_parity(f.model.parity);
  const ModelSummary summary = summarize(model, path);
  warn_ctx_beyond_training("bench", f.model.n_ctx, summary.n_ctx_train);
  std::vector<BenchReport> reports;
  for (int threads : f.threads) {
    OpenRequest request = f.model.request();
    request.options.threads = threads;
    // The tests need the largest of them in positions and the gate its probe; a larger default
    // context would only cost memory.
    const bool batched = !f.params.batch.empty();
    const int need = batched ? batched_bench_ctx(f.params) : bench_max_tokens(f.params);
    if (request.options.n_ctx == 0)
      request.options.n_ctx = std::max(need, parity.positions + parity.steps + 1);
    if (batched)
      request.options.n_seq = *std::max_element(f.params.batch.begin(), f.params.batch.end());
    ServingBackend opened = open_backend(model, vocab, request, parity, {});
    const double load_ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    const int used_threads = resolve_threads(threads);
    std::fprintf(stderr, "lockstep bench: %s | %s | %s | backend %s | threads %d | load %.0f ms\n",
                 path.c_str(), summary.architecture.c_str(), summary.file_type.c_str(),
                 opened.describe().c_str(), used_threads, load_ms);
    auto progress = [](const std::string& line) {
      std::fprintf(stderr, "lockstep bench: %s\n", line.c_str());
    };
    reports.push_back(
        batched ? run_batched_bench(*opened.backend, f.params, summary, used_threads, progress)
                : run_bench(*opened.backend, f.params, summary, used_threads, progress));
  }
  const std::string out = f.output == "json"  ? bench_json(reports) + "\n"
                          : f.output == "csv" ? bench_csv(reports)
                                              : bench_markdown(reports);
  write_stdout(out);
  return 0;
}

}  // namespace

void add_bench(CLI::App& app, Action& action) {
  auto* cmd = app.add_subcommand("bench", "Measure prompt and generation throughput");
  auto f = std::make_shared<BenchFlags>();
  add_model_flags(cmd, f->model);
  add_batch_invariant_flag(cmd, f->model);
  // -t takes a list here, as in llama-bench.
  cmd->remove_option(cmd->get_option("--threads"));
  cmd->add_option("-t,--threads", f->threads,
                  "CPU threads, a comma-separated list: one run per value (0: one per physical "
                  "core)")
      ->delimiter(',')
      ->default_str("0");
  auto* batch = cmd->add_option("--batch", f->params.batch,
                                "llama-batched-bench mode: batch sizes, a comma-separated list "
                                "(B sequences, a -p prompt each, then -n decode steps of all B)")
                    ->delimiter(',');
  auto* n_prompt =
      cmd->add_option("-p,--n-prompt", f->params.n_prompt,
                      "prompt tokens, a comma-separated list: one pp test per value (0: none)")
          ->delimiter(',')
          ->default_str("512");
  auto* n_gen =
      cmd->add_option("-n,--n-gen", f->params.n_gen,
                      "generated tokens, a comma-separated list: one tg test per value (0: none)")
          ->delimiter(',')
          ->default_str("128");
  auto* n_depth =
      cmd->add_option("-d,--n-depth", f->params.n_depth,
                      "tokens in the KV cache before each test, a comma-separated list: every "
                      "test runs at every depth (llama-bench's -d)")
          ->delimiter(',')
          ->default_str("0");
  cmd->add_option("-r,--repetitions", f->params.reps, "repetitions of each test")
      ->capture_default_str();
  auto* output = cmd->add_option("-o,--output", f->output, "output format: md | json | csv")
                     ->capture_default_str();
  cmd->add_flag("--json", f->json, "the same as -o json");
  cmd->callback([&action, f, output, batch, n_prompt, n_gen, n_depth] {
    check_model_flags(f->model);
    for (int t : f->threads)
      if (t < 0 || t > max_thread_count())
        throw CLI::ValidationError("--threads",
                                   std::to_string(t) + " must be in 0.." + max_thread_limit_text());
    if (f->json) {
      if (output->count() > 0 && f->output != "json")
        throw CLI::ValidationError("--json", "conflicts with -o " + f->output);
      f->output = "json";
    }
    if (f->output != "md" && f->output != "json" && f->output != "csv")
      throw CLI::ValidationError("--output", "'" + f->output + "' is not md, json or csv");
    auto any_below = [](const std::vector<int>& v, int min) {
      return std::any_of(v.begin(), v.end(), [min](int n) { return n < min; });
    };
    if (batch->count() > 0) {
      if (n_prompt->count() == 0) f->params.n_prompt = {256};
      if (n_gen->count() == 0) f->params.n_gen = {128};
      if (f->params.n_prompt.size() != 1 || f->params.n_gen.size() != 1)
        throw CLI::ValidationError("--batch", "takes one -p and one -n value");
      if (f->params.n_prompt[0] < 1) throw CLI::ValidationError("--n-prompt", "must be >= 1");
      if (n_depth->count() > 0)
        throw CLI::ValidationError("--n-depth", "is not available with --batch");
      if (any_below(f->params.batch, 1) ||
          *std::max_element(f->params.batch.begin(), f->params.batch.end()) > 256)
        throw CLI::ValidationError("--batch", "sizes must be in [1, 256]");
    }
    if (any_below(f->params.n_prompt, 0)) throw CLI::ValidationError("--n-prompt", "must be >= 0");
    if (any_below(f->params.n_gen, 0)) throw CLI::ValidationError("--n-gen", "must be >= 0");
    if (any_below(f->params.n_depth, 0)) throw CLI::ValidationError("--n-depth", "must be >= 0");
    if (f->params.n_depth.empty()) f->params.n_depth = {0};
    auto max_of = [](const std::vector<int>& v) {
      return v.empty() ? 0 : *std::max_element(v.begin(), v.end());
    };
    if (std::max(max_of(f->params.n_prompt), max_of(f->params.n_gen)) <= 0)
      throw CLI::ValidationError("--n-prompt/--n-gen", "at least one must be > 0");
    if (any_below(f->threads, 0)) throw CLI::ValidationError("--threads", "must be >= 0 (0: all)");
    if (f->params.reps < 1) throw CLI::ValidationError("--repetitions", "must be >= 1");
    action = [f] { return run_bench_command(*f); };
  });
}

}  // namespace lockstep::cli
