// Syntax tree of a parsed Jinja template: expressions and statements.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "tokenizer/jinja/value.h"

namespace lockstep::tokenizer::jinja {

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

struct Expr {
  enum class Kind {
    kLiteral,  // literal
    kName,     // name
    kList,     // children: items
    kTuple,    // children: items
    kDict,     // children: key0, value0, key1, value1, ...
    kAttr,     // children[0].name
    kIndex,    // children[0][children[1]]
    kSlice,    // children[0][children[1]:children[2]:children[3]] (null where left out)
    kCall,     // children[0](children[1..], kwargs)
    kFilter,   // children[0] | name(children[1..], kwargs)
    kTest,     // children[0] is [not] name(children[1..])
    kNeg,      // -children[0]
    kPos,      // +children[0]
    kNot,      // not children[0]
    kBinary,   // children[0] name children[1]: + - * / // % ** ~
    kCompare,  // children[0] ops[0] children[1] ops[1] children[2] ...
    kAnd,      // children[0] and children[1]
    kOr,       // children[0] or children[1]
    kCond,     // children[0] if children[1] else children[2] (null: undefined)
  };
  Kind kind = Kind::kLiteral;
  int line = 0;
  int depth = 1;  // height of this subtree (bounded by the parser)
  Value literal;
  std::string name;
  std::vector<std::string> ops;
  bool negated = false;
  std::vector<ExprPtr> children;
  std::vector<std::pair<std::string, ExprPtr>> kwargs;
};

struct Node;
using Body = std::vector<std::unique_ptr<Node>>;

struct Node {
  enum class Kind {
    kText,      // text
    kOutput,    // {{ expr }}
    kIf,        // conditions[i] -> bodies[i]; a final extra body is the else branch
    kFor,       // for targets in expr [if filter]: body, else_body
    kSet,       // set targets = expr; or set targets[0].attr = expr
    kSetBlock,  // set targets[0] %}body{% endset (filter: kFilter chain applied to the body)
    kMacro,     // macro name(params = defaults): body
    kBreak,
    kContinue,
    kScope,  // body rendered in place ({% generation %}, {% filter %} through `filter`)
  };
  Kind kind = Kind::kText;
  int line = 0;
  std::string text;
  ExprPtr expr;
  ExprPtr filter;
  std::vector<ExprPtr> conditions;
  std::vector<Body> bodies;
  std::vector<std::string> targets;
  std::string attr;
  Body body;
  Body else_body;
  std::string name;
  std::vector<std::string> params;
  std::vector<ExprPtr> defaults;  // one per param; null where there is none
};

}  // namespace lockstep::tokenizer::jinja
