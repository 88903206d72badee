// SmolLM2-135M-Instruct (gpt2 BPE, pre "smollm", ChatML template with a default system prompt).
// The model file is not in ../shared; without it these tests skip with a visible message.
#include <gtest/gtest.h>

#include <filesystem>

#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer_test_util.h"

namespace lockstep::tokenizer::test {
namespace {

class SmolLM2 : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!std::filesystem::exists(kSmolLM2)) {
      GTEST_SKIP() << kSmolLM2
                   << " is absent (git-ignored, not in ../shared): SmolLM2 tests skipped";
    }
  }
  const Vocab& vocab() { return cached_vocab(kSmolLM2); }
};

TEST_F(SmolLM2, Metadata) {
  const Vocab& v = vocab();
  EXPECT_EQ(v.type(), VocabType::kBpe);
  EXPECT_EQ(v.pre_type(), PreType::kSmollm);
  EXPECT_EQ(v.n_tokens(), 49152);
  EXPECT_FALSE(v.add_bos());
  EXPECT_EQ(v.token_text(1), "<|im_start|>");
  EXPECT_EQ(v.token_text(2), "<|im_end|>");
  EXPECT_TRUE(v.is_eog(2));  // eos, <|im_end|>
  EXPECT_TRUE(v.is_eog(0));  // <|endoftext|>
  EXPECT_FALSE(v.is_eog(1));
}

TEST_F(SmolLM2, DigitsAreSplit) {
  // pre "smollm" puts every digit in its own word, so "2024" is four tokens, one per digit.
  const auto ids = vocab().tokenize("2024", false, false);
  ASSERT_EQ(ids.size(), 4u);
  EXPECT_EQ(vocab().detokenize(ids), "2024");
  EXPECT_EQ(ids[0], ids[2]);  // both '2'
}

TEST_F(SmolLM2, RoundTripsTheTestStrings) {
  for (const auto& s : split_inp(read_file(kVocabDir + "ggml-vocab-qwen2.gguf.inp"))) {
    EXPECT_EQ(vocab().detokenize(vocab().tokenize(s, false, false)), s);
  }
}

TEST_F(SmolLM2, ChatTemplate) {
  const auto t = ChatTemplate::for_vocab(vocab());
  EXPECT_EQ(t.family(), ChatFamily::kChatML);
  EXPECT_FALSE(t.fell_back());
  EXPECT_EQ(t.default_system(),
            "You are a helpful AI assistant named SmolLM, trained by Hugging Face");
  const std::vector<ChatMessage> msgs = {{"user", "Hello"}};
  const std::string text = t.apply(msgs, true);
  EXPECT_EQ(text,
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
            "Face<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n");
  const auto ids = tokenize_chat(vocab(), t, msgs, true);
  EXPECT_EQ(ids, vocab().tokenize(text, false, true));
  ASSERT_GE(ids.size(), 3u);
  EXPECT_EQ(ids.front(), 1);  // <|im_start|>, no BOS for this vocab
  EXPECT_EQ(std::count(ids.begin(), ids.end(), 1), 3);
  EXPECT_EQ(std::count(ids.begin(), ids.end(), 2), 2);
}

}  // namespace
}  // namespace lockstep::tokenizer::test
