// GPU dequantization (the decoders shared by every CUDA weight kernel) against
//   - the shared reference set: tensors quantized by llama.cpp with F32 twins dequantized by
//     gguf-py, an implementation independent of lockstep (bit-identical to llama.cpp's own);
//   - lockstep's CPU dequantize_row on fresh random rows (all bit patterns of quants and scales).
// Bound: equal up to float32 rounding of the last multiply-add, |got - want| <= 2^-20 * max|row|
// (a fused multiply-add on the GPU may round once where the CPU rounds twice).
#include "backend_cuda/cuda_test_util.h"

#ifdef LOCKSTEP_HAVE_CUDA

#include "gguf/gguf_reader.h"
#include "quant/fp16.h"
#include "quant/quantize.h"

namespace lockstep::cuda_test {
namespace {

using cuda_ops::dequantize_rows_f16;
using cuda_ops::dequantize_rows_f32;

// Fails with the first element that differs by more than the bound of the file comment.
void expect_rows_match(const std::vector<float>& got, const float* want, int64_t rows, int64_t cols,
                       const std::string& what) {
  for (int64_t r = 0; r < rows; ++r) {
    float row_max = 0;
    for (int64_t c = 0; c < cols; ++c) row_max = std::max(row_max, std::fabs(want[r * cols + c]));
    const double tol = std::ldexp(double(row_max), -20);
    for (int64_t c = 0; c < cols; ++c) {
      const float g = got[size_t(r * cols + c)], w = want[r * cols + c];
      if (!std::isfinite(g) || std::fabs(double(g) - double(w)) > tol) {
        ADD_FAILURE() << what << ": row " << r << " col " << c << ": got " << g << ", want " << w
                      << " (tolerance " << tol << ")";
        return;
      }
    }
  }
}

// The F16 path rounds exactly the values of the F32 path; hi + lo carries the rounding residual.
void expect_f16_consistent(TensorType type, const void* d_w, int64_t rows, int64_t cols,
                           const std::vector<float>& f32, const std::string& what) {
  const size_t n = size_t(rows * cols);
  DeviceBuffer<uint16_t> hi(n), lo(n);
  dequantize_rows_f16(type, d_w, cols, 0, rows, hi.get(), lo.get(), nullptr);
  cuda_ops::synchronize();
  const auto h = hi.download(), l = lo.download();
  EXPECT_GUARDS(hi);
  EXPECT_GUARDS(lo);
  for (size_t i = 0; i < n; ++i) {
    if (h[i] != fp32_to_fp16(f32[i])) {
      ADD_FAILURE() << what << ": F16 element " << i << " = " << fp16_to_fp32(h[i])
                    << ", F32 path gave " << f32[i];
      return;
    }
    if (std::fabs(f32[i]) > 65504.0f) continue;  // beyond F16: hi is infinite by design
    const double sum = double(fp16_to_fp32(h[i])) + double(fp16_to_fp32(l[i]));
    const double tol = std::ldexp(std::fabs(double(f32[i])), -21) + 1e-7;  // lo may be subnormal
    if (!(std::fabs(sum - f32[i]) <= tol)) {
      ADD_FAILURE() << what << ": hi + lo = " << sum << " for " << f32[i] << " at " << i;
      return;
    }
  }
}

const char* kSharedTypes[] = {"q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q2_k",
                              "q3_k", "q4_k", "q5_k", "q6_k", "f16",  "bf16"};

TEST(CudaDequant, MatchesIndependentReferenceSet) {
  REQUIRE_CUDA_DEVICE();
  int checked = 0;
  for (const char* name : kSharedTypes) {
    const auto quant = gguf::GgufFile::open(shared_path(std::string("quant/") + name + ".gguf"));
    const auto twin =
        gguf::GgufFile::open(shared_path(std::string("quant/") + name + ".dequant.gguf"));
    for (const auto& t : quant.tensors()) {
      const auto* ref = twin.find_tensor(t.name);
      ASSERT_NE(ref, nullptr) << name << ": " << t.name << " missing in the twin";
      ASSERT_EQ(ref->type, TensorType::F32);
      const int64_t cols = t.ne[0], rows = t.rows();
      DeviceBuffer<uint8_t> w(static_cast<size_t>(t.n_bytes));
      cuda_ops::copy_to_device(w.get(), t.data, t.n_bytes);
      DeviceBuffer<float> out(size_t(rows * cols));
      dequantize_rows_f32(t.type, w.get(), cols, 0, rows, out.get(), nullptr);
      cuda_ops::synchronize();
      const auto got = out.download();
      EXPECT_GUARDS(out);
      const std::string what = std::string(name) + " " + t.name;
      expect_rows_match(got, reinterpret_cast<const float*>(ref->data), rows, cols, what);
      expect_f16_consistent(t.type, w.get(), rows, cols, got, what);
      ++checked;
    }
  }
  EXPECT_GE(checked, 12 * 4);
}

struct RandomCase {
  TensorType type;
  int64_t rows, cols;
};

TEST(CudaDequant, MatchesCpuDequantizeOnRandomRows) {
  REQUIRE_CUDA_DEVICE();
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const RandomCase cases[] = {
      {TensorType::F32, 5, 24},   {TensorType::F32, 3, 13},    {TensorType::F16, 7, 40},
      {TensorType::F16, 4, 172},  {TensorType::BF16, 6, 64},   {TensorType::BF16, 3, 9},
      {TensorType::Q4_0, 9, 96},  {TensorType::Q4_1, 9, 96},   {TensorType::Q5_0, 9, 160},
      {TensorType::Q5_1, 9, 160}, {TensorType::Q8_0, 11, 224}, {TensorType::Q2_K, 6, 512},
      {TensorType::Q3_K, 6, 512}, {TensorType::Q4_K, 6, 768},  {TensorType::Q5_K, 6, 512},
      {TensorType::Q6_K, 7, 768},
  };
  for (const auto& c : cases) {
    const std::string what = std::string(tensor_type_info(c.type).name) + " " +
                             std::to_string(c.rows) + "x" + std::to_string(c.cols);
    const auto bytes = random_weights(rng, c.type, c.rows, c.cols);
    DeviceBuffer<uint8_t> w(bytes);
    // A row range that starts inside the matrix, as the GEMM tiles do.
    const int64_t row0 = c.rows / 3, n_rows = c.rows - row0;
    DeviceBuffer<float> out(size_t(n_rows * c.cols));
    dequantize_rows_f32(c.type, w.get(), c.cols, row0, n_rows, out.get(), nullptr);
    cuda_ops::synchronize();
    const auto got = out.download();
    EXPECT_GUARDS(out);
    std::vector<float> want(size_t(n_rows * c.cols));
    const uint64_t rb = *row_bytes(c.type, c.cols);
    for (int64_t r = 0; r < n_rows; ++r)
      dequantize_row(c.type, bytes.data() + uint64_t(row0 + r) * rb, want.data() + r * c.cols,
                     c.cols);
    expect_rows_match(got, want.data(), n_rows, c.cols, what);
  }
}

TEST(CudaGetRows, GathersRowsAndPoisonsInvalidIds) {
  REQUIRE_CUDA_DEVICE();
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (TensorType type : {TensorType::Q8_0, TensorType::Q4_K, TensorType::F16, TensorType::F32}) {
    const int64_t rows = 50, cols = 256;
    const auto bytes = random_weights(rng, type, rows, cols);
    DeviceBuffer<uint8_t> w(bytes);
    const std::vector<int32_t> ids = {7, 0, 49, 7, -1, 50, 23};
    DeviceBuffer<int32_t> d_ids(ids);
    DeviceBuffer<float> out(ids.size() * size_t(cols));
    cuda_ops::get_rows(type, w.get(), cols, rows, d_ids.get(), int64_t(ids.size()), out.get(),
                       nullptr);
    cuda_ops::synchronize();
    const auto got = out.download();
    EXPECT_GUARDS(out);
    const uint64_t rb = *row_bytes(type, cols);
    std::vector<float> want(static_cast<size_t>(cols));
    for (size_t i = 0; i < ids.size(); ++i) {
      const float* g = got.data() + i * size_t(cols);
      if (ids[i] < 0 || ids[i] >= rows) {
        for (int64_t c = 0; c < cols; ++c) EXPECT_TRUE(std::isnan(g[c])) << "id " << ids[i];
        continue;
      }
      dequantize_row(type, bytes.data() + uint64_t(ids[i]) * rb, want.data(), cols);
      expect_rows_match(std::vector<float>(g, g + cols), want.data(), 1, cols,
                        std::string(tensor_type_info(type).name) + " id " + std::to_string(ids[i]));
    }
  }
}

}  // namespace
}  // namespace lockstep::cuda_test

#else
TEST(CudaDequant, Skipped) {
  GTEST_SKIP() << "skipped: no CUDA device";
}
#endif
