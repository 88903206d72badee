// The tile bookkeeping of the CUDA tensor-core prefill attention (backend/cuda/flash_tiles.h),
// checked on the CPU against brute force: the kernel's blocks, warps and rows are walked exactly
// as attention_flash.cu walks them, and every (query, key) pair is looked up.
#include "backend/cuda/flash_tiles.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

namespace lockstep::cuda_ops::flash {
namespace {

TEST(FlashTiles, RowPackingUsesAtMostOneBlockOfRows) {
  for (int gqa = 1; gqa <= 200; ++gqa) {
    const RowPacking rp = pack_rows(gqa);
    EXPECT_GE(rp.heads, 1);
    EXPECT_GE(rp.tokens, 1);
    EXPECT_LE(rp.heads * rp.tokens, kRows) << gqa;
    EXPECT_GE(rp.heads * rp.head_chunks, gqa) << gqa;
    EXPECT_LT(rp.heads * (rp.head_chunks - 1), gqa) << gqa;
    if (gqa <= kRows) {
      EXPECT_EQ(rp.heads, gqa);
    }
  }
  EXPECT_EQ(pack_rows(7).tokens, 9);  // qwen2.5-7b: 63 of 64 rows used
  EXPECT_EQ(pack_rows(1).tokens, 64);
}

TEST(FlashTiles, FirstKeyAndVisibility) {
  EXPECT_EQ(first_key(10, 0), 0);
  EXPECT_EQ(first_key(10, 4), 7);  // 7, 8, 9, 10: four keys
  EXPECT_EQ(first_key(2, 4), 0);
  EXPECT_TRUE(key_visible(10, 10, 1));
  EXPECT_FALSE(key_visible(9, 10, 1));
  EXPECT_FALSE(key_visible(11, 10, 0));
  EXPECT_TRUE(key_visible(0, 10, 0));
}

// Every (query row, key) of a prefill chunk, through the kernel's loops: each visible key lies in
// a tile the block visits and its warp computes; a tile the warp computes without the mask holds
// only keys each of its rows sees; each (token, head) is stored by exactly one row of one block;
// the position a row masks with is its query's.
TEST(FlashTiles, WarpsComputeEveryVisibleKeyAndMaskWhereNeeded) {
  for (int gqa : {1, 2, 3, 4, 7, 8, 16, 63, 64, 65, 72})
    for (int window : {0, 1, 2, 16, 63, 64, 65, 100, 5000})
      for (int pos0 : {0, 1, 63, 64, 200})
        for (int n_tok : {1, 2, 7, 9, 63, 64, 65, 130, 300}) {
          SCOPED_TRACE("gqa " + std::to_string(gqa) + " window " + std::to_string(window) +
                       " pos0 " + std::to_string(pos0) + " n_tok " + std::to_string(n_tok));
          const RowPacking rp = pack_rows(gqa);
          std::vector<int> stored(size_t(n_tok) * gqa, 0);
          const int n_blocks = (n_tok + rp.tokens - 1) / rp.tokens;
          int failures = 0;
          for (int b = 0; b < n_blocks; ++b)
            for (int chunk = 0; chunk < rp.head_chunks; ++chunk) {
              const int q0 = b * rp.tokens, g0 = chunk * rp.heads;
              const int tokens_here = std::min(rp.tokens, n_tok - q0);
              const int k_end = pos0 + q0 + tokens_here;
              const int kt_begin = tiles_begin(pos0 + q0, window);
              ASSERT_EQ(kt_begin % kKeys, 0);
              for (int w = 0; w < kWarps; ++w) {
                const TokenSpan span = warp_tokens(w, rp, tokens_here);
                const bool active = span.lo <= span.hi;
                const int w_lo = pos0 + q0 + span.lo, w_hi = pos0 + q0 + span.hi;
                for (int r = w * kWarpRows; r < (w + 1) * kWarpRows; ++r) {
                  const int t = r / rp.heads, gh = g0 + r % rp.heads;
                  // The kernel's store condition.
                  if (!active || t > span.hi || gh >= gqa) {
                    // A row without a query: beyond the block's tokens, the packing or the group.
                    EXPECT_TRUE(t >= tokens_here || r >= rp.tokens * rp.heads || gh >= gqa) << r;
                    continue;
                  }
                  ASSERT_LT(t, tokens_here);
                  ++stored[size_t(q0 + t) * gqa + size_t(gh)];
                  const int p = pos0 + q0 + t;
                  const int qpos = pos0 + q0 + std::min(r / rp.heads, span.hi);
                  ASSERT_EQ(qpos, p);
                  ASSERT_GE(p, w_lo);
                  ASSERT_LE(p, w_hi);
                  // Keys past the block's last query are never visible to its rows.
                  for (int k = 0; k <= p; ++k) {
                    if (!key_visible(k, p, window)) continue;
                    const int kt = k / kKeys * kKeys;
                    if (kt < kt_begin || kt >= k_end ||
                        classify_tile(kt, w_lo, w_hi, window) == kSkip)
                      ++failures;
                  }
                  for (int kt = kt_begin; kt < k_end; kt += kKeys)
                    if (classify_tile(kt, w_lo, w_hi, window) == kFull)
                      for (int k = kt; k < kt + kKeys; ++k)
                        if (!key_visible(k, p, window)) ++failures;
                }
              }
            }
          EXPECT_EQ(failures, 0);
          for (size_t i = 0; i < stored.size(); ++i) ASSERT_EQ(stored[i], 1) << "row " << i;
        }
}

// A skipped tile holds no key any row of the warp sees (so skipping it changes nothing), and a
// tile marked for the mask has at least one (query, key) pair that is masked.
TEST(FlashTiles, ClassificationIsTight) {
  for (int window : {0, 1, 5, 64, 70, 300})
    for (int lo = 0; lo < 200; lo += 7)
      for (int hi = lo; hi < lo + 20; hi += 3)
        for (int kt = 0; kt < 260; kt += kKeys) {
          int seen = 0, hidden = 0;
          for (int p = lo; p <= hi; ++p)
            for (int k = kt; k < kt + kKeys; ++k) (key_visible(k, p, window) ? seen : hidden)++;
          const int kind = classify_tile(kt, lo, hi, window);
          EXPECT_EQ(kind == kSkip, seen == 0) << window << " " << lo << " " << hi << " " << kt;
          EXPECT_EQ(kind == kFull, hidden == 0) << window << " " << lo << " " << hi << " " << kt;
        }
}

}  // namespace
}  // namespace lockstep::cuda_ops::flash
