// Jinja parser: tokens to a syntax tree. Nesting is bounded (expressions and blocks), so that a
// hostile template can neither overflow the stack while parsing nor while rendering.
#pragma once

#include <string>

#include "tokenizer/jinja/ast.h"

namespace lockstep::tokenizer::jinja {

// Expressions deeper than this (operator chains, brackets) are refused.
inline constexpr int kMaxExprDepth = 128;
// Blocks ({% if %}, {% for %}, ...) nested deeper than this are refused.
inline constexpr int kMaxBlockDepth = 64;

// Throws jinja::Error ("line N: ...") for a template that does not parse.
Body parse(const std::string& source);

}  // namespace lockstep::tokenizer::jinja
