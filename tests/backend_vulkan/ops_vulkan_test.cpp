// Every Vulkan shader against a float64 CPU computation on fresh random inputs (a new seed per
// run; LOCKSTEP_TEST_SEED=N replays one). Output buffers start as NaN bytes and are surrounded by
// guard regions, so an element a shader forgot to write, a NaN it produced or a write out of
// bounds fails. The Khronos validation layer is on (when installed): any error it reports fails
// the submission and so the test.
//
// Bounds: matmul rows are dot products, judged relative to their own scale sum |w x|
// (dot_error_ratio) below 64 * 2^-24 (float32 accumulation stays near 1e-7 of it; one wrongly
// decoded 32-element chunk is ~1e-2). The other ops are elementwise or short reductions: NMSE
// below 1e-11 (float32 rounding gives ~1e-14; a wrong index or formula gives ~1).
#include "backend_vulkan/vulkan_test_util.h"

#ifdef LOCKSTEP_HAVE_VULKAN

#include <cmath>
#include <cstdio>
#include <memory>
#include <random>

#include "backend_cuda/cuda_test_util.h"
#include "quant/fp16.h"
#include "quant/quantize.h"
#include "util/error.h"

namespace lockstep::vulkan_test {
namespace {

using cuda_test::compare;
using cuda_test::dot_error_ratio;
using cuda_test::fresh_seed;
using cuda_test::random_normal;
using cuda_test::random_weights;
using cuda_test::reference_matvec;

constexpr double kDotErrorRatio = 64.0 / double(1 << 24);
constexpr double kNmse = 1e-11;

class VulkanOps : public ::testing::Test {
 protected:
  void SetUp() override {
    REQUIRE_VULKAN_DEVICE();
    vk::ContextOptions o;
    o.device = test_device();
    o.validation = true;
    ctx_ = std::make_unique<vk::Context>(o);
    static bool said = false;  // once per binary: which device, and whether validation is on
    if (!said) {
      std::printf("[ vulkan   ] %s, validation layer %s\n", ctx_->device_name().c_str(),
                  ctx_->validation_enabled() ? "on" : "NOT installed");
      said = true;
    }
    seed_ = fresh_seed();
    rng_.seed(seed_);
    errors_before_ = vulkan_validation_errors();
  }
  void TearDown() override {
    if (ctx_) {
      EXPECT_EQ(vulkan_validation_errors(), errors_before_) << "validation errors";
    }
    ctx_.reset();
  }
  std::string trace() const {
    return "LOCKSTEP_TEST_SEED=" + std::to_string(seed_) + " on " + ctx_->device_name() +
           (ctx_->validation_enabled() ? " (validation layer on)" : " (no validation layer)");
  }

  std::unique_ptr<vk::Context> ctx_;
  uint64_t seed_ = 0;
  std::mt19937_64 rng_;
  uint64_t errors_before_ = 0;
};

// ---- matmul: every weight type, token counts across tile boundaries, accumulate and bias ------

struct MatmulCase {
  TensorType type;
  int64_t cols;
  bool padded = false;  // Q6_K blocks padded to 212 bytes (LOCKSTEP_VULKAN_Q6K_PAD)
};

std::string case_name(const MatmulCase& c) {
  return std::string(tensor_type_info(c.type).name) + (c.padded ? "_padded" : "");
}

// A matrix of the file's layout (w) in device memory, in the layout the backend uploads
// (vk::to_device_layout: Q6_K blocks padded where `padded`).
struct DeviceWeights {
  DeviceWeights(vk::Context& ctx, TensorType type, int64_t rows, int64_t cols,
                const std::vector<uint8_t>& w, bool padded)
      : buffer(ctx, device_layout(type, rows, cols, w, padded)),
        matrix{type,
               rows,
               cols,
               vk::device_row_bytes(type, cols, *row_bytes(type, cols), padded),
               buffer.address(),
               padded} {}
  static std::vector<uint8_t> device_layout(TensorType type, int64_t rows, int64_t cols,
                                            const std::vector<uint8_t>& w, bool padded) {
    const uint64_t file = *row_bytes(type, cols);
    std::vector<uint8_t> out(size_t(vk::device_row_bytes(type, cols, file, padded) * rows));
    vk::to_device_layout(type, rows, cols, file, padded, w.data(), out.data());
    return out;
  }
  const TestBuffer<uint8_t> buffer;
  const vk::DeviceMatrix matrix;
};

class VulkanMatmul : public VulkanOps, public ::testing::WithParamInterface<MatmulCase> {};

// Rows W . x[t] in float64 for t < n_tok (x's rows x_stride floats apart), plus y0[t][r] where
// accumulating (y0 given) or bias[r] (bias given), appended to want, with dot_error_ratio's scale
// (the sum of the terms' magnitudes) appended to scale.
void expected_products(TensorType type, const std::vector<uint8_t>& w, int64_t rows, int64_t cols,
                       const std::vector<float>& x, size_t x_stride, int n_tok, const float* y0,
                       const float* bias, std::vector<double>& want, std::vector<double>& scale) {
  for (int t = 0; t < n_tok; ++t) {
    std::vector<double> abs_sum;
    const auto y =
        reference_matvec(type, w.data(), rows, cols, x.data() + size_t(t) * x_stride, &abs_sum);
    for (int64_t r = 0; r < rows; ++r) {
      double extra = 0;
      if (y0) extra = y0[size_t(t * rows + r)];
      if (bias) extra = bias[size_t(r)];
      want.push_back(y[size_t(r)] + extra);
      scale.push_back(abs_sum[size_t(r)] + std::fabs(extra));
    }
  }
}

TEST_P(VulkanMatmul, MatchesFloat64) {
  const TensorType type = GetParam().type;
  const int64_t rows = 77, cols = GetParam().cols;
  SCOPED_TRACE(trace() + " " + case_name(GetParam()) + " cols " + std::to_string(cols));
  const std::vector<uint8_t> w = random_weights(rng_, type, rows, cols);
  const DeviceWeights dw(*ctx_, type, rows, cols, w, GetParam().padded);
  const vk::DeviceMatrix& m = dw.matrix;
  // The shape matvec.comp picks for these small matrices, then every other team size and rows
  // per thread (LOCKSTEP_VULKAN_MATVEC_TEAM, _ROWS): teams within one subgroup and across
  // several, rows past the end of the matrix in a thread's share; and grids capped at 3 and 2
  // workgroups (_GROUPS), each then taking several row groups in turn.
  const std::vector<vk::ProductTuning> tunings = {{0, 0},  {4, 1}, {8, 2},  {16, 4},    {32, 1},
                                                  {32, 4}, {4, 4}, {16, 2}, {32, 1, 3}, {8, 2, 2}};
  for (const vk::ProductTuning& tuning : tunings) {
    vk::set_product_tuning(tuning);
    const bool automatic = tuning.team == 0;
    for (int n_tok : automatic ? std::vector<int>{1, 3, 5, 8, 19} : std::vector<int>{1, 11}) {
      for (int variant = 0; variant < (automatic ? 3 : 1); ++variant) {  // plain, accumulate, bias
        SCOPED_TRACE("team " + std::to_string(tuning.team) + " rows/thread " +
                     std::to_string(tuning.rows_per_thread) + " groups " +
                     std::to_string(tuning.max_groups) + " n_tok " + std::to_string(n_tok) +
                     " variant " + std::to_string(variant));
        const bool accumulate = variant == 1, with_bias = variant == 2;
        const std::vector<float> x = random_normal(rng_, size_t(n_tok * cols), 1.0f);
        const std::vector<float> y0 = random_normal(rng_, size_t(n_tok * rows), 1.0f);
        const std::vector<float> bias = random_normal(rng_, size_t(rows), 1.0f);
        TestBuffer<float> dx(*ctx_, x), dbias(*ctx_, bias);
        TestBuffer<float> dy(*ctx_, size_t(n_tok * rows));
        if (accumulate) std::memcpy(dy.data(), y0.data(), dy.bytes());
        run_commands(*ctx_, [&](vk::Recorder& rec) {
          vk::record_matmul(rec, m, dx.address(), uint32_t(cols), dy.address(), uint32_t(rows),
                            n_tok, accumulate, with_bias ? dbias.address() : 0);
        });
        std::vector<double> want, scale;
        expected_products(type, w, rows, cols, x, size_t(cols), n_tok,
                          accumulate ? y0.data() : nullptr, with_bias ? bias.data() : nullptr, want,
                          scale);
        EXPECT_LE(dot_error_ratio(dy.read(), want, scale), kDotErrorRatio);
        EXPECT_GUARDS(dy);
      }
    }
  }
  vk::set_product_tuning({});
}

// The shared-memory tiled product (gemm.comp) that prompt chunks of at least gemm_min_tokens
// tokens use: token counts inside one 64-token tile, exactly one, and across tiles with a partial
// last one; 77 and 130 rows (partial row tiles), inputs further apart than a row; plain,
// accumulate and bias. Rows whose length is not a multiple of 32 never reach it.
TEST_P(VulkanMatmul, TiledGemmMatchesFloat64) {
  const TensorType type = GetParam().type;
  const int64_t cols = GetParam().cols;
  SCOPED_TRACE(trace() + " " + case_name(GetParam()) + " cols " + std::to_string(cols));
  vk::set_product_tuning({0, 0, 0, 32});
  struct Shape {
    int64_t rows;
    int n_tok;
  };
  for (const Shape shape :
       {Shape{77, 31}, Shape{77, 64}, Shape{77, 100}, Shape{130, 32}, Shape{130, 130}}) {
    const int64_t rows = shape.rows;
    const int n_tok = shape.n_tok;
    const std::vector<uint8_t> w = random_weights(rng_, type, rows, cols);
    const DeviceWeights dw(*ctx_, type, rows, cols, w, GetParam().padded);
    const vk::DeviceMatrix& m = dw.matrix;
    {
      for (int variant = 0; variant < 3; ++variant) {  // plain, accumulate, bias
        SCOPED_TRACE("rows " + std::to_string(rows) + " n_tok " + std::to_string(n_tok) +
                     " variant " + std::to_string(variant));
        const uint32_t x_stride = uint32_t(cols) + (variant == 2 ? 8u : 0u);
        const bool accumulate = variant == 1, with_bias = variant == 2;
        const std::vector<float> x = random_normal(rng_, size_t(n_tok) * x_stride, 1.0f);
        const std::vector<float> y0 = random_normal(rng_, size_t(n_tok * rows), 1.0f);
        const std::vector<float> bias = random_normal(rng_, size_t(rows), 1.0f);
        TestBuffer<float> dx(*ctx_, x), dbias(*ctx_, bias);
        TestBuffer<float> dy(*ctx_, size_t(n_tok * rows));
        const bool tiled = vk::gemm_takes(*ctx_, m, dx.address(), x_stride, n_tok);
        if (cols % 32 != 0 || n_tok < 32) {
          EXPECT_FALSE(tiled);
        } else if (!tiled) {
          GTEST_SKIP() << "skipped: " << ctx_->device_name() << " has " << ctx_->max_shared_bytes()
                       << " bytes of shared memory per workgroup";
        }
        if (accumulate) std::memcpy(dy.data(), y0.data(), dy.bytes());
        run_commands(*ctx_, [&](vk::Recorder& rec) {
          vk::record_matmul(rec, m, dx.address(), x_stride, dy.address(), uint32_t(rows), n_tok,
                            accumulate, with_bias ? dbias.address() : 0);
        });
        std::vector<double> want, scale;
        expected_products(type, w, rows, cols, x, x_stride, n_tok, accumulate ? y0.data() : nullptr,
                          with_bias ? bias.data() : nullptr, want, scale);
        EXPECT_LE(dot_error_ratio(dy.read(), want, scale), kDotErrorRatio);
        EXPECT_GUARDS(dy);
      }
    }
  }
  vk::set_product_tuning({});
}

// What an FFN's gate and up rows give for one token's inputs x in float64: silu(g) * u (or g
// alone without swiglu), appended to want, with dot_error_ratio's scale. Error bound: silu(g) u
// moves by |silu'(g)| |u| dg + |silu(g)| du, |silu'| < 1.1, and each product's error is bounded
// by its sum of |terms|.
void append_gate_up_rows(TensorType type, const std::vector<uint8_t>& w_gate,
                         const std::vector<uint8_t>& w_up, int64_t rows, int64_t cols,
                         const float* x, bool swiglu, std::vector<double>& want,
                         std::vector<double>& scale) {
  std::vector<double> abs_g, abs_u;
  const auto g = reference_matvec(type, w_gate.data(), rows, cols, x, &abs_g);
  const auto u = reference_matvec(type, w_up.data(), rows, cols, x, &abs_u);
  for (int64_t r = 0; r < rows; ++r) {
    const size_t i = size_t(r);
    const double silu = g[i] / (1.0 + std::exp(-g[i]));
    want.push_back(swiglu ? silu * u[i] : g[i]);
    scale.push_back(swiglu ? 1.1 * std::fabs(u[i]) * abs_g[i] + std::fabs(silu) * abs_u[i]
                           : abs_g[i]);
  }
}

// An FFN's gate and up matrices of fresh random weights, on the host and on the device.
struct GateUpPair {
  GateUpPair(vk::Context& ctx, std::mt19937_64& rng, const MatmulCase& c, int64_t rows)
      : w_gate(random_weights(rng, c.type, rows, c.cols)),
        w_up(random_weights(rng, c.type, rows, c.cols)),
        d_gate(ctx, c.type, rows, c.cols, w_gate, c.padded),
        d_up(ctx, c.type, rows, c.cols, w_up, c.padded),
        gate(d_gate.matrix),
        up(d_up.matrix) {}
  const std::vector<uint8_t> w_gate, w_up;
  const DeviceWeights d_gate, d_up;
  const vk::DeviceMatrix gate, up;
};

// RMSNorm taken into the product (vk::NormFirst): x is the norm's input, alone and with the FFN's
// SwiGLU pair, against the norm and the product in float64. Matrices matvec.comp does not take
// (rows of 172 floats) must say so.
TEST_P(VulkanMatmul, NormFirstMatchesFloat64) {
  const TensorType type = GetParam().type;
  const int64_t rows = 77, cols = GetParam().cols;
  SCOPED_TRACE(trace() + " " + case_name(GetParam()) + " cols " + std::to_string(cols));
  const GateUpPair pair(*ctx_, rng_, GetParam(), rows);
  const vk::DeviceMatrix &m = pair.gate, &up = pair.up;
  const std::vector<float> g = random_normal(rng_, size_t(cols), 1.0f);
  TestBuffer<float> dg(*ctx_, g);
  const float eps = 1e-5f;
  const vk::NormFirst norm{dg.address(), eps};
  if (cols % 32 != 0) {
    EXPECT_FALSE(vk::matvec_takes_norm(m, dg.address(), uint32_t(cols), norm));
    return;
  }
  for (const vk::ProductTuning& tuning :
       std::vector<vk::ProductTuning>{{0, 0}, {4, 1}, {16, 2}, {32, 1, 3}}) {
    vk::set_product_tuning(tuning);
    for (int n_tok : {1, 3, 11}) {
      for (bool swiglu : {false, true}) {
        SCOPED_TRACE("team " + std::to_string(tuning.team) + " rows/thread " +
                     std::to_string(tuning.rows_per_thread) + " n_tok " + std::to_string(n_tok) +
                     (swiglu ? " swiglu" : ""));
        const std::vector<float> x = random_normal(rng_, size_t(n_tok * cols), 2.0f);
        TestBuffer<float> dx(*ctx_, x), dy(*ctx_, size_t(n_tok * rows)),
            scratch(*ctx_, size_t(n_tok * rows));
        ASSERT_TRUE(vk::matvec_takes_norm(m, dx.address(), uint32_t(cols), norm));
        run_commands(*ctx_, [&](vk::Recorder& rec) {
          if (swiglu)
            vk::record_matmul_swiglu(rec, m, up, dx.address(), uint32_t(cols), dy.address(),
                                     scratch.address(), n_tok, norm);
          else
            vk::record_matmul(rec, m, dx.address(), uint32_t(cols), dy.address(), uint32_t(rows),
                              n_tok, false, 0, norm);
        });
        std::vector<double> want, scale;
        for (int t = 0; t < n_tok; ++t) {
          const float* xt = x.data() + t * cols;
          double ss = 0;
          for (int64_t c = 0; c < cols; ++c) ss += double(xt[c]) * xt[c];
          const double s = 1.0 / std::sqrt(ss / double(cols) + eps);
          std::vector<float> xn(static_cast<size_t>(cols));
          for (int64_t c = 0; c < cols; ++c) xn[size_t(c)] = float(xt[c] * s * g[size_t(c)]);
          append_gate_up_rows(type, pair.w_gate, pair.w_up, rows, cols, xn.data(), swiglu, want,
                              scale);
        }
        EXPECT_LE(dot_error_ratio(dy.read(), want, scale), kDotErrorRatio);
        EXPECT_GUARDS(dy);
      }
    }
  }
  vk::set_product_tuning({});
}

// An FFN's gate and up products with SwiGLU: one matvec.comp dispatch where it takes the matrices
// (the thread's second row is up's, whatever rows per thread is asked for), matmul.comp and
// swiglu.comp otherwise (F32 and F16 rows of 172).
TEST_P(VulkanMatmul, SwigluPairMatchesFloat64) {
  const TensorType type = GetParam().type;
  const int64_t rows = 77, cols = GetParam().cols;
  SCOPED_TRACE(trace() + " " + case_name(GetParam()) + " cols " + std::to_string(cols));
  const GateUpPair pair(*ctx_, rng_, GetParam(), rows);
  const vk::DeviceMatrix &gate = pair.gate, &up = pair.up;
  for (const vk::ProductTuning& tuning : std::vector<vk::ProductTuning>{
           {0, 0}, {4, 1}, {16, 2}, {32, 4}, {32, 1, 3}, {0, 0, 0, 32}}) {
    vk::set_product_tuning(tuning);
    // With gemm_min_tokens 32, 40 tokens take the tiled products and swiglu.comp.
    for (int n_tok :
         tuning.gemm_min_tokens ? std::vector<int>{11, 40} : std::vector<int>{1, 3, 11}) {
      SCOPED_TRACE("team " + std::to_string(tuning.team) + " rows/thread " +
                   std::to_string(tuning.rows_per_thread) + " gemm from " +
                   std::to_string(tuning.gemm_min_tokens) + " n_tok " + std::to_string(n_tok));
      const std::vector<float> x = random_normal(rng_, size_t(n_tok * cols), 1.0f);
      TestBuffer<float> dx(*ctx_, x), dy(*ctx_, size_t(n_tok * rows)),
          scratch(*ctx_, size_t(n_tok * rows));
      run_commands(*ctx_, [&](vk::Recorder& rec) {
        vk::record_matmul_swiglu(rec, gate, up, dx.address(), uint32_t(cols), dy.address(),
                                 scratch.address(), n_tok);
      });
      std::vector<double> want, scale;
      for (int t = 0; t < n_tok; ++t)
        append_gate_up_rows(type, pair.w_gate, pair.w_up, rows, cols, x.data() + t * cols, true,
                            want, scale);
      EXPECT_LE(dot_error_ratio(dy.read(), want, scale), kDotErrorRatio);
      EXPECT_GUARDS(dy);
    }
  }
  vk::set_product_tuning({});
}

// RMSNorm's output of x in float64 rounded to float (what the int8 form's bound is computed on),
// or x itself without a norm weight.
std::vector<float> normed_rows(const std::vector<float>& x, int n_tok, int64_t cols,
                               uint32_t x_stride, const std::vector<float>& g, float eps) {
  std::vector<float> out(size_t(n_tok) * size_t(cols));
  for (int t = 0; t < n_tok; ++t) {
    const float* xt = x.data() + size_t(t) * x_stride;
    double ss = 0;
    for (int64_t c = 0; c < cols; ++c) ss += double(xt[c]) * xt[c];
    const double s = g.empty() ? 1.0 : 1.0 / std::sqrt(ss / double(cols) + eps);
    for (int64_t c = 0; c < cols; ++c)
      out[size_t(t * cols + c)] = g.empty() ? xt[c] : float(xt[c] * s * g[size_t(c)]);
  }
  return out;
}

// Products over the int8 form of their input (vk::record_quantize_q8 with and without RMSNorm,
// then record_matmul / record_matmul_swiglu given it): Q4_K and Q6_K, with integer dot products.
// Each row may differ from float64 by the inputs' rounding bound B (int8_input_bound) and, beyond
// it, by float rounding (kDotErrorRatio); for SwiGLU, errors Eg <= Bg and Eu <= Bu move
// silu(g) u by at most |u| L Bg + (|silu(g)| + L Bg) Bu, L = 1.1. Token counts of 1 and 3 take
// matvec_q8, 11 the 8-token tiles; the shapes of the float tests.
TEST_P(VulkanMatmul, Int8InputsMatchFloat64) {
  const TensorType type = GetParam().type;
  if (!vk::matvec_reads_q8(type)) return;  // the float products serve the other types
  if (!ctx_->integer_dot_product())
    GTEST_SKIP() << "skipped: " << ctx_->device_name() << " has no integer dot products";
  const int64_t rows = 77, cols = GetParam().cols;
  SCOPED_TRACE(trace() + " " + case_name(GetParam()) + " cols " + std::to_string(cols));
  const GateUpPair pair(*ctx_, rng_, GetParam(), rows);
  const vk::DeviceMatrix &gate = pair.gate, &up = pair.up;
  const std::vector<uint8_t>& wg = pair.w_gate;
  const std::vector<uint8_t>& wu = pair.w_up;
  const std::vector<float> g = random_normal(rng_, size_t(cols), 1.0f);
  TestBuffer<float> dnorm(*ctx_, g);
  const float eps = 1e-5f;
  const uint32_t x_stride = uint32_t(cols + 36);  // rows apart by more than their length
  const std::vector<vk::ProductTuning> tunings = {{0, 0}, {4, 1}, {16, 2}, {32, 4}, {32, 1, 3}};
  for (const vk::ProductTuning& tuning : tunings) {
    vk::set_product_tuning(tuning);
    for (int n_tok : {1, 3, 11}) {
      for (int variant = 0; variant < 4; ++variant) {  // plain, norm + bias, swiglu, norm + swiglu
        const bool with_norm = variant == 1 || variant == 3, swiglu = variant >= 2;
        const bool accumulate = variant == 0, with_bias = variant == 1;
        SCOPED_TRACE("team " + std::to_string(tuning.team) + " rows/thread " +
                     std::to_string(tuning.rows_per_thread) + " groups " +
                     std::to_string(tuning.max_groups) + " n_tok " + std::to_string(n_tok) +
                     " variant " + std::to_string(variant));
        const std::vector<float> x = random_normal(rng_, size_t(n_tok) * x_stride, 2.0f);
        const std::vector<float> y0 = random_normal(rng_, size_t(n_tok * rows), 1.0f);
        const std::vector<float> bias = random_normal(rng_, size_t(rows), 1.0f);
        TestBuffer<float> dx(*ctx_, x), dbias(*ctx_, bias), dy(*ctx_, size_t(n_tok * rows)),
            scratch(*ctx_, size_t(n_tok * rows));
        TestBuffer<uint32_t> q8(*ctx_, size_t(n_tok) * vk::q8_words_per_token(uint32_t(cols)));
        if (accumulate) std::memcpy(dy.data(), y0.data(), dy.bytes());
        const vk::NormFirst norm =
            with_norm ? vk::NormFirst{dnorm.address(), eps} : vk::NormFirst{};
        run_commands(*ctx_, [&](vk::Recorder& rec) {
          vk::record_quantize_q8(rec, dx.address(), x_stride, uint32_t(cols), n_tok, q8.address(),
                                 norm);
          if (swiglu)
            vk::record_matmul_swiglu(rec, gate, up, 0, uint32_t(cols), dy.address(),
                                     scratch.address(), n_tok, {}, q8.address());
          else
            vk::record_matmul(rec, gate, 0, uint32_t(cols), dy.address(), uint32_t(rows), n_tok,
                              accumulate, with_bias ? dbias.address() : 0, {}, q8.address());
        });
        const std::vector<float> xn =
            normed_rows(x, n_tok, cols, x_stride, with_norm ? g : std::vector<float>{}, eps);
        std::vector<double> want, scale, bound;
        for (int t = 0; t < n_tok; ++t) {
          const float* xt = xn.data() + t * cols;
          std::vector<double> abs_g, abs_u;
          const auto yg = reference_matvec(type, wg.data(), rows, cols, xt, &abs_g);
          const auto bg = cuda_test::int8_input_bound(type, wg.data(), rows, cols, xt);
          std::vector<double> yu, bu;
          if (swiglu) {
            yu = reference_matvec(type, wu.data(), rows, cols, xt, &abs_u);
            bu = cuda_test::int8_input_bound(type, wu.data(), rows, cols, xt);
          }
          for (int64_t r = 0; r < rows; ++r) {
            const size_t i = size_t(r);
            if (swiglu) {
              const double silu = yg[i] / (1.0 + std::exp(-yg[i]));
              want.push_back(silu * yu[i]);
              scale.push_back(1.1 * std::fabs(yu[i]) * abs_g[i] + std::fabs(silu) * abs_u[i]);
              bound.push_back(std::fabs(yu[i]) * 1.1 * bg[i] +
                              (std::fabs(silu) + 1.1 * bg[i]) * bu[i]);
              continue;
            }
            const double extra = accumulate  ? double(y0[size_t(t * rows + r)])
                                 : with_bias ? double(bias[i])
                                             : 0.0;
            want.push_back(yg[i] + extra);
            scale.push_back(abs_g[i] + std::fabs(extra));
            bound.push_back(bg[i]);
          }
        }
        EXPECT_LE(cuda_test::excess_error_ratio(dy.read(), want, scale, bound), kDotErrorRatio);
        EXPECT_GUARDS(dy);
        EXPECT_GUARDS(q8);
      }
    }
  }
  vk::set_product_tuning({});
}

INSTANTIATE_TEST_SUITE_P(
    Types, VulkanMatmul,
    ::testing::Values(MatmulCase{TensorType::F32, 172}, MatmulCase{TensorType::F32, 256},
                      MatmulCase{TensorType::F16, 172}, MatmulCase{TensorType::F16, 320},
                      MatmulCase{TensorType::Q4_0, 320}, MatmulCase{TensorType::Q5_0, 320},
                      MatmulCase{TensorType::Q8_0, 320}, MatmulCase{TensorType::Q4_K, 512},
                      MatmulCase{TensorType::Q6_K, 512}, MatmulCase{TensorType::F32, 1056},
                      MatmulCase{TensorType::F16, 1056}, MatmulCase{TensorType::Q4_0, 1056},
                      MatmulCase{TensorType::Q5_0, 1056}, MatmulCase{TensorType::Q8_0, 1056},
                      MatmulCase{TensorType::Q4_K, 2560}, MatmulCase{TensorType::Q6_K, 2560},
                      MatmulCase{TensorType::Q6_K, 512, true},
                      MatmulCase{TensorType::Q6_K, 2560, true}),
    [](const ::testing::TestParamInfo<MatmulCase>& info) {
      return case_name(info.param) + "_" + std::to_string(info.param.cols);
    });

// More rows than one grid dimension holds (the rows continue in the grid's y dimension): past
// 32768 four-row workgroups of matvec.comp (32 threads a row, 1 row a thread: its smallest
// groups; 1 token and the 8-token variant) and past 32768 one-row workgroups of matmul.comp (F16
// rows of 8 columns, which matvec.comp does not take).
TEST_F(VulkanOps, MatmulRowsBeyondOneGridDimension) {
  SCOPED_TRACE(trace());
  struct Case {
    TensorType type;
    int64_t rows, cols;
  };
  vk::set_product_tuning({32, 1});
  for (const Case c :
       {Case{TensorType::Q8_0, 4 * 32768 + 37, 32}, Case{TensorType::F16, 32768 + 37, 8}}) {
    SCOPED_TRACE(std::string(tensor_type_info(c.type).name));
    const std::vector<uint8_t> w = random_weights(rng_, c.type, c.rows, c.cols);
    TestBuffer<uint8_t> dw(*ctx_, w);
    const vk::DeviceMatrix m{c.type, c.rows, c.cols, *row_bytes(c.type, c.cols), dw.address()};
    for (int n_tok : {1, 5}) {
      SCOPED_TRACE("n_tok " + std::to_string(n_tok));
      const std::vector<float> x = random_normal(rng_, size_t(n_tok * c.cols), 1.0f);
      TestBuffer<float> dx(*ctx_, x), dy(*ctx_, size_t(n_tok * c.rows));
      run_commands(*ctx_, [&](vk::Recorder& rec) {
        vk::record_matmul(rec, m, dx.address(), uint32_t(c.cols), dy.address(), uint32_t(c.rows),
                          n_tok, false);
      });
      std::vector<double> want, scale;
      for (int t = 0; t < n_tok; ++t) {
        std::vector<double> abs_sum;
        const auto y =
            reference_matvec(c.type, w.data(), c.rows, c.cols, x.data() + t * c.cols, &abs_sum);
        want.insert(want.end(), y.begin(), y.end());
        scale.insert(scale.end(), abs_sum.begin(), abs_sum.end());
      }
      EXPECT_LE(dot_error_ratio(dy.read(), want, scale), kDotErrorRatio);
      EXPECT_GUARDS(dy);
    }
  }
  vk::set_product_tuning({});
}

// LOCKSTEP_VULKAN_PROFILE: each dispatch of a submitted command buffer is charged to its shader
// and grid, and the table reaches stderr when the context closes.
TEST_F(VulkanOps, ProfileChargesEachDispatchToItsShaderAndGrid) {
  SCOPED_TRACE(trace());
  vk::ContextOptions o;
  o.device = test_device();
  o.validation = true;
  o.profile = true;
  auto ctx = std::make_unique<vk::Context>(o);
  if (!ctx->profiling()) GTEST_SKIP() << ctx->device_name() << " has no compute timestamps";
  {
    const TensorType type = TensorType::Q8_0;
    const int64_t rows = 9, cols = 64;
    const std::vector<uint8_t> w = random_weights(rng_, type, rows, cols);
    TestBuffer<uint8_t> dw(*ctx, w);
    TestBuffer<float> dx(*ctx, random_normal(rng_, size_t(cols), 1.0f));
    TestBuffer<float> dy(*ctx, size_t(rows)), dn(*ctx, size_t(cols));
    const vk::DeviceMatrix m{type, rows, cols, *row_bytes(type, cols), dw.address()};
    for (int rep = 0; rep < 2; ++rep)
      run_commands(*ctx, [&](vk::Recorder& rec) {
        vk::record_rmsnorm(rec, dx.address(), dx.address(), dn.address(), uint32_t(cols), 1, 0,
                           1e-5f);
        vk::record_matmul(rec, m, dn.address(), uint32_t(cols), dy.address(), uint32_t(rows), 1,
                          false);
      });
  }
  const auto& totals = ctx->profile_totals();
  ASSERT_EQ(totals.size(), 2u);
  for (const char* key : {"rmsnorm [1,1,1]", "matvec_q8_0 [1,1,1]"}) {
    ASSERT_EQ(totals.count(key), 1u) << key;
    EXPECT_EQ(totals.at(key).second, 2u) << key;
    EXPECT_TRUE(totals.at(key).first >= 0.0 && totals.at(key).first < 1e4) << key;
  }
  ::testing::internal::CaptureStderr();
  ctx.reset();
  const std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(err.find("vulkan profile on"), std::string::npos) << err;
  EXPECT_NE(err.find("matvec_q8_0 [1,1,1]"), std::string::npos) << err;
}

// ---- embedding rows --------------------------------------------------------------------------

class VulkanGetRows : public VulkanOps, public ::testing::WithParamInterface<MatmulCase> {};

TEST_P(VulkanGetRows, MatchesDequantizeRow) {
  const TensorType type = GetParam().type;
  const int64_t rows = 50, cols = GetParam().cols;
  SCOPED_TRACE(trace() + " " + case_name(GetParam()));
  const std::vector<uint8_t> w = random_weights(rng_, type, rows, cols);
  const std::vector<int32_t> ids = {123, 7, 0, 49, 7, 31};  // [0]: the position (unused here)
  const int n_tok = int(ids.size()) - 1;
  const DeviceWeights dw(*ctx_, type, rows, cols, w, GetParam().padded);
  TestBuffer<int32_t> dids(*ctx_, ids);
  TestBuffer<float> out(*ctx_, size_t(n_tok * cols));
  const uint64_t rb = *row_bytes(type, cols);
  run_commands(*ctx_, [&](vk::Recorder& rec) {
    vk::record_get_rows(rec, dw.matrix, dids.address(), out.address(), n_tok);
  });
  std::vector<double> want;
  std::vector<float> row(static_cast<size_t>(cols));
  for (int t = 0; t < n_tok; ++t) {
    dequantize_row(type, w.data() + uint64_t(ids[size_t(t + 1)]) * rb, row.data(), cols);
    want.insert(want.end(), row.begin(), row.end());
  }
  const auto got = out.read();
  const auto stats = compare(got.data(), want.data(), got.size());
  EXPECT_NMSE_BELOW(stats, 1e-13);
  EXPECT_GUARDS(out);
}

INSTANTIATE_TEST_SUITE_P(
    Types, VulkanGetRows,
    ::testing::Values(MatmulCase{TensorType::F32, 172}, MatmulCase{TensorType::F16, 172},
                      MatmulCase{TensorType::Q4_0, 96}, MatmulCase{TensorType::Q5_0, 96},
                      MatmulCase{TensorType::Q8_0, 96}, MatmulCase{TensorType::Q4_K, 512},
                      MatmulCase{TensorType::Q6_K, 512}, MatmulCase{TensorType::Q6_K, 512, true}),
    [](const ::testing::TestParamInfo<MatmulCase>& info) { return case_name(info.param); });

// ---- RMSNorm, RoPE, KV store, attention, SwiGLU --------------------------------------------

// Rows read as vec4s (300; 4104, past what a thread keeps in registers) and as floats (301).
TEST_F(VulkanOps, RmsNorm) {
  SCOPED_TRACE(trace());
  for (const uint32_t n : {300u, 301u, 4104u}) {
    SCOPED_TRACE("n " + std::to_string(n));
    const int rows = 3;
    const float eps = 1e-5f;
    const auto x = random_normal(rng_, size_t(rows * n), 2.0f);
    const auto weight = random_normal(rng_, n, 1.0f);
    TestBuffer<float> dx(*ctx_, x), dw(*ctx_, weight);
    for (uint32_t first : {0u, 1u}) {
      const int n_rows = rows - int(first);
      TestBuffer<float> y(*ctx_, size_t(n_rows) * n);
      run_commands(*ctx_, [&](vk::Recorder& rec) {
        vk::record_rmsnorm(rec, dx.address(), dw.address(), y.address(), n, n_rows, first, eps);
      });
      std::vector<double> want;
      for (int r = 0; r < n_rows; ++r) {
        const float* xr = x.data() + (first + uint32_t(r)) * n;
        double ss = 0;
        for (uint32_t i = 0; i < n; ++i) ss += double(xr[i]) * xr[i];
        const double s = 1.0 / std::sqrt(ss / n + eps);
        for (uint32_t i = 0; i < n; ++i) want.push_back(xr[i] * s * weight[i]);
      }
      const auto got = y.read();
      EXPECT_NMSE_BELOW(compare(got.data(), want.data(), got.size()), kNmse);
      EXPECT_GUARDS(y);
    }
  }
}

// q turned in place; k turned and stored with v as halves at the tokens' positions of the
// caches, every other position untouched.
TEST_F(VulkanOps, RopeKvStoreNormalAndNeoxAtLargePositions) {
  SCOPED_TRACE(trace());
  const vk::AttentionShape shape{4, 2, 64};
  const uint32_t kv_dim = shape.n_head_kv * shape.head_dim;
  const int n_tok = 3, pos0 = 1000, n_ctx = 1010;
  for (bool neox : {false, true}) {
    for (uint32_t rope_dim : {64u, 32u}) {
      SCOPED_TRACE(std::string(neox ? "neox" : "normal") + " rope_dim " + std::to_string(rope_dim));
      HParams hp;
      hp.rope_dim = rope_dim;
      hp.rope_freq_base = 10000.0f + float(rng_() % 1000000);
      hp.rope_freq_scale = 0.5f;
      const auto table = vk::rope_table(hp, n_ctx);
      const size_t qn = size_t(n_tok) * shape.n_head * shape.head_dim;
      const size_t kn = size_t(n_tok) * kv_dim;
      const auto q = random_normal(rng_, qn, 1.0f), k = random_normal(rng_, kn, 1.0f);
      const auto v = random_normal(rng_, kn, 3.0f);
      TestBuffer<float> dq(*ctx_, q), dk(*ctx_, k), dv(*ctx_, v), dt(*ctx_, table);
      TestBuffer<uint16_t> kc(*ctx_, size_t(n_ctx) * kv_dim, 0x5A),
          vc(*ctx_, size_t(n_ctx) * kv_dim, 0x5A);
      TestBuffer<int32_t> ids(*ctx_, std::vector<int32_t>{pos0, 0, 0, 0});
      run_commands(*ctx_, [&](vk::Recorder& rec) {
        vk::record_rope_kv_store(rec, dq.address(), dk.address(), dv.address(), dt.address(),
                                 ids.address(), kc.address(), vc.address(), shape, rope_dim, neox,
                                 n_tok);
      });
      auto rotate = [&](const std::vector<float>& in, uint32_t heads) {
        std::vector<double> out(in.begin(), in.end());
        const uint32_t half = rope_dim / 2;
        for (int t = 0; t < n_tok; ++t)
          for (uint32_t h = 0; h < heads; ++h)
            for (uint32_t i = 0; i < half; ++i) {
              const double theta = double(pos0 + t) * double(hp.rope_freq_scale) *
                                   std::pow(double(hp.rope_freq_base), -2.0 * i / rope_dim);
              const size_t o = (size_t(t) * heads + h) * shape.head_dim;
              const size_t i0 = o + (neox ? i : 2 * i), i1 = o + (neox ? i + half : 2 * i + 1);
              const double a = in[i0], b = in[i1];
              out[i0] = a * std::cos(theta) - b * std::sin(theta);
              out[i1] = a * std::sin(theta) + b * std::cos(theta);
            }
        return out;
      };
      const auto wq = rotate(q, shape.n_head), wk = rotate(k, shape.n_head_kv);
      const auto gq = dq.read();
      EXPECT_NMSE_BELOW(compare(gq.data(), wq.data(), qn), kNmse);
      // The k cache's rows at the tokens' positions against the turned k in double (halves
      // hold ~11 bits: their own bound), v's rows exactly the halves of v, the rest untouched.
      const auto gk = kc.read(), gv = vc.read();
      std::vector<float> k_rows(kn);
      int wrong = 0;
      for (int p = 0; p < n_ctx; ++p)
        for (uint32_t i = 0; i < kv_dim; ++i) {
          const size_t at = size_t(p) * kv_dim + i;
          const bool written = p >= pos0 && p < pos0 + n_tok;
          const size_t src = size_t(p - pos0) * kv_dim + i;
          if (written) k_rows[src] = fp16_to_fp32(gk[at]);
          const bool k_ok =
              written ? std::abs(fp16_to_fp32(gk[at]) - wk[src]) <= std::abs(wk[src]) / 1024 + 1e-6
                      : gk[at] == 0x5A5A;
          const uint16_t want_v = written ? fp32_to_fp16(v[src]) : uint16_t(0x5A5A);
          if ((!k_ok || gv[at] != want_v) && ++wrong <= 5)
            ADD_FAILURE() << "position " << p << " element " << i << ": " << gk[at] << "/" << gv[at]
                          << " vs " << (written ? wk[src] : 0x5A5A) << "/" << want_v;
        }
      EXPECT_NMSE_BELOW(compare(k_rows.data(), wk.data(), kn), 1e-6);
      EXPECT_GUARDS(dq);
      EXPECT_GUARDS(kc);
      EXPECT_GUARDS(vc);
    }
  }
}

class VulkanAttention : public VulkanOps, public ::testing::WithParamInterface<uint32_t> {};

TEST_P(VulkanAttention, CausalGroupedQueryMatchesFloat64) {
  SCOPED_TRACE(trace());
  const vk::AttentionShape shape{4, 2, GetParam()};
  const uint32_t hd = shape.head_dim, kv_dim = shape.n_head_kv * hd;
  const int n_tok = 3, pos0 = 40, n_ctx = 300;
  const float scale = float(1.0 / std::sqrt(double(hd)));
  const auto q = random_normal(rng_, size_t(n_tok) * shape.n_head * hd, 1.0f);
  // The cache: random halves up to the last query's position, NaN beyond it (causality: a
  // position no query may see must not reach any output).
  std::vector<uint16_t> kc(size_t(n_ctx) * kv_dim, 0x7E00), vc(kc);
  const auto kr = random_normal(rng_, kc.size(), 1.0f), vr = random_normal(rng_, vc.size(), 1.0f);
  for (size_t i = 0; i < size_t(pos0 + n_tok) * kv_dim; ++i)
    kc[i] = fp32_to_fp16(kr[i]), vc[i] = fp32_to_fp16(vr[i]);
  TestBuffer<float> dq(*ctx_, q), out(*ctx_, q.size());
  TestBuffer<float> scores(*ctx_, size_t(n_tok) * shape.n_head * n_ctx);
  TestBuffer<uint16_t> dk(*ctx_, kc), dv(*ctx_, vc);
  TestBuffer<int32_t> ids(*ctx_, std::vector<int32_t>{pos0, 0, 0, 0});
  // Where the heads are whole groups of 32, the int8 form of the output rows too: it must be
  // record_quantize_q8's bits for the same rows.
  const uint32_t n_row = shape.n_head * hd, words = vk::q8_words_per_token(n_row);
  const bool with_q8 = vk::attention_writes_q8(shape);
  TestBuffer<uint32_t> q8(*ctx_, size_t(n_tok) * words), q8_apart(*ctx_, size_t(n_tok) * words);
  run_commands(*ctx_, [&](vk::Recorder& rec) {
    vk::record_attention(rec, dq.address(), dk.address(), dv.address(), out.address(),
                         scores.address(), ids.address(), shape, uint32_t(n_ctx), scale, n_tok,
                         with_q8 ? q8.address() : 0);
    if (with_q8)
      vk::record_quantize_q8(rec, out.address(), n_row, n_row, n_tok, q8_apart.address(), {});
  });
  if (with_q8) {
    EXPECT_EQ(q8.read(), q8_apart.read());
    EXPECT_GUARDS(q8);
  } else {
    EXPECT_THROW(run_commands(*ctx_,
                              [&](vk::Recorder& rec) {
                                vk::record_attention(rec, dq.address(), dk.address(), dv.address(),
                                                     out.address(), scores.address(), ids.address(),
                                                     shape, uint32_t(n_ctx), scale, n_tok,
                                                     q8.address());
                              }),
                 Error);
  }
  std::vector<double> want;
  for (int t = 0; t < n_tok; ++t)
    for (uint32_t h = 0; h < shape.n_head; ++h) {
      const uint32_t kvh = h / (shape.n_head / shape.n_head_kv);
      const float* qh = q.data() + (size_t(t) * shape.n_head + h) * hd;
      const int n_kv = pos0 + t + 1;
      std::vector<double> s(static_cast<size_t>(n_kv));
      double m = -INFINITY;
      for (int j = 0; j < n_kv; ++j) {
        double d = 0;
        for (uint32_t i = 0; i < hd; ++i)
          d += double(qh[i]) * fp16_to_fp32(kc[size_t(j) * kv_dim + kvh * hd + i]);
        s[size_t(j)] = d * scale;
        m = std::max(m, s[size_t(j)]);
      }
      double sum = 0;
      for (auto& e : s) sum += (e = std::exp(e - m));
      for (uint32_t i = 0; i < hd; ++i) {
        double acc = 0;
        for (int j = 0; j < n_kv; ++j)
          acc += s[size_t(j)] * fp16_to_fp32(vc[size_t(j) * kv_dim + kvh * hd + i]);
        want.push_back(acc / sum);
      }
    }
  const auto got = out.read();
  EXPECT_NMSE_BELOW(compare(got.data(), want.data(), got.size()), kNmse);
  EXPECT_GUARDS(out);
  EXPECT_GUARDS(scores);
}

INSTANTIATE_TEST_SUITE_P(HeadDims, VulkanAttention, ::testing::Values(8u, 64u, 128u, 256u));

TEST_F(VulkanOps, SwiGlu) {
  SCOPED_TRACE(trace());
  const size_t n = 1000;
  const auto g = random_normal(rng_, n, 3.0f), u = random_normal(rng_, n, 1.0f);
  TestBuffer<float> dg(*ctx_, g), du(*ctx_, u);
  run_commands(*ctx_,
               [&](vk::Recorder& rec) { vk::record_swiglu(rec, dg.address(), du.address(), n); });
  std::vector<double> want(n);
  for (size_t i = 0; i < n; ++i) want[i] = double(g[i]) / (1.0 + std::exp(-double(g[i]))) * u[i];
  const auto got = dg.read();
  EXPECT_NMSE_BELOW(compare(got.data(), want.data(), n), kNmse);
  EXPECT_GUARDS(dg);
}

// The int8 form (shaders/quantize_q8.comp) against its definition in float64, with and without
// RMSNorm, over more groups than one workgroup holds and rows apart by more than their length:
// dx = max|v| / 127; every element within dx (1/508 + 3e-5) (+ the float rounding of v, 2e-6 |v|)
// of dx (q + q2 / 254); the group's sum within 1e-6 of its sum of |v|; a group holding a NaN or an
// infinity has dx NaN, and the groups beside it are untouched by it.
TEST_F(VulkanOps, QuantizeQ8WithinItsBound) {
  SCOPED_TRACE(trace());
  const uint32_t n = 96 * 32, x_stride = n + 12, words = vk::q8_words_per_token(n);
  const int n_tok = 3;
  const std::vector<float> g = random_normal(rng_, n, 1.0f);
  TestBuffer<float> dnorm(*ctx_, g);
  for (bool with_norm : {false, true}) {
    SCOPED_TRACE(with_norm ? "norm" : "no norm");
    std::vector<float> x = random_normal(rng_, size_t(n_tok) * x_stride, 3.0f);
    x[size_t(x_stride + 5 * 32 + 7)] = NAN;       // token 1, group 5
    x[size_t(2 * x_stride + 9 * 32)] = INFINITY;  // token 2, group 9 (and the norm's row)
    if (with_norm) x[size_t(2 * x_stride + 9 * 32)] = 1e15f;  // with the norm: large, finite
    TestBuffer<float> dx(*ctx_, x);
    TestBuffer<uint32_t> out(*ctx_, size_t(n_tok) * words);
    run_commands(*ctx_, [&](vk::Recorder& rec) {
      vk::record_quantize_q8(rec, dx.address(), x_stride, n, n_tok, out.address(),
                             with_norm ? vk::NormFirst{dnorm.address(), 1e-5f} : vk::NormFirst{});
    });
    const std::vector<uint32_t> got = out.read();
    int checked = 0;
    for (int t = 0; t < n_tok; ++t) {
      const bool nan_row = t == 1 && with_norm;  // the norm spreads the NaN to the whole row
      const float* xt = x.data() + size_t(t) * x_stride;
      double ss = 0;
      for (uint32_t c = 0; c < n; ++c) ss += double(xt[c]) * xt[c];
      const double s = with_norm ? 1.0 / std::sqrt(ss / n + 1e-5) : 1.0;
      const uint32_t* row = got.data() + size_t(t) * words;
      const int8_t* q = reinterpret_cast<const int8_t*>(row);
      const int8_t* q2 = reinterpret_cast<const int8_t*>(row + n / 4);
      for (uint32_t grp = 0; grp < n / 32; ++grp) {
        float dx_got, xs_got;
        std::memcpy(&dx_got, row + n / 2 + grp, 4);
        std::memcpy(&xs_got, row + n / 2 + n / 32 + grp, 4);
        const bool bad = (t == 1 && grp == 5) || (t == 2 && grp == 9 && !with_norm) || nan_row;
        if (bad) {
          EXPECT_TRUE(std::isnan(dx_got)) << "token " << t << " group " << grp;
          continue;
        }
        double amax = 0, sum = 0, abs_sum = 0;
        double v[32];
        for (int i = 0; i < 32; ++i) {
          const uint32_t c = 32 * grp + uint32_t(i);
          v[i] = with_norm ? xt[c] * s * g[c] : xt[c];
          amax = std::max(amax, std::fabs(v[i]));
          sum += v[i], abs_sum += std::fabs(v[i]);
        }
        ASSERT_TRUE(std::isfinite(dx_got)) << "token " << t << " group " << grp;
        EXPECT_NEAR(dx_got, amax / 127.0, 2e-6 * amax / 127.0) << "token " << t << " group " << grp;
        EXPECT_NEAR(xs_got, sum, 1e-6 * abs_sum) << "token " << t << " group " << grp;
        for (int i = 0; i < 32; ++i) {
          const size_t e = 32 * grp + size_t(i);
          const double back = double(dx_got) * (q[e] + q2[e] / 254.0);
          EXPECT_LE(std::fabs(back - v[i]),
                    double(dx_got) * (1.0 / 508.0 + 3e-5) + 2e-6 * std::fabs(v[i]))
              << "token " << t << " element " << e;
        }
        ++checked;
      }
    }
    EXPECT_EQ(checked, with_norm ? 2 * 96 : 3 * 96 - 2);
    EXPECT_GUARDS(out);
  }
}

// The harness itself: a NaN in the input must fail the comparison (so a shader that produced NaN
// could never pass).
TEST_F(VulkanOps, NaNInputIsCaught) {
  SCOPED_TRACE(trace());
  std::vector<float> g = random_normal(rng_, 64, 1.0f), u = random_normal(rng_, 64, 1.0f);
  g[17] = NAN;
  TestBuffer<float> dg(*ctx_, g), du(*ctx_, u);
  run_commands(*ctx_, [&](vk::Recorder& rec) {
    vk::record_swiglu(rec, dg.address(), du.address(), g.size());
  });
  std::vector<double> want(g.size(), 0.0);
  const auto got = dg.read();
  EXPECT_FALSE(compare(got.data(), want.data(), got.size()).all_finite);
}

// The harness's other guard: an error the validation layer reports fails the submission. A
// barrier whose source access (host read) its source stage (compute) cannot perform is invalid
// usage that every driver executes harmlessly.
TEST(VulkanValidation, AReportedErrorFailsTheSubmission) {
  REQUIRE_VULKAN_DEVICE();
  vk::ContextOptions o;
  o.device = test_device();
  o.validation = true;
  vk::Context ctx(o);
  if (!ctx.validation_enabled())
    GTEST_SKIP() << "skipped: VK_LAYER_KHRONOS_validation is not installed";
  const uint64_t before = vulkan_validation_errors();
  try {
    run_commands(ctx, [&](vk::Recorder& rec) {
      VkMemoryBarrier m{};
      m.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER;
      m.srcAccessMask = VK_ACCESS_HOST_READ_BIT;
      m.dstAccessMask = VK_ACCESS_SHADER_READ_BIT;
      ctx.api().vkCmdPipelineBarrier(rec.command_buffer(), VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT,
                                     VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, 0, 1, &m, 0, nullptr, 0,
                                     nullptr);
    });
    ADD_FAILURE() << "the invalid barrier was not reported";
  } catch (const Error& e) {
    EXPECT_EQ(e.exit_code(), kExitDevice);
    EXPECT_NE(std::string(e.what()).find("validation layer reported"), std::string::npos)
        << e.what();
  }
  EXPECT_GT(vulkan_validation_errors(), before);
}

}  // namespace
}  // namespace lockstep::vulkan_test

#else

TEST(VulkanOps, Skipped) {
  REQUIRE_VULKAN_DEVICE();
}

#endif
