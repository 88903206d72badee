// `lockstep bench -m MODEL [-p 512] [-n 128] [-r REPS] [-t N] [--backend ...] [--json]`:
// prompt-processing and generation throughput, llama-bench style. The table (or JSON) goes to
// stdout; progress lines go to stderr.
#include <chrono>
#include <cstdio>
#include <memory>

#include "cli/commands.h"
#include "cli/generation_flags.h"
#include "engine/bench.h"
#include "engine/model_source.h"
#include "tokenizer/vocab.h"
#include "util/stdio_files.h"

namespace lockstep::cli {

namespace {

struct BenchFlags {
  ModelFlags model;
  BenchParams params;
  bool json = false;
};

int run_bench_command(const BenchFlags& f) {
  const std::string path = resolve_model_path(f.model.model);
  const auto t0 = std::chrono::steady_clock::now();
  Model model = Model::load(path);
  const auto vocab = tokenizer::Vocab::from_gguf(*model.file);
  const ParityConfig parity = resolve_parity(f.model.parity);
  BackendChoice choice = f.model.choice();
  // The tests need max(pp, tg) positions and the gate its probe; a larger default context would
  // only cost memory.
  if (choice.n_ctx == 0)
    choice.n_ctx =
        std::max({f.params.n_prompt, f.params.n_gen, parity.positions + parity.steps + 1});
  OpenResult opened = open_backend(model, vocab, choice, parity, {});
  auto& backend = opened.backend;
  const double load_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  const ModelSummary summary = summarize(model, path);
  std::fprintf(stderr, "lockstep bench: %s | %s | %s | backend %s | threads %d | load %.0f ms\n",
               path.c_str(), summary.architecture.c_str(), summary.file_type.c_str(),
               describe_backend(opened).c_str(), resolve_threads(choice.threads), load_ms);

  const BenchReport report = run_bench(
      *backend, f.params, summary, resolve_threads(choice.threads),
      [](const std::string& line) { std::fprintf(stderr, "lockstep bench: %s\n", line.c_str()); });
  const std::string out = f.json ? bench_json(report) + "\n" : bench_markdown(report);
  write_stdout(out);
  return 0;
}

}  // namespace

void add_bench(CLI::App& app, Action& action) {
  auto* cmd = app.add_subcommand("bench", "Measure prompt and generation throughput");
  auto f = std::make_shared<BenchFlags>();
  add_model_flags(cmd, f->model);
  cmd->add_option("-p,--n-prompt", f->params.n_prompt, "prompt tokens per pp test (0: skip)")
      ->capture_default_str();
  cmd->add_option("-n,--n-gen", f->params.n_gen, "generated tokens per tg test (0: skip)")
      ->capture_default_str();
  cmd->add_option("-r,--repetitions", f->params.reps, "repetitions of each test")
      ->capture_default_str();
  cmd->add_flag("--json", f->json, "print one JSON object instead of the table");
  cmd->callback([&action, f] {
    check_model_flags(f->model);
    if (f->params.n_prompt < 0) throw CLI::ValidationError("--n-prompt", "must be >= 0");
    if (f->params.n_gen < 0) throw CLI::ValidationError("--n-gen", "must be >= 0");
    if (f->params.n_prompt == 0 && f->params.n_gen == 0)
      throw CLI::ValidationError("--n-prompt/--n-gen", "at least one must be > 0");
    if (f->params.reps < 1) throw CLI::ValidationError("--repetitions", "must be >= 1");
    action = [f] { return run_bench_command(*f); };
  });
}

}  // namespace lockstep::cli
