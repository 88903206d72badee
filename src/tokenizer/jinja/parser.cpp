#include "tokenizer/jinja/parser.h"

#include <algorithm>
#include <initializer_list>

#include "tokenizer/jinja/lexer.h"

namespace lockstep::tokenizer::jinja {

namespace {

using T = Token::Type;

class Parser {
 public:
  explicit Parser(std::vector<Token> tokens) : toks_(std::move(tokens)) {}

  Body parse_template() {
    std::string stop;
    Body body = parse_body({}, stop);
    return body;
  }

 private:
  // ---- token helpers ----
  const Token& cur() const { return toks_[pos_]; }
  const Token& peek(size_t n = 1) const { return toks_[std::min(pos_ + n, toks_.size() - 1)]; }
  void next() {
    if (pos_ + 1 < toks_.size()) ++pos_;
  }
  bool is_op(const char* op) const { return cur().type == T::kOp && cur().value == op; }
  bool is_name(const char* name) const { return cur().type == T::kName && cur().value == name; }
  bool skip_op(const char* op) {
    if (!is_op(op)) return false;
    next();
    return true;
  }
  bool skip_name(const char* name) {
    if (!is_name(name)) return false;
    next();
    return true;
  }
  [[noreturn]] void fail(const std::string& what) const {
    throw Error("line " + std::to_string(cur().line) + ": " + what);
  }
  std::string describe(const Token& t) const {
    switch (t.type) {
      case T::kText:
        return "text";
      case T::kVarBegin:
        return "'{{'";
      case T::kVarEnd:
        return "'}}'";
      case T::kBlockBegin:
        return "'{%'";
      case T::kBlockEnd:
        return "'%}'";
      case T::kName:
        return "'" + t.value + "'";
      case T::kString:
        return "a string";
      case T::kInt:
      case T::kFloat:
        return "a number";
      case T::kOp:
        return "'" + t.value + "'";
      case T::kEnd:
        return "the end of the template";
    }
    return "?";
  }
  void expect_op(const char* op) {
    if (!skip_op(op)) fail(std::string("expected '") + op + "', found " + describe(cur()));
  }
  std::string expect_name() {
    if (cur().type != T::kName) fail("expected a name, found " + describe(cur()));
    std::string n = cur().value;
    next();
    return n;
  }
  void expect_block_end() {
    if (cur().type != T::kBlockEnd) fail("expected '%}', found " + describe(cur()));
    next();
  }

  ExprPtr make(Expr::Kind kind, int line) {
    auto e = std::make_unique<Expr>();
    e->kind = kind;
    e->line = line;
    return e;
  }
  // Adds a child and keeps the depth bound.
  void add(Expr& parent, ExprPtr child) {
    if (child) parent.depth = std::max(parent.depth, child->depth + 1);
    if (parent.depth > kMaxExprDepth) fail("expression nested too deep");
    parent.children.push_back(std::move(child));
  }

  // ---- statements ----
  // Parses until one of `stops` ({% stop ... %}); the stop word is consumed, its tag is not.
  Body parse_body(std::initializer_list<const char*> stops, std::string& stopped) {
    if (++block_depth_ > kMaxBlockDepth) fail("blocks nested too deep");
    Body body;
    while (true) {
      const Token& t = cur();
      if (t.type == T::kEnd) {
        if (stops.size()) {
          std::string want;
          for (const char* s : stops) want += (want.empty() ? "" : " or ") + std::string(s);
          fail("missing {% " + want + " %}");
        }
        break;
      }
      if (t.type == T::kText) {
        auto n = std::make_unique<Node>();
        n->kind = Node::Kind::kText;
        n->line = t.line;
        n->text = t.value;
        body.push_back(std::move(n));
        next();
      } else if (t.type == T::kVarBegin) {
        next();
        auto n = std::make_unique<Node>();
        n->kind = Node::Kind::kOutput;
        n->line = t.line;
        n->expr = parse_tuple(true);
        if (cur().type != T::kVarEnd) fail("expected '}}', found " + describe(cur()));
        next();
        body.push_back(std::move(n));
      } else if (t.type == T::kBlockBegin) {
        next();
        if (cur().type != T::kName) fail("expected a statement, found " + describe(cur()));
        const std::string word = cur().value;
        for (const char* s : stops) {
          if (word == s) {
            next();
            stopped = word;
            --block_depth_;
            return body;
          }
        }
        body.push_back(parse_statement());
      } else {
        fail("unexpected " + describe(t));
      }
    }
    --block_depth_;
    return body;
  }

  std::unique_ptr<Node> parse_statement() {
    auto n = std::make_unique<Node>();
    n->line = cur().line;
    const std::string word = expect_name();
    if (word == "if") {
      n->kind = Node::Kind::kIf;
      n->conditions.push_back(parse_tuple(true));
      expect_block_end();
      while (true) {
        std::string stop;
        n->bodies.push_back(parse_body({"elif", "else", "endif"}, stop));
        if (stop == "elif") {
          n->conditions.push_back(parse_tuple(true));
          expect_block_end();
        } else if (stop == "else") {
          expect_block_end();
          n->bodies.push_back(parse_body({"endif"}, stop));
          expect_block_end();
          break;
        } else {
          expect_block_end();
          break;
        }
      }
    } else if (word == "for") {
      n->kind = Node::Kind::kFor;
      do {
        n->targets.push_back(expect_name());
      } while (skip_op(","));
      if (!skip_name("in")) fail("expected 'in' in a for loop, found " + describe(cur()));
      n->expr = parse_tuple(false);
      if (skip_name("if")) n->filter = parse_expression(true);
      if (skip_name("recursive")) fail("recursive for loops are not supported");
      expect_block_end();
      std::string stop;
      n->body = parse_body({"else", "endfor"}, stop);
      expect_block_end();
      if (stop == "else") {
        n->else_body = parse_body({"endfor"}, stop);
        expect_block_end();
      }
    } else if (word == "set") {
      n->targets.push_back(expect_name());
      if (skip_op(".")) {
        n->attr = expect_name();
      } else {
        while (skip_op(",")) n->targets.push_back(expect_name());
      }
      if (skip_op("=")) {
        n->kind = Node::Kind::kSet;
        n->expr = parse_tuple(true);
        expect_block_end();
      } else {
        if (!n->attr.empty() || n->targets.size() != 1) fail("expected '=' in a set statement");
        n->kind = Node::Kind::kSetBlock;
        n->filter = parse_filters(nullptr);
        expect_block_end();
        std::string stop;
        n->body = parse_body({"endset"}, stop);
        expect_block_end();
      }
    } else if (word == "macro") {
      n->kind = Node::Kind::kMacro;
      n->name = expect_name();
      expect_op("(");
      while (!is_op(")")) {
        n->params.push_back(expect_name());
        n->defaults.push_back(skip_op("=") ? parse_expression(true) : nullptr);
        if (!skip_op(",")) break;
      }
      expect_op(")");
      expect_block_end();
      std::string stop;
      n->body = parse_body({"endmacro"}, stop);
      if (cur().type == T::kName) next();  // {% endmacro name %}
      expect_block_end();
    } else if (word == "break" || word == "continue") {
      n->kind = word == "break" ? Node::Kind::kBreak : Node::Kind::kContinue;
      expect_block_end();
    } else if (word == "generation") {
      // transformers' AssistantTracker block: renders its body in place.
      n->kind = Node::Kind::kScope;
      expect_block_end();
      std::string stop;
      n->body = parse_body({"endgeneration"}, stop);
      expect_block_end();
    } else if (word == "filter") {
      n->kind = Node::Kind::kScope;
      n->filter = parse_filters(nullptr, /*first_without_pipe=*/true);
      expect_block_end();
      std::string stop;
      n->body = parse_body({"endfilter"}, stop);
      expect_block_end();
    } else {
      fail("unknown or unsupported statement '" + word + "'");
    }
    return n;
  }

  // ---- expressions ----
  struct DepthGuard {
    Parser& p;
    explicit DepthGuard(Parser& parser) : p(parser) {
      if (++p.expr_depth_ > kMaxExprDepth) p.fail("expression nested too deep");
    }
    ~DepthGuard() { --p.expr_depth_; }
  };

  // expr [, expr ...] : a tuple when there is a comma.
  ExprPtr parse_tuple(bool with_cond) {
    const int line = cur().line;
    ExprPtr first = parse_expression(with_cond);
    if (!is_op(",")) return first;
    auto t = make(Expr::Kind::kTuple, line);
    add(*t, std::move(first));
    while (skip_op(",")) {
      if (cur().type == T::kVarEnd || cur().type == T::kBlockEnd || is_op(")")) break;
      add(*t, parse_expression(with_cond));
    }
    return t;
  }

  ExprPtr parse_expression(bool with_cond) {
    DepthGuard guard(*this);
    ExprPtr e = parse_or();
    if (!with_cond) return e;
    while (is_name("if")) {
      const int line = cur().line;
      next();
      ExprPtr cond = parse_or();
      ExprPtr otherwise = skip_name("else") ? parse_expression(true) : nullptr;
      auto c = make(Expr::Kind::kCond, line);
      add(*c, std::move(e));
      add(*c, std::move(cond));
      add(*c, std::move(otherwise));
      e = std::move(c);
    }
    return e;
  }

  ExprPtr binary(Expr::Kind kind, const std::string& op, ExprPtr l, ExprPtr r, int line) {
    auto b = make(kind, line);
    b->name = op;
    add(*b, std::move(l));
    add(*b, std::move(r));
    return b;
  }

  ExprPtr parse_or() {
    ExprPtr l = parse_and();
    while (is_name("or")) {
      const int line = cur().line;
      next();
      l = binary(Expr::Kind::kOr, "or", std::move(l), parse_and(), line);
    }
    return l;
  }

  ExprPtr parse_and() {
    ExprPtr l = parse_not();
    while (is_name("and")) {
      const int line = cur().line;
      next();
      l = binary(Expr::Kind::kAnd, "and", std::move(l), parse_not(), line);
    }
    return l;
  }

  ExprPtr parse_not() {
    if (is_name("not")) {
      DepthGuard guard(*this);
      auto n = make(Expr::Kind::kNot, cur().line);
      next();
      add(*n, parse_not());
      return n;
    }
    return parse_compare();
  }

  ExprPtr parse_compare() {
    const int line = cur().line;
    ExprPtr first = parse_math1();
    ExprPtr cmp;
    while (true) {
      std::string op;
      if (cur().type == T::kOp &&
          (cur().value == "==" || cur().value == "!=" || cur().value == "<" || cur().value == ">" ||
           cur().value == "<=" || cur().value == ">=")) {
        op = cur().value;
        next();
      } else if (is_name("in")) {
        op = "in";
        next();
      } else if (is_name("not") && peek().type == T::kName && peek().value == "in") {
        op = "not in";
        next();
        next();
      } else {
        break;
      }
      if (!cmp) {
        cmp = make(Expr::Kind::kCompare, line);
        add(*cmp, std::move(first));
      }
      cmp->ops.push_back(op);
      add(*cmp, parse_math1());
    }
    return cmp ? std::move(cmp) : std::move(first);
  }

  ExprPtr parse_math1() {
    ExprPtr l = parse_concat();
    while (is_op("+") || is_op("-")) {
      const std::string op = cur().value;
      const int line = cur().line;
      next();
      l = binary(Expr::Kind::kBinary, op, std::move(l), parse_concat(), line);
    }
    return l;
  }

  ExprPtr parse_concat() {
    ExprPtr l = parse_math2();
    while (is_op("~")) {
      const int line = cur().line;
      next();
      l = binary(Expr::Kind::kBinary, "~", std::move(l), parse_math2(), line);
    }
    return l;
  }

  ExprPtr parse_math2() {
    ExprPtr l = parse_pow();
    while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
      const std::string op = cur().value;
      const int line = cur().line;
      next();
      l = binary(Expr::Kind::kBinary, op, std::move(l), parse_pow(), line);
    }
    return l;
  }

  ExprPtr parse_pow() {
    ExprPtr l = parse_unary(true);
    while (is_op("**")) {
      const int line = cur().line;
      next();
      l = binary(Expr::Kind::kBinary, "**", std::move(l), parse_unary(true), line);
    }
    return l;
  }

  ExprPtr parse_unary(bool with_filter) {
    DepthGuard guard(*this);
    ExprPtr node;
    if (is_op("-") || is_op("+")) {
      node = make(is_op("-") ? Expr::Kind::kNeg : Expr::Kind::kPos, cur().line);
      next();
      add(*node, parse_unary(false));
    } else {
      node = parse_primary();
    }
    node = parse_postfix(std::move(node));
    if (with_filter) node = parse_filters(std::move(node));
    return node;
  }

  ExprPtr parse_primary() {
    const Token& t = cur();
    const int line = t.line;
    if (t.type == T::kName) {
      const std::string& n = t.value;
      auto lit = make(Expr::Kind::kLiteral, line);
      if (n == "true" || n == "True") {
        lit->literal = Value::boolean(true);
      } else if (n == "false" || n == "False") {
        lit->literal = Value::boolean(false);
      } else if (n == "none" || n == "None") {
        lit->literal = Value::none();
      } else {
        lit->kind = Expr::Kind::kName;
        lit->name = n;
      }
      next();
      return lit;
    }
    if (t.type == T::kString) {
      std::string s = t.value;
      next();
      while (cur().type == T::kString) {  // adjacent literals join, as in Python
        s += cur().value;
        next();
      }
      auto lit = make(Expr::Kind::kLiteral, line);
      lit->literal = Value::string(Str(std::move(s)));
      return lit;
    }
    if (t.type == T::kInt || t.type == T::kFloat) {
      auto lit = make(Expr::Kind::kLiteral, line);
      lit->literal = t.type == T::kInt ? Value::integer(t.int_value) : Value::real(t.float_value);
      next();
      return lit;
    }
    if (skip_op("(")) {
      if (skip_op(")")) return make(Expr::Kind::kTuple, line);
      ExprPtr e = parse_tuple(true);
      expect_op(")");
      return e;
    }
    if (skip_op("[")) {
      auto l = make(Expr::Kind::kList, line);
      while (!is_op("]")) {
        add(*l, parse_expression(true));
        if (!skip_op(",")) break;
      }
      expect_op("]");
      return l;
    }
    if (skip_op("{")) {
      auto d = make(Expr::Kind::kDict, line);
      while (!is_op("}")) {
        add(*d, parse_expression(true));
        expect_op(":");
        add(*d, parse_expression(true));
        if (!skip_op(",")) break;
      }
      expect_op("}");
      return d;
    }
    fail("unexpected " + describe(t) + " in an expression");
  }

  ExprPtr parse_postfix(ExprPtr node) {
    while (true) {
      const int line = cur().line;
      if (is_op(".")) {
        next();
        auto a = make(Expr::Kind::kAttr, line);
        if (cur().type == T::kName) {
          a->name = cur().value;
          next();
          add(*a, std::move(node));
        } else if (cur().type == T::kInt) {
          // x.0 is x[0]
          a->kind = Expr::Kind::kIndex;
          auto idx = make(Expr::Kind::kLiteral, line);
          idx->literal = Value::integer(cur().int_value);
          next();
          add(*a, std::move(node));
          add(*a, std::move(idx));
        } else {
          fail("expected an attribute name after '.', found " + describe(cur()));
        }
        node = std::move(a);
      } else if (is_op("[")) {
        next();
        node = parse_subscript(std::move(node), line);
      } else if (is_op("(")) {
        node = parse_call(std::move(node));
      } else {
        return node;
      }
    }
  }

  ExprPtr parse_subscript(ExprPtr object, int line) {
    ExprPtr parts[3];
    int n_parts = 0;
    bool slice = false;
    while (true) {
      if (is_op(":")) {
        slice = true;
        if (++n_parts > 2) fail("a slice has at most three parts");
        next();
        continue;
      }
      if (is_op("]")) break;
      if (parts[n_parts]) fail("expected ':' or ']' in a subscript, found " + describe(cur()));
      parts[n_parts] = parse_expression(true);
    }
    expect_op("]");
    ExprPtr e;
    if (slice) {
      e = make(Expr::Kind::kSlice, line);
      add(*e, std::move(object));
      for (auto& p : parts) add(*e, std::move(p));
    } else {
      if (!parts[0]) fail("empty subscript");
      e = make(Expr::Kind::kIndex, line);
      add(*e, std::move(object));
      add(*e, std::move(parts[0]));
    }
    return e;
  }

  // Arguments "(a, b, name=c)" into `e` (children after the callee/operand, kwargs).
  void parse_args(Expr& e) {
    expect_op("(");
    while (!is_op(")")) {
      if (cur().type == T::kName && peek().type == T::kOp && peek().value == "=") {
        std::string key = cur().value;
        next();
        next();
        ExprPtr v = parse_expression(true);
        e.depth = std::max(e.depth, v->depth + 1);
        if (e.depth > kMaxExprDepth) fail("expression nested too deep");
        e.kwargs.emplace_back(std::move(key), std::move(v));
      } else {
        if (!e.kwargs.empty()) fail("positional argument after a keyword argument");
        add(e, parse_expression(true));
      }
      if (!skip_op(",")) break;
    }
    expect_op(")");
  }

  ExprPtr parse_call(ExprPtr callee) {
    auto c = make(Expr::Kind::kCall, cur().line);
    add(*c, std::move(callee));
    parse_args(*c);
    return c;
  }

  // Filters and tests after an operand: "| name(args)", "is [not] name [arg]". With a null
  // operand (set blocks, filter blocks) builds the chain to apply to a rendered body: the
  // operand slot holds a null child.
  ExprPtr parse_filters(ExprPtr node, bool first_without_pipe = false) {
    const bool chain_only = node == nullptr;
    bool first = true;
    while (true) {
      const int line = cur().line;
      if (is_op("|") || (first && first_without_pipe)) {
        if (!(first && first_without_pipe)) next();
        first = false;
        auto f = make(Expr::Kind::kFilter, line);
        f->name = expect_name();
        add(*f, std::move(node));
        if (is_op("(")) parse_args(*f);
        node = std::move(f);
      } else if (!chain_only && is_name("is")) {
        next();
        auto t = make(Expr::Kind::kTest, line);
        t->negated = skip_name("not");
        t->name = expect_name();
        add(*t, std::move(node));
        if (is_op("(")) {
          parse_args(*t);
        } else if ((cur().type == T::kName || cur().type == T::kString || cur().type == T::kInt ||
                    cur().type == T::kFloat || is_op("[") || is_op("{")) &&
                   !is_name("else") && !is_name("or") && !is_name("and")) {
          if (is_name("is")) fail("tests cannot be chained with 'is'");
          add(*t, parse_postfix(parse_primary()));
        }
        node = std::move(t);
      } else if (!chain_only && is_op("(")) {
        node = parse_call(std::move(node));
      } else {
        return node;
      }
    }
  }

  std::vector<Token> toks_;
  size_t pos_ = 0;
  int expr_depth_ = 0;
  int block_depth_ = 0;
};

}  // namespace

Body parse(const std::string& source) {
  return Parser(lex(source)).parse_template();
}

}  // namespace lockstep::tokenizer::jinja
