// ggml tensor types as stored in GGUF files: ids, block sizes and names.
// The ids and block layouts are those of ggml (ggml.h / ggml-common.h), so files written by
// llama.cpp load here and ours load there.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

namespace lockstep {

enum class TensorType : uint32_t {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q4_1 = 3,
  Q5_0 = 6,
  Q5_1 = 7,
  Q8_0 = 8,
  Q8_1 = 9,
  Q2_K = 10,
  Q3_K = 11,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
  Q8_K = 15,
  I8 = 24,
  I16 = 25,
  I32 = 26,
  I64 = 27,
  F64 = 28,
  BF16 = 30,
};

struct TensorTypeInfo {
  TensorType type;
  const char* name;     // as ggml spells it: "Q4_K", "F16", ...
  int64_t block_elems;  // elements per block (1 for plain types)
  int64_t block_bytes;  // bytes per block
  bool can_dequantize;  // lockstep can turn it into floats
  bool can_quantize;    // lockstep can write it
};

// Info for a raw type id read from a file; nullopt when the id is not a ggml type we know.
std::optional<TensorTypeInfo> tensor_type_info(uint32_t raw_type);
const TensorTypeInfo& tensor_type_info(TensorType type);
std::string tensor_type_name(uint32_t raw_type);  // "Q4_K", or "unknown(123)"
std::optional<TensorType> tensor_type_from_name(const std::string& name);  // case-insensitive

// Bytes of a row of n elements; nullopt when n is not a multiple of the block size.
std::optional<uint64_t> row_bytes(TensorType type, int64_t n);

}  // namespace lockstep
