// The reference matrix multiplication: a weight matrix in its file format (any type
// dequantize_row knows) times float32 activations, one row per token. Activations are never
// quantized; weight rows are dequantized on the fly, a panel of rows (8 or 32) x 512 columns at a
// time, and each dequantized piece is used for every token of the batch while it is in cache, so
// a prefill batch pays for dequantization once, not once per token. Work is split over the
// panels.
#pragma once

#include <cstdint>
#include <memory>

#include "backend/backend_options.h"
#include "model/model.h"
#include "util/thread_pool.h"

namespace lockstep::cpu_ref {

// Rows of a panel: they are dequantized a column chunk at a time and share one pass over the
// tokens' columns (the register tiles take 4 of them at a time). Short panels keep the partial
// sums (rows x tokens x 64 bytes) and the dequantized piece near L1 and win while a token group's
// input slab (tokens x columns floats) stays in L2 from one panel to the next; past
// kMatmulTallPanelSlabBytes the slab comes from L3 for every panel, and tall panels, which need a
// quarter of the passes, win (bench/NOTES.md). Decode batches always take short panels: they use
// each dequantized value once or twice, so there is nothing to share.
inline constexpr int64_t kMatmulShortPanelRows = 8;
inline constexpr int64_t kMatmulTallPanelRows = 32;
inline constexpr int64_t kMatmulTallPanelSlabBytes = int64_t(1) << 20;
inline constexpr int64_t kMatmulMaxPanelRows = 64;
// Columns dequantized together: a multiple of every block size (1, 32, 256) and of the 16
// lanes, small enough that a register tile's 4 rows of it (8 KB) stay in L1 while every token of
// a batch uses them, and a tall panel's rows (64 KB) in L2.
inline constexpr int64_t kMatmulColumnChunk = 512;
// The same for batches of at most kMatmulSmallBatch tokens (decode), which use each dequantized
// value once or twice, so L1 residency gains little and wider pieces mean fewer of them. Whether
// 2048 beats 512 here is not settled (bench/NOTES.md); LOCKSTEP_REF_DECODE_CHUNK sets the width
// for measuring.
inline constexpr int64_t kMatmulSmallBatchChunk = 2048;
inline constexpr int64_t kMatmulSmallBatch = 2;
// Tokens whose partial sums a thread keeps at once; larger batches are done in groups (each
// group dequantizes the weights again).
inline constexpr int64_t kMatmulDefaultMaxTokens = 64;
// Every row block streams the group's whole input slab (tokens x cols floats) through the cache:
// at Qwen2.5-7B's ffn_down, 64 tokens x 18944 columns are 4.8 MB, more than a private L2. A
// group can be cut so that its slab stays under a limit (LOCKSTEP_REF_SLAB_KB, or
// MatmulScratch::set_input_slab_bytes); fewer tokens per group means dequantizing the weights
// more often. Off by default: no limit has paid where it was measured (bench/NOTES.md).
inline constexpr int64_t kMatmulInputSlabBytes = 0;  // 0: no limit

// Per-thread buffers (dequantized weight pieces, partial sums); sized once, reused by every
// matmul.
class MatmulScratch {
 public:
  MatmulScratch() = default;
  MatmulScratch(int n_threads, int64_t max_cols, int64_t max_tokens = kMatmulDefaultMaxTokens,
                const RefMatmulTuning& tuning = {});
  // 512, 1024 or 2048: a multiple of every block size that the weights buffer holds.
  static constexpr bool valid_chunk(int64_t c) { return c == 512 || c == 1024 || c == 2048; }
  static constexpr bool valid_panel_rows(int64_t r) {
    return r == 0 || r == 8 || r == 16 || r == 32 || r == 64;
  }
  float* weights(int thread) const { return buf_.get() + int64_t(thread) * stride_; }
  float* partial_sums(int thread) const { return weights(thread) + weights_floats_; }
  int n_threads() const { return n_threads_; }
  int64_t max_cols() const { return max_cols_; }
  int64_t max_tokens() const { return max_tokens_; }
  // Tokens per group for rows `cols` wide: max_tokens(), or fewer (a multiple of 4, at least 4)
  // to keep the group's input slab under the limit.
  int64_t token_group(int64_t cols) const;
  // The slab limit in bytes (0: none); starts at RefMatmulTuning::slab_bytes.
  void set_input_slab_bytes(int64_t bytes) { slab_bytes_ = bytes; }
  // Columns dequantized together for batches of more / at most kMatmulSmallBatch tokens.
  int64_t prefill_chunk() const { return prefill_chunk_; }
  int64_t decode_chunk() const { return decode_chunk_; }
  // Rows of a panel for a batch of n_tokens tokens of rows `cols` wide: as set_panel_rows set it
  // for batches of more than kMatmulSmallBatch tokens, else chosen by the rule above.
  int64_t panel_rows(int64_t cols, int64_t n_tokens) const;
  // 8, 16, 32 or 64 (else InputError), or 0: by the rule (the default).
  void set_panel_rows(int64_t rows);

 private:
  std::unique_ptr<float[]> buf_;
  int64_t weights_floats_ = 0;
  int64_t stride_ = 0;
  int64_t max_cols_ = 0;
  int64_t max_tokens_ = 0;
  int64_t slab_bytes_ = 0;
  int64_t prefill_chunk_ = kMatmulColumnChunk;
  int64_t decode_chunk_ = kMatmulSmallBatchChunk;
  int64_t panel_rows_ = 0;
  int n_threads_ = 0;
};

// y[t * w.rows + r] = sum_c w[r][c] * x[t * w.cols + c] for t < n_tokens and every row r.
// scratch must have been made for at least pool.size() threads and w.cols columns (else Error).
// Each dot product uses the 16-lane scheme of ops_ref.h, so y is bit-identical to
// cpu_ref::dot(dequantized row, x) whatever the thread count and batch size.
void matmul(float* y, const WeightView& w, const float* x, int64_t n_tokens, ThreadPool& pool,
            const MatmulScratch& scratch);

}  // namespace lockstep::cpu_ref
