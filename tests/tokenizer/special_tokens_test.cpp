// Special tokens: parse_special on/off, BOS/EOS, the SPM dummy prefix after special tokens, pieces
// of control/byte tokens, end-of-generation ids. Token ids come from ../shared/vocab/README.md and
// from the llama.cpp test vectors (e.g. llama-spm "Hello world" -> 15043 3186, qwen2 " " -> 220).
#include <gtest/gtest.h>

#include <algorithm>

#include "tokenizer/tokenizer_test_util.h"
#include "util/error.h"

namespace lockstep::tokenizer::test {
namespace {

const Vocab& qwen2() {
  return cached_vocab(kVocabDir + "ggml-vocab-qwen2.gguf");
}
const Vocab& spm() {
  return cached_vocab(kVocabDir + "ggml-vocab-llama-spm.gguf");
}
const Vocab& llama3() {
  return cached_vocab(kVocabDir + "ggml-vocab-llama-bpe.gguf");
}

bool contains(const std::vector<TokenId>& ids, TokenId id) {
  return std::find(ids.begin(), ids.end(), id) != ids.end();
}

std::vector<TokenId> concat(std::initializer_list<std::vector<TokenId>> parts) {
  std::vector<TokenId> out;
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

constexpr TokenId kQwenEndOfText = 151643, kImStart = 151644, kImEnd = 151645;
constexpr TokenId kToolCall = 151657;  // user-defined

TEST(SpecialTokens, ParseSpecialOnMakesSingleTokens) {
  const Vocab& v = qwen2();
  EXPECT_EQ(v.find("<|im_start|>"), kImStart);
  const auto ids = v.tokenize("<|im_start|>user\nHi<|im_end|>", false, true);
  EXPECT_EQ(ids, concat({{kImStart}, v.tokenize("user\nHi", false, false), {kImEnd}}));
}

TEST(SpecialTokens, ParseSpecialOffTokenizesAsText) {
  const Vocab& v = qwen2();
  const std::string text = "<|im_start|>user\nHi<|im_end|>";
  const auto ids = v.tokenize(text, false, false);
  EXPECT_FALSE(contains(ids, kImStart));
  EXPECT_FALSE(contains(ids, kImEnd));
  EXPECT_GT(ids.size(), 6u);
  EXPECT_EQ(v.detokenize(ids), text);
}

TEST(SpecialTokens, UserDefinedTokensAlwaysMatch) {
  const Vocab& v = qwen2();
  ASSERT_EQ(v.token_type(kToolCall), TokenType::kUserDefined);
  for (bool parse : {false, true}) {
    const auto ids = v.tokenize("a<tool_call>b", false, parse);
    EXPECT_EQ(ids,
              concat({v.tokenize("a", false, false), {kToolCall}, v.tokenize("b", false, false)}));
  }
}

TEST(SpecialTokens, LongestSpecialTokenWins) {
  // "<|im_start|>" must not be cut by a shorter special token; adjacent ones stay separate.
  const auto ids = qwen2().tokenize("<|im_start|><|im_end|><|endoftext|>", false, true);
  EXPECT_EQ(ids, (std::vector<TokenId>{kImStart, kImEnd, kQwenEndOfText}));
}

TEST(SpecialTokens, SpmBosAndDummyPrefix) {
  const Vocab& v = spm();
  EXPECT_TRUE(v.add_bos());
  EXPECT_EQ(v.tokenize("Hello world", true, false), (std::vector<TokenId>{1, 15043, 3186}));
  EXPECT_EQ(v.tokenize("Hello world", false, false), (std::vector<TokenId>{15043, 3186}));
  EXPECT_EQ(v.tokenize("", true, false), (std::vector<TokenId>{1}));
  EXPECT_EQ(v.tokenize("", false, false), std::vector<TokenId>{});
  // The dummy prefix also goes after a parsed special token.
  EXPECT_EQ(v.tokenize("<s>Hello", false, true), (std::vector<TokenId>{1, 15043}));
  EXPECT_FALSE(contains(v.tokenize("<s>Hello", false, false), 1));
  EXPECT_EQ(v.detokenize(std::vector<TokenId>{1, 15043, 3186}), "Hello world");
  EXPECT_EQ(v.detokenize(std::vector<TokenId>{1, 15043, 3186}, true), "<s>Hello world");
}

TEST(SpecialTokens, BpeAddsBosOnlyWhenAsked) {
  EXPECT_FALSE(qwen2().add_bos());
  EXPECT_EQ(qwen2().tokenize("Hi", true, false), qwen2().tokenize("Hi", false, false));
  EXPECT_TRUE(llama3().add_bos());
  EXPECT_EQ(llama3().bos(), 128000);
  const auto with = llama3().tokenize("Hi", true, false);
  ASSERT_FALSE(with.empty());
  EXPECT_EQ(with.front(), 128000);
  EXPECT_EQ(std::vector<TokenId>(with.begin() + 1, with.end()),
            llama3().tokenize("Hi", false, false));
}

TEST(SpecialTokens, Pieces) {
  const Vocab& s = spm();
  EXPECT_EQ(s.token_to_piece(15043), " Hello");
  EXPECT_EQ(s.token_to_piece(1), "");  // control: hidden by default
  EXPECT_EQ(s.token_to_piece(1, true), "<s>");
  EXPECT_EQ(s.token_text(13), "<0x0A>");
  EXPECT_EQ(s.token_to_piece(13), "\n");  // byte token
  EXPECT_EQ(s.token_to_piece(0, true), "<unk>");
  EXPECT_EQ(qwen2().token_to_piece(220), " ");
  EXPECT_EQ(qwen2().token_to_piece(kImEnd), "");
  EXPECT_EQ(qwen2().token_to_piece(kImEnd, true), "<|im_end|>");
  EXPECT_EQ(qwen2().token_to_piece(kToolCall), "<tool_call>");
  EXPECT_THROW(qwen2().token_to_piece(-1), InputError);
  EXPECT_THROW(qwen2().token_to_piece(qwen2().n_tokens()), InputError);
}

TEST(SpecialTokens, EndOfGeneration) {
  EXPECT_TRUE(qwen2().is_eog(kQwenEndOfText));  // eos
  EXPECT_TRUE(qwen2().is_eog(kImEnd));
  EXPECT_FALSE(qwen2().is_eog(kImStart));
  EXPECT_FALSE(qwen2().is_eog(220));
  const TokenId eot = llama3().find("<|eot_id|>");
  ASSERT_NE(eot, kNoToken);
  EXPECT_TRUE(llama3().is_eog(eot));
  EXPECT_TRUE(llama3().is_eog(128001));  // eos, <|end_of_text|>
  EXPECT_FALSE(llama3().is_eog(128000));
  EXPECT_TRUE(spm().is_eog(2));
  EXPECT_FALSE(spm().is_eog(1));
}

TEST(SpecialTokens, VocabMetadata) {
  EXPECT_EQ(spm().type(), VocabType::kSpm);
  EXPECT_EQ(spm().n_tokens(), 32000);
  EXPECT_EQ(qwen2().type(), VocabType::kBpe);
  EXPECT_EQ(qwen2().pre_type(), PreType::kQwen2);
  EXPECT_EQ(qwen2().n_tokens(), 151936);
  EXPECT_EQ(llama3().pre_type(), PreType::kLlama3);
  EXPECT_EQ(cached_vocab(kVocabDir + "ggml-vocab-gpt-2.gguf").pre_type(), PreType::kGpt2);
}

}  // namespace
}  // namespace lockstep::tokenizer::test
