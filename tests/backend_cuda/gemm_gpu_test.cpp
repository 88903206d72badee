// Prefill GEMM (weights dequantized tile by tile to F16, cublasGemmEx F16 x F16 -> F32) against a
// float64 reference Y = X W^T with W dequantized by lockstep::dequantize_row.
// Bounds: plain F16 operands round each weight and activation to 11 significant bits, a relative
// error of up to 2^-11 per product, NMSE ~1e-7 for random data: bound 2e-6. The split-precision
// mode (hi + lo operands, three products) leaves ~2^-22 per product: bound 1e-10.
#include "backend_cuda/cuda_test_util.h"

#ifdef LOCKSTEP_HAVE_CUDA

#include "quant/quantize.h"

namespace lockstep::cuda_test {
namespace {

constexpr double kF16GemmNmse = 2e-6;
constexpr double kPreciseGemmNmse = 1e-10;

struct GemmCase {
  TensorType type;
  int64_t rows, cols, n_tok;
};

void run_gemm(std::mt19937_64& rng, const GemmCase& c, bool precise, size_t tile_elems,
              bool accumulate) {
  const std::string what = std::string(tensor_type_info(c.type).name) + " W " +
                           std::to_string(c.rows) + "x" + std::to_string(c.cols) + ", " +
                           std::to_string(c.n_tok) + " tokens" + (precise ? ", precise" : "") +
                           (accumulate ? ", accumulate" : "") + ", tile " +
                           std::to_string(tile_elems);
  SCOPED_TRACE(what);
  const auto w = random_weights(rng, c.type, c.rows, c.cols);
  const auto x = random_normal(rng, size_t(c.n_tok * c.cols), 1.0f);
  const auto y0 = random_normal(rng, size_t(c.n_tok * c.rows), 1.0f);

  std::vector<float> wf(size_t(c.rows * c.cols));
  const uint64_t rb = *row_bytes(c.type, c.cols);
  for (int64_t r = 0; r < c.rows; ++r)
    dequantize_row(c.type, w.data() + uint64_t(r) * rb, wf.data() + r * c.cols, c.cols);
  std::vector<double> want(size_t(c.n_tok * c.rows));
  parallel_for(c.n_tok, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t)
      for (int64_t r = 0; r < c.rows; ++r) {
        double s = accumulate ? double(y0[size_t(t * c.rows + r)]) : 0.0;
        for (int64_t k = 0; k < c.cols; ++k)
          s += double(x[size_t(t * c.cols + k)]) * double(wf[size_t(r * c.cols + k)]);
        want[size_t(t * c.rows + r)] = s;
      }
  });

  cuda_ops::Matmul mm(size_t(c.n_tok * c.cols), tile_elems, precise);
  DeviceBuffer<uint8_t> d_w(w);
  DeviceBuffer<float> d_x(x), d_y(size_t(c.n_tok * c.rows));
  if (accumulate) d_y.upload(y0);
  mm.run(c.type, d_w.get(), c.rows, c.cols, d_x.get(), c.n_tok, d_y.get(), c.rows, accumulate,
         nullptr);
  cuda_ops::synchronize();
  const auto got = d_y.download();
  EXPECT_GUARDS(d_y);
  EXPECT_NMSE_BELOW(compare(got.data(), want.data(), got.size()),
                    precise ? kPreciseGemmNmse : kF16GemmNmse);
}

TEST(CudaGemm, TiledF16AndPreciseAgainstFloat64) {
  REQUIRE_CUDA_DEVICE();
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const GemmCase cases[] = {
      {TensorType::F32, 100, 256, 9},   {TensorType::F16, 64, 172, 8},
      {TensorType::Q8_0, 300, 512, 33}, {TensorType::Q4_K, 130, 512, 17},
      {TensorType::Q6_K, 97, 768, 64},  {TensorType::Q5_0, 50, 320, 12},
      {TensorType::Q2_K, 40, 256, 10},  {TensorType::Q3_K, 40, 512, 11},
  };
  for (const auto& c : cases)
    for (bool precise : {false, true}) {
      // Tiles of about a third of the matrix: several GEMM calls and a short last tile.
      const size_t tile = size_t(c.cols) * size_t((c.rows + 2) / 3);
      run_gemm(rng, c, precise, tile, false);
    }
  run_gemm(rng, {TensorType::Q4_K, 200, 512, 20}, false, size_t(512) * 64, true);
  run_gemm(rng, {TensorType::Q8_0, 200, 256, 20}, true, size_t(1) << 20, true);
}

TEST(CudaGemm, Real7BShapeTile) {
  REQUIRE_CUDA_DEVICE();
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  // gate/up of Qwen2.5-7B in Q4_K with a 64-token batch, default 32M-value tiles (3 tiles).
  run_gemm(rng, {TensorType::Q4_K, 18944, 3584, 64}, false, size_t(32) << 20, false);
}

TEST(CudaGemm, RefusesInputsLargerThanItsScratch) {
  REQUIRE_CUDA_DEVICE();
  cuda_ops::Matmul mm(1024, 1024, false);
  EXPECT_THROW(mm.run(TensorType::F32, nullptr, 8, 256, nullptr, 8, nullptr, 8, false, nullptr),
               Error);
}

}  // namespace
}  // namespace lockstep::cuda_test

#else
TEST(CudaGemm, Skipped) {
  GTEST_SKIP() << "skipped: no CUDA device";
}
#endif
