// The parity gate's knobs, their defaults and the basis for each default (docs/parity.md).
#pragma once

#include <optional>
#include <string>

namespace lockstep {

enum class ParityPolicy { Auto, Strict, Off };

struct ParityConfig {
  // Autoregressive steps compared after the prefill (LOCKSTEP_PARITY_STEPS / --parity-steps).
  int steps = 3;
  // Prompt positions compared in the prefill (the probe segment), --parity-positions.
  int positions = 64;
  // Reject when cosine(ref, cand) < this at any position or step (--parity-threshold).
  double cosine_min = 0.99;
  // Reject when KL(P_ref || P_cand) exceeds this. Basis: two correct implementations of the same
  // model (llama.cpp with an F16 vs an F32 KV cache, stories260K Q8_0) differ by at most
  // KL 0.0022 (cosine 0.9990) over 69 positions; 0.05 leaves >20x headroom for honest numeric
  // differences while a drifting cache (cosine 0.72) is orders of magnitude above it.
  double kl_max = 0.05;
  // A top-1 disagreement rejects only when the reference's top-1 logit leads its top-2 by more
  // than this. Basis: the same two correct implementations move single logits by up to 0.44, so a
  // flip between candidates closer than 0.5 is within honest noise; beyond it, it is a defect.
  double top1_margin = 0.5;
  ParityPolicy policy = ParityPolicy::Auto;

  static constexpr int kMinSteps = 1;
  static constexpr int kMaxSteps = 16;
};

// Parses a step count from a flag or LOCKSTEP_PARITY_STEPS. Anything but an integer in 1..16 is a
// usage error (InputError naming `source`), never a silent default.
int parse_parity_steps(const std::string& text, const std::string& source);
ParityPolicy parse_parity_policy(const std::string& text);  // auto|strict|off, else InputError
const char* parity_policy_name(ParityPolicy policy);

}  // namespace lockstep
