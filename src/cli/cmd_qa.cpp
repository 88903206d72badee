// `lockstep qa -m MODEL [--json]`: golden-output checks on every available backend, plus the
// parity verdict per backend. Exit 0 when every check passes, 1 otherwise.
#include <nlohmann/json.hpp>

#include <cstdio>

#include "backend/registry.h"
#include "cli/commands.h"
#include "cli/generation_flags.h"
#include "engine/qa.h"

namespace lockstep::cli {

namespace {

struct QaFlags {
  ModelFlags model;
  bool json = false;
  int n_predict = 48;
  std::vector<std::string> backends;
};

int run_qa_command(const QaFlags& f) {
  check_model_flags(f.model);
  print_flag_notes(f.model, "qa");
  const std::string path = resolve_model_path(f.model.model);
  Model model = Model::load(path);
  auto vocab = tokenizer::Vocab::from_gguf(*model.file);
  warn_ctx_beyond_training("qa", f.model.n_ctx, model.hp.n_ctx_train);
  QaOptions opt;
  opt.backends = f.backends;
  // -ngl names one device when --backends names none.
  if (opt.backends.empty() && !f.model.n_gpu_layers.empty() && f.model.backend_name() != "auto")
    opt.backends = {f.model.backend_name()};
  for (const auto& b : opt.backends)
    if (auto err = validate_backend_name(b); !err.empty() || b == "auto")
      throw InputError(err.empty() ? "--backends: name backends explicitly (auto is not one)"
                                   : err);
  opt.backend_options = f.model.request().options;
  opt.max_tokens = f.n_predict;
  opt.parity = resolve_parity(f.model.parity);
  QaReport r = run_qa(model, vocab, opt);
  if (f.json) {
    nlohmann::ordered_json j;
    j["model"] = path;
    j["passed"] = r.passed();
    j["mode"] = r.completion ? "completion" : "chat";
    j["checks"] = nlohmann::json::array();
    for (const auto& c : r.checks)
      j["checks"].push_back(
          {{"backend", c.backend}, {"check", c.name}, {"passed", c.passed}, {"detail", c.detail}});
    j["parity"] = nlohmann::json::object();
    for (const auto& [name, v] : r.verdicts)
      j["parity"][name] = {{"status", v.status_name()},
                           {"worst_cosine", v.worst_cosine},
                           {"worst_kl", v.worst_kl},
                           {"failure", v.failure_text()},
                           {"ms", v.ms}};
    std::printf("%s\n", j.dump(1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
  } else {
    std::printf("qa: %s (%s)\n\n", path.c_str(),
                r.completion ? "no chat template: plain-text completions" : "chat answers");
    for (const auto& c : r.checks) {
      std::string d = c.detail;
      for (char& ch : d)
        if (ch == '\n') ch = ' ';
      if (d.size() > 70) d = d.substr(0, 67) + "...";
      std::printf("%-4s %-8s %-38s %s\n", c.passed ? "ok" : "FAIL", c.backend.c_str(),
                  c.name.c_str(), d.c_str());
    }
    std::printf("\n%s\n", r.passed() ? "all checks passed" : "some checks FAILED");
  }
  return r.passed() ? kExitOk : kExitRuntime;
}

}  // namespace

void add_qa(CLI::App& app, Action& action) {
  auto* cmd = app.add_subcommand("qa", "Golden-output checks and parity verdicts on every backend");
  auto f = std::make_shared<QaFlags>();
  add_model_flags(cmd, f->model);
  cmd->add_flag("--json", f->json, "Print one JSON object");
  cmd->add_option("-n,--n-predict", f->n_predict, "Tokens per answer (default 48)");
  // One flag for the backends, spelled either way (--backend as in every other command).
  cmd->remove_option(cmd->get_option("--backend"));
  cmd->add_option("--backends,--backend", f->backends,
                  "Backends to check, comma-separated (default: every available one)")
      ->delimiter(',');
  cmd->callback([&action, f] {
    if (!f->model.n_gpu_layers.empty() && !f->backends.empty())
      throw CLI::ValidationError("--n-gpu-layers",
                                 "-ngl and --backends both name backends; give one");
    if (f->n_predict < 1) throw CLI::ValidationError("--n-predict", "must be >= 1");
    action = [f] { return run_qa_command(*f); };
  });
}

}  // namespace lockstep::cli
