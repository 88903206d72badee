#include "tokenizer/unicode.h"

#include <algorithm>
#include <array>

namespace lockstep::tokenizer {

#include "tokenizer/unicode_tables.inc"

uint16_t unicode_flags(uint32_t cp) {
  if (cp > 0x10FFFF) return 0;
  if (cp < 128) {
    // Fast path: ASCII runs are at the front of the table.
    static const std::array<uint16_t, 128> ascii = [] {
      std::array<uint16_t, 128> t{};
      unsigned r = 0;
      for (uint32_t c = 0; c < 128; ++c) {
        while (r + 1 < kUnicodeRunCount && kUnicodeRuns[r + 1].first <= c) ++r;
        t[c] = kUnicodeRuns[r].flags;
      }
      return t;
    }();
    return ascii[cp];
  }
  // Last run whose first code point is <= cp.
  const UnicodeRun* end = kUnicodeRuns + kUnicodeRunCount;
  const UnicodeRun* it = std::upper_bound(
      kUnicodeRuns, end, cp, [](uint32_t v, const UnicodeRun& run) { return v < run.first; });
  return (it - 1)->flags;
}

std::vector<uint32_t> utf8_decode(std::string_view text) {
  std::vector<uint32_t> out;
  out.reserve(text.size());
  size_t i = 0;
  const size_t n = text.size();
  auto cont = [&](size_t k) { return k < n && (static_cast<uint8_t>(text[k]) & 0xC0) == 0x80; };
  while (i < n) {
    const uint8_t b = static_cast<uint8_t>(text[i]);
    if (b < 0x80) {
      out.push_back(b);
      i += 1;
    } else if ((b & 0xE0) == 0xC0 && cont(i + 1)) {
      out.push_back(((b & 0x1Fu) << 6) | (static_cast<uint8_t>(text[i + 1]) & 0x3Fu));
      i += 2;
    } else if ((b & 0xF0) == 0xE0 && cont(i + 1) && cont(i + 2)) {
      out.push_back(((b & 0x0Fu) << 12) | ((static_cast<uint8_t>(text[i + 1]) & 0x3Fu) << 6) |
                    (static_cast<uint8_t>(text[i + 2]) & 0x3Fu));
      i += 3;
    } else if ((b & 0xF8) == 0xF0 && cont(i + 1) && cont(i + 2) && cont(i + 3)) {
      out.push_back(((b & 0x07u) << 18) | ((static_cast<uint8_t>(text[i + 1]) & 0x3Fu) << 12) |
                    ((static_cast<uint8_t>(text[i + 2]) & 0x3Fu) << 6) |
                    (static_cast<uint8_t>(text[i + 3]) & 0x3Fu));
      i += 4;
    } else {
      out.push_back(kReplacementChar);
      i += 1;
    }
  }
  return out;
}

void utf8_append(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | ((cp >> 18) & 0x07)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

std::string utf8_encode(uint32_t cp) {
  std::string s;
  utf8_append(s, cp);
  return s;
}

Utf8Check utf8_check(std::string_view text, size_t pos) {
  const uint8_t b0 = static_cast<uint8_t>(text[pos]);
  if (b0 < 0x80) return {Utf8Check::kComplete, 1};
  size_t len;
  uint8_t lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    len = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    len = 3;
    if (b0 == 0xE0) lo = 0xA0;  // no overlongs
    if (b0 == 0xED) hi = 0x9F;  // no surrogates
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    len = 4;
    if (b0 == 0xF0) lo = 0x90;  // no overlongs
    if (b0 == 0xF4) hi = 0x8F;  // nothing beyond U+10FFFF
  } else {
    return {Utf8Check::kInvalid, 1};  // continuation byte, C0, C1, F5..FF
  }
  for (size_t k = 1; k < len; ++k) {
    if (pos + k >= text.size()) return {Utf8Check::kIncomplete, k};
    const uint8_t b = static_cast<uint8_t>(text[pos + k]);
    if (b < (k == 1 ? lo : 0x80) || b > (k == 1 ? hi : 0xBF)) return {Utf8Check::kInvalid, k};
  }
  return {Utf8Check::kComplete, len};
}

std::string utf8_sanitize(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  size_t i = 0;
  while (i < text.size()) {
    const Utf8Check c = utf8_check(text, i);
    if (c.status == Utf8Check::kComplete) {
      out.append(text.substr(i, c.len));
    } else {
      utf8_append(out, kReplacementChar);
    }
    i += c.len;
  }
  return out;
}

namespace {

struct ByteMap {
  std::array<uint32_t, 256> to_cp{};
  std::array<int16_t, 324> to_byte{};  // code points 0..323 cover the whole mapping
};

const ByteMap& byte_map() {
  static const ByteMap m = [] {
    ByteMap bm;
    bm.to_byte.fill(-1);
    // Printable bytes map to themselves; the others (controls, space, DEL, NBSP, soft hyphen and
    // the C1 range) are shifted to 256 + n in byte order, as GPT-2's bytes_to_unicode() does.
    auto printable = [](int b) {
      return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    };
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      const uint32_t cp =
          printable(b) ? static_cast<uint32_t>(b) : static_cast<uint32_t>(256 + n++);
      bm.to_cp[b] = cp;
      bm.to_byte[cp] = static_cast<int16_t>(b);
    }
    return bm;
  }();
  return m;
}

}  // namespace

uint32_t byte_to_unicode(uint8_t b) {
  return byte_map().to_cp[b];
}

int unicode_to_byte(uint32_t cp) {
  const auto& m = byte_map();
  return cp < m.to_byte.size() ? m.to_byte[cp] : -1;
}

}  // namespace lockstep::tokenizer
