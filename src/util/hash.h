// The project's one deterministic hash: splitmix64's finaliser (a bijective 64-bit mixer with full
// avalanche) and a combiner of up to four keys. The fault knobs of every backend (CPU and CUDA
// must inject the very same values) and the synthetic-model generator use it. Usable from CUDA
// device code: the functions are host+device there.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define LOCKSTEP_HOST_DEVICE __host__ __device__
#else
#define LOCKSTEP_HOST_DEVICE
#endif

namespace lockstep {

inline constexpr uint64_t kGoldenGamma = 0x9e3779b97f4a7c15ull;

// splitmix64's output function (without its increment).
LOCKSTEP_HOST_DEVICE inline constexpr uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// One splitmix64 step: the state advanced by the golden gamma, then mixed.
LOCKSTEP_HOST_DEVICE inline constexpr uint64_t splitmix64(uint64_t z) {
  return mix64(z + kGoldenGamma);
}

// Four keys folded into one value (the fault knobs' keys: kind, layer, position, index).
LOCKSTEP_HOST_DEVICE inline constexpr uint64_t hash4(uint64_t a, uint64_t b, uint64_t c,
                                                     uint64_t d) {
  return splitmix64(splitmix64(splitmix64(splitmix64(a) ^ b) ^ c) ^ d);
}

// Uniform in [-1, 1), from the top 24 bits of a hash.
LOCKSTEP_HOST_DEVICE inline float unit_noise(uint64_t h) {
  return float(double(h >> 40) * (2.0 / double(1ull << 24)) - 1.0);
}

// A 64-bit digest of a byte string (identity checks such as the verdict cache's keys; not
// cryptographic): each 8-byte little-endian word is folded in with mix64, then the length.
inline uint64_t hash_bytes(const void* data, uint64_t n, uint64_t seed = 0) {
  const auto* p = static_cast<const unsigned char*>(data);
  uint64_t h = splitmix64(seed);
  uint64_t k = 0;
  for (; k + 8 <= n; k += 8) {
    uint64_t w = 0;
    for (int b = 0; b < 8; ++b) w |= uint64_t(p[k + b]) << (8 * b);
    h = mix64(h ^ w) + kGoldenGamma;
  }
  uint64_t tail = 0;
  for (int b = 0; k + b < n; ++b) tail |= uint64_t(p[k + b]) << (8 * b);
  return mix64(mix64(h ^ tail) ^ n);
}

}  // namespace lockstep
