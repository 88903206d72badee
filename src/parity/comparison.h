// The multi-step parity gate's comparison (docs/parity.md): the reference (CPU, float
// activations) and the candidate process the same probe in lockstep: first a prefill of P real
// positions, then N autoregressive steps whose input token is the reference's argmax.
// Full-vocabulary logits are compared at every position and every step; any NaN/Inf, cosine <
// threshold, KL above its bound, or a top-1 disagreement where the reference's top-2 margin is
// clear rejects the candidate. Which backend then serves is the open policy's business
// (parity/gate.h), not this file's.
#pragma once

#include <span>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "parity/metrics.h"
#include "parity/parity_config.h"

namespace lockstep {

// The tagged prefix of every line the gate writes on stderr. Stable: people grep for it.
inline constexpr const char* kParityTag = "[lockstep-parity-v1]";

struct ParityRow {
  bool is_step = false;  // false: a prefill position; true: an autoregressive step
  int index = 0;         // 0-based position or step
  int total = 0;         // P or N
  int32_t token = -1;    // input token at this row
  // A batched step's second sequence (a backend serving several sequences): its sequence and
  // position; 0 for every other row.
  int seq = 0;
  int position = 0;
  LogitComparison m;
  std::string where() const;  // "position 5/64" or "step 1/3"
};

struct ParityVerdict {
  enum class Status { Passed, Rejected, Off, NotRequired };
  Status status = Status::NotRequired;
  std::string candidate;  // backend name that was checked
  int steps = 0;          // N
  int positions = 0;      // P
  ParityConfig config;
  std::vector<ParityRow> rows;  // every compared row, in order
  // The rule that rejected (empty when passed): metric name, value, bound text, place.
  std::string failed_metric;
  double failed_value = 0;
  std::string failed_bound;  // e.g. "< 0.99"
  std::string failed_at;     // e.g. "step 1/3"
  // Worst values observed over all rows.
  double worst_cosine = 1, worst_kl = 0, worst_max_abs = 0;
  std::string worst_cosine_at;
  // What the gate cost: `ms` is the wall time it added once the candidate existed (the whole
  // comparison when the reference ran first; see `reference_overlapped`); the other fields say
  // where the time went.
  double ms = 0;
  double reference_ms = 0;            // the reference's probe (its forward() calls)
  double reference_prefill_ms = 0;    // the part of it spent on the probe's P positions
  double candidate_ms = 0;            // the candidate's forward() calls
  bool reference_overlapped = false;  // the reference ran while the candidate was being created
  // A pass remembered from an earlier run (parity/verdict_cache.h): nothing was computed now, the
  // worst values are the earlier run's, rows is empty and cached_ms is what that run's gate took.
  bool cached = false;
  double cached_ms = 0;

  const char* status_name() const;
  std::string failure_text() const;  // "cosine vs CPU = 0.722249 (< 0.99) at step 1/3"
  std::string summary() const;       // one short phrase for the stderr header
};

// The reference's side of a probe: its logits at the P positions and after each of the N steps,
// and the steps' tokens (its argmax each time), which steer the candidate too. It needs nothing
// from the candidate, so the gate computes it while the candidate is still being created.
struct ReferenceProbe {
  std::vector<float> prefill;        // P x n_vocab
  std::vector<int32_t> step_tokens;  // N
  std::vector<float> steps;          // N x n_vocab
  double prefill_ms = 0, ms = 0;
};

class ParityComparison {
 public:
  // Compares candidate with reference on `probe` (both caches are cleared first): the reference's
  // probe, then the candidate's. With stop_at_first_failure the comparison ends at the first
  // rejected row (the gate); without it every row is computed (the `parity` tool).
  static ParityVerdict compare(Backend& reference, Backend& candidate,
                               std::span<const int32_t> probe, const ParityConfig& config,
                               bool stop_at_first_failure = true);
  // The two halves of compare(). run_reference throws InputError when `steps` is out of range or
  // the probe and its steps do not fit the reference's context (compare_with: the candidate's),
  // and InputError saying the model is broken when the reference itself yields NaN/Inf logits
  // (then no backend could be judged against it).
  static ReferenceProbe run_reference(Backend& reference, std::span<const int32_t> probe,
                                      int steps);
  static ParityVerdict compare_with(const ReferenceProbe& reference, Backend& candidate,
                                    std::span<const int32_t> probe, const ParityConfig& config,
                                    bool stop_at_first_failure = true);

  // Applies the rejection rules to one row; on rejection fills v's failed_* fields and returns
  // false.
  static bool row_passes(const ParityRow& row, const ParityConfig& config, ParityVerdict& v);
};

}  // namespace lockstep
