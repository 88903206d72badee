// llama-bench style throughput measurement: prompt processing (one batched forward of P tokens)
// and token generation (G single-token forwards from an empty cache), each repeated, reported as
// median and spread of tokens per second, plus the weight bandwidth generation achieves.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "engine/model_source.h"

namespace lockstep {

struct BenchParams {
  int n_prompt = 512;  // 0: skip the pp test
  int n_gen = 128;     // 0: skip the tg test
  int reps = 5;
  uint64_t seed = 1;  // the input token ids are random (the values do not change the work)
};

struct BenchStat {
  std::string test;  // "pp512", "tg128"
  int n_tokens = 0;
  std::vector<double> tok_per_s;  // one per repetition, in run order
  double median = 0, min = 0, max = 0, stddev = 0;
};

struct BenchReport {
  ModelSummary model;
  std::string backend;
  int threads = 0;
  std::vector<BenchStat> stats;  // pp then tg, those that ran
  uint64_t weight_bytes_per_token = 0;
  // weight_bytes_per_token x median tg tok/s; 0 when tg did not run.
  double gen_gb_per_s = 0;
};

// Fills median/min/max/stddev (sample standard deviation) from tok_per_s.
void summarize_stat(BenchStat& stat);

// Runs the tests on `backend` (its cache is cleared before each run). `progress` (may be null)
// receives one line per finished repetition, for stderr.
BenchReport run_bench(Backend& backend, const BenchParams& params, const ModelSummary& model,
                      int threads, const std::function<void(const std::string&)>& progress);

std::string bench_markdown(const BenchReport& report);
std::string bench_json(const BenchReport& report);  // one JSON object, no trailing newline

}  // namespace lockstep
