// Quantized matrix-vector kernels (decode path) against a float64 reference: weights dequantized
// on the CPU with lockstep::dequantize_row, dot products in double.
// Bound: the error relative to the dot products' own scale sum |w x| (dot_error_ratio) must stay
// below 64 * 2^-24 = 3.8e-6. Float32 accumulation (and the factored a * sum(x q) + b * sum(x)
// form, which can cancel a few bits) stays near 1e-7 of that scale; a single wrongly decoded
// 32-element block in an 18944-wide row is ~1e-3 of it. The SwiGLU test, whose outputs are not
// plain dot products, uses NMSE <= 1e-9 over >= 77 rows.
//
// Q4_K and Q6_K products given an ActQ8Scratch (as the backend always gives) use int8 activations
// (matvec_quant.cu): x is rounded per group of 32 to dx * (xq + xq2 / 254), dx = max|x| / 127, an
// error of at most dx/508 per element, so a row's dot product moves by at most
// B = sum_i |w_i| * dx(i) * (1/508 + 3e-5) (activation_quant_bound, cuda_test_util's
// int8_input_bound). Every such test runs with and without a scratch (without: float activations).
// For those the bounds above apply to the part of each row's error beyond B:
// max(0, |got - want| - B). For SwiGLU, errors Eg <= Bg and Eu <= Bu of the two products move
// silu(g) * u by at most |u| * L * Bg + (|silu(g)| + L * Bg) * Bu, L = 1.1 >= sup |silu'| (1.0998).
#include "backend_cuda/cuda_test_util.h"
#include "quant/quantize.h"

#ifdef LOCKSTEP_HAVE_CUDA

namespace lockstep::cuda_test {
namespace {

constexpr double kMatvecNmse = 1e-9;
constexpr double kDotErrorRatio = 64.0 / double(1 << 24);

// True when the kernels quantize the activation to int8 for this weight (given a scratch as wide
// as the row, or none).
bool int8_activation_path(TensorType t, int64_t cols, bool with_scratch) {
  cuda_ops::ActQ8Scratch wide_enough;
  wide_enough.max_cols = cols;
  return cuda_ops::matvec_uses_int8(t, cols, with_scratch ? &wide_enough : nullptr);
}

// B per row (see the top of the file); all zero for the float-activation paths.
std::vector<double> activation_quant_bound(TensorType type, const uint8_t* w, int64_t rows,
                                           int64_t cols, const float* x, bool with_scratch) {
  if (!int8_activation_path(type, cols, with_scratch))
    return std::vector<double>(static_cast<size_t>(rows), 0.0);
  return int8_input_bound(type, w, rows, cols, x);
}

#define EXPECT_DOT_ERROR_OK(got, want, abs_sum, bound)                                       \
  do {                                                                                       \
    const double r_ = excess_error_ratio((got), (want), (abs_sum), (bound));                 \
    EXPECT_LE(r_, kDotErrorRatio) << "(error beyond act. quant. bound) / sum|w x| = " << r_; \
  } while (0)

using cuda_ops::MatvecMode;

struct Shape {
  int64_t rows, cols;
};

std::vector<TensorType> all_types() {
  return {TensorType::F32,  TensorType::F16,  TensorType::BF16, TensorType::Q4_0, TensorType::Q4_1,
          TensorType::Q5_0, TensorType::Q5_1, TensorType::Q8_0, TensorType::Q2_K, TensorType::Q3_K,
          TensorType::Q4_K, TensorType::Q5_K, TensorType::Q6_K};
}

// Row widths for a type: 1, 3 and 11 blocks (odd counts leave lanes of the last warp step idle),
// plus, for plain types, widths that are not multiples of 8 (the scalar path).
std::vector<int64_t> widths(TensorType t) {
  const int64_t qk = tensor_type_info(t).block_elems;
  if (qk == 1) return {8, 64, 200, 172, 13, 1000};
  return {qk, 3 * qk, 11 * qk};
}

// A scratch for the int8 path (ActQ8Scratch) of inputs up to max_cols wide, with guard regions.
struct Int8Scratch {
  explicit Int8Scratch(int64_t max_cols)
      : buffer(cuda_ops::act_q8_scratch_bytes(max_cols)),
        act(cuda_ops::act_q8_scratch(buffer.get(), max_cols)) {}
  DeviceBuffer<uint8_t> buffer;
  cuda_ops::ActQ8Scratch act;
};

// The Q4_K / Q6_K cases run a second time with a scratch: the int8 path.
bool has_int8_path(TensorType t) {
  return t == TensorType::Q4_K || t == TensorType::Q6_K;
}

void run_case(std::mt19937_64& rng, TensorType type, int64_t rows, int64_t cols, MatvecMode mode,
              bool with_bias, bool fresh_quant = true, bool with_scratch = false) {
  const std::string what = std::string(tensor_type_info(type).name) + " " + std::to_string(rows) +
                           "x" + std::to_string(cols) +
                           (mode == MatvecMode::Accumulate ? " accumulate" : "") +
                           (with_bias ? " bias" : "") + (with_scratch ? " int8" : "");
  SCOPED_TRACE(what);
  // Large shapes take random-byte blocks only: quantizing hundreds of millions of values on the
  // CPU would dominate the run.
  const std::vector<uint8_t> w = random_weights(rng, type, rows, cols, 1.0f, fresh_quant);
  const std::vector<float> x = random_normal(rng, size_t(cols), 1.0f);
  const std::vector<float> bias = random_normal(rng, size_t(rows), 1.0f);
  const std::vector<float> y0 = random_normal(rng, size_t(rows), 1.0f);
  std::vector<double> abs_sum;
  std::vector<double> want = reference_matvec(type, w.data(), rows, cols, x.data(), &abs_sum);
  for (int64_t r = 0; r < rows; ++r) {
    if (with_bias)
      want[size_t(r)] += bias[size_t(r)], abs_sum[size_t(r)] += std::fabs(bias[size_t(r)]);
    if (mode == MatvecMode::Accumulate)
      want[size_t(r)] += y0[size_t(r)], abs_sum[size_t(r)] += std::fabs(y0[size_t(r)]);
  }
  DeviceBuffer<uint8_t> d_w(w);
  DeviceBuffer<float> d_x(x), d_b(bias), d_y(static_cast<size_t>(rows));
  if (mode == MatvecMode::Accumulate) d_y.upload(y0);
  std::unique_ptr<Int8Scratch> scratch;
  if (with_scratch) scratch = std::make_unique<Int8Scratch>(cols);
  cuda_ops::matvec(type, d_w.get(), rows, cols, d_x.get(), d_y.get(),
                   with_bias ? d_b.get() : nullptr, mode, nullptr,
                   scratch ? &scratch->act : nullptr);
  cuda_ops::synchronize();
  const auto got = d_y.download();
  EXPECT_GUARDS(d_y);
  if (scratch) {
    EXPECT_GUARDS(scratch->buffer);
  }
  EXPECT_DOT_ERROR_OK(got, want, abs_sum,
                      activation_quant_bound(type, w.data(), rows, cols, x.data(), with_scratch));
}

// Both paths of a case: float activations, and for Q4_K / Q6_K the int8 path too.
void run_both(std::mt19937_64& rng, TensorType type, int64_t rows, int64_t cols, MatvecMode mode,
              bool with_bias, bool fresh_quant = true) {
  run_case(rng, type, rows, cols, mode, with_bias, fresh_quant, false);
  if (has_int8_path(type)) run_case(rng, type, rows, cols, mode, with_bias, fresh_quant, true);
}

TEST(CudaMatvec, AllTypesSmallShapes) {
  REQUIRE_CUDA_DEVICE();
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (TensorType t : all_types())
    for (int64_t cols : widths(t))
      for (int64_t rows : {1, 7, 33, 130, 4097})
        run_both(rng, t, rows, cols, MatvecMode::Store, false);
}

TEST(CudaMatvec, BiasAndResidualEpilogues) {
  REQUIRE_CUDA_DEVICE();
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (TensorType t : {TensorType::Q4_K, TensorType::Q8_0, TensorType::F16, TensorType::Q6_K}) {
    const int64_t cols = 2 * tensor_type_info(t).block_elems * 4;
    run_both(rng, t, 37, cols, MatvecMode::Store, true);
    run_both(rng, t, 37, cols, MatvecMode::Accumulate, false);
    run_both(rng, t, 37, cols, MatvecMode::Accumulate, true);
  }
}

// The matrix shapes of a 7B model (Qwen2.5-7B: n_embd 3584, n_ff 18944, vocab 152064) in the
// types a Q4_K_M file gives them.
TEST(CudaMatvec, Real7BShapes) {
  REQUIRE_CUDA_DEVICE();
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const Shape shapes[] = {{3584, 3584}, {18944, 3584}, {3584, 18944}, {152064, 3584}};
  for (const auto& s : shapes)
    for (TensorType t : {TensorType::Q4_K, TensorType::Q6_K})
      run_both(rng, t, s.rows, s.cols, MatvecMode::Store, false, /*fresh_quant=*/false);
  run_case(rng, TensorType::Q8_0, 3584, 3584, MatvecMode::Store, false, false);
}

// The input the fused pre-norm computes from x: x / sqrt(mean(x^2) + eps) * w, in float64 and
// rounded to float (the kernels' own rounding of it is ~1e-7 relative, within the bounds).
std::vector<float> rms_normed(const std::vector<float>& x, const std::vector<float>& w, float eps) {
  double ss = 0;
  for (float v : x) ss += double(v) * v;
  const double scale = 1.0 / std::sqrt(ss / double(x.size()) + eps);
  std::vector<float> out(x.size());
  for (size_t i = 0; i < x.size(); ++i) out[i] = float(double(x[i]) * scale * w[i]);
  return out;
}

TEST(CudaMatvec, FusedSwiGLU) {
  REQUIRE_CUDA_DEVICE();
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (TensorType t : {TensorType::Q4_K, TensorType::Q5_0, TensorType::F32, TensorType::Q3_K})
    for (int64_t rows : {77, 4100})  // one and two rows per thread block
      for (bool with_norm : {false, true})
        for (bool with_scratch : {false, true}) {
          if (with_scratch && !has_int8_path(t)) continue;
          const int64_t cols = 2 * tensor_type_info(t).block_elems * 8;
          SCOPED_TRACE(std::string(tensor_type_info(t).name) + " rows " + std::to_string(rows) +
                       (with_norm ? " with fused norm" : "") + (with_scratch ? " int8" : ""));
          const auto wg = random_weights(rng, t, rows, cols),
                     wu = random_weights(rng, t, rows, cols);
          const auto x = random_normal(rng, size_t(cols), 3.0f);
          const auto nw = random_normal(rng, size_t(cols), 1.0f);
          const auto xin = with_norm ? rms_normed(x, nw, 1e-6f) : x;
          const auto g = reference_matvec(t, wg.data(), rows, cols, xin.data());
          const auto u = reference_matvec(t, wu.data(), rows, cols, xin.data());
          std::vector<double> want(static_cast<size_t>(rows));
          for (size_t i = 0; i < want.size(); ++i) want[i] = g[i] / (1.0 + std::exp(-g[i])) * u[i];
          const auto bg =
              activation_quant_bound(t, wg.data(), rows, cols, xin.data(), with_scratch);
          const auto bu =
              activation_quant_bound(t, wu.data(), rows, cols, xin.data(), with_scratch);
          std::vector<double> bound(want.size());
          constexpr double kL = 1.1;  // >= sup |silu'(g)| = 1.0998
          for (size_t i = 0; i < want.size(); ++i) {
            const double silu_g = g[i] / (1.0 + std::exp(-g[i]));
            bound[i] = std::fabs(u[i]) * kL * bg[i] + (std::fabs(silu_g) + kL * bg[i]) * bu[i];
          }
          DeviceBuffer<uint8_t> d_g(wg), d_u(wu);
          DeviceBuffer<float> d_x(x), d_nw(nw), d_y(static_cast<size_t>(rows));
          std::unique_ptr<Int8Scratch> scratch;
          if (with_scratch) scratch = std::make_unique<Int8Scratch>(cols);
          cuda_ops::matvec_swiglu(t, d_g.get(), d_u.get(), rows, cols, d_x.get(), d_y.get(),
                                  nullptr, with_norm ? d_nw.get() : nullptr, 1e-6f,
                                  scratch ? &scratch->act : nullptr);
          cuda_ops::synchronize();
          const auto got = d_y.download();
          EXPECT_GUARDS(d_y);
          // NMSE of the error beyond the bound (exactly the old NMSE when the bound is 0).
          double num = 0, den = 0;
          bool finite = true;
          for (size_t i = 0; i < got.size(); ++i) {
            finite = finite && std::isfinite(got[i]);
            const double e = std::max(0.0, std::fabs(double(got[i]) - want[i]) - bound[i]);
            num += e * e, den += want[i] * want[i];
          }
          EXPECT_TRUE(finite);
          EXPECT_LE(num / den, kMatvecNmse) << "NMSE beyond the activation quantization bound";
        }
}

// Q, K and V in one launch: three matrices of different heights, each with its own bias.
TEST(CudaMatvec, MultiTargetLaunch) {
  REQUIRE_CUDA_DEVICE();
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (TensorType t : {TensorType::Q4_K, TensorType::Q8_0, TensorType::F16})
    for (bool with_norm : {false, true})
      for (bool with_scratch : {false, true}) {
        if (with_scratch && !has_int8_path(t)) continue;
        SCOPED_TRACE(std::string(tensor_type_info(t).name) + (with_norm ? " with fused norm" : "") +
                     (with_scratch ? " int8" : ""));
        const int64_t cols = 512;
        const int64_t heights[3] = {300, 40,
                                    5000};  // the last one makes the launch use 4 rows/block
        std::vector<std::vector<uint8_t>> w;
        std::vector<std::vector<float>> bias;
        const auto x_raw = random_normal(rng, size_t(cols), 3.0f);
        const auto nw = random_normal(rng, size_t(cols), 1.0f);
        const auto x = with_norm ? rms_normed(x_raw, nw, 1e-5f) : x_raw;
        std::vector<std::unique_ptr<DeviceBuffer<uint8_t>>> d_w;
        std::vector<std::unique_ptr<DeviceBuffer<float>>> d_b, d_y;
        cuda_ops::MatvecTarget targets[3];
        for (int j = 0; j < 3; ++j) {
          w.push_back(random_weights(rng, t, heights[j], cols));
          bias.push_back(random_normal(rng, size_t(heights[j]), 1.0f));
          d_w.push_back(std::make_unique<DeviceBuffer<uint8_t>>(w.back()));
          d_b.push_back(std::make_unique<DeviceBuffer<float>>(bias.back()));
          d_y.push_back(std::make_unique<DeviceBuffer<float>>(static_cast<size_t>(heights[j])));
          targets[j] = {d_w.back()->get(), heights[j], d_y.back()->get(),
                        j == 1 ? nullptr : d_b.back()->get()};
        }
        DeviceBuffer<float> d_x(x_raw), d_nw(nw);
        std::unique_ptr<Int8Scratch> scratch;
        if (with_scratch) scratch = std::make_unique<Int8Scratch>(cols);
        cuda_ops::matvec_multi(t, cols, d_x.get(), targets, 3, nullptr,
                               with_norm ? d_nw.get() : nullptr, 1e-5f,
                               scratch ? &scratch->act : nullptr);
        cuda_ops::synchronize();
        for (int j = 0; j < 3; ++j) {
          std::vector<double> abs_sum;
          auto want =
              reference_matvec(t, w[size_t(j)].data(), heights[j], cols, x.data(), &abs_sum);
          if (j != 1)
            for (size_t r = 0; r < want.size(); ++r)
              want[r] += bias[size_t(j)][r], abs_sum[r] += std::fabs(bias[size_t(j)][r]);
          const auto got = d_y[size_t(j)]->download();
          EXPECT_GUARDS(*d_y[size_t(j)]);
          EXPECT_DOT_ERROR_OK(got, want, abs_sum,
                              activation_quant_bound(t, w[size_t(j)].data(), heights[j], cols,
                                                     x.data(), with_scratch));
        }
      }
}

// Sets the kernels' rows-per-block knob (what LOCKSTEP_CUDA_Q8_ROWS sets from the command line)
// while in scope.
class Q8RowsScope {
 public:
  explicit Q8RowsScope(const char* rows) : saved_(cuda_ops::kernel_tuning()) {
    CudaKernelTuning t = saved_;
    t.q8_rows = std::atoi(rows);
    cuda_ops::set_kernel_tuning(t);
  }
  ~Q8RowsScope() { cuda_ops::set_kernel_tuning(saved_); }

 private:
  CudaKernelTuning saved_;
};

// The int8 path (whose error is bounded against float64 by the tests above) gives the same bits
// whatever the rows per thread block (default, forced to 1 and to 8), for every entry point,
// epilogue, fused norm and the 7B shapes; it writes nothing outside its scratch; and a scratch
// too small for the row is not used (the float path's very bits instead).
TEST(CudaMatvec, Int8PathSameBitsForAnyRowsPerBlockAndSmallScratchIgnored) {
  REQUIRE_CUDA_DEVICE();
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  enum class Entry { Matvec, Multi, Swiglu };
  struct Case {
    Entry entry;
    TensorType type;
    int64_t rows, cols;
    bool norm, bias, accumulate;
  };
  const Case cases[] = {
      {Entry::Matvec, TensorType::Q4_K, 7, 256, false, false, false},
      {Entry::Matvec, TensorType::Q6_K, 300, 512, false, true, false},
      {Entry::Matvec, TensorType::Q4_K, 1030, 768, false, true, true},
      {Entry::Matvec, TensorType::Q4_K, 3584, 18944, false, false, true},  // 7B ffn_down
      {Entry::Matvec, TensorType::Q6_K, 3584, 18944, false, false, true},  // 7B ffn_down (Q6_K)
      {Entry::Multi, TensorType::Q6_K, 152064, 3584, true, false, false},  // 7B output
      {Entry::Multi, TensorType::Q4_K, 3584, 3584, true, true, false},     // 7B Q, K, V
      {Entry::Multi, TensorType::Q6_K, 600, 1024, false, true, false},
      {Entry::Swiglu, TensorType::Q4_K, 18944, 3584, true, false, false},  // 7B gate/up
      {Entry::Swiglu, TensorType::Q6_K, 77, 512, false, false, false},
      {Entry::Swiglu, TensorType::Q4_K, 300, 256, true, false, false},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(std::string(tensor_type_info(c.type).name) + " " + std::to_string(c.rows) + "x" +
                 std::to_string(c.cols) + " entry " + std::to_string(int(c.entry)) +
                 (c.norm ? " norm" : "") + (c.bias ? " bias" : "") +
                 (c.accumulate ? " accumulate" : ""));
    // Multi: three targets of heights rows, rows / 4 + 1 and 37 (the 37 takes 1 row per block).
    const int n_targets = c.entry == Entry::Multi ? 3 : 1;
    const int64_t heights[3] = {c.rows, c.rows / 4 + 1, 37};
    std::vector<std::unique_ptr<DeviceBuffer<uint8_t>>> d_w, d_up;
    std::vector<std::unique_ptr<DeviceBuffer<float>>> d_b, d_y;
    std::vector<std::vector<float>> y0;
    for (int j = 0; j < n_targets; ++j) {
      d_w.push_back(std::make_unique<DeviceBuffer<uint8_t>>(
          random_weights(rng, c.type, heights[j], c.cols, 1.0f, false)));
      if (c.entry == Entry::Swiglu)
        d_up.push_back(std::make_unique<DeviceBuffer<uint8_t>>(
            random_weights(rng, c.type, heights[j], c.cols, 1.0f, false)));
      d_b.push_back(
          std::make_unique<DeviceBuffer<float>>(random_normal(rng, size_t(heights[j]), 1.0f)));
      d_y.push_back(std::make_unique<DeviceBuffer<float>>(static_cast<size_t>(heights[j])));
      y0.push_back(random_normal(rng, size_t(heights[j]), 1.0f));
    }
    DeviceBuffer<float> d_x(random_normal(rng, size_t(c.cols), 2.0f));
    DeviceBuffer<float> d_nw(random_normal(rng, size_t(c.cols), 1.0f));
    DeviceBuffer<uint8_t> d_scratch(cuda_ops::act_q8_scratch_bytes(c.cols));
    const cuda_ops::ActQ8Scratch act = cuda_ops::act_q8_scratch(d_scratch.get(), c.cols);
    // Too small by one group: must be ignored (else the kernels would read past it).
    const cuda_ops::ActQ8Scratch small = cuda_ops::act_q8_scratch(d_scratch.get(), c.cols - 32);

    auto run = [&](const cuda_ops::ActQ8Scratch* scratch) {
      const float* nw = c.norm ? d_nw.get() : nullptr;
      for (int j = 0; j < n_targets; ++j) d_y[size_t(j)]->upload(y0[size_t(j)]);
      if (c.entry == Entry::Matvec) {
        cuda_ops::matvec(c.type, d_w[0]->get(), c.rows, c.cols, d_x.get(), d_y[0]->get(),
                         c.bias ? d_b[0]->get() : nullptr,
                         c.accumulate ? MatvecMode::Accumulate : MatvecMode::Store, nullptr,
                         scratch);
      } else if (c.entry == Entry::Multi) {
        cuda_ops::MatvecTarget t[3];
        for (int j = 0; j < 3; ++j)
          t[j] = {d_w[size_t(j)]->get(), heights[j], d_y[size_t(j)]->get(),
                  c.bias && j != 1 ? d_b[size_t(j)]->get() : nullptr};
        cuda_ops::matvec_multi(c.type, c.cols, d_x.get(), t, 3, nullptr, nw, 1e-6f, scratch);
      } else {
        cuda_ops::matvec_swiglu(c.type, d_w[0]->get(), d_up[0]->get(), c.rows, c.cols, d_x.get(),
                                d_y[0]->get(), nullptr, nw, 1e-6f, scratch);
      }
      cuda_ops::synchronize();
      std::vector<std::vector<float>> out;
      for (int j = 0; j < n_targets; ++j) {
        out.push_back(d_y[size_t(j)]->download());
        EXPECT_GUARDS(*d_y[size_t(j)]);
      }
      return out;
    };
    const auto int8 = run(&act);
    const auto float_path = run(nullptr);
    const auto fallback = run(&small);
    std::vector<std::vector<std::vector<float>>> by_rows;
    for (const char* r : {"1", "8"}) {
      Q8RowsScope rows(r);
      by_rows.push_back(run(&act));
    }
    EXPECT_GUARDS(d_scratch);
    for (int j = 0; j < n_targets; ++j) {
      const auto& a = int8[size_t(j)];
      for (float v : a) ASSERT_TRUE(std::isfinite(v));
      const auto& f = float_path[size_t(j)];
      if (int8_activation_path(c.type, c.cols, true))
        EXPECT_NE(0, std::memcmp(a.data(), f.data(), a.size() * sizeof(float)))
            << "target " << j << ": the scratch must select the int8 path";
      else
        EXPECT_EQ(0, std::memcmp(a.data(), f.data(), a.size() * sizeof(float)))
            << "target " << j << ": this shape takes the float path, scratch or not";
      EXPECT_EQ(0, std::memcmp(f.data(), fallback[size_t(j)].data(), f.size() * sizeof(float)))
          << "target " << j << ": a too small scratch must leave the float path";
      for (const auto& b : by_rows)
        EXPECT_EQ(0, std::memcmp(a.data(), b[size_t(j)].data(), a.size() * sizeof(float)))
            << "target " << j << ", other rows per block";
    }
  }
}

// The batched entry points (a decode step of several sequences): every token's output row must be
// bit for bit what the single-token call gives for that token (batch invariance; the single-token
// kernels are checked against float64 above), on both activation paths, for every entry point
// and epilogue, with batch sizes below, at and above a pass of the kernels (8 tokens).
TEST(CudaMatvec, BatchedTokensAreEachTheSingleTokenBits) {
  REQUIRE_CUDA_DEVICE();
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  enum class Entry { Matvec, Multi, Swiglu };
  struct Case {
    Entry entry;
    TensorType type;
    int64_t rows, cols;
    bool norm, bias, accumulate;
  };
  const Case cases[] = {
      {Entry::Matvec, TensorType::Q4_K, 300, 512, false, true, true},
      {Entry::Matvec, TensorType::Q6_K, 77, 1024, false, false, true},
      {Entry::Matvec, TensorType::Q6_K, 260, 8192, false, false, false},  // float path (wide)
      {Entry::Matvec, TensorType::Q8_0, 129, 384, false, true, false},
      {Entry::Matvec, TensorType::F16, 33, 200, false, false, true},
      {Entry::Multi, TensorType::Q4_K, 520, 768, true, true, false},
      {Entry::Multi, TensorType::Q4_0, 260, 256, true, true, false},
      {Entry::Multi, TensorType::F32, 70, 96, true, false, false},
      {Entry::Multi, TensorType::Q6_K, 1030, 512, true, false, false},
      {Entry::Swiglu, TensorType::Q4_K, 700, 512, true, false, false},
      {Entry::Swiglu, TensorType::Q5_0, 90, 256, true, false, false},
      {Entry::Swiglu, TensorType::Q6_K, 40, 256, false, false, false},
  };
  for (const Case& c : cases)
    for (int64_t n_tok : {1, 5, 8, 19}) {
      SCOPED_TRACE(std::string(tensor_type_info(c.type).name) + " " + std::to_string(c.rows) + "x" +
                   std::to_string(c.cols) + " entry " + std::to_string(int(c.entry)) + " tokens " +
                   std::to_string(n_tok));
      const int n_targets = c.entry == Entry::Multi ? 3 : 1;
      const int64_t heights[3] = {c.rows, c.rows / 4 + 1, 37};
      std::vector<std::unique_ptr<DeviceBuffer<uint8_t>>> d_w, d_up;
      std::vector<std::unique_ptr<DeviceBuffer<float>>> d_b, d_y;
      std::vector<std::vector<float>> y0;
      for (int j = 0; j < n_targets; ++j) {
        const size_t n_out = size_t(heights[j] * n_tok);
        d_w.push_back(std::make_unique<DeviceBuffer<uint8_t>>(
            random_weights(rng, c.type, heights[j], c.cols)));
        if (c.entry == Entry::Swiglu)
          d_up.push_back(std::make_unique<DeviceBuffer<uint8_t>>(
              random_weights(rng, c.type, heights[j], c.cols)));
        d_b.push_back(
            std::make_unique<DeviceBuffer<float>>(random_normal(rng, size_t(heights[j]), 1.0f)));
        d_y.push_back(std::make_unique<DeviceBuffer<float>>(n_out));
        y0.push_back(random_normal(rng, n_out, 1.0f));
      }
      DeviceBuffer<float> d_x(random_normal(rng, size_t(c.cols * n_tok), 2.0f));
      DeviceBuffer<float> d_nw(random_normal(rng, size_t(c.cols), 1.0f));
      DeviceBuffer<uint8_t> d_scratch(cuda_ops::act_q8_scratch_bytes(c.cols, n_tok));
      const cuda_ops::ActQ8Scratch act = cuda_ops::act_q8_scratch(d_scratch.get(), c.cols, n_tok);
      const float* nw = c.norm ? d_nw.get() : nullptr;
      const MatvecMode mode = c.accumulate ? MatvecMode::Accumulate : MatvecMode::Store;

      // Token k of the batch alone: input row k, output row k of each target.
      auto launch = [&](int64_t first, int64_t count) {
        const float* x = d_x.get() + first * c.cols;
        if (c.entry == Entry::Matvec) {
          cuda_ops::matvec_batch(c.type, d_w[0]->get(), c.rows, c.cols, x, count,
                                 d_y[0]->get() + first * c.rows, c.bias ? d_b[0]->get() : nullptr,
                                 mode, nullptr, &act);
        } else if (c.entry == Entry::Multi) {
          cuda_ops::MatvecTarget t[3];
          for (int j = 0; j < 3; ++j)
            t[j] = {d_w[size_t(j)]->get(), heights[j], d_y[size_t(j)]->get() + first * heights[j],
                    c.bias && j != 1 ? d_b[size_t(j)]->get() : nullptr};
          cuda_ops::matvec_multi_batch(c.type, c.cols, x, count, t, 3, nullptr, nw, 1e-6f, &act);
        } else {
          cuda_ops::matvec_swiglu_batch(c.type, d_w[0]->get(), d_up[0]->get(), c.rows, c.cols, x,
                                        count, d_y[0]->get() + first * c.rows, nullptr, nw, 1e-6f,
                                        &act);
        }
      };
      auto outputs = [&] {
        cuda_ops::synchronize();
        std::vector<std::vector<float>> out;
        for (int j = 0; j < n_targets; ++j) {
          out.push_back(d_y[size_t(j)]->download());
          EXPECT_GUARDS(*d_y[size_t(j)]);
        }
        return out;
      };
      for (int j = 0; j < n_targets; ++j) d_y[size_t(j)]->upload(y0[size_t(j)]);
      launch(0, n_tok);
      const auto batched = outputs();
      for (int j = 0; j < n_targets; ++j) d_y[size_t(j)]->upload(y0[size_t(j)]);
      for (int64_t k = 0; k < n_tok; ++k) launch(k, 1);
      const auto alone = outputs();
      EXPECT_GUARDS(d_scratch);
      for (int j = 0; j < n_targets; ++j) {
        for (float v : batched[size_t(j)]) ASSERT_TRUE(std::isfinite(v));
        for (int64_t k = 0; k < n_tok; ++k)
          EXPECT_EQ(0, std::memcmp(batched[size_t(j)].data() + k * heights[j],
                                   alone[size_t(j)].data() + k * heights[j],
                                   size_t(heights[j]) * sizeof(float)))
              << "target " << j << ", token " << k << " differs from the same token alone";
      }
    }
  // A batch larger than the int8 scratch holds is refused, never silently moved to floats.
  {
    DeviceBuffer<uint8_t> d_scratch(cuda_ops::act_q8_scratch_bytes(256, 2));
    const cuda_ops::ActQ8Scratch act = cuda_ops::act_q8_scratch(d_scratch.get(), 256, 2);
    EXPECT_THROW(cuda_ops::matvec_batch(TensorType::Q4_K, nullptr, 4, 256, nullptr, 3, nullptr,
                                        nullptr, MatvecMode::Store, nullptr, &act),
                 Error);
  }
}

TEST(CudaMatvec, RefusesUnsupportedShapes) {
  REQUIRE_CUDA_DEVICE();
  EXPECT_FALSE(cuda_ops::weight_type_supported(TensorType::Q4_K, 300));
  EXPECT_FALSE(cuda_ops::weight_type_supported(TensorType::Q8_1, 256));
  EXPECT_TRUE(cuda_ops::weight_type_supported(TensorType::F16, 172));
  EXPECT_THROW(cuda_ops::matvec(TensorType::Q4_K, nullptr, 4, 300, nullptr, nullptr, nullptr,
                                MatvecMode::Store, nullptr),
               Error);
}

}  // namespace
}  // namespace lockstep::cuda_test

#else
TEST(CudaMatvec, Skipped) {
  GTEST_SKIP() << "skipped: no CUDA device";
}
#endif
