// Shared by every shader: buffers are reached through device addresses (push constants hold
// them; no descriptor sets), and block-format weights are read as 32-bit words and unpacked by
// hand, so no 8- or 16-bit storage feature is needed (GGUF blocks of 18, 22, 34 or 210 bytes
// are not word aligned; the readers below handle any byte offset).
#extension GL_EXT_buffer_reference : require

#if defined(WTYPE_Q6_K)
// Q6_K blocks are 210 bytes apart as in GGUF (every other block starts mid-word, and its words
// are read as two), or 212 where the backend padded them at upload (vk::kQ6kPaddedBlockBytes,
// every read one word). Specialization constant 2 of the shaders that read weights.
layout(constant_id = 2) const uint kQ6kBlockBytes = 210u;
#endif

layout(buffer_reference, std430, buffer_reference_align = 4) readonly buffer Words {
  uint w[];
};
layout(buffer_reference, std430, buffer_reference_align = 4) buffer Floats {
  float f[];
};
layout(buffer_reference, std430, buffer_reference_align = 4) buffer Ints {
  int i[];
};
// Two IEEE halves per word: the KV cache.
layout(buffer_reference, std430, buffer_reference_align = 4) buffer Halves {
  uint w[];
};

uint read_u8(Words src, uint byte_offset) {
  return (src.w[byte_offset >> 2] >> ((byte_offset & 3u) * 8u)) & 0xFFu;
}

// The 32-bit little-endian word at any byte offset.
uint read_u32(Words src, uint byte_offset) {
  const uint shift = (byte_offset & 3u) * 8u;
  const uint lo = src.w[byte_offset >> 2];
  if (shift == 0u) return lo;
  return (lo >> shift) | (src.w[(byte_offset >> 2) + 1u] << (32u - shift));
}

// An IEEE half at an even byte offset.
float read_f16(Words src, uint byte_offset) {
  return unpackHalf2x16((src.w[byte_offset >> 2] >> ((byte_offset & 2u) * 8u)) & 0xFFFFu).x;
}
