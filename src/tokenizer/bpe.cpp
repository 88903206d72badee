// Byte-level BPE tokenization (GPT-2 style), as llama.cpp's llm_tokenizer_bpe does it: the
// pre-tokenizer splits the text into words; each word's bytes are mapped to printable code
// points; inside a word, the adjacent pair with the lowest merge rank (leftmost on ties) is merged
// until no listed merge applies; each resulting symbol is emitted as its token.
#include <cstdio>
#include <string>
#include <vector>

#include "tokenizer/symbol_merge.h"
#include "tokenizer/unicode.h"
#include "tokenizer/vocab.h"
#include "util/stderr_line.h"

namespace lockstep::tokenizer {

void Vocab::warn_uncovered() const {
  if (warned_uncovered_.done.exchange(true)) return;
  if (unk_ != kNoToken)
    stderr_line(
        "lockstep: warning: the vocabulary has no token, and no byte token, for some "
        "characters of the text: they became the unknown token %d\n",
        unk_);
  else
    stderr_line(
        "lockstep: warning: the vocabulary has no token, no byte token and no unknown "
        "token for some characters of the text: they were dropped\n");
}

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

  bool in_uncovered_char = false;  // the last byte had no token (a character spans symbols)
  for (int i = 0; i != -1; i = sym[i].next) {
    const std::string_view piece = w.substr(sym[i].begin, sym[i].len);
    const TokenId id = find(piece);
    if (id != kNoToken) {
      out.push_back(id);
      in_uncovered_char = false;
      continue;
    }
    // Not in the vocabulary (a vocab without some merge result): fall back to the byte-level
    // tokens, one per code point of the piece (each stands for one byte of the text), as
    // llama.cpp does for the ASCII ones. A byte the vocabulary has no token for either becomes
    // the unknown token, once per UTF-8 character, or is dropped when there is none; either way
    // with a warning, never silently.
    for (uint32_t cp : utf8_decode(piece)) {
      std::string one;
      utf8_append(one, cp);
      const TokenId b = find(one);
      if (b != kNoToken) {
        out.push_back(b);
        in_uncovered_char = false;
        continue;
      }
      const int byte = unicode_to_byte(cp);
      const bool continuation = byte >= 0x80 && byte < 0xC0;
      if (!(in_uncovered_char && continuation)) {
        warn_uncovered();
        if (unk_ != kNoToken) out.push_back(unk_);
      }
      in_uncovered_char = true;
    }
  }
}

}  // namespace lockstep::tokenizer
