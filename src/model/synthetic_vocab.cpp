#include "model/synthetic_vocab.h"

#include <algorithm>
#include <map>
#include <string_view>
#include <utility>

#include "util/error.h"

namespace lockstep {

const char* const kChatMlTemplate =
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

namespace {

// Written for this file: plain English prose, so that the merges learned from it are the common
// pairs of English (th, he, in, er, an, " the", ...).
constexpr std::string_view kCorpus =
    "The little robot woke up early in the morning and looked out of the window. The sun was "
    "shining over the hills, and the birds were singing in the trees near the river. It wanted "
    "to go outside and see the world, but first it had to finish the work that was waiting on "
    "the table. There were letters to read, numbers to count and a long story to write for the "
    "children of the town.\n"
    "When the work was done, the robot opened the door and walked into the garden. The flowers "
    "were red, yellow and blue, and the grass was still wet from the rain of the night before. A "
    "small dog came running along the path, and the robot stopped to say hello. The dog was "
    "happy to have a new friend, and together they went down to the river to watch the boats.\n"
    "In the afternoon the weather changed. Dark clouds came over the mountains and the wind "
    "began to blow through the streets. People hurried home with their bags and their baskets of "
    "bread, fruit and vegetables. The robot and the dog found shelter under the old bridge and "
    "waited there until the storm was over. They talked about the things they had seen and the "
    "places they wanted to visit one day: the sea, the forest, the great city in the north and "
    "the quiet village where the dog was born.\n"
    "In the evening everyone came together in the main square of the town. There was music and "
    "dancing, and the children played games while their parents were talking and laughing. The "
    "robot told them the story it had written, about a brave girl who sailed across the ocean to "
    "find her brother. Everyone listened carefully, and when the story was finished they "
    "thanked the robot and asked for another one. It promised to write a new story every week, "
    "and then it went home, because it was late and the stars were already shining in the sky.\n"
    "This is how it should be: simple things, done with care, make the world a better place for "
    "everyone. Learning, reading and writing are important, but so are friendship, kindness and "
    "the time we spend with the people we love. Remember that there is always something new to "
    "discover, if you are willing to open your eyes and look around you.\n"
    "Years later, the children who had listened to those stories were grown up. Some of them "
    "became teachers, others became doctors, farmers, engineers or musicians. They still "
    "remembered the evenings in the square and the patient voice of the robot, and they told "
    "the same stories to their own children. Nobody could say exactly where the robot had come "
    "from, or who had built it, but everybody agreed that the town would not have been the same "
    "without it. The library kept every page it had written, and on rainy days the students came "
    "to read them again, one after another, until the light outside turned orange and then "
    "disappeared behind the western hills.\n"
    "Questions are the beginning of understanding. Why does the river always find its way to the "
    "sea? How do the seasons know when to change? What makes a good story different from a "
    "forgotten one? The answers are not always simple, and sometimes there are no answers at "
    "all, only better questions. Still, asking them is worth the effort, because every question "
    "brings us a little closer to the truth about ourselves and about the world around us.";

// GPT-2's bytes_to_unicode: printable Latin-1 bytes stand for themselves; the other 68 bytes map
// to U+0100.. in byte order. Returns the code point.
uint32_t byte_code_point(uint8_t b) {
  auto printable = [](uint32_t c) {
    return (c >= '!' && c <= '~') || (c >= 0xA1 && c <= 0xAC) || (c >= 0xAE && c <= 0xFF);
  };
  if (printable(b)) return b;
  uint32_t n = 0;
  for (uint32_t c = 0; c < b; ++c)
    if (!printable(c)) ++n;
  return 256 + n;
}

std::string utf8(uint32_t cp) {
  std::string s;
  if (cp < 0x80) {
    s += char(cp);
  } else if (cp < 0x800) {
    s += char(0xC0 | (cp >> 6));
    s += char(0x80 | (cp & 0x3F));
  } else {
    s += char(0xE0 | (cp >> 12));
    s += char(0x80 | ((cp >> 6) & 0x3F));
    s += char(0x80 | (cp & 0x3F));
  }
  return s;
}

bool is_letter(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

// Splits like GPT-2's pre-tokenizer does for plain ASCII prose: an optional space followed by a
// run of letters; anything else is a word of its own.
std::vector<std::string> split_words(std::string_view text) {
  std::vector<std::string> words;
  size_t i = 0;
  while (i < text.size()) {
    size_t j = i;
    if (text[j] == ' ' && j + 1 < text.size() && is_letter(text[j + 1])) ++j;
    if (is_letter(text[j])) {
      while (j < text.size() && is_letter(text[j])) ++j;
    } else {
      ++j;
    }
    words.emplace_back(text.substr(i, j - i));
    i = j;
  }
  return words;
}

// Classic BPE training: repeatedly merge the most frequent adjacent pair of symbols (ties go to
// the lexicographically smallest pair, so the result is deterministic) until max_merges merges
// are learned or no pair occurs twice.
std::vector<std::pair<std::string, std::string>> learn_merges(int max_merges) {
  std::map<std::string, int> counts;
  for (const auto& w : split_words(kCorpus)) counts[w]++;
  std::vector<std::pair<std::vector<std::string>, int>> words;
  for (const auto& [w, n] : counts) {
    std::vector<std::string> symbols;
    for (char c : w) symbols.push_back(gpt2_byte_char(uint8_t(c)));
    words.emplace_back(std::move(symbols), n);
  }
  std::vector<std::pair<std::string, std::string>> merges;
  while (int(merges.size()) < max_merges) {
    std::map<std::pair<std::string, std::string>, int> pairs;
    for (const auto& [symbols, n] : words)
      for (size_t k = 0; k + 1 < symbols.size(); ++k) pairs[{symbols[k], symbols[k + 1]}] += n;
    auto best = pairs.end();
    for (auto it = pairs.begin(); it != pairs.end(); ++it)
      if (best == pairs.end() || it->second > best->second) best = it;  // map order breaks ties
    if (best == pairs.end() || best->second < 2) break;
    const auto pair = best->first;
    merges.push_back(pair);
    for (auto& [symbols, n] : words) {
      std::vector<std::string> out;
      for (size_t k = 0; k < symbols.size(); ++k) {
        if (k + 1 < symbols.size() && symbols[k] == pair.first && symbols[k + 1] == pair.second) {
          out.push_back(pair.first + pair.second);
          ++k;
        } else {
          out.push_back(symbols[k]);
        }
      }
      symbols = std::move(out);
    }
  }
  return merges;
}

}  // namespace

std::string gpt2_byte_char(uint8_t byte) {
  return utf8(byte_code_point(byte));
}

SyntheticVocab make_synthetic_vocab(int64_t n_vocab, int max_merges) {
  constexpr int64_t kSpecial = 3;
  if (n_vocab < 256 + kSpecial)
    throw InputError("vocabulary size " + std::to_string(n_vocab) + " is below the " +
                     std::to_string(256 + kSpecial) + " tokens a byte-level BPE vocab needs");
  max_merges = int(std::min<int64_t>(max_merges, n_vocab - 256 - kSpecial));
  SyntheticVocab v;
  // Byte tokens in GPT-2's order: the printable ones by code point, then the rest.
  std::vector<std::pair<uint32_t, uint8_t>> order;
  for (int b = 0; b < 256; ++b) order.emplace_back(byte_code_point(uint8_t(b)), uint8_t(b));
  std::sort(order.begin(), order.end());
  for (const auto& [cp, b] : order) {
    v.tokens.push_back(utf8(cp));
    v.types.push_back(1);
  }
  for (const auto& [left, right] : learn_merges(max_merges)) {
    v.merges.push_back(left + " " + right);
    v.tokens.push_back(left + right);
    v.types.push_back(1);
  }
  auto add_control = [&](const char* text) {
    v.tokens.push_back(text);
    v.types.push_back(3);
    v.n_special++;
    return int32_t(v.tokens.size() - 1);
  };
  v.endoftext = add_control("<|endoftext|>");
  v.im_start = add_control("<|im_start|>");
  v.im_end = add_control("<|im_end|>");
  while (int64_t(v.tokens.size()) < n_vocab) {
    v.tokens.push_back("[PAD" + std::to_string(v.tokens.size()) + "]");
    v.types.push_back(5);
  }
  return v;
}

}  // namespace lockstep
