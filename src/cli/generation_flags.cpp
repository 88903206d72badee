#include "cli/generation_flags.h"

#include <chrono>
#include <cstdio>
#include <random>

namespace lockstep::cli {

void add_model_flags(CLI::App* cmd, ModelFlags& f) {
  // A repeated flag takes its last value, as in llama.cpp (options registered after this too).
  cmd->option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  cmd->add_option("-m,--model", f.model,
                  "GGUF model (default: $LOCKSTEP_MODEL, else the SmolLM2-135M-Instruct download "
                  "of scripts/get-default-model.sh)");
  cmd->add_option("-t,--threads", f.threads, "CPU threads (0: one per physical core)");
  cmd->add_option("-c,--ctx-size", f.n_ctx, "context size in tokens (0: min(training, 4096))");
  cmd->add_option("--backend", f.backend, "cpu | cpu-ref | cuda | auto");
}

void add_sampling_flags(CLI::App* cmd, SamplingFlags& f) {
  auto& p = f.params;
  cmd->add_option("--temp", p.temperature, "temperature (0: greedy)")->capture_default_str();
  cmd->add_option("--top-k", p.top_k, "top-k (0: off)")->capture_default_str();
  cmd->add_option("--top-p", p.top_p, "top-p (1: off)")->capture_default_str();
  cmd->add_option("--min-p", p.min_p, "min-p (0: off)")->capture_default_str();
  cmd->add_option("--repeat-penalty", p.repeat_penalty, "repetition penalty (1: off)")
      ->capture_default_str();
  cmd->add_option("--repeat-last-n", p.repeat_last_n,
                  "tokens the penalty looks back over (0: off, -1: whole context)")
      ->capture_default_str();
  cmd->add_option("--seed", f.seed, "RNG seed (-1: random)")->capture_default_str();
}

void check_model_flags(const ModelFlags& f) {
  if (f.threads < 0) throw CLI::ValidationError("--threads", "must be >= 0 (0: all)");
  if (f.n_ctx < 0) throw CLI::ValidationError("--ctx-size", "must be >= 0 (0: model default)");
  if (std::string err = validate_backend_name(f.backend); !err.empty())
    throw CLI::ValidationError(err);
}

void check_sampling_flags(const SamplingFlags& f) {
  if (std::string err = validate(f.params); !err.empty()) throw CLI::ValidationError(err);
  if (f.seed < -1) throw CLI::ValidationError("--seed", "must be >= 0, or -1 for a random seed");
}

SamplingParams resolve_sampling(const SamplingFlags& f) {
  SamplingParams p = f.params;
  p.seed = f.seed >= 0 ? uint64_t(f.seed)
                       : (uint64_t(std::random_device{}()) << 32) ^ std::random_device{}();
  return p;
}

LoadedModel load_for_generation(const ModelFlags& flags, const char* cmd,
                                const std::string& extra_header) {
  const std::string path = resolve_model_path(flags.model);
  const auto t0 = std::chrono::steady_clock::now();
  LoadedModel m;
  m.model = std::make_unique<Model>(Model::load(path));
  m.vocab = std::make_unique<tokenizer::Vocab>(tokenizer::Vocab::from_gguf(*m.model->file));
  std::string note;
  m.backend = make_backend(*m.model, flags.choice(), &note);
  m.load_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  m.summary = summarize(*m.model, path);
  m.threads = resolve_threads(flags.threads);
  std::fprintf(stderr, "lockstep %s: %s | %s | %s | backend %s | threads %d | ctx %d%s\n", cmd,
               path.c_str(), m.summary.architecture.c_str(), m.summary.file_type.c_str(),
               m.backend->name().c_str(), m.threads, m.backend->n_ctx(), extra_header.c_str());
  if (!note.empty()) std::fprintf(stderr, "lockstep %s: note: %s\n", cmd, note.c_str());
  return m;
}

}  // namespace lockstep::cli
