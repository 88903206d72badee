// dequant_part(src, row_offset, c, p, n, v): elements 32c + 8p .. 32c + 8p + 7 (p < 4) of the
// weight row that starts at byte row_offset of src, in the GGUF block format chosen by
// -DWTYPE_<TYPE> (ggml's layouts, src/quant/blocks.h); elements at or past n of the chunk are 0
// (n < 32 happens only for the plain types, F32 and F16, whose rows may have any length:
// stories260K's n_ff is 172). A quarter of a 32-element chunk is what one thread of gemm.comp
// dequantizes per step. dequant_chunk(src, row_offset, c, n, v): the whole chunk, its four
// quarters. Every block format's block is 32 elements or a multiple of 32, so a chunk never
// straddles two blocks; each quarter decodes its scales itself (the same expressions, so the
// same bits, as a whole chunk's).
#include "common.glsl"

#if defined(WTYPE_F32)
const uint kBlockElems = 32u, kBlockBytes = 128u;
void dequant_part(Words src, uint row_offset, uint c, uint p, uint n, out float v[8]) {
  const uint base = row_offset + c * 128u + 32u * p;
  for (uint i = 0u; i < 8u; ++i)
    v[i] = 8u * p + i < n ? uintBitsToFloat(read_u32(src, base + 4u * i)) : 0.0;
}
#elif defined(WTYPE_F16)
const uint kBlockElems = 32u, kBlockBytes = 64u;
void dequant_part(Words src, uint row_offset, uint c, uint p, uint n, out float v[8]) {
  const uint base = row_offset + c * 64u + 16u * p;
  for (uint i = 0u; i < 8u; ++i) v[i] = 8u * p + i < n ? read_f16(src, base + 2u * i) : 0.0;
}
#elif defined(WTYPE_Q4_0)
// {f16 d; u8 qs[16]}: element j = (low nibble of qs[j] - 8) d, element j+16 = (high nibble - 8) d.
const uint kBlockElems = 32u, kBlockBytes = 18u;
void dequant_part(Words src, uint row_offset, uint c, uint p, uint n, out float v[8]) {
  const uint base = row_offset + c * 18u;
  const float d = read_f16(src, base);
  const uint shift = 4u * (p >> 1);  // quarters 2 and 3: the high nibbles of bytes 0-15
  for (uint k = 0u; k < 2u; ++k) {
    const uint q = read_u32(src, base + 2u + 8u * (p & 1u) + 4u * k);
    for (uint b = 0u; b < 4u; ++b) v[4u * k + b] = (float((q >> (8u * b + shift)) & 15u) - 8.0) * d;
  }
}
#elif defined(WTYPE_Q5_0)
// {f16 d; u8 qh[4]; u8 qs[16]}: bit j of qh (little-endian) is bit 4 of element j.
const uint kBlockElems = 32u, kBlockBytes = 22u;
void dequant_part(Words src, uint row_offset, uint c, uint p, uint n, out float v[8]) {
  const uint base = row_offset + c * 22u;
  const float d = read_f16(src, base);
  const uint qh = read_u32(src, base + 2u);
  const uint shift = 4u * (p >> 1);
  for (uint k = 0u; k < 2u; ++k) {
    const uint q = read_u32(src, base + 6u + 8u * (p & 1u) + 4u * k);
    for (uint b = 0u; b < 4u; ++b) {
      const uint j = 8u * p + 4u * k + b;
      const uint e = ((q >> (8u * b + shift)) & 15u) | (((qh >> j) & 1u) << 4);
      v[4u * k + b] = (float(e) - 16.0) * d;
    }
  }
}
#elif defined(WTYPE_Q8_0)
// {f16 d; i8 qs[32]}.
const uint kBlockElems = 32u, kBlockBytes = 34u;
void dequant_part(Words src, uint row_offset, uint c, uint p, uint n, out float v[8]) {
  const uint base = row_offset + c * 34u;
  const float d = read_f16(src, base);
  for (uint k = 0u; k < 2u; ++k) {
    const int q = int(read_u32(src, base + 2u + 8u * p + 4u * k));
    for (int b = 0; b < 4; ++b) v[4u * k + uint(b)] = float(bitfieldExtract(q, 8 * b, 8)) * d;
  }
}
#elif defined(WTYPE_Q4_K)
// {f16 d; f16 dmin; u8 scales[12]; u8 qs[128]}: 8 sub-blocks of 32 with 6-bit scales and mins;
// sub-block s reads nibble s % 2 of qs[32 (s / 2) .. + 31]; value d sc q - dmin m.
const uint kBlockElems = 256u, kBlockBytes = 144u;
void dequant_part(Words src, uint row_offset, uint c, uint p, uint n, out float v[8]) {
  const uint base = row_offset + (c >> 3) * 144u;
  const uint s = c & 7u;
  const float d = read_f16(src, base);
  const float dmin = read_f16(src, base + 2u);
  const uint sc_base = base + 4u;
  uint sc, m;
  if (s < 4u) {
    sc = read_u8(src, sc_base + s) & 63u;
    m = read_u8(src, sc_base + s + 4u) & 63u;
  } else {
    const uint hi = read_u8(src, sc_base + s + 4u);
    sc = (hi & 15u) | ((read_u8(src, sc_base + s - 4u) >> 6) << 4);
    m = (hi >> 4) | ((read_u8(src, sc_base + s) >> 6) << 4);
  }
  const float scale = d * float(sc), offset = dmin * float(m);
  const uint qs = base + 16u + 32u * (s >> 1) + 8u * p;
  const uint shift = 4u * (s & 1u);
  for (uint k = 0u; k < 2u; ++k) {
    const uint q = read_u32(src, qs + 4u * k);
    for (uint b = 0u; b < 4u; ++b)
      v[4u * k + b] = scale * float((q >> (8u * b + shift)) & 15u) - offset;
  }
}
#elif defined(WTYPE_Q6_K)
// {u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d}: two halves of 128 elements; in half n, the
// sub-block k (0..3) takes nibble k / 2 of ql[64 n + 32 (k % 2) + l], bits 2k of qh[32 n + l],
// and scale scales[8 n + 2 k + l / 16]; value d scale (q - 32).
// Blocks kQ6kBlockBytes apart (common.glsl).
const uint kBlockElems = 256u, kBlockBytes = kQ6kBlockBytes;
void dequant_part(Words src, uint row_offset, uint c, uint p, uint n, out float v[8]) {
  const uint base = row_offset + (c >> 3) * kBlockBytes;
  const uint half_index = (c & 7u) >> 2, k = c & 3u;
  const float d = read_f16(src, base + 208u);
  const uint ql = base + 64u * half_index + 32u * (k & 1u) + 8u * p;
  const uint qh = base + 128u + 32u * half_index + 8u * p;
  const uint ql_shift = 4u * (k >> 1), qh_shift = 2u * k;
  // Elements l < 16 of the chunk take the first of its two scales: quarters 0 and 1.
  const uint sc = base + 192u + 8u * half_index + 2u * k + (p >> 1);
  const float scale = d * float(bitfieldExtract(int(read_u8(src, sc)), 0, 8));
  for (uint w = 0u; w < 2u; ++w) {
    const uint lo = read_u32(src, ql + 4u * w);
    const uint hi = read_u32(src, qh + 4u * w);
    for (uint b = 0u; b < 4u; ++b) {
      const int q = int(((lo >> (8u * b + ql_shift)) & 15u) | (((hi >> (8u * b + qh_shift)) & 3u) << 4)) - 32;
      v[4u * w + b] = scale * float(q);
    }
  }
}
#else
#error "define one WTYPE_<TYPE>"
#endif

void dequant_chunk(Words src, uint row_offset, uint c, uint n, out float v[32]) {
  for (uint p = 0u; p < 4u; ++p) {
    float part[8];
    dequant_part(src, row_offset, c, p, n, part);
    for (uint i = 0u; i < 8u; ++i) v[8u * p + i] = part[i];
  }
}
