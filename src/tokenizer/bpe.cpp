// Byte-level BPE tokenization (GPT-2 style), as llama.cpp's llm_tokenizer_bpe does it: the
// pre-tokenizer splits the text into words; each word's bytes are mapped to printable code
// points; inside a word, the adjacent pair with the lowest merge rank (leftmost on ties) is merged
// until no listed merge applies; each resulting symbol is emitted as its token.
#include <queue>
#include <string>
#include <vector>

#include "tokenizer/unicode.h"
#include "tokenizer/vocab.h"

namespace lockstep::tokenizer {

namespace {

struct Symbol {
  int prev, next;
  size_t begin, len;  // bytes of the encoded word
};

struct Bigram {
  int left, right;
  int rank;
  size_t left_len, right_len;  // sizes when queued; a later mismatch means it is stale
};

struct BigramOrder {
  // priority_queue pops the "largest": lowest rank, then the leftmost pair.
  bool operator()(const Bigram& a, const Bigram& b) const {
    return a.rank > b.rank || (a.rank == b.rank && a.left > b.left);
  }
};

}  // namespace

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
  std::vector<Symbol> sym;
  sym.reserve(w.size());
  for (size_t off = 0; off < w.size();) {
    const size_t len = std::min(utf8_len(static_cast<uint8_t>(w[off])), w.size() - off);
    const int idx = static_cast<int>(sym.size());
    sym.push_back({idx - 1, off + len == w.size() ? -1 : idx + 1, off, len});
    off += len;
  }

  std::priority_queue<Bigram, std::vector<Bigram>, BigramOrder> queue;
  auto try_add = [&](int l, int r) {
    if (l < 0 || r < 0) return;
    const int rank =
        bpe_rank(w.substr(sym[l].begin, sym[l].len), w.substr(sym[r].begin, sym[r].len));
    if (rank < 0) return;
    queue.push({l, r, rank, sym[l].len, sym[r].len});
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
