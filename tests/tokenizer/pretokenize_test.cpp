// Pre-tokenizer splits. Each expectation is worked out by hand from the regex in pretokenize.h
// (leftmost match, alternatives tried in order, unmatched text kept as its own word).
#include <gtest/gtest.h>

#include "tokenizer/pretokenize.h"
#include "tokenizer/tokenizer_test_util.h"

namespace lockstep::tokenizer {
namespace {

using W = std::vector<std::string>;

TEST(Pretokenize, Gpt2) {
  EXPECT_EQ(pretokenize("Hello world", PreType::kGpt2), (W{"Hello", " world"}));
  EXPECT_EQ(pretokenize("I'm here", PreType::kGpt2), (W{"I", "'m", " here"}));
  EXPECT_EQ(pretokenize("I'M", PreType::kGpt2), (W{"I", "'", "M"}));  // case-sensitive
  EXPECT_EQ(pretokenize("we'll", PreType::kGpt2), (W{"we", "'ll"}));
  EXPECT_EQ(pretokenize("a  b", PreType::kGpt2), (W{"a", " ", " b"}));
  EXPECT_EQ(pretokenize("a \n b", PreType::kGpt2), (W{"a", " \n", " b"}));
  EXPECT_EQ(pretokenize("end  ", PreType::kGpt2), (W{"end", "  "}));
  EXPECT_EQ(pretokenize("x!! 12345", PreType::kGpt2), (W{"x", "!!", " 12345"}));
  EXPECT_EQ(pretokenize("\xC3\xBC"
                        "ber caf\xC3\xA9",
                        PreType::kGpt2),
            (W{"\xC3\xBC"
               "ber",
               " caf\xC3\xA9"}));
  EXPECT_EQ(pretokenize("", PreType::kGpt2), W{});
}

TEST(Pretokenize, Llama3) {
  EXPECT_EQ(pretokenize("12345", PreType::kLlama3), (W{"123", "45"}));
  EXPECT_EQ(pretokenize("x\n\ny", PreType::kLlama3), (W{"x", "\n\n", "y"}));
  EXPECT_EQ(pretokenize("I'M", PreType::kLlama3), (W{"I", "'M"}));  // case-insensitive
  EXPECT_EQ(pretokenize("a!?\n\nb", PreType::kLlama3), (W{"a", "!?\n\n", "b"}));
  EXPECT_EQ(pretokenize("$hello", PreType::kLlama3), (W{"$hello"}));
  EXPECT_EQ(pretokenize("  \n  word", PreType::kLlama3), (W{"  \n", " ", " word"}));
  EXPECT_EQ(pretokenize("a 1", PreType::kLlama3), (W{"a", " ", "1"}));
  // U+3000 IDEOGRAPHIC SPACE may prefix letters; 日本語 is one run of letters.
  EXPECT_EQ(pretokenize("\xE3\x80\x80"
                        "x \xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E",
                        PreType::kLlama3),
            (W{"\xE3\x80\x80"
               "x",
               " \xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E"}));
}

TEST(Pretokenize, Qwen2SplitsEveryDigit) {
  EXPECT_EQ(pretokenize("12345", PreType::kQwen2), (W{"1", "2", "3", "4", "5"}));
  EXPECT_EQ(pretokenize("\xD9\xA3\xD9\xA4", PreType::kQwen2),  // ٣٤ (Arabic-Indic digits)
            (W{"\xD9\xA3", "\xD9\xA4"}));
  EXPECT_EQ(pretokenize("ied 4 months", PreType::kQwen2), (W{"ied", " ", "4", " months"}));
}

TEST(Pretokenize, Smollm) {
  EXPECT_EQ(pretokenize("a  1", PreType::kSmollm), (W{"a", "  ", "1"}));
  EXPECT_EQ(pretokenize("abc123", PreType::kSmollm), (W{"abc", "1", "2", "3"}));
  EXPECT_EQ(pretokenize("Hello world", PreType::kSmollm), (W{"Hello", " world"}));
}

TEST(Pretokenize, Default) {
  EXPECT_EQ(pretokenize("12345", PreType::kDefault), (W{"123", "45"}));
  EXPECT_EQ(pretokenize("hello, world", PreType::kDefault), (W{"hello", ",", " world"}));
  EXPECT_EQ(pretokenize("a 12", PreType::kDefault), (W{"a", " ", "12"}));
}

// Whatever the split, the words concatenate back to the input.
TEST(Pretokenize, WordsConcatenateToInput) {
  const auto inputs =
      test::split_inp(test::read_file(test::kVocabDir + "ggml-vocab-qwen2.gguf.inp"));
  ASSERT_EQ(inputs.size(), 46u);
  for (PreType t :
       {PreType::kDefault, PreType::kGpt2, PreType::kLlama3, PreType::kQwen2, PreType::kSmollm}) {
    for (const auto& s : inputs) {
      std::string joined;
      for (const auto& w : pretokenize(s, t)) {
        EXPECT_FALSE(w.empty());
        joined += w;
      }
      EXPECT_EQ(joined, s) << pre_type_name(t);
    }
  }
}

}  // namespace
}  // namespace lockstep::tokenizer
