#include "tokenizer/jinja/evaluator.h"

#include <cmath>
#include <limits>

#include "tokenizer/jinja/text.h"

namespace lockstep::tokenizer::jinja {

namespace {

bool is_int_like(const Value& v) {
  return v.type == Value::Type::kInt || v.type == Value::Type::kBool;
}
int64_t int_of(const Value& v) {
  return v.type == Value::Type::kBool ? int64_t(v.b) : v.i;
}

// Python slice indices for a sequence of length n.
void slice_indices(int64_t n, const Value* start, const Value* stop, const Value* step, int64_t& b,
                   int64_t& e, int64_t& s, int line) {
  s = 1;
  if (step && !step->is_none()) {
    if (!is_int_like(*step)) Evaluator::fail(line, "slice step must be an integer");
    s = int_of(*step);
    if (s == 0) Evaluator::fail(line, "slice step cannot be zero");
  }
  auto norm = [&](const Value* v, int64_t def, bool is_start) {
    if (!v || v->is_none()) return def;
    if (!is_int_like(*v)) Evaluator::fail(line, "slice indices must be integers");
    int64_t x = int_of(*v);
    if (x < 0) x += n;
    if (s > 0) return std::clamp<int64_t>(x, 0, n);
    (void)is_start;
    return std::clamp<int64_t>(x, -1, n - 1);
  };
  b = norm(start, s > 0 ? 0 : n - 1, true);
  e = norm(stop, s > 0 ? n : -1, false);
}

}  // namespace

Evaluator::DepthGuard::DepthGuard(Evaluator& e, int line) : ev(e) {
  if (++ev.depth_ > ev.limits_.max_depth) {
    --ev.depth_;
    fail(line, "template nested or recursing too deep");
  }
}

Evaluator::~Evaluator() {
  // namespace() objects can hold themselves; empty them so that the cycle is freed.
  for (auto& d : namespaces_) d->clear();
}

void Evaluator::fail(int line, const std::string& what) {
  throw Error("line " + std::to_string(line) + ": " + what);
}

void Evaluator::require_defined(const Value& v, int line) {
  if (v.is_undefined())
    fail(line, v.s.text.empty() ? "value is undefined" : "'" + v.s.text + "' is undefined");
}

void Evaluator::check_size(const Str& s, int line) const {
  if (s.text.size() > limits_.max_output)
    fail(line, "string longer than " + std::to_string(limits_.max_output) + " bytes");
}

void Evaluator::check_items(size_t n, int line) const {
  if (n > limits_.max_items)
    fail(line, "list longer than " + std::to_string(limits_.max_items) + " items");
}

void Evaluator::step(int line) {
  if (++steps_ > limits_.max_steps) fail(line, "template runs too long (step limit reached)");
}

void Evaluator::append(Str& out, const Str& s, int line) {
  if (out.text.size() + s.text.size() > limits_.max_output)
    fail(line, "output longer than " + std::to_string(limits_.max_output) + " bytes");
  out.append(s);
}

Str Evaluator::render(const Body& body, const Dict& globals) {
  frame_ = std::make_shared<Frame>();
  frame_->vars = globals;
  add_builtin_globals(frame_->vars);
  // The caller's variables win over builtins of the same name.
  Str out;
  exec(body, out);
  return out;
}

void Evaluator::assign(const std::string& name, Value v) {
  for (auto& [k, x] : frame_->vars) {
    if (k == name) {
      x = std::move(v);
      return;
    }
  }
  frame_->vars.emplace_back(name, std::move(v));
}

Value Evaluator::lookup(const std::string& name) const {
  for (const Frame* f = frame_.get(); f; f = f->parent.get()) {
    for (auto it = f->vars.begin(); it != f->vars.end(); ++it)
      if (it->first == name) return it->second;
  }
  return Value::undefined(name);
}

List Evaluator::iterate(const Value& v, int line) {
  switch (v.type) {
    case Value::Type::kUndefined:
      return {};
    case Value::Type::kList:
      return *v.list;
    case Value::Type::kDict: {
      List keys;
      for (const auto& e : *v.dict) keys.push_back(Value::string(Str(e.first)));
      return keys;
    }
    case Value::Type::kString: {
      List chars;
      const auto off = code_point_offsets(v.s.text);
      for (size_t k = 0; k + 1 < off.size(); ++k)
        chars.push_back(Value::string(v.s.substr(off[k], off[k + 1])));
      return chars;
    }
    default:
      fail(line, std::string("'") + v.type_name() + "' object is not iterable");
  }
}

// ---- statements ----

Evaluator::Flow Evaluator::exec(const Body& body, Str& out) {
  for (const auto& n : body) {
    const Flow f = exec_node(*n, out);
    if (f != Flow::kNormal) return f;
  }
  return Flow::kNormal;
}

Evaluator::Flow Evaluator::exec_node(const Node& n, Str& out) {
  step(n.line);
  DepthGuard guard(*this, n.line);
  switch (n.kind) {
    case Node::Kind::kText:
      append(out, Str(n.text), n.line);
      return Flow::kNormal;
    case Node::Kind::kOutput:
      append(out, to_str(eval(*n.expr)), n.line);
      return Flow::kNormal;
    case Node::Kind::kIf:
      for (size_t k = 0; k < n.conditions.size(); ++k) {
        if (eval(*n.conditions[k]).truthy()) return exec(n.bodies[k], out);
      }
      if (n.bodies.size() > n.conditions.size()) return exec(n.bodies.back(), out);
      return Flow::kNormal;
    case Node::Kind::kFor:
      exec_for(n, out);
      return Flow::kNormal;
    case Node::Kind::kSet: {
      Value v = eval(*n.expr);
      if (!n.attr.empty()) {
        Value target = lookup(n.targets[0]);
        if (!target.is_dict() || !target.is_namespace)
          fail(n.line, "cannot assign attribute on non-namespace object '" + n.targets[0] + "'");
        for (auto& [k, x] : *target.dict) {
          if (k == n.attr) {
            x = std::move(v);
            return Flow::kNormal;
          }
        }
        target.dict->emplace_back(n.attr, std::move(v));
      } else if (n.targets.size() == 1) {
        assign(n.targets[0], std::move(v));
      } else {
        const List items = iterate(v, n.line);
        if (items.size() != n.targets.size())
          fail(n.line, "cannot unpack " + std::to_string(items.size()) + " values into " +
                           std::to_string(n.targets.size()));
        for (size_t k = 0; k < items.size(); ++k) assign(n.targets[k], items[k]);
      }
      return Flow::kNormal;
    }
    case Node::Kind::kSetBlock: {
      Str body;
      exec(n.body, body);
      assign(n.targets[0], apply_filter_chain(n.filter.get(), Value::string(std::move(body))));
      return Flow::kNormal;
    }
    case Node::Kind::kMacro:
      assign(n.name, make_macro(n));
      return Flow::kNormal;
    case Node::Kind::kBreak:
      return Flow::kBreak;
    case Node::Kind::kContinue:
      return Flow::kContinue;
    case Node::Kind::kScope: {
      if (!n.filter) return exec(n.body, out);
      Str body;
      const Flow f = exec(n.body, body);
      append(out, to_str(apply_filter_chain(n.filter.get(), Value::string(std::move(body)))),
             n.line);
      return f;
    }
  }
  return Flow::kNormal;
}

Value Evaluator::apply_filter_chain(const Expr* chain, Value v) {
  if (!chain) return v;
  // The chain was parsed with a null operand at its innermost filter.
  Value inner = chain->children[0] ? apply_filter_chain(chain->children[0].get(), std::move(v))
                                   : std::move(v);
  Args args;
  for (size_t k = 1; k < chain->children.size(); ++k) args.pos.push_back(eval(*chain->children[k]));
  for (const auto& [name, e] : chain->kwargs) args.kw.emplace_back(name, eval(*e));
  return filter(chain->name, inner, args, chain->line);
}

void Evaluator::exec_for(const Node& n, Str& out) {
  List items = iterate(eval(*n.expr), n.line);
  auto bind = [&](const Value& item) {
    if (n.targets.size() == 1) {
      assign(n.targets[0], item);
      return;
    }
    const List parts = iterate(item, n.line);
    if (parts.size() != n.targets.size())
      fail(n.line, "cannot unpack " + std::to_string(parts.size()) + " values into " +
                       std::to_string(n.targets.size()) + " loop variables");
    for (size_t k = 0; k < parts.size(); ++k) assign(n.targets[k], parts[k]);
  };
  const auto outer = frame_;
  struct Restore {
    Evaluator& ev;
    std::shared_ptr<Frame> f;
    ~Restore() { ev.frame_ = f; }
  } restore{*this, outer};
  if (n.filter) {
    List kept;
    for (const Value& item : items) {
      step(n.line);
      frame_ = std::make_shared<Frame>();
      frame_->parent = outer;
      bind(item);
      if (eval(*n.filter).truthy()) kept.push_back(item);
    }
    items = std::move(kept);
  }
  if (items.empty()) {
    frame_ = outer;
    exec(n.else_body, out);
    return;
  }
  const int64_t len = int64_t(items.size());
  for (int64_t k = 0; k < len; ++k) {
    step(n.line);  // every iteration counts, an empty body too
    frame_ = std::make_shared<Frame>();
    frame_->parent = outer;
    Dict loop = {
        {"index", Value::integer(k + 1)},
        {"index0", Value::integer(k)},
        {"revindex", Value::integer(len - k)},
        {"revindex0", Value::integer(len - k - 1)},
        {"first", Value::boolean(k == 0)},
        {"last", Value::boolean(k == len - 1)},
        {"length", Value::integer(len)},
        {"depth", Value::integer(1)},
        {"depth0", Value::integer(0)},
        {"previtem", k > 0 ? items[size_t(k - 1)] : Value::undefined("previtem")},
        {"nextitem", k + 1 < len ? items[size_t(k + 1)] : Value::undefined("nextitem")},
    };
    loop.emplace_back("cycle", Value::function([k](Evaluator&, const Args& a) {
                        if (a.pos.empty()) fail(0, "loop.cycle needs at least one value");
                        return a.pos[size_t(k) % a.pos.size()];
                      }));
    frame_->vars.emplace_back("loop", Value::make_dict(std::move(loop)));
    bind(items[size_t(k)]);
    const Flow f = exec(n.body, out);
    if (f == Flow::kBreak) break;
  }
}

Value Evaluator::make_macro(const Node& n) {
  std::weak_ptr<Frame> defined_in = frame_;
  const Node* node = &n;
  return Value::function([node, defined_in](Evaluator& ev, const Args& args) {
    auto parent = defined_in.lock();
    if (!parent) fail(node->line, "macro '" + node->name + "' called outside its scope");
    if (args.pos.size() > node->params.size())
      fail(node->line, "macro '" + node->name + "' takes not more than " +
                           std::to_string(node->params.size()) + " argument(s)");
    for (const auto& [k, v] : args.kw) {
      bool known = false;
      for (const auto& p : node->params) known = known || p == k;
      if (!known) fail(node->line, "macro '" + node->name + "' has no argument '" + k + "'");
    }
    const auto saved = ev.frame_;
    struct Restore {
      Evaluator& ev;
      std::shared_ptr<Frame> f;
      ~Restore() { ev.frame_ = f; }
    } restore{ev, saved};
    ev.frame_ = std::make_shared<Frame>();
    ev.frame_->parent = parent;
    for (size_t k = 0; k < node->params.size(); ++k) {
      const Value* given = args.get(k, node->params[k].c_str());
      if (given) {
        ev.assign(node->params[k], *given);
      } else if (node->defaults[k]) {
        ev.assign(node->params[k], ev.eval(*node->defaults[k]));
      } else {
        ev.assign(node->params[k], Value::undefined(node->params[k]));
      }
    }
    Str out;
    ev.exec(node->body, out);
    return Value::string(std::move(out));
  });
}

// ---- expressions ----

Value Evaluator::get_attr(const Value& object, const std::string& name, int line) {
  require_defined(object, line);
  if (object.is_dict()) {
    if (!object.is_namespace) {
      Value m = method(object, name, line);
      if (!m.is_undefined()) return m;
    }
    if (const Value* v = object.find(name)) return *v;
    return Value::undefined(name);
  }
  return method(object, name, line);
}

Value Evaluator::get_item(const Value& object, const Value& key, int line) {
  require_defined(object, line);
  if (object.is_dict()) {
    if (key.is_string()) {
      if (const Value* v = object.find(key.s.text)) return *v;
      if (!object.is_namespace) return method(object, key.s.text, line);
    }
    return Value::undefined(key.is_string() ? key.s.text : repr(key));
  }
  if ((object.is_list() || object.is_string()) && is_int_like(key)) {
    if (object.is_list()) {
      int64_t i = int_of(key), n = int64_t(object.list->size());
      if (i < 0) i += n;
      if (i < 0 || i >= n) return Value::undefined();
      return (*object.list)[size_t(i)];
    }
    const auto off = code_point_offsets(object.s.text);
    int64_t i = int_of(key), n = int64_t(off.size()) - 1;
    if (i < 0) i += n;
    if (i < 0 || i >= n) return Value::undefined();
    return Value::string(object.s.substr(off[size_t(i)], off[size_t(i) + 1]));
  }
  if (key.is_string()) return method(object, key.s.text, line);
  return Value::undefined();
}

Value Evaluator::call(const Value& callee, const Args& args, int line) {
  if (callee.type != Value::Type::kFunction) {
    require_defined(callee, line);
    fail(line, std::string("'") + callee.type_name() + "' object is not callable");
  }
  DepthGuard guard(*this, line);
  try {
    return (*callee.fn)(*this, args);
  } catch (const Error& e) {
    // Builtins do not know the line they were called from.
    const std::string what = e.what();
    if (what.rfind("line 0: ", 0) == 0) fail(line, what.substr(8));
    throw;
  }
}

Value Evaluator::eval(const Expr& e) {
  step(e.line);
  DepthGuard guard(*this, e.line);
  using K = Expr::Kind;
  switch (e.kind) {
    case K::kLiteral:
      return e.literal;
    case K::kName:
      return lookup(e.name);
    case K::kList:
    case K::kTuple: {
      List items;
      for (const auto& c : e.children) items.push_back(eval(*c));
      return Value::make_list(std::move(items), e.kind == K::kTuple);
    }
    case K::kDict: {
      Dict d;
      for (size_t k = 0; k + 1 < e.children.size(); k += 2) {
        Value key = eval(*e.children[k]);
        if (!key.is_string()) fail(e.line, "dict keys must be strings here");
        Value v = eval(*e.children[k + 1]);
        bool replaced = false;
        for (auto& [dk, dv] : d) {
          if (dk == key.s.text) {
            dv = v;
            replaced = true;
          }
        }
        if (!replaced) d.emplace_back(key.s.text, std::move(v));
      }
      return Value::make_dict(std::move(d));
    }
    case K::kAttr:
      return get_attr(eval(*e.children[0]), e.name, e.line);
    case K::kIndex: {
      Value object = eval(*e.children[0]);
      return get_item(object, eval(*e.children[1]), e.line);
    }
    case K::kSlice:
      return eval_slice(e);
    case K::kCall: {
      Value callee = eval(*e.children[0]);
      Args args;
      for (size_t k = 1; k < e.children.size(); ++k) args.pos.push_back(eval(*e.children[k]));
      for (const auto& [name, x] : e.kwargs) args.kw.emplace_back(name, eval(*x));
      return call(callee, args, e.line);
    }
    case K::kFilter:
    case K::kTest: {
      Value operand = eval(*e.children[0]);
      Args args;
      for (size_t k = 1; k < e.children.size(); ++k) args.pos.push_back(eval(*e.children[k]));
      for (const auto& [name, x] : e.kwargs) args.kw.emplace_back(name, eval(*x));
      if (e.kind == K::kFilter) return filter(e.name, operand, args, e.line);
      return Value::boolean(test(e.name, operand, args, e.line) != e.negated);
    }
    case K::kNeg:
    case K::kPos: {
      Value v = eval(*e.children[0]);
      if (e.kind == K::kPos && v.is_number()) return v;
      if (v.type == Value::Type::kFloat) return Value::real(-v.f);
      if (is_int_like(v)) {
        if (int_of(v) == std::numeric_limits<int64_t>::min()) fail(e.line, "integer overflow");
        return Value::integer(-int_of(v));
      }
      require_defined(v, e.line);
      fail(e.line, std::string("bad operand type for unary ") + (e.kind == K::kNeg ? "-" : "+") +
                       ": '" + v.type_name() + "'");
    }
    case K::kNot:
      return Value::boolean(!eval(*e.children[0]).truthy());
    case K::kAnd: {
      Value l = eval(*e.children[0]);
      return l.truthy() ? eval(*e.children[1]) : l;
    }
    case K::kOr: {
      Value l = eval(*e.children[0]);
      return l.truthy() ? l : eval(*e.children[1]);
    }
    case K::kCond:
      if (eval(*e.children[1]).truthy()) return eval(*e.children[0]);
      return e.children[2] ? eval(*e.children[2]) : Value::undefined();
    case K::kCompare: {
      Value left = eval(*e.children[0]);
      for (size_t k = 0; k < e.ops.size(); ++k) {
        Value right = eval(*e.children[k + 1]);
        if (!eval_compare(e.ops[k], left, right, e.line)) return Value::boolean(false);
        left = std::move(right);
      }
      return Value::boolean(true);
    }
    case K::kBinary:
      return eval_binary(e);
  }
  return Value::undefined();
}

bool Evaluator::eval_compare(const std::string& op, const Value& a, const Value& b, int line) {
  if (op == "==") return equals(a, b);
  if (op == "!=") return !equals(a, b);
  if (op == "in" || op == "not in") {
    bool found = false;
    if (b.is_string()) {
      if (!a.is_string())
        fail(line,
             std::string("'in <string>' requires string as left operand, not ") + a.type_name());
      found = b.s.text.find(a.s.text) != std::string::npos;
    } else if (b.is_list()) {
      for (const Value& x : *b.list) found = found || equals(a, x);
    } else if (b.is_dict()) {
      found = a.is_string() && b.find(a.s.text) != nullptr;
    } else {
      require_defined(b, line);
      fail(line, std::string("argument of type '") + b.type_name() + "' is not iterable");
    }
    return op == "in" ? found : !found;
  }
  int c = 0;
  try {
    c = compare(a, b);
  } catch (const Error& err) {
    fail(line, std::string("'") + op + "' not supported between instances of '" + a.type_name() +
                   "' and '" + b.type_name() + "'");
  }
  if (op == "<") return c < 0;
  if (op == ">") return c > 0;
  if (op == "<=") return c <= 0;
  return c >= 0;
}

Value Evaluator::eval_slice(const Expr& e) {
  Value object = eval(*e.children[0]);
  Value parts[3];
  for (int k = 0; k < 3; ++k)
    parts[k] = e.children[size_t(k) + 1] ? eval(*e.children[size_t(k) + 1]) : Value::none();
  require_defined(object, e.line);
  if (!object.is_list() && !object.is_string())
    fail(e.line, std::string("'") + object.type_name() + "' object is not subscriptable");
  std::vector<size_t> off;
  const int64_t n = object.is_list()
                        ? int64_t(object.list->size())
                        : int64_t((off = code_point_offsets(object.s.text)).size()) - 1;
  int64_t b, end, s;
  slice_indices(n, &parts[0], &parts[1], &parts[2], b, end, s, e.line);
  if (object.is_list()) {
    List out;
    for (int64_t i = b; s > 0 ? i < end : i > end; i += s) out.push_back((*object.list)[size_t(i)]);
    return Value::make_list(std::move(out), object.is_tuple);
  }
  if (s == 1) return Value::string(object.s.substr(off[size_t(b)], off[size_t(std::max(b, end))]));
  std::string out;
  for (int64_t i = b; s > 0 ? i < end : i > end; i += s)
    out.append(object.s.text, off[size_t(i)], off[size_t(i) + 1] - off[size_t(i)]);
  return Value::string(object.s.derived(std::move(out)));
}

Value Evaluator::eval_binary(const Expr& e) {
  const Value a = eval(*e.children[0]);
  const Value b = eval(*e.children[1]);
  const std::string& op = e.name;
  const int line = e.line;
  if (op == "~") {
    Str s = to_str(a);
    s.append(to_str(b));
    check_size(s, line);
    return Value::string(std::move(s));
  }
  auto type_error = [&]() {
    require_defined(a, line);
    require_defined(b, line);
    fail(line, "unsupported operand type(s) for " + op + ": '" + a.type_name() + "' and '" +
                   b.type_name() + "'");
  };
  if (a.is_number() && b.is_number()) {
    if (is_int_like(a) && is_int_like(b)) {
      const int64_t x = int_of(a), y = int_of(b);
      int64_t r = 0;
      if (op == "+") {
        if (__builtin_add_overflow(x, y, &r)) fail(line, "integer overflow");
        return Value::integer(r);
      }
      if (op == "-") {
        if (__builtin_sub_overflow(x, y, &r)) fail(line, "integer overflow");
        return Value::integer(r);
      }
      if (op == "*") {
        if (__builtin_mul_overflow(x, y, &r)) fail(line, "integer overflow");
        return Value::integer(r);
      }
      if (op == "//" || op == "%") {
        if (y == 0) fail(line, "integer division or modulo by zero");
        if (x == std::numeric_limits<int64_t>::min() && y == -1) fail(line, "integer overflow");
        int64_t q = x / y, m = x % y;
        if (m != 0 && ((m < 0) != (y < 0))) {
          --q;
          m += y;
        }
        return Value::integer(op == "//" ? q : m);
      }
      if (op == "**" && y >= 0) {
        int64_t acc = 1;
        for (int64_t k = 0; k < y; ++k) {
          if (__builtin_mul_overflow(acc, x, &acc)) fail(line, "integer overflow");
          if (acc == 0 || acc == 1) break;
          if (acc == -1) {
            acc = ((y - k - 1) % 2 == 0) ? -1 : 1;
            break;
          }
        }
        return Value::integer(acc);
      }
    }
    const double x = a.as_double(), y = b.as_double();
    if (op == "+") return Value::real(x + y);
    if (op == "-") return Value::real(x - y);
    if (op == "*") return Value::real(x * y);
    if (op == "/") {
      if (y == 0) fail(line, "division by zero");
      return Value::real(x / y);
    }
    if (op == "//" || op == "%") {
      if (y == 0) fail(line, "float division or modulo by zero");
      const double m = std::fmod(x, y);
      const double mod = (m != 0 && ((m < 0) != (y < 0))) ? m + y : m;
      if (op == "%") return Value::real(mod);
      return Value::real(std::floor((x - mod) / y + 0.5));
    }
    if (op == "**") return Value::real(std::pow(x, y));
    type_error();
  }
  if (op == "+") {
    if (a.is_string() && b.is_string()) {
      Str s = a.s;
      s.append(b.s);
      check_size(s, line);
      return Value::string(std::move(s));
    }
    if (a.is_list() && b.is_list()) {
      check_items(a.list->size() + b.list->size(), line);
      List l = *a.list;
      l.insert(l.end(), b.list->begin(), b.list->end());
      return Value::make_list(std::move(l), a.is_tuple);
    }
    if (a.is_string() && !b.is_undefined())
      fail(line, std::string("can only concatenate str (not \"") + b.type_name() + "\") to str");
    type_error();
  }
  if (op == "*") {
    const Value* seq = is_int_like(b) ? &a : is_int_like(a) ? &b : nullptr;
    const Value* count = seq == &a ? &b : &a;
    if (seq && (seq->is_string() || seq->is_list())) {
      const int64_t n = std::max<int64_t>(0, int_of(*count));
      if (seq->is_string()) {
        if (n > 0 && seq->s.text.size() > limits_.max_output / size_t(n))
          fail(line, "string longer than " + std::to_string(limits_.max_output) + " bytes");
        Str s;
        for (int64_t k = 0; k < n; ++k) s.append(seq->s);
        return Value::string(std::move(s));
      }
      if (n > 0 && seq->list->size() > limits_.max_items / size_t(n)) check_items(SIZE_MAX, line);
      List l;
      for (int64_t k = 0; k < n; ++k) l.insert(l.end(), seq->list->begin(), seq->list->end());
      return Value::make_list(std::move(l), seq->is_tuple);
    }
  }
  type_error();
  return Value::undefined();
}

}  // namespace lockstep::tokenizer::jinja
