// Each splitter refines a list of words (given as lengths in code points) into smaller words: it
// runs its pattern inside every word separately, emitting every match, and every stretch between
// matches, as a word. Patterns are matched leftmost-first with the regex alternation order.
#include "tokenizer/pretokenize.h"

#include <cstdint>
#include <functional>

#include "tokenizer/unicode.h"

namespace lockstep::tokenizer {

namespace {

using Cpts = std::vector<uint32_t>;
using Words = std::vector<size_t>;  // word lengths in code points, in order

constexpr uint32_t kPastEnd = 0xFFFFFFFF;

// A view of one input word: code point and flag access that reads as "nothing" past its end.
struct Span {
  const Cpts& cp;
  size_t begin, end;
  uint32_t at(size_t i) const { return i < end ? cp[i] : kPastEnd; }
  uint16_t flags(size_t i) const { return i < end ? unicode_flags(cp[i]) : 0; }
};

// Collects output words; emit(to) closes the word that runs from the current position to `to`.
struct Emitter {
  Words& out;
  size_t pos;
  void emit(size_t to) {
    if (to > pos) out.push_back(to - pos);
    pos = to;
  }
};

uint32_t ascii_lower(uint32_t c) {
  return (c >= 'A' && c <= 'Z') ? c + 32 : c;
}

// Length of the contraction ('s 't 'm 'd 're 've 'll) that starts at s.begin-relative `pos`
// (which holds an apostrophe), or 0.
size_t contraction_len(const Span& s, size_t pos, bool ignore_case) {
  uint32_t c1 = s.at(pos + 1), c2 = s.at(pos + 2);
  if (ignore_case) {
    c1 = ascii_lower(c1);
    c2 = ascii_lower(c2);
  }
  if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd') return 2;
  if ((c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') || (c1 == 'l' && c2 == 'l')) return 3;
  return 0;
}

// [^\s\p{L}\p{N}] for a code point inside the word.
bool is_other(uint16_t f) {
  return f != 0 && !(f & (kWhitespace | kLetter | kNumber));
}

template <typename Fn>
Words for_each_word(const Cpts& cp, const Words& words, Fn&& split_one) {
  Words out;
  out.reserve(words.size());
  size_t start = 0;
  for (size_t len : words) {
    split_one(Span{cp, start, start + len}, out);
    start += len;
  }
  return out;
}

// 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
Words split_gpt2(const Cpts& cp, const Words& words) {
  return for_each_word(cp, words, [](const Span& s, Words& out) {
    Emitter e{out, s.begin};
    while (e.pos < s.end) {
      const size_t pos = e.pos;
      const uint32_t c = s.cp[pos];
      if (c == '\'') {
        if (size_t n = contraction_len(s, pos, false)) {
          e.emit(pos + n);
          continue;
        }
      }
      size_t p = pos + (c == ' ' ? 1 : 0);
      const uint16_t f = s.flags(p);
      if (f & kLetter) {
        while (s.flags(p) & kLetter) ++p;
        e.emit(p);
        continue;
      }
      if (f & kNumber) {
        while (s.flags(p) & kNumber) ++p;
        e.emit(p);
        continue;
      }
      if (is_other(f)) {
        while (is_other(s.flags(p))) ++p;
        e.emit(p);
        continue;
      }
      size_t q = pos;
      while (s.flags(q) & kWhitespace) ++q;
      if (q - pos > 1 && q < s.end) {
        e.emit(q - 1);  // \s+(?!\S): leave the last space to prefix the next word
        continue;
      }
      e.emit(q > pos ? q : pos + 1);
    }
  });
}

// (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,max_digits}|
//  ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
Words split_llama3(const Cpts& cp, const Words& words, size_t max_digits) {
  return for_each_word(cp, words, [max_digits](const Span& s, Words& out) {
    Emitter e{out, s.begin};
    auto is_nl = [](uint32_t c) { return c == '\r' || c == '\n'; };
    while (e.pos < s.end) {
      const size_t pos = e.pos;
      const uint32_t c = s.cp[pos];
      const uint16_t f = s.flags(pos);
      if (c == '\'') {
        if (size_t n = contraction_len(s, pos, true)) {
          e.emit(pos + n);
          continue;
        }
      }
      if (!is_nl(c) && !(f & kNumber) && ((f & kLetter) || (s.flags(pos + 1) & kLetter))) {
        size_t p = pos + 1;
        while (s.flags(p) & kLetter) ++p;
        e.emit(p);
        continue;
      }
      if (f & kNumber) {
        size_t p = pos;
        while (p - pos < max_digits && (s.flags(p) & kNumber)) ++p;
        e.emit(p);
        continue;
      }
      {
        size_t p = pos + (c == ' ' ? 1 : 0);
        if (is_other(s.flags(p))) {
          while (is_other(s.flags(p))) ++p;
          while (is_nl(s.at(p))) ++p;
          e.emit(p);
          continue;
        }
      }
      size_t q = pos, after_last_nl = 0;
      while (s.flags(q) & kWhitespace) {
        if (is_nl(s.cp[q])) after_last_nl = q + 1;
        ++q;
      }
      if (after_last_nl) {
        e.emit(after_last_nl);  // \s*[\r\n]+
        continue;
      }
      if (q - pos > 1 && q < s.end) {
        e.emit(q - 1);  // \s+(?!\S)
        continue;
      }
      e.emit(q > pos ? q : pos + 1);
    }
  });
}

// A pattern of the form  [class]{min,max}  (greedy), searched left to right.
Words split_class_runs(const Cpts& cp, const Words& words, const std::function<bool(uint32_t)>& in,
                       size_t min_len, size_t max_len) {
  return for_each_word(cp, words, [&](const Span& s, Words& out) {
    Emitter e{out, s.begin};
    size_t pos = s.begin;
    while (pos < s.end) {
      size_t p = pos;
      while (p < s.end && p - pos < max_len && in(s.cp[p])) ++p;
      if (p > pos && p - pos >= min_len) {
        e.emit(pos);  // the unmatched stretch before the match
        e.emit(p);
        pos = p;
      } else {
        ++pos;
      }
    }
    e.emit(s.end);
  });
}

constexpr size_t kUnbounded = static_cast<size_t>(-1);

bool is_n(uint32_t c) {
  return is_number(c);
}

}  // namespace

const char* pre_type_name(PreType type) {
  switch (type) {
    case PreType::kDefault:
      return "default";
    case PreType::kGpt2:
      return "gpt2";
    case PreType::kLlama3:
      return "llama3";
    case PreType::kQwen2:
      return "qwen2";
    case PreType::kSmollm:
      return "smollm";
  }
  return "?";
}

std::vector<std::string> pretokenize(std::string_view text, PreType type) {
  const Cpts cp = utf8_decode(text);
  Words words;
  if (!cp.empty()) words.push_back(cp.size());
  switch (type) {
    case PreType::kDefault:
      words = split_class_runs(
          cp, words,
          [](uint32_t c) {
            return is_punctuation(c) || c == '$' || c == '+' || c == '<' || c == '=' || c == '>' ||
                   c == '^' || c == '~' || c == '|';
          },
          1, kUnbounded);
      words = split_gpt2(cp, words);
      words = split_class_runs(cp, words, is_n, 1, kUnbounded);
      words = split_class_runs(
          cp, words, [](uint32_t c) { return c >= '0' && c <= '9'; }, 3, 3);
      break;
    case PreType::kGpt2:
      words = split_gpt2(cp, words);
      break;
    case PreType::kLlama3:
      words = split_llama3(cp, words, 3);
      break;
    case PreType::kQwen2:
      words = split_llama3(cp, words, 1);
      break;
    case PreType::kSmollm:
      words = split_class_runs(cp, words, is_n, 1, 1);
      words = split_gpt2(cp, words);
      break;
  }
  std::vector<std::string> out;
  out.reserve(words.size());
  size_t start = 0;
  for (size_t len : words) {
    std::string w;
    for (size_t i = start; i < start + len; ++i) utf8_append(w, cp[i]);
    out.push_back(std::move(w));
    start += len;
  }
  return out;
}

}  // namespace lockstep::tokenizer
