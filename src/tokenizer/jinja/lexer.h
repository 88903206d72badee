// Jinja lexer: splits a template into text and the tokens of its {{ }} / {% %} tags, applying
// whitespace control as Hugging Face transformers configures Jinja for chat templates
// (trim_blocks and lstrip_blocks on, "{%-" / "-%}" / "{%+" / "+%}" markers, newlines normalised
// to \n and one trailing newline dropped). Comments are dropped; {% raw %} becomes text.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace lockstep::tokenizer::jinja {

struct Token {
  enum class Type {
    kText,        // template text between tags (value)
    kVarBegin,    // {{
    kVarEnd,      // }}
    kBlockBegin,  // {%
    kBlockEnd,    // %}
    kName,        // identifier or keyword (value)
    kString,      // string literal, escapes decoded (value)
    kInt,         // integer literal (int_value)
    kFloat,       // float literal (float_value)
    kOp,          // operator or punctuation (value), e.g. "==", "(", "|"
    kEnd,         // end of the template
  };
  Type type;
  std::string value;
  int64_t int_value = 0;
  double float_value = 0;
  int line = 1;
};

// Throws jinja::Error naming the line for a malformed template (unterminated tag or string,
// unknown character, unbalanced brackets).
std::vector<Token> lex(const std::string& source);

}  // namespace lockstep::tokenizer::jinja
