// Vocabulary loading, special-token partitioning, pieces and detokenization. The SPM and BPE
// merge loops live in spm.cpp and bpe.cpp.
#include "tokenizer/vocab.h"

#include <algorithm>
#include <cstdio>

#include "gguf/gguf_reader.h"
#include "tokenizer/unicode.h"
#include "util/error.h"
#include "util/stderr_line.h"

namespace lockstep::tokenizer {

namespace {

const char* const kSpmSpace = "\xE2\x96\x81";  // U+2581 LOWER ONE EIGHTH BLOCK, SPM's space

struct PreName {
  const char* name;
  PreType type;
};

// tokenizer.ggml.pre values accepted for gpt2-model vocabularies, with the regex family each
// one uses in llama.cpp.
constexpr PreName kPreNames[] = {
    {"default", PreType::kDefault},
    {"gpt-2", PreType::kGpt2},
    {"gpt2", PreType::kGpt2},
    {"phi-2", PreType::kGpt2},
    {"llama3", PreType::kLlama3},
    {"llama-v3", PreType::kLlama3},
    {"llama-bpe", PreType::kLlama3},
    {"qwen2", PreType::kQwen2},
    {"deepseek-r1-qwen", PreType::kQwen2},
    {"smollm", PreType::kSmollm},
    {"starcoder", PreType::kSmollm},
    {"refact", PreType::kSmollm},
    {"command-r", PreType::kSmollm},
    {"codeshell", PreType::kSmollm},
    {"exaone", PreType::kSmollm},
    {"minerva-7b", PreType::kSmollm},
};

// Token texts that end a turn (llama.cpp's list). The first match also serves as the EOT id
// when the file does not name one; the list is in that priority order.
constexpr const char* kEogTexts[] = {
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "_<EOT>",
    "<|eom_id|>",
    "<|return|>",
    "<|call|>",
    "<end_of_utterance>",
    "<\xEF\xBD\x9C"
    "end\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>",  // DeepSeek
};

// "<0x0A>" -> 10; -1 for anything else.
int parse_byte_token(std::string_view t) {
  if (t.size() != 6 || t.substr(0, 3) != "<0x" || t[5] != '>') return -1;
  auto hex = [](char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  const int hi = hex(t[3]), lo = hex(t[4]);
  return (hi < 0 || lo < 0) ? -1 : hi * 16 + lo;
}

std::string supported_pre_names() {
  std::string s;
  for (const auto& p : kPreNames) {
    if (!s.empty()) s += ", ";
    s += p.name;
  }
  return s;
}

}  // namespace

Vocab Vocab::load(const std::string& gguf_path) {
  auto file = gguf::GgufFile::open(gguf_path);
  return from_gguf(file);
}

Vocab Vocab::from_gguf(const gguf::GgufFile& f) {
  const std::string& file = f.path();
  Vocab v;

  const auto model = f.get_string("tokenizer.ggml.model");
  if (!model) throw InputError(file + ": no tokenizer in this file (tokenizer.ggml.model missing)");
  if (*model == "llama") {
    v.type_ = VocabType::kSpm;
  } else if (*model == "gpt2") {
    v.type_ = VocabType::kBpe;
  } else {
    throw InputError(file + ": unsupported tokenizer model '" + gguf::printable_name(*model) +
                     "' (supported: llama = SentencePiece, gpt2 = byte-level BPE)");
  }

  // Tokens, scores, types.
  const gguf::Value* tokens = f.find("tokenizer.ggml.tokens");
  if (!tokens || tokens->type != gguf::ValueType::ARRAY ||
      tokens->elem_type != gguf::ValueType::STRING) {
    throw InputError(file + ": tokenizer.ggml.tokens is missing or not an array of strings");
  }
  const size_t n = tokens->array.size();
  if (n == 0) throw InputError(file + ": tokenizer.ggml.tokens is empty");
  if (n > static_cast<size_t>(INT32_MAX)) throw InputError(file + ": too many tokens");
  v.tokens_.reserve(n);
  for (const auto& t : tokens->array) v.tokens_.push_back(t.s);

  v.scores_.assign(n, 0.0f);
  if (const gguf::Value* s = f.find("tokenizer.ggml.scores")) {
    auto scores = s->as_floats();
    if (!scores || scores->size() != n) {
      throw InputError(file + ": tokenizer.ggml.scores must be " + std::to_string(n) +
                       " numbers, one per token");
    }
    v.scores_ = std::move(*scores);
  }
  v.types_.assign(n, TokenType::kNormal);
  if (const gguf::Value* t = f.find("tokenizer.ggml.token_type")) {
    auto types = t->as_ints();
    if (!types || types->size() != n) {
      throw InputError(file + ": tokenizer.ggml.token_type must be " + std::to_string(n) +
                       " integers, one per token");
    }
    for (size_t i = 0; i < n; ++i) {
      const int32_t ty = (*types)[i];
      v.types_[i] = (ty >= 0 && ty <= 6) ? static_cast<TokenType>(ty) : TokenType::kUndefined;
    }
  }
  v.token_to_id_.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    // As llama.cpp: when a text occurs twice, the later id wins.
    if (!v.tokens_[i].empty()) v.token_to_id_[v.tokens_[i]] = static_cast<TokenId>(i);
  }

  // Model-specific defaults, then the file's keys.
  if (v.type_ == VocabType::kSpm) {
    v.bos_ = 1;
    v.eos_ = 2;
    v.unk_ = 0;
    v.add_bos_ = true;
    v.add_space_prefix_ = true;
  } else {
    const gguf::Value* merges = f.find("tokenizer.ggml.merges");
    if (!merges || merges->type != gguf::ValueType::ARRAY ||
        merges->elem_type != gguf::ValueType::STRING) {
      throw InputError(file + ": a gpt2 tokenizer needs tokenizer.ggml.merges (array of strings)");
    }
    v.merge_rank_.reserve(merges->array.size());
    for (size_t r = 0; r < merges->array.size(); ++r) {
      const std::string& m = merges->array[r].s;
      const size_t sp = m.find(' ', 1);
      if (sp == std::string::npos || sp + 1 >= m.size()) {
        throw InputError(file + ": tokenizer.ggml.merges[" + std::to_string(r) + "] = '" +
                         gguf::printable_name(m) + "' is not of the form 'left right'");
      }
      v.merge_rank_.emplace(m, static_cast<int32_t>(r));  // first occurrence keeps its rank
    }

    const auto pre = f.get_string("tokenizer.ggml.pre");
    if (!pre) {
      stderr_line(
          "lockstep: warning: %s: tokenizer.ggml.pre missing, using the 'default' "
          "pre-tokenizer (tokens may differ from the original model's)\n",
          file.c_str());
      v.pre_type_ = PreType::kDefault;
    } else {
      v.pre_name_ = *pre;
      bool found = false;
      for (const auto& p : kPreNames) {
        if (*pre == p.name) {
          v.pre_type_ = p.type;
          found = true;
          break;
        }
      }
      if (!found) {
        throw InputError(file + ": unknown BPE pre-tokenizer tokenizer.ggml.pre = '" +
                         gguf::printable_name(*pre) + "' (supported: " + supported_pre_names() +
                         ")");
      }
    }
    if (v.pre_type_ == PreType::kLlama3) {
      v.ignore_merges_ = true;
      v.add_bos_ = true;
    }
  }
  if (v.type_ == VocabType::kSpm) {
    if (auto p = f.get_string("tokenizer.ggml.pre")) v.pre_name_ = *p;
  }

  struct IdKey {
    const char* key;
    TokenId* id;
  };
  const IdKey id_keys[] = {
      {"tokenizer.ggml.bos_token_id", &v.bos_},
      {"tokenizer.ggml.eos_token_id", &v.eos_},
      {"tokenizer.ggml.unknown_token_id", &v.unk_},
      {"tokenizer.ggml.padding_token_id", &v.pad_},
      {"tokenizer.ggml.eot_token_id", &v.eot_},
      {"tokenizer.ggml.eom_token_id", &v.eom_},
      {"tokenizer.ggml.seperator_token_id", &v.sep_},  // sic: the GGUF key is misspelt
      {"tokenizer.ggml.fim_pad_token_id", &v.fim_pad_},
      {"tokenizer.ggml.fim_rep_token_id", &v.fim_rep_},
      {"tokenizer.ggml.fim_sep_token_id", &v.fim_sep_},
  };
  for (const auto& k : id_keys) {
    const auto id = f.get_int(k.key);
    if (!id) continue;
    if (*id == 0xFFFFFFFFLL || *id == -1) {
      *k.id = kNoToken;  // the usual "none" marker
    } else if (*id < 0 || *id >= static_cast<int64_t>(n)) {
      stderr_line("lockstep: warning: %s: %s = %lld is not a token id, ignored\n", file.c_str(),
                  k.key, static_cast<long long>(*id));
    } else {
      *k.id = static_cast<TokenId>(*id);
    }
  }
  if (auto b = f.get_bool("tokenizer.ggml.add_bos_token")) v.add_bos_ = *b;
  if (auto b = f.get_bool("tokenizer.ggml.add_eos_token")) v.add_eos_ = *b;
  if (v.type_ == VocabType::kSpm) {
    if (auto b = f.get_bool("tokenizer.ggml.add_space_prefix")) v.add_space_prefix_ = *b;
  }
  if (v.add_bos_ && v.bos_ == kNoToken) {
    throw InputError(file + ": tokenizer.ggml.add_bos_token is true but there is no BOS token");
  }
  if (v.add_eos_ && v.eos_ == kNoToken) {
    throw InputError(file + ": tokenizer.ggml.add_eos_token is true but there is no EOS token");
  }
  if (auto t = f.get_string("tokenizer.chat_template")) v.chat_template_ = *t;

  v.finish_load(file);
  return v;
}

void Vocab::finish_load(const std::string& file) {
  (void)file;
  // End-of-generation tokens. Tokens named by their text are made control tokens, as llama.cpp
  // does, so that they print only when special pieces are asked for.
  std::vector<TokenId> eog;
  for (TokenId id : {eos_, eot_, eom_, fim_pad_, fim_rep_, fim_sep_}) {
    if (id != kNoToken) eog.push_back(id);
  }
  for (const char* text : kEogTexts) {
    const TokenId id = find(text);
    if (id == kNoToken) continue;
    if (eot_ == kNoToken && std::string_view(text) != "<|eom_id|>") eot_ = id;
    if (std::string_view(text) == "<|eom_id|>" && eom_ == kNoToken) eom_ = id;
    types_[id] = TokenType::kControl;
    eog.push_back(id);
  }
  std::sort(eog.begin(), eog.end());
  eog.erase(std::unique(eog.begin(), eog.end()), eog.end());
  eog_ids_ = std::move(eog);

  // Tokens that partition the text before the tokenizer runs: longest text first, so that a
  // token is never split by a shorter one that it contains.
  special_tokens_.clear();
  for (TokenId id = 0; id < n_tokens(); ++id) {
    if (is_special(id) && !tokens_[id].empty()) special_tokens_.push_back(id);
  }
  std::stable_sort(special_tokens_.begin(), special_tokens_.end(),
                   [&](TokenId a, TokenId b) { return tokens_[a].size() > tokens_[b].size(); });
}

const std::string& Vocab::token_text(TokenId id) const {
  if (!valid(id)) {
    throw InputError("token id " + std::to_string(id) + " is out of range (the vocabulary has " +
                     std::to_string(n_tokens()) + " tokens)");
  }
  return tokens_[id];
}

float Vocab::token_score(TokenId id) const {
  (void)token_text(id);
  return scores_[id];
}

TokenType Vocab::token_type(TokenId id) const {
  (void)token_text(id);
  return types_[id];
}

bool Vocab::is_special(TokenId id) const {
  if (!valid(id)) return false;
  const TokenType t = types_[id];
  return t == TokenType::kControl || t == TokenType::kUnknown || t == TokenType::kUserDefined;
}

TokenId Vocab::find(std::string_view text) const {
  auto it = token_to_id_.find(text);
  return it == token_to_id_.end() ? kNoToken : it->second;
}

bool Vocab::is_eog(TokenId id) const {
  return std::binary_search(eog_ids_.begin(), eog_ids_.end(), id);
}

std::vector<Vocab::Fragment> Vocab::partition_special(std::string_view text, bool parse_special,
                                                      std::span<const TextRange> literal) const {
  // Whether [at, at + len) overlaps a literal range (few: one per chat message).
  auto in_literal = [&](size_t at, size_t len) {
    for (const TextRange& r : literal)
      if (r.begin < at + len && at < r.begin + r.len) return true;
    return false;
  };
  std::vector<Fragment> frags;
  if (text.empty()) return frags;
  frags.push_back({kNoToken, 0, text.size()});
  for (TokenId id : special_tokens_) {
    const TokenType t = types_[id];
    // Without parse_special only user-defined tokens are matched.
    if (!parse_special && t != TokenType::kUserDefined) continue;
    const std::string& tok = tokens_[id];
    std::vector<Fragment> next;
    next.reserve(frags.size());
    for (const Fragment& f : frags) {
      if (f.token != kNoToken) {
        next.push_back(f);
        continue;
      }
      const std::string_view part = text.substr(f.begin, f.len);
      const bool check_literal = !literal.empty() && t != TokenType::kUserDefined;
      size_t pos = 0, from = 0;
      for (;;) {
        const size_t hit = part.find(tok, from);
        if (hit == std::string_view::npos) break;
        if (check_literal && in_literal(f.begin + hit, tok.size())) {
          from = hit + 1;  // plain text here; a later occurrence may still be markup
          continue;
        }
        if (hit > pos) next.push_back({kNoToken, f.begin + pos, hit - pos});
        next.push_back({id, f.begin + hit, tok.size()});
        pos = from = hit + tok.size();
      }
      if (pos < part.size()) next.push_back({kNoToken, f.begin + pos, part.size() - pos});
    }
    frags = std::move(next);
  }
  return frags;
}

std::vector<TokenId> Vocab::tokenize(std::string_view text, bool add_special,
                                     bool parse_special) const {
  return tokenize_impl(text, add_special, parse_special, {});
}

std::vector<TokenId> Vocab::tokenize(std::string_view text, bool add_special,
                                     std::span<const TextRange> literal) const {
  return tokenize_impl(text, add_special, /*parse_special=*/true, literal);
}

std::vector<TokenId> Vocab::tokenize_impl(std::string_view text, bool add_special,
                                          bool parse_special,
                                          std::span<const TextRange> literal) const {
  std::vector<TokenId> out;
  if (add_special && add_bos_) out.push_back(bos_);
  const auto frags = partition_special(text, parse_special, literal);
  if (type_ == VocabType::kSpm) {
    bool prev_special = true;  // the dummy prefix goes at the start and after special tokens
    for (const Fragment& f : frags) {
      if (f.token != kNoToken) {
        out.push_back(f.token);
        prev_special = true;
        continue;
      }
      std::string s;
      s.reserve(f.len * 3 + 3);
      if (add_space_prefix_ && prev_special) s += kSpmSpace;
      for (char c : text.substr(f.begin, f.len)) {
        if (c == ' ') {
          s += kSpmSpace;
        } else {
          s.push_back(c);
        }
      }
      tokenize_spm(s, out);
      prev_special = false;
    }
  } else {
    for (const Fragment& f : frags) {
      if (f.token != kNoToken) {
        out.push_back(f.token);
      } else {
        tokenize_bpe(text.substr(f.begin, f.len), out);
      }
    }
  }
  if (add_special && add_eos_) out.push_back(eos_);
  return out;
}

std::string Vocab::token_to_piece(TokenId id, bool special) const {
  const std::string& text = token_text(id);
  switch (types_[id]) {
    case TokenType::kControl:
    case TokenType::kUnknown:
      return special ? text : std::string();
    case TokenType::kUserDefined:
      return text;
    case TokenType::kNormal:
      break;
    case TokenType::kByte:
      if (type_ == VocabType::kSpm) {
        const int b = parse_byte_token(text);
        if (b >= 0) return std::string(1, static_cast<char>(b));
      }
      return std::string();
    default:  // unused, undefined
      return std::string();
  }
  std::string out;
  if (type_ == VocabType::kSpm) {
    out.reserve(text.size());
    for (size_t i = 0; i < text.size();) {
      if (text.compare(i, 3, kSpmSpace) == 0) {
        out.push_back(' ');
        i += 3;
      } else {
        out.push_back(text[i++]);
      }
    }
  } else {
    // Byte-level BPE: each code point stands for one byte. A code point outside the mapping
    // (a malformed vocab) is kept as it is.
    for (uint32_t cp : utf8_decode(text)) {
      const int b = unicode_to_byte(cp);
      if (b >= 0) {
        out.push_back(static_cast<char>(b));
      } else {
        utf8_append(out, cp);
      }
    }
  }
  return out;
}

std::string Vocab::detokenize(std::span<const TokenId> ids, bool special) const {
  std::string out;
  const bool strip = type_ == VocabType::kSpm && add_space_prefix_;
  bool after_special = true;
  for (TokenId id : ids) {
    std::string piece = token_to_piece(id, special);
    if (is_special(id)) {
      after_special = true;
      out += piece;
      continue;
    }
    if (strip && after_special && !piece.empty() && piece[0] == ' ') piece.erase(0, 1);
    after_special = false;
    out += piece;
  }
  return out;
}

std::string StreamingDetokenizer::push(TokenId id) {
  return push_bytes(vocab_->token_to_piece(id, special_));
}

std::string StreamingDetokenizer::push_bytes(std::string_view bytes) {
  pending_.append(bytes);
  std::string out;
  size_t i = 0;
  while (i < pending_.size()) {
    const Utf8Check c = utf8_check(pending_, i);
    if (c.status == Utf8Check::kIncomplete) break;  // wait for the rest of the character
    if (c.status == Utf8Check::kComplete) {
      out.append(pending_, i, c.len);
    } else {
      utf8_append(out, kReplacementChar);
    }
    i += c.len;
  }
  pending_.erase(0, i);
  return out;
}

std::string StreamingDetokenizer::flush() {
  std::string out = utf8_sanitize(pending_);
  pending_.clear();
  return out;
}

}  // namespace lockstep::tokenizer
