// A Jinja template as chat templates use it: the subset of Jinja2 that real GGUF chat templates
// need (expressions, filters, tests, for/if/set/macro, loop variables, namespace(), Python
// string and dict methods, raise_exception), rendered the way Hugging Face transformers renders
// chat templates (trim_blocks and lstrip_blocks on, tojson without HTML escaping). Python's
// jinja2 is the oracle it is tested against (tests/tokenizer/jinja_oracle_test.py).
#pragma once

#include <memory>
#include <string>

#include "tokenizer/jinja/ast.h"
#include "tokenizer/jinja/evaluator.h"
#include "tokenizer/jinja/value.h"

namespace lockstep::tokenizer::jinja {

class Template {
 public:
  // Throws jinja::Error ("line N: ...") when the source does not parse.
  explicit Template(const std::string& source);

  // Renders with `variables` (messages, add_generation_prompt, bos_token, ...) plus the
  // builtins range, namespace, dict, raise_exception and strftime_now (UTC). Throws jinja::Error
  // ("line N: ...") when rendering fails or exceeds `limits`.
  Str render(const Dict& variables, const Limits& limits = Limits()) const;

 private:
  std::shared_ptr<const Body> body_;
};

}  // namespace lockstep::tokenizer::jinja
