#include "cli/generation_flags.h"

#include "backend/registry.h"
#include "cli/environment.h"
#include "cli/progress_line.h"
#include "engine/generator.h"

#include <chrono>
#include <cstdio>
#include <random>

#include "util/thread_pool.h"

namespace lockstep::cli {

CLI::Validator non_empty_path() {
  return CLI::Validator(
      [](const std::string& s) { return std::string(s.empty() ? "empty path" : ""); }, "");
}

std::string max_thread_limit_text() {
  return std::to_string(max_thread_count()) + " (4x the " + std::to_string(max_thread_count() / 4) +
         " logical CPUs)";
}

void add_model_flags(CLI::App* cmd, ModelFlags& f) {
  // A repeated flag takes its last value, as in llama.cpp (options registered after this too).
  cmd->option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  // An empty model string means "not given" (the default model); an explicit -m "" is a mistake.
  cmd->add_option("-m,--model", f.model,
                  "GGUF model (default: $LOCKSTEP_MODEL, else the SmolLM2-135M-Instruct download "
                  "of scripts/get-default-model.sh)")
      ->check(non_empty_path());
  cmd->add_option("-t,--threads", f.threads, "CPU threads (0: one per physical core)");
  cmd->add_option(
      "-c,--ctx-size", f.n_ctx,
      "context size in tokens (0: min(training, " + std::to_string(kDefaultContextCap) + "))");
  std::string backends = "auto (the best available, gated)";
  for (const BackendEntry& e : backend_registry())
    backends += std::string(" | ") + e.name + ": " + e.help;
  cmd->add_option("--backend", f.backend, backends)->each([&f](const std::string&) {
    f.backend_given = true;
  });
  add_parity_flags(cmd, f.parity);
  // -ngl and -fa are spelled with one dash in llama.cpp; run_main rewrites them to these names.
  cmd->add_option("--n-gpu-layers,--gpu-layers", f.n_gpu_layers,
                  "llama.cpp's -ngl: 0 runs on the CPU (--backend cpu), any other count on the GPU "
                  "(--backend cuda); lockstep keeps every layer on one device")
      ->type_name("N");
  cmd->add_option("-b,--batch-size", f.batch_size,
                  "accepted for llama.cpp compatibility; lockstep chooses its prompt batch itself");
  cmd->add_option_function<std::string>(
         "--flash-attn", [&f](const std::string& v) { f.flash_attn = v.empty() ? "on" : v; },
         "llama.cpp's -fa [on|off|auto], accepted and ignored: lockstep picks its attention "
         "kernels itself (CUDA prefill: flash on tensor cores)")
      ->expected(0, 1)
      ->type_name("[on|off|auto]");
  cmd->add_flag("--quiet", f.quiet,
                "no progress line on stderr while the model loads and the gate runs (it is shown "
                "only when stderr is a terminal)");
}

std::string ModelFlags::backend_name() const {
  if (backend_given || n_gpu_layers.empty() || n_gpu_layers == "auto") return backend;
  return backend_for_gpu_layers(n_gpu_layers != "0");
}

void add_sampling_flags(CLI::App* cmd, SamplingFlags& f) {
  auto& p = f.params;
  cmd->add_option("--temp,--temperature", p.temperature, "temperature (0: greedy)")
      ->capture_default_str();
  cmd->add_option("--top-k", p.top_k, "top-k (0: off)")->capture_default_str();
  cmd->add_option("--top-p", p.top_p, "top-p (1: off)")->capture_default_str();
  cmd->add_option("--min-p", p.min_p, "min-p (0: off)")->capture_default_str();
  cmd->add_option("--repeat-penalty", p.repeat_penalty, "repetition penalty (1: off)")
      ->capture_default_str();
  cmd->add_option("--repeat-last-n", p.repeat_last_n,
                  "tokens the penalty looks back over (0: off, -1: whole context)")
      ->capture_default_str();
  cmd->add_option("--presence-penalty", p.presence_penalty,
                  "OpenAI's presence penalty, in [-2, 2]: subtracted from the logit of every "
                  "token already generated (0: off)")
      ->capture_default_str();
  cmd->add_option("--frequency-penalty", p.frequency_penalty,
                  "OpenAI's frequency penalty, in [-2, 2]: subtracted once per earlier "
                  "generation of the token (0: off)")
      ->capture_default_str();
  cmd->add_option("-s,--seed", f.seed, "RNG seed (-1: random)")->capture_default_str();
  cmd->add_flag("--ignore-eos", f.ignore_eos,
                "never sample an end-of-generation token (only -n, --stop or the context end "
                "the answer)");
}

void check_model_flags(const ModelFlags& f) {
  if (f.threads < 0) throw CLI::ValidationError("--threads", "must be >= 0 (0: all)");
  if (f.threads > max_thread_count())
    throw CLI::ValidationError("--threads", "must be at most " + max_thread_limit_text());
  if (f.n_ctx < 0) throw CLI::ValidationError("--ctx-size", "must be >= 0 (0: model default)");
  if (std::string err = validate_backend_name(f.backend); !err.empty())
    throw CLI::ValidationError(err);
  if (!f.n_gpu_layers.empty()) {
    const std::string& n = f.n_gpu_layers;
    const bool number = n.find_first_not_of("0123456789") == std::string::npos && n.size() < 10;
    if (!number && n != "all" && n != "auto")
      throw CLI::ValidationError("--n-gpu-layers",
                                 "'" + n + "' is not a layer count (0, 1, ...), all or auto");
    const bool on_device = !(number && std::stoi(n) == 0);
    const std::string implied = n == "auto" ? "auto" : backend_for_gpu_layers(on_device);
    // -ngl 0 and the CPU reference agree: both keep every layer off the GPU.
    const BackendEntry* given = find_backend(f.backend);
    const bool agrees = f.backend == implied || (!on_device && given && given->is_reference);
    if (f.backend_given && !agrees)
      throw CLI::ValidationError("--n-gpu-layers", "-ngl " + n + " means --backend " + implied +
                                                       ", but --backend " + f.backend +
                                                       " was given; give one of them");
  }
  if (!f.flash_attn.empty() && f.flash_attn != "on" && f.flash_attn != "off" &&
      f.flash_attn != "auto")
    throw CLI::ValidationError("--flash-attn", "'" + f.flash_attn + "' is not on, off or auto");
  if (f.batch_size < 0) throw CLI::ValidationError("--batch-size", "must be >= 1");
}

void print_flag_notes(const ModelFlags& f, const char* cmd) {
  if (f.batch_size > 0)
    std::fprintf(stderr,
                 "lockstep %s: note: -b/--batch-size %d accepted and ignored; lockstep processes "
                 "the whole prompt in the batches its backend chooses\n",
                 cmd, f.batch_size);
  if (!f.flash_attn.empty())
    std::fprintf(stderr,
                 "lockstep %s: note: -fa/--flash-attn %s accepted and ignored; lockstep's "
                 "attention has a single form on each backend\n",
                 cmd, f.flash_attn.c_str());
}

void warn_ctx_beyond_training(const char* cmd, int n_ctx, int64_t n_ctx_train) {
  if (n_ctx_train > 0 && n_ctx > n_ctx_train)
    std::fprintf(stderr,
                 "lockstep %s: warning: -c %d is beyond the model's trained context of %lld "
                 "tokens; text past position %lld may degrade\n",
                 cmd, n_ctx, static_cast<long long>(n_ctx_train),
                 static_cast<long long>(n_ctx_train));
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
  ProgressLine progress(progress_wanted(flags.quiet));
  progress.stage("loading " + path);
  m.model = std::make_unique<Model>(Model::load(path));
  m.vocab = std::make_unique<tokenizer::Vocab>(tokenizer::Vocab::from_gguf(*m.model->file));
  check_vocab_matches(*m.model, *m.vocab);
  if (make_prompt) m.prompt = make_prompt(*m.vocab);
  progress.stage(parity.policy == ParityPolicy::Off
                     ? std::string("opening the backend")
                     : "parity gate: the candidate against the CPU reference, " +
                           std::to_string(parity.positions) + " positions + " +
                           std::to_string(parity.steps) + " steps");
  m.serving = open_backend(*m.model, *m.vocab, flags.request(), parity, m.prompt);
  progress.clear();
  m.backend_used = m.serving.backend_used;
  m.parity = m.serving.verdict;
  m.load_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  m.summary = summarize(*m.model, path);
  m.threads = resolve_threads(flags.threads);
  std::fprintf(stderr, "lockstep %s: %s | %s | %s | backend %s | threads %d | ctx %d%s\n", cmd,
               path.c_str(), m.summary.architecture.c_str(), m.summary.file_type.c_str(),
               m.serving.describe().c_str(), m.threads, m.serving.backend->n_ctx(),
               extra_header.c_str());
  return m;
}

OpenRequest ModelFlags::request() const {
  OpenRequest r;
  r.backend = backend_name();
  r.options = environment_knobs().backend;
  r.verdict_cache_dir = environment_knobs().verdict_cache_dir;
  r.options.threads = threads;
  r.options.n_ctx = n_ctx;
  if (batch_invariant) r.options.cuda.batch_gemm_min = r.options.cuda.batch_mmq_min = 0;
  return r;
}

void add_batch_invariant_flag(CLI::App* cmd, ModelFlags& flags) {
  cmd->add_flag("--batch-invariant", flags.batch_invariant,
                "cuda: every batched decode step on the batch-invariant kernels (a request's "
                "tokens never depend on the others in its batch; slower for large batches)");
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
  j["cached"] = v.cached;
  return j;
}

}  // namespace lockstep::cli
