// Renders a parsed Jinja template. Work is bounded: a step budget (every statement and
// expression evaluated counts), a nesting depth (macro recursion included) and a size limit on
// every string and list built, so a hostile template ends in a jinja::Error, never a hang or a
// crash.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "tokenizer/jinja/ast.h"
#include "tokenizer/jinja/value.h"

namespace lockstep::tokenizer::jinja {

struct Limits {
  size_t max_output = size_t(16) << 20;  // bytes in any one string (the output included)
  size_t max_items = size_t(1) << 20;    // elements in any one list
  uint64_t max_steps = uint64_t(20) << 20;
  int max_depth = 400;  // evaluation nesting, macro calls included
};

struct Frame {
  Dict vars;
  std::shared_ptr<Frame> parent;
};

class Evaluator {
 public:
  explicit Evaluator(const Limits& limits) : limits_(limits) {}
  ~Evaluator();

  // Renders `body` with `globals` as the outermost variables.
  Str render(const Body& body, const Dict& globals);

  Value eval(const Expr& e);
  Value call(const Value& callee, const Args& args, int line);
  Value get_attr(const Value& object, const std::string& name, int line);
  Value get_item(const Value& object, const Value& key, int line);

  // Builtins (builtins.cpp).
  Value filter(const std::string& name, const Value& v, const Args& args, int line);
  bool test(const std::string& name, const Value& v, const Args& args, int line);
  // A method of a string or dict (`"a b".split`, `d.items`), or an undefined value.
  Value method(const Value& object, const std::string& name, int line);
  // range, namespace, dict, raise_exception, strftime_now.
  void add_builtin_globals(Dict& globals);

  // Registers a namespace() dict so that cycles through it are broken after rendering.
  void track_namespace(const std::shared_ptr<Dict>& d) { namespaces_.push_back(d); }
  // Size limits for strings and lists built by builtins.
  void check_size(const Str& s, int line) const;
  void check_items(size_t n, int line) const;
  [[noreturn]] static void fail(int line, const std::string& what);
  // Elements of an iterable value (list/tuple, dict keys, string characters; undefined: none).
  List iterate(const Value& v, int line);
  // Raises "'x' is undefined" for an undefined value used where a value is needed.
  static void require_defined(const Value& v, int line);

 private:
  enum class Flow { kNormal, kBreak, kContinue };
  struct DepthGuard {
    Evaluator& ev;
    DepthGuard(Evaluator& e, int line);
    ~DepthGuard() { --ev.depth_; }
  };

  Flow exec(const Body& body, Str& out);
  Flow exec_node(const Node& n, Str& out);
  void exec_for(const Node& n, Str& out);
  void assign(const std::string& name, Value v);
  Value lookup(const std::string& name) const;
  Value eval_binary(const Expr& e);
  bool eval_compare(const std::string& op, const Value& a, const Value& b, int line);
  Value eval_slice(const Expr& e);
  Value make_macro(const Node& n);
  Value apply_filter_chain(const Expr* chain, Value v);
  void append(Str& out, const Str& s, int line);
  void step(int line);

  Limits limits_;
  std::shared_ptr<Frame> frame_;
  std::vector<std::shared_ptr<Dict>> namespaces_;
  int depth_ = 0;
  uint64_t steps_ = 0;
};

}  // namespace lockstep::tokenizer::jinja
