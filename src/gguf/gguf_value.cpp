#include "gguf/gguf_value.h"

#include <sstream>

namespace lockstep::gguf {

const char* value_type_name(ValueType type) {
  switch (type) {
    case ValueType::UINT8:
      return "u8";
    case ValueType::INT8:
      return "i8";
    case ValueType::UINT16:
      return "u16";
    case ValueType::INT16:
      return "i16";
    case ValueType::UINT32:
      return "u32";
    case ValueType::INT32:
      return "i32";
    case ValueType::FLOAT32:
      return "f32";
    case ValueType::BOOL:
      return "bool";
    case ValueType::STRING:
      return "string";
    case ValueType::ARRAY:
      return "array";
    case ValueType::UINT64:
      return "u64";
    case ValueType::INT64:
      return "i64";
    case ValueType::FLOAT64:
      return "f64";
  }
  return "unknown";
}

bool is_valid_value_type(uint32_t raw) {
  return raw <= uint32_t(ValueType::FLOAT64);
}

Value Value::of_u32(uint32_t v) {
  Value x;
  x.type = ValueType::UINT32;
  x.u = v;
  return x;
}
Value Value::of_i32(int32_t v) {
  Value x;
  x.type = ValueType::INT32;
  x.i = v;
  return x;
}
Value Value::of_u64(uint64_t v) {
  Value x;
  x.type = ValueType::UINT64;
  x.u = v;
  return x;
}
Value Value::of_f32(float v) {
  Value x;
  x.type = ValueType::FLOAT32;
  x.f = v;
  return x;
}
Value Value::of_bool(bool v) {
  Value x;
  x.type = ValueType::BOOL;
  x.u = v ? 1 : 0;
  return x;
}
Value Value::of_string(std::string v) {
  Value x;
  x.type = ValueType::STRING;
  x.s = std::move(v);
  return x;
}
Value Value::of_array(ValueType elem_type, std::vector<Value> items) {
  Value x;
  x.type = ValueType::ARRAY;
  x.elem_type = elem_type;
  x.array = std::move(items);
  return x;
}
Value Value::of_strings(const std::vector<std::string>& v) {
  std::vector<Value> items;
  items.reserve(v.size());
  for (const auto& s : v) items.push_back(of_string(s));
  return of_array(ValueType::STRING, std::move(items));
}
Value Value::of_f32s(const std::vector<float>& v) {
  std::vector<Value> items;
  items.reserve(v.size());
  for (float f : v) items.push_back(of_f32(f));
  return of_array(ValueType::FLOAT32, std::move(items));
}
Value Value::of_i32s(const std::vector<int32_t>& v) {
  std::vector<Value> items;
  items.reserve(v.size());
  for (int32_t i : v) items.push_back(of_i32(i));
  return of_array(ValueType::INT32, std::move(items));
}

bool Value::is_integer() const {
  switch (type) {
    case ValueType::UINT8:
    case ValueType::INT8:
    case ValueType::UINT16:
    case ValueType::INT16:
    case ValueType::UINT32:
    case ValueType::INT32:
    case ValueType::UINT64:
    case ValueType::INT64:
      return true;
    default:
      return false;
  }
}

static bool is_unsigned(ValueType t) {
  return t == ValueType::UINT8 || t == ValueType::UINT16 || t == ValueType::UINT32 ||
         t == ValueType::UINT64;
}

std::optional<int64_t> Value::as_int() const {
  if (!is_integer()) return std::nullopt;
  if (is_unsigned(type)) {
    if (u > uint64_t(INT64_MAX)) return std::nullopt;
    return int64_t(u);
  }
  return i;
}

std::optional<double> Value::as_double() const {
  if (is_float()) return f;
  if (is_integer()) return is_unsigned(type) ? double(u) : double(i);
  return std::nullopt;
}

std::optional<bool> Value::as_bool() const {
  if (type == ValueType::BOOL) return u != 0;
  return std::nullopt;
}

std::optional<std::string> Value::as_string() const {
  if (type == ValueType::STRING) return s;
  return std::nullopt;
}

std::optional<std::vector<std::string>> Value::as_strings() const {
  if (type != ValueType::ARRAY || elem_type != ValueType::STRING) return std::nullopt;
  std::vector<std::string> out;
  out.reserve(array.size());
  for (const auto& v : array) out.push_back(v.s);
  return out;
}

std::optional<std::vector<float>> Value::as_floats() const {
  if (type != ValueType::ARRAY) return std::nullopt;
  std::vector<float> out;
  out.reserve(array.size());
  for (const auto& v : array) {
    auto d = v.as_double();
    if (!d) return std::nullopt;
    out.push_back(float(*d));
  }
  return out;
}

std::optional<std::vector<int32_t>> Value::as_ints() const {
  if (type != ValueType::ARRAY) return std::nullopt;
  std::vector<int32_t> out;
  out.reserve(array.size());
  for (const auto& v : array) {
    auto d = v.as_int();
    if (!d || *d < INT32_MIN || *d > INT32_MAX) return std::nullopt;
    out.push_back(int32_t(*d));
  }
  return out;
}

std::string Value::to_display(size_t max_items) const {
  std::ostringstream os;
  switch (type) {
    case ValueType::STRING: {
      std::string t = s.size() > 80 ? s.substr(0, 77) + "..." : s;
      for (char& c : t)
        if (c == '\n') c = ' ';
      os << '"' << t << '"';
      break;
    }
    case ValueType::BOOL:
      os << (u ? "true" : "false");
      break;
    case ValueType::FLOAT32:
    case ValueType::FLOAT64:
      os << f;
      break;
    case ValueType::ARRAY: {
      os << value_type_name(elem_type) << "[" << array.size() << "] [";
      for (size_t k = 0; k < array.size() && k < max_items; ++k)
        os << (k ? ", " : "") << array[k].to_display(max_items);
      if (array.size() > max_items) os << ", ...";
      os << "]";
      break;
    }
    default:
      if (is_unsigned(type))
        os << u;
      else
        os << i;
  }
  return os.str();
}

}  // namespace lockstep::gguf
