// A GGUF metadata value: a scalar, a string, or an array (arrays may nest).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace lockstep::gguf {

enum class ValueType : uint32_t {
  UINT8 = 0,
  INT8 = 1,
  UINT16 = 2,
  INT16 = 3,
  UINT32 = 4,
  INT32 = 5,
  FLOAT32 = 6,
  BOOL = 7,
  STRING = 8,
  ARRAY = 9,
  UINT64 = 10,
  INT64 = 11,
  FLOAT64 = 12,
};

const char* value_type_name(ValueType type);
bool is_valid_value_type(uint32_t raw);

struct Value {
  ValueType type = ValueType::UINT8;
  // Exactly one of these is meaningful, chosen by `type`:
  uint64_t u = 0;                          // UINT8/16/32/64, BOOL (0/1)
  int64_t i = 0;                           // INT8/16/32/64
  double f = 0;                            // FLOAT32/64
  std::string s;                           // STRING
  ValueType elem_type = ValueType::UINT8;  // ARRAY: type of the elements
  std::vector<Value> array;                // ARRAY

  // Constructors for writers and tests.
  static Value of_u32(uint32_t v);
  static Value of_i32(int32_t v);
  static Value of_u64(uint64_t v);
  static Value of_f32(float v);
  static Value of_bool(bool v);
  static Value of_string(std::string v);
  static Value of_array(ValueType elem_type, std::vector<Value> items);
  static Value of_strings(const std::vector<std::string>& v);
  static Value of_f32s(const std::vector<float>& v);
  static Value of_i32s(const std::vector<int32_t>& v);

  bool is_integer() const;
  bool is_float() const { return type == ValueType::FLOAT32 || type == ValueType::FLOAT64; }

  // Typed reads: nullopt when the value is not of a compatible kind (any integer type reads as
  // an integer if it fits; integers and floats read as double).
  std::optional<int64_t> as_int() const;
  std::optional<double> as_double() const;
  std::optional<bool> as_bool() const;
  std::optional<std::string> as_string() const;
  std::optional<std::vector<std::string>> as_strings() const;
  std::optional<std::vector<float>> as_floats() const;
  std::optional<std::vector<int32_t>> as_ints() const;

  std::string to_display(size_t max_items = 8) const;  // short human-readable rendering
};

}  // namespace lockstep::gguf
