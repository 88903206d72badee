#include "tokenizer/jinja/text.h"

#include "tokenizer/unicode.h"

namespace lockstep::tokenizer::jinja {

namespace {

std::vector<uint32_t> decode_with_offsets(const std::string& s, std::vector<size_t>& offsets) {
  std::vector<uint32_t> cps;
  offsets.clear();
  size_t i = 0;
  while (i < s.size()) {
    offsets.push_back(i);
    size_t n = utf8_len(uint8_t(s[i]));
    if (i + n > s.size()) n = 1;
    const auto one = utf8_decode(std::string_view(s).substr(i, n));
    if (one.size() != 1) n = 1;
    cps.push_back(one.size() == 1 ? one[0] : kReplacementChar);
    i += n;
  }
  offsets.push_back(s.size());
  return cps;
}

bool in_chars(uint32_t cp, const std::vector<uint32_t>& set) {
  for (uint32_t c : set)
    if (c == cp) return true;
  return false;
}

// Lower/upper case of ASCII and Latin-1 letters (what chat templates meet in role names).
uint32_t lower_cp(uint32_t c) {
  if ((c >= 'A' && c <= 'Z') || (c >= 0xC0 && c <= 0xDE && c != 0xD7)) return c + 32;
  return c;
}
uint32_t upper_cp(uint32_t c) {
  if ((c >= 'a' && c <= 'z') || (c >= 0xE0 && c <= 0xFE && c != 0xF7)) return c - 32;
  return c;
}
bool cased(uint32_t c) {
  return lower_cp(c) != c || upper_cp(c) != c;
}

template <typename F>
std::string map_cps(const std::string& s, F f) {
  std::vector<size_t> offsets;
  const auto cps = decode_with_offsets(s, offsets);
  std::string out;
  for (size_t k = 0; k < cps.size(); ++k) {
    const uint32_t c = f(k, cps[k], cps);
    if (c == cps[k]) {
      out.append(s, offsets[k], offsets[k + 1] - offsets[k]);  // keep the bytes as they were
    } else {
      utf8_append(out, c);
    }
  }
  return out;
}

}  // namespace

bool py_space(uint32_t cp) {
  return cp == ' ' || (cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x1F) ||
         (cp >= 0x80 && is_whitespace(cp));
}

size_t lstrip_begin(const std::string& s, const std::string& chars) {
  std::vector<size_t> offsets;
  const auto cps = decode_with_offsets(s, offsets);
  std::vector<size_t> unused;
  const auto set = decode_with_offsets(chars, unused);
  size_t k = 0;
  while (k < cps.size() && (chars.empty() ? py_space(cps[k]) : in_chars(cps[k], set))) ++k;
  return offsets[k];
}

size_t rstrip_end(const std::string& s, const std::string& chars) {
  std::vector<size_t> offsets;
  const auto cps = decode_with_offsets(s, offsets);
  std::vector<size_t> unused;
  const auto set = decode_with_offsets(chars, unused);
  size_t k = cps.size();
  while (k > 0 && (chars.empty() ? py_space(cps[k - 1]) : in_chars(cps[k - 1], set))) --k;
  return offsets[k];
}

std::vector<size_t> code_point_offsets(const std::string& s) {
  std::vector<size_t> offsets;
  decode_with_offsets(s, offsets);
  return offsets;
}

std::string py_lower(const std::string& s) {
  return map_cps(s, [](size_t, uint32_t c, const auto&) { return lower_cp(c); });
}
std::string py_upper(const std::string& s) {
  return map_cps(s, [](size_t, uint32_t c, const auto&) { return upper_cp(c); });
}
std::string py_title(const std::string& s) {
  // Upper case after a character that is not cased, lower case after one that is.
  return map_cps(s, [](size_t k, uint32_t c, const std::vector<uint32_t>& cps) {
    const bool after_cased = k > 0 && cased(cps[k - 1]);
    return after_cased ? lower_cp(c) : upper_cp(c);
  });
}
std::string py_capitalize(const std::string& s) {
  return map_cps(
      s, [](size_t k, uint32_t c, const auto&) { return k == 0 ? upper_cp(c) : lower_cp(c); });
}

}  // namespace lockstep::tokenizer::jinja
