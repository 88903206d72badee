// The streaming detokenizer never emits part of a UTF-8 character, emits everything by the end,
// and turns ill-formed bytes into U+FFFD.
#include <gtest/gtest.h>

#include "tokenizer/tokenizer_test_util.h"
#include "tokenizer/unicode.h"

namespace lockstep::tokenizer::test {
namespace {

const std::string kFffd = "\xEF\xBF\xBD";

bool valid_utf8(const std::string& s) {
  return utf8_sanitize(s) == s;
}

TEST(StreamingDetokenizer, LlamaEmojiSplitAcrossTokens) {
  // In the qwen2 vocab "🦙" is spread over three byte-level tokens (test vector " this is
  // 🦙.cpp").
  const Vocab& v = cached_vocab(kVocabDir + "ggml-vocab-qwen2.gguf");
  const std::string text = " this is \xF0\x9F\xA6\x99.cpp";
  const auto ids = v.tokenize(text, false, false);
  ASSERT_EQ(ids, (std::vector<TokenId>{419, 374, 11162, 99, 247, 13, 10821}));
  StreamingDetokenizer d(v);
  std::vector<std::string> chunks;
  for (TokenId id : ids) chunks.push_back(d.push(id));
  chunks.push_back(d.flush());
  EXPECT_EQ(chunks, (std::vector<std::string>{" this", " is", " ", "", "\xF0\x9F\xA6\x99", ".",
                                              "cpp", ""}));
}

// Every test string of every vocab, streamed token by token.
TEST(StreamingDetokenizer, NeverSplitsACharacter) {
  size_t split_pieces = 0;
  for (const char* name : {"ggml-vocab-llama-spm.gguf", "ggml-vocab-qwen2.gguf",
                           "ggml-vocab-llama-bpe.gguf", "ggml-vocab-gpt-2.gguf"}) {
    const Vocab& v = cached_vocab(kVocabDir + name);
    for (const auto& text : split_inp(read_file(kVocabDir + name + ".inp"))) {
      const auto ids = v.tokenize(text, false, false);
      StreamingDetokenizer d(v);
      std::string all;
      for (TokenId id : ids) {
        if (!valid_utf8(v.token_to_piece(id))) ++split_pieces;
        const std::string chunk = d.push(id);
        EXPECT_TRUE(valid_utf8(chunk)) << name << ": '" << text << "'";
        all += chunk;
      }
      const std::string tail = d.flush();
      EXPECT_TRUE(tail.empty()) << name;
      all += tail;
      // SPM: the streamed text keeps the dummy-prefix space that detokenize() removes.
      EXPECT_EQ(all, v.type() == VocabType::kSpm && !text.empty() ? " " + text : text) << name;
    }
  }
  EXPECT_GT(split_pieces, 10u) << "the test strings should exercise pieces that split characters";
}

TEST(StreamingDetokenizer, Bytes) {
  const Vocab& v = cached_vocab(kVocabDir + "ggml-vocab-gpt-2.gguf");
  StreamingDetokenizer d(v);
  EXPECT_EQ(d.push_bytes("\xE2"), "");
  EXPECT_TRUE(d.has_pending());
  EXPECT_EQ(d.push_bytes("\x82"), "");
  EXPECT_EQ(d.push_bytes("\xAC!"), "\xE2\x82\xAC!");
  EXPECT_FALSE(d.has_pending());
  EXPECT_EQ(d.push_bytes("\xFF"
                         "a"),
            kFffd + "a");  // never valid: replaced at once
  EXPECT_EQ(d.push_bytes("b\xF0\x9F"), "b");
  EXPECT_EQ(d.push_bytes("x"), kFffd + "x");  // cut short by 'x'
  EXPECT_EQ(d.push_bytes("c\xF0\x9F\xA6"), "c");
  EXPECT_EQ(d.flush(), kFffd);  // incomplete at the end
  EXPECT_EQ(d.flush(), "");
}

}  // namespace
}  // namespace lockstep::tokenizer::test
