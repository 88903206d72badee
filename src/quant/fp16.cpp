#include "quant/fp16.h"

namespace lockstep {

float fp16_to_fp32(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000) << 16;
  const uint32_t exp = (h >> 10) & 0x1f;
  const uint32_t mant = h & 0x3ff;
  if (exp == 0) {
    // Zero or subnormal: mant * 2^-24, exact in float.
    float v = float(mant) * 0x1p-24f;
    return sign ? -v : v;
  }
  if (exp == 31) return fp32_from_bits(sign | 0x7f800000u | (mant << 13));  // inf / NaN
  return fp32_from_bits(sign | ((exp + 112) << 23) | (mant << 13));
}

// Round to nearest, ties to even. Overflow gives +-inf; NaN gives sign | 0x7e00 (as ggml's
// portable converter does).
uint16_t fp32_to_fp16(float f) {
  const uint32_t u = fp32_to_bits(f);
  const uint16_t sign = uint16_t((u >> 16) & 0x8000);
  const uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return sign | 0x7e00;
  if (a >= 0x477ff000u) return sign | 0x7c00;  // >= 65520 rounds to inf
  uint32_t q, rem, halfway;
  if (a < 0x38800000u) {  // below 2^-14: subnormal half (or zero)
    const uint32_t e = a >> 23;
    if (e < 102) return sign;  // < 2^-25: rounds to zero (2^-25 itself is a tie to 0)
    const uint32_t m = (a & 0x7fffffu) | 0x800000u;
    const uint32_t s = 126 - e;  // value = m * 2^-s in units of 2^-24; 14 <= s <= 24
    q = m >> s;
    rem = m & ((1u << s) - 1);
    halfway = 1u << (s - 1);
  } else {
    q = ((a >> 23) - 112) << 10 | ((a >> 13) & 0x3ff);
    rem = a & 0x1fff;
    halfway = 0x1000;
  }
  if (rem > halfway || (rem == halfway && (q & 1))) ++q;  // a carry moves into the exponent
  return sign | uint16_t(q);
}

}  // namespace lockstep
