// SentencePiece (BPE-with-scores) tokenization, as llama.cpp's llm_tokenizer_spm does it:
// start from UTF-8 characters, repeatedly merge the adjacent pair whose concatenation is the
// vocabulary token with the highest score (leftmost on ties), then emit each remaining symbol
// as its token, or as <0xNN> byte tokens when it is not in the vocabulary.
#include <string>
#include <vector>

#include "tokenizer/symbol_merge.h"
#include "tokenizer/unicode.h"
#include "tokenizer/vocab.h"
#include "util/error.h"

namespace lockstep::tokenizer {

TokenId Vocab::spm_byte_token(uint8_t byte) const {
  static const char* const hex = "0123456789ABCDEF";
  const char name[7] = {'<', '0', 'x', hex[byte >> 4], hex[byte & 15], '>', 0};
  TokenId id = find(name);
  if (id == kNoToken) id = find(std::string(1, static_cast<char>(byte)));
  if (id == kNoToken) id = unk_;
  if (id == kNoToken) {
    throw InputError(std::string("the vocabulary cannot represent byte ") + name +
                     ": no byte token and no unknown token");
  }
  return id;
}

void Vocab::tokenize_spm(std::string_view text, std::vector<TokenId>& out) const {
  std::vector<MergeSymbol> sym = utf8_symbols(text);
  if (sym.empty()) return;
  merge_symbols(text, sym, [&](std::string_view l, std::string_view r) -> std::optional<double> {
    // Adjacent pieces of `text`: together they are one contiguous view.
    const TokenId id = find(std::string_view(l.data(), l.size() + r.size()));
    if (id == kNoToken) return std::nullopt;
    return double(scores_[id]);
  });

  for (int i = 0; i != -1; i = sym[i].next) {
    const std::string_view piece = text.substr(sym[i].begin, sym[i].len);
    const TokenId id = find(piece);
    if (id != kNoToken) {
      out.push_back(id);
    } else {
      for (char c : piece) out.push_back(spm_byte_token(static_cast<uint8_t>(c)));
    }
  }
}

}  // namespace lockstep::tokenizer
