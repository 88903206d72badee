// Unicode helpers for the tokenizer: UTF-8 decoding/encoding, code point category flags (from the
// generated unicode_tables.inc), and the GPT-2 byte <-> unicode mapping used by byte-level BPE.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace lockstep::tokenizer {

// Category flags of a code point. Exactly one category bit is set for every code point up to
// U+10FFFF; kWhitespace is added on top (Unicode White_Space property).
enum UnicodeFlags : uint16_t {
  kUndefined = 0x001,    // Cn: unassigned
  kNumber = 0x002,       // \p{N}
  kLetter = 0x004,       // \p{L}
  kSeparator = 0x008,    // \p{Z}
  kMark = 0x010,         // \p{M}
  kPunctuation = 0x020,  // \p{P}
  kSymbol = 0x040,       // \p{S}
  kControl = 0x080,      // Cc Cf Cs Co
  kWhitespace = 0x100,   // \s
};

struct UnicodeRun {
  uint32_t first;
  uint16_t flags;
};

inline constexpr uint32_t kReplacementChar = 0xFFFD;

// Flags of a code point; 0 for values beyond U+10FFFF.
uint16_t unicode_flags(uint32_t cp);
inline bool is_letter(uint32_t cp) {
  return unicode_flags(cp) & kLetter;
}
inline bool is_number(uint32_t cp) {
  return unicode_flags(cp) & kNumber;
}
inline bool is_whitespace(uint32_t cp) {
  return unicode_flags(cp) & kWhitespace;
}
inline bool is_punctuation(uint32_t cp) {
  return unicode_flags(cp) & kPunctuation;
}

// Length of the UTF-8 sequence that starts with `lead`, judged from its high bits only
// (1 for ASCII and for stray continuation bytes). Used to split text into characters.
inline size_t utf8_len(uint8_t lead) {
  static constexpr uint8_t kLen[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
  return kLen[lead >> 4];
}

// Decodes text into code points. Malformed input never throws: a byte that does not start a
// complete sequence becomes U+FFFD and decoding resumes at the next byte.
std::vector<uint32_t> utf8_decode(std::string_view text);
void utf8_append(std::string& out, uint32_t cp);
std::string utf8_encode(uint32_t cp);

// Strict UTF-8 validation (no overlongs, no surrogates, nothing beyond U+10FFFF) of the sequence
// that starts at text[pos] (pos < text.size()):
//   kComplete:   a well-formed character of `len` bytes;
//   kInvalid:    ill-formed; `len` (>= 1) is its maximal invalid subpart, to become one U+FFFD;
//   kIncomplete: a valid prefix of `len` bytes that runs into the end of the text.
struct Utf8Check {
  enum Status { kComplete, kInvalid, kIncomplete } status;
  size_t len;
};
Utf8Check utf8_check(std::string_view text, size_t pos);
// Replaces each ill-formed sequence (maximal invalid subpart) with one U+FFFD.
std::string utf8_sanitize(std::string_view text);

// GPT-2 byte-level mapping: every byte value maps to a printable code point.
uint32_t byte_to_unicode(uint8_t b);
// Inverse; returns -1 for a code point that is not in the mapping.
int unicode_to_byte(uint32_t cp);

}  // namespace lockstep::tokenizer
