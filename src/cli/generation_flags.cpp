#include "cli/generation_flags.h"

#include "engine/generator.h"

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
  add_parity_flags(cmd, f.parity);
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
                                const std::string& extra_header, const PromptBuilder& make_prompt) {
  const ParityConfig parity = resolve_parity(flags.parity);
  const std::string path = resolve_model_path(flags.model);
  const auto t0 = std::chrono::steady_clock::now();
  LoadedModel m;
  m.model = std::make_unique<Model>(Model::load(path));
  m.vocab = std::make_unique<tokenizer::Vocab>(tokenizer::Vocab::from_gguf(*m.model->file));
  check_vocab_matches(*m.model, *m.vocab);
  if (make_prompt) m.prompt = make_prompt(*m.vocab);
  OpenResult opened = open_backend(*m.model, *m.vocab, flags.choice(), parity, m.prompt);
  m.backend = std::move(opened.backend);
  m.backend_used = opened.backend_used;
  m.parity = opened.verdict;
  m.prompt_tokens_cached = opened.prompt_tokens_cached;
  m.last_logits = std::move(opened.last_logits);
  m.load_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  m.summary = summarize(*m.model, path);
  m.threads = resolve_threads(flags.threads);
  std::fprintf(stderr, "lockstep %s: %s | %s | %s | backend %s | threads %d | ctx %d%s\n", cmd,
               path.c_str(), m.summary.architecture.c_str(), m.summary.file_type.c_str(),
               (m.backend_used + " (" + m.parity.summary() + ")").c_str(), m.threads,
               m.backend->n_ctx(), extra_header.c_str());
  return m;
}

std::vector<int32_t> adopt_cached_prompt(LoadedModel& m, Session& session) {
  const auto cached = size_t(m.prompt_tokens_cached);
  if (cached > 0) session.adopt_prefix({m.prompt.data(), cached}, m.last_logits);
  return {m.prompt.begin() + ptrdiff_t(cached), m.prompt.end()};
}

nlohmann::ordered_json parity_json(const LoadedModel& m) {
  const ParityVerdict& v = m.parity;
  nlohmann::ordered_json j;
  j["status"] = v.status_name();
  j["candidate"] = v.candidate;
  j["steps"] = v.steps;
  j["positions"] = v.positions;
  j["threshold"] = v.config.cosine_min;
  j["worst"] = {{"metric", "cosine"},
                {"value", v.worst_cosine},
                {"at", v.worst_cosine_at},
                {"kl", v.worst_kl},
                {"max_abs", v.worst_max_abs}};
  j["failure"] = v.failure_text();
  j["ms"] = v.ms;
  j["reference_ms"] = v.reference_ms;
  j["reference_prefill_ms"] = v.reference_prefill_ms;
  j["candidate_ms"] = v.candidate_ms;
  j["reference_overlapped"] = v.reference_overlapped;
  return j;
}

}  // namespace lockstep::cli
