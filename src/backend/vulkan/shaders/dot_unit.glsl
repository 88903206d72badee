// unit_inputs(x, base, cols, b, u): the inputs that unit u of block b of a row meets, the token's
// inputs starting at vec4 `base` of x (or, with -DQ8_INPUTS, at word `base` of the int8 form
// quantize_q8.comp writes for rows of `cols` elements); loaded once and used for every row a thread
// computes (rows per thread, the FFN's gate and up). unit_dot(w, block_byte, u, inputs): the dot
// product of unit u of the weight block that starts at byte block_byte of w with them. A unit is
// the part of a block one thread takes in matvec.comp (a block holds kUnitsPerBlock of them), and
// neighbouring threads take neighbouring units. Units are cut so that those neighbours read
// neighbouring vec4s of x at the same moment: four to eight threads then share each 128-byte line
// of x that a load touches. (Units of whole 32- or 64-element runs, an earlier design, put each
// thread of a warp on its own line: on an H100 that made the L1 wavefronts for x, not the weight
// bytes, the limit of the Q4_K products, at 500 GB/s; bench/NOTES.md.) Nothing is dequantized into
// an array: each 32-bit word of quants is unpacked into four floats and dotted with a vec4 of the
// input at once, so every loop here has a constant trip count and everything stays in registers.
// Quants become floats by the exponent trick (a byte b OR 0x4B000000 is the float 2^23 + b, exact),
// which costs a logic op and an add instead of a slower int-to-float conversion. The format is
// chosen by -DWTYPE_<TYPE>; the layouts are ggml's (src/quant/blocks.h).
#include "common.glsl"

layout(buffer_reference, std430, buffer_reference_align = 16) readonly buffer Vec4s {
  vec4 v[];
};

// Vec4 i of x as a product meets it: matvec.comp defines it (the input itself, or RMSNorm's output
// of it where the product takes the norm in).
vec4 input_vec4(Vec4s x, uint i);

const float kTwo23 = 8388608.0;

#if defined(Q8_INPUTS)
// -DQ8_INPUTS: the inputs are quantize_q8.comp's int8 form (two terms per element, a scale per
// 32), and each word of quants meets them in integer dot products of four bytes (OpSDotKHR on
// packed int8x4, SPV_KHR_integer_dot_product: one instruction where the float form spends about
// a dozen); Q4_K and Q6_K only (the types of Q4_K_M's big matrices), like the CUDA int8 path.
#extension GL_EXT_spirv_intrinsics : require
spirv_instruction(extensions = ["SPV_KHR_integer_dot_product"], capabilities = [6019, 6018],
                  id = 4450)  // OpSDotKHR; DotProduct, DotProductInput4x8BitPacked
int sdot_packed(int a, int b, spirv_literal int packed_format);
// The sum of the four products of the signed bytes of a and b.
int dot4_i8(uint a, uint b) {
  return sdot_packed(int(a), int(b), 0);  // 0: PackedVectorFormat4x8Bit
}
const float kInv254 = 1.0 / 254.0;
// Inputs (and Q4_K's quants) are read as pairs of words, one 8-byte load each: every pair read
// below starts at an even word (rows of the int8 form are 9 n / 16 words, n a multiple of 256;
// Q4_K blocks are 36 words).
layout(buffer_reference, std430, buffer_reference_align = 8) readonly buffer WordPairs {
  uvec2 v[];
};
// The quantized row at word `base` (cols elements): words `word` and word + 1 (even) of each
// term, a group's scale and its sum.
struct Q8Row {
  uint base, cols;
};
uvec2 q8_term1_pair(Words x, Q8Row r, uint word) {
  return WordPairs(x).v[(r.base + word) >> 1];
}
uvec2 q8_term2_pair(Words x, Q8Row r, uint word) {
  return WordPairs(x).v[(r.base + r.cols / 4u + word) >> 1];
}
float q8_scale(Words x, Q8Row r, uint group) {
  return uintBitsToFloat(x.w[r.base + r.cols / 2u + group]);
}
float q8_sum(Words x, Q8Row r, uint group) {
  return uintBitsToFloat(x.w[r.base + r.cols / 2u + r.cols / 32u + group]);
}
#endif

// The four bytes of a word (each < 256) as floats, minus `bias`: exact.
vec4 bytes_to_floats(uint word, float bias) {
  const uvec4 b = (uvec4(word) >> uvec4(0u, 8u, 16u, 24u)) & 0xFFu;
  return uintBitsToFloat(b | 0x4B000000u) - (kTwo23 + bias);
}

#if defined(Q8_INPUTS) && !defined(WTYPE_Q4_K) && !defined(WTYPE_Q6_K)
#error "int8 inputs: Q4_K and Q6_K only"
#elif defined(WTYPE_F32) || defined(WTYPE_F16)
// A unit is 4 elements (one vec4) of a 32-element chunk (rows of any multiple of 32).
const uint kBlockElems = 32u, kUnitsPerBlock = 8u;
struct UnitInputs {
  vec4 v;
};
UnitInputs unit_inputs(Vec4s x, uint base, uint cols, uint b, uint u) {
  const uint xv = base + b * (kBlockElems / 4u);
  return UnitInputs(input_vec4(x, xv + u));
}
#if defined(WTYPE_F32)
const uint kBlockBytes = 128u;
float unit_dot(Words w, uint block_byte, uint u, UnitInputs in_) {
  const uint wo = (block_byte >> 2) + 4u * u;
  return dot(uintBitsToFloat(uvec4(w.w[wo], w.w[wo + 1u], w.w[wo + 2u], w.w[wo + 3u])), in_.v);
}
#else
const uint kBlockBytes = 64u;
float unit_dot(Words w, uint block_byte, uint u, UnitInputs in_) {
  const uint wo = (block_byte >> 2) + 2u * u;
  return dot(vec4(unpackHalf2x16(w.w[wo]), unpackHalf2x16(w.w[wo + 1u])), in_.v);
}
#endif
#elif defined(WTYPE_Q4_0) || defined(WTYPE_Q5_0)
// Q4_0 {f16 d; u8 qs[16]}: element j = (low nibble of qs[j] - 8) d, element j+16 = (high nibble
// - 8) d. Q5_0 {f16 d; u8 qh[4]; u8 qs[16]}: the same with bit j of qh (little-endian) as bit 4
// of element j, minus 16. Unit k (of 4) is quant word k: elements 4k .. 4k+3 and 16 + 4k .. +3.
const uint kBlockElems = 32u, kUnitsPerBlock = 4u;
struct UnitInputs {
  vec4 lo, hi;
};
UnitInputs unit_inputs(Vec4s x, uint base, uint cols, uint b, uint k) {
  const uint xv = base + b * (kBlockElems / 4u);
  return UnitInputs(input_vec4(x, xv + k), input_vec4(x, xv + 4u + k));
}
#if defined(WTYPE_Q4_0)
const uint kBlockBytes = 18u;
float unit_dot(Words w, uint block_byte, uint k, UnitInputs in_) {
  const uint q = read_u32(w, block_byte + 2u + 4u * k);
  return read_f16(w, block_byte) * (dot(bytes_to_floats(q & 0x0F0F0F0Fu, 8.0), in_.lo) +
                                    dot(bytes_to_floats((q >> 4) & 0x0F0F0F0Fu, 8.0), in_.hi));
}
#else
const uint kBlockBytes = 22u;
// Bits 4k .. 4k+3 of h spread to bit 4 of the word's four bytes.
uint high_bits(uint h, uint k) {
  const uint n = (h >> (4u * k)) & 15u;
  return ((n & 1u) << 4) | ((n & 2u) << 11) | ((n & 4u) << 18) | ((n & 8u) << 25);
}
float unit_dot(Words w, uint block_byte, uint k, UnitInputs in_) {
  const uint qh = read_u32(w, block_byte + 2u);
  const uint q = read_u32(w, block_byte + 6u + 4u * k);
  const float lo = dot(bytes_to_floats((q & 0x0F0F0F0Fu) | high_bits(qh, k), 16.0), in_.lo);
  const float hi = dot(bytes_to_floats(((q >> 4) & 0x0F0F0F0Fu) | high_bits(qh, k + 4u), 16.0),
                       in_.hi);
  return read_f16(w, block_byte) * (lo + hi);
}
#endif
#elif defined(WTYPE_Q8_0)
// {f16 d; i8 qs[32]}: flipping each byte's sign bit gives q + 128 as an unsigned byte. Unit k (of
// 4) is quant words 2k and 2k+1: elements 8k .. 8k+7.
const uint kBlockElems = 32u, kBlockBytes = 34u, kUnitsPerBlock = 4u;
struct UnitInputs {
  vec4 a, b;
};
UnitInputs unit_inputs(Vec4s x, uint base, uint cols, uint b, uint k) {
  const uint xv = base + b * (kBlockElems / 4u);
  return UnitInputs(input_vec4(x, xv + 2u * k), input_vec4(x, xv + 2u * k + 1u));
}
float unit_dot(Words w, uint block_byte, uint k, UnitInputs in_) {
  const uint qo = block_byte + 2u + 8u * k;
  const float s = dot(bytes_to_floats(read_u32(w, qo) ^ 0x80808080u, 128.0), in_.a) +
                  dot(bytes_to_floats(read_u32(w, qo + 4u) ^ 0x80808080u, 128.0), in_.b);
  return read_f16(w, block_byte) * s;
}
#elif defined(WTYPE_Q4_K)
// {f16 d; f16 dmin; u8 scales[12]; u8 qs[128]} (144 bytes: blocks stay word aligned): 8
// sub-blocks of 32 with 6-bit scales and mins; sub-blocks 2j and 2j+1 are the low and high
// nibbles of qs[32j .. 32j+31]. Value d sc q - dmin m, so a sub-block's dot is
// d sc (q . x) - dmin m (sum of x). A unit is kQ4kWordsPerUnit words of one such pair j: the
// units of a pair read neighbouring vec4s of x per load, and each decodes its pair's scales once.
// Float inputs take 2 words (the float arithmetic, ~7.5 instructions an element, rules there);
// the int8 form 4, one 16-byte load of quants a unit (7B decode 184 -> 208 tok/s on an H100).
#if defined(Q8_INPUTS)
const uint kQ4kWordsPerUnit = 4u;
#else
const uint kQ4kWordsPerUnit = 2u;
#endif
const uint kQ4kUnitsPerPair = 8u / kQ4kWordsPerUnit;
const uint kBlockElems = 256u, kBlockBytes = 144u, kUnitsPerBlock = 4u * kQ4kUnitsPerPair;
#if defined(Q8_INPUTS)
// With int8 inputs a unit meets words w0, w0 + 1 of both terms for each sub-block of the pair;
// q . (dx (t1 + t2 / 254)) = dx (254 (q . t1) + q . t2) / 254, the integer sum exact. The min
// term takes the group's float sum, once per sub-block (by the pair's first unit).
struct UnitInputs {
  uint t1_lo[kQ4kWordsPerUnit], t1_hi[kQ4kWordsPerUnit];
  uint t2_lo[kQ4kWordsPerUnit], t2_hi[kQ4kWordsPerUnit];
  float dx_lo, dx_hi, xs_lo, xs_hi;  // xs: 0 but in the pair's first unit
};
UnitInputs unit_inputs(Words x, uint base, uint cols, uint b, uint u) {
  const Q8Row r = Q8Row(base, cols);
  const uint j = u / kQ4kUnitsPerPair, w0 = (u % kQ4kUnitsPerPair) * kQ4kWordsPerUnit;
  const uint wl = 64u * b + 16u * j + w0, wh = wl + 8u, gl = 8u * b + 2u * j;
  UnitInputs in_;
  for (uint i = 0u; i < kQ4kWordsPerUnit; i += 2u) {
    const uvec2 a = q8_term1_pair(x, r, wl + i), b = q8_term1_pair(x, r, wh + i);
    const uvec2 c = q8_term2_pair(x, r, wl + i), d = q8_term2_pair(x, r, wh + i);
    in_.t1_lo[i] = a.x, in_.t1_lo[i + 1u] = a.y, in_.t1_hi[i] = b.x, in_.t1_hi[i + 1u] = b.y;
    in_.t2_lo[i] = c.x, in_.t2_lo[i + 1u] = c.y, in_.t2_hi[i] = d.x, in_.t2_hi[i + 1u] = d.y;
  }
  in_.dx_lo = q8_scale(x, r, gl);
  in_.dx_hi = q8_scale(x, r, gl + 1u);
  const bool first = w0 == 0u;
  in_.xs_lo = first ? q8_sum(x, r, gl) : 0.0;
  in_.xs_hi = first ? q8_sum(x, r, gl + 1u) : 0.0;
  return in_;
}
#else
struct UnitInputs {
  vec4 lo[kQ4kWordsPerUnit], hi[kQ4kWordsPerUnit];
  float sum_lo, sum_hi;  // for the mins: they depend on the inputs alone
};
UnitInputs unit_inputs(Vec4s x, uint base, uint cols, uint b, uint u) {
  const uint xv = base + b * (kBlockElems / 4u);
  const uint j = u / kQ4kUnitsPerPair, w0 = (u % kQ4kUnitsPerPair) * kQ4kWordsPerUnit;
  const uint xl = xv + 16u * j + w0, xh = xl + 8u;
  UnitInputs in_;
  in_.sum_lo = 0.0;
  in_.sum_hi = 0.0;
  for (uint i = 0u; i < kQ4kWordsPerUnit; ++i) {
    const vec4 lo = input_vec4(x, xl + i), hi = input_vec4(x, xh + i);
    in_.lo[i] = lo;
    in_.hi[i] = hi;
    in_.sum_lo += (lo.x + lo.y) + (lo.z + lo.w);
    in_.sum_hi += (hi.x + hi.y) + (hi.z + hi.w);
  }
  return in_;
}
#endif
float unit_dot(Words w, uint block_byte, uint u, UnitInputs in_) {
  const uint wb = block_byte >> 2;
  const uint j = u / kQ4kUnitsPerPair, w0 = (u % kQ4kUnitsPerPair) * kQ4kWordsPerUnit;
  const vec2 dm = unpackHalf2x16(w.w[wb]);
  // The 6-bit scales and mins of sub-blocks 2j and 2j+1, two 8-bit fields each: for j < 2 they
  // are bytes 2j, 2j+1 of scales[0..3] and scales[4..7]; for j >= 2 their low 4 bits are the
  // nibbles of scales[8..11] and their top 2 bits the top bits of scales[0..3] / scales[4..7].
  const uint sh = 16u * (j & 1u);
  const uint a = (w.w[wb + 1u] >> sh) & 0xFFFFu, b = (w.w[wb + 2u] >> sh) & 0xFFFFu;
  const uint c = (w.w[wb + 3u] >> sh) & 0xFFFFu;
  const uint sc2 = j < 2u ? a & 0x3F3Fu : (c & 0x0F0Fu) | ((a >> 2) & 0x3030u);
  const uint m2 = j < 2u ? b & 0x3F3Fu : ((c >> 4) & 0x0F0Fu) | ((b >> 2) & 0x3030u);
  const uint qw = wb + 4u + 8u * j + w0;
#if defined(Q8_INPUTS)
  int s_lo = 0, s_hi = 0, t_lo = 0, t_hi = 0;
  uint qs[kQ4kWordsPerUnit];
  for (uint i = 0u; i < kQ4kWordsPerUnit; i += 2u) {
    const uvec2 p = WordPairs(w).v[(qw + i) >> 1];
    qs[i] = p.x, qs[i + 1u] = p.y;
  }
  for (uint i = 0u; i < kQ4kWordsPerUnit; ++i) {
    const uint q = qs[i], lo = q & 0x0F0F0F0Fu, hi = (q >> 4) & 0x0F0F0F0Fu;
    s_lo += dot4_i8(lo, in_.t1_lo[i]);
    t_lo += dot4_i8(lo, in_.t2_lo[i]);
    s_hi += dot4_i8(hi, in_.t1_hi[i]);
    t_hi += dot4_i8(hi, in_.t2_hi[i]);
  }
  const float dot_lo = in_.dx_lo * kInv254 * float(254 * s_lo + t_lo);
  const float dot_hi = in_.dx_hi * kInv254 * float(254 * s_hi + t_hi);
  const float sum_lo = in_.xs_lo, sum_hi = in_.xs_hi;
#else
  float dot_lo = 0.0, dot_hi = 0.0;
  for (uint i = 0u; i < kQ4kWordsPerUnit; ++i) {
    const uint q = w.w[qw + i];
    dot_lo += dot(bytes_to_floats(q & 0x0F0F0F0Fu, 0.0), in_.lo[i]);
    dot_hi += dot(bytes_to_floats((q >> 4) & 0x0F0F0F0Fu, 0.0), in_.hi[i]);
  }
  const float sum_lo = in_.sum_lo, sum_hi = in_.sum_hi;
#endif
  return dm.x * (float(sc2 & 0xFFu) * dot_lo + float(sc2 >> 8) * dot_hi) -
         dm.y * (float(m2 & 0xFFu) * sum_lo + float(m2 >> 8) * sum_hi);
}
#elif defined(WTYPE_Q6_K)
// {u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d}, blocks kQ6kBlockBytes apart (common.glsl).
// Two halves of 128 elements; in half n, sub-block k (0..3) takes nibble k / 2 of
// ql[64 n + 32 (k % 2) + l], bits 2k of qh[32 n + l] and scale scales[8 n + 2 k + l / 16],
// l < 32. A unit is (half n, l = 8g .. 8g+7) for all four k: 6 words of quants, 32 elements.
const uint kBlockElems = 256u, kBlockBytes = kQ6kBlockBytes, kUnitsPerBlock = 8u;
#if defined(Q8_INPUTS)
// With int8 inputs: sub-block k's 32 elements are one group of the input (scale dx[k]); the
// quants become signed bytes q - 32 by a borrow-free subtraction on the whole word.
struct UnitInputs {
  uint t1[8], t2[8];  // [4h + k]: elements l = 8g + 4h .. +3 of sub-block k
  float dx[4];
};
UnitInputs unit_inputs(Words x, uint base, uint cols, uint b, uint u) {
  const Q8Row r = Q8Row(base, cols);
  const uint n = u >> 2, g = u & 3u;
  UnitInputs in_;
  for (uint k = 0u; k < 4u; ++k) {  // words for h = 0 and 1
    const uint word = 64u * b + 32u * n + 8u * k + 2u * g;
    const uvec2 a = q8_term1_pair(x, r, word), c = q8_term2_pair(x, r, word);
    in_.t1[k] = a.x, in_.t1[4u + k] = a.y, in_.t2[k] = c.x, in_.t2[4u + k] = c.y;
  }
  for (uint k = 0u; k < 4u; ++k) in_.dx[k] = q8_scale(x, r, 8u * b + 4u * n + k);
  return in_;
}
#else
struct UnitInputs {
  vec4 v[8];  // [4h + k]: elements l = 8g + 4h .. +3 of sub-block k
};
UnitInputs unit_inputs(Vec4s x, uint base, uint cols, uint b, uint u) {
  const uint xv = base + b * (kBlockElems / 4u);
  const uint n = u >> 2, g = u & 3u;
  UnitInputs in_;
  for (uint h = 0u; h < 2u; ++h)
    for (uint k = 0u; k < 4u; ++k)
      in_.v[4u * h + k] = input_vec4(x, xv + 32u * n + 8u * k + 2u * g + h);
  return in_;
}
#endif
float unit_dot(Words w, uint block_byte, uint u, UnitInputs in_) {
  const uint n = u >> 2, g = u & 3u;
  const float d = read_f16(w, block_byte + 208u);
  const uint ql = block_byte + 64u * n + 8u * g, qh = block_byte + 128u + 32u * n + 8u * g;
  const uint sc = block_byte + 192u + 8u * n + (g >> 1);
  float scale[4];
  for (uint k = 0u; k < 4u; ++k)
    scale[k] = float(bitfieldExtract(int(read_u8(w, sc + 2u * k)), 0, 8));
  float s = 0.0;
#if defined(Q8_INPUTS)
  int s1[4] = int[4](0, 0, 0, 0), s2[4] = int[4](0, 0, 0, 0);
#endif
  for (uint h = 0u; h < 2u; ++h) {  // l = 8g + 4h .. +3
    const uint a = read_u32(w, ql + 4u * h), b = read_u32(w, ql + 32u + 4u * h);
    const uint hb = read_u32(w, qh + 4u * h);
    const uint q[4] = uint[4]((a & 0x0F0F0F0Fu) | ((hb << 4) & 0x30303030u),
                              (b & 0x0F0F0F0Fu) | ((hb << 2) & 0x30303030u),
                              ((a >> 4) & 0x0F0F0F0Fu) | (hb & 0x30303030u),
                              ((b >> 4) & 0x0F0F0F0Fu) | ((hb >> 2) & 0x30303030u));
#if defined(Q8_INPUTS)
    for (uint k = 0u; k < 4u; ++k) {  // (q | 0x80) - 32 is 96 + q, no borrow; ^ 0x80: q - 32
      const uint qs = ((q[k] | 0x80808080u) - 0x20202020u) ^ 0x80808080u;
      s1[k] += dot4_i8(qs, in_.t1[4u * h + k]);
      s2[k] += dot4_i8(qs, in_.t2[4u * h + k]);
    }
#else
    for (uint k = 0u; k < 4u; ++k)
      s += scale[k] * dot(bytes_to_floats(q[k], 32.0), in_.v[4u * h + k]);
#endif
  }
#if defined(Q8_INPUTS)
  for (uint k = 0u; k < 4u; ++k)
    s += scale[k] * (in_.dx[k] * kInv254 * float(254 * s1[k] + s2[k]));
#endif
  return d * s;
}
#else
#error "define one WTYPE_<TYPE>"
#endif
