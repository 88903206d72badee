// SentencePiece (BPE-with-scores) tokenization, as llama.cpp's llm_tokenizer_spm does it:
// start from UTF-8 characters, repeatedly merge the adjacent pair whose concatenation is the
// vocabulary token with the highest score (leftmost on ties), then emit each remaining symbol
// as its token, or as <0xNN> byte tokens when it is not in the vocabulary.
#include <queue>
#include <string>
#include <vector>

#include "tokenizer/unicode.h"
#include "tokenizer/vocab.h"
#include "util/error.h"

namespace lockstep::tokenizer {

namespace {

struct Symbol {
  int prev, next;
  size_t begin, len;  // bytes of the text
};

struct Bigram {
  int left, right;
  float score;
  size_t left_len, right_len;  // sizes when queued; a later mismatch means it is stale
};

struct BigramOrder {
  // priority_queue pops the "largest": highest score, then the leftmost pair.
  bool operator()(const Bigram& a, const Bigram& b) const {
    return a.score < b.score || (a.score == b.score && a.left > b.left);
  }
};

}  // namespace

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
  std::vector<Symbol> sym;
  sym.reserve(text.size());
  for (size_t off = 0; off < text.size();) {
    const size_t len = std::min(utf8_len(static_cast<uint8_t>(text[off])), text.size() - off);
    const int idx = static_cast<int>(sym.size());
    sym.push_back({idx - 1, off + len == text.size() ? -1 : idx + 1, off, len});
    off += len;
  }
  if (sym.empty()) return;

  std::priority_queue<Bigram, std::vector<Bigram>, BigramOrder> queue;
  auto try_add = [&](int l, int r) {
    if (l < 0 || r < 0) return;
    const TokenId id = find(text.substr(sym[l].begin, sym[l].len + sym[r].len));
    if (id == kNoToken) return;
    queue.push({l, r, scores_[id], sym[l].len, sym[r].len});
  };
  for (int i = 1; i < static_cast<int>(sym.size()); ++i) try_add(i - 1, i);

  while (!queue.empty()) {
    const Bigram b = queue.top();
    queue.pop();
    Symbol& l = sym[b.left];
    Symbol& r = sym[b.right];
    if (l.len != b.left_len || r.len != b.right_len || l.len == 0 || r.len == 0) continue;
    l.len += r.len;
    r.len = 0;
    l.next = r.next;
    if (r.next >= 0) sym[r.next].prev = b.left;
    try_add(l.prev, b.left);
    try_add(b.left, l.next);
  }

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
