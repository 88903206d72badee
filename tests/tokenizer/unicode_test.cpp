// Unicode category flags, UTF-8 handling and the GPT-2 byte mapping. Expected values come from the
// Unicode Character Database (category of each sample) and from GPT-2's bytes_to_unicode().
#include <gtest/gtest.h>

#include "tokenizer/unicode.h"

namespace lockstep::tokenizer {
namespace {

TEST(Unicode, CategoryFlags) {
  EXPECT_TRUE(unicode_flags('A') & kLetter);
  EXPECT_TRUE(unicode_flags('z') & kLetter);
  EXPECT_TRUE(unicode_flags('5') & kNumber);
  EXPECT_TRUE(unicode_flags('!') & kPunctuation);
  EXPECT_TRUE(unicode_flags('$') & kSymbol);
  EXPECT_EQ(unicode_flags(' '), kSeparator | kWhitespace);
  EXPECT_EQ(unicode_flags('\t'), kControl | kWhitespace);
  EXPECT_EQ(unicode_flags(0x00E9), kLetter);       // é
  EXPECT_EQ(unicode_flags(0x0663), kNumber);       // ARABIC-INDIC DIGIT THREE (Nd)
  EXPECT_EQ(unicode_flags(0x00BD), kNumber);       // ½ (No)
  EXPECT_EQ(unicode_flags(0x2160), kNumber);       // ROMAN NUMERAL ONE (Nl)
  EXPECT_EQ(unicode_flags(0x65E5), kLetter);       // 日 (Lo)
  EXPECT_EQ(unicode_flags(0x0301), kMark);         // COMBINING ACUTE ACCENT
  EXPECT_EQ(unicode_flags(0x3002), kPunctuation);  // 。
  EXPECT_EQ(unicode_flags(0x1F999), kSymbol);      // 🦙 (So)
  EXPECT_EQ(unicode_flags(0xE000), kControl);      // private use (Co)
  EXPECT_EQ(unicode_flags(0x0378), kUndefined);    // unassigned
  EXPECT_EQ(unicode_flags(0x110000), 0);           // beyond Unicode
}

TEST(Unicode, WhitespaceIsTheWhiteSpaceProperty) {
  // PropList.txt White_Space: 0009..000D, 0020, 0085, 00A0, 1680, 2000..200A, 2028, 2029, 202F,
  // 205F, 3000.
  const uint32_t ws[] = {0x09,   0x0A,   0x0B,   0x0C,   0x0D,   0x20,   0x85,   0xA0,  0x1680,
                         0x2000, 0x2005, 0x200A, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000};
  for (uint32_t c : ws) EXPECT_TRUE(is_whitespace(c)) << std::hex << c;
  const uint32_t not_ws[] = {0x1C, 0x1D, 0x1E, 0x1F, 0x200B, 0xFEFF, 0x180E, 'a', 0x7F};
  for (uint32_t c : not_ws) EXPECT_FALSE(is_whitespace(c)) << std::hex << c;
}

TEST(Unicode, DecodeReplacesMalformedBytes) {
  EXPECT_EQ(utf8_decode("h\xC3\xA9"), (std::vector<uint32_t>{'h', 0xE9}));
  EXPECT_EQ(utf8_decode("\xF0\x9F\xA6\x99"), (std::vector<uint32_t>{0x1F999}));
  EXPECT_EQ(utf8_decode("\xFF"
                        "a"),
            (std::vector<uint32_t>{kReplacementChar, 'a'}));
  // A truncated sequence: each byte becomes one U+FFFD.
  EXPECT_EQ(utf8_decode("\xE2\x82"), (std::vector<uint32_t>{kReplacementChar, kReplacementChar}));
}

TEST(Unicode, EncodeRoundTrip) {
  for (uint32_t cp : {0x24u, 0xA2u, 0x20ACu, 0x10348u, 0x7Fu, 0x80u, 0x7FFu, 0x800u, 0xFFFFu,
                      0x10000u, 0x10FFFFu}) {
    EXPECT_EQ(utf8_decode(utf8_encode(cp)), std::vector<uint32_t>{cp}) << std::hex << cp;
  }
  EXPECT_EQ(utf8_encode(0x20AC), "\xE2\x82\xAC");
}

TEST(Unicode, SanitizeUsesMaximalSubparts) {
  const std::string r = "\xEF\xBF\xBD";  // U+FFFD
  EXPECT_EQ(utf8_sanitize("plain \xE2\x82\xAC"), "plain \xE2\x82\xAC");
  EXPECT_EQ(utf8_sanitize("a\xE2\x82"), "a" + r);               // one incomplete character
  EXPECT_EQ(utf8_sanitize("\xC0\xAF"), r + r);                  // overlong: two bad bytes
  EXPECT_EQ(utf8_sanitize("\xED\xA0\x80"), r + r + r);          // surrogate
  EXPECT_EQ(utf8_sanitize("\xF4\x90\x80\x80"), r + r + r + r);  // beyond U+10FFFF
  EXPECT_EQ(utf8_sanitize("\xE2\x82x"), r + "x");               // cut short by 'x'
}

TEST(Unicode, Utf8Check) {
  EXPECT_EQ(utf8_check("\xE2\x82\xAC", 0).status, Utf8Check::kComplete);
  EXPECT_EQ(utf8_check("\xE2\x82\xAC", 0).len, 3u);
  EXPECT_EQ(utf8_check("\xE2\x82", 0).status, Utf8Check::kIncomplete);
  EXPECT_EQ(utf8_check("\xE2\x82", 0).len, 2u);
  EXPECT_EQ(utf8_check("\x82", 0).status, Utf8Check::kInvalid);
}

TEST(Unicode, Gpt2ByteMapping) {
  // bytes_to_unicode(): printable bytes map to themselves, the 68 others to U+0100.. in order.
  EXPECT_EQ(byte_to_unicode('A'), uint32_t('A'));
  EXPECT_EQ(byte_to_unicode(0x00), 0x100u);
  EXPECT_EQ(byte_to_unicode(' '), 0x120u);   // 'Ġ'
  EXPECT_EQ(byte_to_unicode('\n'), 0x10Au);  // 'Ċ'
  EXPECT_EQ(byte_to_unicode(0x7F), 0x121u);
  EXPECT_EQ(byte_to_unicode(0xA0), 0x142u);
  EXPECT_EQ(byte_to_unicode(0xAD), 0x143u);  // 'Ń'
  EXPECT_EQ(byte_to_unicode(0xFF), 0xFFu);
  for (int b = 0; b < 256; ++b) EXPECT_EQ(unicode_to_byte(byte_to_unicode(uint8_t(b))), b);
  EXPECT_EQ(unicode_to_byte(0x144), -1);
  EXPECT_EQ(unicode_to_byte(0x2581), -1);
}

}  // namespace
}  // namespace lockstep::tokenizer
