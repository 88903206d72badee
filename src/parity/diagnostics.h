// The parity gate's diagnostic tools, for people chasing a drift (`lockstep parity`): the full
// comparison table, the per-layer comparison and a free-running audit. They create the candidate
// the request names (with its fault applied) through the gate, compare it, and never hand it out.
#pragma once

#include <span>
#include <string>
#include <vector>

#include "parity/comparison.h"
#include "parity/gate.h"

namespace lockstep {

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

class ParityDiagnostics {
 public:
  // Every row of the comparison, not stopping at the first failure.
  static ParityVerdict table(const Model& model, const OpenRequest& request,
                             const ParityConfig& config, std::span<const int32_t> probe,
                             std::string* candidate_name);
  static LayerReport compare_layers(const Model& model, const OpenRequest& request,
                                    std::span<const int32_t> probe, double tolerance);
  static AuditReport audit(const Model& model, const OpenRequest& request,
                           const ParityConfig& config, std::span<const int32_t> prompt, int n);

 private:
  // The named candidate (InputError for the reference), let compute for the comparison only.
  static std::unique_ptr<GatedBackend> probing_candidate(const Model& model,
                                                         const OpenRequest& request);
};

}  // namespace lockstep
