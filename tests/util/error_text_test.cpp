// one_line: what every printed error message goes through, so that an error is one line.
#include <gtest/gtest.h>

#include <string>

#include "util/error.h"

namespace lockstep {
namespace {

TEST(OneLine, EscapesControlBytesAndKeepsTheRest) {
  EXPECT_EQ(one_line("plain text, caf\xc3\xa9"), "plain text, caf\xc3\xa9");
  EXPECT_EQ(one_line("a\nb"), "a\\nb");
  EXPECT_EQ(one_line("a\rb\tc\x1b[0m\x7f"), "a\\x0db\\x09c\\x1b[0m\\x7f");
  EXPECT_EQ(one_line(std::string("nul\0byte", 8)), "nul\\x00byte");
  EXPECT_EQ(one_line(""), "");
}

TEST(Printable, EscapesLikeOneLineAndCutsLongText) {
  EXPECT_EQ(printable("key\n\x1b", 10), "key\\n\\x1b");
  EXPECT_EQ(printable("abcdefgh", 8), "abcdefgh");
  EXPECT_EQ(printable("abcdefghi", 8), "abcdefgh...");
  EXPECT_EQ(printable("ab\ncdef", 3), "ab\\n...");
}

}  // namespace
}  // namespace lockstep
