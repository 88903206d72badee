// Values of the Jinja interpreter: Python's types as Jinja templates see them (undefined, None,
// bool, int, float, str, list/tuple, dict, callables). Strings carry marks: the byte ranges that
// came from text the caller marked (chat message contents), kept through concatenation, slicing
// and stripping, so that a rendered chat still knows which of its bytes are user text.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace lockstep::tokenizer::jinja {

// A template that cannot be parsed or fails while rendering. The message is one line.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct Span {
  size_t begin = 0;
  size_t len = 0;
};

// Text plus the ranges of it that are marked (sorted, not overlapping).
struct Str {
  std::string text;
  std::vector<Span> marks;

  Str() = default;
  Str(std::string t) : text(std::move(t)) {}  // NOLINT: unmarked text converts implicitly
  Str(const char* t) : text(t) {}             // NOLINT
  static Str marked(std::string t);

  void append(const Str& other);
  void append(const std::string& other) { text += other; }
  // Bytes [begin, end) with the marks inside them.
  Str substr(size_t begin, size_t end) const;
  bool any_marked() const { return !marks.empty(); }
  // `text` derived from this string by an operation that does not keep positions: marked whole
  // when any of this string was marked.
  Str derived(std::string t) const;
};

struct Value;
class Evaluator;
using List = std::vector<Value>;
// Insertion-ordered string-keyed dict (what JSON messages and template literals hold).
using Dict = std::vector<std::pair<std::string, Value>>;

// Positional and keyword arguments of a call.
struct Args {
  std::vector<Value> pos;
  std::vector<std::pair<std::string, Value>> kw;
  // The argument named `name`, or positional `index`, or nullptr.
  const Value* get(size_t index, const char* name) const;
};

using Function = std::function<Value(Evaluator&, const Args&)>;

struct Value {
  enum class Type { kUndefined, kNone, kBool, kInt, kFloat, kString, kList, kDict, kFunction };
  Type type = Type::kUndefined;
  bool b = false;
  int64_t i = 0;
  double f = 0;
  Str s;  // kString; for kUndefined, the name that was looked up (for messages)
  std::shared_ptr<List> list;
  bool is_tuple = false;
  std::shared_ptr<Dict> dict;
  bool is_namespace = false;  // namespace(): attributes may be assigned
  std::shared_ptr<Function> fn;

  Value() = default;
  static Value undefined(std::string name = "");
  static Value none();
  static Value boolean(bool v);
  static Value integer(int64_t v);
  static Value real(double v);
  static Value string(Str v);
  static Value make_list(List v, bool tuple = false);
  static Value make_dict(Dict v);
  static Value function(Function f);

  bool is_undefined() const { return type == Type::kUndefined; }
  bool is_none() const { return type == Type::kNone; }
  bool is_string() const { return type == Type::kString; }
  bool is_number() const {
    return type == Type::kInt || type == Type::kFloat || type == Type::kBool;
  }
  bool is_list() const { return type == Type::kList; }
  bool is_dict() const { return type == Type::kDict; }

  // Python truthiness.
  bool truthy() const;
  // The dict entry `key`, or nullptr.
  const Value* find(const std::string& key) const;
  // Python's type name, for messages ("str", "list", "dict", ...).
  const char* type_name() const;
  // int/bool/float as a double (for arithmetic and comparisons).
  double as_double() const;
};

// str(v) as Jinja prints it: strings as they are, None as "None", lists as Python's repr.
Str to_str(const Value& v);
// Python's repr(v).
std::string repr(const Value& v);
// json.dumps(v, ensure_ascii=False) with the given indent (< 0: none) and separators.
std::string to_json(const Value& v, int indent, const std::string& item_sep = ", ",
                    const std::string& key_sep = ": ", bool sort_keys = false);
// Python's ==.
bool equals(const Value& a, const Value& b);
// Python's <, <=, ... on numbers, strings and lists: negative, zero or positive; throws Error
// for types that do not compare.
int compare(const Value& a, const Value& b);
// repr of a float the way Python writes it (shortest round-trip, "1.0", "1e+16", "inf").
std::string float_repr(double v);

}  // namespace lockstep::tokenizer::jinja
