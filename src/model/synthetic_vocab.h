// A small but working byte-level BPE vocabulary for synthetic models: the 256 byte tokens in
// GPT-2's byte-to-unicode form, merges learned from a built-in English text, the ChatML special
// tokens, and [PAD<n>] fillers up to the size of the real model's vocabulary.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace lockstep {

struct SyntheticVocab {
  std::vector<std::string> tokens;  // tokenizer.ggml.tokens
  std::vector<int32_t> types;       // tokenizer.ggml.token_type (1 normal, 3 control, 5 unused)
  std::vector<std::string> merges;  // tokenizer.ggml.merges, "left right", rank order
  int32_t endoftext = -1;           // <|endoftext|>: bos and padding
  int32_t im_start = -1;            // <|im_start|>
  int32_t im_end = -1;              // <|im_end|>: eos and end of turn
  int32_t n_special = 0;            // CONTROL tokens
};

// Deterministic. At most max_merges merges; n_vocab must leave room for 256 bytes, the merges
// learned and 3 special tokens (InputError otherwise); the rest is [PAD<id>] of type UNUSED.
SyntheticVocab make_synthetic_vocab(int64_t n_vocab, int max_merges = 300);

// GPT-2's printable stand-in for a byte, as UTF-8 (' ' -> "Ġ", '\n' -> "Ċ", 'a' -> "a").
std::string gpt2_byte_char(uint8_t byte);

// A ChatML template (Jinja) as Qwen2.5 and SmolLM2 ship, without a default system prompt.
extern const char* const kChatMlTemplate;

}  // namespace lockstep
