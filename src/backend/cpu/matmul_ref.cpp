#include "backend/cpu/matmul_ref.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>

#include "backend/cpu/lane_tiles.h"
#include "backend/cpu/ops_ref.h"
#include "backend/cpu/simd_level.h"
#include "quant/dequantize_simd.h"
#include "quant/quantize.h"
#include "quant/vec_dot.h"
#include "util/error.h"

#if LOCKSTEP_X86_KERNELS
#include <immintrin.h>
#endif

namespace lockstep::cpu_ref {

namespace {

static_assert(kMatmulColumnChunk % 256 == 0 && kMatmulColumnChunk % kLanes == 0);
static_assert(kMatmulSmallBatchChunk % 256 == 0 && kMatmulSmallBatchChunk >= kMatmulColumnChunk);

// Loads the partial sums of R rows x T tokens (token t, row r at acc + t * token_step + r *
// kLanes), adds one column chunk to them and stores them back.
template <int R, int T>
LOCKSTEP_INLINE void accumulate_stored_tile(const float* w, int64_t w_stride, const float* x,
                                            int64_t x_stride, int64_t n_cols, float* acc,
                                            int64_t token_step) {
  Lanes a[R][T];
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < T; ++t) a[r][t] = load_lanes(acc + t * token_step + r * kLanes);
  accumulate_tile<R, T>(a, w, w_stride, x, x_stride, n_cols);
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < T; ++t) store_lanes(acc + t * token_step + r * kLanes, a[r][t]);
}

#if LOCKSTEP_X86_KERNELS
// The same arithmetic for AVX2, in intrinsics: each lane's products added by one FMA in column
// order and the tail zero-filled, which is what the vector type's `acc += w * x` compiles to
// where it is fused. GCC 12 compiled the vector type at this width into 16-byte pieces copied
// through the stack, and the AVX2 reference ran the gate's probe at ~6 GFLOP/s a core
// (bench/NOTES.md). 16 lanes are two registers here, and a tile of both halves (2 rows x 2
// tokens: 4 sums of two registers) fits AVX2's 16 registers only with 8 FMAs per 8 loads.
struct Avx2Lanes {
  // Half a tile: lanes 8h .. 8h + 7 of R rows x T tokens. A lane's sum is its own chain of FMAs
  // in column order, so the two halves may run apart (the same operations, the same bits), and
  // a half's accumulators are one register each: 4 rows x 3 tokens is 12 sums, 3 activation
  // registers and one for the weights streamed past them, 16 in all, 12 FMAs per 7 loads.
  template <int R, int T>
  static LOCKSTEP_TARGET_AVX2 LOCKSTEP_INLINE void stored_half(const float* w, int64_t w_stride,
                                                               const float* x, int64_t x_stride,
                                                               int64_t n_cols, float* acc,
                                                               int64_t token_step, int h) {
    __m256 a[R][T];
    for (int r = 0; r < R; ++r)
      for (int t = 0; t < T; ++t)
        a[r][t] = _mm256_loadu_ps(acc + t * token_step + r * kLanes + 8 * h);
    int64_t i = 0;
    for (; i + kLanes <= n_cols; i += kLanes) {
      __m256 xv[T];
      for (int t = 0; t < T; ++t) xv[t] = _mm256_loadu_ps(x + t * x_stride + i + 8 * h);
      for (int r = 0; r < R; ++r) {
        const __m256 wv = _mm256_loadu_ps(w + r * w_stride + i + 8 * h);
        for (int t = 0; t < T; ++t) a[r][t] = _mm256_fmadd_ps(wv, xv[t], a[r][t]);
      }
    }
    if (i < n_cols) {  // the last n < 16 columns, zero-filled (lane_tiles.h's load_tail)
      const int64_t have = std::clamp<int64_t>(n_cols - i - 8 * h, 0, 8);
      const __m256i m = _mm256_cmpgt_epi32(_mm256_set1_epi32(int(have)),
                                           _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
      // Masked loads read nothing past the columns (no fault, zeros in the masked lanes; all of
      // them when this half has none of the tail).
      const int64_t at = i + 8 * h;
      __m256 xv[T];
      for (int t = 0; t < T; ++t) xv[t] = _mm256_maskload_ps(x + t * x_stride + at, m);
      for (int r = 0; r < R; ++r) {
        const __m256 wv = _mm256_maskload_ps(w + r * w_stride + at, m);
        for (int t = 0; t < T; ++t) a[r][t] = _mm256_fmadd_ps(wv, xv[t], a[r][t]);
      }
    }
    for (int r = 0; r < R; ++r)
      for (int t = 0; t < T; ++t)
        _mm256_storeu_ps(acc + t * token_step + r * kLanes + 8 * h, a[r][t]);
  }

  // Tiles of 4 rows x 3 tokens in halves (stored_half); the row group's weights stay in L1 while
  // the tokens pass, and a tile's second half finds both in L1.
  static constexpr int kHalfRows = 4, kHalfTokens = 3;
  template <int R, int T>
  static LOCKSTEP_TARGET_AVX2 LOCKSTEP_INLINE void both_halves(const float* w, int64_t w_stride,
                                                               const float* x, int64_t x_stride,
                                                               int64_t n_cols, float* acc,
                                                               int64_t token_step) {
    stored_half<R, T>(w, w_stride, x, x_stride, n_cols, acc, token_step, 0);
    stored_half<R, T>(w, w_stride, x, x_stride, n_cols, acc, token_step, 1);
  }
  template <int R>
  static LOCKSTEP_TARGET_AVX2 LOCKSTEP_INLINE void half_rows(const float* w, int64_t w_stride,
                                                             const float* x, int64_t x_stride,
                                                             int64_t n_tokens, int64_t n_cols,
                                                             float* acc, int64_t token_step) {
    int64_t t = 0;
    for (; t + kHalfTokens <= n_tokens; t += kHalfTokens)
      both_halves<R, kHalfTokens>(w, w_stride, x + t * x_stride, x_stride, n_cols,
                                  acc + t * token_step, token_step);
    if (n_tokens - t == 2)
      both_halves<R, 2>(w, w_stride, x + t * x_stride, x_stride, n_cols, acc + t * token_step,
                        token_step);
    else if (n_tokens - t == 1)
      both_halves<R, 1>(w, w_stride, x + t * x_stride, x_stride, n_cols, acc + t * token_step,
                        token_step);
  }
  static LOCKSTEP_TARGET_AVX2 void chunk(const float* w, int64_t w_stride, int64_t n_rows,
                                         const float* x, int64_t x_stride, int64_t n_tokens,
                                         int64_t n_cols, float* acc, int64_t acc_rows) {
    const int64_t token_step = acc_rows * kLanes;
    int64_t r = 0;
    for (; r + kHalfRows <= n_rows; r += kHalfRows)
      half_rows<kHalfRows>(w + r * w_stride, w_stride, x, x_stride, n_tokens, n_cols,
                           acc + r * kLanes, token_step);
    switch (n_rows - r) {
      case 3:
        half_rows<3>(w + r * w_stride, w_stride, x, x_stride, n_tokens, n_cols, acc + r * kLanes,
                     token_step);
        break;
      case 2:
        half_rows<2>(w + r * w_stride, w_stride, x, x_stride, n_tokens, n_cols, acc + r * kLanes,
                     token_step);
        break;
      case 1:
        half_rows<1>(w + r * w_stride, w_stride, x, x_stride, n_tokens, n_cols, acc + r * kLanes,
                     token_step);
        break;
      default:
        break;
    }
  }
};
#endif

// R rows of one column chunk times every token: tiles of TOKENS tokens, the rest one at a time.
// The R dequantized rows (R x n_cols floats) stay in L1 while the tokens' columns stream past.
template <int R, int TOKENS>
LOCKSTEP_INLINE void accumulate_rows(const float* w, int64_t w_stride, const float* x,
                                     int64_t x_stride, int64_t n_tokens, int64_t n_cols, float* acc,
                                     int64_t token_step) {
  int64_t t = 0;
  for (; t + TOKENS <= n_tokens; t += TOKENS)
    accumulate_stored_tile<R, TOKENS>(w, w_stride, x + t * x_stride, x_stride, n_cols,
                                      acc + t * token_step, token_step);
  for (; t < n_tokens; ++t)
    accumulate_stored_tile<R, 1>(w, w_stride, x + t * x_stride, x_stride, n_cols,
                                 acc + t * token_step, token_step);
}

// Adds one column chunk (n_cols columns; the dequantized rows at w with row stride w_stride, the
// tokens' matching columns at x with row stride x_stride) to the partial sums of n_rows rows x
// n_tokens tokens (token t, row r at acc + (t * acc_rows + r) * kLanes). Rows go in groups of
// ROWS, the last n_rows % ROWS one at a time; each group in tiles of ROWS rows x TOKENS tokens.
// The tile is what the level's registers hold without spilling much: 4 x 4 accumulators of 16
// lanes need AVX-512's 32 registers (AVX2 has its own kernel, Avx2Lanes). A taller tile (8 x 3)
// would halve the activation traffic from L2, but GCC folds each weight load into all three of
// its multiply-adds unless an asm register pin stops it, and clang rejects that pin
// (bench/NOTES.md).
template <int ROWS, int TOKENS>
LOCKSTEP_INLINE void accumulate_chunk(const float* w, int64_t w_stride, int64_t n_rows,
                                      const float* x, int64_t x_stride, int64_t n_tokens,
                                      int64_t n_cols, float* acc, int64_t acc_rows) {
  const int64_t token_step = acc_rows * kLanes;  // floats of partial sums per token
  int64_t r = 0;
  for (; r + ROWS <= n_rows; r += ROWS)
    accumulate_rows<ROWS, TOKENS>(w + r * w_stride, w_stride, x, x_stride, n_tokens, n_cols,
                                  acc + r * kLanes, token_step);
  for (; r < n_rows; ++r)
    accumulate_rows<1, TOKENS>(w + r * w_stride, w_stride, x, x_stride, n_tokens, n_cols,
                               acc + r * kLanes, token_step);
}

#define LOCKSTEP_CHUNK_ARGS                                                           \
  const float *w, int64_t w_stride, int64_t n_rows, const float *x, int64_t x_stride, \
      int64_t n_tokens, int64_t n_cols, float *acc, int64_t acc_rows
#define LOCKSTEP_CHUNK_PASS w, w_stride, n_rows, x, x_stride, n_tokens, n_cols, acc, acc_rows

void chunk_baseline(LOCKSTEP_CHUNK_ARGS) {
  accumulate_chunk<4, 1>(LOCKSTEP_CHUNK_PASS);
}

#if LOCKSTEP_X86_KERNELS
LOCKSTEP_TARGET_AVX2 void chunk_avx2(LOCKSTEP_CHUNK_ARGS) {
  Avx2Lanes::chunk(LOCKSTEP_CHUNK_PASS);
}

LOCKSTEP_TARGET_AVX512 void chunk_avx512(LOCKSTEP_CHUNK_ARGS) {
  accumulate_chunk<4, 4>(LOCKSTEP_CHUNK_PASS);
}
#endif

using ChunkKernel = void (*)(LOCKSTEP_CHUNK_ARGS);

ChunkKernel chunk_kernel() {
#if LOCKSTEP_X86_KERNELS
  switch (active_simd_level()) {
    case SimdLevel::Avx512:
      return chunk_avx512;
    case SimdLevel::Avx2:
      return chunk_avx2;
    case SimdLevel::Baseline:
      break;
  }
#endif
  return chunk_baseline;
}

}  // namespace

MatmulScratch::MatmulScratch(int n_threads, int64_t max_cols, int64_t max_tokens,
                             const RefMatmulTuning& tuning)
    : max_cols_(max_cols),
      max_tokens_(std::max<int64_t>(max_tokens, 1)),
      slab_bytes_(std::max<int64_t>(0, tuning.slab_bytes)),
      prefill_chunk_(tuning.prefill_chunk),
      decode_chunk_(tuning.decode_chunk),
      n_threads_(n_threads) {
  if (!valid_chunk(prefill_chunk_) || !valid_chunk(decode_chunk_))
    throw InputError("reference matmul: column chunks must be 512, 1024 or 2048 (got " +
                     std::to_string(prefill_chunk_) + " and " + std::to_string(decode_chunk_) +
                     ")");
  // Room for the tallest panel, so that set_panel_rows never reallocates.
  weights_floats_ =
      std::max(kMatmulShortPanelRows * decode_chunk_, kMatmulMaxPanelRows * prefill_chunk_);
  stride_ = weights_floats_ + max_tokens_ * kMatmulMaxPanelRows * kLanes;
  buf_ = std::make_unique_for_overwrite<float[]>(size_t(n_threads) * size_t(stride_));
}

void MatmulScratch::set_panel_rows(int64_t rows) {
  if (!valid_panel_rows(rows))
    throw InputError("reference matmul: panel rows must be 0 (auto), 8, 16, 32 or 64 (got " +
                     std::to_string(rows) + ")");
  panel_rows_ = rows;
}

int64_t MatmulScratch::panel_rows(int64_t cols, int64_t n_tokens) const {
  if (n_tokens <= kMatmulSmallBatch) return kMatmulShortPanelRows;
  if (panel_rows_ > 0) return panel_rows_;
  const int64_t slab = std::min(n_tokens, token_group(cols)) * cols * int64_t(sizeof(float));
  return slab > kMatmulTallPanelSlabBytes ? kMatmulTallPanelRows : kMatmulShortPanelRows;
}

int64_t MatmulScratch::token_group(int64_t cols) const {
  if (slab_bytes_ <= 0 || cols <= 0) return max_tokens_;
  const int64_t fit = slab_bytes_ / (cols * int64_t(sizeof(float))) / 4 * 4;
  return std::clamp<int64_t>(fit, std::min<int64_t>(4, max_tokens_), max_tokens_);
}

void matmul(float* y, const WeightView& w, const float* x, int64_t n_tokens, ThreadPool& pool,
            const MatmulScratch& scratch) {
  if (w.cols > scratch.max_cols() || pool.size() > scratch.n_threads())
    throw Error("matmul: scratch made for " + std::to_string(scratch.max_cols()) + " columns x " +
                std::to_string(scratch.n_threads()) + " threads cannot serve '" + w.name + "' (" +
                std::to_string(w.cols) + " columns, " + std::to_string(pool.size()) + " threads)");
  const int64_t rows = w.rows;
  const int64_t cols = w.cols;
  const int64_t panel = scratch.panel_rows(cols, n_tokens);
  const int64_t chunk =
      n_tokens <= kMatmulSmallBatch ? scratch.decode_chunk() : scratch.prefill_chunk();
  const int64_t n_panels = (rows + panel - 1) / panel;
  const int64_t block_elems = tensor_type_info(w.type).block_elems;
  const int64_t block_bytes = tensor_type_info(w.type).block_bytes;
  // F32 rows are used in place: the file's rows are already contiguous floats.
  const bool in_place = w.type == TensorType::F32;
  const ChunkKernel kernel = chunk_kernel();
  const int64_t group = scratch.token_group(cols);
  // The SIMD dequantizer is looked up once here rather than in each dequantize_row call: a
  // decode matmul dequantizes its rows in hundreds of thousands of small pieces.
  const quant::DequantFn simd_dequantize =
      in_place ? nullptr : quant::simd_dequantizer(active_isa(), w.type);
  pool.parallel_for(n_panels, [&](int64_t panel_begin, int64_t panel_end, int thread) {
    float* wbuf = scratch.weights(thread);
    float* acc = scratch.partial_sums(thread);
    for (int64_t p = panel_begin; p < panel_end; ++p) {
      const int64_t r0 = p * panel;
      const int64_t n_rows = std::min(panel, rows - r0);
      for (int64_t t0 = 0; t0 < n_tokens; t0 += group) {
        const int64_t nt = std::min(group, n_tokens - t0);
        std::fill(acc, acc + nt * panel * kLanes, 0.0f);
        for (int64_t c0 = 0; c0 < cols; c0 += chunk) {
          const int64_t nc = std::min(chunk, cols - c0);
          const float* wc = wbuf;
          int64_t w_stride = chunk;
          if (in_place) {
            wc = reinterpret_cast<const float*>(w.row(r0)) + c0;
            w_stride = cols;
          } else {
            // c0 is a multiple of the block size, so the piece starts on a block boundary.
            for (int64_t j = 0; j < n_rows; ++j) {
              const uint8_t* src = w.row(r0 + j) + c0 / block_elems * block_bytes;
              if (simd_dequantize)
                simd_dequantize(src, wbuf + j * chunk, nc / block_elems);
              else
                dequantize_row(w.type, src, wbuf + j * chunk, nc);
            }
          }
          kernel(wc, w_stride, n_rows, x + t0 * cols + c0, cols, nt, nc, acc, panel);
        }
        for (int64_t t = 0; t < nt; ++t)
          for (int64_t j = 0; j < n_rows; ++j)
            y[(t0 + t) * rows + r0 + j] = reduce_lane_sums(acc + (t * panel + j) * kLanes);
      }
    }
  });
}

}  // namespace lockstep::cpu_ref
