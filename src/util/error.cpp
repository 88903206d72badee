#include "util/error.h"

#include <algorithm>
#include <cstdio>

namespace lockstep {

std::string printable(std::string_view text, size_t max_bytes) {
  std::string out;
  out.reserve(std::min(text.size(), max_bytes));
  for (size_t k = 0; k < text.size() && k < max_bytes; ++k) {
    const auto c = static_cast<unsigned char>(text[k]);
    if (c == '\n') {
      out += "\\n";
    } else if (c < 0x20 || c == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    } else {
      out += char(c);
    }
  }
  if (text.size() > max_bytes) out += "...";
  return out;
}

std::string one_line(std::string_view message) {
  return printable(message);
}

}  // namespace lockstep
