// The merge loop both subword tokenizers share (SentencePiece and byte-level BPE): a text starts
// as its UTF-8 characters, kept as a linked list of byte ranges; the adjacent pair with the best
// priority (leftmost on ties) is merged until no pair can merge. Only the priority differs: the
// SPM score of the joined token, or minus the BPE merge rank.
#pragma once

#include <optional>
#include <queue>
#include <string_view>
#include <vector>

#include "tokenizer/unicode.h"

namespace lockstep::tokenizer {

struct MergeSymbol {
  int prev, next;
  size_t begin, len;  // bytes of the text; len 0 once merged into its left neighbour
};

inline std::vector<MergeSymbol> utf8_symbols(std::string_view text) {
  std::vector<MergeSymbol> sym;
  sym.reserve(text.size());
  for (size_t off = 0; off < text.size();) {
    const size_t len = std::min(utf8_len(static_cast<uint8_t>(text[off])), text.size() - off);
    const int idx = static_cast<int>(sym.size());
    sym.push_back({idx - 1, off + len == text.size() ? -1 : idx + 1, off, len});
    off += len;
  }
  return sym;
}

// priority(left, right) -> std::optional<double>: nullopt when the pair cannot merge, else higher
// merges first. `left` and `right` are adjacent in `text`, so they also form one contiguous view.
template <typename Priority>
void merge_symbols(std::string_view text, std::vector<MergeSymbol>& sym, Priority priority) {
  struct Bigram {
    int left, right;
    double priority;
    size_t left_len, right_len;  // sizes when queued; a later mismatch means it is stale
  };
  struct Order {
    // priority_queue pops the "largest": highest priority, then the leftmost pair.
    bool operator()(const Bigram& a, const Bigram& b) const {
      return a.priority < b.priority || (a.priority == b.priority && a.left > b.left);
    }
  };
  std::priority_queue<Bigram, std::vector<Bigram>, Order> queue;
  auto try_add = [&](int l, int r) {
    if (l < 0 || r < 0) return;
    const std::optional<double> p =
        priority(text.substr(sym[l].begin, sym[l].len), text.substr(sym[r].begin, sym[r].len));
    if (p) queue.push({l, r, *p, sym[l].len, sym[r].len});
  };
  for (int i = 1; i < static_cast<int>(sym.size()); ++i) try_add(i - 1, i);

  while (!queue.empty()) {
    const Bigram b = queue.top();
    queue.pop();
    MergeSymbol& l = sym[b.left];
    MergeSymbol& r = sym[b.right];
    if (l.len != b.left_len || r.len != b.right_len || l.len == 0 || r.len == 0) continue;
    l.len += r.len;
    r.len = 0;
    l.next = r.next;
    if (r.next >= 0) sym[r.next].prev = b.left;
    try_add(l.prev, b.left);
    try_add(b.left, l.next);
  }
}

}  // namespace lockstep::tokenizer
