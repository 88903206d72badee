// IEEE binary16 and bfloat16 conversions (portable, exact; round-to-nearest-even on the way in).
#pragma once

#include <cstdint>
#include <cstring>

namespace lockstep {

inline float fp32_from_bits(uint32_t w) {
  float f;
  std::memcpy(&f, &w, 4);
  return f;
}
inline uint32_t fp32_to_bits(float f) {
  uint32_t w;
  std::memcpy(&w, &f, 4);
  return w;
}

float fp16_to_fp32(uint16_t h);
uint16_t fp32_to_fp16(float f);

inline float bf16_to_fp32(uint16_t h) {
  return fp32_from_bits(uint32_t(h) << 16);
}
// Round to nearest even; NaN stays a (quiet) NaN, as ggml does.
inline uint16_t fp32_to_bf16(float f) {
  uint32_t u = fp32_to_bits(f);
  if ((u & 0x7fffffff) > 0x7f800000) return uint16_t((u >> 16) | 64);
  return uint16_t((u + (0x7fff + ((u >> 16) & 1))) >> 16);
}

}  // namespace lockstep
