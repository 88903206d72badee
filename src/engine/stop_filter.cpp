#include "engine/stop_filter.h"

#include <algorithm>

namespace lockstep {

StopFilter::StopFilter(std::vector<std::string> stops) {
  for (auto& s : stops)
    if (!s.empty()) stops_.push_back(std::move(s));
}

std::string StopFilter::push(const std::string& text) {
  if (stopped_) return {};
  text_ += text;
  // Held-back text never contains a whole stop string, so a new match starts at or after the
  // first byte not yet shown; the earliest match among all stop strings wins.
  size_t cut = std::string::npos;
  for (const auto& s : stops_) {
    const size_t at = text_.find(s, emitted_);
    if (at < cut) {
      cut = at;
      matched_ = s;
    }
  }
  if (cut != std::string::npos) {
    stopped_ = true;
    text_.resize(cut);
    std::string out = text_.substr(emitted_);
    emitted_ = text_.size();
    return out;
  }
  // Hold back the longest tail of the text that is a proper beginning of some stop string.
  size_t hold = 0;
  for (const auto& s : stops_) {
    const size_t max_len = std::min(s.size() - 1, text_.size() - emitted_);
    for (size_t len = max_len; len > hold; --len) {
      if (text_.compare(text_.size() - len, len, s, 0, len) == 0) {
        hold = len;
        break;
      }
    }
  }
  const size_t safe_end = text_.size() - hold;
  std::string out = text_.substr(emitted_, safe_end - emitted_);
  emitted_ = safe_end;
  return out;
}

std::string StopFilter::flush() {
  std::string out = text_.substr(emitted_);
  emitted_ = text_.size();
  return out;
}

}  // namespace lockstep
