// Shared helpers of the CUDA backend: error checks that turn every CUDA / cuBLAS failure into a
// lockstep::Error naming the operation, plus small device utilities (warp reductions, loads).
#pragma once

#include <cublas_v2.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>

#include "backend/cuda/cuda_ops.h"
#include "util/error.h"

namespace lockstep::cuda {

// Out-of-memory is a device condition (exit code 4); everything else is an internal failure.
[[noreturn]] inline void throw_cuda_error(cudaError_t err, const char* what, const char* file,
                                          int line) {
  const int code = err == cudaErrorMemoryAllocation ? kExitDevice : kExitRuntime;
  throw Error(std::string("cuda: ") + what + " failed: " + cudaGetErrorName(err) + " (" +
                  cudaGetErrorString(err) + ") at " + file + ":" + std::to_string(line),
              code);
}

inline const char* cublas_status_name(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS:
      return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED:
      return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED:
      return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE:
      return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH:
      return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR:
      return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED:
      return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR:
      return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED:
      return "CUBLAS_STATUS_NOT_SUPPORTED";
    default:
      return "CUBLAS_STATUS_UNKNOWN";
  }
}

[[noreturn]] inline void throw_cublas_error(cublasStatus_t s, const char* what, const char* file,
                                            int line) {
  const int code = s == CUBLAS_STATUS_ALLOC_FAILED ? kExitDevice : kExitRuntime;
  throw Error(std::string("cublas: ") + what + " failed: " + cublas_status_name(s) + " at " + file +
                  ":" + std::to_string(line),
              code);
}

}  // namespace lockstep::cuda

// CUDA_CHECK(cudaMalloc(...)) throws lockstep::Error naming the call on failure.
#define CUDA_CHECK(call)                                                                          \
  do {                                                                                            \
    cudaError_t err_ = (call);                                                                    \
    if (err_ != cudaSuccess) ::lockstep::cuda::throw_cuda_error(err_, #call, __FILE__, __LINE__); \
  } while (0)

#define CUBLAS_CHECK(call)                                                  \
  do {                                                                      \
    cublasStatus_t st_ = (call);                                            \
    if (st_ != CUBLAS_STATUS_SUCCESS)                                       \
      ::lockstep::cuda::throw_cublas_error(st_, #call, __FILE__, __LINE__); \
  } while (0)

// After a kernel launch: catches bad launch configurations at once (asynchronous faults surface
// at the next synchronising call, which is checked too). `name` says which kernel.
#define CUDA_CHECK_LAUNCH(name)                                                        \
  do {                                                                                 \
    cudaError_t err_ = cudaGetLastError();                                             \
    if (err_ != cudaSuccess)                                                           \
      ::lockstep::cuda::throw_cuda_error(err_, "launch of " name, __FILE__, __LINE__); \
  } while (0)

namespace lockstep::cuda {

inline cudaStream_t as_stream(void* s) {
  return static_cast<cudaStream_t>(s);
}

__host__ __device__ inline int64_t ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum over a whole thread block (blockDim.x a multiple of 32, at most 1024). Every thread gets
// the result. `scratch` holds 32 floats of shared memory.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  v = warp_sum(v);
  __syncthreads();  // scratch may still be read from a previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  const int n_warps = (blockDim.x + 31) >> 5;
  v = lane < n_warps ? scratch[lane] : 0.0f;
  return warp_sum(v);
}

// Unaligned-safe little-endian loads from block data whose alignment is only 2 bytes.
__device__ __forceinline__ uint32_t load_u32_a2(const uint8_t* p) {
  const uint16_t* q = reinterpret_cast<const uint16_t*>(p);
  return uint32_t(q[0]) | (uint32_t(q[1]) << 16);
}
__device__ __forceinline__ uint32_t load_u32_a4(const uint8_t* p) {
  return *reinterpret_cast<const uint32_t*>(p);
}
__device__ __forceinline__ float load_half(const uint8_t* p) {
  return __half2float(*reinterpret_cast<const __half*>(p));
}

// Small unsigned integers (< 2^23) to float without the slow I2F instruction: place the value in
// the mantissa of 2^23 and subtract 2^23 (both steps exact).
__device__ __forceinline__ float small_uint_to_float(uint32_t v) {
  return __int_as_float(0x4B000000u | v) - 8388608.0f;
}

// Byte k (0..3) of w as a float, for bytes holding small unsigned values.
__device__ __forceinline__ float byte_to_float(uint32_t w, int k) {
  return __int_as_float(__byte_perm(w, 0x4B000000u, 0x7440u | unsigned(k))) - 8388608.0f;
}

// KV cache elements (F16 or F32) to and from float.
__device__ __forceinline__ float2 load_kv2(const __half* p) {
  return __half22float2(*reinterpret_cast<const __half2*>(p));
}
__device__ __forceinline__ float2 load_kv2(const float* p) {
  return *reinterpret_cast<const float2*>(p);
}
__device__ __forceinline__ float load_kv(const __half* p) {
  return __half2float(*p);
}
__device__ __forceinline__ float load_kv(const float* p) {
  return *p;
}
__device__ __forceinline__ void store_kv(__half* p, float v) {
  *p = __float2half_rn(v);
}
__device__ __forceinline__ void store_kv(float* p, float v) {
  *p = v;
}

// ---- programmatic dependent launch (Hopper, sm_90) -------------------------------------------
// Decode is a chain of ~11 small kernels per layer; between two of them the GPU drains one grid
// and ramps up the next. A kernel started with launch_pdl() may instead be launched while its
// predecessor in the stream still runs: its thread blocks start, do what needs nothing from
// earlier kernels (compute addresses, prefetch their weights into L2), and then call pdl_wait(),
// which returns once the predecessor grid has completed and its writes are visible.
//
// The rule for every kernel launched with launch_pdl(): before pdl_wait() it may only read memory
// that no kernel writes (weights) and write nothing. Because each such kernel waits for its
// predecessor, and that one waited for its own, a kernel that passed pdl_wait() also sees every
// earlier kernel complete (an ordinary launch waits for its predecessor in full anyway).
// pdl_wait() then lets the next kernel launch early (launch_dependents): at most one grid runs
// ahead of the one working. On a launch without the attribute both instructions are no-ops.
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// Hints the L2 cache to fetch [p, p + bytes), spread over the thread block's threads (one
// instruction per 128-byte line). Only for read-only data (weights), e.g. before pdl_wait().
__device__ __forceinline__ void prefetch_l2(const void* p, int64_t bytes) {
  const char* c = static_cast<const char*>(p);
  for (int64_t off = int64_t(threadIdx.x) * 128; off < bytes; off += int64_t(blockDim.x) * 128)
    asm volatile("prefetch.global.L2 [%0];" ::"l"(c + off));
}

// Programmatic launches are on when the current device is sm_90 or newer, unless the tuning
// turns them off (a bench and test knob: the results are the same bits).
inline bool pdl_enabled() {
  static const bool supported = [] {
    int dev = 0, major = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess) {
      cudaGetLastError();
      return false;
    }
    return major >= 9;
  }();
  return supported && cuda_ops::kernel_tuning().pdl;
}

// Launches kernel<<<grid, block, smem, stream>>>(args...) with programmatic stream serialization
// when pdl_enabled(); the kernel must follow the rule above. Failures throw, naming the kernel.
template <typename... Params, typename... Args>
void launch_pdl(const char* name, void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem,
                cudaStream_t stream, Args&&... args) {
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cfg.attrs = attr;
  cfg.numAttrs = pdl_enabled() ? 1 : 0;
  const cudaError_t err = cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...);
  if (err != cudaSuccess) {
    cudaGetLastError();
    throw_cuda_error(err, (std::string("launch of ") + name).c_str(), __FILE__, __LINE__);
  }
}

}  // namespace lockstep::cuda
