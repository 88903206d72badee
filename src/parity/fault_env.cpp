#include "parity/fault_env.h"

#include <charconv>
#include <cstdlib>
#include <limits>
#include <sstream>
#include <vector>

#include "util/error.h"

namespace lockstep {

namespace {

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> parts;
  std::stringstream ss(s);
  for (std::string p; std::getline(ss, p, sep);) parts.push_back(p);
  return parts;
}

double number(const std::string& s, const std::string& whole) {
  size_t used = 0;
  double v = 0;
  try {
    v = std::stod(s, &used);
  } catch (...) {
    used = 0;
  }
  if (s.empty() || used != s.size())
    throw InputError("LOCKSTEP_FAULT = '" + whole + "': '" + s + "' is not a number");
  return v;
}

// A layer or position: a decimal integer in 0..INT_MAX (not "1e30", which as a double would
// convert to an int with undefined behaviour).
int index(const std::string& s, const std::string& whole) {
  int v = 0;
  const char* end = s.data() + s.size();
  const auto [p, ec] = std::from_chars(s.data(), end, v);
  if (s.empty() || ec != std::errc() || p != end || v < 0)
    throw InputError("LOCKSTEP_FAULT = '" + whole + "': '" + s + "' is not an integer in 0.." +
                     std::to_string(std::numeric_limits<int>::max()));
  return v;
}

}  // namespace

FaultSpec parse_fault(const std::string& text) {
  auto p = split(text, ':');
  FaultSpec f;
  if (!p.empty() && p[0] == "kv_drift" && p.size() == 2) {
    f.kind = FaultSpec::KvDrift;
    f.magnitude = float(number(p[1], text));
  } else if (!p.empty() && p[0] == "layer_corrupt" && p.size() == 4) {
    f.kind = FaultSpec::LayerCorrupt;
    f.layer = index(p[1], text);
    f.position = index(p[2], text);
    f.magnitude = float(number(p[3], text));
  } else if (!p.empty() && p[0] == "batch_corrupt" && p.size() == 3) {
    f.kind = FaultSpec::BatchCorrupt;
    f.layer = int(number(p[1], text));
    f.magnitude = float(number(p[2], text));
  } else if (!p.empty() && p[0] == "nan" && p.size() == 2) {
    f.kind = FaultSpec::NaN;
    f.position = index(p[1], text);
  } else if (!p.empty() && p[0] == "after_calls" && p.size() == 3) {
    f.kind = FaultSpec::AfterCalls;
    f.calls = index(p[1], text);
    f.magnitude = float(number(p[2], text));
  } else if (!p.empty() && p[0] == "from_position" && p.size() == 3) {
    f.kind = FaultSpec::FromPosition;
    f.position = index(p[1], text);
    f.magnitude = float(number(p[2], text));
  } else {
    throw InputError(
        "LOCKSTEP_FAULT = '" + text +
        "' is not kv_drift:MAG, layer_corrupt:LAYER:POS:MAG, batch_corrupt:LAYER:MAG, nan:POS, "
        "after_calls:CALLS:MAG or from_position:POS:MAG");
  }
  return f;
}

}  // namespace lockstep
