// Device discovery and plain device-memory helpers.
#include <algorithm>

#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_common.cuh"
#include "backend/cuda/cuda_ops.h"

namespace lockstep {

bool cuda_device_available(std::string* why) {
  int n = 0;
  const cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    if (why) *why = std::string("no usable CUDA device: ") + cudaGetErrorString(err);
    cudaGetLastError();  // clear the sticky error state of the runtime API call
    return false;
  }
  if (n == 0) {
    if (why) *why = "no CUDA device found";
    return false;
  }
  return true;
}

CudaDeviceInfo cuda_device_info(int index) {
  std::string why;
  if (!cuda_device_available(&why)) throw Error("cuda: " + why, kExitDevice);
  int n = 0;
  CUDA_CHECK(cudaGetDeviceCount(&n));
  if (index < 0 || index >= n)
    throw Error("cuda: device " + std::to_string(index) + " does not exist (" + std::to_string(n) +
                    " device(s))",
                kExitDevice);
  cudaDeviceProp prop{};
  CUDA_CHECK(cudaGetDeviceProperties(&prop, index));
  CUDA_CHECK(cudaSetDevice(index));
  size_t free_b = 0, total_b = 0;
  CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
  CudaDeviceInfo info;
  info.index = index;
  info.name = prop.name;
  info.free_bytes = free_b;
  info.total_bytes = total_b;
  info.cc_major = prop.major;
  info.cc_minor = prop.minor;
  return info;
}

double cuda_copy_gb_per_s() {
  size_t free_b = 0, total_b = 0;
  if (cudaMemGetInfo(&free_b, &total_b) != cudaSuccess) return 0;
  const size_t bytes = std::min<size_t>(size_t(1) << 30, free_b / 8) / 256 * 256;
  if (bytes < (size_t(1) << 20)) return 0;
  void *a = nullptr, *b = nullptr;
  cudaEvent_t e0 = nullptr, e1 = nullptr;
  double best = 0;
  if (cudaMalloc(&a, bytes) == cudaSuccess && cudaMalloc(&b, bytes) == cudaSuccess &&
      cudaEventCreate(&e0) == cudaSuccess && cudaEventCreate(&e1) == cudaSuccess) {
    cudaMemset(a, 1, bytes);
    for (int rep = 0; rep < 6; ++rep) {  // the first is a warm-up
      constexpr int kCopies = 4;
      cudaEventRecord(e0);
      for (int i = 0; i < kCopies; ++i)
        cudaMemcpyAsync(i % 2 ? a : b, i % 2 ? b : a, bytes, cudaMemcpyDeviceToDevice);
      cudaEventRecord(e1);
      float ms = 0;
      if (cudaEventSynchronize(e1) != cudaSuccess ||
          cudaEventElapsedTime(&ms, e0, e1) != cudaSuccess)
        break;
      if (rep > 0 && ms > 0) best = std::max(best, 2.0 * double(bytes) * kCopies / (ms * 1e6));
    }
  }
  if (e0) cudaEventDestroy(e0);
  if (e1) cudaEventDestroy(e1);
  cudaFree(a);
  cudaFree(b);
  cudaGetLastError();  // a failed allocation must not linger as the runtime's last error
  return best;
}

}  // namespace lockstep

namespace lockstep::cuda_ops {

void* device_alloc(size_t bytes) {
  void* p = nullptr;
  CUDA_CHECK(cudaMalloc(&p, bytes == 0 ? 1 : bytes));
  return p;
}

void device_free(void* p) {
  if (p) cudaFree(p);
}

void copy_to_device(void* dst, const void* src, size_t bytes) {
  CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice));
}

void copy_to_host(void* dst, const void* src, size_t bytes) {
  CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost));
}

void device_memset(void* dst, int byte, size_t bytes) {
  CUDA_CHECK(cudaMemset(dst, byte, bytes));
}

void synchronize() {
  CUDA_CHECK(cudaDeviceSynchronize());
}

}  // namespace lockstep::cuda_ops

namespace lockstep::cuda_ops {

namespace {
CudaKernelTuning g_tuning;
}  // namespace

void set_kernel_tuning(const CudaKernelTuning& tuning) {
  g_tuning = tuning;
}
const CudaKernelTuning& kernel_tuning() {
  return g_tuning;
}

}  // namespace lockstep::cuda_ops
