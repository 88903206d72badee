// Throughput of the CPU backends, llama-bench style (prompt processing of P tokens in one batch,
// generation of N tokens one at a time from an empty cache), for measuring the fast path while
// `lockstep bench` still serves every CPU request from the reference. The backend is opened
// through ParityGate::open like the engine does (a gated backend cannot compute otherwise); by
// default the gate really runs, --parity off skips it.
//
//   cpu_backend_bench -m /tmp/q05.gguf -p 512 -n 128 -t 2 [-r 5] [--backend cpu|cpu-ref]
//                     [--parity auto|off]
#include <CLI/CLI.hpp>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "engine/bench.h"
#include "engine/model_source.h"
#include "model/model.h"
#include "parity/gate.h"
#include "parity/parity_config.h"
#include "util/error.h"

int main(int argc, char** argv) {
  using namespace lockstep;
  CLI::App app{"CPU backend throughput (pp / tg), through the parity gate"};
  std::string model_path, backend = "cpu", parity = "auto";
  BenchParams params;
  int threads = 0, n_ctx = 0;
  app.add_option("-m,--model", model_path, "GGUF model")->required();
  app.add_option("-p,--n-prompt", params.n_prompt, "prompt tokens (0: skip)");
  app.add_option("-n,--n-gen", params.n_gen, "generated tokens (0: skip)");
  app.add_option("-r,--repetitions", params.reps, "repetitions of each test");
  app.add_option("-t,--threads", threads, "threads (0: physical cores)");
  app.add_option("-c,--ctx-size", n_ctx, "context (0: min(training, 4096))");
  app.add_option("--backend", backend, "cpu | cpu-ref");
  app.add_option("--parity", parity, "auto | off");
  CLI11_PARSE(app, argc, argv);

  try {
    const Model model = Model::load(model_path);
    ParityConfig config;
    config.policy = parse_parity_policy(parity);
    // Probe: fixed pseudo-random token ids (the gate compares logits; the text does not matter).
    std::mt19937_64 rng(7);
    std::vector<int32_t> probe(size_t(config.positions));
    for (auto& t : probe) t = int32_t(rng() % uint64_t(model.hp.n_vocab));
    OpenRequest request;
    request.backend = backend;
    request.options.threads = threads;
    request.options.n_ctx = n_ctx;
    ServingBackend opened = ParityGate::open(model, request, config, probe, false);
    std::fprintf(stderr, "[bench] backend %s, parity %s %s\n", opened.backend_used.c_str(),
                 opened.verdict.status_name(), opened.verdict.summary().c_str());

    const ModelSummary summary = summarize(model, model_path);
    const int used_threads = threads > 0 ? threads : 0;
    BenchReport report = run_bench(
        *opened.backend, params, summary, used_threads,
        [](const std::string& line) { std::fprintf(stderr, "[bench] %s\n", line.c_str()); });
    std::fputs(bench_markdown(report).c_str(), stdout);
  } catch (const Error& e) {
    std::fprintf(stderr, "cpu_backend_bench: %s\n", e.what());
    return e.exit_code();
  }
  return 0;
}
