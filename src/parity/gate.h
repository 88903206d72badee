// The multi-step parity gate: the only door through which the engine obtains a backend other than
// the CPU reference, and the only holder of the GateKey that GPU backend factories demand.
//
// Protocol (docs/parity.md): the reference (CPU, float activations) and the candidate process the
// same probe in lockstep: first a prefill of P real positions, then N autoregressive steps whose
// input token is the reference's argmax. Full-vocabulary logits are compared at every position
// and every step; any NaN/Inf, cosine < threshold, KL above its bound, or a top-1 disagreement
// where the reference's top-2 margin is clear rejects the candidate.
#pragma once

#include <memory>
#include <span>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "backend/gated_backend.h"
#include "parity/metrics.h"
#include "parity/parity_config.h"
#include "util/error.h"

namespace lockstep {

// The tagged prefix of every line the gate writes on stderr. Stable: people grep for it.
inline constexpr const char* kParityTag = "[lockstep-parity-v1]";

struct ParityRow {
  bool is_step = false;  // false: a prefill position; true: an autoregressive step
  int index = 0;         // 0-based position or step
  int total = 0;         // P or N
  int32_t token = -1;    // input token at this row
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

  const char* status_name() const;
  std::string failure_text() const;  // "cosine vs CPU = 0.722249 (< 0.99) at step 1/3"
  std::string summary() const;       // one short phrase for the stderr header
};

// Thrown when a rejected candidate may not fall back (strict policy, or a forced backend). Its
// message is the complete tagged line; the CLI prints it as is and exits with kExitParity.
class ParityError : public Error {
 public:
  explicit ParityError(const std::string& line) : Error(line, kExitParity) {}
};

struct OpenRequest {
  std::string backend = "auto";  // auto | cpu | cpu-ref | cuda
  int threads = 0;               // 0 = default
  int n_ctx = 0;                 // 0 = model default
};

struct OpenResult {
  std::unique_ptr<Backend> backend;
  std::string backend_used;  // name of the backend that will serve
  ParityVerdict verdict;
  // When the probe was the first tokens of the user's prompt, they are already in the serving
  // backend's cache (so the prompt is never processed twice); last_logits are the logits after
  // the last of them.
  int prompt_tokens_cached = 0;
  std::vector<float> last_logits;
};

// `parity --layers`: hidden states after attention and after the FFN of every layer, compared
// over the probe's positions; `first` is the first place (in forward order) where the candidate
// departs from the reference beyond the tolerance.
struct LayerRow {
  int layer = 0;
  std::string stage;       // "attn_out" or "ffn_out"
  double max_rel_err = 0;  // max over positions of ||c - r|| / ||r||
  int worst_position = 0;
  double min_cosine = 1;
};
struct LayerReport {
  std::string candidate;
  double tolerance = 0;
  std::vector<LayerRow> rows;
  int first_departure = -1;  // index into rows, -1 when none
};

// `parity --audit N`: the candidate generates N tokens greedily on its own; the reference then
// re-scores prompt + generated tokens in one teacher-forced pass; rows compare the candidate's
// logits at each generated step with the reference's at the same position.
struct AuditReport {
  std::string candidate;
  int prompt_tokens = 0;
  std::vector<int32_t> generated;
  std::vector<ParityRow> rows;
  int first_divergence = -1;  // first step whose row fails the gate's rules, -1 when none
  std::string first_divergence_reason;
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

class ParityGate {
 public:
  // Compares candidate with reference on `probe` (both caches are cleared first): the reference's
  // probe, then the candidate's. With stop_at_first_failure the comparison ends at the first
  // rejected row (the gate); without it every row is computed (the `parity` tool).
  static ParityVerdict compare(Backend& reference, Backend& candidate,
                               std::span<const int32_t> probe, const ParityConfig& config,
                               bool stop_at_first_failure = true);
  // The two halves of compare(). run_reference throws InputError when `steps` is out of range or
  // the probe and its steps do not fit the reference's context (compare_with: the candidate's).
  static ReferenceProbe run_reference(Backend& reference, std::span<const int32_t> probe,
                                      int steps);
  static ParityVerdict compare_with(const ReferenceProbe& reference, Backend& candidate,
                                    std::span<const int32_t> probe, const ParityConfig& config,
                                    bool stop_at_first_failure = true);

  // Opens the backend a run will use. cpu-ref is the reference and needs no gate; every other
  // backend is created here (GPU ones with the GateKey), verified, and handed out only if it
  // passed, or if the user explicitly asked for --parity off (announced on stderr). On rejection:
  // auto policy with an unforced backend falls back to the reference with one tagged stderr line;
  // strict policy or a forced backend throws ParityError.
  // `probe_is_prompt` says that `probe` is the first tokens of the user's prompt.
  static OpenResult open(const Model& model, const OpenRequest& request, const ParityConfig& config,
                         std::span<const int32_t> probe, bool probe_is_prompt);

  // Backends this build and machine can run: cpu-ref, cpu, and cuda when a device is usable.
  static std::vector<std::string> available_backends();

  // Applies the rejection rules to one row; on rejection fills v's failed_* fields and returns
  // false.
  static bool row_passes(const ParityRow& row, const ParityConfig& config, ParityVerdict& v);

  // Diagnostic tools for people chasing a drift (`lockstep parity`). They create the candidate
  // named by the request (with LOCKSTEP_FAULT applied) and never hand it out.
  static ParityVerdict table(const Model& model, const OpenRequest& request,
                             const ParityConfig& config, std::span<const int32_t> probe,
                             std::string* candidate_name);
  static LayerReport compare_layers(const Model& model, const OpenRequest& request,
                                    std::span<const int32_t> probe, double tolerance);
  static AuditReport audit(const Model& model, const OpenRequest& request,
                           const ParityConfig& config, std::span<const int32_t> prompt, int n);

 private:
  // Creates the named candidate without verifying it: what the key protects.
  static std::unique_ptr<GatedBackend> create_candidate(const Model& model, const std::string& name,
                                                        const OpenRequest& request);
  // "cuda" when a CUDA device is usable, else "cpu".
  static std::string resolve_auto();
  // Resolves "auto", creates the candidate, applies LOCKSTEP_FAULT, and opens it for probing.
  static std::unique_ptr<GatedBackend> probing_candidate(const Model& model,
                                                         const OpenRequest& request);
};

// The built-in probe text (English prose with digits and punctuation, so that the probe exercises
// ordinary tokens) and the choice between it and the user's prompt.
const std::string& builtin_probe_text();

}  // namespace lockstep
