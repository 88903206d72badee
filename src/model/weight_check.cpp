#include "model/weight_check.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <initializer_list>

#include "quant/blocks.h"
#include "quant/fp16.h"

namespace lockstep {

namespace {

// Exponent all ones: an infinity or a NaN, in each format's bit layout.
bool f32_bad(uint32_t bits) {
  return (bits & 0x7f800000u) == 0x7f800000u;
}
bool f16_bad(uint16_t bits) {
  return (bits & 0x7c00u) == 0x7c00u;
}
bool bf16_bad(uint16_t bits) {
  return (bits & 0x7f80u) == 0x7f80u;
}

const char* kind(float v) {
  return std::isnan(v) ? "nan" : v > 0 ? "inf" : "-inf";
}

// Chunks are tested without an early exit (the loop vectorises); only a chunk that holds a bad
// value is walked again to name it.
template <typename Bits, typename Bad, typename Value>
std::optional<std::string> scan_plain(const uint8_t* data, uint64_t n, Bad bad, Value value) {
  constexpr uint64_t kChunk = 4096;
  for (uint64_t begin = 0; begin < n; begin += kChunk) {
    const uint64_t end = std::min(n, begin + kChunk);
    bool any = false;
    for (uint64_t k = begin; k < end; ++k) {
      Bits b;
      std::memcpy(&b, data + k * sizeof(Bits), sizeof(Bits));
      any |= bad(b);
    }
    if (!any) continue;
    for (uint64_t k = begin; k < end; ++k) {
      Bits b;
      std::memcpy(&b, data + k * sizeof(Bits), sizeof(Bits));
      if (bad(b)) return "element " + std::to_string(k) + " is " + kind(value(b));
    }
  }
  return std::nullopt;
}

// Blocks of `block_bytes` whose f16 scales lie at the given byte offsets.
std::optional<std::string> scan_f16_scales(const uint8_t* data, uint64_t n_blocks,
                                           size_t block_bytes,
                                           std::initializer_list<size_t> offsets) {
  for (uint64_t b = 0; b < n_blocks; ++b) {
    const uint8_t* block = data + b * block_bytes;
    for (size_t off : offsets) {
      uint16_t h;
      std::memcpy(&h, block + off, 2);
      if (f16_bad(h))
        return "block " + std::to_string(b) + " has a non-finite scale (" + kind(fp16_to_fp32(h)) +
               ")";
    }
  }
  return std::nullopt;
}

}  // namespace

std::optional<std::string> find_non_finite(const gguf::TensorInfo& t) {
  using namespace quant;
  const uint8_t* d = t.data;
  const uint64_t n = t.n_elements;
  if (d == nullptr) return std::nullopt;
  switch (t.type) {
    case TensorType::F32:
      return scan_plain<uint32_t>(d, n, f32_bad, fp32_from_bits);
    case TensorType::F16:
      return scan_plain<uint16_t>(d, n, f16_bad, fp16_to_fp32);
    case TensorType::BF16:
      return scan_plain<uint16_t>(d, n, bf16_bad, bf16_to_fp32);
    case TensorType::Q4_0:
      return scan_f16_scales(d, n / kQK, sizeof(BlockQ4_0), {offsetof(BlockQ4_0, d)});
    case TensorType::Q4_1:
      return scan_f16_scales(d, n / kQK, sizeof(BlockQ4_1),
                             {offsetof(BlockQ4_1, d), offsetof(BlockQ4_1, m)});
    case TensorType::Q5_0:
      return scan_f16_scales(d, n / kQK, sizeof(BlockQ5_0), {offsetof(BlockQ5_0, d)});
    case TensorType::Q5_1:
      return scan_f16_scales(d, n / kQK, sizeof(BlockQ5_1),
                             {offsetof(BlockQ5_1, d), offsetof(BlockQ5_1, m)});
    case TensorType::Q8_0:
      return scan_f16_scales(d, n / kQK, sizeof(BlockQ8_0), {offsetof(BlockQ8_0, d)});
    case TensorType::Q2_K:
      return scan_f16_scales(d, n / kQKK, sizeof(BlockQ2_K),
                             {offsetof(BlockQ2_K, d), offsetof(BlockQ2_K, dmin)});
    case TensorType::Q3_K:
      return scan_f16_scales(d, n / kQKK, sizeof(BlockQ3_K), {offsetof(BlockQ3_K, d)});
    case TensorType::Q4_K:
      return scan_f16_scales(d, n / kQKK, sizeof(BlockQ4_K),
                             {offsetof(BlockQ4_K, d), offsetof(BlockQ4_K, dmin)});
    case TensorType::Q5_K:
      return scan_f16_scales(d, n / kQKK, sizeof(BlockQ5_K),
                             {offsetof(BlockQ5_K, d), offsetof(BlockQ5_K, dmin)});
    case TensorType::Q6_K:
      return scan_f16_scales(d, n / kQKK, sizeof(BlockQ6_K), {offsetof(BlockQ6_K, d)});
    case TensorType::Q8_K:
      for (uint64_t b = 0; b < n / kQKK; ++b) {
        uint32_t bits;
        std::memcpy(&bits, d + b * sizeof(BlockQ8_K) + offsetof(BlockQ8_K, d), 4);
        if (f32_bad(bits))
          return "block " + std::to_string(b) + " has a non-finite scale (" +
                 kind(fp32_from_bits(bits)) + ")";
      }
      return std::nullopt;
    default:
      return std::nullopt;  // not a type lockstep computes with; binding refuses it
  }
}

}  // namespace lockstep
