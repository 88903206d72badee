#include "quant/tensor_type.h"

#include <algorithm>
#include <array>
#include <cctype>

namespace lockstep {

namespace {

// Every type id ggml defines (ggml.h), so the reader can size any tensor in a real file and name
// the type in an error. Which ones lockstep can convert is in the last two columns.
constexpr TensorTypeInfo kTypes[] = {
    {TensorType::F32, "F32", 1, 4, true, true},
    {TensorType::F16, "F16", 1, 2, true, true},
    {TensorType::Q4_0, "Q4_0", 32, 18, true, true},
    {TensorType::Q4_1, "Q4_1", 32, 20, true, true},
    {TensorType::Q5_0, "Q5_0", 32, 22, true, true},
    {TensorType::Q5_1, "Q5_1", 32, 24, true, true},
    {TensorType::Q8_0, "Q8_0", 32, 34, true, true},
    {TensorType::Q8_1, "Q8_1", 32, 36, false, false},
    {TensorType::Q2_K, "Q2_K", 256, 84, true, false},
    {TensorType::Q3_K, "Q3_K", 256, 110, true, false},
    {TensorType::Q4_K, "Q4_K", 256, 144, true, true},
    {TensorType::Q5_K, "Q5_K", 256, 176, true, true},
    {TensorType::Q6_K, "Q6_K", 256, 210, true, true},
    {TensorType::Q8_K, "Q8_K", 256, 292, true, true},
    {TensorType(16), "IQ2_XXS", 256, 66, false, false},
    {TensorType(17), "IQ2_XS", 256, 74, false, false},
    {TensorType(18), "IQ3_XXS", 256, 98, false, false},
    {TensorType(19), "IQ1_S", 256, 50, false, false},
    {TensorType(20), "IQ4_NL", 32, 18, false, false},
    {TensorType(21), "IQ3_S", 256, 110, false, false},
    {TensorType(22), "IQ2_S", 256, 82, false, false},
    {TensorType(23), "IQ4_XS", 256, 136, false, false},
    {TensorType::I8, "I8", 1, 1, false, false},
    {TensorType::I16, "I16", 1, 2, false, false},
    {TensorType::I32, "I32", 1, 4, false, false},
    {TensorType::I64, "I64", 1, 8, false, false},
    {TensorType::F64, "F64", 1, 8, false, false},
    {TensorType(29), "IQ1_M", 256, 56, false, false},
    {TensorType::BF16, "BF16", 1, 2, true, true},
    {TensorType(34), "TQ1_0", 256, 54, false, false},
    {TensorType(35), "TQ2_0", 256, 66, false, false},
    {TensorType(39), "MXFP4", 32, 17, false, false},
};

}  // namespace

std::optional<TensorTypeInfo> tensor_type_info(uint32_t raw_type) {
  for (const auto& t : kTypes)
    if (uint32_t(t.type) == raw_type) return t;
  return std::nullopt;
}

const TensorTypeInfo& tensor_type_info(TensorType type) {
  for (const auto& t : kTypes)
    if (t.type == type) return t;
  static const TensorTypeInfo unknown{type, "unknown", 1, 0, false, false};
  return unknown;
}

std::string tensor_type_name(uint32_t raw_type) {
  auto info = tensor_type_info(raw_type);
  return info ? std::string(info->name) : "unknown(" + std::to_string(raw_type) + ")";
}

std::optional<TensorType> tensor_type_from_name(const std::string& name) {
  std::string up = name;
  std::transform(up.begin(), up.end(), up.begin(), [](unsigned char c) { return std::toupper(c); });
  for (const auto& t : kTypes)
    if (up == t.name) return t.type;
  return std::nullopt;
}

std::optional<uint64_t> row_bytes(TensorType type, int64_t n) {
  const auto& info = tensor_type_info(type);
  if (info.block_bytes == 0 || n < 0 || n % info.block_elems != 0) return std::nullopt;
  return uint64_t(n / info.block_elems) * uint64_t(info.block_bytes);
}

}  // namespace lockstep
