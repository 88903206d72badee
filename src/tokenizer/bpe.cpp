// Byte-level BPE tokenization (GPT-2 style), as llama.cpp's llm_tokenizer_bpe does it: the
// pre-tokenizer splits the text into words; each word's bytes are mapped to printable code
// points; inside a word, the adjacent pair with the lowest merge rank (leftmost on ties) is merged
// until no listed merge applies; each resulting symbol is emitted as its token.
#include <string>
#include <vector>

#include "tokenizer/symbol_merge.h"
#include "tokenizer/unicode.h"
#include "tokenizer/vocab.h"

namespace lockstep::tokenizer {

int Vocab::bpe_rank(std::string_view left, std::string_view right) const {
  std::string key;
  key.reserve(left.size() + right.size() + 1);
  key.append(left);
  key.push_back(' ');
  key.append(right);
  auto it = merge_rank_.find(key);
  return it == merge_rank_.end() ? -1 : it->second;
}

void Vocab::tokenize_bpe(std::string_view text, std::vector<TokenId>& out) const {
  for (const std::string& word : pretokenize(text, pre_type_)) {
    std::string encoded;
    encoded.reserve(word.size() * 2);
    for (char c : word) utf8_append(encoded, byte_to_unicode(static_cast<uint8_t>(c)));
    bpe_word(encoded, out);
  }
}

void Vocab::bpe_word(const std::string& word, std::vector<TokenId>& out) const {
  if (word.empty()) return;
  if (ignore_merges_) {
    const TokenId id = find(word);
    if (id != kNoToken) {
      out.push_back(id);
      return;
    }
  }
  const std::string_view w(word);
  std::vector<MergeSymbol> sym = utf8_symbols(w);
  merge_symbols(w, sym, [&](std::string_view l, std::string_view r) -> std::optional<double> {
    const int rank = bpe_rank(l, r);
    if (rank < 0) return std::nullopt;
    return -double(rank);  // the lowest rank merges first
  });

  for (int i = 0; i != -1; i = sym[i].next) {
    const std::string_view piece = w.substr(sym[i].begin, sym[i].len);
    const TokenId id = find(piece);
    if (id != kNoToken) {
      out.push_back(id);
      continue;
    }
    // Not in the vocabulary (a vocab without some merge result): fall back to single bytes
    // where the vocabulary has them, as llama.cpp does.
    for (char c : piece) {
      const TokenId b = find(std::string_view(&c, 1));
      if (b != kNoToken) out.push_back(b);
    }
  }
}

}  // namespace lockstep::tokenizer
