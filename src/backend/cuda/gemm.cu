// Prefill matrix products: Y = X * W^T for a batch of tokens through cuBLAS. The weight stays in
// its block format; tiles of at most tile_elems values are dequantized to F16 just before their
// cublasGemmEx call, so no dequantized copy of the model ever exists.
#include "backend/cuda/cuda_common.cuh"
#include "backend/cuda/cuda_ops.h"

namespace lockstep::cuda_ops {

using namespace lockstep::cuda;

namespace {

__global__ void split_f16_kernel(const float* __restrict__ x, __half* __restrict__ hi,
                                 __half* __restrict__ lo, int64_t n) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const float f = x[i];
  const __half h = __float2half_rn(f);
  hi[i] = h;
  if (lo) lo[i] = __float2half_rn(f - __half2float(h));
}

}  // namespace

struct Matmul::Impl {
  cublasHandle_t handle = nullptr;
  size_t x_cap = 0, tile_elems = 0;
  bool precise = false;
  __half* x_hi = nullptr;
  __half* x_lo = nullptr;
  __half* w_hi = nullptr;
  __half* w_lo = nullptr;

  ~Impl() {
    // Destructors must not throw: errors here are ignored (the context may be gone at exit).
    if (handle) cublasDestroy(handle);
    cudaFree(x_hi);
    cudaFree(x_lo);
    cudaFree(w_hi);
    cudaFree(w_lo);
  }
};

Matmul::Matmul(size_t max_cols_x_tokens, size_t tile_elems, bool precise)
    : impl_(std::make_unique<Impl>()) {
  impl_->x_cap = max_cols_x_tokens;
  impl_->tile_elems = tile_elems;
  impl_->precise = precise;
  CUBLAS_CHECK(cublasCreate(&impl_->handle));
  CUDA_CHECK(cudaMalloc(&impl_->x_hi, max_cols_x_tokens * sizeof(__half)));
  CUDA_CHECK(cudaMalloc(&impl_->w_hi, tile_elems * sizeof(__half)));
  if (precise) {
    CUDA_CHECK(cudaMalloc(&impl_->x_lo, max_cols_x_tokens * sizeof(__half)));
    CUDA_CHECK(cudaMalloc(&impl_->w_lo, tile_elems * sizeof(__half)));
  }
}

Matmul::~Matmul() = default;

size_t Matmul::device_bytes() const {
  return (impl_->x_cap + impl_->tile_elems) * sizeof(__half) * (impl_->precise ? 2 : 1);
}

void Matmul::run(TensorType type, const void* w, int64_t rows, int64_t cols, const float* x,
                 int64_t n_tok, float* y, int64_t ldy, bool accumulate, void* stream_v) {
  Impl& m = *impl_;
  if (n_tok <= 0 || rows <= 0) return;
  if (size_t(n_tok) * size_t(cols) > m.x_cap || size_t(cols) > m.tile_elems || ldy < rows ||
      cols > INT32_MAX || n_tok > INT32_MAX)
    throw Error("cuda matmul: " + std::to_string(n_tok) + " x " + std::to_string(cols) +
                " input exceeds the scratch this Matmul was made for");
  cudaStream_t stream = as_stream(stream_v);
  CUBLAS_CHECK(cublasSetStream(m.handle, stream));

  const int64_t nx = n_tok * cols;
  split_f16_kernel<<<unsigned(ceil_div(nx, 256)), 256, 0, stream>>>(
      x, m.x_hi, m.precise ? m.x_lo : nullptr, nx);
  CUDA_CHECK_LAUNCH("split_f16_kernel");

  // Balanced tiles whose heights are multiples of 64 rows, so every GEMM is well shaped and its
  // output pointer y + r0 stays 256-byte aligned.
  const int64_t max_tile_rows = int64_t(m.tile_elems) / cols;
  const int64_t n_tiles = ceil_div(rows, max_tile_rows);
  int64_t tile_rows = ceil_div(ceil_div(rows, n_tiles), 64) * 64;
  if (tile_rows > max_tile_rows) tile_rows = max_tile_rows;
  const float one = 1.0f, zero = 0.0f;
  for (int64_t r0 = 0; r0 < rows; r0 += tile_rows) {
    const int64_t n = std::min(tile_rows, rows - r0);
    dequantize_rows_f16(type, w, cols, r0, n, m.w_hi, m.precise ? m.w_lo : nullptr, stream);
    // Row-major Y[n_tok][ldy] is column-major Y^T (ldy x n_tok); Y^T tile = W_tile * X^T where the
    // row-major tile [n][cols] is the column-major cols x n matrix used transposed.
    auto gemm = [&](const __half* a, const __half* b, const float* beta) {
      CUBLAS_CHECK(cublasGemmEx(m.handle, CUBLAS_OP_T, CUBLAS_OP_N, int(n), int(n_tok), int(cols),
                                &one, a, CUDA_R_16F, int(cols), b, CUDA_R_16F, int(cols), beta,
                                y + r0, CUDA_R_32F, int(ldy), CUBLAS_COMPUTE_32F,
                                CUBLAS_GEMM_DEFAULT));
    };
    gemm(m.w_hi, m.x_hi, accumulate ? &one : &zero);
    if (m.precise) {
      gemm(m.w_hi, m.x_lo, &one);
      gemm(m.w_lo, m.x_hi, &one);
    }
  }
}

}  // namespace lockstep::cuda_ops
