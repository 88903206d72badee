#include "cli/parity_flags.h"

#include "cli/environment.h"
#include "util/error.h"

namespace lockstep::cli {

void add_parity_flags(CLI::App* cmd, ParityFlags& flags) {
  cmd->add_option("--parity", flags.policy,
                  "Parity gate policy: auto (fall back to the CPU on failure), strict (fail), off "
                  "(no verification, warns)");
  cmd->add_option("--parity-steps", flags.steps,
                  "Autoregressive steps the gate compares (1-16, default 3; env "
                  "LOCKSTEP_PARITY_STEPS)");
  cmd->add_option(
      "--parity-threshold", flags.threshold,
      "Minimum cosine similarity of the logits at every position and step (default 0.99)");
  cmd->add_option("--parity-positions", flags.positions,
                  "Prompt positions the gate compares before the steps (default 64)");
}

ParityConfig resolve_parity(const ParityFlags& flags) {
  ParityConfig cfg;
  cfg.policy = parse_parity_policy(flags.policy);
  if (auto env_steps = environment_knobs().parity_steps) cfg.steps = *env_steps;
  if (!flags.steps.empty()) cfg.steps = parse_parity_steps(flags.steps, "--parity-steps");
  if (!(flags.threshold > 0 && flags.threshold <= 1))
    throw InputError("--parity-threshold = " + std::to_string(flags.threshold) +
                     " is not in (0, 1]");
  cfg.cosine_min = flags.threshold;
  if (flags.positions < 1 || flags.positions > 4096)
    throw InputError("--parity-positions = " + std::to_string(flags.positions) +
                     " is not in 1..4096");
  cfg.positions = flags.positions;
  return cfg;
}

}  // namespace lockstep::cli
