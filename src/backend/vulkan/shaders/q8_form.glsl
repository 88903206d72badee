// The int8 form of a product's input (dot_unit.glsl with -DQ8_INPUTS reads it): each group of 32
// elements as two int8 terms with one scale, dx = max|v| / 127, q = roundEven(v / dx) and
// q2 = roundEven((v / dx - q) * 254), so v = dx * (q + q2 / 254) to within dx / 508 (plus float
// rounding): one term alone (llama.cpp's Q8_1 input) moves whole logit rows of random-weight
// models by cosine 1e-3; two keep them at the float products' level for one more integer dot
// product per 4 weights. A group holding a NaN or infinity gets dx = NaN (its float sum, which
// any NaN or infinity reaches, is tested), so non-finite inputs still reach the output.
//
// Layout of a row of n elements (n a multiple of 32), in 32-bit words from its first word:
//   q  [n / 4]   four int8 each, element order
//   q2 [n / 4]
//   dx [n / 32]  floats
//   xs [n / 32]  floats: each group's sum of v (Q4_K's min term), in element order
// Every shader that writes the form (quantize_q8.comp, attention.comp's epilogue) does it
// through write_q8_group, so all write the same bits for the same floats.

layout(buffer_reference, std430, buffer_reference_align = 4) writeonly buffer Q8Words {
  uint w[];
};

uint pack4(ivec4 q) {
  const uvec4 b = uvec4(q) & 0xFFu;
  return b.x | (b.y << 8) | (b.z << 16) | (b.w << 24);
}

// Group g (elements 32 g .. 32 g + 31, in v) of the row of n elements whose form starts at word
// `base` of out_.
void write_q8_group(Q8Words out_, uint base, uint n, uint g, vec4 v[8]) {
  float amax = 0.0, sum = 0.0;
  for (uint i = 0u; i < 8u; ++i)
    for (uint c = 0u; c < 4u; ++c) {
      const float a = abs(v[i][c]);
      amax = a > amax ? a : amax;  // a NaN compares false: counts as 0 (dx below carries it)
      sum += v[i][c];
    }
  const float inv = amax > 0.0 ? 127.0 / amax : 0.0;
  const uint n4 = n / 4u, n_groups = n / 32u;
  for (uint i = 0u; i < 8u; ++i) {
    const vec4 s = v[i] * inv;
    const ivec4 q = clamp(ivec4(roundEven(s)), -127, 127);
    const ivec4 q2 = clamp(ivec4(roundEven((s - vec4(q)) * 254.0)), -127, 127);
    out_.w[base + 8u * g + i] = pack4(q);
    out_.w[base + n4 + 8u * g + i] = pack4(q2);
  }
  const bool finite = !isnan(sum) && !isinf(sum) && !isinf(amax);
  out_.w[base + 2u * n4 + g] = finite ? floatBitsToUint(amax / 127.0) : 0x7FC00000u;
  out_.w[base + 2u * n4 + n_groups + g] = floatBitsToUint(sum);
}
