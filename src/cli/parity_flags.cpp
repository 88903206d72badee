#include "cli/parity_flags.h"

#include "cli/environment.h"
#include "util/error.h"

namespace lockstep::cli {

namespace {

void add_steps_option(CLI::App* cmd, ParityFlags& flags, const std::string& names) {
  // Text, so that a bad value gets the gate's own message; shown as the number it is.
  cmd->add_option(names, flags.steps,
                  "Autoregressive steps the gate compares (1-16, default 3; env "
                  "LOCKSTEP_PARITY_STEPS)")
      ->type_name("INT");
}

void add_positions_option(CLI::App* cmd, ParityFlags& flags, const std::string& names) {
  cmd->add_option(names, flags.positions,
                  "Prompt positions the gate compares before the steps (default 64)");
}

}  // namespace

void add_short_parity_names(CLI::App* cmd, ParityFlags& flags) {
  cmd->remove_option(cmd->get_option("--parity-steps"));
  cmd->remove_option(cmd->get_option("--parity-positions"));
  add_steps_option(cmd, flags, "--parity-steps,--steps");
  add_positions_option(cmd, flags, "--parity-positions,--positions");
}

void add_parity_flags(CLI::App* cmd, ParityFlags& flags) {
  cmd->add_option("--parity", flags.policy,
                  "Parity gate policy: auto (fall back to the CPU on failure), strict (fail), off "
                  "(no verification, warns)");
  add_steps_option(cmd, flags, "--parity-steps");
  cmd->add_option(
      "--parity-threshold", flags.threshold,
      "Minimum cosine similarity of the logits at every position and step (default 0.99)");
  add_positions_option(cmd, flags, "--parity-positions");
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
