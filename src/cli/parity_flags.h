// Flags of the parity gate, shared by run, chat, bench, parity and qa.
#pragma once

#include <CLI/CLI.hpp>
#include <string>

#include "parity/parity_config.h"

namespace lockstep::cli {

struct ParityFlags {
  std::string policy = "auto";  // --parity auto|strict|off
  std::string steps;            // --parity-steps (text: validated into 1..16); empty = env/default
  double threshold = ParityConfig{}.cosine_min;
  int positions = ParityConfig{}.positions;
};

void add_parity_flags(CLI::App* cmd, ParityFlags& flags);
// Adds --steps and --positions as aliases of --parity-steps and --parity-positions (registered
// by add_parity_flags), for the `parity` command, where every flag is about the gate.
void add_short_parity_names(CLI::App* cmd, ParityFlags& flags);
// LOCKSTEP_PARITY_STEPS first, then the flags (a flag wins). Bad values are InputErrors (exit 2).
ParityConfig resolve_parity(const ParityFlags& flags);

}  // namespace lockstep::cli
