// llama-bench style throughput measurement: prompt processing (one batched forward of P tokens)
// and token generation (G single-token forwards from an empty cache), each repeated, reported as
// median and spread of tokens per second, plus the weight bandwidth generation achieves. Like
// llama-bench, every prompt size and every generation length is a test of its own (one row each);
// a run with several thread counts gives one report per count.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "engine/model_source.h"

namespace lockstep {

struct BenchParams {
  std::vector<int> n_prompt = {512};  // one pp test per value; 0: skipped
  std::vector<int> n_gen = {128};     // one tg test per value; 0: skipped
  // llama-bench's -d: the KV cache holds this many tokens before each test (random tokens,
  // prefilled once per depth and not measured); every test runs at every depth.
  std::vector<int> n_depth = {0};
  int reps = 5;
  uint64_t seed = 1;  // the input token ids are random (the values do not change the work)
  // llama-batched-bench mode when not empty (run_batched_bench): for each B, B sequences each
  // with an n_prompt[0]-token prompt, then n_gen[0] decode steps of B tokens.
  std::vector<int> batch;
};

struct BenchStat {
  std::string test;  // "pp512", "tg128", "pp512 @ d4096"
  int n_tokens = 0;
  bool is_gen = false;  // a tg test
  // weight bytes per token x median tok/s, for tg tests (0 for pp)
  double gb_per_s = 0;
  std::vector<double> tok_per_s;  // one per repetition, in run order
  double median = 0, min = 0, max = 0, stddev = 0;
  // Sequences in the test (--batch): n_tokens is per sequence, tok/s counts all of them (prompt
  // tok/s, or the aggregate decode tok/s), and gb_per_s counts the weights once per step.
  int n_seq = 1;
  int n_depth = 0;  // tokens in the cache before the test (-d)
};

struct BenchReport {
  ModelSummary model;
  std::string backend;
  int threads = 0;
  std::vector<BenchStat> stats;  // the pp tests then the tg tests, in the order asked
  uint64_t weight_bytes_per_token = 0;
  // weight_bytes_per_token x median tok/s of the last tg test; 0 when no tg test ran.
  double gen_gb_per_s = 0;
  // What a device-to-device copy reaches on the backend's device (Backend::measured_copy_gb_per_s;
  // 0: not measured), the yardstick for gb_per_s.
  double copy_gb_per_s = 0;
};

// The largest test plus the largest depth, in positions (the context a run needs).
int bench_max_tokens(const BenchParams& params);

// Fills median/min/max/stddev (sample standard deviation) from tok_per_s.
void summarize_stat(BenchStat& stat);

// Runs the tests on `backend` (its cache is cleared before each run). `progress` (may be null)
// receives one line per finished repetition, for stderr.
BenchReport run_bench(Backend& backend, const BenchParams& params, const ModelSummary& model,
                      int threads, const std::function<void(const std::string&)>& progress);

// The positions one sequence of a --batch run needs (n_prompt[0] + n_gen[0]).
int batched_bench_ctx(const BenchParams& params);

// llama-batched-bench's shape (-npp n_prompt[0] -ntg n_gen[0] -npl batch): for each B in
// params.batch, sequences 0..B-1 of `backend` (opened with n_seq >= max B and n_ctx >=
// batched_bench_ctx) each get a random prompt in one forward_batch ("ppP B=b": B*P / seconds),
// then G steps of forward_batch with one token per sequence ("tgG B=b": B*G / seconds, the
// aggregate decode rate). Caches are cleared before each repetition.
BenchReport run_batched_bench(Backend& backend, const BenchParams& params,
                              const ModelSummary& model, int threads,
                              const std::function<void(const std::string&)>& progress);

// The outputs of `lockstep bench -o md|json|csv`, one row per test of every report.
// md: a markdown table like llama-bench's. json: an array of objects, one per row, each with the
// report's fields (model, backend, threads, weight_bytes_per_token, gen_weights_gb_per_s) and the
// test's (test, n_prompt, n_gen, n_tokens, n_seq, tok_per_s, median, min, max, stddev); no
// trailing newline. csv: a header line and one line per row.
std::string bench_markdown(const std::vector<BenchReport>& reports);
std::string bench_json(const std::vector<BenchReport>& reports);
std::string bench_csv(const std::vector<BenchReport>& reports);
inline std::string bench_markdown(const BenchReport& report) {
  return bench_markdown(std::vector<BenchReport>{report});
}

}  // namespace lockstep
