// hash_bytes: the digest behind the verdict cache's keys. A key must change with any byte, with
// the length, and with the seed; the same bytes must always give the same value.
#include <gtest/gtest.h>

#include <random>
#include <set>
#include <string>
#include <vector>

#include "util/hash.h"

namespace lockstep {
namespace {

TEST(HashBytes, EveryByteAndTheLengthMatter) {
  std::mt19937_64 rng(std::random_device{}());
  for (size_t n : {0u, 1u, 7u, 8u, 9u, 63u, 64u, 1000u}) {
    std::vector<unsigned char> bytes(n);
    for (auto& b : bytes) b = static_cast<unsigned char>(rng());
    const uint64_t h = hash_bytes(bytes.data(), n);
    EXPECT_EQ(h, hash_bytes(bytes.data(), n));
    EXPECT_NE(h, hash_bytes(bytes.data(), n, 1));
    std::set<uint64_t> seen = {h};
    for (size_t k = 0; k < n; ++k) {
      auto flipped = bytes;
      flipped[k] ^= static_cast<unsigned char>(1u << (rng() % 8));
      EXPECT_TRUE(seen.insert(hash_bytes(flipped.data(), n)).second) << "byte " << k << " of " << n;
    }
    // A trailing zero byte is not the same text.
    bytes.push_back(0);
    EXPECT_NE(h, hash_bytes(bytes.data(), n + 1)) << n;
  }
}

}  // namespace
}  // namespace lockstep
