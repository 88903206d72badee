// llama.cpp's upstream tokenizer test vectors (../shared/vocab/*.inp/.out, 46 strings each; the
// expected ids come from the Hugging Face tokenizers of the original models) must match exactly
// with add_special = false and parse_special = false.
#include <gtest/gtest.h>

#include "tokenizer/tokenizer_test_util.h"

namespace lockstep::tokenizer::test {
namespace {

class VocabVectors : public ::testing::TestWithParam<const char*> {};

TEST_P(VocabVectors, AllVectorsMatch) {
  const std::string base = kVocabDir + GetParam();
  const auto inputs = split_inp(read_file(base + ".inp"));
  const auto expected = parse_out(read_file(base + ".out"));
  ASSERT_EQ(inputs.size(), 46u) << base << ".inp";
  ASSERT_EQ(expected.size(), inputs.size()) << base << ".out";
  const Vocab& vocab = cached_vocab(base);
  size_t passed = 0;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const auto ids = vocab.tokenize(inputs[i], /*add_special=*/false, /*parse_special=*/false);
    if (ids == expected[i]) {
      ++passed;
    } else {
      ADD_FAILURE() << GetParam() << " vector " << i << " text '" << inputs[i] << "'\n  expected "
                    << ids_to_string(expected[i]) << "\n  got      " << ids_to_string(ids);
    }
  }
  std::printf("%s: %zu/%zu vectors match\n", GetParam(), passed, inputs.size());
  EXPECT_EQ(passed, inputs.size());
}

// detokenize(tokenize(x)) == x on every test string (all are well-formed UTF-8).
TEST_P(VocabVectors, RoundTrip) {
  const std::string base = kVocabDir + GetParam();
  const auto inputs = split_inp(read_file(base + ".inp"));
  ASSERT_EQ(inputs.size(), 46u);
  const Vocab& vocab = cached_vocab(base);
  for (size_t i = 0; i < inputs.size(); ++i) {
    const auto ids = vocab.tokenize(inputs[i], false, false);
    EXPECT_EQ(vocab.detokenize(ids), inputs[i]) << GetParam() << " vector " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(Vocabs, VocabVectors,
                         ::testing::Values("ggml-vocab-llama-spm.gguf", "ggml-vocab-qwen2.gguf",
                                           "ggml-vocab-llama-bpe.gguf", "ggml-vocab-gpt-2.gguf"),
                         [](const auto& info) {
                           std::string n = info.param;
                           n = n.substr(11, n.size() - 11 - 5);  // strip "ggml-vocab-" ".gguf"
                           for (char& c : n)
                             if (c == '-') c = '_';
                           return n;
                         });

}  // namespace
}  // namespace lockstep::tokenizer::test
