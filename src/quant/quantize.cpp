// dequantize_row / quantize_row: dispatch, plain types and the 32-element block types.
// The arithmetic follows ggml's reference code (ggml-quants.c) operation for operation, so the
// results are bit-identical to llama.cpp's. Built without FMA so no multiply-add is fused.
#include "quant/quantize.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <string>

#include "quant/blocks.h"
#include "quant/dequantize_simd.h"
#include "quant/fp16.h"
#include "util/error.h"

namespace lockstep {

namespace {

using namespace quant;

template <class Block>
const Block* blocks(const void* p) {
  return static_cast<const Block*>(p);
}
template <class Block>
Block* blocks(void* p) {
  return static_cast<Block*>(p);
}

// ---- dequantize -------------------------------------------------------------------------------

void dequantize_q4_0(const void* src, float* y, int64_t nb) {
  const auto* x = blocks<BlockQ4_0>(src);
  for (int64_t i = 0; i < nb; ++i, y += kQK) {
    const float d = fp16_to_fp32(x[i].d);
    for (int j = 0; j < 16; ++j) {
      const int x0 = (x[i].qs[j] & 0x0F) - 8;
      const int x1 = (x[i].qs[j] >> 4) - 8;
      y[j] = x0 * d;
      y[j + 16] = x1 * d;
    }
  }
}

void dequantize_q4_1(const void* src, float* y, int64_t nb) {
  const auto* x = blocks<BlockQ4_1>(src);
  for (int64_t i = 0; i < nb; ++i, y += kQK) {
    const float d = fp16_to_fp32(x[i].d);
    const float m = fp16_to_fp32(x[i].m);
    for (int j = 0; j < 16; ++j) {
      y[j] = (x[i].qs[j] & 0x0F) * d + m;
      y[j + 16] = (x[i].qs[j] >> 4) * d + m;
    }
  }
}

void dequantize_q5_0(const void* src, float* y, int64_t nb) {
  const auto* x = blocks<BlockQ5_0>(src);
  for (int64_t i = 0; i < nb; ++i, y += kQK) {
    const float d = fp16_to_fp32(x[i].d);
    uint32_t qh;
    std::memcpy(&qh, x[i].qh, 4);
    for (int j = 0; j < 16; ++j) {
      const int h0 = ((qh >> j) << 4) & 0x10;
      const int h1 = (qh >> (j + 12)) & 0x10;
      y[j] = (((x[i].qs[j] & 0x0F) | h0) - 16) * d;
      y[j + 16] = (((x[i].qs[j] >> 4) | h1) - 16) * d;
    }
  }
}

void dequantize_q5_1(const void* src, float* y, int64_t nb) {
  const auto* x = blocks<BlockQ5_1>(src);
  for (int64_t i = 0; i < nb; ++i, y += kQK) {
    const float d = fp16_to_fp32(x[i].d);
    const float m = fp16_to_fp32(x[i].m);
    uint32_t qh;
    std::memcpy(&qh, x[i].qh, 4);
    for (int j = 0; j < 16; ++j) {
      const int h0 = ((qh >> j) << 4) & 0x10;
      const int h1 = (qh >> (j + 12)) & 0x10;
      y[j] = ((x[i].qs[j] & 0x0F) | h0) * d + m;
      y[j + 16] = ((x[i].qs[j] >> 4) | h1) * d + m;
    }
  }
}

void dequantize_q8_0(const void* src, float* y, int64_t nb) {
  const auto* x = blocks<BlockQ8_0>(src);
  for (int64_t i = 0; i < nb; ++i, y += kQK) {
    const float d = fp16_to_fp32(x[i].d);
    for (int j = 0; j < kQK; ++j) y[j] = x[i].qs[j] * d;
  }
}

// ---- quantize (ggml's quantize_row_*_ref) -----------------------------------------------------

// Largest-magnitude element of a block, with its sign (the first one on ties).
float signed_absmax(const float* x, int n) {
  float amax = 0, max = 0;
  for (int j = 0; j < n; ++j) {
    if (amax < std::fabs(x[j])) {
      amax = std::fabs(x[j]);
      max = x[j];
    }
  }
  return max;
}

void min_max(const float* x, int n, float* mn, float* mx) {
  float lo = FLT_MAX, hi = -FLT_MAX;
  for (int j = 0; j < n; ++j) {
    if (x[j] < lo) lo = x[j];
    if (x[j] > hi) hi = x[j];
  }
  *mn = lo;
  *mx = hi;
}

void quantize_q4_0(const float* x, void* dst, int64_t nb) {
  auto* y = blocks<BlockQ4_0>(dst);
  for (int64_t i = 0; i < nb; ++i, x += kQK) {
    const float d = signed_absmax(x, kQK) / -8;
    const float id = d ? 1.0f / d : 0.0f;
    y[i].d = fp32_to_fp16(d);
    for (int j = 0; j < 16; ++j) {
      const int q0 = std::min(15, int(x[j] * id + 8.5f));
      const int q1 = std::min(15, int(x[j + 16] * id + 8.5f));
      y[i].qs[j] = uint8_t(q0 | (q1 << 4));
    }
  }
}

void quantize_q4_1(const float* x, void* dst, int64_t nb) {
  auto* y = blocks<BlockQ4_1>(dst);
  for (int64_t i = 0; i < nb; ++i, x += kQK) {
    float mn, mx;
    min_max(x, kQK, &mn, &mx);
    const float d = (mx - mn) / 15;
    const float id = d ? 1.0f / d : 0.0f;
    y[i].d = fp32_to_fp16(d);
    y[i].m = fp32_to_fp16(mn);
    for (int j = 0; j < 16; ++j) {
      const int q0 = std::min(15, int((x[j] - mn) * id + 0.5f));
      const int q1 = std::min(15, int((x[j + 16] - mn) * id + 0.5f));
      y[i].qs[j] = uint8_t(q0 | (q1 << 4));
    }
  }
}

void quantize_q5_0(const float* x, void* dst, int64_t nb) {
  auto* y = blocks<BlockQ5_0>(dst);
  for (int64_t i = 0; i < nb; ++i, x += kQK) {
    const float d = signed_absmax(x, kQK) / -16;
    const float id = d ? 1.0f / d : 0.0f;
    y[i].d = fp32_to_fp16(d);
    uint32_t qh = 0;
    for (int j = 0; j < 16; ++j) {
      const uint32_t q0 = uint32_t(std::min(31, int(x[j] * id + 16.5f)));
      const uint32_t q1 = uint32_t(std::min(31, int(x[j + 16] * id + 16.5f)));
      y[i].qs[j] = uint8_t((q0 & 0x0F) | ((q1 & 0x0F) << 4));
      qh |= ((q0 & 0x10u) >> 4) << j;
      qh |= ((q1 & 0x10u) >> 4) << (j + 16);
    }
    std::memcpy(y[i].qh, &qh, 4);
  }
}

void quantize_q5_1(const float* x, void* dst, int64_t nb) {
  auto* y = blocks<BlockQ5_1>(dst);
  for (int64_t i = 0; i < nb; ++i, x += kQK) {
    float mn, mx;
    min_max(x, kQK, &mn, &mx);
    const float d = (mx - mn) / 31;
    const float id = d ? 1.0f / d : 0.0f;
    y[i].d = fp32_to_fp16(d);
    y[i].m = fp32_to_fp16(mn);
    uint32_t qh = 0;
    for (int j = 0; j < 16; ++j) {
      const uint32_t q0 = uint32_t(uint8_t((x[j] - mn) * id + 0.5f));
      const uint32_t q1 = uint32_t(uint8_t((x[j + 16] - mn) * id + 0.5f));
      y[i].qs[j] = uint8_t((q0 & 0x0F) | ((q1 & 0x0F) << 4));
      qh |= ((q0 & 0x10u) >> 4) << j;
      qh |= ((q1 & 0x10u) >> 4) << (j + 16);
    }
    std::memcpy(y[i].qh, &qh, 4);
  }
}

void quantize_q8_0(const float* x, void* dst, int64_t nb) {
  auto* y = blocks<BlockQ8_0>(dst);
  for (int64_t i = 0; i < nb; ++i, x += kQK) {
    float amax = 0;
    for (int j = 0; j < kQK; ++j) amax = std::max(amax, std::fabs(x[j]));
    const float d = amax / 127;
    const float id = d ? 1.0f / d : 0.0f;
    y[i].d = fp32_to_fp16(d);
    for (int j = 0; j < kQK; ++j) y[i].qs[j] = int8_t(std::round(x[j] * id));
  }
}

[[noreturn]] void unsupported(TensorType type, const char* what) {
  throw InputError(std::string("cannot ") + what + " tensor type " +
                   tensor_type_name(uint32_t(type)));
}

int64_t block_count(TensorType type, int64_t n, const char* what) {
  const auto& info = tensor_type_info(type);
  if (n < 0 || info.block_elems <= 0 || n % info.block_elems != 0)
    throw InputError(std::string("cannot ") + what + " a row of " + std::to_string(n) +
                     " elements of type " + tensor_type_name(uint32_t(type)) +
                     ": not a multiple of its block size " + std::to_string(info.block_elems));
  return n / info.block_elems;
}

}  // namespace

void dequantize_row(TensorType type, const void* src, float* dst, int64_t n) {
  if (!tensor_type_info(type).can_dequantize) unsupported(type, "dequantize");
  const int64_t nb = block_count(type, n, "dequantize");
  // SIMD kernels (bit-identical to the code below) for the ISA vec_dot uses; see
  // dequantize_simd.h.
  if (const quant::DequantFn simd = quant::simd_dequantizer(active_isa(), type))
    return simd(src, dst, nb);
  switch (type) {
    case TensorType::F32:
      std::memcpy(dst, src, size_t(n) * 4);
      return;
    case TensorType::F16: {
      const auto* h = static_cast<const uint8_t*>(src);
      for (int64_t i = 0; i < n; ++i) {
        uint16_t v;
        std::memcpy(&v, h + 2 * i, 2);
        dst[i] = fp16_to_fp32(v);
      }
      return;
    }
    case TensorType::BF16: {
      const auto* h = static_cast<const uint8_t*>(src);
      for (int64_t i = 0; i < n; ++i) {
        uint16_t v;
        std::memcpy(&v, h + 2 * i, 2);
        dst[i] = bf16_to_fp32(v);
      }
      return;
    }
    case TensorType::Q4_0:
      return dequantize_q4_0(src, dst, nb);
    case TensorType::Q4_1:
      return dequantize_q4_1(src, dst, nb);
    case TensorType::Q5_0:
      return dequantize_q5_0(src, dst, nb);
    case TensorType::Q5_1:
      return dequantize_q5_1(src, dst, nb);
    case TensorType::Q8_0:
      return dequantize_q8_0(src, dst, nb);
    case TensorType::Q2_K:
      return dequantize_q2_k(src, dst, nb);
    case TensorType::Q3_K:
      return dequantize_q3_k(src, dst, nb);
    case TensorType::Q4_K:
      return dequantize_q4_k(src, dst, nb);
    case TensorType::Q5_K:
      return dequantize_q5_k(src, dst, nb);
    case TensorType::Q6_K:
      return dequantize_q6_k(src, dst, nb);
    case TensorType::Q8_K:
      return dequantize_q8_k(src, dst, nb);
    default:
      unsupported(type, "dequantize");
  }
}

void quantize_row(TensorType type, const float* src, void* dst, int64_t n) {
  if (!tensor_type_info(type).can_quantize) unsupported(type, "quantize to");
  const int64_t nb = block_count(type, n, "quantize");
  switch (type) {
    case TensorType::F32:
      std::memcpy(dst, src, size_t(n) * 4);
      return;
    case TensorType::F16: {
      auto* h = static_cast<uint8_t*>(dst);
      for (int64_t i = 0; i < n; ++i) {
        const uint16_t v = fp32_to_fp16(src[i]);
        std::memcpy(h + 2 * i, &v, 2);
      }
      return;
    }
    case TensorType::BF16: {
      auto* h = static_cast<uint8_t*>(dst);
      for (int64_t i = 0; i < n; ++i) {
        const uint16_t v = fp32_to_bf16(src[i]);
        std::memcpy(h + 2 * i, &v, 2);
      }
      return;
    }
    case TensorType::Q4_0:
      return quantize_q4_0(src, dst, nb);
    case TensorType::Q4_1:
      return quantize_q4_1(src, dst, nb);
    case TensorType::Q5_0:
      return quantize_q5_0(src, dst, nb);
    case TensorType::Q5_1:
      return quantize_q5_1(src, dst, nb);
    case TensorType::Q8_0:
      return quantize_q8_0(src, dst, nb);
    case TensorType::Q4_K:
      return quantize_q4_k(src, dst, nb);
    case TensorType::Q5_K:
      return quantize_q5_k(src, dst, nb);
    case TensorType::Q6_K:
      return quantize_q6_k(src, dst, nb);
    case TensorType::Q8_K:
      return quantize_q8_k(src, dst, nb);
    default:
      unsupported(type, "quantize to");
  }
}

}  // namespace lockstep
