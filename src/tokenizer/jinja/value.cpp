#include "tokenizer/jinja/value.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>

namespace lockstep::tokenizer::jinja {

namespace {

// Nested lists and dicts deeper than this are refused when printed or compared (a namespace can
// be made to hold itself).
constexpr int kMaxNesting = 64;

void check_depth(int depth) {
  if (depth > kMaxNesting) throw Error("values nested more than 64 deep");
}

std::string repr_string(const std::string& s) {
  // Python picks double quotes only when the text has a single quote and no double quote.
  const bool dq = s.find('\'') != std::string::npos && s.find('"') == std::string::npos;
  const char q = dq ? '"' : '\'';
  std::string out(1, q);
  for (unsigned char c : s) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == q) {
      out += '\\';
      out += char(c);
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c < 0x20 || c == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    } else {
      out += char(c);
    }
  }
  out += q;
  return out;
}

void repr_into(std::string& out, const Value& v, int depth) {
  check_depth(depth);
  switch (v.type) {
    case Value::Type::kString:
      out += repr_string(v.s.text);
      return;
    case Value::Type::kList: {
      out += v.is_tuple ? '(' : '[';
      for (size_t k = 0; k < v.list->size(); ++k) {
        if (k) out += ", ";
        repr_into(out, (*v.list)[k], depth + 1);
      }
      if (v.is_tuple && v.list->size() == 1) out += ',';
      out += v.is_tuple ? ')' : ']';
      return;
    }
    case Value::Type::kDict: {
      out += v.is_namespace ? "<Namespace {" : "{";
      bool first = true;
      for (const auto& [k, e] : *v.dict) {
        if (!first) out += ", ";
        first = false;
        out += repr_string(k) + ": ";
        repr_into(out, e, depth + 1);
      }
      out += v.is_namespace ? "}>" : "}";
      return;
    }
    default:
      out += to_str(v).text;
  }
}

void json_string(std::string& out, const std::string& s) {
  out += '"';
  for (unsigned char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      default:
        if (c < 0x20 || c == 0x7f) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += char(c);
        }
    }
  }
  out += '"';
}

struct JsonStyle {
  int indent;
  const std::string& item_sep;
  const std::string& key_sep;
  bool sort_keys;
};

void json_into(std::string& out, const Value& v, const JsonStyle& st, int depth) {
  check_depth(depth);
  auto newline = [&](int level) {
    out += '\n';
    out.append(size_t(st.indent) * size_t(level), ' ');
  };
  // With an indent, Python ends items with "," and the newline (item_sep's trailing space goes).
  const std::string sep = st.indent >= 0 ? "," : st.item_sep;
  switch (v.type) {
    case Value::Type::kUndefined:
      throw Error("tojson: value is undefined" +
                  (v.s.text.empty() ? std::string() : " ('" + v.s.text + "')"));
    case Value::Type::kNone:
      out += "null";
      return;
    case Value::Type::kBool:
      out += v.b ? "true" : "false";
      return;
    case Value::Type::kInt:
      out += std::to_string(v.i);
      return;
    case Value::Type::kFloat:
      if (std::isnan(v.f)) {
        out += "NaN";
      } else if (std::isinf(v.f)) {
        out += v.f > 0 ? "Infinity" : "-Infinity";
      } else {
        out += float_repr(v.f);
      }
      return;
    case Value::Type::kString:
      json_string(out, v.s.text);
      return;
    case Value::Type::kList: {
      if (v.list->empty()) {
        out += "[]";
        return;
      }
      out += '[';
      for (size_t k = 0; k < v.list->size(); ++k) {
        if (k) out += sep;
        if (st.indent >= 0) newline(depth + 1);
        json_into(out, (*v.list)[k], st, depth + 1);
      }
      if (st.indent >= 0) newline(depth);
      out += ']';
      return;
    }
    case Value::Type::kDict: {
      if (v.dict->empty()) {
        out += "{}";
        return;
      }
      std::vector<const std::pair<std::string, Value>*> items;
      for (const auto& e : *v.dict) items.push_back(&e);
      if (st.sort_keys)
        std::stable_sort(items.begin(), items.end(),
                         [](auto* a, auto* b) { return a->first < b->first; });
      out += '{';
      bool first = true;
      for (const auto* e : items) {
        if (!first) out += sep;
        first = false;
        if (st.indent >= 0) newline(depth + 1);
        json_string(out, e->first);
        out += st.key_sep;
        json_into(out, e->second, st, depth + 1);
      }
      if (st.indent >= 0) newline(depth);
      out += '}';
      return;
    }
    case Value::Type::kFunction:
      throw Error("tojson: a function is not JSON serializable");
  }
}

int compare_at(const Value& a, const Value& b, int depth) {
  check_depth(depth);
  if (a.is_number() && b.is_number()) {
    if (a.type != Value::Type::kFloat && b.type != Value::Type::kFloat) {
      const int64_t x = a.type == Value::Type::kBool ? a.b : a.i;
      const int64_t y = b.type == Value::Type::kBool ? b.b : b.i;
      return x < y ? -1 : x > y ? 1 : 0;
    }
    const double x = a.as_double(), y = b.as_double();
    return x < y ? -1 : x > y ? 1 : 0;
  }
  if (a.is_string() && b.is_string())
    return a.s.text.compare(b.s.text) < 0 ? -1 : a.s.text.compare(b.s.text) > 0 ? 1 : 0;
  if (a.is_list() && b.is_list()) {
    const size_t n = std::min(a.list->size(), b.list->size());
    for (size_t k = 0; k < n; ++k) {
      const int c = compare_at((*a.list)[k], (*b.list)[k], depth + 1);
      if (c) return c;
    }
    return a.list->size() < b.list->size() ? -1 : a.list->size() > b.list->size() ? 1 : 0;
  }
  throw Error(std::string("'<' not supported between instances of '") + a.type_name() + "' and '" +
              b.type_name() + "'");
}

bool equals_at(const Value& a, const Value& b, int depth) {
  check_depth(depth);
  if (a.is_number() && b.is_number()) {
    if (a.type == Value::Type::kFloat || b.type == Value::Type::kFloat)
      return a.as_double() == b.as_double();
    return (a.type == Value::Type::kBool ? a.b : a.i) == (b.type == Value::Type::kBool ? b.b : b.i);
  }
  if (a.type != b.type) return false;
  switch (a.type) {
    case Value::Type::kUndefined:
    case Value::Type::kNone:
      return true;
    case Value::Type::kString:
      return a.s.text == b.s.text;
    case Value::Type::kList:
      if (a.list->size() != b.list->size() || a.is_tuple != b.is_tuple) return false;
      for (size_t k = 0; k < a.list->size(); ++k)
        if (!equals_at((*a.list)[k], (*b.list)[k], depth + 1)) return false;
      return true;
    case Value::Type::kDict:
      if (a.dict == b.dict) return true;
      if (a.dict->size() != b.dict->size() || a.is_namespace || b.is_namespace) return false;
      for (const auto& [k, v] : *a.dict) {
        const Value* o = b.find(k);
        if (!o || !equals_at(v, *o, depth + 1)) return false;
      }
      return true;
    case Value::Type::kFunction:
      return a.fn == b.fn;
    default:
      return false;
  }
}

}  // namespace

Str Str::marked(std::string t) {
  Str s(std::move(t));
  if (!s.text.empty()) s.marks.push_back({0, s.text.size()});
  return s;
}

void Str::append(const Str& other) {
  const size_t base = text.size();
  text += other.text;
  for (const Span& m : other.marks) {
    // Touching marks merge, so a marked text split and joined again stays one range.
    if (!marks.empty() && marks.back().begin + marks.back().len == base + m.begin) {
      marks.back().len += m.len;
    } else {
      marks.push_back({base + m.begin, m.len});
    }
  }
}

Str Str::substr(size_t begin, size_t end) const {
  end = std::min(end, text.size());
  begin = std::min(begin, end);
  Str out(text.substr(begin, end - begin));
  for (const Span& m : marks) {
    const size_t b = std::max(m.begin, begin), e = std::min(m.begin + m.len, end);
    if (b < e) out.marks.push_back({b - begin, e - b});
  }
  return out;
}

Str Str::derived(std::string t) const {
  return any_marked() ? marked(std::move(t)) : Str(std::move(t));
}

const Value* Args::get(size_t index, const char* name) const {
  for (const auto& [k, v] : kw)
    if (k == name) return &v;
  return index < pos.size() ? &pos[index] : nullptr;
}

Value Value::undefined(std::string name) {
  Value v;
  v.s = Str(std::move(name));
  return v;
}
Value Value::none() {
  Value v;
  v.type = Type::kNone;
  return v;
}
Value Value::boolean(bool x) {
  Value v;
  v.type = Type::kBool;
  v.b = x;
  return v;
}
Value Value::integer(int64_t x) {
  Value v;
  v.type = Type::kInt;
  v.i = x;
  return v;
}
Value Value::real(double x) {
  Value v;
  v.type = Type::kFloat;
  v.f = x;
  return v;
}
Value Value::string(Str x) {
  Value v;
  v.type = Type::kString;
  v.s = std::move(x);
  return v;
}
Value Value::make_list(List x, bool tuple) {
  Value v;
  v.type = Type::kList;
  v.list = std::make_shared<List>(std::move(x));
  v.is_tuple = tuple;
  return v;
}
Value Value::make_dict(Dict x) {
  Value v;
  v.type = Type::kDict;
  v.dict = std::make_shared<Dict>(std::move(x));
  return v;
}
Value Value::function(Function f) {
  Value v;
  v.type = Type::kFunction;
  v.fn = std::make_shared<Function>(std::move(f));
  return v;
}

bool Value::truthy() const {
  switch (type) {
    case Type::kUndefined:
    case Type::kNone:
      return false;
    case Type::kBool:
      return b;
    case Type::kInt:
      return i != 0;
    case Type::kFloat:
      return f != 0;
    case Type::kString:
      return !s.text.empty();
    case Type::kList:
      return !list->empty();
    case Type::kDict:
      return is_namespace || !dict->empty();
    case Type::kFunction:
      return true;
  }
  return false;
}

const Value* Value::find(const std::string& key) const {
  if (type != Type::kDict) return nullptr;
  for (const auto& [k, v] : *dict)
    if (k == key) return &v;
  return nullptr;
}

const char* Value::type_name() const {
  switch (type) {
    case Type::kUndefined:
      return "Undefined";
    case Type::kNone:
      return "NoneType";
    case Type::kBool:
      return "bool";
    case Type::kInt:
      return "int";
    case Type::kFloat:
      return "float";
    case Type::kString:
      return "str";
    case Type::kList:
      return is_tuple ? "tuple" : "list";
    case Type::kDict:
      return is_namespace ? "Namespace" : "dict";
    case Type::kFunction:
      return "function";
  }
  return "?";
}

double Value::as_double() const {
  if (type == Type::kFloat) return f;
  if (type == Type::kBool) return b ? 1 : 0;
  return double(i);
}

std::string float_repr(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[40];
  int prec = 1;
  for (; prec <= 17; ++prec) {
    std::snprintf(buf, sizeof buf, "%.*e", prec - 1, v);
    if (std::strtod(buf, nullptr) == v) break;
  }
  // buf: d.ddde[+-]XX with the shortest digits; Python uses positional notation for exponents
  // in [-4, 16).
  std::string s(buf);
  const size_t e = s.find('e');
  const int exp = std::atoi(s.c_str() + e + 1);
  std::string mant = s.substr(0, e);
  const bool neg = mant[0] == '-';
  if (neg) mant.erase(0, 1);
  std::string digits;
  for (char c : mant)
    if (c != '.') digits += c;
  while (digits.size() > 1 && digits.back() == '0') digits.pop_back();
  std::string out;
  if (exp >= -4 && exp < 16) {
    if (exp < 0) {
      out = "0." + std::string(size_t(-exp - 1), '0') + digits;
    } else if (size_t(exp) + 1 >= digits.size()) {
      out = digits + std::string(size_t(exp) + 1 - digits.size(), '0') + ".0";
    } else {
      out = digits.substr(0, size_t(exp) + 1) + "." + digits.substr(size_t(exp) + 1);
    }
  } else {
    out = digits.substr(0, 1);
    if (digits.size() > 1) out.append(".").append(digits, 1, std::string::npos);
    char eb[16];
    std::snprintf(eb, sizeof eb, "e%c%02d", exp < 0 ? '-' : '+', exp < 0 ? -exp : exp);
    out += eb;
  }
  return neg ? "-" + out : out;
}

Str to_str(const Value& v) {
  switch (v.type) {
    case Value::Type::kUndefined:
      return Str();
    case Value::Type::kNone:
      return Str("None");
    case Value::Type::kBool:
      return Str(v.b ? "True" : "False");
    case Value::Type::kInt:
      return Str(std::to_string(v.i));
    case Value::Type::kFloat:
      return Str(float_repr(v.f));
    case Value::Type::kString:
      return v.s;
    case Value::Type::kFunction:
      return Str("<function>");
    case Value::Type::kList:
    case Value::Type::kDict: {
      std::string out;
      repr_into(out, v, 0);
      bool marked = false;
      std::vector<const Value*> todo = {&v};
      // A container's repr is marked whole when any string inside it is (bounded like repr).
      for (size_t k = 0; k < todo.size() && !marked && k < 100000; ++k) {
        const Value* x = todo[k];
        if (x->is_string()) marked = x->s.any_marked();
        if (x->is_list())
          for (const Value& e : *x->list) todo.push_back(&e);
        if (x->is_dict())
          for (const auto& e : *x->dict) todo.push_back(&e.second);
      }
      return marked ? Str::marked(out) : Str(out);
    }
  }
  return Str();
}

std::string repr(const Value& v) {
  std::string out;
  repr_into(out, v, 0);
  return out;
}

std::string to_json(const Value& v, int indent, const std::string& item_sep,
                    const std::string& key_sep, bool sort_keys) {
  std::string out;
  json_into(out, v, JsonStyle{indent, item_sep, key_sep, sort_keys}, 0);
  return out;
}

bool equals(const Value& a, const Value& b) {
  return equals_at(a, b, 0);
}

int compare(const Value& a, const Value& b) {
  return compare_at(a, b, 0);
}

}  // namespace lockstep::tokenizer::jinja
