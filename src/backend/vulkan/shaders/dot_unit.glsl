// unit_dot(w, block_byte, u, x, xv): the dot product of unit u of the weight block that starts at
// byte block_byte of w with the block's inputs, which start at vec4 index xv of x. A unit is the
// part of a block one thread takes in matvec.comp (a block holds kUnitsPerBlock of them): 32 or
// 64 elements, neighbours in storage, whose scales are decoded once. Unlike dequant.glsl, nothing is
// dequantized into an array: each 32-bit word of quants is unpacked into four floats and dotted
// with a vec4 of the input at once, so every loop here has a constant trip count and everything
// stays in registers. Quants become floats by the exponent trick (a byte b OR 0x4B000000 is the
// float 2^23 + b, exact), which costs a logic op and an add instead of a slower int-to-float
// conversion. The format is chosen by -DWTYPE_<TYPE>; the layouts are ggml's (src/quant/blocks.h).
#include "common.glsl"

#extension GL_EXT_buffer_reference_uvec2 : require

layout(buffer_reference, std430, buffer_reference_align = 16) readonly buffer Vec4s {
  vec4 v[];
};
// Weights read 16 bytes at a time where a format's layout keeps them aligned.
layout(buffer_reference, std430, buffer_reference_align = 16) readonly buffer UVec4s {
  uvec4 v[];
};

const float kTwo23 = 8388608.0;

// The four bytes of a word (each < 256) as floats, minus `bias`: exact.
vec4 bytes_to_floats(uint word, float bias) {
  const uvec4 b = (uvec4(word) >> uvec4(0u, 8u, 16u, 24u)) & 0xFFu;
  return uintBitsToFloat(b | 0x4B000000u) - (kTwo23 + bias);
}

#if defined(WTYPE_F32)
// A unit is a 32-element chunk (rows of any multiple of 32).
const uint kBlockElems = 32u, kBlockBytes = 128u, kUnitsPerBlock = 1u;
float unit_dot(Words w, uint block_byte, uint u, Vec4s x, uint xv) {
  const uint wb = block_byte >> 2;
  float s = 0.0;
  for (uint i = 0u; i < 8u; ++i) {
    const vec4 wv = uintBitsToFloat(uvec4(w.w[wb + 4u * i], w.w[wb + 4u * i + 1u],
                                          w.w[wb + 4u * i + 2u], w.w[wb + 4u * i + 3u]));
    s += dot(wv, x.v[xv + i]);
  }
  return s;
}
#elif defined(WTYPE_F16)
const uint kBlockElems = 32u, kBlockBytes = 64u, kUnitsPerBlock = 1u;
float unit_dot(Words w, uint block_byte, uint u, Vec4s x, uint xv) {
  const uint wb = block_byte >> 2;
  float s = 0.0;
  for (uint i = 0u; i < 8u; ++i) {
    const vec4 wv = vec4(unpackHalf2x16(w.w[wb + 2u * i]), unpackHalf2x16(w.w[wb + 2u * i + 1u]));
    s += dot(wv, x.v[xv + i]);
  }
  return s;
}
#elif defined(WTYPE_Q4_0)
// {f16 d; u8 qs[16]}: element j = (low nibble of qs[j] - 8) d, element j+16 = (high nibble - 8) d.
const uint kBlockElems = 32u, kBlockBytes = 18u, kUnitsPerBlock = 1u;
float unit_dot(Words w, uint block_byte, uint u, Vec4s x, uint xv) {
  const float d = read_f16(w, block_byte);
  float s = 0.0;
  for (uint k = 0u; k < 4u; ++k) {
    const uint q = read_u32(w, block_byte + 2u + 4u * k);
    s += dot(bytes_to_floats(q & 0x0F0F0F0Fu, 8.0), x.v[xv + k]);
    s += dot(bytes_to_floats((q >> 4) & 0x0F0F0F0Fu, 8.0), x.v[xv + 4u + k]);
  }
  return d * s;
}
#elif defined(WTYPE_Q5_0)
// {f16 d; u8 qh[4]; u8 qs[16]}: bit j of qh (little-endian) is bit 4 of element j.
const uint kBlockElems = 32u, kBlockBytes = 22u, kUnitsPerBlock = 1u;
// Bits 4k .. 4k+3 of h spread to bit 4 of the word's four bytes.
uint high_bits(uint h, uint k) {
  const uint n = (h >> (4u * k)) & 15u;
  return ((n & 1u) << 4) | ((n & 2u) << 11) | ((n & 4u) << 18) | ((n & 8u) << 25);
}
float unit_dot(Words w, uint block_byte, uint u, Vec4s x, uint xv) {
  const float d = read_f16(w, block_byte);
  const uint qh = read_u32(w, block_byte + 2u);
  float s = 0.0;
  for (uint k = 0u; k < 4u; ++k) {
    const uint q = read_u32(w, block_byte + 6u + 4u * k);
    s += dot(bytes_to_floats((q & 0x0F0F0F0Fu) | high_bits(qh, k), 16.0), x.v[xv + k]);
    s += dot(bytes_to_floats(((q >> 4) & 0x0F0F0F0Fu) | high_bits(qh, k + 4u), 16.0),
             x.v[xv + 4u + k]);
  }
  return d * s;
}
#elif defined(WTYPE_Q8_0)
// {f16 d; i8 qs[32]}: flipping each byte's sign bit gives q + 128 as an unsigned byte.
const uint kBlockElems = 32u, kBlockBytes = 34u, kUnitsPerBlock = 1u;
float unit_dot(Words w, uint block_byte, uint u, Vec4s x, uint xv) {
  const float d = read_f16(w, block_byte);
  float s = 0.0;
  for (uint k = 0u; k < 8u; ++k)
    s += dot(bytes_to_floats(read_u32(w, block_byte + 2u + 4u * k) ^ 0x80808080u, 128.0),
             x.v[xv + k]);
  return d * s;
}
#elif defined(WTYPE_Q4_K)
// {f16 d; f16 dmin; u8 scales[12]; u8 qs[128]} (144 bytes: blocks stay word aligned): 8
// sub-blocks of 32 with 6-bit scales and mins; sub-blocks 2j and 2j+1 are the low and high
// nibbles of qs[32j .. 32j+31]. A unit is that pair, j = u: 32 bytes of quants, 64 elements.
// Value d sc q - dmin m, so a sub-block's dot is d sc (q . x) - dmin m (sum of x).
const uint kBlockElems = 256u, kBlockBytes = 144u, kUnitsPerBlock = 4u;
uint scale_byte(Words w, uint wb, uint i) {  // scales[i]
  return (w.w[wb + 1u + (i >> 2)] >> (8u * (i & 3u))) & 0xFFu;
}
void scale_min(Words w, uint wb, uint s, out float sc, out float m) {
  if (s < 4u) {
    sc = float(scale_byte(w, wb, s) & 63u);
    m = float(scale_byte(w, wb, s + 4u) & 63u);
  } else {
    const uint hi = scale_byte(w, wb, s + 4u);
    sc = float((hi & 15u) | ((scale_byte(w, wb, s - 4u) >> 6) << 4));
    m = float((hi >> 4) | ((scale_byte(w, wb, s) >> 6) << 4));
  }
}
float unit_dot(Words w, uint block_byte, uint u, Vec4s x, uint xv) {
  const uint wb = block_byte >> 2;
  const vec2 dm = unpackHalf2x16(w.w[wb]);
  float sc_lo, m_lo, sc_hi, m_hi;
  scale_min(w, wb, 2u * u, sc_lo, m_lo);
  scale_min(w, wb, 2u * u + 1u, sc_hi, m_hi);
  // The unit's 32 bytes of quants are 16-byte aligned (blocks of 144 bytes from a 16-byte
  // aligned row, which vk_ops.cpp checks): two 16-byte loads.
  UVec4s wide = UVec4s(uvec2(w));
  const uint qs = (block_byte >> 4) + 1u + 2u * u;
  const uvec4 q_lo = wide.v[qs], q_hi = wide.v[qs + 1u];
  const uint xl = xv + 16u * u, xh = xl + 8u;
  float dot_lo = 0.0, dot_hi = 0.0, sum_lo = 0.0, sum_hi = 0.0;
  for (uint i = 0u; i < 8u; ++i) {
    const uint q = i < 4u ? q_lo[i] : q_hi[i - 4u];
    const vec4 a = x.v[xl + i], b = x.v[xh + i];
    dot_lo += dot(bytes_to_floats(q & 0x0F0F0F0Fu, 0.0), a);
    dot_hi += dot(bytes_to_floats((q >> 4) & 0x0F0F0F0Fu, 0.0), b);
    sum_lo += (a.x + a.y) + (a.z + a.w);
    sum_hi += (b.x + b.y) + (b.z + b.w);
  }
  return dm.x * (sc_lo * dot_lo + sc_hi * dot_hi) - dm.y * (m_lo * sum_lo + m_hi * sum_hi);
}
#elif defined(WTYPE_Q6_K)
// {u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d} (210 bytes: every other block starts mid-word).
// Two halves of 128 elements; in half n, sub-block k (0..3) takes nibble k / 2 of
// ql[64 n + 32 (k % 2) + l], bits 2k of qh[32 n + l] and scale scales[8 n + 2 k + l / 16],
// l < 32. A unit is (half n, l = 8g .. 8g+7) for all four k: 6 words of quants, 32 elements.
const uint kBlockElems = 256u, kBlockBytes = 210u, kUnitsPerBlock = 8u;
float unit_dot(Words w, uint block_byte, uint u, Vec4s x, uint xv) {
  const uint n = u >> 2, g = u & 3u;
  const float d = read_f16(w, block_byte + 208u);
  const uint ql = block_byte + 64u * n + 8u * g, qh = block_byte + 128u + 32u * n + 8u * g;
  const uint sc = block_byte + 192u + 8u * n + (g >> 1);
  float scale[4];
  for (uint k = 0u; k < 4u; ++k) scale[k] = float(bitfieldExtract(int(read_u8(w, sc + 2u * k)), 0, 8));
  float s = 0.0;
  for (uint h = 0u; h < 2u; ++h) {  // l = 8g + 4h .. +3
    const uint a = read_u32(w, ql + 4u * h), b = read_u32(w, ql + 32u + 4u * h);
    const uint hb = read_u32(w, qh + 4u * h);
    const uint q[4] = uint[4]((a & 0x0F0F0F0Fu) | ((hb << 4) & 0x30303030u),
                              (b & 0x0F0F0F0Fu) | ((hb << 2) & 0x30303030u),
                              ((a >> 4) & 0x0F0F0F0Fu) | (hb & 0x30303030u),
                              ((b >> 4) & 0x0F0F0F0Fu) | ((hb >> 2) & 0x30303030u));
    for (uint k = 0u; k < 4u; ++k)
      s += scale[k] * dot(bytes_to_floats(q[k], 32.0), x.v[xv + 32u * n + 8u * k + 2u * g + h]);
  }
  return d * s;
}
#else
#error "define one WTYPE_<TYPE>"
#endif
