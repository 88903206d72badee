// Jinja's builtin filters, tests and globals, and the Python string/dict methods templates call.
#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <ctime>

#include "tokenizer/jinja/evaluator.h"
#include "tokenizer/jinja/text.h"

namespace lockstep::tokenizer::jinja {

namespace {

bool contains_marks(const Value& v, int depth = 0) {
  if (depth > 64) return false;
  if (v.is_string()) return v.s.any_marked();
  if (v.is_list())
    for (const Value& x : *v.list)
      if (contains_marks(x, depth + 1)) return true;
  if (v.is_dict())
    for (const auto& e : *v.dict)
      if (contains_marks(e.second, depth + 1)) return true;
  return false;
}

std::string need_string(const Value& v, const char* what, int line) {
  if (!v.is_string()) {
    Evaluator::require_defined(v, line);
    Evaluator::fail(line, std::string(what) + " expects a string, got '" + v.type_name() + "'");
  }
  return v.s.text;
}

int64_t need_int(const Value* v, int64_t def, const char* what, int line) {
  if (!v || v->is_none()) return def;
  if (v->type == Value::Type::kInt) return v->i;
  if (v->type == Value::Type::kBool) return v->b;
  Evaluator::fail(line, std::string(what) + " expects an integer, got '" + v->type_name() + "'");
}

Str strip_str(const Str& s, const Value* chars, int mode, int line) {
  std::string set;
  if (chars && !chars->is_none()) set = need_string(*chars, "strip", line);
  const size_t b = mode <= 0 ? lstrip_begin(s.text, set) : 0;
  const size_t e = mode >= 0 ? rstrip_end(s.text, set) : s.text.size();
  return s.substr(b, std::max(b, e));
}

// str.split(sep, maxsplit): pieces keep their marks.
List split_str(const Str& s, const Value* sep_v, int64_t maxsplit, int line) {
  List out;
  const std::string& t = s.text;
  if (sep_v && !sep_v->is_none()) {
    const std::string& sep = need_string(*sep_v, "split", line);
    if (sep.empty()) Evaluator::fail(line, "split: empty separator");
    size_t start = 0;
    int64_t n = 0;
    while (maxsplit < 0 || n < maxsplit) {
      const size_t p = t.find(sep, start);
      if (p == std::string::npos) break;
      out.push_back(Value::string(s.substr(start, p)));
      start = p + sep.size();
      ++n;
    }
    out.push_back(Value::string(s.substr(start, t.size())));
    return out;
  }
  // Runs of whitespace separate; leading and trailing whitespace give no empty pieces.
  const auto off = code_point_offsets(t);
  std::vector<bool> space(off.size() - 1);
  {
    size_t k = 0;
    for (size_t i = 0; i + 1 < off.size(); ++i) {
      const size_t b = off[i];
      // Whitespace check per code point: its bytes stripped as a one-character string.
      space[i] = lstrip_begin(t.substr(b, off[i + 1] - b)) != 0;
      (void)k;
    }
  }
  size_t i = 0;
  const size_t n = space.size();
  int64_t splits = 0;
  while (i < n) {
    while (i < n && space[i]) ++i;
    if (i >= n) break;
    if (maxsplit >= 0 && splits >= maxsplit) {
      size_t e = n;
      while (e > i && space[e - 1]) --e;
      out.push_back(Value::string(s.substr(off[i], off[e])));
      break;
    }
    size_t j = i;
    while (j < n && !space[j]) ++j;
    out.push_back(Value::string(s.substr(off[i], off[j])));
    ++splits;
    i = j;
  }
  return out;
}

std::string replace_all(const std::string& t, const std::string& from, const std::string& to,
                        int64_t count, size_t limit, int line) {
  std::string out;
  if (from.empty()) {
    // Python inserts `to` between every character and at both ends.
    const auto off = code_point_offsets(t);
    int64_t done = 0;
    for (size_t k = 0; k + 1 < off.size(); ++k) {
      if (count < 0 || done < count) {
        out += to;
        ++done;
      }
      out.append(t, off[k], off[k + 1] - off[k]);
      if (out.size() > limit) Evaluator::fail(line, "replace: result too long");
    }
    if (count < 0 || done < count) out += to;
    return out;
  }
  size_t start = 0;
  int64_t done = 0;
  while (count < 0 || done < count) {
    const size_t p = t.find(from, start);
    if (p == std::string::npos) break;
    out.append(t, start, p - start);
    out += to;
    if (out.size() > limit) Evaluator::fail(line, "replace: result too long");
    start = p + from.size();
    ++done;
  }
  out.append(t, start, std::string::npos);
  return out;
}

bool starts_or_ends(const std::string& t, const Value& arg, bool starts, int line) {
  auto one = [&](const Value& p) {
    const std::string& s = need_string(p, starts ? "startswith" : "endswith", line);
    if (s.size() > t.size()) return false;
    return starts ? t.compare(0, s.size(), s) == 0
                  : t.compare(t.size() - s.size(), s.size(), s) == 0;
  };
  if (arg.is_list()) {
    for (const Value& p : *arg.list)
      if (one(p)) return true;
    return false;
  }
  return one(arg);
}

// Python's int(str): optional sign, digits (underscores between), surrounding whitespace.
bool parse_int(const std::string& text, int64_t& out) {
  const size_t b = lstrip_begin(text), e = rstrip_end(text);
  if (b >= e) return false;
  std::string t;
  for (size_t k = b; k < e; ++k)
    if (text[k] != '_') t += text[k];
  errno = 0;
  char* end = nullptr;
  const long long v = std::strtoll(t.c_str(), &end, 10);
  if (errno || end != t.c_str() + t.size() || t.empty()) return false;
  out = v;
  return true;
}

bool parse_float(const std::string& text, double& out) {
  const size_t b = lstrip_begin(text), e = rstrip_end(text);
  if (b >= e) return false;
  const std::string t = text.substr(b, e - b);
  char* end = nullptr;
  out = std::strtod(t.c_str(), &end);
  return end == t.c_str() + t.size();
}

Value attribute_of(Evaluator& ev, const Value& v, const Value& attr, int line) {
  if (attr.is_string()) {
    // "a.b" walks nested attributes, as Jinja's attribute= arguments do.
    Value cur = v;
    const std::string& path = attr.s.text;
    size_t start = 0;
    while (true) {
      const size_t dot = path.find('.', start);
      const std::string part = path.substr(start, dot == std::string::npos ? dot : dot - start);
      if (cur.is_undefined()) return cur;
      cur = ev.get_item(cur, Value::string(Str(part)), line);
      if (dot == std::string::npos) return cur;
      start = dot + 1;
    }
  }
  return ev.get_item(v, attr, line);
}

}  // namespace

// ---- filters ----

Value Evaluator::filter(const std::string& name, const Value& v, const Args& args, int line) {
  const Value* a0 = args.pos.size() > 0 ? &args.pos[0] : nullptr;
  if (name == "trim")
    return Value::string(strip_str(v.is_string() ? v.s : to_str(v), args.get(0, "chars"), 0, line));
  if (name == "tojson") {
    const Value* indent = args.get(0, "indent");
    const Value* sort = args.get(99, "sort_keys");
    const Value* seps = args.get(99, "separators");
    std::string item_sep = ", ", key_sep = ": ";
    if (seps && seps->is_list() && seps->list->size() == 2) {
      item_sep = need_string((*seps->list)[0], "tojson separators", line);
      key_sep = need_string((*seps->list)[1], "tojson separators", line);
    }
    const int64_t ind = need_int(indent, -1, "tojson indent", line);
    if (ind > 64) fail(line, "tojson: indent larger than 64");
    std::string json;
    if (!indent || indent->is_none()) {
      json = to_json(v, -1, item_sep, key_sep, sort && sort->truthy());
    } else {
      json = to_json(v, int(ind), item_sep, key_sep, sort && sort->truthy());
    }
    Str s = contains_marks(v) ? Str::marked(json) : Str(json);
    check_size(s, line);
    return Value::string(std::move(s));
  }
  if (name == "length" || name == "count") {
    if (v.is_string()) return Value::integer(int64_t(code_point_offsets(v.s.text).size() - 1));
    if (v.is_list()) return Value::integer(int64_t(v.list->size()));
    if (v.is_dict()) return Value::integer(int64_t(v.dict->size()));
    if (v.is_undefined()) return Value::integer(0);
    fail(line, std::string("object of type '") + v.type_name() + "' has no len()");
  }
  if (name == "upper" || name == "lower" || name == "capitalize" || name == "title") {
    const Str s = v.is_string() ? v.s : to_str(v);
    const std::string t = name == "upper"   ? py_upper(s.text)
                          : name == "lower" ? py_lower(s.text)
                          : name == "title" ? py_title(s.text)
                                            : py_capitalize(s.text);
    return Value::string(s.derived(t));
  }
  if (name == "default" || name == "d") {
    const Value* boolean = args.get(1, "boolean");
    const bool use_default = v.is_undefined() || (boolean && boolean->truthy() && !v.truthy());
    if (!use_default) return v;
    const Value* d = args.get(0, "default_value");
    return d ? *d : Value::string(Str(""));
  }
  if (name == "join") {
    const Value* sep = args.get(0, "d");
    const Value* attr = args.get(1, "attribute");
    Str sep_s = sep ? to_str(*sep) : Str("");
    Str out;
    bool first = true;
    for (const Value& x : iterate(v, line)) {
      if (!first) out.append(sep_s);
      first = false;
      out.append(to_str(attr ? attribute_of(*this, x, *attr, line) : x));
      check_size(out, line);
    }
    return Value::string(std::move(out));
  }
  if (name == "first" || name == "last") {
    const List items = iterate(v, line);
    if (items.empty()) return Value::undefined();
    return name == "first" ? items.front() : items.back();
  }
  if (name == "items") {
    if (v.is_undefined()) return Value::make_list({});
    if (!v.is_dict())
      fail(line, std::string("items: expected a mapping, got '") + v.type_name() + "'");
    List out;
    for (const auto& [k, x] : *v.dict)
      out.push_back(Value::make_list({Value::string(Str(k)), x}, true));
    return Value::make_list(std::move(out));
  }
  if (name == "dictsort") {
    if (!v.is_dict()) fail(line, "dictsort: expected a mapping");
    List out;
    for (const auto& [k, x] : *v.dict)
      out.push_back(Value::make_list({Value::string(Str(k)), x}, true));
    std::stable_sort(out.begin(), out.end(), [](const Value& a, const Value& b) {
      return py_lower((*a.list)[0].s.text) < py_lower((*b.list)[0].s.text);
    });
    return Value::make_list(std::move(out));
  }
  if (name == "safe" || name == "string") return Value::string(to_str(v));
  if (name == "e" || name == "escape") {
    const Str s = to_str(v);
    std::string out;
    for (char c : s.text) {
      switch (c) {
        case '&':
          out += "&amp;";
          break;
        case '<':
          out += "&lt;";
          break;
        case '>':
          out += "&gt;";
          break;
        case '"':
          out += "&#34;";
          break;
        case '\'':
          out += "&#39;";
          break;
        default:
          out += c;
      }
    }
    return Value::string(s.derived(out));
  }
  if (name == "int") {
    const int64_t def = need_int(args.get(0, "default"), 0, "int default", line);
    if (v.type == Value::Type::kInt) return v;
    if (v.type == Value::Type::kBool) return Value::integer(v.b);
    if (v.type == Value::Type::kFloat) {
      if (!std::isfinite(v.f) || std::fabs(v.f) >= 9.2e18) return Value::integer(def);
      return Value::integer(int64_t(v.f));
    }
    if (v.is_string()) {
      int64_t x;
      if (parse_int(v.s.text, x)) return Value::integer(x);
      double f;
      if (parse_float(v.s.text, f) && std::isfinite(f) && std::fabs(f) < 9.2e18)
        return Value::integer(int64_t(f));
    }
    return Value::integer(def);
  }
  if (name == "float") {
    if (v.is_number()) return Value::real(v.as_double());
    double f;
    if (v.is_string() && parse_float(v.s.text, f)) return Value::real(f);
    const Value* d = args.get(0, "default");
    return d ? *d : Value::real(0.0);
  }
  if (name == "abs") {
    if (v.type == Value::Type::kFloat) return Value::real(std::fabs(v.f));
    if (v.is_number()) {
      const int64_t x = v.type == Value::Type::kBool ? v.b : v.i;
      if (x == INT64_MIN) fail(line, "integer overflow");
      return Value::integer(x < 0 ? -x : x);
    }
    fail(line, std::string("bad operand type for abs(): '") + v.type_name() + "'");
  }
  if (name == "round") {
    if (!v.is_number()) fail(line, "round expects a number");
    const int64_t prec = need_int(args.get(0, "precision"), 0, "round precision", line);
    if (prec < -20 || prec > 20) fail(line, "round: precision out of range");
    const Value* method_v = args.get(1, "method");
    const std::string m = method_v ? need_string(*method_v, "round method", line) : "common";
    const double scale = std::pow(10.0, double(prec));
    double x = v.as_double() * scale;
    // Python's round(): halves go to the even neighbour.
    x = m == "ceil" ? std::ceil(x) : m == "floor" ? std::floor(x) : std::nearbyint(x);
    return Value::real(x / scale);
  }
  if (name == "replace") {
    const Str s = v.is_string() ? v.s : to_str(v);
    const std::string& from = need_string(a0 ? *a0 : Value(), "replace", line);
    const Value* to_v = args.get(1, "new");
    const std::string& to = need_string(to_v ? *to_v : Value(), "replace", line);
    const int64_t count = need_int(args.get(2, "count"), -1, "replace count", line);
    return Value::string(s.derived(replace_all(s.text, from, to, count, limits_.max_output, line)));
  }
  if (name == "list") return Value::make_list(iterate(v, line));
  if (name == "reverse") {
    if (v.is_string()) {
      const auto off = code_point_offsets(v.s.text);
      std::string out;
      for (size_t k = off.size() - 1; k > 0; --k)
        out.append(v.s.text, off[k - 1], off[k] - off[k - 1]);
      return Value::string(v.s.derived(out));
    }
    List items = iterate(v, line);
    std::reverse(items.begin(), items.end());
    return Value::make_list(std::move(items));
  }
  if (name == "unique") {
    List out;
    for (const Value& x : iterate(v, line)) {
      bool seen = false;
      for (const Value& y : out) seen = seen || equals(x, y);
      if (!seen) out.push_back(x);
    }
    return Value::make_list(std::move(out));
  }
  if (name == "sort") {
    List items = iterate(v, line);
    const Value* rev = args.get(0, "reverse");
    const Value* attr = args.get(2, "attribute");
    std::vector<std::pair<Value, Value>> keyed;
    for (const Value& x : items)
      keyed.emplace_back(attr ? attribute_of(*this, x, *attr, line) : x, x);
    try {
      std::stable_sort(keyed.begin(), keyed.end(), [](const auto& a, const auto& b) {
        const Value ka =
            a.first.is_string() ? Value::string(Str(py_lower(a.first.s.text))) : a.first;
        const Value kb =
            b.first.is_string() ? Value::string(Str(py_lower(b.first.s.text))) : b.first;
        return compare(ka, kb) < 0;
      });
    } catch (const Error& e) {
      fail(line, std::string("sort: ") + e.what());
    }
    if (rev && rev->truthy()) std::reverse(keyed.begin(), keyed.end());
    List out;
    for (auto& [k, x] : keyed) out.push_back(std::move(x));
    return Value::make_list(std::move(out));
  }
  if (name == "sum" || name == "min" || name == "max") {
    const List items = iterate(v, line);
    if (name == "sum") {
      Value acc = Value::integer(0);
      for (const Value& x : items) {
        if (!x.is_number()) fail(line, "sum: items must be numbers");
        if (acc.type == Value::Type::kInt && x.type != Value::Type::kFloat) {
          int64_t r;
          if (__builtin_add_overflow(acc.i, int64_t(x.type == Value::Type::kBool ? x.b : x.i), &r))
            fail(line, "integer overflow");
          acc = Value::integer(r);
        } else {
          acc = Value::real(acc.as_double() + x.as_double());
        }
      }
      return acc;
    }
    if (items.empty()) return Value::undefined();
    Value best = items[0];
    for (const Value& x : items) {
      int c;
      try {
        c = compare(x, best);
      } catch (const Error& e) {
        fail(line, name + ": " + e.what());
      }
      if (name == "min" ? c < 0 : c > 0) best = x;
    }
    return best;
  }
  if (name == "map") {
    List out;
    const Value* attr = args.get(99, "attribute");
    for (const Value& x : iterate(v, line)) {
      if (attr) {
        Value r = attribute_of(*this, x, *attr, line);
        if (r.is_undefined())
          if (const Value* d = args.get(99, "default")) r = *d;
        out.push_back(std::move(r));
      } else {
        if (!a0) fail(line, "map needs a filter name or attribute=");
        Args rest;
        rest.pos.assign(args.pos.begin() + 1, args.pos.end());
        rest.kw = args.kw;
        out.push_back(filter(need_string(*a0, "map", line), x, rest, line));
      }
    }
    return Value::make_list(std::move(out));
  }
  if (name == "select" || name == "reject" || name == "selectattr" || name == "rejectattr") {
    const bool by_attr = name == "selectattr" || name == "rejectattr";
    const bool want = name == "select" || name == "selectattr";
    size_t test_at = by_attr ? 1 : 0;
    List out;
    for (const Value& x : iterate(v, line)) {
      Value subject = x;
      if (by_attr) {
        if (!a0) fail(line, name + " needs an attribute name");
        subject = attribute_of(*this, x, *a0, line);
      }
      bool ok;
      if (args.pos.size() > test_at) {
        Args rest;
        rest.pos.assign(args.pos.begin() + long(test_at) + 1, args.pos.end());
        ok = test(need_string(args.pos[test_at], name.c_str(), line), subject, rest, line);
      } else {
        ok = subject.truthy();
      }
      if (ok == want) out.push_back(x);
    }
    return Value::make_list(std::move(out));
  }
  if (name == "indent") {
    const Value* width_v = args.get(0, "width");
    const Value* first_v = args.get(1, "first");
    const Value* blank_v = args.get(2, "blank");
    std::string pad;
    if (width_v && width_v->is_string()) {
      pad = width_v->s.text;
    } else {
      const int64_t w = need_int(width_v, 4, "indent width", line);
      if (w < 0 || w > 1000) fail(line, "indent: width out of range");
      pad.assign(size_t(w), ' ');
    }
    const Str s = to_str(v);
    std::string out;
    size_t start = 0;
    bool first_line = true;
    while (start <= s.text.size()) {
      size_t nl = s.text.find('\n', start);
      const std::string line_text =
          s.text.substr(start, nl == std::string::npos ? std::string::npos : nl - start);
      const bool blank = rstrip_end(line_text) == 0;
      if ((first_line ? (first_v && first_v->truthy()) : true) &&
          (!blank || (blank_v && blank_v->truthy())))
        out += pad;
      out += line_text;
      if (nl == std::string::npos) break;
      out += '\n';
      start = nl + 1;
      first_line = false;
      if (out.size() > limits_.max_output) fail(line, "indent: result too long");
    }
    return Value::string(s.derived(out));
  }
  if (name == "wordcount")
    return Value::integer(int64_t(split_str(to_str(v), nullptr, -1, line).size()));
  fail(line, "unknown filter '" + name + "'");
}

// ---- tests ----

bool Evaluator::test(const std::string& name, const Value& v, const Args& args, int line) {
  using Ty = Value::Type;
  const Value* a0 = args.get(0, "value");
  auto need_arg = [&]() -> const Value& {
    if (!a0) fail(line, "test '" + name + "' needs an argument");
    return *a0;
  };
  if (name == "defined") return !v.is_undefined();
  if (name == "undefined") return v.is_undefined();
  if (name == "none") return v.is_none();
  if (name == "string") return v.is_string();
  if (name == "number") return v.is_number();
  if (name == "integer") return v.type == Ty::kInt;
  if (name == "float") return v.type == Ty::kFloat;
  if (name == "boolean") return v.type == Ty::kBool;
  if (name == "true") return v.type == Ty::kBool && v.b;
  if (name == "false") return v.type == Ty::kBool && !v.b;
  if (name == "mapping") return v.is_dict() && !v.is_namespace;
  if (name == "iterable") return v.is_list() || v.is_dict() || v.is_string() || v.is_undefined();
  if (name == "sequence") return v.is_list() || v.is_dict() || v.is_string();
  if (name == "callable") return v.type == Ty::kFunction;
  if (name == "odd" || name == "even") {
    if (v.type != Ty::kInt && v.type != Ty::kBool)
      fail(line, "test '" + name + "' needs an integer");
    const int64_t x = v.type == Ty::kBool ? v.b : v.i;
    return (x % 2 != 0) == (name == "odd");
  }
  if (name == "divisibleby") {
    const int64_t d = need_int(&need_arg(), 1, "divisibleby", line);
    if (d == 0) fail(line, "divisibleby: division by zero");
    if (v.type != Ty::kInt && v.type != Ty::kBool) fail(line, "divisibleby needs an integer");
    const int64_t x = v.type == Ty::kBool ? v.b : v.i;
    return d == -1 || x % d == 0;
  }
  if (name == "eq" || name == "equalto" || name == "==") return equals(v, need_arg());
  if (name == "ne" || name == "!=") return !equals(v, need_arg());
  if (name == "lt" || name == "lessthan" || name == "<" || name == "gt" || name == "greaterthan" ||
      name == ">" || name == "le" || name == "<=" || name == "ge" || name == ">=") {
    int c;
    try {
      c = compare(v, need_arg());
    } catch (const Error& e) {
      fail(line, e.what());
    }
    if (name == "lt" || name == "lessthan" || name == "<") return c < 0;
    if (name == "gt" || name == "greaterthan" || name == ">") return c > 0;
    if (name == "le" || name == "<=") return c <= 0;
    return c >= 0;
  }
  if (name == "in") {
    const Value& container = need_arg();
    if (container.is_string())
      return v.is_string() && container.s.text.find(v.s.text) != std::string::npos;
    if (container.is_list()) {
      for (const Value& x : *container.list)
        if (equals(v, x)) return true;
      return false;
    }
    if (container.is_dict()) return v.is_string() && container.find(v.s.text);
    fail(line, std::string("argument of type '") + container.type_name() + "' is not iterable");
  }
  if (name == "sameas") {
    const Value& o = need_arg();
    if (v.type != o.type) return false;
    switch (v.type) {
      case Ty::kNone:
      case Ty::kUndefined:
        return true;
      case Ty::kBool:
        return v.b == o.b;
      case Ty::kList:
        return v.list == o.list;
      case Ty::kDict:
        return v.dict == o.dict;
      case Ty::kFunction:
        return v.fn == o.fn;
      default:
        return equals(v, o);
    }
  }
  if (name == "lower") return v.is_string() && py_lower(v.s.text) == v.s.text;
  if (name == "upper") return v.is_string() && py_upper(v.s.text) == v.s.text;
  fail(line, "unknown test '" + name + "'");
}

// ---- methods ----

Value Evaluator::method(const Value& object, const std::string& name, int line) {
  if (object.is_string()) {
    const Value self = object;
    auto m = [&](auto body) {
      return Value::function([self, body, line](Evaluator& ev, const Args& a) -> Value {
        return body(ev, self, a, line);
      });
    };
    if (name == "strip" || name == "lstrip" || name == "rstrip") {
      const int mode = name == "strip" ? 0 : name == "lstrip" ? -1 : 1;
      return m([mode](Evaluator&, const Value& s, const Args& a, int ln) {
        return Value::string(strip_str(s.s, a.get(0, "chars"), mode, ln));
      });
    }
    if (name == "split") {
      return m([](Evaluator& ev, const Value& s, const Args& a, int ln) {
        List parts =
            split_str(s.s, a.get(0, "sep"), need_int(a.get(1, "maxsplit"), -1, "split", ln), ln);
        ev.check_items(parts.size(), ln);
        return Value::make_list(std::move(parts));
      });
    }
    if (name == "startswith" || name == "endswith") {
      const bool starts = name == "startswith";
      return m([starts](Evaluator&, const Value& s, const Args& a, int ln) {
        const Value* p = a.get(0, "prefix");
        if (!p) Evaluator::fail(ln, "startswith/endswith needs an argument");
        return Value::boolean(starts_or_ends(s.s.text, *p, starts, ln));
      });
    }
    if (name == "lower" || name == "upper" || name == "title" || name == "capitalize") {
      const std::string which = name;
      return m([which](Evaluator& ev, const Value& s, const Args& a, int ln) {
        return ev.filter(which, s, a, ln);
      });
    }
    if (name == "replace") {
      return m([](Evaluator& ev, const Value& s, const Args& a, int ln) {
        return ev.filter("replace", s, a, ln);
      });
    }
    if (name == "find" || name == "rfind" || name == "count" || name == "index") {
      const std::string which = name;
      return m([which](Evaluator&, const Value& s, const Args& a, int ln) {
        const Value* sub_v = a.get(0, "sub");
        const std::string& sub = need_string(sub_v ? *sub_v : Value(), which.c_str(), ln);
        const std::string& t = s.s.text;
        auto cp_index = [&](size_t byte) {
          return int64_t(code_point_offsets(t.substr(0, byte)).size() - 1);
        };
        if (which == "count") {
          if (sub.empty()) return Value::integer(int64_t(code_point_offsets(t).size()));
          int64_t n = 0;
          for (size_t p = t.find(sub); p != std::string::npos; p = t.find(sub, p + sub.size())) ++n;
          return Value::integer(n);
        }
        const size_t p = which == "rfind" ? t.rfind(sub) : t.find(sub);
        if (p == std::string::npos) {
          if (which == "index") Evaluator::fail(ln, "substring not found");
          return Value::integer(-1);
        }
        return Value::integer(cp_index(p));
      });
    }
    if (name == "join") {
      return m([](Evaluator& ev, const Value& s, const Args& a, int ln) {
        Args fa;
        fa.pos.push_back(s);
        const Value* items = a.get(0, "iterable");
        return ev.filter("join", items ? *items : Value(), fa, ln);
      });
    }
    if (name == "isdigit" || name == "isspace" || name == "isalpha" || name == "isalnum") {
      const std::string which = name;
      return m([which](Evaluator&, const Value& s, const Args&, int) {
        const std::string& t = s.s.text;
        if (t.empty()) return Value::boolean(false);
        for (unsigned char c : t) {
          const bool ok = which == "isdigit"   ? (c >= '0' && c <= '9')
                          : which == "isspace" ? (c == ' ' || (c >= 9 && c <= 13))
                          : which == "isalpha"
                              ? ((c | 32) >= 'a' && (c | 32) <= 'z')
                              : ((c | 32) >= 'a' && (c | 32) <= 'z') || (c >= '0' && c <= '9');
          if (!ok) return Value::boolean(false);
        }
        return Value::boolean(true);
      });
    }
    return Value::undefined(name);
  }
  if (object.is_dict() && !object.is_namespace) {
    const Value self = object;
    if (name == "items" || name == "keys" || name == "values") {
      const std::string which = name;
      return Value::function([self, which](Evaluator&, const Args&) {
        List out;
        for (const auto& [k, x] : *self.dict) {
          if (which == "items") {
            out.push_back(Value::make_list({Value::string(Str(k)), x}, true));
          } else {
            out.push_back(which == "keys" ? Value::string(Str(k)) : x);
          }
        }
        return Value::make_list(std::move(out));
      });
    }
    if (name == "get") {
      return Value::function([self, line](Evaluator&, const Args& a) {
        const Value* key = a.get(0, "key");
        if (!key) Evaluator::fail(line, "get needs a key");
        if (key->is_string())
          if (const Value* v = self.find(key->s.text)) return *v;
        const Value* d = a.get(1, "default");
        return d ? *d : Value::none();
      });
    }
  }
  return Value::undefined(name);
}

// ---- globals ----

void Evaluator::add_builtin_globals(Dict& globals) {
  auto add = [&](const char* name, Function f) {
    for (const auto& [k, v] : globals)
      if (k == name) return;
    globals.emplace_back(name, Value::function(std::move(f)));
  };
  add("range", [](Evaluator& ev, const Args& a) {
    int64_t start = 0, stop = 0, step = 1;
    if (a.pos.size() == 1) {
      stop = need_int(&a.pos[0], 0, "range", 0);
    } else if (a.pos.size() >= 2) {
      start = need_int(&a.pos[0], 0, "range", 0);
      stop = need_int(&a.pos[1], 0, "range", 0);
      if (a.pos.size() >= 3) step = need_int(&a.pos[2], 1, "range", 0);
    } else {
      fail(0, "range expects at least one argument");
    }
    if (step == 0) fail(0, "range() arg 3 must not be zero");
    const double n = std::ceil((double(stop) - double(start)) / double(step));
    ev.check_items(n > 0 ? size_t(std::min(n, 1e18)) : 0, 0);
    List out;
    for (int64_t x = start; step > 0 ? x < stop : x > stop; x += step)
      out.push_back(Value::integer(x));
    return Value::make_list(std::move(out));
  });
  add("namespace", [](Evaluator& ev, const Args& a) {
    Value ns = Value::make_dict({});
    ns.is_namespace = true;
    for (const Value& p : a.pos) {
      if (!p.is_dict()) fail(0, "namespace() takes keyword arguments or a dict");
      for (const auto& e : *p.dict) ns.dict->push_back(e);
    }
    for (const auto& e : a.kw) ns.dict->push_back(e);
    ev.track_namespace(ns.dict);
    return ns;
  });
  add("dict", [](Evaluator&, const Args& a) {
    Dict d;
    for (const Value& p : a.pos) {
      if (!p.is_dict()) fail(0, "dict() takes keyword arguments or a dict");
      for (const auto& e : *p.dict) d.push_back(e);
    }
    for (const auto& e : a.kw) d.push_back(e);
    return Value::make_dict(std::move(d));
  });
  // transformers' strftime_now (Llama 3.1+ and Mistral templates write today's date with it).
  add("strftime_now", [](Evaluator&, const Args& a) {
    const Value* fmt = a.get(0, "format");
    if (!fmt || !fmt->is_string()) fail(0, "strftime_now needs a format string");
    const std::time_t now = std::time(nullptr);
    std::tm tm{};
    gmtime_r(&now, &tm);
    char buf[256];
    const size_t n = std::strftime(buf, sizeof buf, fmt->s.text.c_str(), &tm);
    return Value::string(Str(std::string(buf, n)));
  });
  add("raise_exception", [](Evaluator&, const Args& a) -> Value {
    const Value* msg = a.get(0, "message");
    throw Error("line 0: the template raised an error: " +
                (msg ? to_str(*msg).text : std::string()));
  });
}

}  // namespace lockstep::tokenizer::jinja
