#include "tokenizer/jinja/lexer.h"

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "tokenizer/jinja/text.h"
#include "tokenizer/jinja/value.h"
#include "tokenizer/unicode.h"

namespace lockstep::tokenizer::jinja {

namespace {

[[noreturn]] void fail(int line, const std::string& what) {
  throw Error("line " + std::to_string(line) + ": " + what);
}

bool is_name_start(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}
bool is_digit(char c) {
  return c >= '0' && c <= '9';
}
bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

// Python's "unicode-escape" decoding of a string literal's body (unknown escapes stay as they
// are, like Python's).
std::string decode_escapes(const std::string& s, int line) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '\\' || i + 1 == s.size()) {
      out += s[i];
      continue;
    }
    const char c = s[++i];
    auto hex = [&](size_t n) {
      uint32_t v = 0;
      for (size_t k = 1; k <= n; ++k) {
        if (i + k >= s.size()) fail(line, "truncated escape in a string");
        const char h = s[i + k];
        v *= 16;
        if (h >= '0' && h <= '9') {
          v += uint32_t(h - '0');
        } else if (h >= 'a' && h <= 'f') {
          v += uint32_t(h - 'a' + 10);
        } else if (h >= 'A' && h <= 'F') {
          v += uint32_t(h - 'A' + 10);
        } else {
          fail(line, "bad escape in a string");
        }
      }
      i += n;
      if (v > 0x10FFFF) fail(line, "escape beyond U+10FFFF in a string");
      utf8_append(out, v);
    };
    switch (c) {
      case 'n':
        out += '\n';
        break;
      case 't':
        out += '\t';
        break;
      case 'r':
        out += '\r';
        break;
      case '\\':
        out += '\\';
        break;
      case '\'':
        out += '\'';
        break;
      case '"':
        out += '"';
        break;
      case 'a':
        out += '\a';
        break;
      case 'b':
        out += '\b';
        break;
      case 'f':
        out += '\f';
        break;
      case 'v':
        out += '\v';
        break;
      case '\n':
        break;  // backslash-newline continues the line
      case 'x':
        hex(2);
        break;
      case 'u':
        hex(4);
        break;
      case 'U':
        hex(8);
        break;
      default:
        if (c >= '0' && c <= '7') {
          uint32_t v = 0;
          size_t k = 0;
          for (; k < 3 && i + k < s.size() && s[i + k] >= '0' && s[i + k] <= '7'; ++k)
            v = v * 8 + uint32_t(s[i + k] - '0');
          i += k - 1;
          utf8_append(out, v);
        } else {
          out += '\\';
          out += c;
        }
    }
  }
  return out;
}

class Lexer {
 public:
  explicit Lexer(const std::string& source) {
    // Newlines normalised to \n; one trailing newline dropped (keep_trailing_newline off).
    src_.reserve(source.size());
    for (size_t i = 0; i < source.size(); ++i) {
      if (source[i] == '\r') {
        src_ += '\n';
        if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
      } else {
        src_ += source[i];
      }
    }
    if (!src_.empty() && src_.back() == '\n') src_.pop_back();
  }

  std::vector<Token> run() {
    bool line_starting = true;
    while (pos_ < src_.size()) {
      size_t start = find_tag(pos_);
      if (start == std::string::npos) {
        emit_text(src_.substr(pos_));
        pos_ = src_.size();
        break;
      }
      const char kind = src_[start + 1];  // '{', '%' or '#'
      const char sign = start + 2 < src_.size() ? src_[start + 2] : 0;
      std::string text = src_.substr(pos_, start - pos_);
      if (sign == '-') {
        text.resize(rstrip_end(text));
      } else if (sign != '+' && kind != '{') {
        // lstrip_blocks: spaces and tabs between a line's start and a block tag go.
        const size_t l_pos = text.rfind('\n') + 1;  // npos + 1 == 0
        if (l_pos > 0 || line_starting) {
          bool blank = true;
          for (size_t k = l_pos; k < text.size() && blank; ++k)
            blank = is_space(text[k]) && text[k] != '\n';
          if (blank) text.resize(l_pos);
        }
      }
      emit_text(text);
      line_ += count_lines(pos_, start);
      pos_ = start + 2 + (sign == '-' || sign == '+' ? 1 : 0);
      if (kind == '#') {
        line_starting = comment();
      } else if (kind == '%' && raw_block()) {
        line_starting = false;
      } else {
        line_starting = tag(kind == '{');
      }
    }
    tokens_.push_back({Token::Type::kEnd, "", 0, 0, line_});
    return std::move(tokens_);
  }

 private:
  size_t find_tag(size_t from) const {
    for (size_t p = src_.find('{', from); p != std::string::npos; p = src_.find('{', p + 1)) {
      if (p + 1 < src_.size() && std::strchr("{%#", src_[p + 1]) && src_[p + 1]) return p;
    }
    return std::string::npos;
  }

  int count_lines(size_t a, size_t b) const {
    int n = 0;
    for (size_t k = a; k < b && k < src_.size(); ++k) n += src_[k] == '\n';
    return n;
  }

  void emit_text(const std::string& text) {
    if (!text.empty()) tokens_.push_back({Token::Type::kText, text, 0, 0, line_});
  }

  // After a tag's closing "%}" / "#}": "-" strips the whitespace that follows, "+" keeps it,
  // otherwise trim_blocks drops one newline. Returns whether what was consumed ended a line.
  bool after_block_end(char sign) {
    const size_t from = pos_;
    if (sign == '-') {
      while (pos_ < src_.size() && is_space(src_[pos_])) ++pos_;
    } else if (sign != '+' && pos_ < src_.size() && src_[pos_] == '\n') {
      ++pos_;
    }
    line_ += count_lines(from, pos_);
    return pos_ > from && src_[pos_ - 1] == '\n';
  }

  bool comment() {
    const int open_line = line_;
    const size_t end = src_.find("#}", pos_);
    if (end == std::string::npos) fail(open_line, "unterminated comment");
    const char sign = end > pos_ ? src_[end - 1] : 0;
    line_ += count_lines(pos_, end);
    pos_ = end + 2;
    return after_block_end(sign == '-' || sign == '+' ? sign : 0);
  }

  // {% raw %}...{% endraw %}: the text in between is kept as it is.
  bool raw_block() {
    size_t p = pos_;
    while (p < src_.size() && is_space(src_[p])) ++p;
    if (src_.compare(p, 3, "raw") != 0) return false;
    p += 3;
    while (p < src_.size() && is_space(src_[p])) ++p;
    char sign = 0;
    if (p < src_.size() && (src_[p] == '-' || src_[p] == '+')) sign = src_[p++];
    if (src_.compare(p, 2, "%}") != 0) return false;
    const int open_line = line_;
    pos_ = p + 2;
    after_block_end(sign == '-' ? '-' : '+');
    for (size_t q = src_.find("{%", pos_); q != std::string::npos; q = src_.find("{%", q + 1)) {
      size_t r = q + 2;
      const char inner_sign = r < src_.size() && (src_[r] == '-' || src_[r] == '+') ? src_[r] : 0;
      if (inner_sign) ++r;
      while (r < src_.size() && is_space(src_[r])) ++r;
      if (src_.compare(r, 6, "endraw") != 0) continue;
      r += 6;
      while (r < src_.size() && is_space(src_[r])) ++r;
      char end_sign = 0;
      if (r < src_.size() && (src_[r] == '-' || src_[r] == '+')) end_sign = src_[r++];
      if (src_.compare(r, 2, "%}") != 0) continue;
      std::string text = src_.substr(pos_, q - pos_);
      if (inner_sign == '-') text.resize(rstrip_end(text));
      emit_text(text);
      line_ += count_lines(pos_, r);
      pos_ = r + 2;
      after_block_end(end_sign);
      return true;
    }
    fail(open_line, "{% raw %} without {% endraw %}");
  }

  // The tokens of one {{ ... }} or {% ... %} tag. Returns whether its end consumed a newline.
  bool tag(bool variable) {
    const int open_line = line_;
    tokens_.push_back(
        {variable ? Token::Type::kVarBegin : Token::Type::kBlockBegin, "", 0, 0, line_});
    std::vector<char> brackets;
    while (true) {
      while (pos_ < src_.size() && is_space(src_[pos_])) {
        line_ += src_[pos_] == '\n';
        ++pos_;
      }
      if (pos_ >= src_.size())
        fail(open_line, std::string("unclosed ") + (variable ? "{{" : "{%") + " tag");
      const char c = src_[pos_];
      if (brackets.empty()) {
        const char* close = variable ? "}}" : "%}";
        if ((c == '-' || (c == '+' && !variable)) && src_.compare(pos_ + 1, 2, close) == 0) {
          tokens_.push_back(
              {variable ? Token::Type::kVarEnd : Token::Type::kBlockEnd, "", 0, 0, line_});
          pos_ += 3;
          return after_block_end(c);
        }
        if (src_.compare(pos_, 2, close) == 0) {
          tokens_.push_back(
              {variable ? Token::Type::kVarEnd : Token::Type::kBlockEnd, "", 0, 0, line_});
          pos_ += 2;
          if (variable) return false;
          return after_block_end(0);
        }
      }
      if (c == '\'' || c == '"') {
        string_literal(c);
      } else if (is_digit(c)) {
        number();
      } else if (is_name_start(c)) {
        size_t e = pos_;
        while (e < src_.size() && (is_name_start(src_[e]) || is_digit(src_[e]))) ++e;
        tokens_.push_back({Token::Type::kName, src_.substr(pos_, e - pos_), 0, 0, line_});
        pos_ = e;
      } else {
        static const char* const kOps[] = {"**", "//", "==", "!=", "<=", ">=", "+", "-", "*",
                                           "/",  "%",  "~",  "<",  ">",  "=",  ".", ",", ":",
                                           "|",  "(",  ")",  "[",  "]",  "{",  "}"};
        const char* op = nullptr;
        for (const char* o : kOps) {
          if (src_.compare(pos_, std::strlen(o), o) == 0) {
            op = o;
            break;
          }
        }
        if (!op) {
          const unsigned char u = static_cast<unsigned char>(c);
          char buf[32];
          if (u >= 0x20 && u < 0x7f) {
            std::snprintf(buf, sizeof buf, "'%c'", c);
          } else {
            std::snprintf(buf, sizeof buf, "byte 0x%02x", u);
          }
          fail(line_, std::string("unexpected character ") + buf + " in a tag");
        }
        if (std::strchr("([{", op[0]) && op[1] == 0) {
          if (brackets.size() >= 256) fail(line_, "brackets nested too deep");
          brackets.push_back(op[0]);
        } else if (std::strchr(")]}", op[0]) && op[1] == 0) {
          const char want = op[0] == ')' ? '(' : op[0] == ']' ? '[' : '{';
          if (brackets.empty() || brackets.back() != want)
            fail(line_, std::string("unexpected '") + op + "'");
          brackets.pop_back();
        }
        tokens_.push_back({Token::Type::kOp, op, 0, 0, line_});
        pos_ += std::strlen(op);
      }
    }
  }

  void string_literal(char quote) {
    const int open_line = line_;
    size_t e = pos_ + 1;
    while (e < src_.size() && src_[e] != quote) {
      if (src_[e] == '\\') ++e;
      ++e;
    }
    if (e >= src_.size()) fail(open_line, "unterminated string");
    const std::string body = src_.substr(pos_ + 1, e - pos_ - 1);
    line_ += count_lines(pos_, e);
    tokens_.push_back({Token::Type::kString, decode_escapes(body, open_line), 0, 0, open_line});
    pos_ = e + 1;
  }

  void number() {
    size_t e = pos_;
    auto digits = [&] {
      while (e < src_.size() && (is_digit(src_[e]) ||
                                 (src_[e] == '_' && e + 1 < src_.size() && is_digit(src_[e + 1]))))
        ++e;
    };
    digits();
    bool is_float = false;
    // After ".", only an integer: "messages.0.content" is attribute access, not a float.
    const bool after_dot =
        !tokens_.empty() && tokens_.back().type == Token::Type::kOp && tokens_.back().value == ".";
    if (!after_dot) {
      if (e + 1 < src_.size() && src_[e] == '.' && is_digit(src_[e + 1])) {
        ++e;
        digits();
        is_float = true;
      }
      if (e < src_.size() && (src_[e] == 'e' || src_[e] == 'E')) {
        size_t x = e + 1;
        if (x < src_.size() && (src_[x] == '+' || src_[x] == '-')) ++x;
        if (x < src_.size() && is_digit(src_[x])) {
          e = x;
          digits();
          is_float = true;
        }
      }
    }
    std::string text;
    for (size_t k = pos_; k < e; ++k)
      if (src_[k] != '_') text += src_[k];
    Token t{is_float ? Token::Type::kFloat : Token::Type::kInt, text, 0, 0, line_};
    if (is_float) {
      t.float_value = std::strtod(text.c_str(), nullptr);
    } else {
      errno = 0;
      char* end = nullptr;
      t.int_value = std::strtoll(text.c_str(), &end, 10);
      if (errno == ERANGE) fail(line_, "integer literal out of range");
    }
    tokens_.push_back(std::move(t));
    pos_ = e;
  }

  std::string src_;
  size_t pos_ = 0;
  int line_ = 1;
  std::vector<Token> tokens_;
};

}  // namespace

std::vector<Token> lex(const std::string& source) {
  return Lexer(source).run();
}

}  // namespace lockstep::tokenizer::jinja
