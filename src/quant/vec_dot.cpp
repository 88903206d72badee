// vec_dot.h: activation quantization, run-time ISA dispatch and the portable scalar kernels.
#include "quant/vec_dot.h"

#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

#include "quant/blocks.h"
#include "quant/fp16.h"
#include "quant/quantize.h"
#include "quant/vec_dot_internal.h"
#include "util/error.h"

namespace lockstep {

namespace quant {
namespace {

float f16(uint16_t h) {
  return fp16_to_fp32(h);
}
float load_f(const float* p) {
  float v;
  std::memcpy(&v, p, 4);
  return v;
}

// ---- 32-block weights x two-term Q8_0 activations (int16 A = 254 * q1 + q2) ----

// Levels: `levels(block, L)` writes the 32 integer levels in element order (value = d * L + m).
// kMin: the block has a min m, which multiplies the activation's block sum s. The integer dot is
// exact (at most 32 * 128 * 32385).
template <class Block, bool kMin, class Levels>
float dot32(const void* wv, const void* av, int64_t n, Levels levels) {
  const auto* w = static_cast<const Block*>(wv);
  const int64_t nb = n / kQK;
  const Q8_0Activation a = q8_0_activation(av, nb);
  float acc = 0;
  int L[kQK];
  for (int64_t i = 0; i < nb; ++i) {
    levels(w[i], L);
    int sum = 0;
    for (int j = 0; j < kQK; ++j) sum += L[j] * a.a[kQK * i + j];
    acc += float(sum) * (f16(w[i].d) * a.e[i]);
    if constexpr (kMin) acc += f16(w[i].m) * a.s[i];
  }
  return acc;
}

template <class Block>
void nibble_levels(const Block& b, int* L, int offset) {
  for (int j = 0; j < 16; ++j) {
    L[j] = (b.qs[j] & 0xF) - offset;
    L[j + 16] = (b.qs[j] >> 4) - offset;
  }
}
template <class Block>
void five_bit_levels(const Block& b, int* L, int offset) {
  uint32_t qh;
  std::memcpy(&qh, b.qh, 4);
  for (int j = 0; j < 16; ++j) {
    L[j] = ((b.qs[j] & 0xF) | (((qh >> j) & 1) << 4)) - offset;
    L[j + 16] = ((b.qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4)) - offset;
  }
}

float dot_q4_0(const void* w, const void* a, int64_t n) {
  return dot32<BlockQ4_0, false>(w, a, n,
                                 [](const BlockQ4_0& b, int* L) { nibble_levels(b, L, 8); });
}
float dot_q4_1(const void* w, const void* a, int64_t n) {
  return dot32<BlockQ4_1, true>(w, a, n,
                                [](const BlockQ4_1& b, int* L) { nibble_levels(b, L, 0); });
}
float dot_q5_0(const void* w, const void* a, int64_t n) {
  return dot32<BlockQ5_0, false>(w, a, n,
                                 [](const BlockQ5_0& b, int* L) { five_bit_levels(b, L, 16); });
}
float dot_q5_1(const void* w, const void* a, int64_t n) {
  return dot32<BlockQ5_1, true>(w, a, n,
                                [](const BlockQ5_1& b, int* L) { five_bit_levels(b, L, 0); });
}
float dot_q8_0(const void* w, const void* a, int64_t n) {
  return dot32<BlockQ8_0, false>(w, a, n, [](const BlockQ8_0& b, int* L) {
    for (int j = 0; j < kQK; ++j) L[j] = b.qs[j];
  });
}

// ---- K weights x two-term Q8_K activations: decode the block's levels, then integer dots ----

// sum over 16-element groups g of scale[g] * sum(level * a)
int grouped_dot16(const int8_t* levels, const int8_t* a, const int* scale) {
  int total = 0;
  for (int g = 0; g < 16; ++g) {
    int s = 0;
    for (int l = 0; l < 16; ++l) s += levels[16 * g + l] * a[16 * g + l];
    total += scale[g] * s;
  }
  return total;
}

// Both terms' grouped dots, combined: G1 + G2 / 254 (each alone may exceed float's 24 bits).
float grouped_dot16_terms(const int8_t* levels, const BlockQ8_K& a, const Q8KTerm2& t2,
                          const int* scale) {
  return float(grouped_dot16(levels, a.qs, scale)) +
         float(grouped_dot16(levels, t2.qs, scale)) * kInvTerm2Scale;
}

// sum over 16-element groups g of m[g] * (bsum1[g] + bsum2[g] / 254)
float mins_terms(const int* m, const BlockQ8_K& a, const Q8KTerm2& t2) {
  int s1 = 0, s2 = 0;
  for (int g = 0; g < 16; ++g) {
    s1 += m[g] * a.bsums[g];
    s2 += m[g] * t2.bsums[g];
  }
  return float(s1) + float(s2) * kInvTerm2Scale;
}

float dot_q2_k(const void* wv, const void* av, int64_t n) {
  const auto* w = static_cast<const BlockQ2_K*>(wv);
  const auto* a = static_cast<const BlockQ8_K*>(av);
  const Q8KTerm2* t2 = q8_k_term2(av, n / kQKK);
  float acc = 0;
  int8_t L[kQKK];
  int sc[16], mn[16];
  for (int64_t i = 0; i < n / kQKK; ++i) {
    for (int e = 0; e < kQKK; ++e) {
      const int half = e / 128, s = (e % 128) / 32, l = e % 32;
      L[e] = int8_t((w[i].qs[32 * half + l] >> (2 * s)) & 3);
    }
    for (int g = 0; g < 16; ++g) {
      sc[g] = w[i].scales[g] & 0xF;
      mn[g] = w[i].scales[g] >> 4;
    }
    const float da = load_f(&a[i].d);
    acc += (f16(w[i].d) * da) * grouped_dot16_terms(L, a[i], t2[i], sc) -
           (f16(w[i].dmin) * da) * mins_terms(mn, a[i], t2[i]);
  }
  return acc;
}

float dot_q3_k(const void* wv, const void* av, int64_t n) {
  const auto* w = static_cast<const BlockQ3_K*>(wv);
  const auto* a = static_cast<const BlockQ8_K*>(av);
  const Q8KTerm2* t2 = q8_k_term2(av, n / kQKK);
  float acc = 0;
  int8_t L[kQKK], s8[16];
  int sc[16];
  for (int64_t i = 0; i < n / kQKK; ++i) {
    for (int e = 0; e < kQKK; ++e) {
      const int half = e / 128, s = (e % 128) / 32, l = e % 32;
      const int low = (w[i].qs[32 * half + l] >> (2 * s)) & 3;
      const bool high = w[i].hmask[l] & (1 << (4 * half + s));
      L[e] = int8_t(low - (high ? 0 : 4));
    }
    q3k_scales(w[i].scales, s8);
    for (int g = 0; g < 16; ++g) sc[g] = s8[g];
    acc += (f16(w[i].d) * load_f(&a[i].d)) * grouped_dot16_terms(L, a[i], t2[i], sc);
  }
  return acc;
}

template <bool kFive, class Block>
float dot_q45_k(const void* wv, const void* av, int64_t n) {
  const auto* w = static_cast<const Block*>(wv);
  const auto* a = static_cast<const BlockQ8_K*>(av);
  const Q8KTerm2* t2 = q8_k_term2(av, n / kQKK);
  float acc = 0;
  int8_t L[kQKK];
  int sc[16], mn[16];
  for (int64_t i = 0; i < n / kQKK; ++i) {
    const uint8_t* q = w[i].qs;
    for (int e = 0; e < kQKK; ++e) {
      const int chunk = e / 64, hi = (e % 64) / 32, l = e % 32;
      int v = (q[32 * chunk + l] >> (4 * hi)) & 0xF;
      if constexpr (kFive) v |= ((w[i].qh[l] >> (2 * chunk + hi)) & 1) << 4;
      L[e] = int8_t(v);
    }
    for (int j = 0; j < 8; ++j) {
      uint8_t s, m;
      k4_scale_min(j, w[i].scales, &s, &m);
      sc[2 * j] = sc[2 * j + 1] = s;
      mn[2 * j] = mn[2 * j + 1] = m;
    }
    const float da = load_f(&a[i].d);
    acc += (f16(w[i].d) * da) * grouped_dot16_terms(L, a[i], t2[i], sc) -
           (f16(w[i].dmin) * da) * mins_terms(mn, a[i], t2[i]);
  }
  return acc;
}

float dot_q6_k(const void* wv, const void* av, int64_t n) {
  const auto* w = static_cast<const BlockQ6_K*>(wv);
  const auto* a = static_cast<const BlockQ8_K*>(av);
  const Q8KTerm2* t2 = q8_k_term2(av, n / kQKK);
  float acc = 0;
  int8_t L[kQKK];
  int sc[16];
  for (int64_t i = 0; i < n / kQKK; ++i) {
    for (int e = 0; e < kQKK; ++e) {
      const int half = e / 128, k = (e % 128) / 32, l = e % 32;
      const uint8_t ql = w[i].ql[64 * half + l + 32 * (k & 1)];
      const int low = (k < 2 ? ql : ql >> 4) & 0xF;
      const int high = (w[i].qh[32 * half + l] >> (2 * k)) & 3;
      L[e] = int8_t((low | (high << 4)) - 32);
    }
    for (int g = 0; g < 16; ++g) sc[g] = w[i].scales[g];
    acc += (f16(w[i].d) * load_f(&a[i].d)) * grouped_dot16_terms(L, a[i], t2[i], sc);
  }
  return acc;
}

// ---- float weights x float activations ----

float dot_f32(const void* wv, const void* av, int64_t n) {
  const auto* w = static_cast<const float*>(wv);
  const auto* a = static_cast<const float*>(av);
  float acc[4] = {0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 4 <= n; i += 4)
    for (int k = 0; k < 4; ++k) acc[k] += w[i + k] * a[i + k];
  for (; i < n; ++i) acc[0] += w[i] * a[i];
  return (acc[0] + acc[1]) + (acc[2] + acc[3]);
}

template <float (*kConv)(uint16_t)>
float dot_half(const void* wv, const void* av, int64_t n) {
  const auto* w = static_cast<const uint8_t*>(wv);
  const auto* a = static_cast<const float*>(av);
  float acc[4] = {0, 0, 0, 0};
  for (int64_t i = 0; i < n; ++i) {
    uint16_t h;
    std::memcpy(&h, w + 2 * i, 2);
    acc[i & 3] += kConv(h) * a[i];
  }
  return (acc[0] + acc[1]) + (acc[2] + acc[3]);
}
float bf16_conv(uint16_t h) {
  return bf16_to_fp32(h);
}
float f16_conv(uint16_t h) {
  return fp16_to_fp32(h);
}

}  // namespace

void fill_scalar_kernels(DotKernels& k) {
  k.dot[int(TensorType::F32)] = dot_f32;
  k.dot[int(TensorType::F16)] = dot_half<f16_conv>;
  k.dot[int(TensorType::BF16)] = dot_half<bf16_conv>;
  k.dot[int(TensorType::Q4_0)] = dot_q4_0;
  k.dot[int(TensorType::Q4_1)] = dot_q4_1;
  k.dot[int(TensorType::Q5_0)] = dot_q5_0;
  k.dot[int(TensorType::Q5_1)] = dot_q5_1;
  k.dot[int(TensorType::Q8_0)] = dot_q8_0;
  k.dot[int(TensorType::Q2_K)] = dot_q2_k;
  k.dot[int(TensorType::Q3_K)] = dot_q3_k;
  k.dot[int(TensorType::Q4_K)] = dot_q45_k<false, BlockQ4_K>;
  k.dot[int(TensorType::Q5_K)] = dot_q45_k<true, BlockQ5_K>;
  k.dot[int(TensorType::Q6_K)] = dot_q6_k;
}

}  // namespace quant

// ---- dispatch ----------------------------------------------------------------------------------

namespace {

using quant::DotKernels;

struct Tables {
  DotKernels scalar, avx2, avx512;
  Tables() {
    quant::fill_scalar_kernels(scalar);
    avx2 = scalar;
    quant::fill_avx2_kernels(avx2);
    avx512 = avx2;
    quant::fill_avx512_kernels(avx512);
  }
};
const Tables& tables() {
  static const Tables t;
  return t;
}

const DotKernels* table_for(Isa isa) {
  switch (isa) {
    case Isa::Avx512:
      return &tables().avx512;
    case Isa::Avx2:
      return &tables().avx2;
    default:
      return &tables().scalar;
  }
}

std::atomic<int> g_forced{-1};

const DotKernels& active_kernels() {
  static const DotKernels* best = table_for(best_isa());
  const int forced = g_forced.load(std::memory_order_relaxed);
  return forced < 0 ? *best : *table_for(Isa(forced));
}

quant::DotFn kernel_for(TensorType t) {
  const uint32_t id = uint32_t(t);
  quant::DotFn fn = id < uint32_t(quant::kMaxTypeId) ? active_kernels().dot[id] : nullptr;
  if (!fn) throw InputError("vec_dot: unsupported weight type " + tensor_type_name(id));
  return fn;
}

void check_length(TensorType t, int64_t n) {
  const auto& info = tensor_type_info(t);
  if (n < 0 || info.block_elems <= 0 || n % info.block_elems != 0)
    throw InputError("vec_dot: row of " + std::to_string(n) + " elements is not a multiple of " +
                     std::to_string(info.block_elems) + " (type " + info.name + ")");
}

}  // namespace

TensorType activation_type_for(TensorType weight_type) {
  switch (weight_type) {
    case TensorType::F32:
    case TensorType::F16:
    case TensorType::BF16:
      return TensorType::F32;
    case TensorType::Q4_0:
    case TensorType::Q4_1:
    case TensorType::Q5_0:
    case TensorType::Q5_1:
    case TensorType::Q8_0:
      return TensorType::Q8_0;
    case TensorType::Q2_K:
    case TensorType::Q3_K:
    case TensorType::Q4_K:
    case TensorType::Q5_K:
    case TensorType::Q6_K:
      return TensorType::Q8_K;
    default:
      throw InputError("vec_dot: unsupported weight type " +
                       tensor_type_name(uint32_t(weight_type)));
  }
}

size_t activation_row_bytes(TensorType weight_type, int64_t n) {
  check_length(weight_type, n);
  switch (activation_type_for(weight_type)) {
    case TensorType::Q8_0:
      return size_t(quant::q8_0_activation_bytes(n / 32));
    case TensorType::Q8_K:
      return size_t(quant::q8_k_activation_bytes(n / 256));
    default:
      return size_t(n) * sizeof(float);
  }
}

namespace {

// Round to nearest, ties to even, for |v| < 2^22 (the default rounding mode; no libm call).
inline float round_even(float v) {
  return (v + 0x1.8p23f) - 0x1.8p23f;
}
inline int8_t clamp127(float v) {
  return int8_t(v > 127.0f ? 127 : v < -127.0f ? -127 : int(v));
}

// The two int8 terms of n values (vec_dot_internal.h): returns d = max|x| / 127, or NaN when a
// value is not finite (the terms are then 0 and the NaN scale carries it to the products).
float quantize_two_terms(const float* x, int n, int8_t* q1, int8_t* q2) {
  float amax = 0;
  bool finite = true;
  for (int j = 0; j < n; ++j) {
    const float a = std::fabs(x[j]);
    finite = finite && a <= 0x1.fffffep127f;  // false for inf and NaN
    amax = a > amax ? a : amax;
  }
  if (!finite) {
    std::memset(q1, 0, size_t(n));
    std::memset(q2, 0, size_t(n));
    return std::numeric_limits<float>::quiet_NaN();
  }
  const float inv = amax > 0 ? 127.0f / amax : 0.0f;
  for (int j = 0; j < n; ++j) {
    const float v = x[j] * inv;  // |v| <= 127 up to rounding
    const float r1 = round_even(v);
    q1[j] = clamp127(r1);
    q2[j] = clamp127(round_even((v - r1) * float(quant::kTerm2Scale)));  // v - r1 is exact
  }
  return amax / 127.0f;
}

}  // namespace

void quantize_activation(TensorType weight_type, const float* x, void* dst, int64_t n) {
  check_length(weight_type, n);
  const TensorType act = activation_type_for(weight_type);
  if (act == TensorType::F32) {
    std::memcpy(dst, x, size_t(n) * sizeof(float));
    return;
  }
  auto* bytes = static_cast<uint8_t*>(dst);
  if (act == TensorType::Q8_0) {
    const int64_t nb = n / 32;
    auto* a = static_cast<int16_t*>(dst);
    auto* e = reinterpret_cast<float*>(bytes + nb * 64);
    int8_t q1[32], q2[32];
    for (int64_t i = 0; i < nb; ++i) {
      const float d = quantize_two_terms(x + 32 * i, 32, q1, q2);
      int sum = 0;
      for (int j = 0; j < 32; ++j) {
        a[32 * i + j] = int16_t(quant::kTerm2Scale * q1[j] + q2[j]);
        sum += a[32 * i + j];
      }
      e[i] = d / float(quant::kTerm2Scale);
      e[nb + i] = e[i] * float(sum);
    }
    return;
  }
  const int64_t nb = n / 256;
  auto* blocks = static_cast<quant::BlockQ8_K*>(dst);
  auto* t2 = reinterpret_cast<quant::Q8KTerm2*>(bytes + quant::q8_k_term2_offset(nb));
  for (int64_t i = 0; i < nb; ++i) {
    const float d = quantize_two_terms(x + 256 * i, 256, blocks[i].qs, t2[i].qs);
    std::memcpy(&blocks[i].d, &d, 4);
    for (int g = 0; g < 16; ++g) {
      int s1 = 0, s2 = 0;
      for (int l = 0; l < 16; ++l) {
        s1 += blocks[i].qs[16 * g + l];
        s2 += t2[i].qs[16 * g + l];
      }
      blocks[i].bsums[g] = int16_t(s1);
      t2[i].bsums[g] = int16_t(s2);
    }
  }
}

void dequantize_activation(TensorType weight_type, const void* act, double* out, int64_t n) {
  check_length(weight_type, n);
  const TensorType type = activation_type_for(weight_type);
  const auto* bytes = static_cast<const uint8_t*>(act);
  if (type == TensorType::F32) {
    for (int64_t i = 0; i < n; ++i)
      out[i] = double(quant::load_f(reinterpret_cast<const float*>(bytes) + i));
    return;
  }
  if (type == TensorType::Q8_0) {
    const int64_t nb = n / 32;
    const quant::Q8_0Activation a = quant::q8_0_activation(act, nb);
    for (int64_t i = 0; i < n; ++i) out[i] = double(a.e[i / 32]) * a.a[i];
    return;
  }
  const int64_t nb = n / 256;
  const auto* blocks = static_cast<const quant::BlockQ8_K*>(act);
  const quant::Q8KTerm2* t2 = quant::q8_k_term2(act, nb);
  for (int64_t i = 0; i < nb; ++i) {
    const double d = quant::load_f(&blocks[i].d);
    for (int j = 0; j < 256; ++j)
      out[256 * i + j] = d * (blocks[i].qs[j] + double(t2[i].qs[j]) / quant::kTerm2Scale);
  }
}

float vec_dot(TensorType weight_type, const void* weight_row, const void* activation, int64_t n) {
  check_length(weight_type, n);
  return kernel_for(weight_type)(weight_row, activation, n);
}

void matvec(TensorType weight_type, const void* weights, size_t row_stride, int64_t rows,
            const void* activation, int64_t n, float* y) {
  check_length(weight_type, n);
  const quant::DotFn fn = kernel_for(weight_type);
  const auto* w = static_cast<const uint8_t*>(weights);
  for (int64_t r = 0; r < rows; ++r) y[r] = fn(w + size_t(r) * row_stride, activation, n);
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::Scalar:
      return "scalar";
    case Isa::Avx2:
      return "avx2";
    case Isa::Avx512:
      return "avx512";
  }
  return "?";
}

#if defined(__x86_64__) || defined(__i386__)
// F16C (CPUID leaf 1, ECX bit 29) from the instruction itself: clang's __builtin_cpu_supports
// does not know "f16c".
static bool cpu_has_f16c() {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  return __get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx & bit_F16C) != 0;
}
#endif

bool isa_supported(Isa isa) {
#if defined(__x86_64__) || defined(__i386__)
  switch (isa) {
    case Isa::Scalar:
      return true;
    case Isa::Avx2:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && cpu_has_f16c();
    case Isa::Avx512:
      return isa_supported(Isa::Avx2) && __builtin_cpu_supports("avx512f") &&
             __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
             __builtin_cpu_supports("avx512dq");
  }
  return false;
#else
  return isa == Isa::Scalar;
#endif
}

Isa best_isa() {
  static const Isa best = isa_supported(Isa::Avx512) ? Isa::Avx512
                          : isa_supported(Isa::Avx2) ? Isa::Avx2
                                                     : Isa::Scalar;
  return best;
}

Isa active_isa() {
  const int forced = g_forced.load(std::memory_order_relaxed);
  return forced < 0 ? best_isa() : Isa(forced);
}

void force_isa(Isa isa) {
  if (!isa_supported(isa))
    throw InputError(std::string("this CPU does not support the ") + isa_name(isa) + " kernels");
  g_forced.store(int(isa), std::memory_order_relaxed);
}

}  // namespace lockstep
