// A tokenizer vocabulary read from a GGUF file's tokenizer.ggml.* keys, with the two tokenizers
// lockstep supports, chosen by tokenizer.ggml.model:
//   "llama": SentencePiece (SPM): score-driven merges of UTF-8 characters, "▁" for spaces, a
//            dummy-prefix space, byte fallback through the <0xNN> tokens;
//   "gpt2":  byte-level BPE: a pre-tokenizer regex (tokenizer.ggml.pre) splits the text into
//            words, bytes map to printable code points, merges apply in rank order.
// Both follow llama.cpp (llama-vocab.cpp) so that token ids match it exactly.
// tokenizer.ggml.pre (gpt2 only) picks the pre-tokenizer: default, gpt-2/gpt2/phi-2,
// llama3/llama-v3/llama-bpe, qwen2/deepseek-r1-qwen, smollm (and the names that share its regex:
// starcoder, refact, command-r, codeshell, exaone, minerva-7b). As in llama.cpp, a missing pre
// gives a warning and "default"; an unknown one is an InputError.
#pragma once

#include <atomic>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "tokenizer/pretokenize.h"

namespace lockstep::gguf {
class GgufFile;
}

namespace lockstep::tokenizer {

using TokenId = int32_t;
inline constexpr TokenId kNoToken = -1;

// A byte range of a text.
struct TextRange {
  size_t begin = 0, len = 0;
};

// Values of tokenizer.ggml.token_type.
enum class TokenType : int32_t {
  kUndefined = 0,
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6,
};

enum class VocabType { kSpm, kBpe };

class Vocab {
 public:
  // Loads the vocabulary of a GGUF file (a vocab-only file is enough). Throws InputError (or
  // FormatError) with a one-line message for a missing, malformed or unsupported tokenizer.
  static Vocab load(const std::string& gguf_path);
  static Vocab from_gguf(const gguf::GgufFile& file);

  VocabType type() const { return type_; }
  const char* model_name() const { return type_ == VocabType::kSpm ? "llama" : "gpt2"; }
  PreType pre_type() const { return pre_type_; }
  const std::string& pre_name() const { return pre_name_; }  // as stored; "" when absent

  int32_t n_tokens() const { return static_cast<int32_t>(tokens_.size()); }
  bool valid(TokenId id) const { return id >= 0 && id < n_tokens(); }
  // The raw vocabulary string ("▁Hello", "Ġworld", "<0x0A>"). Out-of-range id -> InputError.
  const std::string& token_text(TokenId id) const;
  float token_score(TokenId id) const;
  TokenType token_type(TokenId id) const;
  // Control, unknown or user-defined: the tokens that special-token parsing can match.
  bool is_special(TokenId id) const;
  // Exact vocabulary lookup of a token string; kNoToken when absent.
  TokenId find(std::string_view token_text) const;

  TokenId bos() const { return bos_; }
  TokenId eos() const { return eos_; }
  TokenId unk() const { return unk_; }
  TokenId pad() const { return pad_; }
  TokenId eot() const { return eot_; }
  TokenId eom() const { return eom_; }
  TokenId sep() const { return sep_; }
  bool add_bos() const { return add_bos_; }
  bool add_eos() const { return add_eos_; }
  bool add_space_prefix() const { return add_space_prefix_; }

  // End of generation: eos, eot, eom, the FIM pad/rep/sep ids when the file names them, and any
  // token whose text is a known end-of-turn marker (<|im_end|>, <|eot_id|>, <|endoftext|>,
  // <end_of_turn>, <|end|>, <|end_of_text|>, <|eom_id|>, ...).
  bool is_eog(TokenId id) const;
  const std::vector<TokenId>& eog_ids() const { return eog_ids_; }  // sorted

  // tokenizer.chat_template, or "" when the file has none.
  const std::string& chat_template() const { return chat_template_; }

  // Text -> ids. add_special: add BOS/EOS as the vocab asks (add_bos_token / add_eos_token).
  // parse_special: control tokens written in the text (e.g. "<|im_start|>") become single
  // tokens; otherwise they are tokenized as plain text. As in llama.cpp and Hugging Face,
  // user-defined (added, non-special) tokens are always matched as single tokens.
  std::vector<TokenId> tokenize(std::string_view text, bool add_special, bool parse_special) const;
  // As tokenize(text, add_special, /*parse_special=*/true), except inside the `literal` ranges
  // (sorted, not overlapping): a special token that overlaps one is not matched there, as with
  // parse_special false. For rendered chats, whose message contents are text.
  std::vector<TokenId> tokenize(std::string_view text, bool add_special,
                                std::span<const TextRange> literal) const;

  // The bytes one token stands for. Control and unknown tokens give "" unless `special`, then
  // their text; user-defined tokens give their text. May be a partial UTF-8 sequence (byte
  // tokens, byte-level BPE pieces). Out-of-range id -> InputError.
  std::string token_to_piece(TokenId id, bool special = false) const;

  // Concatenated pieces. For SPM with a dummy prefix, the space that tokenize() added at the
  // start of the text and after each special token is removed again, so
  // detokenize(tokenize(x, false, false)) == x for well-formed UTF-8 text.
  std::string detokenize(std::span<const TokenId> ids, bool special = false) const;

 private:
  struct StringHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  using TextMap = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

  struct Fragment {
    TokenId token;  // kNoToken for a stretch of text
    size_t begin, len;
  };

  Vocab() = default;
  void finish_load(const std::string& file);
  std::vector<Fragment> partition_special(std::string_view text, bool parse_special,
                                          std::span<const TextRange> literal) const;
  std::vector<TokenId> tokenize_impl(std::string_view text, bool add_special, bool parse_special,
                                     std::span<const TextRange> literal) const;
  void tokenize_spm(std::string_view text, std::vector<TokenId>& out) const;
  void tokenize_bpe(std::string_view text, std::vector<TokenId>& out) const;
  void bpe_word(const std::string& word, std::vector<TokenId>& out) const;
  TokenId spm_byte_token(uint8_t byte) const;
  void warn_uncovered() const;  // once per vocabulary: text the tokens cannot represent
  int bpe_rank(std::string_view left, std::string_view right) const;

  VocabType type_ = VocabType::kSpm;
  PreType pre_type_ = PreType::kDefault;
  std::string pre_name_;
  std::vector<std::string> tokens_;
  std::vector<float> scores_;
  std::vector<TokenType> types_;
  TextMap token_to_id_;
  TextMap merge_rank_;                   // "left right" -> rank
  std::vector<TokenId> special_tokens_;  // partition order: longest text first
  std::vector<TokenId> eog_ids_;

  TokenId bos_ = kNoToken, eos_ = kNoToken, unk_ = kNoToken, pad_ = kNoToken;
  TokenId eot_ = kNoToken, eom_ = kNoToken, sep_ = kNoToken;
  TokenId fim_pad_ = kNoToken, fim_rep_ = kNoToken, fim_sep_ = kNoToken;
  bool add_bos_ = false, add_eos_ = false, add_space_prefix_ = false;
  bool ignore_merges_ = false;  // Llama 3: a word that is a token is taken whole
  std::string chat_template_;

  // A flag set once, copied with the vocabulary (std::atomic alone would make Vocab immovable).
  struct OnceFlag {
    mutable std::atomic<bool> done{false};
    OnceFlag() = default;
    OnceFlag(const OnceFlag& o) : done(o.done.load()) {}
    OnceFlag& operator=(const OnceFlag& o) {
      done = o.done.load();
      return *this;
    }
  };
  OnceFlag warned_uncovered_;
};

// Turns a stream of token ids into text that never splits a UTF-8 character: bytes of an
// incomplete character are held back until the token that completes it arrives. Ill-formed
// bytes become U+FFFD (as soon as they are known to be ill-formed, or at flush()), so the
// emitted text is always valid UTF-8.
class StreamingDetokenizer {
 public:
  explicit StreamingDetokenizer(const Vocab& vocab, bool special = false)
      : vocab_(&vocab), special_(special) {}
  // Adds one token; returns the text that is now complete (possibly "").
  std::string push(TokenId id);
  // Adds raw bytes (for tests and callers with their own pieces).
  std::string push_bytes(std::string_view bytes);
  // Ends the stream: returns what was held back, an incomplete tail as U+FFFD.
  std::string flush();
  bool has_pending() const { return !pending_.empty(); }

 private:
  const Vocab* vocab_;
  bool special_;
  std::string pending_;
};

}  // namespace lockstep::tokenizer
