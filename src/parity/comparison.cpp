// The parity gate's comparison: the reference's probe, the candidate's, and the verdict.
#include "parity/comparison.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <exception>
#include <functional>
#include <limits>
#include <sstream>
#include <thread>

#include "util/error.h"

namespace lockstep {

std::string ParityRow::where() const {
  std::string w = std::string(is_step ? "step " : "position ") + std::to_string(index) + "/" +
                  std::to_string(total);
  if (seq > 0)
    w += " (batched: sequence " + std::to_string(seq) + " at position " + std::to_string(position) +
         ")";
  return w;
}

const char* ParityVerdict::status_name() const {
  switch (status) {
    case Status::Passed:
      return "passed";
    case Status::Rejected:
      return "rejected";
    case Status::Off:
      return "off";
    case Status::NotRequired:
      return "not-required";
  }
  return "unknown";
}

static std::string fmt(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.6g", v);
  return buf;
}

static std::string fmt_ms(double ms) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.0f", ms);
  return buf;
}

std::string ParityVerdict::failure_text() const {
  if (failed_metric.empty()) return "";
  if (failed_metric == "finite") return "NaN/Inf in logits at " + failed_at;
  return failed_metric + " vs CPU = " + fmt(failed_value) + " (" + failed_bound + ") at " +
         failed_at;
}

std::string ParityVerdict::summary() const {
  std::ostringstream os;
  os << "parity " << status_name();
  if (cached)
    os << " (cached: " << positions << " positions + " << steps << " steps, worst cosine "
       << fmt(worst_cosine) << ", worst KL " << fmt(worst_kl) << ", computed earlier in "
       << fmt_ms(cached_ms) << " ms)";
  else if (status == Status::Passed || status == Status::Rejected)
    os << " (" << positions << " positions + " << steps << " steps, worst cosine "
       << fmt(worst_cosine) << ", worst KL " << fmt(worst_kl) << ", " << fmt_ms(ms)
       << " ms: reference " << fmt_ms(reference_ms) << ", " << candidate << " "
       << fmt_ms(candidate_ms)
       << (reference_overlapped ? ", reference beside the candidate's load)" : ")");
  return os.str();
}

namespace {

void track_worst(const ParityRow& row, ParityVerdict& v);

}  // namespace

// Order of the rules: non-finite, cosine, KL, clear top-1 disagreement.
bool ParityComparison::row_passes(const ParityRow& row, const ParityConfig& cfg, ParityVerdict& v) {
  const auto& m = row.m;
  auto reject = [&](const char* metric, double value, const std::string& bound) {
    v.failed_metric = metric;
    v.failed_value = value;
    v.failed_bound = bound;
    v.failed_at = row.where();
    return false;
  };
  if (!m.finite) return reject("finite", NAN, "must be finite");
  if (!(m.cosine >= cfg.cosine_min)) return reject("cosine", m.cosine, "< " + fmt(cfg.cosine_min));
  if (!(m.kl <= cfg.kl_max)) return reject("KL", m.kl, "> " + fmt(cfg.kl_max));
  if (!m.top1_agree() && m.ref_margin > cfg.top1_margin)
    return reject("top-1 margin", m.ref_margin,
                  "candidate picked " + std::to_string(m.cand_top1) + " over " +
                      std::to_string(m.ref_top1) + ", margin > " + fmt(cfg.top1_margin));
  return true;
}

namespace {

void track_worst(const ParityRow& row, ParityVerdict& v) {
  if (!row.m.finite) return;
  if (row.m.cosine < v.worst_cosine) {
    v.worst_cosine = row.m.cosine;
    v.worst_cosine_at = row.where();
  }
  v.worst_kl = std::max(v.worst_kl, row.m.kl);
  v.worst_max_abs = std::max(v.worst_max_abs, row.m.max_abs);
}

}  // namespace

namespace {

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

// Metrics of `rows` rows of n_vocab logits. Each row costs two exp() in double per vocabulary
// entry (~0.3 M for 152k entries), so the rows are split over the host's threads.
std::vector<LogitComparison> compare_rows(const float* ref, const float* cand, int rows,
                                          int64_t n_vocab) {
  std::vector<LogitComparison> out(static_cast<size_t>(rows));
  auto range = [&](int begin, int end) {
    for (int p = begin; p < end; ++p) {
      const size_t off = size_t(p) * size_t(n_vocab);
      out[size_t(p)] = compare_logits({ref + off, size_t(n_vocab)}, {cand + off, size_t(n_vocab)});
    }
  };
  const int n_threads =
      std::clamp(int(std::thread::hardware_concurrency()), 1, std::max(1, rows / 2));
  if (n_threads == 1) {
    range(0, rows);
    return out;
  }
  // compare_logits throws only on mismatched lengths, which cannot happen here; an exception
  // escaping a std::thread would terminate, so still catch and rethrow.
  std::vector<std::exception_ptr> errors(static_cast<size_t>(n_threads));
  std::vector<std::thread> threads;
  const int per = (rows + n_threads - 1) / n_threads;
  for (int t = 0; t < n_threads; ++t)
    threads.emplace_back([&, t] {
      try {
        range(std::min(rows, t * per), std::min(rows, (t + 1) * per));
      } catch (...) {
        errors[size_t(t)] = std::current_exception();
      }
    });
  for (auto& th : threads) th.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
  return out;
}

void check_fits(const Backend& b, size_t positions, int steps) {
  if (steps < ParityConfig::kMinSteps || steps > ParityConfig::kMaxSteps)
    throw InputError("parity steps must be in 1..16");
  if (positions == 0) throw Error("parity gate: empty probe");
  if (int64_t(positions) + steps > b.n_ctx())
    throw InputError("parity probe of " + std::to_string(positions) + " positions + " +
                     std::to_string(steps) + " steps does not fit the context");
}

// A reference that yields NaN/Inf is a broken model (non-finite weights, a degenerate
// hyperparameter), not a failing candidate: say so, naming the first such row.
void check_reference_finite(const ReferenceProbe& r, size_t positions, size_t V) {
  auto finite = [](const float* row, size_t n) {
    for (size_t i = 0; i < n; ++i)
      if (!std::isfinite(row[i])) return false;
    return true;
  };
  std::string where;
  for (size_t p = 0; p < positions && where.empty(); ++p)
    if (!finite(r.prefill.data() + p * V, V))
      where = "position " + std::to_string(p) + "/" + std::to_string(positions);
  for (size_t k = 0; k < r.step_tokens.size() && where.empty(); ++k)
    if (!finite(r.steps.data() + k * V, V))
      where = "step " + std::to_string(k) + "/" + std::to_string(r.step_tokens.size());
  if (!where.empty())
    throw InputError("the model itself is broken: the CPU reference computes NaN/Inf logits at " +
                     where + " of the parity probe (non-finite weights or hyperparameters?)");
}

// The probe tokens the batched steps' second sequence starts with (0: no batched steps): half the
// probe, so that its positions differ from the first sequence's, leaving room for one more probe
// token per step.
int batched_side_length(const Backend& candidate, int positions, int steps) {
  if (candidate.n_seq() < 2) return 0;
  const int side = std::min(positions / 2, positions - steps);
  return side >= 1 ? side : 0;
}

}  // namespace

ReferenceProbe ParityComparison::run_reference(Backend& reference, std::span<const int32_t> probe,
                                               int steps) {
  check_fits(reference, probe.size(), steps);
  const auto t0 = Clock::now();
  const size_t V = size_t(reference.model().hp.n_vocab);
  ReferenceProbe r;
  r.prefill.resize(probe.size() * V);
  r.steps.resize(size_t(steps) * V);
  reference.truncate(0);
  reference.forward(probe, r.prefill.data(), true);
  r.prefill_ms = ms_since(t0);
  // Autoregressive steps: the reference's argmax is the next input (of both backends).
  const float* last = r.prefill.data() + (probe.size() - 1) * V;
  for (int k = 0; k < steps; ++k) {
    const int32_t token = argmax({last, V});
    r.step_tokens.push_back(token);
    float* out = r.steps.data() + size_t(k) * V;
    reference.forward({&token, 1}, out, false);
    last = out;
  }
  r.ms = ms_since(t0);
  check_reference_finite(r, probe.size(), V);
  return r;
}

ParityVerdict ParityComparison::compare_with(const ReferenceProbe& ref, Backend& candidate,
                                             std::span<const int32_t> probe,
                                             const ParityConfig& cfg, bool stop_at_first_failure) {
  const auto t0 = Clock::now();
  check_fits(candidate, probe.size(), cfg.steps);
  const size_t V = size_t(candidate.model().hp.n_vocab);
  const int P = int(probe.size());
  if (ref.prefill.size() != size_t(P) * V || ref.step_tokens.size() < size_t(cfg.steps) ||
      ref.steps.size() < size_t(cfg.steps) * V)
    throw Error("parity gate: the reference's probe does not match this comparison");
  ParityVerdict v;
  v.candidate = candidate.name();
  v.config = cfg;
  v.steps = cfg.steps;
  v.positions = P;
  v.status = ParityVerdict::Status::Passed;
  v.reference_ms = ref.ms;
  v.reference_prefill_ms = ref.prefill_ms;
  auto finish = [&] {
    v.ms = ms_since(t0);
    return v;
  };
  auto check = [&](ParityRow& row) {  // false: stop here
    track_worst(row, v);
    v.rows.push_back(row);
    if (v.status == ParityVerdict::Status::Passed && !row_passes(row, cfg, v)) {
      v.status = ParityVerdict::Status::Rejected;
      return !stop_at_first_failure;
    }
    return true;
  };

  // The candidate writes into NaN: a row it leaves unwritten is rejected, never compared as
  // whatever the memory last held (possibly the reference's logits of an earlier probe).
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> cand(size_t(P) * V, nan);
  candidate.truncate(0);
  auto c0 = Clock::now();
  candidate.forward(probe, cand.data(), true);
  v.candidate_ms += ms_since(c0);
  const std::vector<LogitComparison> prefill =
      compare_rows(ref.prefill.data(), cand.data(), P, int64_t(V));
  for (int p = 0; p < P; ++p) {
    ParityRow row;
    row.index = p;
    row.total = P;
    row.token = probe[size_t(p)];
    row.m = prefill[size_t(p)];
    if (!check(row)) return finish();
  }
  // A backend serving several sequences decodes them in one batch. Then every step also feeds
  // side sequences that hold the probe's first `side` tokens, one more probe token each time they
  // are fed: their rows are the reference's prefill rows, already computed, so the batched path
  // (other sequences, other positions, one call) is compared at no cost to the reference. A
  // backend whose larger steps take other routes (batch_route_rows) gets steps of each route's
  // size it has the sequences for, largest first, then of two, in turn (step k has sizes[k % n]
  // rows): every route is checked, and sequences 1 .. sizes[0] - 1 all hold the same tokens and
  // must all give those rows.
  const int side = batched_side_length(candidate, P, cfg.steps);
  std::vector<int> sizes;
  if (side > 0) {
    for (int r : candidate.batch_route_rows())
      if (r > 2 && r <= candidate.n_seq()) sizes.push_back(r);
    std::sort(sizes.begin(), sizes.end(), std::greater<int>());
    sizes.erase(std::unique(sizes.begin(), sizes.end()), sizes.end());
    sizes.push_back(2);
  }
  const int n_side = sizes.empty() ? 0 : sizes[0] - 1;
  std::vector<int> side_pos(size_t(n_side), side);  // each side sequence's next position
  if (side > 0) {
    std::vector<SeqTokens> prefixes;
    for (int s = 1; s <= n_side; ++s) {
      candidate.truncate_seq(s, 0);
      prefixes.push_back({s, probe.first(size_t(side)), nullptr, false});
    }
    c0 = Clock::now();
    candidate.forward_batch(prefixes);
    v.candidate_ms += ms_since(c0);
  }
  std::vector<float> step(V), side_steps(size_t(n_side) * V);
  for (int k = 0; k < cfg.steps; ++k) {
    const int32_t token = ref.step_tokens[size_t(k)];
    const int n_fed = sizes.empty() ? 0 : sizes[size_t(k) % sizes.size()] - 1;
    std::fill(step.begin(), step.end(), nan);
    std::fill(side_steps.begin(), side_steps.end(), nan);
    std::vector<SeqTokens> batch = {{0, {&token, 1}, step.data(), false}};
    for (int s = 1; s <= n_fed; ++s)
      batch.push_back({s, probe.subspan(size_t(side_pos[size_t(s - 1)]), 1),
                       side_steps.data() + size_t(s - 1) * V, false});
    c0 = Clock::now();
    candidate.forward_batch(batch);
    v.candidate_ms += ms_since(c0);
    ParityRow row;
    row.is_step = true;
    row.index = k;
    row.total = cfg.steps;
    row.token = token;
    row.m = compare_logits({ref.steps.data() + size_t(k) * V, V}, step);
    if (!check(row)) return finish();
    for (int s = 1; s <= n_fed; ++s) {
      const int pos = side_pos[size_t(s - 1)]++;
      ParityRow side_row = row;
      side_row.seq = s;
      side_row.position = pos;
      side_row.token = probe[size_t(pos)];
      side_row.m = compare_logits({ref.prefill.data() + size_t(pos) * V, V},
                                  {side_steps.data() + size_t(s - 1) * V, V});
      if (!check(side_row)) return finish();
    }
  }
  for (int s = 1; s <= n_side; ++s) candidate.truncate_seq(s, 0);
  return finish();
}

ParityVerdict ParityComparison::compare(Backend& reference, Backend& candidate,
                                        std::span<const int32_t> probe, const ParityConfig& cfg,
                                        bool stop_at_first_failure) {
  const auto t0 = Clock::now();
  check_fits(candidate, probe.size(), cfg.steps);  // before the reference's work, not after
  const ReferenceProbe ref = run_reference(reference, probe, cfg.steps);
  ParityVerdict v = compare_with(ref, candidate, probe, cfg, stop_at_first_failure);
  v.ms = ms_since(t0);
  return v;
}

}  // namespace lockstep
