// Loading: malformed or unsupported tokenizer metadata gives a clear one-line InputError; a
// missing pre-tokenizer name gives a warning and the default pre-tokenizer.
#include <gtest/gtest.h>

#include <algorithm>
#include <functional>

#include "gguf/gguf_reader.h"
#include "gguf/gguf_writer.h"
#include "tokenizer/vocab.h"
#include "util/error.h"

namespace lockstep::tokenizer {
namespace {

using gguf::Value;

gguf::GgufWriter bpe_writer() {
  gguf::GgufWriter w;
  w.set("tokenizer.ggml.model", Value::of_string("gpt2"));
  w.set("tokenizer.ggml.pre", Value::of_string("gpt-2"));
  w.set("tokenizer.ggml.tokens", Value::of_strings({"a", "b", "ab", "\xC4\xA0",
                                                    "\xC4\xA0"
                                                    "ab"}));
  w.set("tokenizer.ggml.merges", Value::of_strings({"a b", "\xC4\xA0 ab"}));
  return w;
}

Vocab load(const gguf::GgufWriter& w) {
  auto file = gguf::GgufFile::from_bytes(w.to_bytes(), "test.gguf");
  return Vocab::from_gguf(file);
}

// The message of the InputError thrown by loading `w`, or "" when it loads.
std::string load_error(const gguf::GgufWriter& w) {
  try {
    load(w);
  } catch (const InputError& e) {
    return e.what();
  }
  return "";
}

TEST(VocabLoad, MinimalBpeWorks) {
  const Vocab v = load(bpe_writer());
  EXPECT_EQ(v.type(), VocabType::kBpe);
  // "ab ab": words "ab", " ab"; merges a+b (rank 0) then Ġ+ab (rank 1).
  EXPECT_EQ(v.tokenize("ab ab", false, false), (std::vector<TokenId>{2, 4}));
  EXPECT_EQ(v.tokenize("ba", false, false), (std::vector<TokenId>{1, 0}));
}

TEST(VocabLoad, Errors) {
  struct Case {
    const char* what;
    std::function<void(gguf::GgufWriter&)> edit;
    const char* message_part;
  };
  const Case cases[] = {
      {"no model", [](auto& w) { w = gguf::GgufWriter(); }, "tokenizer.ggml.model missing"},
      {"bert", [](auto& w) { w.set("tokenizer.ggml.model", Value::of_string("bert")); },
       "unsupported tokenizer model 'bert'"},
      {"unknown pre", [](auto& w) { w.set("tokenizer.ggml.pre", Value::of_string("klingon")); },
       "unknown BPE pre-tokenizer tokenizer.ggml.pre = 'klingon'"},
      {"tokens not strings",
       [](auto& w) {
         w.set("tokenizer.ggml.tokens", Value::of_i32s({1, 2}));
       },
       "tokenizer.ggml.tokens"},
      {"no merges", [](auto& w) { w.set("tokenizer.ggml.merges", Value::of_string("a b")); },
       "tokenizer.ggml.merges"},
      {"bad merge", [](auto& w) { w.set("tokenizer.ggml.merges", Value::of_strings({"ab"})); },
       "merges[0]"},
      {"short scores",
       [](auto& w) {
         w.set("tokenizer.ggml.scores", Value::of_f32s({0.f, 1.f}));
       },
       "tokenizer.ggml.scores"},
      {"bad types", [](auto& w) { w.set("tokenizer.ggml.token_type", Value::of_i32s({1})); },
       "tokenizer.ggml.token_type"},
      {"add_bos without bos",
       [](auto& w) { w.set("tokenizer.ggml.add_bos_token", Value::of_bool(true)); },
       "no BOS token"},
  };
  for (const auto& c : cases) {
    auto w = bpe_writer();
    c.edit(w);
    const std::string msg = load_error(w);
    EXPECT_NE(msg.find(c.message_part), std::string::npos) << c.what << ": '" << msg << "'";
    EXPECT_EQ(msg.find('\n'), std::string::npos) << c.what;
    EXPECT_EQ(msg.rfind("test.gguf: ", 0), 0u) << c.what << ": names the file: " << msg;
  }
}

TEST(VocabLoad, MissingPreWarnsAndUsesDefault) {
  auto w = bpe_writer();
  gguf::GgufWriter w2;
  w2.set("tokenizer.ggml.model", Value::of_string("gpt2"));
  w2.set("tokenizer.ggml.tokens", Value::of_strings({"a", "b", "ab"}));
  w2.set("tokenizer.ggml.merges", Value::of_strings({"a b"}));
  testing::internal::CaptureStderr();
  const Vocab v = load(w2);
  const std::string err = testing::internal::GetCapturedStderr();
  EXPECT_EQ(v.pre_type(), PreType::kDefault);
  EXPECT_NE(err.find("tokenizer.ggml.pre missing"), std::string::npos) << err;
}

TEST(VocabLoad, BadSpecialIdIsIgnoredWithWarning) {
  auto w = bpe_writer();
  w.set("tokenizer.ggml.eos_token_id", Value::of_u32(99));
  w.set("tokenizer.ggml.padding_token_id", Value::of_u32(0xFFFFFFFFu));
  testing::internal::CaptureStderr();
  const Vocab v = load(w);
  const std::string err = testing::internal::GetCapturedStderr();
  EXPECT_EQ(v.eos(), kNoToken);
  EXPECT_EQ(v.pad(), kNoToken);
  EXPECT_NE(err.find("eos_token_id = 99"), std::string::npos) << err;
  EXPECT_EQ(err.find("padding"), std::string::npos) << "0xFFFFFFFF means none, silently";
}

TEST(VocabLoad, SpmByteFallbackAndScores) {
  gguf::GgufWriter w;
  w.set("tokenizer.ggml.model", Value::of_string("llama"));
  // <unk> <s> </s> <0x41>('A') <0xC3> <0xA9> "▁" "b" "▁b" "bb"
  w.set("tokenizer.ggml.tokens", Value::of_strings({"<unk>", "<s>", "</s>", "<0x41>", "<0xC3>",
                                                    "<0xA9>", "\xE2\x96\x81", "b",
                                                    "\xE2\x96\x81"
                                                    "b",
                                                    "bb"}));
  w.set("tokenizer.ggml.scores", Value::of_f32s({0, 0, 0, 0, 0, 0, -1.f, -1.f, -5.f, -2.f}));
  w.set("tokenizer.ggml.token_type", Value::of_i32s({2, 3, 3, 6, 6, 6, 1, 1, 1, 1}));
  const Vocab v = load(w);
  // "bbb" -> "▁bbb": pairs "▁b" (-5) and "bb" (-2): "bb" wins first (higher score), leftmost.
  EXPECT_EQ(v.tokenize("bbb", false, false), (std::vector<TokenId>{6, 9, 7}));
  // Characters not in the vocab fall back to byte tokens: 'A' -> <0x41>, 'é' -> <0xC3><0xA9>.
  EXPECT_EQ(v.tokenize("A\xC3\xA9", true, false), (std::vector<TokenId>{1, 6, 3, 4, 5}));
  EXPECT_EQ(v.detokenize(v.tokenize("A\xC3\xA9 bb", false, false)), "A\xC3\xA9 bb");
}

// Issue 9: a BPE vocabulary without a token (or byte-level token) for some characters dropped
// them silently ("hello world é 中" came back as "helloworld"). Now each such character becomes
// the unknown token when there is one, and either way one warning goes to stderr.
TEST(VocabLoad, BpeCharactersWithoutATokenWarnOnceAndBecomeTheUnknownToken) {
  // Words "ab", " é", " ab", " 中": "Ġ" (3) and "Ġab" (4) exist, é and 中 have no token.
  const std::string text = "ab \xC3\xA9 ab \xE4\xB8\xAD";
  {
    const Vocab v = load(bpe_writer());  // no unknown token: dropped, with a warning
    testing::internal::CaptureStderr();
    EXPECT_EQ(v.tokenize(text, false, false), (std::vector<TokenId>{2, 3, 4, 3}));
    EXPECT_EQ(v.tokenize(text, false, false), (std::vector<TokenId>{2, 3, 4, 3}));
    const std::string err = testing::internal::GetCapturedStderr();
    EXPECT_NE(err.find("lockstep: warning: "), std::string::npos) << err;
    EXPECT_NE(err.find("dropped"), std::string::npos) << err;
    EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << "warned more than once: " << err;
  }
  {
    auto w = bpe_writer();
    w.set("tokenizer.ggml.tokens", Value::of_strings({"a", "b", "ab", "\xC4\xA0",
                                                      "\xC4\xA0"
                                                      "ab",
                                                      "<unk>"}));
    w.set("tokenizer.ggml.unknown_token_id", Value::of_u32(5));
    const Vocab v = load(w);
    testing::internal::CaptureStderr();
    // One unknown token per character, not per byte.
    EXPECT_EQ(v.tokenize(text, false, false), (std::vector<TokenId>{2, 3, 5, 4, 3, 5}));
    const std::string err = testing::internal::GetCapturedStderr();
    EXPECT_NE(err.find("unknown token 5"), std::string::npos) << err;
    EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << err;
  }
}

// Found by fuzzing: strings quoted from the file broke the one-line error message.
TEST(VocabLoad, StringsFromTheFileStayOnOneLineInErrors) {
  const std::function<void(gguf::GgufWriter&)> edits[] = {
      [](auto& w) { w.set("tokenizer.ggml.model", Value::of_string("gpt2\nx")); },
      [](auto& w) { w.set("tokenizer.ggml.pre", Value::of_string("new\nline")); },
      [](auto& w) { w.set("tokenizer.ggml.merges", Value::of_strings({"a\nb"})); },
  };
  for (const auto& edit : edits) {
    auto w = bpe_writer();
    edit(w);
    const std::string err = load_error(w);
    EXPECT_FALSE(err.empty());
    EXPECT_EQ(err.find('\n'), std::string::npos) << err;
    EXPECT_NE(err.find("\\n"), std::string::npos) << err;
  }
}

}  // namespace
}  // namespace lockstep::tokenizer
