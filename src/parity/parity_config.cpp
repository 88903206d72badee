#include "parity/parity_config.h"

#include "util/error.h"

namespace lockstep {

int parse_parity_steps(const std::string& text, const std::string& source) {
  const std::string range =
      std::to_string(ParityConfig::kMinSteps) + ".." + std::to_string(ParityConfig::kMaxSteps);
  // Digits only (no sign, no spaces, no exponent), at most two of them.
  bool digits = !text.empty() && text.size() <= 2;
  for (char c : text) digits = digits && c >= '0' && c <= '9';
  const int v = digits ? std::stoi(text) : 0;
  if (!digits || v < ParityConfig::kMinSteps || v > ParityConfig::kMaxSteps)
    throw InputError(source + " = '" + text + "' is not an integer in " + range);
  return v;
}

ParityPolicy parse_parity_policy(const std::string& text) {
  if (text == "auto") return ParityPolicy::Auto;
  if (text == "strict") return ParityPolicy::Strict;
  if (text == "off") return ParityPolicy::Off;
  throw InputError("--parity = '" + text + "' is not one of auto, strict, off");
}

const char* parity_policy_name(ParityPolicy policy) {
  switch (policy) {
    case ParityPolicy::Auto:
      return "auto";
    case ParityPolicy::Strict:
      return "strict";
    case ParityPolicy::Off:
      return "off";
  }
  return "auto";
}

}  // namespace lockstep
