#include "tokenizer/jinja/template.h"

#include "tokenizer/jinja/parser.h"

namespace lockstep::tokenizer::jinja {

Template::Template(const std::string& source)
    : body_(std::make_shared<const Body>(parse(source))) {}

Str Template::render(const Dict& variables, const Limits& limits) const {
  Evaluator ev(limits);
  return ev.render(*body_, variables);
}

}  // namespace lockstep::tokenizer::jinja
