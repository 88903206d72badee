// Device-side decoding of ggml weight formats, shared by the matrix-vector kernels (decode), the
// dequantize-to-F16 kernels (prefill GEMM tiles) and the embedding lookup.
//
// Every format is described by a traits struct:
//   QK     elements per block (plain types use virtual blocks of 8, or of 1 for odd widths)
//   BYTES  bytes per block
//   TPB    threads that cooperate on one block; thread t in [0, TPB) decodes G*C elements
//   G, C   those elements form G runs of C consecutive elements; run g starts at start(t, g)
//   decode(blk, t, q, a, b)  writes the raw quants q[g*C + c] (small integers, as exact floats)
//          and per-run factors: element start(t, g) + c has the value a[g] * q[g*C + c] + b[g]
//   kScale / kOffset  false when every a is 1 / every b is 0 (lets the kernels skip the work)
// The factored form lets a dot product accumulate sum(x * q) per run and apply a and b (with
// sum(x)) once per run instead of once per element. The bit layouts are ggml's (ggml-common.h,
// ggml-quants.c reference dequantizers). Loads are as wide as each format's alignment allows: a
// row of Q4_K/Q5_K is 16-byte aligned, Q2_K/Q4_1/Q5_1 4-byte aligned, Q4_0/Q5_0/Q8_0/Q3_K/Q6_K
// only 2-byte aligned (odd block sizes).
#pragma once

#include <cuda_bf16.h>

#include "backend/cuda/cuda_common.cuh"

namespace lockstep::cuda {

// Four bytes of w, each holding a small unsigned value, to floats minus `bias` (exact: all values
// are integers below 2^23).
__device__ __forceinline__ void bytes_to_floats(uint32_t w, float bias, float* out) {
#pragma unroll
  for (int k = 0; k < 4; ++k)
    out[k] =
        __int_as_float(__byte_perm(w, 0x4B000000u, 0x7440u | unsigned(k))) - (8388608.0f + bias);
}

__device__ __forceinline__ float half_lo(uint32_t w) {
  return __half2float(__ushort_as_half(uint16_t(w & 0xFFFF)));
}
__device__ __forceinline__ float half_hi(uint32_t w) {
  return __half2float(__ushort_as_half(uint16_t(w >> 16)));
}

// ---- plain types (values are the quants, a = 1, b = 0) -------------------------------------

struct BlockF32x8 {
  static constexpr int QK = 8, BYTES = 32, TPB = 1, G = 1, C = 8;
  static constexpr bool kScale = false, kOffset = false;
  __device__ static int start(int, int) { return 0; }
  __device__ static void decode(const uint8_t* b, int, float* q, float* a, float* o) {
    const float4 x = reinterpret_cast<const float4*>(b)[0];
    const float4 y = reinterpret_cast<const float4*>(b)[1];
    q[0] = x.x, q[1] = x.y, q[2] = x.z, q[3] = x.w, q[4] = y.x, q[5] = y.y, q[6] = y.z, q[7] = y.w;
    a[0] = 1.0f, o[0] = 0.0f;
  }
};

struct BlockF16x8 {
  static constexpr int QK = 8, BYTES = 16, TPB = 1, G = 1, C = 8;
  static constexpr bool kScale = false, kOffset = false;
  __device__ static int start(int, int) { return 0; }
  __device__ static void decode(const uint8_t* b, int, float* q, float* a, float* o) {
    const uint4 w = *reinterpret_cast<const uint4*>(b);
    const uint32_t u[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
    for (int k = 0; k < 4; ++k) q[2 * k] = half_lo(u[k]), q[2 * k + 1] = half_hi(u[k]);
    a[0] = 1.0f, o[0] = 0.0f;
  }
};

struct BlockBF16x8 {
  static constexpr int QK = 8, BYTES = 16, TPB = 1, G = 1, C = 8;
  static constexpr bool kScale = false, kOffset = false;
  __device__ static int start(int, int) { return 0; }
  __device__ static void decode(const uint8_t* b, int, float* q, float* a, float* o) {
    const uint4 w = *reinterpret_cast<const uint4*>(b);
    const uint32_t u[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      q[2 * k] = __int_as_float(u[k] << 16);
      q[2 * k + 1] = __int_as_float(u[k] & 0xFFFF0000u);
    }
    a[0] = 1.0f, o[0] = 0.0f;
  }
};

// Scalar fallbacks for rows whose width is not a multiple of 8 (e.g. stories260K's 172-wide F16
// ffn_down).
struct BlockF32x1 {
  static constexpr int QK = 1, BYTES = 4, TPB = 1, G = 1, C = 1;
  static constexpr bool kScale = false, kOffset = false;
  __device__ static int start(int, int) { return 0; }
  __device__ static void decode(const uint8_t* b, int, float* q, float* a, float* o) {
    q[0] = *reinterpret_cast<const float*>(b), a[0] = 1.0f, o[0] = 0.0f;
  }
};
struct BlockF16x1 {
  static constexpr int QK = 1, BYTES = 2, TPB = 1, G = 1, C = 1;
  static constexpr bool kScale = false, kOffset = false;
  __device__ static int start(int, int) { return 0; }
  __device__ static void decode(const uint8_t* b, int, float* q, float* a, float* o) {
    q[0] = load_half(b), a[0] = 1.0f, o[0] = 0.0f;
  }
};
struct BlockBF16x1 {
  static constexpr int QK = 1, BYTES = 2, TPB = 1, G = 1, C = 1;
  static constexpr bool kScale = false, kOffset = false;
  __device__ static int start(int, int) { return 0; }
  __device__ static void decode(const uint8_t* b, int, float* q, float* a, float* o) {
    q[0] = __int_as_float(uint32_t(*reinterpret_cast<const uint16_t*>(b)) << 16);
    a[0] = 1.0f, o[0] = 0.0f;
  }
};

// ---- 32-element blocks ----------------------------------------------------------------------
// Q4_0/Q4_1/Q5_0/Q5_1: element j < 16 is the low nibble of qs[j], element j + 16 the high nibble.
// Thread t decodes elements 4t..4t+3 (run 0) and 16+4t..16+4t+3 (run 1).

struct BlockQ4_0 {  // half d; u8 qs[16]; x = (q - 8) * d
  static constexpr int QK = 32, BYTES = 18, TPB = 4, G = 2, C = 4;
  static constexpr bool kScale = true, kOffset = true;
  __device__ static int start(int t, int g) { return 4 * t + 16 * g; }
  __device__ static void decode(const uint8_t* b, int t, float* q, float* a, float* o) {
    const float d = load_half(b);
    const uint32_t w = load_u32_a2(b + 2 + 4 * t);
    bytes_to_floats(w & 0x0F0F0F0Fu, 0.0f, q);
    bytes_to_floats((w >> 4) & 0x0F0F0F0Fu, 0.0f, q + 4);
    a[0] = a[1] = d, o[0] = o[1] = -8.0f * d;
  }
};

struct BlockQ4_1 {  // half d; half m; u8 qs[16]; x = q * d + m
  static constexpr int QK = 32, BYTES = 20, TPB = 4, G = 2, C = 4;
  static constexpr bool kScale = true, kOffset = true;
  __device__ static int start(int t, int g) { return 4 * t + 16 * g; }
  __device__ static void decode(const uint8_t* b, int t, float* q, float* a, float* o) {
    const uint32_t dm = load_u32_a4(b);
    const uint32_t w = load_u32_a4(b + 4 + 4 * t);
    bytes_to_floats(w & 0x0F0F0F0Fu, 0.0f, q);
    bytes_to_floats((w >> 4) & 0x0F0F0F0Fu, 0.0f, q + 4);
    a[0] = a[1] = half_lo(dm), o[0] = o[1] = half_hi(dm);
  }
};

// The fifth bit of element j sits in bit j of the 32-bit qh; moved to bit 4 of byte k.
__device__ __forceinline__ void q5_high_bits(uint32_t qh, int t, uint32_t& h_lo, uint32_t& h_hi) {
  h_lo = 0, h_hi = 0;
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    const int j = 4 * t + k;
    h_lo |= ((qh >> j) & 1u) << (8 * k + 4);
    h_hi |= ((qh >> (j + 16)) & 1u) << (8 * k + 4);
  }
}

struct BlockQ5_0 {  // half d; u8 qh[4]; u8 qs[16]; x = (q - 16) * d
  static constexpr int QK = 32, BYTES = 22, TPB = 4, G = 2, C = 4;
  static constexpr bool kScale = true, kOffset = true;
  __device__ static int start(int t, int g) { return 4 * t + 16 * g; }
  __device__ static void decode(const uint8_t* b, int t, float* q, float* a, float* o) {
    const float d = load_half(b);
    const uint32_t qh = load_u32_a2(b + 2);
    const uint32_t w = load_u32_a2(b + 6 + 4 * t);
    uint32_t h_lo, h_hi;
    q5_high_bits(qh, t, h_lo, h_hi);
    bytes_to_floats((w & 0x0F0F0F0Fu) | h_lo, 0.0f, q);
    bytes_to_floats(((w >> 4) & 0x0F0F0F0Fu) | h_hi, 0.0f, q + 4);
    a[0] = a[1] = d, o[0] = o[1] = -16.0f * d;
  }
};

struct BlockQ5_1 {  // half d; half m; u8 qh[4]; u8 qs[16]; x = q * d + m
  static constexpr int QK = 32, BYTES = 24, TPB = 4, G = 2, C = 4;
  static constexpr bool kScale = true, kOffset = true;
  __device__ static int start(int t, int g) { return 4 * t + 16 * g; }
  __device__ static void decode(const uint8_t* b, int t, float* q, float* a, float* o) {
    const uint32_t dm = load_u32_a4(b);
    const uint32_t qh = load_u32_a4(b + 4);
    const uint32_t w = load_u32_a4(b + 8 + 4 * t);
    uint32_t h_lo, h_hi;
    q5_high_bits(qh, t, h_lo, h_hi);
    bytes_to_floats((w & 0x0F0F0F0Fu) | h_lo, 0.0f, q);
    bytes_to_floats(((w >> 4) & 0x0F0F0F0Fu) | h_hi, 0.0f, q + 4);
    a[0] = a[1] = half_lo(dm), o[0] = o[1] = half_hi(dm);
  }
};

struct BlockQ8_0 {  // half d; i8 qs[32]; x = q * d. Thread t decodes elements 8t..8t+7.
  static constexpr int QK = 32, BYTES = 34, TPB = 4, G = 1, C = 8;
  static constexpr bool kScale = true, kOffset = false;
  __device__ static int start(int t, int) { return 8 * t; }
  __device__ static void decode(const uint8_t* b, int t, float* q, float* a, float* o) {
    // Flipping the sign bit maps int8 q to the unsigned byte q + 128.
    bytes_to_floats(load_u32_a2(b + 2 + 8 * t) ^ 0x80808080u, 128.0f, q);
    bytes_to_floats(load_u32_a2(b + 6 + 8 * t) ^ 0x80808080u, 128.0f, q + 4);
    a[0] = load_half(b), o[0] = 0.0f;
  }
};

// ---- 256-element super-blocks (k-quants) -------------------------------------------------------

// Q2_K: u8 scales[16]; u8 qs[64]; half d; half dmin.
// Element 128n + 32j + l has q = (qs[32n + l] >> 2j) & 3 and scale byte scales[8n + 2j + l/16]
// (low nibble: scale, high nibble: min); x = d * sc * q - dmin * m.
// Thread t: n = t/4, l = 8(t%4) .. +7, all four j (run g = j).
struct BlockQ2_K {
  static constexpr int QK = 256, BYTES = 84, TPB = 8, G = 4, C = 8;
  static constexpr bool kScale = true, kOffset = true;
  __device__ static int start(int t, int g) { return 128 * (t >> 2) + 32 * g + 8 * (t & 3); }
  __device__ static void decode(const uint8_t* b, int t, float* q, float* a, float* o) {
    const int n = t >> 2, l0 = 8 * (t & 3);
    const uint32_t dd = load_u32_a4(b + 80);
    const float d = half_lo(dd), dmin = half_hi(dd);
    const uint32_t q0 = load_u32_a4(b + 16 + 32 * n + l0);
    const uint32_t q1 = load_u32_a4(b + 16 + 32 * n + l0 + 4);
#pragma unroll
    for (int g = 0; g < 4; ++g) {
      const uint32_t sc = b[8 * n + 2 * g + (l0 >> 4)];
      a[g] = d * float(sc & 0xF), o[g] = -(dmin * float(sc >> 4));
      bytes_to_floats((q0 >> (2 * g)) & 0x03030303u, 0.0f, q + 8 * g);
      bytes_to_floats((q1 >> (2 * g)) & 0x03030303u, 0.0f, q + 8 * g + 4);
    }
  }
};

// Q3_K: u8 hmask[32]; u8 qs[64]; u8 scales[12]; half d.
// Element 128n + 32j + l: q = ((qs[32n + l] >> 2j) & 3) - (hmask[l] bit (4n + j) ? 0 : 4),
// x = d * (scale[8n + 2j + l/16] - 32) * q, with the 16 6-bit scales packed in 12 bytes: scale i
// has low 4 bits (s[i % 8] >> 4(i / 8)) & 15 and high 2 bits (s[8 + i % 4] >> 2(i / 4)) & 3.
// Here q is stored as the 3-bit value (q2 | hbit << 2), so x = dl * q - 4 * dl.
struct BlockQ3_K {
  static constexpr int QK = 256, BYTES = 110, TPB = 8, G = 4, C = 8;
  static constexpr bool kScale = true, kOffset = true;
  __device__ static int start(int t, int g) { return 128 * (t >> 2) + 32 * g + 8 * (t & 3); }
  __device__ static void decode(const uint8_t* b, int t, float* q, float* a, float* o) {
    const int n = t >> 2, l0 = 8 * (t & 3);
    const float d = load_half(b + 108);
    const uint32_t h0 = load_u32_a2(b + l0), h1 = load_u32_a2(b + l0 + 4);
    const uint32_t q0 = load_u32_a2(b + 32 + 32 * n + l0), q1 = load_u32_a2(b + 36 + 32 * n + l0);
    const uint8_t* s = b + 96;
#pragma unroll
    for (int g = 0; g < 4; ++g) {
      const int i = 8 * n + 2 * g + (l0 >> 4);
      const int sc = int(((s[i & 7] >> (4 * (i >> 3))) & 0xF) |
                         (((s[8 + (i & 3)] >> (2 * (i >> 2))) & 3) << 4));
      a[g] = d * float(sc - 32), o[g] = -4.0f * a[g];
      const int hb = 4 * n + g;
      bytes_to_floats(((q0 >> (2 * g)) & 0x03030303u) | (((h0 >> hb) & 0x01010101u) << 2), 0.0f,
                      q + 8 * g);
      bytes_to_floats(((q1 >> (2 * g)) & 0x03030303u) | (((h1 >> hb) & 0x01010101u) << 2), 0.0f,
                      q + 8 * g + 4);
    }
  }
};

// Scale and min of sub-block `is` (0..7) of Q4_K/Q5_K from the 12 packed bytes, given as the three
// little-endian words s0 = bytes 0..3, s1 = 4..7, s2 = 8..11 (ggml's get_scale_min_k4).
__device__ __forceinline__ void k4_scale_min(uint32_t s0, uint32_t s1, uint32_t s2, int is,
                                             float& sc, float& m) {
  uint32_t a, c;
  if (is < 4) {
    a = (s0 >> (8 * is)) & 63;
    c = (s1 >> (8 * is)) & 63;
  } else {
    const int k = 8 * (is - 4);
    a = ((s2 >> k) & 0xF) | (((s0 >> (k + 6)) & 3) << 4);
    c = ((s2 >> (k + 4)) & 0xF) | (((s1 >> (k + 6)) & 3) << 4);
  }
  sc = float(a), m = float(c);
}

// Q4_K: half d; half dmin; u8 scales[12]; u8 qs[128].
// Chunk j (0..3) of 64 elements: element 64j + l is the low nibble of qs[32j + l] (sub-block 2j),
// element 64j + 32 + l the high nibble (sub-block 2j + 1); x = d * sc * q - dmin * m.
// Thread t: j = t/2, bytes qs[32j + 16(t%2) .. +15] (one 16-byte load).
struct BlockQ4_K {
  static constexpr int QK = 256, BYTES = 144, TPB = 8, G = 2, C = 16;
  static constexpr bool kScale = true, kOffset = true;
  __device__ static int start(int t, int g) { return 64 * (t >> 1) + 16 * (t & 1) + 32 * g; }
  __device__ static void decode(const uint8_t* b, int t, float* q, float* a, float* o) {
    const uint4 hdr = *reinterpret_cast<const uint4*>(b);
    const uint4 qs = *reinterpret_cast<const uint4*>(b + 16 + 16 * t);
    const float d = half_lo(hdr.x), dmin = half_hi(hdr.x);
    const int j = t >> 1;
    float sc0, m0, sc1, m1;
    k4_scale_min(hdr.y, hdr.z, hdr.w, 2 * j, sc0, m0);
    k4_scale_min(hdr.y, hdr.z, hdr.w, 2 * j + 1, sc1, m1);
    a[0] = d * sc0, o[0] = -(dmin * m0), a[1] = d * sc1, o[1] = -(dmin * m1);
    const uint32_t w[4] = {qs.x, qs.y, qs.z, qs.w};
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      bytes_to_floats(w[k] & 0x0F0F0F0Fu, 0.0f, q + 4 * k);
      bytes_to_floats((w[k] >> 4) & 0x0F0F0F0Fu, 0.0f, q + 16 + 4 * k);
    }
  }
};

// Q5_K: half d; half dmin; u8 scales[12]; u8 qh[32]; u8 qs[128]. As Q4_K, plus a fifth bit:
// element 64j + l takes bit 2j of qh[l], element 64j + 32 + l bit 2j + 1.
struct BlockQ5_K {
  static constexpr int QK = 256, BYTES = 176, TPB = 8, G = 2, C = 16;
  static constexpr bool kScale = true, kOffset = true;
  __device__ static int start(int t, int g) { return 64 * (t >> 1) + 16 * (t & 1) + 32 * g; }
  __device__ static void decode(const uint8_t* b, int t, float* q, float* a, float* o) {
    const uint4 hdr = *reinterpret_cast<const uint4*>(b);
    const int j = t >> 1, h = t & 1;
    const uint4 qh = *reinterpret_cast<const uint4*>(b + 16 + 16 * h);
    const uint4 qs = *reinterpret_cast<const uint4*>(b + 48 + 32 * j + 16 * h);
    const float d = half_lo(hdr.x), dmin = half_hi(hdr.x);
    float sc0, m0, sc1, m1;
    k4_scale_min(hdr.y, hdr.z, hdr.w, 2 * j, sc0, m0);
    k4_scale_min(hdr.y, hdr.z, hdr.w, 2 * j + 1, sc1, m1);
    a[0] = d * sc0, o[0] = -(dmin * m0), a[1] = d * sc1, o[1] = -(dmin * m1);
    const uint32_t w[4] = {qs.x, qs.y, qs.z, qs.w};
    const uint32_t hw[4] = {qh.x, qh.y, qh.z, qh.w};
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const uint32_t b_lo = ((hw[k] >> (2 * j)) & 0x01010101u) << 4;
      const uint32_t b_hi = ((hw[k] >> (2 * j + 1)) & 0x01010101u) << 4;
      bytes_to_floats((w[k] & 0x0F0F0F0Fu) | b_lo, 0.0f, q + 4 * k);
      bytes_to_floats(((w[k] >> 4) & 0x0F0F0F0Fu) | b_hi, 0.0f, q + 16 + 4 * k);
    }
  }
};

// Q6_K: u8 ql[128]; u8 qh[64]; i8 scales[16]; half d.
// Element 128n + 32k + l (k = 0..3, l < 32): low 4 bits from ql[64n + l + 32(k&1)] (low nibble
// for k < 2, high for k >= 2), high 2 bits from qh[32n + l] >> 2k; x = d * scales[8n + l/16 + 2k]
// * (q - 32). Thread t: n = t/4, l = 8(t%4) .. +7, all four k (run g = k).

// The unsigned 6-bit levels (0..63, one per byte) of 4 consecutive elements of run k, from their
// low-nibble word (a: ql[64n + l ..], c: ql[64n + l + 32 ..]) and their high-bit word h.
__device__ __forceinline__ uint32_t q6k_levels(uint32_t a, uint32_t c, uint32_t h, int k) {
  return ((((k & 1) ? c : a) >> ((k & 2) ? 4 : 0)) & 0x0F0F0F0Fu) |
         (((h >> (2 * k)) & 0x03030303u) << 4);
}

struct BlockQ6_K {
  static constexpr int QK = 256, BYTES = 210, TPB = 8, G = 4, C = 8;
  static constexpr bool kScale = true, kOffset = true;
  __device__ static int start(int t, int g) { return 128 * (t >> 2) + 32 * g + 8 * (t & 3); }
  __device__ static void decode(const uint8_t* b, int t, float* q, float* a, float* o) {
    const int n = t >> 2, l0 = 8 * (t & 3);
    const float d = load_half(b + 208);
    const uint8_t* ql = b + 64 * n + l0;
    const uint32_t a0 = load_u32_a2(ql), a1 = load_u32_a2(ql + 4);        // ql[l]
    const uint32_t c0 = load_u32_a2(ql + 32), c1 = load_u32_a2(ql + 36);  // ql[l + 32]
    const uint32_t h0 = load_u32_a2(b + 128 + 32 * n + l0), h1 = load_u32_a2(b + 132 + 32 * n + l0);
    const int8_t* sc = reinterpret_cast<const int8_t*>(b + 192) + 8 * n + (l0 >> 4);
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const uint32_t u0 = q6k_levels(a0, c0, h0, k), u1 = q6k_levels(a1, c1, h1, k);
      a[k] = d * float(sc[2 * k]), o[k] = -32.0f * a[k];
      bytes_to_floats(u0, 0.0f, q + 8 * k);
      bytes_to_floats(u1, 0.0f, q + 8 * k + 4);
    }
  }
};

// Values of thread t's elements: v[g*C + c] = a[g] * q[g*C + c] + b[g] (one rounding).
template <class B>
__device__ __forceinline__ void dequant_part(const uint8_t* blk, int t, float* v) {
  float a[B::G], o[B::G];
  B::decode(blk, t, v, a, o);
  if constexpr (B::kScale || B::kOffset) {
#pragma unroll
    for (int g = 0; g < B::G; ++g)
#pragma unroll
      for (int c = 0; c < B::C; ++c) v[g * B::C + c] = fmaf(a[g], v[g * B::C + c], o[g]);
  }
}

// The decoders a weight of type `type` and width `cols` uses. Plain types take the 8-wide path
// when the row width allows it.
enum class Decoder {
  F32x8,
  F16x8,
  BF16x8,
  F32x1,
  F16x1,
  BF16x1,
  Q4_0,
  Q4_1,
  Q5_0,
  Q5_1,
  Q8_0,
  Q2_K,
  Q3_K,
  Q4_K,
  Q5_K,
  Q6_K,
  None
};

inline Decoder decoder_for(TensorType type, int64_t cols) {
  const bool w8 = cols % 8 == 0;
  switch (type) {
    case TensorType::F32:
      return w8 ? Decoder::F32x8 : Decoder::F32x1;
    case TensorType::F16:
      return w8 ? Decoder::F16x8 : Decoder::F16x1;
    case TensorType::BF16:
      return w8 ? Decoder::BF16x8 : Decoder::BF16x1;
    case TensorType::Q4_0:
      return Decoder::Q4_0;
    case TensorType::Q4_1:
      return Decoder::Q4_1;
    case TensorType::Q5_0:
      return Decoder::Q5_0;
    case TensorType::Q5_1:
      return Decoder::Q5_1;
    case TensorType::Q8_0:
      return Decoder::Q8_0;
    case TensorType::Q2_K:
      return Decoder::Q2_K;
    case TensorType::Q3_K:
      return Decoder::Q3_K;
    case TensorType::Q4_K:
      return Decoder::Q4_K;
    case TensorType::Q5_K:
      return Decoder::Q5_K;
    case TensorType::Q6_K:
      return Decoder::Q6_K;
    default:
      return Decoder::None;
  }
}

// Calls f(BlockTraits{}) for the decoder; the caller has checked it is not None.
template <class F>
void dispatch_decoder(Decoder dec, F&& f) {
  switch (dec) {
    case Decoder::F32x8:
      f(BlockF32x8{});
      break;
    case Decoder::F16x8:
      f(BlockF16x8{});
      break;
    case Decoder::BF16x8:
      f(BlockBF16x8{});
      break;
    case Decoder::F32x1:
      f(BlockF32x1{});
      break;
    case Decoder::F16x1:
      f(BlockF16x1{});
      break;
    case Decoder::BF16x1:
      f(BlockBF16x1{});
      break;
    case Decoder::Q4_0:
      f(BlockQ4_0{});
      break;
    case Decoder::Q4_1:
      f(BlockQ4_1{});
      break;
    case Decoder::Q5_0:
      f(BlockQ5_0{});
      break;
    case Decoder::Q5_1:
      f(BlockQ5_1{});
      break;
    case Decoder::Q8_0:
      f(BlockQ8_0{});
      break;
    case Decoder::Q2_K:
      f(BlockQ2_K{});
      break;
    case Decoder::Q3_K:
      f(BlockQ3_K{});
      break;
    case Decoder::Q4_K:
      f(BlockQ4_K{});
      break;
    case Decoder::Q5_K:
      f(BlockQ5_K{});
      break;
    case Decoder::Q6_K:
      f(BlockQ6_K{});
      break;
    case Decoder::None:
      break;
  }
}

}  // namespace lockstep::cuda
