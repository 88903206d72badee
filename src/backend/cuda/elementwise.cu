// Elementwise kernels: SwiGLU and GeGLU, bias rows, soft-cap and scale, and the fault-injection
// helpers (TEST KNOB) of the parity gate's falsification tests. (The residual add is fused into the
// matvec / GEMM epilogues, the embedding lookup lives with the dequantizers in dequant.cu.)
#include "backend/cuda/cuda_common.cuh"
#include "backend/cuda/cuda_ops.h"
#include "util/hash.h"

namespace lockstep::cuda_ops {

using namespace lockstep::cuda;

namespace {

__global__ void swiglu_kernel(const float* __restrict__ g, const float* __restrict__ u,
                              float* __restrict__ y, int64_t n) {
  pdl_wait();
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) y[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

// The CPU reference's gelu_tanh (backend/cpu/ops_ref.cpp), in float64 as there.
__device__ __forceinline__ float gelu_tanh_f64(float x) {
  const double v = x;
  const double c = sqrt(2.0 / 3.14159265358979323846);
  return float(0.5 * v * (1.0 + tanh(c * (v + 0.044715 * v * v * v))));
}

__global__ void geglu_kernel(const float* __restrict__ g, const float* __restrict__ u,
                             float* __restrict__ y, int64_t n) {
  pdl_wait();
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) y[i] = gelu_tanh_f64(g[i]) * u[i];
}

__global__ void softcap_kernel(float* __restrict__ x, int64_t n, float cap) {
  pdl_wait();
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) x[i] = float(double(cap) * tanh(double(x[i]) / cap));
}

__global__ void scale_kernel(float* __restrict__ x, int64_t n, float s) {
  pdl_wait();
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) x[i] *= s;
}

__global__ void add_bias_kernel(float* __restrict__ y, const float* __restrict__ b, int64_t rows,
                                int64_t cols) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < rows * cols) y[i] += b[i % cols];
}

__global__ void corrupt_hidden_kernel(float* h, int64_t n, int layer, int position, float mag,
                                      uint64_t key) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const bool negative = hash4(key, uint64_t(layer), uint64_t(position), uint64_t(i)) & 1;
  h[i] += negative ? -mag : mag;
}

template <typename KV>
__global__ void drift_kv_kernel(KV* k, KV* v, int64_t kv_dim, int layer, int64_t pos_begin,
                                int64_t n_pos, float scale) {
  const int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= n_pos * kv_dim) return;
  const int64_t p = pos_begin + idx / kv_dim, i = idx % kv_dim;
  const uint64_t key = (uint64_t(p) << 32) | uint64_t(i);
  const int64_t at = p * kv_dim + i;
  store_kv(k + at, load_kv(k + at) + scale * unit_noise(hash4(2, uint64_t(layer), key, 0)));
  store_kv(v + at, load_kv(v + at) + scale * unit_noise(hash4(2, uint64_t(layer), key, 1)));
}

__global__ void fill_nan_kernel(float* x, int64_t n) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) x[i] = __int_as_float(0x7fc00000);
}

}  // namespace

void swiglu(const float* gate, const float* up, float* y, int64_t n, void* stream) {
  if (n <= 0) return;
  launch_pdl("swiglu_kernel", swiglu_kernel, unsigned(ceil_div(n, 256)), 256, 0, as_stream(stream),
             gate, up, y, n);
}

void geglu(const float* gate, const float* up, float* y, int64_t n, void* stream) {
  if (n <= 0) return;
  launch_pdl("geglu_kernel", geglu_kernel, unsigned(ceil_div(n, 256)), 256, 0, as_stream(stream),
             gate, up, y, n);
}

void softcap(float* x, int64_t n, float cap, void* stream) {
  if (n <= 0) return;
  launch_pdl("softcap_kernel", softcap_kernel, unsigned(ceil_div(n, 256)), 256, 0,
             as_stream(stream), x, n, cap);
}

void scale(float* x, int64_t n, float s, void* stream) {
  if (n <= 0) return;
  launch_pdl("scale_kernel", scale_kernel, unsigned(ceil_div(n, 256)), 256, 0, as_stream(stream), x,
             n, s);
}

void add_bias(float* y, const float* bias, int64_t rows, int64_t cols, void* stream) {
  if (rows * cols <= 0) return;
  add_bias_kernel<<<unsigned(ceil_div(rows * cols, 256)), 256, 0, as_stream(stream)>>>(y, bias,
                                                                                       rows, cols);
  CUDA_CHECK_LAUNCH("add_bias_kernel");
}

void fault_corrupt_hidden(float* h, int64_t n, int layer, int position, float magnitude,
                          void* stream, uint64_t key) {
  if (n <= 0) return;
  corrupt_hidden_kernel<<<unsigned(ceil_div(n, 256)), 256, 0, as_stream(stream)>>>(
      h, n, layer, position, magnitude, key);
  CUDA_CHECK_LAUNCH("corrupt_hidden_kernel");
}

void fault_drift_kv(void* k_cache, void* v_cache, KvType kv, int64_t kv_dim, int layer,
                    int64_t pos_begin, int64_t pos_end, float scale, void* stream) {
  const int64_t n = (pos_end - pos_begin) * kv_dim;
  if (n <= 0) return;
  auto launch = [&](auto* k, auto* v) {
    drift_kv_kernel<<<unsigned(ceil_div(n, 256)), 256, 0, as_stream(stream)>>>(
        k, v, kv_dim, layer, pos_begin, pos_end - pos_begin, scale);
  };
  if (kv == KvType::F16)
    launch(static_cast<__half*>(k_cache), static_cast<__half*>(v_cache));
  else
    launch(static_cast<float*>(k_cache), static_cast<float*>(v_cache));
  CUDA_CHECK_LAUNCH("drift_kv_kernel");
}

void fill_nan(float* x, int64_t n, void* stream) {
  if (n <= 0) return;
  fill_nan_kernel<<<unsigned(ceil_div(n, 256)), 256, 0, as_stream(stream)>>>(x, n);
  CUDA_CHECK_LAUNCH("fill_nan_kernel");
}

}  // namespace lockstep::cuda_ops
