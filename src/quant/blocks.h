// Internal: ggml's block layouts (ggml-common.h) as C++ structs, for the quant kernels only.
// A GGUF row of a block type is an array of these with no padding. `half` fields hold IEEE
// binary16 bits; the host is assumed little-endian (x86-64, aarch64).
#pragma once

#include <cstdint>

namespace lockstep::quant {

inline constexpr int kQK = 32;    // elements per block of the *_0/*_1 types
inline constexpr int kQKK = 256;  // elements per super-block of the K types

struct BlockQ4_0 {
  uint16_t d;
  uint8_t qs[16];  // element j: low nibble of qs[j]; element j+16: high nibble
};
struct BlockQ4_1 {
  uint16_t d, m;
  uint8_t qs[16];
};
struct BlockQ5_0 {
  uint16_t d;
  uint8_t qh[4];  // bit j of the little-endian u32 = bit 4 of element j
  uint8_t qs[16];
};
struct BlockQ5_1 {
  uint16_t d, m;
  uint8_t qh[4];
  uint8_t qs[16];
};
struct BlockQ8_0 {
  uint16_t d;
  int8_t qs[32];
};
struct BlockQ2_K {
  uint8_t scales[16];  // low nibble scale, high nibble min, per 16 elements
  uint8_t qs[64];
  uint16_t d, dmin;
};
struct BlockQ3_K {
  uint8_t hmask[32];
  uint8_t qs[64];
  uint8_t scales[12];  // 16 6-bit scales
  uint16_t d;
};
struct BlockQ4_K {
  uint16_t d, dmin;
  uint8_t scales[12];  // 8 6-bit scales and 8 6-bit mins
  uint8_t qs[128];
};
struct BlockQ5_K {
  uint16_t d, dmin;
  uint8_t scales[12];
  uint8_t qh[32];
  uint8_t qs[128];
};
struct BlockQ6_K {
  uint8_t ql[128];
  uint8_t qh[64];
  int8_t scales[16];
  uint16_t d;
};
// The activation format of the K-type dot products (ggml's block_q8_K).
struct BlockQ8_K {
  float d;
  int8_t qs[256];
  int16_t bsums[16];  // sum of qs over each group of 16
};

static_assert(sizeof(BlockQ4_0) == 18 && sizeof(BlockQ4_1) == 20 && sizeof(BlockQ5_0) == 22 &&
              sizeof(BlockQ5_1) == 24 && sizeof(BlockQ8_0) == 34);
static_assert(sizeof(BlockQ2_K) == 84 && sizeof(BlockQ3_K) == 110 && sizeof(BlockQ4_K) == 144 &&
              sizeof(BlockQ5_K) == 176 && sizeof(BlockQ6_K) == 210 && sizeof(BlockQ8_K) == 292);

// Scale and min j (0..7) of a Q4_K/Q5_K block's 12 packed scale bytes.
inline void k4_scale_min(int j, const uint8_t* q, uint8_t* sc, uint8_t* m) {
  if (j < 4) {
    *sc = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
    *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

// The 16 signed 6-bit scales of a Q3_K block (already minus 32).
inline void q3k_scales(const uint8_t* packed, int8_t out[16]) {
  for (int j = 0; j < 16; ++j) {
    int low = j < 8 ? (packed[j] & 0xF) : (packed[j - 8] >> 4);
    int high = (packed[8 + j % 4] >> (2 * (j / 4))) & 3;
    out[j] = int8_t((low | (high << 4)) - 32);
  }
}

// Row helpers shared by quantize.cpp and quantize_k.cpp (nb = number of blocks).
void dequantize_q2_k(const void* src, float* dst, int64_t nb);
void dequantize_q3_k(const void* src, float* dst, int64_t nb);
void dequantize_q4_k(const void* src, float* dst, int64_t nb);
void dequantize_q5_k(const void* src, float* dst, int64_t nb);
void dequantize_q6_k(const void* src, float* dst, int64_t nb);
void dequantize_q8_k(const void* src, float* dst, int64_t nb);
void quantize_q4_k(const float* src, void* dst, int64_t nb);
void quantize_q5_k(const float* src, void* dst, int64_t nb);
void quantize_q6_k(const float* src, void* dst, int64_t nb);
void quantize_q8_k(const float* src, void* dst, int64_t nb);

// ggml's nearest_int: round to nearest, ties to even, for |f| < 2^22.
inline int nearest_int(float f) {
  float v = f + 12582912.f;
  uint32_t i;
  __builtin_memcpy(&i, &v, 4);
  return int(i & 0x007fffff) - 0x00400000;
}

}  // namespace lockstep::quant
