// Pre-tokenizers for byte-level BPE: split text into words before merges run. Each one implements
// the regex list that llama.cpp (and the Hugging Face tokenizer.json of the model family) uses,
// written by hand over code points and the generated Unicode category tables (no std::regex).
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace lockstep::tokenizer {

enum class PreType {
  kDefault,  // llama.cpp "default": [\p{P}$+<=>^~|]+ , gpt2 regex, \p{N}+ , [0-9][0-9][0-9]
  kGpt2,     // 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
  kLlama3,   // (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
             //   ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
  kQwen2,    // as kLlama3 but \p{N} (one digit per word)
  kSmollm,   // \p{N} (each digit alone), then the gpt2 regex
};

const char* pre_type_name(PreType type);

// Splits UTF-8 text into words. Text that no pattern matches becomes words of its own, so the
// words always concatenate back to the input (malformed UTF-8 bytes come back as U+FFFD).
std::vector<std::string> pretokenize(std::string_view text, PreType type);

}  // namespace lockstep::tokenizer
