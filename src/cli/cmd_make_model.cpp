// `lockstep make-model`: writes a synthetic model (random weights, real shapes, working
// tokenizer) from a preset. See src/model/synthetic.h.
#include <sys/stat.h>

#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <thread>

#include "cli/commands.h"
#include "cli/generation_flags.h"
#include "cli/progress_line.h"
#include "model/presets.h"
#include "model/synthetic.h"
#include "util/error.h"
#include "util/thread_pool.h"

namespace lockstep::cli {

namespace {

struct MakeModelOptions {
  std::string preset;
  std::string arch;
  std::string quant = "f32";
  std::string seed = "1";
  std::string output;
  int threads = 0;
  bool quiet = false;
};

int make_model(const MakeModelOptions& o) {
  const ModelPreset* preset = find_model_preset(o.preset);
  if (!preset)
    throw InputError("unknown preset '" + o.preset + "' (presets: " + model_preset_names() + ")");
  const QuantScheme* quant = find_quant_scheme(o.quant);
  if (!quant)
    throw InputError("unknown --quant '" + o.quant + "' (types: " + quant_scheme_names() + ")");
  std::optional<Arch> arch;
  if (o.arch == "qwen2") arch = Arch::Qwen2;
  if (o.arch == "llama") arch = Arch::Llama;
  if (o.arch == "qwen3") arch = Arch::Qwen3;
  if (o.arch == "phi3") arch = Arch::Phi3;
  if (o.arch == "gemma2") arch = Arch::Gemma2;
  if (o.arch == "gemma3") arch = Arch::Gemma3;
  // Parsed here rather than by CLI11, which would wrap "-1" around to 2^64 - 1.
  uint64_t seed = 0;
  const char* end = o.seed.data() + o.seed.size();
  if (auto [p, ec] = std::from_chars(o.seed.data(), end, seed); ec != std::errc() || p != end)
    throw InputError("--seed '" + o.seed + "' is not an integer in 0.." +
                     std::to_string(UINT64_MAX));
  const SyntheticPlan plan = plan_synthetic_model(*preset, arch, *quant, seed);
  const int threads =
      o.threads > 0 ? o.threads : std::max(1, int(std::thread::hardware_concurrency()));

  // The file is written next to the target and renamed over it, which would silently replace a
  // symlink, a device node or a FIFO rather than write through it: only a regular file (or
  // nothing) may be replaced.
  struct stat st {};
  if (lstat(o.output.c_str(), &st) == 0 && !S_ISREG(st.st_mode))
    throw InputError(o.output + ": exists and is not a regular file (" +
                     (S_ISLNK(st.st_mode)   ? "a symlink"
                      : S_ISDIR(st.st_mode) ? "a directory"
                                            : "a device, FIFO or socket") +
                     "); refusing to replace it (-o)");

  const auto start = std::chrono::steady_clock::now();
  {
    ProgressLine progress(progress_wanted(o.quiet));
    progress.stage("make-model: writing " + o.output);
    write_synthetic_model(plan, o.output, threads, uint64_t(4) << 20,
                          [&progress](double done) { progress.fraction(done); });
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::fprintf(stderr,
               "make-model: wrote %s (%s %s, %s, seed %llu): %zu tensors, %.1f MiB in %.2f s with "
               "%d threads\n",
               o.output.c_str(), plan.hp.arch_name.c_str(), preset->name.c_str(),
               quant->name.c_str(), static_cast<unsigned long long>(seed), plan.tensors.size(),
               double(plan.tensor_bytes()) / (1 << 20), seconds, threads);
  return kExitOk;
}

}  // namespace

void add_make_model(CLI::App& app, Action& action) {
  auto o = std::make_shared<MakeModelOptions>();
  auto* cmd = app.add_subcommand(
      "make-model", "Write a synthetic model: random weights with a real model's shapes");
  cmd->add_option("--preset", o->preset, "Model shape: " + model_preset_names())->required();
  cmd->add_option("--arch", o->arch, "Architecture (required for tiny; must match the others)")
      ->check(CLI::IsMember({"qwen2", "qwen3", "llama", "phi3", "gemma2", "gemma3"}));
  cmd->add_option("--quant", o->quant, "Tensor types like llama-quantize: " + quant_scheme_names())
      ->capture_default_str();
  cmd->add_option("--seed", o->seed, "Seed of the weights")->capture_default_str();
  cmd->add_option("-o,--output", o->output, "Output GGUF file")->required();
  cmd->add_option("-t,--threads", o->threads, "Threads (default: all cores)")
      ->check(CLI::PositiveNumber);
  cmd->add_flag("--quiet", o->quiet, "no progress line on stderr (shown only at a terminal)");
  cmd->callback([&action, o] {
    if (o->threads > max_thread_count())
      throw CLI::ValidationError("--threads", "must be at most " + max_thread_limit_text());
    action = [o] { return make_model(*o); };
  });
}

}  // namespace lockstep::cli
