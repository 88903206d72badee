// Greedy picks on the device: for each row of logits, the lowest id of the largest value, or -1
// when the row holds a NaN or +inf or no finite value (greedy_pick in backend/greedy_pick.h, the
// host's rule, which the op test holds this to on every row). A greedy decode step then copies B
// ids to the host instead of B rows of the vocabulary (64 rows of Qwen's are 39 MB).
#include "backend/cuda/cuda_common.cuh"
#include "backend/cuda/cuda_ops.h"

namespace lockstep::cuda_ops {

using namespace lockstep::cuda;

namespace {

constexpr int kPickThreads = 512;

// The better of two candidates: larger value, then lower id (ids of -inf values compete too, so
// a row of -inf and finite values still finds its maximum).
__device__ __forceinline__ void keep_better(float& v, int& i, float ov, int oi) {
  if (ov > v || (ov == v && oi < i)) v = ov, i = oi;
}

__global__ void __launch_bounds__(kPickThreads)
    greedy_pick_kernel(const float* __restrict__ logits, int64_t stride, int cols,
                       int32_t* __restrict__ out) {
  const float* x = logits + int64_t(blockIdx.x) * stride;
  float best = -INFINITY;
  int best_i = INT_MAX;
  bool bad = false, finite = false;
  for (int i = threadIdx.x; i < cols; i += kPickThreads) {
    const float v = x[i];
    if (isnan(v) || v == INFINITY) {
      bad = true;
      continue;
    }
    finite = finite || v != -INFINITY;
    keep_better(best, best_i, v, i);
  }
  bad = __syncthreads_or(bad);
  finite = __syncthreads_or(finite);
#pragma unroll
  for (int o = 16; o > 0; o >>= 1)
    keep_better(best, best_i, __shfl_xor_sync(0xffffffffu, best, o),
                __shfl_xor_sync(0xffffffffu, best_i, o));
  __shared__ float warp_best[kPickThreads / 32];
  __shared__ int warp_i[kPickThreads / 32];
  if ((threadIdx.x & 31) == 0)
    warp_best[threadIdx.x >> 5] = best, warp_i[threadIdx.x >> 5] = best_i;
  __syncthreads();
  if (threadIdx.x != 0) return;
  for (int w = 1; w < kPickThreads / 32; ++w) keep_better(best, best_i, warp_best[w], warp_i[w]);
  out[blockIdx.x] = bad || !finite ? -1 : best_i;
}

}  // namespace

void greedy_pick_rows(const float* logits, int64_t stride, int64_t rows, int64_t cols, int32_t* out,
                      void* stream) {
  if (rows <= 0) return;
  if (cols <= 0 || cols > stride || cols > INT32_MAX)
    throw Error("cuda greedy_pick_rows: " + std::to_string(cols) + " columns of rows of " +
                std::to_string(stride));
  greedy_pick_kernel<<<unsigned(rows), kPickThreads, 0, as_stream(stream)>>>(logits, stride,
                                                                             int(cols), out);
  CUDA_CHECK_LAUNCH("greedy_pick_kernel");
}

}  // namespace lockstep::cuda_ops
