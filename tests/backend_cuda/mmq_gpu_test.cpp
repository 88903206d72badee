// The small-batch quantized products of mmq.cu (the batched decode's mmq route) against a float64
// reference: weights dequantized on the CPU with lockstep::dequantize_row, products in double.
//
// Bound. The kernels round each token's input per group of 32 to dx * (xq + xq2 / 254),
// dx = max|x| / 127, an error of at most dx/508 per element, so an output moves by at most
// B = sum_i |w_i| * dx(i) * (1/508 + 3e-5) (as in matvec_gpu_test.cpp: the 3e-5 covers the float
// rounding of the scaled input, of its residual and of dx). Beyond B, each element's error must
// stay below kRel * sum_i |w_i x_i|: float accumulation over a row's groups stays near 1e-7 of
// that scale, while one wrongly decoded 32-element block of a 2304-wide row is ~1e-2 of it. With
// the fused pre-norm the reference normalises in double; the kernels' float norm scale moves
// the input by ~1e-7 relative, inside the same slack. Every element must be finite unless its
// token's input is not; the output buffers start as NaN and carry guard regions, so a missed
// or stray write fails.
//
// Batch invariance (mmq.cu's promise): a token's row is bit for bit the same at every batch
// size, so the first tokens' rows are compared across B = 2, 7, 16, 33, 64, 128.
#include "backend_cuda/cuda_test_util.h"
#include "quant/blocks.h"
#include "quant/fp16.h"
#include "quant/quantize.h"

#include <algorithm>
#include <cstring>
#include <memory>

#ifdef LOCKSTEP_HAVE_CUDA

namespace lockstep::cuda_test {
namespace {

using cuda_ops::MatvecMode;

// 256 units of 2^-24: the K-quants' factored form (d * sc * q - dmin * m) can cancel a few bits
// against sum |w x|.
constexpr double kRel = 256.0 / double(1 << 24);
constexpr double kSiluLipschitz = 1.1;  // >= sup |silu'| (1.0998)

// Sets CudaKernelTuning::mmq_tiled for a scope (the tuning is process-wide): the tests run both
// of mmq.cu's kernels, the tiled one and the 16-row one (the default).
class MmqTiledScope {
 public:
  explicit MmqTiledScope(bool on) : saved_(cuda_ops::kernel_tuning()) {
    CudaKernelTuning t = saved_;
    t.mmq_tiled = on;
    cuda_ops::set_kernel_tuning(t);
  }
  ~MmqTiledScope() { cuda_ops::set_kernel_tuning(saved_); }
  MmqTiledScope(const MmqTiledScope&) = delete;
  MmqTiledScope& operator=(const MmqTiledScope&) = delete;

 private:
  CudaKernelTuning saved_;
};

const TensorType kTypes[] = {TensorType::Q4_0, TensorType::Q5_0, TensorType::Q8_0, TensorType::Q4_K,
                             TensorType::Q6_K};

// Inputs of a wide dynamic range: each group of 32 scaled by 10^u, u uniform in [-3, 3], and one
// element in eight of them 30x larger than its group (outliers set dx for the rest).
std::vector<float> wide_range_input(std::mt19937_64& rng, int64_t n) {
  std::vector<float> x = random_normal(rng, size_t(n), 1.0f);
  std::uniform_real_distribution<double> u(-3.0, 3.0);
  for (int64_t g = 0; g < n / 32; ++g) {
    const float s = float(std::pow(10.0, u(rng)));
    for (int64_t i = 0; i < 32; ++i) x[size_t(32 * g + i)] *= s;
    if (rng() % 8 == 0) x[size_t(32 * g + int64_t(rng() % 32))] *= 30.0f;
  }
  return x;
}

std::vector<float> dequantized(TensorType type, const std::vector<uint8_t>& w, int64_t rows,
                               int64_t cols) {
  std::vector<float> out(size_t(rows * cols));
  const uint64_t rb = *row_bytes(type, cols);
  for (int64_t r = 0; r < rows; ++r)
    dequantize_row(type, w.data() + uint64_t(r) * rb, out.data() + r * cols, cols);
  return out;
}

// RMS-normalised rows (x / sqrt(mean(x^2) + eps) * nw), in double, rounded to float.
std::vector<float> normalised(const std::vector<float>& x, const std::vector<float>& nw,
                              int64_t n_tok, int64_t cols, float eps) {
  std::vector<float> out(x.size());
  for (int64_t t = 0; t < n_tok; ++t) {
    double ss = 0;
    for (int64_t i = 0; i < cols; ++i)
      ss += double(x[size_t(t * cols + i)]) * x[size_t(t * cols + i)];
    const double scale = 1.0 / std::sqrt(ss / double(cols) + double(eps));
    for (int64_t i = 0; i < cols; ++i)
      out[size_t(t * cols + i)] = float(double(x[size_t(t * cols + i)]) * scale * nw[size_t(i)]);
  }
  return out;
}

// What the input's rounding error is multiplied by, per weight element: the dequantized weight,
// except for Q4_K, whose min term the kernel takes with the exact float sum of the group's input
// (xs, mmq.cu), so only the scale part d * sc * q meets the rounded input. That part can exceed
// |w| where the min cancels it (|w| alone under-bounded a Q4_K output by ~7 % on the H100,
// 2026-12-06, seed 12610894426978239321).
std::vector<float> bound_weights(TensorType type, const std::vector<uint8_t>& w, int64_t rows,
                                 int64_t cols) {
  if (type != TensorType::Q4_K) return dequantized(type, w, rows, cols);
  std::vector<float> out(size_t(rows * cols));
  const uint64_t rb = *row_bytes(type, cols);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t b = 0; b < cols / 256; ++b) {
      quant::BlockQ4_K blk;
      std::memcpy(&blk, w.data() + r * int64_t(rb) + b * int64_t(sizeof(quant::BlockQ4_K)),
                  sizeof blk);
      const float d = fp16_to_fp32(blk.d);
      for (int j = 0; j < 8; ++j) {
        uint8_t sc = 0, m = 0;
        quant::k4_scale_min(j, blk.scales, &sc, &m);
        for (int l = 0; l < 32; ++l) {
          const uint8_t byte = blk.qs[32 * (j / 2) + l];
          const int q = j % 2 ? byte >> 4 : byte & 0xF;
          out[size_t(r * cols + 256 * b + 32 * j + l)] = d * float(sc) * float(q);
        }
      }
    }
  return out;
}

// Products of n_tok input rows with the dequantized weights: want, sum |w x| and the
// quantization bound B, each [token][row]. bw: bound_weights (wf where empty).
struct Reference {
  std::vector<double> want, abs_sum, bound;
};

Reference reference(const std::vector<float>& wf, int64_t rows, int64_t cols,
                    const std::vector<float>& x, int64_t n_tok, const std::vector<float>& bw = {}) {
  const std::vector<float>& wb = bw.empty() ? wf : bw;
  Reference r;
  r.want.assign(size_t(n_tok * rows), 0.0);
  r.abs_sum = r.bound = r.want;
  parallel_for(n_tok * rows, [&](int64_t begin, int64_t end) {
    std::vector<double> half_dx(size_t(cols / 32));
    int64_t tok = -1;
    for (int64_t k = begin; k < end; ++k) {
      const int64_t t = k / rows, row = k % rows;
      const float* xt = x.data() + t * cols;
      if (t != tok) {
        tok = t;
        for (int64_t g = 0; g < cols / 32; ++g) {
          double amax = 0;
          for (int64_t i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(double(xt[32 * g + i])));
          half_dx[size_t(g)] = amax / 127.0 * (1.0 / 508.0 + 3e-5);
        }
      }
      const float* w = wf.data() + row * cols;
      const float* wbr = wb.data() + row * cols;
      double s = 0, a = 0, b = 0;
      for (int64_t i = 0; i < cols; ++i) {
        const double p = double(w[i]) * double(xt[i]);
        s += p, a += std::fabs(p), b += std::fabs(double(wbr[i])) * half_dx[size_t(i / 32)];
      }
      r.want[size_t(k)] = s, r.abs_sum[size_t(k)] = a, r.bound[size_t(k)] = b;
    }
  });
  return r;
}

// Compares got[t][r] with want + slack; `nan_tokens` must be non-finite in every row, every
// other element finite. Reports the first few failures.
void expect_within(const std::vector<float>& got, const std::vector<double>& want,
                   const std::vector<double>& slack, int64_t rows,
                   const std::vector<int64_t>& nan_tokens = {}) {
  int failures = 0;
  for (size_t k = 0; k < got.size() && failures < 5; ++k) {
    const int64_t t = int64_t(k) / rows, r = int64_t(k) % rows;
    const bool nan_row = std::find(nan_tokens.begin(), nan_tokens.end(), t) != nan_tokens.end();
    if (nan_row) {
      if (std::isfinite(got[k])) {
        ADD_FAILURE() << "token " << t << " row " << r << ": " << got[k]
                      << " from a non-finite input";
        ++failures;
      }
      continue;
    }
    const double err = std::fabs(double(got[k]) - want[k]);
    if (!(err <= slack[k])) {  // NaN fails too
      ADD_FAILURE() << "token " << t << " row " << r << ": got " << got[k] << ", want " << want[k]
                    << ", error " << err << " > allowed " << slack[k];
      ++failures;
    }
  }
}

// Plain products y = W x (+ bias, + y0 with Accumulate) of every type, B in {2, 7, 16, 33, 64,
// 128} (several token tiles, partial tiles), rows not multiples of the 16-row tile, rows of
// 2304 (K-quants: 9 super-blocks, 32-wide types: 72 blocks over 8 warps) and of 896 for the
// 32-wide types (the 0.5B's width); then the batch-invariance check across B.
TEST(CudaMmq, ProductsMatchFloat64ReferenceWithinTheTwoTermBound) {
  REQUIRE_CUDA_DEVICE();
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  constexpr int64_t kMaxTok = 128;
  const int64_t batches[] = {2, 7, 16, 33, 64, kMaxTok};
  for (bool tiled : {true, false})
    for (TensorType type : kTypes) {
      const MmqTiledScope scope(tiled);
      SCOPED_TRACE(tiled ? "tiled kernel" : "16-row kernel");
      const bool k_quant = type == TensorType::Q4_K || type == TensorType::Q6_K;
      for (int64_t cols : {int64_t(2304), int64_t(896)}) {
        if (k_quant && cols % 256 != 0) continue;
        const int64_t rows = cols == 896 ? 77 : 300;
        const bool accumulate = cols == 896, with_bias = cols != 896;
        SCOPED_TRACE(std::string(tensor_type_info(type).name) + " " + std::to_string(rows) + "x" +
                     std::to_string(cols));
        ASSERT_TRUE(cuda_ops::mmq_supported(type, cols));
        const std::vector<uint8_t> w = random_weights(rng, type, rows, cols);
        const std::vector<float> x = wide_range_input(rng, kMaxTok * cols);
        const std::vector<float> bias = random_normal(rng, size_t(rows), 1.0f);
        const std::vector<float> y0 = random_normal(rng, size_t(kMaxTok * rows), 1.0f);
        const Reference ref = reference(dequantized(type, w, rows, cols), rows, cols, x, kMaxTok,
                                        bound_weights(type, w, rows, cols));
        DeviceBuffer<uint8_t> d_w(w);
        DeviceBuffer<float> d_x(x), d_bias(bias);
        DeviceBuffer<uint8_t> d_scratch(cuda_ops::act_q8_scratch_bytes(cols, kMaxTok));
        const cuda_ops::ActQ8Scratch act = cuda_ops::act_q8_scratch(d_scratch.get(), cols, kMaxTok);
        std::vector<std::vector<float>> results;
        for (int64_t n_tok : batches) {
          SCOPED_TRACE("B " + std::to_string(n_tok));
          DeviceBuffer<float> d_y(size_t(n_tok * rows));
          if (accumulate) d_y.upload(y0);
          cuda_ops::mmq(type, d_w.get(), rows, cols, d_x.get(), n_tok, d_y.get(),
                        with_bias ? d_bias.get() : nullptr,
                        accumulate ? MatvecMode::Accumulate : MatvecMode::Store, nullptr, act);
          cuda_ops::synchronize();
          const std::vector<float> got = d_y.download();
          EXPECT_GUARDS(d_y);
          std::vector<double> want(got.size()), slack(got.size());
          for (size_t k = 0; k < got.size(); ++k) {
            const double add = (with_bias ? double(bias[k % size_t(rows)]) : 0.0) +
                               (accumulate ? double(y0[k]) : 0.0);
            want[k] = ref.want[k] + add;
            // The float additions of bias / y0 round once each at the output's magnitude.
            slack[k] = ref.bound[k] + kRel * ref.abs_sum[k] +
                       2.4e-7 * (std::fabs(want[k]) + std::fabs(add));
          }
          expect_within(got, want, slack, rows);
          results.push_back(got);
        }
        // The first two tokens' rows at every B are the same bits (the same input rows).
        for (size_t b = 1; b < results.size(); ++b)
          EXPECT_EQ(0, std::memcmp(results[0].data(), results[b].data(),
                                   size_t(2 * rows) * sizeof(float)))
              << "B " << batches[b] << ": the first two tokens' rows differ from B 2";
      }
    }
}

// A NaN in one token's input and an infinity in another's make those tokens' rows non-finite
// and leave every other row finite and correct: tokens 0 (first of the first tile), 21, and 64
// (first of the second tile) and the last token of B = 67 (the one padding lanes re-read).
TEST(CudaMmq, NonFiniteInputsStayInTheirTokensRows) {
  REQUIRE_CUDA_DEVICE();
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  constexpr int64_t kTok = 67, kRows = 40, kCols = 512;
  const std::vector<int64_t> bad = {0, 21, 64, kTok - 1};
  for (bool tiled : {true, false})
    for (TensorType type : kTypes) {
      const MmqTiledScope scope(tiled);
      SCOPED_TRACE(std::string(tensor_type_info(type).name) + (tiled ? " tiled" : " 16-row"));
      const std::vector<uint8_t> w = random_weights(rng, type, kRows, kCols);
      std::vector<float> x = wide_range_input(rng, kTok * kCols);
      const Reference ref = reference(dequantized(type, w, kRows, kCols), kRows, kCols, x, kTok,
                                      bound_weights(type, w, kRows, kCols));
      for (size_t i = 0; i < bad.size(); ++i)
        x[size_t(bad[i] * kCols + int64_t(rng() % kCols))] = i % 2 ? INFINITY : NAN;
      DeviceBuffer<uint8_t> d_w(w);
      DeviceBuffer<float> d_x(x), d_y(size_t(kTok * kRows));
      DeviceBuffer<uint8_t> d_scratch(cuda_ops::act_q8_scratch_bytes(kCols, kTok));
      const cuda_ops::ActQ8Scratch act = cuda_ops::act_q8_scratch(d_scratch.get(), kCols, kTok);
      cuda_ops::mmq(type, d_w.get(), kRows, kCols, d_x.get(), kTok, d_y.get(), nullptr,
                    MatvecMode::Store, nullptr, act);
      cuda_ops::synchronize();
      std::vector<double> slack(ref.want.size());
      for (size_t k = 0; k < slack.size(); ++k) slack[k] = ref.bound[k] + kRel * ref.abs_sum[k];
      expect_within(d_y.download(), ref.want, slack, kRows, bad);
      EXPECT_GUARDS(d_y);
    }
}

// The fused entries at small shapes (also the memcheck run's subject): three targets of other
// heights sharing one input with the pre-norm and biases (Q, K, V), and the gate/up pair with
// the pre-norm and the SwiGLU epilogue, for every type, B in {2, 9, 65}, both kernels (the
// tiled one with K split in two ranges, each tile's partials summed by the last block).
TEST(CudaMmq, SmallShapesFusedEntries) {
  REQUIRE_CUDA_DEVICE();
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  constexpr int64_t kCols = 1280;  // 5 chunks of 256: the tiled kernel splits K in 2 and 3
  constexpr float kEps = 1e-6f;
  for (bool tiled : {true, false})
    for (TensorType type : kTypes)
      for (int64_t n_tok : {2, 9, 65}) {
        const MmqTiledScope scope(tiled);
        SCOPED_TRACE(std::string(tensor_type_info(type).name) + " B " + std::to_string(n_tok) +
                     (tiled ? " tiled" : " 16-row"));
        const std::vector<float> x = wide_range_input(rng, n_tok * kCols);
        const std::vector<float> nw = random_normal(rng, size_t(kCols), 1.0f);
        const std::vector<float> xn = normalised(x, nw, n_tok, kCols, kEps);
        DeviceBuffer<float> d_x(x), d_nw(nw);
        DeviceBuffer<uint8_t> d_scratch(cuda_ops::act_q8_scratch_bytes(kCols, n_tok));
        const cuda_ops::ActQ8Scratch act = cuda_ops::act_q8_scratch(d_scratch.get(), kCols, n_tok);
        {  // Q, K, V
          const int64_t heights[3] = {33, 16, 5};
          std::vector<std::unique_ptr<DeviceBuffer<uint8_t>>> d_w;
          std::vector<std::unique_ptr<DeviceBuffer<float>>> d_b, d_y;
          std::vector<std::vector<uint8_t>> w;
          std::vector<std::vector<float>> b;
          cuda_ops::MatvecTarget targets[3];
          for (int j = 0; j < 3; ++j) {
            w.push_back(random_weights(rng, type, heights[j], kCols));
            b.push_back(random_normal(rng, size_t(heights[j]), 1.0f));
            d_w.push_back(std::make_unique<DeviceBuffer<uint8_t>>(w.back()));
            d_b.push_back(std::make_unique<DeviceBuffer<float>>(b.back()));
            d_y.push_back(std::make_unique<DeviceBuffer<float>>(size_t(heights[j] * n_tok)));
            targets[j] = {d_w[size_t(j)]->get(), heights[j], d_y[size_t(j)]->get(),
                          j == 1 ? nullptr : d_b[size_t(j)]->get()};
          }
          cuda_ops::mmq_multi(type, kCols, d_x.get(), n_tok, targets, 3, nullptr, d_nw.get(), kEps,
                              act);
          cuda_ops::synchronize();
          for (int j = 0; j < 3; ++j) {
            SCOPED_TRACE("target " + std::to_string(j));
            const int64_t rows = heights[j];
            const Reference ref =
                reference(dequantized(type, w[size_t(j)], rows, kCols), rows, kCols, xn, n_tok,
                          bound_weights(type, w[size_t(j)], rows, kCols));
            std::vector<double> want(ref.want), slack(ref.want.size());
            for (size_t k = 0; k < want.size(); ++k) {
              if (j != 1) want[k] += double(b[size_t(j)][k % size_t(rows)]);
              slack[k] = ref.bound[k] + kRel * ref.abs_sum[k] + 2.4e-7 * 2 * std::fabs(want[k]);
            }
            expect_within(d_y[size_t(j)]->download(), want, slack, rows);
            EXPECT_GUARDS(*d_y[size_t(j)]);
          }
        }
        {  // gate/up with SwiGLU
          constexpr int64_t kRows = 45;
          const std::vector<uint8_t> wg = random_weights(rng, type, kRows, kCols);
          const std::vector<uint8_t> wu = random_weights(rng, type, kRows, kCols);
          DeviceBuffer<uint8_t> d_wg(wg), d_wu(wu);
          DeviceBuffer<float> d_y(size_t(kRows * n_tok));
          cuda_ops::mmq_swiglu(type, d_wg.get(), d_wu.get(), kRows, kCols, d_x.get(), n_tok,
                               d_y.get(), nullptr, d_nw.get(), kEps, act);
          cuda_ops::synchronize();
          const Reference g = reference(dequantized(type, wg, kRows, kCols), kRows, kCols, xn,
                                        n_tok, bound_weights(type, wg, kRows, kCols));
          const Reference u = reference(dequantized(type, wu, kRows, kCols), kRows, kCols, xn,
                                        n_tok, bound_weights(type, wu, kRows, kCols));
          std::vector<double> want(g.want.size()), slack(g.want.size());
          for (size_t k = 0; k < want.size(); ++k) {
            const double sg = g.want[k] / (1.0 + std::exp(-g.want[k]));
            want[k] = sg * u.want[k];
            // Errors Eg, Eu of the two products move silu(g) * u by at most
            // |u| L Eg + (|silu(g)| + L Eg) Eu (matvec_gpu_test.cpp).
            const double eg = g.bound[k] + kRel * g.abs_sum[k];
            const double eu = u.bound[k] + kRel * u.abs_sum[k];
            slack[k] = std::fabs(u.want[k]) * kSiluLipschitz * eg +
                       (std::fabs(sg) + kSiluLipschitz * eg) * eu + 1e-6 * std::fabs(want[k]);
          }
          expect_within(d_y.download(), want, slack, kRows);
          EXPECT_GUARDS(d_y);
        }
      }
}

// Types and widths without an mmq kernel are refused (the backend keeps them on the matvecs).
TEST(CudaMmq, UnsupportedTypesAndWidthsAreRefused) {
  EXPECT_FALSE(cuda_ops::mmq_supported(TensorType::Q4_K, 896));  // not whole super-blocks
  EXPECT_FALSE(cuda_ops::mmq_supported(TensorType::Q5_K, 256));
  EXPECT_FALSE(cuda_ops::mmq_supported(TensorType::F16, 256));
  EXPECT_FALSE(cuda_ops::mmq_supported(TensorType::Q8_0, 48));
  EXPECT_TRUE(cuda_ops::mmq_supported(TensorType::Q8_0, 96));
  EXPECT_TRUE(cuda_ops::mmq_supported(TensorType::Q6_K, 4864));
}

}  // namespace
}  // namespace lockstep::cuda_test

#else
TEST(CudaMmq, Skipped) {
  GTEST_SKIP() << "skipped: no CUDA device";
}
#endif
