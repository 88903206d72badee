// Tile bookkeeping of the tensor-core prefill attention (attention_flash.cu): how query rows are
// packed into a thread block, which key tiles a warp computes, and which of those need the
// per-element mask. Plain integer functions, host and device, so that a CPU unit test
// (tests/backend/flash_tiles_test.cpp) checks them against brute force over rows and keys.
#pragma once

#if defined(__CUDACC__)
#define LOCKSTEP_HOST_DEVICE __host__ __device__
#else
#define LOCKSTEP_HOST_DEVICE
#endif

namespace lockstep::cuda_ops::flash {

constexpr int kRows = 64;      // query rows per thread block (the M of its tile)
constexpr int kWarpRows = 16;  // rows per warp: one mma M of 16
constexpr int kWarps = kRows / kWarpRows;
constexpr int kKeys = 64;  // keys per tile

// A block's rows are (token, head) pairs of one KV head: the query heads of a GQA group share
// every K and V tile the block loads. Row r is token r / heads, head r % heads of the block's
// chunk of the group (a group wider than kRows is cut into head_chunks chunks); tokens * heads
// <= kRows rows are used (63 of 64 for qwen2.5's groups of 7).
struct RowPacking {
  int heads;        // query heads per block
  int tokens;       // query tokens per block
  int head_chunks;  // blocks along one GQA group
};

LOCKSTEP_HOST_DEVICE inline RowPacking pack_rows(int gqa) {
  const int heads = gqa < kRows ? gqa : kRows;
  return {heads, kRows / heads, (gqa + heads - 1) / heads};
}

// The first key a query at position p sees: with a sliding window it sees p - window + 1 .. p.
LOCKSTEP_HOST_DEVICE inline int first_key(int p, int window) {
  const int f = window > 0 ? p - window + 1 : 0;
  return f > 0 ? f : 0;
}

LOCKSTEP_HOST_DEVICE inline bool key_visible(int k, int p, int window) {
  return k <= p && k >= first_key(p, window);
}

// The tokens (block-relative) of warp w's rows, given that the block holds `tokens_here` of its
// rp.tokens tokens (fewer in the last block); lo > hi when the warp has no query at all.
struct TokenSpan {
  int lo, hi;
};

LOCKSTEP_HOST_DEVICE inline TokenSpan warp_tokens(int w, const RowPacking& rp, int tokens_here) {
  const int r0 = w * kWarpRows;
  int hi = (r0 + kWarpRows - 1) / rp.heads;
  if (hi > rp.tokens - 1) hi = rp.tokens - 1;
  if (hi > tokens_here - 1) hi = tokens_here - 1;
  return {r0 / rp.heads, hi};
}

// The first key tile (its first key) that a block or warp whose earliest query is at lo visits.
LOCKSTEP_HOST_DEVICE inline int tiles_begin(int lo, int window) {
  return first_key(lo, window) / kKeys * kKeys;
}

// What a group of rows at consecutive positions lo..hi does with the keys kt .. kt + kKeys - 1.
// The keys those rows see together are first_key(lo) .. hi (consecutive positions' ranges
// overlap), so a tile outside that range is skipped; a tile whose every key every row sees needs
// no mask; all others take the per-element mask (the diagonal, and the window's edge).
enum TileKind : int { kSkip = 0, kFull = 1, kMasked = 2 };

LOCKSTEP_HOST_DEVICE inline int classify_tile(int kt, int lo, int hi, int window) {
  if (kt > hi || kt + kKeys <= first_key(lo, window)) return kSkip;
  if (kt + kKeys - 1 <= lo && kt >= first_key(hi, window)) return kFull;
  return kMasked;
}

}  // namespace lockstep::cuda_ops::flash
