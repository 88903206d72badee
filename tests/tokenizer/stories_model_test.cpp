// stories260K (SPM, 512 tokens) against llama.cpp's llama-tokenize output recorded in
// ../shared/reference/tokenize-stories260K.json: ids with BOS (add_special, parse_special on, as
// the tool ran) and without.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "tokenizer/tokenizer_test_util.h"

namespace lockstep::tokenizer::test {
namespace {

TEST(Stories260K, MatchesLlamaTokenize) {
  const auto ref =
      nlohmann::json::parse(read_file("../shared/reference/tokenize-stories260K.json"));
  const Vocab& v = cached_vocab("../shared/models/stories260K.gguf");
  EXPECT_EQ(v.type(), VocabType::kSpm);
  EXPECT_EQ(v.n_tokens(), 512);
  ASSERT_GE(ref.at("results").size(), 4u);
  for (const auto& r : ref.at("results")) {
    const std::string prompt = r.at("prompt");
    const auto ids = r.at("ids").get<std::vector<TokenId>>();
    const auto ids_no_bos = r.at("ids_no_bos").get<std::vector<TokenId>>();
    const auto tokens = r.at("tokens").get<std::vector<std::string>>();
    EXPECT_EQ(v.tokenize(prompt, true, true), ids) << prompt;
    EXPECT_EQ(v.tokenize(prompt, false, true), ids_no_bos) << prompt;
    ASSERT_EQ(tokens.size(), ids.size());
    for (size_t i = 0; i < ids.size(); ++i) EXPECT_EQ(v.token_text(ids[i]), tokens[i]) << prompt;
    EXPECT_EQ(v.detokenize(ids), prompt);
  }
}

}  // namespace
}  // namespace lockstep::tokenizer::test
