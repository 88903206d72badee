// Helpers of the CUDA op and backend tests: device checks, device buffers with guard regions,
// fresh random weights in every block format, float64 references and error measures.
//
// Every test file compiles without CUDA too (CI builds without nvcc): their bodies sit inside
// #ifdef LOCKSTEP_HAVE_CUDA and the #else branch holds one test that skips with the same message
// as a machine without a GPU.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "model/model.h"
#include "quant/tensor_type.h"

#ifdef LOCKSTEP_HAVE_CUDA
#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_ops.h"

#define REQUIRE_CUDA_DEVICE()                                                            \
  do {                                                                                   \
    if (!::lockstep::cuda_device_available()) GTEST_SKIP() << "skipped: no CUDA device"; \
  } while (0)
#endif

namespace lockstep::cuda_test {

// A fresh seed per run; LOCKSTEP_TEST_SEED=N replays the run a failure's trace names.
inline uint64_t fresh_seed() {
  if (const char* s = std::getenv("LOCKSTEP_TEST_SEED")) return std::strtoull(s, nullptr, 10);
  std::random_device rd;
  return (uint64_t(rd()) << 32) ^ rd();
}

// Path of a file of the shared data set: $LOCKSTEP_SHARED_DIR/rel when that variable is set (the
// GPU machine, where ../shared is copied into the repository), else ../shared/rel. A missing file
// FAILS the calling test (it is never skipped).
std::string shared_path(const std::string& rel);

// Runs f(begin, end) over [0, n) on all hardware threads.
void parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& f);

// ---- random data ----------------------------------------------------------------------------
std::vector<float> random_normal(std::mt19937_64& rng, size_t n, float sigma);

// rows x cols weights in `type`. Plain types: N(0, sigma) values. Block types: odd rows (all
// rows when quantize_even_rows is false, or the type cannot be quantized) hold random bytes with
// sane fp16 scale fields, so that every bit pattern of the quants and packed scales occurs; even
// rows hold N(0, sigma) values quantized by quantize_row.
std::vector<uint8_t> random_weights(std::mt19937_64& rng, TensorType type, int64_t rows,
                                    int64_t cols, float sigma = 1.0f,
                                    bool quantize_even_rows = true);

// ---- references -----------------------------------------------------------------------------
// y[r] = sum_c W[r][c] * x[c] in float64, W dequantized row by row with lockstep::dequantize_row.
// abs_sum (optional) receives sum_c |W[r][c] * x[c]|, the scale of a dot product's rounding error.
std::vector<double> reference_matvec(TensorType type, const uint8_t* w, int64_t rows, int64_t cols,
                                     const float* x, std::vector<double>* abs_sum = nullptr);

// Rounding error of dot products relative to their scale: sqrt(sum (got - want)^2 / sum
// abs_sum^2); infinite when any value is not finite. A float32 dot product stays within a few
// units of 2^-24 of this scale; one wrongly decoded weight block is orders of magnitude above.
double dot_error_ratio(const std::vector<float>& got, const std::vector<double>& want,
                       const std::vector<double>& abs_sum);

// Products over int8 inputs (two terms per element over groups of 32, dx = max|x| / 127, as the
// CUDA and Vulkan int8 paths quantize them): each element moves by at most dx/508, so row r's
// dot product moves by at most B[r] = sum_i |w_i| dx(i) (1/508 + 3e-5) (the 3e-5 covers the
// float rounding of x * 127 / max|x|, <= 127 * 2^-24 units of dx, of the residual's scaling and
// of dx itself). W dequantized with lockstep::dequantize_row; cols a multiple of 32.
std::vector<double> int8_input_bound(TensorType type, const uint8_t* w, int64_t rows, int64_t cols,
                                     const float* x);
// dot_error_ratio of the errors beyond `bound`: max(0, |got - want| - bound) per element.
double excess_error_ratio(const std::vector<float>& got, const std::vector<double>& want,
                          const std::vector<double>& abs_sum, const std::vector<double>& bound);

struct ErrorStats {
  double nmse = 0;  // sum (got - want)^2 / sum want^2
  double max_abs = 0;
  bool all_finite = true;  // false when any got value is NaN or infinite
  std::string describe() const;
};
ErrorStats compare(const float* got, const double* want, size_t n);
ErrorStats compare(const float* got, const float* want, size_t n);

// NaN never passes: fails when any value is not finite or the NMSE is above the bound.
#define EXPECT_NMSE_BELOW(stats, bound)                                   \
  do {                                                                    \
    const auto& s_ = (stats);                                             \
    EXPECT_TRUE(s_.all_finite) << "non-finite output: " << s_.describe(); \
    EXPECT_LE(s_.nmse, (bound)) << s_.describe();                         \
  } while (0)

// ---- tiny models built in memory --------------------------------------------------------------
struct TinyModelSpec {
  Arch arch = Arch::Llama;
  TensorType matrix_type = TensorType::F32;  // 2-D weights except the two below
  TensorType embd_type = TensorType::F32;
  TensorType down_type = TensorType::F32;  // ffn_down (mixing types like Q4_K_M does)
  int64_t n_layer = 2, n_embd = 256, n_head = 4, n_head_kv = 2, n_ff = 512, n_vocab = 300;
  int64_t n_ctx_train = 1024;
  bool tied_embeddings = false;
  uint64_t seed = 1;
};
Model make_tiny_model(const TinyModelSpec& spec);

// ---- JSON references of ../shared/reference ---------------------------------------------------
struct GreedyCase {
  std::vector<int32_t> prompt_ids, generated_ids;
};
std::vector<GreedyCase> load_greedy_reference(const std::string& path);
struct LogitsReference {
  std::vector<int32_t> tokens;
  std::vector<std::vector<float>> logits;  // one row per position
};
LogitsReference load_logits_reference(const std::string& path);

double cosine(const float* a, const float* b, size_t n);
int argmax(const float* v, size_t n);

#ifdef LOCKSTEP_HAVE_CUDA
// A device buffer of n elements with guard regions of kGuard bytes on both sides, filled with a
// sentinel pattern; check_guards() fails the test if a kernel wrote outside [0, n). The interior
// starts as NaN (bytes 0xFF) for float outputs, so an element a kernel forgot to write fails.
template <typename T>
class DeviceBuffer {
 public:
  static constexpr size_t kGuard = 4096;
  static constexpr uint8_t kSentinel = 0xA5;

  explicit DeviceBuffer(size_t n, uint8_t fill = 0xFF) : n_(n) {
    base_ = static_cast<uint8_t*>(cuda_ops::device_alloc(bytes() + 2 * kGuard));
    cuda_ops::device_memset(base_, kSentinel, kGuard);
    cuda_ops::device_memset(base_ + kGuard, fill, bytes());
    cuda_ops::device_memset(base_ + kGuard + bytes(), kSentinel, kGuard);
  }
  DeviceBuffer(const std::vector<T>& host) : DeviceBuffer(host.size()) { upload(host); }
  ~DeviceBuffer() { cuda_ops::device_free(base_); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  T* get() const { return reinterpret_cast<T*>(base_ + kGuard); }
  size_t size() const { return n_; }
  size_t bytes() const { return n_ * sizeof(T); }
  void upload(const std::vector<T>& host) {
    cuda_ops::copy_to_device(get(), host.data(), std::min(host.size(), n_) * sizeof(T));
  }
  std::vector<T> download() const {
    std::vector<T> out(n_);
    cuda_ops::copy_to_host(out.data(), get(), bytes());
    return out;
  }
  // True when both guard regions still hold the sentinel.
  bool guards_intact() const {
    std::vector<uint8_t> g(kGuard);
    for (const uint8_t* p : {base_, base_ + kGuard + bytes()}) {
      cuda_ops::copy_to_host(g.data(), p, kGuard);
      for (uint8_t b : g)
        if (b != kSentinel) return false;
    }
    return true;
  }

 private:
  size_t n_;
  uint8_t* base_ = nullptr;
};

#define EXPECT_GUARDS(buf) EXPECT_TRUE((buf).guards_intact()) << "out-of-bounds write around " #buf
#endif

}  // namespace lockstep::cuda_test
