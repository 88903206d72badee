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

// Leaves exactly `depth` positions in the cache: the ones there already when it holds that many
// (a test only appends after them, so truncating restores the same context), else `depth` random
// tokens prefilled in chunks (not measured; chunks keep the prefill's scratch at its usual size).
void set_depth(Backend& b, int depth, int64_t n_vocab, uint64_t seed, std::vector<float>& logits) {
  if (b.n_past() >= depth) {
    b.truncate(depth);
    return;
  }
  b.truncate(0);
  const auto tokens = random_tokens(depth, n_vocab, seed ^ 0xde9711ULL);
  constexpr int kChunk = 512;
  for (int i = 0; i < depth; i += kChunk) {
    const int n = std::min(kChunk, depth - i);
    b.forward({tokens.data() + i, size_t(n)}, logits.data(), false);
  }
}

// One prompt-processing run: a single batched forward of all tokens after `depth` cached ones.
// Returns tok/s.
double run_pp(Backend& b, int depth, const std::vector<int32_t>& tokens,
              std::vector<float>& logits) {
  set_depth(b, depth, b.model().hp.n_vocab, 0, logits);
  const auto t0 = Clock::now();
  b.forward(tokens, logits.data(), false);
  return double(tokens.size()) / seconds_since(t0);
}

// One generation run: one forward per token after `depth` cached ones. Returns tok/s.
double run_tg(Backend& b, int depth, const std::vector<int32_t>& tokens,
              std::vector<float>& logits) {
  set_depth(b, depth, b.model().hp.n_vocab, 0, logits);
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

int bench_max_tokens(const BenchParams& p) {
  int need = 0, depth = 0;
  for (int n : p.n_prompt) need = std::max(need, n);
  for (int n : p.n_gen) need = std::max(need, n);
  for (int d : p.n_depth) depth = std::max(depth, d);
  return need + depth;
}

BenchReport run_bench(Backend& backend, const BenchParams& p, const ModelSummary& model,
                      int threads, const std::function<void(const std::string&)>& progress) {
  auto negative = [](const std::vector<int>& v) {
    return std::any_of(v.begin(), v.end(), [](int n) { return n < 0; });
  };
  if (negative(p.n_prompt) || negative(p.n_gen) || negative(p.n_depth) || p.reps < 1)
    throw InputError("bench: -p, -n and -d must be >= 0 and -r >= 1");
  const int need = bench_max_tokens(p);
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
  r.copy_gb_per_s = backend.measured_copy_gb_per_s();

  auto first_positive = [](const std::vector<int>& v) {
    for (int n : v)
      if (n > 0) return n;
    return 0;
  };
  // Warm-up (not measured): page the weights in, let the backend size its buffers.
  if (const int n = first_positive(p.n_prompt); n > 0)
    run_pp(backend, 0, random_tokens(std::min(n, 32), n_vocab, p.seed), logits);
  if (const int n = first_positive(p.n_gen); n > 0)
    run_tg(backend, 0, random_tokens(std::min(n, 4), n_vocab, p.seed), logits);
  backend.truncate(0);

  auto measure = [&](const char* kind, int n, int depth, auto run_once) {
    BenchStat s;
    s.test = kind + std::to_string(n);
    if (depth > 0) s.test += " @ d" + std::to_string(depth);  // llama-bench's name for it
    s.n_tokens = n;
    s.n_depth = depth;
    for (int rep = 0; rep < p.reps; ++rep) {
      const auto tokens = random_tokens(n, n_vocab, p.seed + uint64_t(rep) + 1);
      s.tok_per_s.push_back(run_once(backend, depth, tokens, logits));
      if (progress)
        progress(s.test + " rep " + std::to_string(rep + 1) + "/" + std::to_string(p.reps) + ": " +
                 fixed(s.tok_per_s.back(), 2) + " tok/s");
    }
    summarize_stat(s);
    r.stats.push_back(std::move(s));
  };
  for (int depth : p.n_depth) {
    for (int n : p.n_prompt)
      if (n > 0) measure("pp", n, depth, run_pp);
    for (int n : p.n_gen) {
      if (n == 0) continue;
      measure("tg", n, depth, run_tg);
      BenchStat& s = r.stats.back();
      s.is_gen = true;
      s.gb_per_s = double(r.weight_bytes_per_token) * s.median / 1e9;
      r.gen_gb_per_s = s.gb_per_s;
    }
  }
  backend.truncate(0);
  return r;
}

int batched_bench_ctx(const BenchParams& p) {
  return (p.n_prompt.empty() ? 0 : p.n_prompt[0]) + (p.n_gen.empty() ? 0 : p.n_gen[0]);
}

BenchReport run_batched_bench(Backend& backend, const BenchParams& p, const ModelSummary& model,
                              int threads,
                              const std::function<void(const std::string&)>& progress) {
  const int npp = p.n_prompt.empty() ? 0 : p.n_prompt[0];
  const int ntg = p.n_gen.empty() ? 0 : p.n_gen[0];
  if (p.batch.empty() || npp < 1 || ntg < 0 || p.reps < 1)
    throw InputError("bench --batch: needs batch sizes, a prompt of >= 1 token and -r >= 1");
  int max_b = 0;
  for (int b : p.batch) {
    if (b < 1) throw InputError("bench --batch: batch sizes must be >= 1");
    max_b = std::max(max_b, b);
  }
  if (max_b > backend.n_seq())
    throw InputError("bench --batch: " + std::to_string(max_b) +
                     " sequences, but the backend holds " + std::to_string(backend.n_seq()));
  if (npp + ntg > backend.n_ctx())
    throw InputError("bench --batch: a sequence needs " + std::to_string(npp + ntg) +
                     " positions but the context is " + std::to_string(backend.n_ctx()));
  const int64_t n_vocab = backend.model().hp.n_vocab;
  std::vector<float> logits(size_t(max_b) * size_t(n_vocab));

  BenchReport r;
  r.model = model;
  r.backend = backend.name();
  r.threads = threads;
  r.weight_bytes_per_token = weight_bytes_per_token(backend.model());
  r.copy_gb_per_s = backend.measured_copy_gb_per_s();

  // One run of B sequences; returns {prompt tok/s, aggregate decode tok/s}.
  auto run_once = [&](int B, uint64_t seed, int n_prompt, int n_gen) {
    for (int s = 0; s < max_b; ++s) backend.truncate_seq(s, 0);
    std::vector<std::vector<int32_t>> prompts;
    for (int s = 0; s < B; ++s)
      prompts.push_back(random_tokens(n_prompt, n_vocab, seed * 1000 + uint64_t(s)));
    std::vector<SeqTokens> batch(static_cast<size_t>(B));
    for (int s = 0; s < B; ++s) {
      batch[size_t(s)].seq = s;
      batch[size_t(s)].tokens = prompts[size_t(s)];
      batch[size_t(s)].logits = logits.data() + size_t(s) * size_t(n_vocab);
    }
    auto t0 = Clock::now();
    backend.forward_batch(batch);
    const double pp = double(B) * n_prompt / seconds_since(t0);
    const auto next = random_tokens(B * std::max(n_gen, 1), n_vocab, seed + 77);
    t0 = Clock::now();
    for (int step = 0; step < n_gen; ++step) {
      for (int s = 0; s < B; ++s)
        batch[size_t(s)].tokens = {next.data() + size_t(step) * size_t(B) + size_t(s), 1};
      backend.forward_batch(batch);
    }
    const double tg = n_gen > 0 ? double(B) * n_gen / seconds_since(t0) : 0;
    return std::pair{pp, tg};
  };

  run_once(1, p.seed, std::min(npp, 16), std::min(ntg, 2));  // warm-up, not measured
  for (int B : p.batch) {
    BenchStat pp, tg;
    pp.test = "pp" + std::to_string(npp) + " B=" + std::to_string(B);
    pp.n_tokens = npp;
    pp.n_seq = B;
    tg.test = "tg" + std::to_string(ntg) + " B=" + std::to_string(B);
    tg.n_tokens = ntg;
    tg.n_seq = B;
    tg.is_gen = true;
    for (int rep = 0; rep < p.reps; ++rep) {
      const auto [pp_rate, tg_rate] = run_once(B, p.seed + uint64_t(rep) + 1, npp, ntg);
      pp.tok_per_s.push_back(pp_rate);
      tg.tok_per_s.push_back(tg_rate);
      if (progress)
        progress("B=" + std::to_string(B) + " rep " + std::to_string(rep + 1) + "/" +
                 std::to_string(p.reps) + ": prompt " + fixed(pp_rate, 2) + " tok/s, decode " +
                 fixed(tg_rate, 2) + " tok/s (aggregate)");
    }
    summarize_stat(pp);
    summarize_stat(tg);
    // A decode step reads the weights once for all B tokens.
    tg.gb_per_s = double(r.weight_bytes_per_token) * tg.median / double(B) / 1e9;
    r.gen_gb_per_s = tg.gb_per_s;
    r.stats.push_back(std::move(pp));
    if (ntg > 0) r.stats.push_back(std::move(tg));
  }
  for (int s = 0; s < max_b; ++s) backend.truncate_seq(s, 0);
  return r;
}

namespace {

// A tg row's weight bandwidth, and its share of the device's measured copy bandwidth when known.
std::string weights_cell(const BenchReport& r, const BenchStat& s) {
  if (!s.is_gen) return "-";
  std::string cell = fixed(s.gb_per_s, 2);
  if (r.copy_gb_per_s > 0) cell += " (" + fixed(100 * s.gb_per_s / r.copy_gb_per_s, 1) + " %)";
  return cell;
}

}  // namespace

std::string bench_markdown(const std::vector<BenchReport>& reports) {
  std::string out =
      "| model | type | size | params | backend | threads | test | t/s (median) | min | max | "
      "stddev | weights GB/s |\n"
      "| --- | --- | ---: | ---: | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |\n";
  for (const auto& r : reports)
    for (const auto& s : r.stats)
      out += "| " + r.model.name + " | " + r.model.file_type + " | " +
             human_bytes(r.model.file_bytes) + " | " + human_params(r.model.n_params) + " | " +
             r.backend + " | " + std::to_string(r.threads) + " | " + s.test + " | " +
             fixed(s.median, 2) + " | " + fixed(s.min, 2) + " | " + fixed(s.max, 2) + " | " +
             fixed(s.stddev, 2) + " | " + weights_cell(r, s) + " |\n";
  return out;
}

std::string bench_json(const std::vector<BenchReport>& reports) {
  nlohmann::ordered_json rows = nlohmann::ordered_json::array();
  for (const auto& r : reports)
    for (const auto& s : r.stats) {
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
      j["test"] = s.test;
      j["n_prompt"] = s.is_gen ? 0 : s.n_tokens;
      j["n_gen"] = s.is_gen ? s.n_tokens : 0;
      j["n_depth"] = s.n_depth;
      j["n_tokens"] = s.n_tokens;
      j["n_seq"] = s.n_seq;
      j["tok_per_s"] = s.tok_per_s;
      j["median"] = s.median;
      j["min"] = s.min;
      j["max"] = s.max;
      j["stddev"] = s.stddev;
      j["gen_weights_gb_per_s"] = s.gb_per_s;
      j["copy_gb_per_s"] = r.copy_gb_per_s;  // 0: not measured
      if (s.is_gen && r.copy_gb_per_s > 0)
        j["percent_of_copy_bandwidth"] = 100 * s.gb_per_s / r.copy_gb_per_s;
      rows.push_back(std::move(j));
    }
  return rows.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

namespace {

// RFC 4180: a field holding a comma, a quote or a line break is quoted, quotes doubled.
std::string csv_field(const std::string& v) {
  if (v.find_first_of(",\"\r\n") == std::string::npos) return v;
  std::string out = "\"";
  for (char c : v) out += c == '"' ? std::string("\"\"") : std::string(1, c);
  return out + "\"";
}

}  // namespace

std::string bench_csv(const std::vector<BenchReport>& reports) {
  std::string out =
      "model,file_type,file_bytes,n_params,backend,threads,test,n_prompt,n_gen,median_tok_per_s,"
      "min_tok_per_s,max_tok_per_s,stddev_tok_per_s,gen_weights_gb_per_s,n_seq,n_depth,"
      "copy_gb_per_s\n";
  for (const auto& r : reports)
    for (const auto& s : r.stats) {
      const std::vector<std::string> fields = {r.model.name,
                                               r.model.file_type,
                                               std::to_string(r.model.file_bytes),
                                               std::to_string(r.model.n_params),
                                               r.backend,
                                               std::to_string(r.threads),
                                               s.test,
                                               std::to_string(s.is_gen ? 0 : s.n_tokens),
                                               std::to_string(s.is_gen ? s.n_tokens : 0),
                                               fixed(s.median, 3),
                                               fixed(s.min, 3),
                                               fixed(s.max, 3),
                                               fixed(s.stddev, 3),
                                               fixed(s.gb_per_s, 3),
                                               std::to_string(s.n_seq),
                                               std::to_string(s.n_depth),
                                               fixed(r.copy_gb_per_s, 3)};
      for (size_t k = 0; k < fields.size(); ++k) {
        if (k) out += ',';
        out += csv_field(fields[k]);
      }
      out += "\n";
    }
  return out;
}

}  // namespace lockstep
