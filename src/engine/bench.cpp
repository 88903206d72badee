#include "engine/bench.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <nlohmann/json.hpp>
#include <random>

#include "util/error.h"

namespace lockstep {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

std::vector<int32_t> random_tokens(int n, int64_t n_vocab, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (auto& x : t) x = int32_t(rng() % uint64_t(n_vocab));
  return t;
}

// One prompt-processing run: a single batched forward of all tokens. Returns tok/s.
double run_pp(Backend& b, const std::vector<int32_t>& tokens, std::vector<float>& logits) {
  b.truncate(0);
  const auto t0 = Clock::now();
  b.forward(tokens, logits.data(), false);
  return double(tokens.size()) / seconds_since(t0);
}

// One generation run: one forward per token from an empty cache. Returns tok/s.
double run_tg(Backend& b, const std::vector<int32_t>& tokens, std::vector<float>& logits) {
  b.truncate(0);
  const auto t0 = Clock::now();
  for (int32_t t : tokens) b.forward({&t, 1}, logits.data(), false);
  return double(tokens.size()) / seconds_since(t0);
}

std::string fixed(double v, int decimals) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}

std::string human_bytes(uint64_t b) {
  return b >= (uint64_t(1) << 30) ? fixed(double(b) / double(uint64_t(1) << 30), 2) + " GiB"
                                  : fixed(double(b) / double(1 << 20), 2) + " MiB";
}

std::string human_params(int64_t n) {
  return n >= 1000000000 ? fixed(double(n) / 1e9, 2) + " B" : fixed(double(n) / 1e6, 2) + " M";
}

}  // namespace

void summarize_stat(BenchStat& s) {
  if (s.tok_per_s.empty()) return;
  std::vector<double> v = s.tok_per_s;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  s.median = n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
  s.min = v.front();
  s.max = v.back();
  double mean = 0;
  for (double x : v) mean += x / double(n);
  double var = 0;
  for (double x : v) var += (x - mean) * (x - mean);
  s.stddev = n > 1 ? std::sqrt(var / double(n - 1)) : 0;
}

BenchReport run_bench(Backend& backend, const BenchParams& p, const ModelSummary& model,
                      int threads, const std::function<void(const std::string&)>& progress) {
  if (p.n_prompt < 0 || p.n_gen < 0 || p.reps < 1)
    throw InputError("bench: -p and -n must be >= 0 and -r >= 1");
  const int need = std::max(p.n_prompt, p.n_gen);
  if (need > backend.n_ctx())
    throw InputError("bench: a test needs " + std::to_string(need) +
                     " positions but the context is " + std::to_string(backend.n_ctx()) + " (-c)");
  const int64_t n_vocab = backend.model().hp.n_vocab;
  std::vector<float> logits(static_cast<size_t>(n_vocab));

  BenchReport r;
  r.model = model;
  r.backend = backend.name();
  r.threads = threads;
  r.weight_bytes_per_token = weight_bytes_per_token(backend.model());

  // Warm-up (not measured): page the weights in, let the backend size its buffers.
  if (p.n_prompt > 0)
    run_pp(backend, random_tokens(std::min(p.n_prompt, 32), n_vocab, p.seed), logits);
  if (p.n_gen > 0) run_tg(backend, random_tokens(std::min(p.n_gen, 4), n_vocab, p.seed), logits);

  auto measure = [&](const char* kind, int n, auto run_once) {
    BenchStat s;
    s.test = kind + std::to_string(n);
    s.n_tokens = n;
    for (int rep = 0; rep < p.reps; ++rep) {
      const auto tokens = random_tokens(n, n_vocab, p.seed + uint64_t(rep) + 1);
      s.tok_per_s.push_back(run_once(backend, tokens, logits));
      if (progress)
        progress(s.test + " rep " + std::to_string(rep + 1) + "/" + std::to_string(p.reps) + ": " +
                 fixed(s.tok_per_s.back(), 2) + " tok/s");
    }
    summarize_stat(s);
    r.stats.push_back(std::move(s));
  };
  if (p.n_prompt > 0) measure("pp", p.n_prompt, run_pp);
  if (p.n_gen > 0) {
    measure("tg", p.n_gen, run_tg);
    r.gen_gb_per_s = double(r.weight_bytes_per_token) * r.stats.back().median / 1e9;
  }
  backend.truncate(0);
  return r;
}

std::string bench_markdown(const BenchReport& r) {
  std::string out =
      "| model | type | size | params | backend | threads | test | t/s (median) | min | max | "
      "stddev | weights GB/s |\n"
      "| --- | --- | ---: | ---: | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |\n";
  for (const auto& s : r.stats) {
    const bool tg = s.test.rfind("tg", 0) == 0;
    out += "| " + r.model.name + " | " + r.model.file_type + " | " +
           human_bytes(r.model.file_bytes) + " | " + human_params(r.model.n_params) + " | " +
           r.backend + " | " + std::to_string(r.threads) + " | " + s.test + " | " +
           fixed(s.median, 2) + " | " + fixed(s.min, 2) + " | " + fixed(s.max, 2) + " | " +
           fixed(s.stddev, 2) + " | " + (tg ? fixed(r.gen_gb_per_s, 2) : std::string("-")) + " |\n";
  }
  return out;
}

std::string bench_json(const BenchReport& r) {
  nlohmann::ordered_json j;
  j["model"] = {{"path", r.model.path},
                {"name", r.model.name},
                {"architecture", r.model.architecture},
                {"file_type", r.model.file_type},
                {"file_bytes", r.model.file_bytes},
                {"n_params", r.model.n_params}};
  j["backend"] = r.backend;
  j["threads"] = r.threads;
  j["weight_bytes_per_token"] = r.weight_bytes_per_token;
  j["tests"] = nlohmann::ordered_json::array();
  for (const auto& s : r.stats)
    j["tests"].push_back({{"test", s.test},
                          {"n_tokens", s.n_tokens},
                          {"tok_per_s", s.tok_per_s},
                          {"median", s.median},
                          {"min", s.min},
                          {"max", s.max},
                          {"stddev", s.stddev}});
  j["gen_weights_gb_per_s"] = r.gen_gb_per_s;
  return j.dump();
}

}  // namespace lockstep
