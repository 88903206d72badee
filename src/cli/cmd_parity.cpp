// `lockstep parity`: the gate's comparison as a table, for people chasing a drift.
//   default      per-position / per-step metrics of the probe (every row, not just the first
//   failure)
//   --layers     hidden states after attention and FFN of every layer; names the first departure
//   --audit N    candidate generates N tokens freely; the reference re-scores them teacher-forced
#include <nlohmann/json.hpp>

#include <cstdio>
#include <string>

#include "backend/registry.h"
#include "cli/commands.h"
#include "cli/generation_flags.h"
#include "cli/parity_flags.h"
#include "engine/backend_factory.h"
#include "engine/model_source.h"
#include "parity/diagnostics.h"
#include "parity/probe.h"
#include "tokenizer/vocab.h"
#include "util/error.h"

namespace lockstep::cli {

namespace {

struct ParityCmdFlags {
  ModelFlags model;  // includes the parity flags
  std::string prompt;
  bool json = false;
  bool layers = false;
  int audit = 0;
  double layer_tolerance = 0.05;
};

nlohmann::json row_json(const ParityRow& r) {
  return {{"kind", r.is_step ? "step" : "position"},
          {"index", r.index},
          {"total", r.total},
          {"token", r.token},
          {"cosine", r.m.finite ? nlohmann::json(r.m.cosine) : nlohmann::json(nullptr)},
          {"kl", r.m.finite ? nlohmann::json(r.m.kl) : nlohmann::json(nullptr)},
          {"max_abs", r.m.finite ? nlohmann::json(r.m.max_abs) : nlohmann::json(nullptr)},
          {"finite", r.m.finite},
          {"ref_top1", r.m.ref_top1},
          {"cand_top1", r.m.cand_top1},
          {"ref_margin", r.m.ref_margin}};
}

void print_rows(const std::vector<ParityRow>& rows) {
  std::printf("| %-14s | %6s | %10s | %10s | %9s | %-5s | %8s |\n", "where", "token", "cosine",
              "KL", "max|d|", "top-1", "margin");
  std::printf("|%s|%s|%s|%s|%s|%s|%s|\n", "----------------", "--------", "------------",
              "------------", "-----------", "-------", "----------");
  for (const auto& r : rows)
    std::printf("| %-14s | %6d | %10.6f | %10.3g | %9.4g | %-5s | %8.4f |\n", r.where().c_str(),
                r.token, r.m.cosine, r.m.kl, r.m.max_abs, r.m.top1_agree() ? "same" : "DIFF",
                r.m.ref_margin);
}

int run_parity(const ParityCmdFlags& f) {
  check_model_flags(f.model);
  ParityConfig cfg = resolve_parity(f.model.parity);
  if (f.audit < 0) throw InputError("--audit = " + std::to_string(f.audit) + " must be >= 1");
  if (!(f.layer_tolerance > 0)) throw InputError("--layer-tolerance must be > 0");
  const std::string path = resolve_model_path(f.model.model);
  Model model = Model::load(path);
  auto vocab = tokenizer::Vocab::from_gguf(*model.file);
  print_flag_notes(f.model, "parity");
  OpenRequest req = f.model.request();
  req.options.threads = resolve_threads(req.options.threads);
  req.options.n_ctx = resolve_n_ctx(model.hp, req.options.n_ctx);
  std::vector<int32_t> prompt;
  if (!f.prompt.empty()) prompt = vocab.tokenize(f.prompt, true, false);

  if (f.audit > 0) {
    if (prompt.empty()) prompt = make_probe(vocab, {}, 16, 1, req.options.n_ctx).tokens;
    AuditReport a = ParityDiagnostics::audit(model, req, cfg, prompt, f.audit);
    if (f.json) {
      nlohmann::json j{{"mode", "audit"},
                       {"candidate", a.candidate},
                       {"reference", reference_backend_entry().name},
                       {"prompt_tokens", a.prompt_tokens},
                       {"generated", a.generated},
                       {"first_divergence", a.first_divergence},
                       {"first_divergence_reason", a.first_divergence_reason},
                       {"rows", nlohmann::json::array()}};
      for (const auto& r : a.rows) j["rows"].push_back(row_json(r));
      std::printf("%s\n", j.dump(1).c_str());
    } else {
      std::printf(
          "audit: %s generated %d tokens freely after a %d-token prompt; cpu-ref re-scored "
          "them teacher-forced\n\n",
          a.candidate.c_str(), int(a.generated.size()), a.prompt_tokens);
      print_rows(a.rows);
      if (a.first_divergence < 0)
        std::printf("\nno divergence beyond the gate's rules\n");
      else
        std::printf("\nfirst divergence: %s\n", a.first_divergence_reason.c_str());
    }
    return a.first_divergence < 0 ? kExitOk : kExitParity;
  }

  Probe probe = make_probe(vocab, prompt, cfg.positions, cfg.steps, req.options.n_ctx);
  if (f.layers) {
    LayerReport L = ParityDiagnostics::compare_layers(model, req, probe.tokens, f.layer_tolerance);
    if (f.json) {
      nlohmann::json j{{"mode", "layers"},
                       {"candidate", L.candidate},
                       {"reference", reference_backend_entry().name},
                       {"positions", probe.tokens.size()},
                       {"tolerance", L.tolerance},
                       {"rows", nlohmann::json::array()}};
      for (const auto& r : L.rows)
        j["rows"].push_back({{"layer", r.layer},
                             {"stage", r.stage},
                             {"max_rel_err", r.max_rel_err},
                             {"worst_position", r.worst_position},
                             {"min_cosine", r.min_cosine}});
      if (L.first_departure >= 0) {
        const auto& r = L.rows[size_t(L.first_departure)];
        j["first_departure"] = {{"layer", r.layer},
                                {"stage", r.stage},
                                {"position", r.worst_position},
                                {"max_rel_err", r.max_rel_err}};
      } else {
        j["first_departure"] = nullptr;
      }
      std::printf("%s\n", j.dump(1).c_str());
    } else {
      std::printf("layers: %s vs cpu-ref over %zu positions, tolerance %.3g (relative L2)\n\n",
                  L.candidate.c_str(), probe.tokens.size(), L.tolerance);
      std::printf("| %5s | %-8s | %12s | %8s | %10s |\n", "layer", "stage", "max rel err",
                  "worst at", "min cosine");
      std::printf("|-------|----------|--------------|----------|------------|\n");
      for (const auto& r : L.rows)
        std::printf("| %5d | %-8s | %12.4g | %8d | %10.6f |\n", r.layer, r.stage.c_str(),
                    r.max_rel_err, r.worst_position, r.min_cosine);
      if (L.first_departure < 0) {
        std::printf("\nno departure beyond tolerance\n");
      } else {
        const auto& r = L.rows[size_t(L.first_departure)];
        std::printf("\nfirst departure: layer %d %s at position %d (relative error %.4g > %.3g)\n",
                    r.layer, r.stage.c_str(), r.worst_position, r.max_rel_err, L.tolerance);
      }
    }
    return L.first_departure < 0 ? kExitOk : kExitParity;
  }

  std::string candidate;
  ParityVerdict v = ParityDiagnostics::table(model, req, cfg, probe.tokens, &candidate);
  if (f.json) {
    nlohmann::json j{
        {"mode", "table"},
        {"candidate", candidate},
        {"reference", reference_backend_entry().name},
        {"status", v.status_name()},
        {"positions", v.positions},
        {"steps", v.steps},
        {"threshold", cfg.cosine_min},
        {"kl_max", cfg.kl_max},
        {"top1_margin", cfg.top1_margin},
        {"failure", v.failure_text()},
        {"worst", {{"cosine", v.worst_cosine}, {"kl", v.worst_kl}, {"max_abs", v.worst_max_abs}}},
        {"ms", v.ms},
        {"reference_ms", v.reference_ms},
        {"reference_prefill_ms", v.reference_prefill_ms},
        {"candidate_ms", v.candidate_ms},
        {"rows", nlohmann::json::array()}};
    for (const auto& r : v.rows) j["rows"].push_back(row_json(r));
    std::printf("%s\n", j.dump(1).c_str());
  } else {
    std::printf("parity: %s vs cpu-ref, %d positions (%s) + %d steps\n\n", candidate.c_str(),
                v.positions, probe.is_prompt ? "prompt" : "built-in probe", v.steps);
    print_rows(v.rows);
    std::printf("\nverdict: %s%s%s\n", v.status_name(),
                v.status == ParityVerdict::Status::Rejected ? ": " : "", v.failure_text().c_str());
  }
  return v.status == ParityVerdict::Status::Passed ? kExitOk : kExitParity;
}

}  // namespace

void add_parity(CLI::App& app, Action& action) {
  auto* cmd = app.add_subcommand("parity", "Compare a backend with the CPU reference, row by row");
  auto f = std::make_shared<ParityCmdFlags>();
  add_model_flags(cmd, f->model);
  cmd->add_option("-p,--prompt", f->prompt, "Probe with this text (else the built-in probe)");
  add_short_parity_names(cmd, f->model.parity);
  cmd->add_flag("--json", f->json, "Print one JSON object");
  cmd->add_flag("--layers", f->layers, "Compare hidden states after every layer");
  cmd->add_option("--layer-tolerance", f->layer_tolerance,
                  "Relative L2 error beyond which a layer departs (default 0.05)");
  cmd->add_option("--audit", f->audit, "Let the candidate generate N tokens, then re-score them");
  cmd->callback([&action, f] { action = [f] { return run_parity(*f); }; });
}

}  // namespace lockstep::cli
