#include "parity/diagnostics.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <tuple>

#include "backend/gate_key.h"
#include "backend/registry.h"

namespace lockstep {

std::unique_ptr<GatedBackend> ParityDiagnostics::probing_candidate(const Model& model,
                                                                   const OpenRequest& request) {
  if (const BackendEntry* e = find_backend(request.backend); e && e->is_reference)
    throw InputError("--backend " + request.backend +
                     " is the reference itself; name a candidate (" + backend_choices() + ")");
  auto candidate = ParityGate::create_candidate(model, request);
  candidate->begin_probe(GateKey{});
  return candidate;
}

ParityVerdict ParityDiagnostics::table(const Model& model, const OpenRequest& request,
                                       const ParityConfig& config, std::span<const int32_t> probe,
                                       std::string* candidate_name) {
  auto candidate = probing_candidate(model, request);
  auto reference = create_reference(model, request.options);
  if (candidate_name) *candidate_name = candidate->name();
  return ParityComparison::compare(*reference, *candidate, probe, config,
                                   /*stop_at_first_failure=*/false);
}

namespace {

// Collects every hidden state an observed forward pass reports.
class HiddenRecorder : public LayerObserver {
 public:
  void on_hidden(int layer, const char* stage, int pos, std::span<const float> hidden) override {
    states[{layer, stage, pos}].assign(hidden.begin(), hidden.end());
  }
  std::map<std::tuple<int, std::string, int>, std::vector<float>> states;
};

}  // namespace

LayerReport ParityDiagnostics::compare_layers(const Model& model, const OpenRequest& request,
                                              std::span<const int32_t> probe, double tolerance) {
  auto candidate = probing_candidate(model, request);
  auto reference = create_reference(model, request.options);
  HiddenRecorder ref_states, cand_states;
  reference->set_observer(&ref_states);
  candidate->set_observer(&cand_states);
  std::vector<float> logits(size_t(model.hp.n_vocab));
  reference->forward(probe, logits.data(), false);
  candidate->forward(probe, logits.data(), false);
  reference->set_observer(nullptr);
  candidate->set_observer(nullptr);

  LayerReport report;
  report.candidate = candidate->name();
  report.tolerance = tolerance;
  if (ref_states.states.empty() || cand_states.states.empty())
    throw Error("parity --layers: a backend reported no hidden states (observer unsupported)");
  for (int layer = 0; layer < int(model.hp.n_layer); ++layer) {
    for (const char* stage : {"attn_out", "ffn_out"}) {
      LayerRow row;
      row.layer = layer;
      row.stage = stage;
      for (int pos = 0; pos < int(probe.size()); ++pos) {
        auto r = ref_states.states.find({layer, stage, pos});
        auto c = cand_states.states.find({layer, stage, pos});
        if (r == ref_states.states.end() || c == cand_states.states.end() ||
            r->second.size() != c->second.size())
          throw Error("parity --layers: missing hidden state for layer " + std::to_string(layer) +
                      " " + stage + " position " + std::to_string(pos));
        double diff = 0, nr = 0, nc = 0, dot = 0;
        for (size_t i = 0; i < r->second.size(); ++i) {
          const double a = r->second[i], b = c->second[i];
          diff += (a - b) * (a - b);
          nr += a * a;
          nc += b * b;
          dot += a * b;
        }
        double rel = std::sqrt(diff) / std::max(std::sqrt(nr), 1e-30);
        double cosine = dot / std::max(std::sqrt(nr) * std::sqrt(nc), 1e-30);
        if (!std::isfinite(rel)) rel = INFINITY;
        if (!std::isfinite(cosine)) cosine = -INFINITY;
        if (rel > row.max_rel_err) {
          row.max_rel_err = rel;
          row.worst_position = pos;
        }
        row.min_cosine = std::min(row.min_cosine, cosine);
      }
      if (report.first_departure < 0 && !(row.max_rel_err <= tolerance))
        report.first_departure = int(report.rows.size());
      report.rows.push_back(row);
    }
  }
  return report;
}

AuditReport ParityDiagnostics::audit(const Model& model, const OpenRequest& request,
                                     const ParityConfig& config, std::span<const int32_t> prompt,
                                     int n) {
  if (prompt.empty()) throw InputError("parity --audit needs a non-empty prompt");
  if (n < 1) throw InputError("--audit N must be at least 1");
  auto candidate = probing_candidate(model, request);
  auto reference = create_reference(model, request.options);
  const size_t V = size_t(model.hp.n_vocab);
  if (int(prompt.size()) + n > std::min(candidate->n_ctx(), reference->n_ctx()))
    throw InputError("parity --audit: prompt + N does not fit the context");

  AuditReport report;
  report.candidate = candidate->name();
  report.prompt_tokens = int(prompt.size());
  // The candidate runs free: greedy on its own logits.
  std::vector<float> cand_rows(size_t(n) * V);
  std::vector<float> logits(V);
  candidate->forward(prompt, logits.data(), false);
  for (int k = 0; k < n; ++k) {
    std::copy(logits.begin(), logits.end(), cand_rows.begin() + ptrdiff_t(size_t(k) * V));
    const int32_t next = argmax(logits);
    report.generated.push_back(next);
    if (k + 1 < n) candidate->forward({&next, 1}, logits.data(), false);
  }
  // The reference re-scores the whole sequence in one teacher-forced pass.
  std::vector<int32_t> seq(prompt.begin(), prompt.end());
  seq.insert(seq.end(), report.generated.begin(), report.generated.end() - 1);
  std::vector<float> ref_rows(seq.size() * V);
  reference->forward(seq, ref_rows.data(), true);
  for (int k = 0; k < n; ++k) {
    ParityRow row;
    row.is_step = true;
    row.index = k;
    row.total = n;
    row.token = report.generated[size_t(k)];
    const size_t ref_row = prompt.size() - 1 + size_t(k);
    row.m =
        compare_logits({ref_rows.data() + ref_row * V, V}, {cand_rows.data() + size_t(k) * V, V});
    report.rows.push_back(row);
    ParityVerdict scratch;
    if (report.first_divergence < 0 && !ParityComparison::row_passes(row, config, scratch)) {
      report.first_divergence = k;
      report.first_divergence_reason = scratch.failure_text();
    }
  }
  return report;
}

}  // namespace lockstep
