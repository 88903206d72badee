// RMS normalisation: y = x / sqrt(mean(x^2) + eps) * weight, one thread block per row. The sum of
// squares is accumulated in float64 (as ggml's CPU path does), so long rows lose no precision.
// The same kernel normalises each head of q and k (qwen3, gemma3: rows of head_dim) and, with
// ADD, gemma's post-norms: the normalised block output is added to the residual stream.
#include "backend/cuda/cuda_common.cuh"
#include "backend/cuda/cuda_ops.h"

namespace lockstep::cuda_ops {

using namespace lockstep::cuda;

namespace {

constexpr int kNormThreads = 256;

template <bool ADD>
__global__ void __launch_bounds__(kNormThreads)
    rmsnorm_kernel(const float* __restrict__ x, const float* __restrict__ w, float* __restrict__ y,
                   int64_t cols, float eps) {
  pdl_wait();
  __shared__ double partial[kNormThreads / 32];
  const float* xr = x + int64_t(blockIdx.x) * cols;
  float* yr = y + int64_t(blockIdx.x) * cols;
  double s = 0.0;
  for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) s += double(xr[i]) * double(xr[i]);
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
  if ((threadIdx.x & 31) == 0) partial[threadIdx.x >> 5] = s;
  __syncthreads();
  double total = 0.0;
#pragma unroll
  for (int k = 0; k < kNormThreads / 32; ++k) total += partial[k];
  const float scale = 1.0f / sqrtf(float(total / double(cols)) + eps);
  for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) {
    if constexpr (ADD)
      yr[i] += (xr[i] * scale) * w[i];
    else
      yr[i] = (xr[i] * scale) * w[i];
  }
}

}  // namespace

void rmsnorm(const float* x, const float* weight, float* y, int64_t rows, int64_t cols, float eps,
             void* stream) {
  if (rows <= 0) return;
  launch_pdl("rmsnorm_kernel", rmsnorm_kernel<false>, unsigned(rows), kNormThreads, 0,
             as_stream(stream), x, weight, y, cols, eps);
}

void rmsnorm_add(const float* x, const float* weight, float* h, int64_t rows, int64_t cols,
                 float eps, void* stream) {
  if (rows <= 0) return;
  launch_pdl("rmsnorm_add_kernel", rmsnorm_kernel<true>, unsigned(rows), kNormThreads, 0,
             as_stream(stream), x, weight, h, cols, eps);
}

}  // namespace lockstep::cuda_ops
